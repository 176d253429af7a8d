//! `Connection`: what a handler sees of one client, and the timeouts that
//! keep a slow client from holding a worker.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shutdown::Shared;
use crate::stats::Counters;

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
    /// The `Timeout` carried by an error from a [`Connection`], if any.
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

    fn ends_connection(self) -> bool {
        matches!(self, Timeout::Idle | Timeout::Deadline)
    }

    fn counter(self, counters: &Counters) -> &AtomicU64 {
        match self {
            Timeout::Read => &counters.read_timeouts,
            Timeout::Write => &counters.write_timeouts,
            Timeout::Idle => &counters.idle_timeouts,
            Timeout::Deadline => &counters.deadline_timeouts,
        }
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

/// The per-connection limits configured on the builder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
}

/// The timeouts a stream's socket has when its `Connection` is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct SocketTimeouts {
    pub(crate) read: Option<Duration>,
    pub(crate) write: Option<Duration>,
}

impl Limits {
    /// The write timeout a connection with these limits and no deadline
    /// sets on its socket.
    pub(crate) fn socket_write_timeout(&self) -> Option<Duration> {
        self.write_timeout.map(at_least_a_tick)
    }
}

/// `set_read_timeout(Some(0))` is an error; a zero timeout means "fail at
/// once", which the kernel spells as 1 µs.
fn at_least_a_tick(timeout: Duration) -> Duration {
    timeout.max(Duration::from_micros(1))
}

/// One client's connection, as a handler sees it.
///
/// `Connection` is [`Read`] and [`Write`], and so is `&Connection`, which lets
/// a reader (such as a `BufReader` or [`LineReader`](crate::LineReader)) and
/// writes share it. Reads and writes are not buffered: wrap the connection
/// in a buffer or write whole messages.
///
/// # Timeouts
///
/// Every read and write is bounded by the limits set on the builder, which
/// the handler can change for this connection:
///
/// - the read timeout bounds one `read` ([`Timeout::Read`], the connection
///   stays usable);
/// - the write timeout bounds how long writing waits for the client to make
///   room ([`Timeout::Write`]; when the kernel took part of the buffer
///   before the timeout fired, the following write fails instead, so a
///   `write_all` gives up after about one write timeout);
/// - the idle timeout bounds how long the client may stay silent while the
///   handler reads: one `read`, or several that each hit the read timeout
///   ([`Timeout::Idle`], the connection is finished);
/// - the deadline bounds every read and write from now until the
///   deadline, so a client that trickles one byte at a time cannot hold the
///   worker past it ([`Timeout::Deadline`], the connection is finished).
///
/// A read waits for the shortest of these; when the read and idle timeouts
/// are equal, the idle timeout is the one reported. The socket's timeout is
/// set only when it changes, so a connection without a deadline costs no
/// extra system call per read.
///
/// A client that reads a few bytes just often enough can keep a long
/// `write_all` going, as it can keep a read going by sending a byte now and
/// then. Only a deadline bounds a whole exchange: set one when a reply is
/// large or a request long and the client is not trusted.
///
/// The setters take `&self`, so a handler can change a limit or set a
/// deadline per request while a reader borrows the connection.
///
/// # Shutdown
///
/// While the server drains, [`is_shutting_down`](Connection::is_shutting_down)
/// is true: a handler that serves many requests on one connection should
/// finish the current one and return. Connections still open at the drain
/// deadline are shut down (both directions), so a blocked read returns.
pub struct Connection {
    stream: Arc<TcpStream>,
    peer_addr: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    limits: Cell<Limits>,
    deadline: Cell<Option<Instant>>,
    /// The timeouts currently set on the socket, to skip unchanged
    /// `setsockopt` calls; `None` when unknown because the handler was given
    /// the stream (see `stream`).
    socket_read_timeout: Cell<Option<Option<Duration>>>,
    socket_write_timeout: Cell<Option<Option<Duration>>>,
    /// Set once an idle or deadline timeout has finished this connection.
    ended: Cell<Option<Timeout>>,
    /// When the client's current silence began, once a read timeout has
    /// fired during it.
    silent_since: Cell<Option<Instant>>,
    /// Set when a write returned a partial count after waiting the write
    /// timeout: the next write reports the timeout.
    write_stalled: Cell<bool>,
}

impl Connection {
    pub(crate) fn new(
        stream: Arc<TcpStream>,
        peer_addr: SocketAddr,
        id: u64,
        shared: Arc<Shared>,
        limits: Limits,
        socket_timeouts: Option<SocketTimeouts>,
    ) -> Connection {
        Connection {
            stream,
            peer_addr,
            id,
            shared,
            limits: Cell::new(limits),
            deadline: Cell::new(None),
            socket_read_timeout: Cell::new(socket_timeouts.map(|t| t.read)),
            socket_write_timeout: Cell::new(socket_timeouts.map(|t| t.write)),
            ended: Cell::new(None),
            silent_since: Cell::new(None),
            write_stalled: Cell::new(false),
        }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The server's address for this connection (useful when the server
    /// listens on an unspecified address such as `0.0.0.0`).
    ///
    /// # Errors
    ///
    /// Fails when `getsockname(2)` does, e.g. after the connection was reset.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// A number that identifies this connection among all the server's
    /// connections; ids start at 1 and grow by one per accepted connection.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The underlying stream, for socket options or `try_clone` (for
    /// example to write from another thread).
    ///
    /// Timeouts set directly on the stream are overwritten by the
    /// connection's own: use [`set_read_timeout`](Connection::set_read_timeout)
    /// and friends instead. A clone shares the socket's timeouts with the
    /// connection, which does not see them change: set none on a clone.
    pub fn stream(&self) -> &TcpStream {
        // The caller may change the socket's timeouts: set them again
        // before the next read and write.
        self.socket_read_timeout.set(None);
        self.socket_write_timeout.set(None);
        &self.stream
    }

    /// Whether the server is shutting down; a handler that loops over many
    /// requests should finish the current one and return.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_stopping()
    }

    /// Sets a point in time after which every read and write fails with
    /// [`Timeout::Deadline`]; `None` removes it.
    ///
    /// # Examples
    ///
    /// A request must be complete within five seconds:
    ///
    /// ```
    /// use std::io::{self, Read};
    /// use std::time::{Duration, Instant};
    ///
    /// fn handle(conn: &mut frontdesk::Connection) -> io::Result<()> {
    ///     conn.set_deadline(Instant::now() + Duration::from_secs(5));
    ///     let mut request = [0u8; 16];
    ///     conn.read_exact(&mut request)?;
    ///     conn.set_deadline(None);
    ///     Ok(())
    /// }
    /// # let _ = handle;
    /// ```
    pub fn set_deadline(&self, deadline: impl Into<Option<Instant>>) {
        self.deadline.set(deadline.into());
    }

    /// The deadline set by [`set_deadline`](Connection::set_deadline).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// Sets the read timeout for this connection; `None` waits forever
    /// (still bounded by the idle timeout and the deadline).
    pub fn set_read_timeout(&self, timeout: impl Into<Option<Duration>>) {
        self.update_limits(|limits| limits.read_timeout = timeout.into());
    }

    /// The read timeout in force for this connection.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.limits.get().read_timeout
    }

    /// Sets the write timeout for this connection; `None` waits forever
    /// (still bounded by the deadline).
    pub fn set_write_timeout(&self, timeout: impl Into<Option<Duration>>) {
        self.update_limits(|limits| limits.write_timeout = timeout.into());
    }

    /// The write timeout in force for this connection.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.limits.get().write_timeout
    }

    /// Sets the idle timeout for this connection; `None` lets the client
    /// stay silent forever.
    pub fn set_idle_timeout(&self, timeout: impl Into<Option<Duration>>) {
        self.update_limits(|limits| limits.idle_timeout = timeout.into());
    }

    /// The idle timeout in force for this connection.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.limits.get().idle_timeout
    }

    fn update_limits(&self, change: impl FnOnce(&mut Limits)) {
        let mut limits = self.limits.get();
        change(&mut limits);
        self.limits.set(limits);
    }

    /// The timeout that finished this connection ([`Timeout::Idle`] or
    /// [`Timeout::Deadline`]), if one did: every read and write now fails.
    pub fn ended_by(&self) -> Option<Timeout> {
        self.ended.get()
    }

    /// Shuts down the read, write or both halves of the connection, as
    /// [`TcpStream::shutdown`] does.
    ///
    /// # Errors
    ///
    /// Fails when `shutdown(2)` does, e.g. when the peer is already gone.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.stream.shutdown(how)
    }

    fn do_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // After a read timeout the client has been silent for a while
        // already: the idle timeout counts from its last byte, not from
        // this read, so a handler that polls with a short read timeout
        // still ends an idle connection.
        let idle = match (self.limits.get().idle_timeout, self.silent_since.get()) {
            (Some(idle), Some(since)) if self.ended.get().is_none() => {
                let left = idle.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Err(self.timed_out(Timeout::Idle));
                }
                Some(left)
            }
            (idle, _) => idle,
        };
        let bounds = Bounds {
            op: (self.limits.get().read_timeout, Timeout::Read),
            idle,
        };
        let result = self.with_timeout(
            bounds,
            &self.socket_read_timeout,
            |timeout| self.stream.set_read_timeout(timeout),
            |mut stream| stream.read(buf),
        );
        match &result {
            Ok(n) if *n > 0 => self.silent_since.set(None),
            Err(error)
                if self.silent_since.get().is_none()
                    && Timeout::of(error) == Some(Timeout::Read) =>
            {
                // The read that just timed out waited the whole read timeout.
                let waited = self.limits.get().read_timeout.unwrap_or_default();
                self.silent_since.set(Instant::now().checked_sub(waited));
            }
            _ => {}
        }
        result
    }

    fn do_write(&self, buf: &[u8]) -> io::Result<usize> {
        // When the write timeout fires after the kernel took part of the
        // buffer, `send` reports the partial count, not the timeout, and
        // `write_all` would start a whole new timeout for the rest. Report
        // the timeout on the next write instead, so that a client that stops
        // reading holds the worker for about one write timeout, not several.
        if self.write_stalled.replace(false) {
            return Err(self.timed_out(Timeout::Write));
        }
        let write_timeout = self.limits.get().write_timeout;
        let bounds = Bounds {
            op: (write_timeout, Timeout::Write),
            idle: None,
        };
        let started = write_timeout.map(|_| Instant::now());
        let result = self.with_timeout(
            bounds,
            &self.socket_write_timeout,
            |timeout| self.stream.set_write_timeout(timeout),
            |mut stream| stream.write(buf),
        );
        if let (Ok(n), Some(timeout), Some(started)) = (&result, write_timeout, started) {
            if *n < buf.len() && started.elapsed() >= timeout {
                self.write_stalled.set(true);
            }
        }
        result
    }

    /// Runs one read or write under the shortest applicable limit, and turns
    /// a timeout into the right [`Timeout`].
    fn with_timeout<T>(
        &self,
        bounds: Bounds,
        current: &Cell<Option<Option<Duration>>>,
        set_timeout: impl Fn(Option<Duration>) -> io::Result<()>,
        mut op: impl FnMut(&TcpStream) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            if let Some(ended) = self.ended.get() {
                return Err(ended.into());
            }
            let (timeout, cause) = match self.limit(bounds) {
                Ok(limit) => limit,
                Err(timeout) => return Err(self.timed_out(timeout)),
            };
            if current.get() != Some(timeout) {
                set_timeout(timeout)?;
                current.set(Some(timeout));
            }
            match op(&self.stream) {
                Err(e) if is_timeout(&e) => {
                    // The kernel's timer can fire a little before our
                    // deadline; go round again for the rest of the time.
                    if cause == Timeout::Deadline && !self.deadline_passed() {
                        continue;
                    }
                    return Err(self.timed_out(cause));
                }
                result => return result,
            }
        }
    }

    /// The timeout for the next operation and the limit it comes from, or
    /// the error if the deadline has already passed.
    fn limit(&self, bounds: Bounds) -> Result<(Option<Duration>, Timeout), Timeout> {
        let (mut timeout, mut cause) = bounds.op;
        let mut tighten = |candidate: Option<Duration>, kind: Timeout| {
            if let Some(candidate) = candidate {
                if timeout.map_or(true, |t| candidate <= t) {
                    timeout = Some(candidate);
                    cause = kind;
                }
            }
        };
        tighten(bounds.idle, Timeout::Idle);
        if let Some(deadline) = self.deadline.get() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Timeout::Deadline);
            }
            tighten(Some(left), Timeout::Deadline);
        }
        Ok((timeout.map(at_least_a_tick), cause))
    }

    fn deadline_passed(&self) -> bool {
        self.deadline
            .get()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    fn timed_out(&self, timeout: Timeout) -> io::Error {
        Counters::bump(timeout.counter(&self.shared.counters));
        if timeout.ends_connection() {
            self.ended.set(Some(timeout));
            log::debug!(
                "connection timed out: peer={} id={} reason={timeout}",
                self.peer_addr,
                self.id
            );
        }
        timeout.into()
    }
}

#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// The per-operation timeout and what to call it when it fires.
    op: (Option<Duration>, Timeout),
    idle: Option<Duration>,
}

/// `SO_RCVTIMEO` and `SO_SNDTIMEO` report `EAGAIN` (`WouldBlock`) on Unix and
/// `WSAETIMEDOUT` (`TimedOut`) on Windows.
fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.do_read(buf)
    }
}

impl Read for &Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.do_read(buf)
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.do_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.do_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Connection {
            stream: _,
            peer_addr,
            id,
            shared: _,
            limits,
            deadline,
            socket_read_timeout: _,
            socket_write_timeout: _,
            ended,
            silent_since: _,
            write_stalled: _,
        } = self;
        f.debug_struct("Connection")
            .field("id", id)
            .field("peer_addr", peer_addr)
            .field("limits", limits)
            .field("deadline", deadline)
            .field("ended", &ended.get())
            .finish_non_exhaustive()
    }
}
