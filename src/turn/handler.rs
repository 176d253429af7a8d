//! The turn mode, as a user sees it: a [`TurnHandler`] is called when a
//! connection opens and each time its client has sent something, through a
//! [`Turn`]; between turns the connection waits in the operating system's
//! readiness set, costing no thread.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::CloseReason;
use crate::net::addr::Addr;
use crate::pool::shutdown::Shared;
use crate::stream::lines::{LineError, LineReader};
use crate::stream::proxy::ProxyHeader;
use crate::turn::engine::{Entry, TurnReader};
use crate::turn::peer::{Message, Peer, SendError};

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
/// [`Lines`] for a line protocol: it keeps a partial line across turns.
///
/// # Examples
///
/// A line echo server that says goodbye at shutdown:
///
/// ```
/// use std::io::{self, BufRead, BufReader, Write};
/// use std::net::TcpStream;
///
/// use frontdesk::{CloseReason, Lines, Next, Server, Turn, TurnHandler};
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
///         while let Some(line) = lines.next_line()? {
///             let reply = [line, b"\n"].concat();
///             turn.send(reply)?;
///         }
///         Ok(Next::Park) // no complete line left: wait without a worker
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
        self.entry.peer_addr.clone()
    }

    /// The PROXY protocol header the connection began with, when the
    /// server requires one.
    pub fn proxy(&self) -> Option<&ProxyHeader> {
        self.entry.proxy.as_deref()
    }

    /// Whether the connection speaks TLS (`ServerBuilder::tls`, with the
    /// `tls` feature); its reads and sends are then the plaintext, and
    /// `open` runs only once the handshake is complete.
    pub fn is_tls(&self) -> bool {
        self.entry.is_tls()
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
    /// [`Peer::send`] takes.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] when the outbox is full (the client
    /// does not read fast enough; from a turn this is back-pressure, never
    /// a reason to close), [`io::ErrorKind::NotConnected`] when the
    /// connection is already closing.
    pub fn send(&mut self, bytes: impl Into<Message>) -> io::Result<()> {
        let message: Message = bytes.into();
        self.entry
            .send_from_turn(message.into_shared())
            .map_err(SendError::into)
    }

    /// How many bytes wait in the outbox. A handler that produces a lot
    /// (an echo) reads no more while this is large: the connection then
    /// gets its next turn once the client has read enough.
    pub fn outbox_len(&self) -> usize {
        self.entry.outbox_len()
    }

    /// How many more bytes [`send`](Turn::send) accepts now.
    pub fn outbox_room(&self) -> usize {
        self.entry.outbox_room()
    }

    /// Sets a point in time by which the connection must have been
    /// finished or moved on (a request completed): if it is still parked
    /// or still in a turn then, it is closed with
    /// [`CloseReason::TimedOut`]`(`[`Timeout::Deadline`](crate::Timeout::Deadline)`)`.
    /// It stays set across parks until changed; `None` removes it.
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

    fn reader(&self) -> TurnReader {
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

/// Lines of a connection in the turn mode, read across turns: a line that
/// arrives in pieces over several turns is put together in its buffer
/// while the connection is parked, and no buffer is held while nothing
/// is buffered.
///
/// It is a [`LineReader`] over the connection that never waits: the same
/// limits, errors and no-copy lines, except that "nothing more has
/// arrived" is `Ok(None)`, the cue to return [`Next::Park`].
pub struct Lines {
    reader: LineReader<TurnReader>,
    /// When the line in progress was first seen unfinished.
    partial_since: Option<Instant>,
}

impl Lines {
    /// Lines of at most `max_line` bytes (terminator excluded) from the
    /// turn's connection.
    pub fn new(turn: &Turn<'_>, max_line: usize) -> Lines {
        let mut reader = LineReader::new(turn.reader(), max_line);
        reader.release_if_empty();
        Lines {
            reader,
            partial_since: None,
        }
    }

    /// The next complete line, without its `\n` or `\r\n`, or `None` when
    /// no complete line has arrived yet.
    ///
    /// # Errors
    ///
    /// As [`LineReader::read_line`]: [`LineError::Closed`] once the client
    /// has closed and no complete line is left, [`LineError::TooLong`] for
    /// a line over the limit, [`LineError::Io`] when the connection broke.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        match self.reader.next_line_range() {
            Ok(line) => {
                self.partial_since = None;
                Ok(Some(self.reader.line_at(line)))
            }
            Err(LineError::TimedOut(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                if self.reader.buffered().is_empty() {
                    self.partial_since = None;
                    self.reader.release_if_empty();
                } else {
                    self.partial_since.get_or_insert_with(Instant::now);
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// [`next_line`](Lines::next_line), checked to be UTF-8.
    ///
    /// # Errors
    ///
    /// As [`next_line`](Lines::next_line), and [`LineError::InvalidUtf8`]
    /// (the line is consumed).
    pub fn next_line_str(&mut self) -> Result<Option<&str>, LineError> {
        match self.next_line()? {
            Some(line) => std::str::from_utf8(line)
                .map(Some)
                .map_err(|error| LineError::InvalidUtf8 { error }),
            None => Ok(None),
        }
    }

    /// When the line now buffered unfinished was first seen, if one is:
    /// for a deadline per request, "a line must be complete within N of
    /// its first byte".
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// The deadline for the line in progress, `timeout` after it began, or
    /// `None` when no line is in progress; pass it to
    /// [`Turn::set_deadline`] before parking.
    pub fn line_deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        Some(self.partial_since? + timeout?)
    }

    /// The bytes received but not yet returned as a line.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffered()
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lines")
            .field("max_line", &self.reader.max_line())
            .field("buffered", &self.reader.buffered().len())
            .field("partial_since", &self.partial_since)
            .finish()
    }
}
