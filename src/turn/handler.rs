//! The turn mode, as a user sees it: a [`TurnHandler`] is called when a
//! connection opens and each time its client has sent something, through a
//! [`Turn`]; between turns the connection waits in the operating system's
//! readiness set, costing no thread.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use crate::addr::Addr;
use crate::config::CloseReason;
use crate::net::listener::Listener;
use crate::net::socket::PeerCredentials;
use crate::pool::shutdown::Shared;
use crate::stream::proxy::ProxyHeader;
use crate::turn::engine::SendError;
use crate::turn::engine::{Entry, TurnReader};
use crate::turn::peer::{Message, Peer, Sending};

/// Serves connections a turn at a time; one value is shared by every
/// worker thread. The other mode, [`Handler`](crate::Handler), gives a
/// worker to a connection for its whole life; this one gives a worker to
/// a connection only while it has something to do, so a server holds many
/// more clients than it has workers.
///
/// The three calls run on worker threads, one at a time per connection,
/// in this order: [`open`](TurnHandler::open) once, when the connection
/// is accepted; [`ready`](TurnHandler::ready) each time the client has
/// sent something; [`close`](TurnHandler::close) once, at the end,
/// however it came. Between turns the connection is *parked*: it waits
/// in the readiness set (epoll, kqueue) with its [`State`](TurnHandler::State)
/// and whatever it had buffered, and holds no thread.
///
/// Reads on a [`Turn`] never wait: they return what has arrived, or fail
/// with [`io::ErrorKind::WouldBlock`] when nothing has, which is the cue
/// to return [`Next::Park`]. Writes never wait either: they go to the
/// connection's outbox, which the server flushes as the client reads. Use
/// [`Lines`](crate::Lines) for a line protocol: it keeps a partial line across turns.
///
/// New input gives the connection its turn. While input may still wait
/// after a turn that read something (or during which more arrived), the
/// worker goes on with the next turn at once, without parking. A turn
/// that reads nothing is not repeated for the same input: what it left
/// unread gets a turn when more arrives. So read what has arrived (into
/// the state, if it cannot be acted on yet) before parking. Two waits are the engine's to keep: while the outbox is over half full
/// the connection gets no turn for its input (and `Lines` yields no
/// line), and a turn that read nothing while the outbox held bytes (the
/// handler waits for room by its own measure) gets the next one for its
/// input once the outbox is empty. Lines that `Lines` keeps get one turn
/// when the outbox is empty, not more.
///
/// # Examples
///
/// A line echo server that says goodbye at shutdown:
///
/// ```
/// use std::io::{self, BufRead, BufReader, Write};
/// use std::net::TcpStream;
///
/// use frontdesk::{CloseReason, LineError, Lines, Next, Server, Turn, TurnHandler};
///
/// struct Echo;
///
/// impl TurnHandler for Echo {
///     type State = Lines;
///
///     fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
///         turn.send("hello\n")?;
///         Ok(Lines::new(turn, 1024))
///     }
///
///     fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
///         loop {
///             match lines.next_line() {
///                 Ok(Some(line)) => turn.send([line, b"\n"].concat())?,
///                 // No complete line left: wait without a worker.
///                 Ok(None) => return Ok(Next::Park),
///                 // The client half-closed: an end, not an error.
///                 Err(LineError::Closed { .. }) => return Ok(Next::Close),
///                 Err(error) => return Err(error.into()),
///             }
///         }
///     }
///
///     fn close(&self, _: Lines, turn: &mut Turn<'_>, reason: CloseReason) {
///         if reason == CloseReason::Shutdown {
///             let _ = turn.send("bye\n");
///         }
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let handle = Server::builder().workers(2).bind("127.0.0.1:0")?.spawn_turns(Echo)?;
/// let mut client = TcpStream::connect(handle.local_addr())?;
/// let mut replies = BufReader::new(client.try_clone()?).lines();
/// assert_eq!(replies.next().transpose()?.as_deref(), Some("hello"));
/// client.write_all(b"one\ntw")?;
/// assert_eq!(replies.next().transpose()?.as_deref(), Some("one"));
/// client.write_all(b"o\n")?; // the rest of a line that waited, parked
/// assert_eq!(replies.next().transpose()?.as_deref(), Some("two"));
/// handle.shutdown()?;
/// assert_eq!(replies.next().transpose()?.as_deref(), Some("bye"));
/// # Ok(()) }
/// ```
pub trait TurnHandler: Send + Sync + 'static {
    /// What the handler keeps for one connection between turns.
    type State: Send + 'static;

    /// Called once, on a worker, when the connection is accepted; returns
    /// the connection's state. An error closes the connection at once
    /// (without a call to [`close`](TurnHandler::close)).
    ///
    /// # Errors
    ///
    /// Whatever the handler returns is logged and counted in
    /// [`Stats::handler_errors`](crate::Stats::handler_errors).
    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Self::State>;

    /// Called on a worker each time the client has sent something (or
    /// closed its side); reads what is there, answers, and says what
    /// happens next.
    ///
    /// # Errors
    ///
    /// An error ends the connection, as [`Next::Close`] does, and is
    /// logged and counted in [`Stats::handler_errors`](crate::Stats::handler_errors).
    fn ready(&self, state: &mut Self::State, turn: &mut Turn<'_>) -> io::Result<Next>;

    /// Called once when the connection ends, whatever ended it (see
    /// [`CloseReason`]), with its state. It may still send a last word:
    /// what is in the outbox is flushed before the connection is closed
    /// gently. The default does nothing.
    fn close(&self, state: Self::State, turn: &mut Turn<'_>, reason: CloseReason) {
        let _ = (state, turn, reason);
    }
}

/// What a [`TurnHandler`] wants after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait for more input without a worker: the connection is parked in
    /// the readiness set and gets its next turn when input arrives.
    Park,
    /// Keep this worker for the next input, a hot connection's choice: the
    /// worker waits briefly for more input and runs the next turn at once,
    /// as long as no other connection is waiting for a worker; otherwise
    /// the connection is parked.
    Stay,
    /// End the connection: [`TurnHandler::close`] runs, the outbox is
    /// flushed, and the connection is closed gently.
    Close,
}

/// One turn of a connection in the turn mode: what a [`TurnHandler`]
/// sees of it.
///
/// It is [`Read`] (never waiting: [`io::ErrorKind::WouldBlock`] when
/// nothing has arrived) and [`Write`] (into the outbox, never waiting:
/// `WouldBlock` when the outbox is full). [`send`](Turn::send) is the
/// same write for a whole message, shared rather than copied when it is
/// an `Arc<[u8]>`.
pub struct Turn<'a> {
    pub(crate) entry: &'a Arc<Entry>,
    pub(crate) shared: &'a Shared,
}

impl<'a> Turn<'a> {
    /// The client's address: the TCP peer's, or behind a proxy that sends
    /// the PROXY protocol, the one its header names (see
    /// [`Connection::peer_addr`](crate::Connection::peer_addr)).
    pub fn peer_addr(&self) -> Addr {
        self.entry.peer_addr.get()
    }

    /// The listener the connection came through (see
    /// [`Connection::listener`](crate::Connection::listener)).
    pub fn listener(&self) -> &Listener {
        &self.shared.listener(self.entry.listener).info
    }

    /// The PROXY protocol header the connection began with, when the
    /// server requires one.
    pub fn proxy(&self) -> Option<&ProxyHeader> {
        self.entry.peer_addr.header()
    }

    /// Whether the connection speaks TLS (`ServerBuilder::tls`, with the
    /// `tls` feature); its reads and sends are then the plaintext, and
    /// `open` runs only once the handshake is complete.
    pub fn is_tls(&self) -> bool {
        self.entry.is_tls()
    }

    /// What the TLS handshake settled: the client's verified certificate
    /// chain, the name it asked for (SNI), the ALPN protocol; `None` on a
    /// connection without TLS. The handshake runs parked, a step per turn
    /// of the client's records, before [`open`](TurnHandler::open): from
    /// `open` on, on a TLS connection this is always there. See
    /// [`TlsInfo`](crate::TlsInfo).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_info(&self) -> Option<&crate::stream::tls::TlsInfo> {
        self.entry.tls_info()
    }

    /// The user, group and process of the client of a Unix socket, as
    /// the kernel recorded them when it connected; `None` over TCP (see
    /// [`Connection::peer_credentials`](crate::Connection::peer_credentials)).
    /// Read once, before [`open`](TurnHandler::open).
    pub fn peer_credentials(&self) -> Option<PeerCredentials> {
        self.entry.credentials()
    }

    /// The connection's id: unique among the server's connections.
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// A handle to this connection that any thread may keep and use to
    /// send to it or close it (see [`Peer`]).
    pub fn peer(&self) -> Peer {
        Peer::new(Arc::clone(self.entry))
    }

    /// Queues `bytes` in the connection's outbox; never waits. What the
    /// socket takes at once is written at once. Takes what
    /// [`Peer::send`] takes, under the same rule (`as_ref` and the
    /// [`Message`] must hold the same bytes). An empty outbox takes a
    /// message of any size, even one over the outbox limit: the limit
    /// bounds what waits beyond one message.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] when the outbox is full (the client
    /// does not read fast enough; from a turn this is back-pressure, never
    /// a reason to close: park, and the connection's next turn comes once
    /// the client has read; [`Lines`](crate::Lines) does this for a line
    /// protocol), [`io::ErrorKind::NotConnected`] when the connection is
    /// already closing.
    pub fn send(&mut self, bytes: impl AsRef<[u8]> + Into<Message>) -> io::Result<()> {
        self.entry
            .send_from_turn(Sending(bytes))
            .map_err(SendError::into)
    }

    /// How many bytes wait in the outbox. A handler that produces a lot
    /// (an echo) reads no more while this is large: the connection then
    /// gets its next turn once the client has read enough.
    pub fn outbox_len(&self) -> usize {
        self.entry.outbox_len()
    }

    /// How many more bytes fit in the outbox under its limit. (An empty
    /// outbox also takes one message larger than this.)
    pub fn outbox_room(&self) -> usize {
        self.entry.outbox_room()
    }

    /// Sets a point in time by which the connection must have been
    /// finished or moved on (a request completed): if it is still parked
    /// or still in a turn then, it is closed with
    /// [`CloseReason::TimedOut`]`(`[`Timeout::Deadline`](crate::Timeout::Deadline)`)`.
    /// It stays set across parks until changed; `None` removes it, and so
    /// does a deadline more than 292 years away, which could never come
    /// (the engine keeps a connection's points in time in 8 bytes).
    pub fn set_deadline(&mut self, deadline: impl Into<Option<Instant>>) {
        self.entry.set_deadline(deadline.into());
    }

    /// The deadline set by [`set_deadline`](Turn::set_deadline).
    pub fn deadline(&self) -> Option<Instant> {
        self.entry.deadline()
    }

    /// Whether the server is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_stopping()
    }

    pub(crate) fn reader(&self) -> TurnReader {
        TurnReader::new(Arc::clone(self.entry))
    }
}

impl Read for Turn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.entry.read_now(buf)
    }
}

impl Write for Turn<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Turn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("id", &self.entry.id)
            .field("peer_addr", &self.entry.peer_addr)
            .finish_non_exhaustive()
    }
}
