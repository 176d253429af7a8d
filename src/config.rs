//! The checked configuration a server runs with, and the option types the
//! builder exposes. A leaf: every other module may read it, it reads only
//! the other leaves (`socket` for stream options, `reject` for the hook).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::net::listener::Listener;
use crate::net::options::StreamOptions;
use crate::reject::RejectHandler;
use crate::stream::proxy::ProxyConfig;

/// Which limit a timed-out read or write ran into.
///
/// Every timeout the library enforces comes back from `read` or `write` as an
/// `io::Error` of kind [`io::ErrorKind::TimedOut`] that carries a `Timeout`;
/// get it back with [`Timeout::of`].
///
/// After an `Idle` or `Deadline` timeout the connection is finished: every
/// later read and write fails at once with the same error, so a handler that
/// returns on errors (as `?` does) frees its worker. A `Read` or `Write`
/// timeout leaves the connection usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timeout {
    /// One read waited longer than the read timeout.
    Read,
    /// One write waited longer than the write timeout.
    Write,
    /// The client sent nothing for the idle timeout.
    Idle,
    /// The connection's deadline passed.
    Deadline,
}

impl Timeout {
    /// The `Timeout` carried by an error from a [`Connection`](crate::Connection), if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io;
    /// use frontdesk::Timeout;
    ///
    /// let error: io::Error = Timeout::Idle.into();
    /// assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    /// assert_eq!(Timeout::of(&error), Some(Timeout::Idle));
    /// assert_eq!(Timeout::of(&io::Error::from(io::ErrorKind::TimedOut)), None);
    /// ```
    pub fn of(error: &io::Error) -> Option<Timeout> {
        error.get_ref()?.downcast_ref::<Timeout>().copied()
    }

    pub(crate) fn ends_connection(self) -> bool {
        matches!(self, Timeout::Idle | Timeout::Deadline)
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timeout::Read => "read timed out",
            Timeout::Write => "write timed out",
            Timeout::Idle => "connection idle for too long",
            Timeout::Deadline => "connection deadline passed",
        })
    }
}

impl std::error::Error for Timeout {}

impl From<Timeout> for io::Error {
    fn from(timeout: Timeout) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, timeout)
    }
}

/// What the acceptor does with a new connection when every worker is busy
/// and the queue is full.
///
/// The default is `Block`: nothing a client sends is lost, short bursts wait
/// in the kernel's backlog, and this is what users of std's `TcpListener`,
/// Go's `net/http` or Python's `socketserver` expect. Choose `Reject` for an
/// interactive service where a fast, explicit "busy" beats an unbounded
/// wait, and `Wait` to absorb short bursts but still say "busy" when the
/// pool stays full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overload {
    /// Stop accepting until a worker or a queue slot is free; new callers
    /// wait in the kernel's listen backlog (back-pressure).
    #[default]
    Block,
    /// Accept the connection and hand it at once to the reject handler
    /// (by default: close it).
    Reject,
    /// Wait up to this long for room in the queue, then reject. The
    /// acceptor waits in the meantime, so under sustained overload at most
    /// one connection is rejected per wait.
    Wait(Duration),
}

/// What happens when a [`Peer::send`](crate::Peer::send) finds a
/// connection's outbox full (the client reads slower than others write to
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutboxFull {
    /// Close that connection ([`CloseReason::OutboxFull`](crate::CloseReason::OutboxFull)):
    /// one client that does not read never holds up the others or the
    /// server's memory.
    #[default]
    Close,
    /// Only report it to the sender ([`SendError::Full`](crate::SendError::Full));
    /// the bytes are not queued and the connection goes on.
    Report,
}

/// Why a connection in the turn mode ended, as
/// [`TurnHandler::close`](crate::TurnHandler::close) is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`TurnHandler::ready`](crate::TurnHandler::ready) returned
    /// [`Next::Close`](crate::Next::Close).
    Done,
    /// [`TurnHandler::ready`](crate::TurnHandler::ready) returned an error
    /// or panicked, or writing to the client failed (it is gone).
    Failed,
    /// The client sent nothing for the idle timeout, its deadline passed
    /// (see [`Turn::set_deadline`](crate::Turn::set_deadline)), or it did
    /// not read its replies for the write timeout.
    TimedOut(Timeout),
    /// The server is shutting down. The handler has had a last
    /// [`ready`](crate::TurnHandler::ready) turn for what the client had
    /// sent.
    Shutdown,
    /// [`Peer::close`](crate::Peer::close) was called.
    Closed,
    /// A [`Peer::send`](crate::Peer::send) found the outbox full, and the
    /// policy ([`OutboxFull::Close`]) closes the connection.
    OutboxFull,
}

/// The outbox of a turn-mode connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outbox {
    pub(crate) limit: usize,
    pub(crate) full: OutboxFull,
}

/// TLS, when the server speaks it: the settings (shared with the caller,
/// who may replace the certificates) and how long a handshake may take.
///
/// Without the `tls` feature the builder never makes one.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) struct TlsSetup {
    #[cfg(feature = "tls")]
    pub(crate) config: crate::stream::tls::TlsConfig,
    pub(crate) handshake_time: Duration,
}

/// One listener of a server: what its connections see of it, and how
/// they begin (a PROXY header, TLS), which may differ from one listener
/// to another.
#[derive(Debug, Clone)]
pub(crate) struct ListenerSetup {
    pub(crate) info: Listener,
    /// Require a PROXY protocol header on every connection.
    pub(crate) proxy: Option<ProxyConfig>,
    /// Speak TLS on every connection.
    pub(crate) tls: Option<TlsSetup>,
}

/// The per-connection limits configured on the builder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
}

/// How long and how much a gentle close may read and discard while it
/// waits for the client's end of stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Linger {
    pub(crate) time: Duration,
    pub(crate) bytes: usize,
}

/// The checked configuration a server runs with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) queue: usize,
    pub(crate) overload: Overload,
    pub(crate) max_connections: Option<usize>,
    /// At least 1 when set.
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) shutdown_timeout: Duration,
    /// During a shutdown, how long a read waits for more input before it
    /// reports end of stream.
    pub(crate) drain_quiet: Duration,
    pub(crate) linger: Linger,
    pub(crate) outbox: Outbox,
    /// Send `READY=1` and `STOPPING=1` to `$NOTIFY_SOCKET`.
    pub(crate) notify_service_manager: bool,
    pub(crate) limits: Limits,
    pub(crate) stream: StreamOptions,
    pub(crate) on_reject: Option<Arc<dyn RejectHandler>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Config {
            workers,
            queue,
            overload,
            max_connections,
            max_connections_per_ip,
            shutdown_timeout,
            drain_quiet,
            linger,
            outbox,
            notify_service_manager,
            limits,
            stream,
            on_reject,
        } = self;
        f.debug_struct("Config")
            .field("workers", workers)
            .field("queue", queue)
            .field("overload", overload)
            .field("max_connections", max_connections)
            .field("max_connections_per_ip", max_connections_per_ip)
            .field("shutdown_timeout", shutdown_timeout)
            .field("drain_quiet", drain_quiet)
            .field("linger", linger)
            .field("outbox", outbox)
            .field("notify_service_manager", notify_service_manager)
            .field("limits", limits)
            .field("stream", stream)
            .field("on_reject", &on_reject.as_ref().map(|_| "<handler>"))
            .finish()
    }
}
