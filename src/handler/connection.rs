//! `Connection`: what a handler sees of one client, and the timeouts that
//! keep a slow client from holding a worker.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::Addr;
use crate::config::{Limits, Timeout};
use crate::net::listener::Listener;
use crate::net::socket::{PeerCredentials, Socket};
use crate::pool::closer::ClientEnd;
use crate::pool::shutdown::Shared;
use crate::pool::workers::Admitted;
use crate::stats::Counters;
use crate::stream::proxy::ProxyHeader;
use crate::stream::transport::Transport;
#[cfg(unix)]
use crate::stream::wait::BRIEF_WAIT;
use crate::stream::wait::{self, Interest, Signal, Woken};

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
/// - the write timeout bounds how long one write waits for the client to
///   make room ([`Timeout::Write`]);
/// - the idle timeout bounds how long the client may stay silent while the
///   handler reads: one `read`, or several that each hit the read timeout
///   ([`Timeout::Idle`], the connection is finished);
/// - the deadline bounds every read and write from now until the
///   deadline, so a client that trickles one byte at a time cannot hold the
///   worker past it ([`Timeout::Deadline`], the connection is finished).
///
/// A read waits for the shortest of these; when the read and idle
/// timeouts are equal, the idle timeout is the one reported. A read or
/// write whose data is ready costs one system call. On Unix, a read
/// over a plain socket first waits for the client in the `recv` itself,
/// for up to 50 ms (bounded by the socket's receive timeout,
/// `SO_RCVTIMEO`, which the connection sets the first time a read finds
/// nothing), so that a request/reply exchange with a busy client costs
/// a read and a write, as in a thread-per-connection server; a client
/// that stays quiet longer is waited for in `poll(2)`, which the
/// server's shutdown can wake. A write that has to wait costs a
/// `poll(2)` more. The socket stays in blocking mode.
///
/// A client that reads a few bytes just often enough can keep a long
/// `write_all` going, as it can keep a read going by sending a byte now and
/// then. Only a deadline bounds a whole exchange: set one when a reply is
/// large or a request long and the client is not trusted.
///
/// The setters take `&self`, so a handler can change a limit or set a
/// deadline per request while a reader borrows the connection.
///
/// # TLS
///
/// Over TLS a write returns once its encrypted records are all in the
/// kernel. A write whose records were taken, but not all written when the
/// write timeout fired, still succeeds (its bytes are on their way, and a
/// retry would send them twice); the next write reports the timeout if
/// they still wait, and a read first waits for them to leave, as a write
/// would, since the client may be waiting for the end of that reply.
///
/// # Shutdown
///
/// While the server drains, [`is_shutting_down`](Connection::is_shutting_down)
/// is true, and reads change in one way: a read that finds nothing to
/// read waits at most [`drain_quiet_time`](crate::ServerBuilder::drain_quiet_time)
/// for more, then returns `Ok(0)`, end of stream. So every byte the
/// client sent before the shutdown, and whatever it keeps sending without
/// a pause, is read and answered; a handler waiting for a silent client
/// returns after that quiet time, counted from the shutdown. (A read in
/// its first 50 ms in `recv`, see above, notices the shutdown only when
/// that wait ends, up to 50 ms late; the client was quiet meanwhile, so
/// that counts as quiet time, but with a quiet time shorter than 50 ms the
/// handler may return that much later.) At the drain deadline, reads and
/// writes still waiting fail with [`io::ErrorKind::ConnectionAborted`].
/// However the handler ends, the connection is then closed gently: the
/// client reads every reply, then end of stream, never a reset.
pub struct Connection {
    transport: Transport,
    peer_addr: Addr,
    /// The PROXY protocol header, when the server requires one.
    proxy: Option<Box<ProxyHeader>>,
    id: u64,
    /// A Unix socket peer's credentials, read once when admitted.
    credentials: Option<PeerCredentials>,
    /// The listener it came through (its index in `Shared::listeners`).
    listener: usize,
    shared: Arc<Shared>,
    limits: Cell<Limits>,
    deadline: Cell<Option<Instant>>,
    /// Set once an idle or deadline timeout has finished this connection.
    ended: Cell<Option<Timeout>>,
    /// When the client's current silence began, once a read timeout has
    /// fired during it.
    silent_since: Cell<Option<Instant>>,
    /// Whether something was written since the last read.
    replied: Cell<bool>,
    /// `Read` once a read of the plain socket returned the client's end
    /// of stream: the close need not wait for it.
    client_end: Cell<ClientEnd>,
    /// Set when a write succeeded although its last TLS records were
    /// still waiting when the write timeout fired: the next write reports
    /// that timeout (once) if they still wait.
    write_stalled: Cell<bool>,
    /// Whether a read may first wait in the kernel (see `read_briefly`).
    #[cfg_attr(not(unix), allow(dead_code))]
    brief: Cell<Brief>,
}

/// What a read's wait in `recv` itself came to.
#[cfg(unix)]
enum Briefly {
    /// Input, or the end of stream: this many bytes.
    Read(usize),
    /// The client was quiet for this long: the whole wait, or until a
    /// signal handler cut it short.
    Quiet(Duration),
    /// This read may not wait so.
    NotNow,
}

/// Whether a read may wait for the client in `recv` itself, bounded by the
/// socket's receive timeout, before it waits in `poll(2)`. Always `Off`
/// on Windows.
#[cfg_attr(not(unix), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Brief {
    /// Yes, once the receive timeout is set.
    Unset,
    /// Yes: the socket's receive timeout is `BRIEF_WAIT`.
    Armed,
    /// No: TLS (whose records a read may only take in part), or a handler
    /// that took the socket itself ([`Connection::tcp_stream`]), whose own
    /// reads must not see a receive timeout it did not set.
    Off,
}

impl Connection {
    pub(crate) fn new(conn: Admitted, shared: Arc<Shared>, limits: Limits) -> Connection {
        let is_tls = conn.transport.is_tls();
        Connection {
            credentials: conn.transport.socket().peer_credentials(),
            transport: conn.transport,
            peer_addr: conn.peer,
            proxy: conn.proxy.map(Box::new),
            id: conn.id,
            listener: conn.listener,
            shared,
            limits: Cell::new(limits),
            deadline: Cell::new(None),
            ended: Cell::new(None),
            silent_since: Cell::new(None),
            replied: Cell::new(false),
            client_end: Cell::new(ClientEnd::NotSeen),
            write_stalled: Cell::new(false),
            brief: Cell::new(match cfg!(unix) && !is_tls {
                true => Brief::Unset,
                false => Brief::Off,
            }),
        }
    }

    /// The client's address: the TCP peer's or, behind a proxy that
    /// sends the PROXY protocol (see
    /// [`proxy_protocol`](crate::ServerBuilder::proxy_protocol)), the one
    /// its header names. On a Unix socket the client usually has no
    /// name: `Addr::Unix(None)`.
    pub fn peer_addr(&self) -> Addr {
        self.peer_addr.clone()
    }

    /// The listener the connection came through: its index in the order
    /// the listeners were added, its name if it has one, and its address
    /// (see [`Listener`]). A server with one listener has index 0.
    pub fn listener(&self) -> &Listener {
        &self.shared.listener(self.listener).info
    }

    /// The PROXY protocol header the connection began with: the proxy's
    /// own address and the v2 TLVs. `None` unless the server requires the
    /// protocol.
    pub fn proxy(&self) -> Option<&ProxyHeader> {
        self.proxy.as_deref()
    }

    /// The server's address for this connection (useful when the server
    /// listens on an unspecified address such as `0.0.0.0`).
    ///
    /// # Errors
    ///
    /// Fails when `getsockname(2)` does, e.g. after the connection was reset.
    pub fn local_addr(&self) -> io::Result<Addr> {
        self.transport.socket().local_addr()
    }

    /// A number that identifies this connection among all the server's
    /// connections; ids start at 1 and grow by one per accepted connection.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The TCP socket under the connection, for socket options; `None`
    /// on a Unix socket.
    ///
    /// Reads and writes made on it directly bypass the connection's
    /// timeouts and its shutdown handling (a read blocked there is not
    /// woken by the drain deadline) and, on a TLS connection, TLS itself:
    /// they would break the session. Once this is called, the connection
    /// no longer uses the socket's own timeouts (`SO_RCVTIMEO`,
    /// `SO_SNDTIMEO`; it otherwise keeps a short receive timeout for its
    /// reads), so they are as the handler sets them, for its direct use.
    pub fn tcp_stream(&self) -> Option<&TcpStream> {
        self.hand_out_socket();
        self.transport.socket().tcp()
    }

    /// The Unix socket under the connection, for what only it can tell
    /// (the client's credentials, with `SO_PEERCRED` or `peer_cred`);
    /// `None` over TCP. As with [`tcp_stream`](Connection::tcp_stream),
    /// reading or writing it directly bypasses the connection.
    #[cfg(unix)]
    pub fn unix_stream(&self) -> Option<&std::os::unix::net::UnixStream> {
        self.hand_out_socket();
        self.transport.socket().unix()
    }

    /// The handler may read the socket itself from now on: a blocking
    /// read there must wait as long as the handler says, so the receive
    /// timeout the connection set for its own reads goes.
    fn hand_out_socket(&self) {
        #[cfg(unix)]
        if self.brief.replace(Brief::Off) == Brief::Armed {
            let _ = wait::set_recv_timeout(&**self.transport.socket(), None);
        }
    }

    /// Whether the connection speaks TLS (`ServerBuilder::tls`, with the
    /// `tls` feature); its reads and writes are then the plaintext.
    pub fn is_tls(&self) -> bool {
        self.transport.is_tls()
    }

    /// What the TLS handshake settled: the client's verified certificate
    /// chain, the name it asked for (SNI), the ALPN protocol; `None` on a
    /// connection without TLS. The handshake is complete before the
    /// handler is called, so on a TLS connection this is always there.
    /// See [`TlsInfo`](crate::TlsInfo) for an example.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_info(&self) -> Option<&crate::stream::tls::TlsInfo> {
        self.transport.tls_info().map(|info| &**info)
    }

    /// The user, group and process of the client of a Unix socket, as
    /// the kernel recorded them when it connected; `None` over TCP (and
    /// where the system does not tell: see [`PeerCredentials`]). Read
    /// once, before the handler is called.
    ///
    /// # Examples
    ///
    /// A server that tells each client who it is:
    ///
    /// ```
    /// # #[cfg(target_os = "linux")]
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::{self, Read, Write};
    /// use std::os::unix::net::UnixStream;
    ///
    /// use frontdesk::{Connection, Server};
    ///
    /// # let dir = std::env::temp_dir().join(format!("frontdesk-doc-cred-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("app.sock");
    /// let server = Server::builder().bind_unix(&path)?;
    /// let handle = server.spawn(|conn: &mut Connection| -> io::Result<()> {
    ///     match conn.peer_credentials() {
    ///         Some(who) => writeln!(conn, "uid {} pid {:?}", who.uid(), who.pid()),
    ///         None => writeln!(conn, "unknown"),
    ///     }
    /// })?;
    ///
    /// let mut client = UnixStream::connect(&path)?;
    /// let mut reply = String::new();
    /// client.read_to_string(&mut reply)?;
    /// // This process connected: its own pid comes back.
    /// assert!(reply.ends_with(&format!(" pid Some({})\n", std::process::id())), "{reply}");
    /// handle.shutdown()?;
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// # #[cfg(not(target_os = "linux"))]
    /// # fn main() {}
    /// ```
    pub fn peer_credentials(&self) -> Option<PeerCredentials> {
        self.credentials
    }

    /// Ends the stream as its protocol wants and gives the socket back
    /// for the gentle close. TLS's records still waiting (the end of the
    /// last reply, `close_notify`) are waited for, for at most the linger
    /// time: the closer only shuts down the socket, which would cut them
    /// off, and a client that does not read should not hold the worker
    /// for a whole write timeout more.
    pub(crate) fn finish(&self) -> Arc<Socket> {
        let socket = self.transport.finish();
        // `None`: a linger time too long for an `Instant`, no limit.
        let until = Instant::now().checked_add(self.shared.linger_time);
        while self.transport.wants_write() && self.check_usable().is_ok() {
            if !matches!(self.transport.flush_now(), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
            {
                break;
            }
            let left = until.map(|until| until.saturating_duration_since(Instant::now()));
            let signal = self.shared.force_signal();
            match wait::wait(&*socket, Interest::Write, Some(signal), left) {
                Ok(Woken::Ready) => {}
                _ => break,
            }
        }
        socket
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
    /// [`TcpStream::shutdown`] does. On a TLS connection, shutting down
    /// the write half first sends TLS's `close_notify`, as far as the
    /// socket takes it now.
    ///
    /// # Errors
    ///
    /// Fails when `shutdown(2)` does, e.g. when the peer is already gone.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            self.transport.finish();
        }
        self.transport.socket().shutdown(how)
    }

    fn do_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // Where the read may wait in `recv` itself, that comes first (see
        // `read_briefly`). Otherwise: right after a reply the client
        // usually has to answer before there is anything to read, so wait
        // first, which saves a read that would find nothing (a
        // request/reply exchange then costs a poll, a read and a write);
        // else read first: pipelined or streamed input is usually there
        // already. With TLS, input may already be decrypted and waiting.
        let mut read_first = !self.replied.replace(false) || self.transport.has_buffered_input();
        // How long this read has waited already, for its read and idle
        // timeouts.
        #[allow(unused_mut)]
        let mut waited = Duration::ZERO;
        #[cfg(unix)]
        match self.read_briefly(buf)? {
            Briefly::Read(n) => return Ok(n),
            Briefly::Quiet(time) => {
                waited = time;
                read_first = false;
            }
            Briefly::NotNow => {}
        }
        loop {
            self.check_usable()?;
            if read_first {
                if let Some(n) = self.read_now(buf)? {
                    return Ok(n);
                }
            }
            read_first = true;
            if self.transport.wants_write() {
                // The last reply's TLS records still wait for the socket:
                // the client may be waiting for them before it says more.
                // They are waited for as a write would wait.
                self.flush_pending()?;
            }
            // Nothing has arrived: wait for the client, the shortest limit,
            // or the server's stop.
            let draining = self.shared.is_stopping();
            let mut limit = self.limit(Bounds {
                op: (
                    self.limits
                        .get()
                        .read_timeout
                        .map(|t| t.saturating_sub(waited)),
                    Cause::Timeout(Timeout::Read),
                ),
                idle: self.idle_left(waited)?,
            })?;
            let signal = if draining {
                // A stop that came during the wait in `recv` found the
                // client quiet already: the quiet time counts from it.
                let quiet_already = waited.min(self.shared.stopped_for());
                let quiet = self.shared.drain_quiet.saturating_sub(quiet_already);
                limit.tighten(Some(quiet), Cause::DrainQuiet);
                self.shared.force_signal()
            } else {
                self.shared.stop_signal()
            };
            let socket = &**self.transport.socket();
            match wait::wait(socket, Interest::Read, Some(signal), limit.timeout)? {
                // Ready: read again. Stopped: read again, draining. Forced:
                // `check_usable` says so.
                Woken::Ready | Woken::Signal => {}
                Woken::TimedOut => match limit.cause {
                    // The client has been quiet since the shutdown began:
                    // what it sent has all been read.
                    Cause::DrainQuiet => return Ok(0),
                    Cause::Timeout(timeout) => {
                        if let Some(error) = self.expired(timeout) {
                            if timeout == Timeout::Read {
                                self.note_silence();
                            }
                            return Err(error);
                        }
                    }
                },
            }
        }
    }

    /// After a read timeout the client has been silent for a while
    /// already: the idle timeout counts from its last byte, not from the
    /// next read, so a handler that polls with a short read timeout still
    /// ends an idle connection.
    /// `waited`: how long the current read has waited already.
    fn idle_left(&self, waited: Duration) -> io::Result<Option<Duration>> {
        let left = self.idle_remaining();
        if self.silent_since.get().is_none() {
            // The silence began with this read.
            return Ok(left.map(|left| left.saturating_sub(waited)));
        }
        if left == Some(Duration::ZERO) {
            return Err(self.timed_out(Timeout::Idle));
        }
        Ok(left)
    }

    /// What is left of the idle timeout: counted from the client's last
    /// byte once a read timeout has fired during its silence, else all
    /// of it.
    fn idle_remaining(&self) -> Option<Duration> {
        let idle = self.limits.get().idle_timeout?;
        Some(match self.silent_since.get() {
            Some(since) => idle.saturating_sub(since.elapsed()),
            None => idle,
        })
    }

    /// The time left before the deadline, if one is set.
    fn deadline_left(&self) -> Option<Duration> {
        let deadline = self.deadline.get()?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Reads what has arrived, without waiting: `None` when nothing has.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.transport.recv_now(buf) {
            Ok(n) => Ok(Some(self.heard(n, buf.len()))),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Notes a read of `n` bytes of the `asked`: any byte ends the
    /// client's silence, and none is its end of stream. (With TLS, the
    /// end of the session: the socket may still hold bytes after it.)
    fn heard(&self, n: usize, asked: usize) -> usize {
        if n > 0 {
            self.silent_since.set(None);
        } else if asked > 0 && !self.transport.is_tls() {
            self.client_end.set(ClientEnd::Read);
        }
        n
    }

    /// What the close knows of the client's end (see [`heard`](Self::heard)).
    pub(crate) fn client_end(&self) -> ClientEnd {
        self.client_end.get()
    }

    /// Waits for the client in the read itself, for up to [`BRIEF_WAIT`],
    /// when nothing keeps this read from it: a client that answers within
    /// that time, as a busy one does, then costs no `poll(2)`. It may not
    /// when a shutdown has begun (only `poll(2)` watches the drain's
    /// signals), when a limit would pass sooner, or when the socket is
    /// not the connection's alone (`Brief::Off`).
    #[cfg(unix)]
    fn read_briefly(&self, buf: &mut [u8]) -> io::Result<Briefly> {
        if self.brief.get() == Brief::Off
            || self.ended.get().is_some()
            || self.shared.is_stopping()
            || !self.limits_allow(BRIEF_WAIT)
        {
            return Ok(Briefly::NotNow);
        }
        let socket = &**self.transport.socket();
        if self.brief.get() == Brief::Unset {
            // A connection whose reads never have to wait (one request
            // that was there when the worker took it) need not pay for
            // the receive timeout: try without it first.
            if let Some(n) = self.read_now(buf)? {
                return Ok(Briefly::Read(n));
            }
            if wait::set_recv_timeout(socket, Some(BRIEF_WAIT)).is_err() {
                self.brief.set(Brief::Off);
                return Ok(Briefly::NotNow);
            }
            self.brief.set(Brief::Armed);
        }
        let started = Instant::now();
        match wait::recv_waiting(socket, buf) {
            Ok(n) => Ok(Briefly::Read(self.heard(n, buf.len()))),
            // Quiet, or a signal handler ran: the rest of the wait is in
            // `poll(2)`, where the stop can reach it (see `recv_waiting`).
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Briefly::Quiet(started.elapsed()))
            }
            Err(error) => Err(error),
        }
    }

    /// Whether a wait of `time` passes none of the limits: the read
    /// timeout, what is left of the idle timeout, the deadline.
    #[cfg(unix)]
    fn limits_allow(&self, time: Duration) -> bool {
        let read = self.limits.get().read_timeout;
        [read, self.idle_remaining(), self.deadline_left()]
            .into_iter()
            .flatten()
            .all(|limit| limit >= time)
    }

    fn note_silence(&self) {
        if self.silent_since.get().is_none() {
            // The read that just timed out waited the whole read timeout.
            let waited = self.limits.get().read_timeout.unwrap_or_default();
            self.silent_since.set(Instant::now().checked_sub(waited));
        }
    }

    fn do_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.report_stall()?;
        let n = loop {
            self.check_usable()?;
            match self.transport.send_now(buf) {
                Ok(n) => break n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.wait_for_room()?,
                Err(error) => return Err(error),
            }
        };
        self.replied.set(true);
        // TLS may hold encrypted bytes the socket did not take: they leave
        // before the write returns, or a client could wait forever for a
        // reply that sits here. A timeout meanwhile does not undo the
        // write, whose bytes were taken (and go out with the next read,
        // write or the close): the write succeeds, and the next write
        // reports the timeout if they still wait.
        match self.flush_pending() {
            Ok(()) => Ok(n),
            Err(error) => match Timeout::of(&error) {
                Some(Timeout::Write) => {
                    self.write_stalled.set(true);
                    Ok(n)
                }
                // The connection is finished: the next call says so.
                Some(_) => Ok(n),
                None => Err(error),
            },
        }
    }

    /// Reports, once, the write timeout a write that succeeded left
    /// behind, if its TLS records still wait for the socket.
    fn report_stall(&self) -> io::Result<()> {
        if !self.write_stalled.take() {
            return Ok(());
        }
        match self.transport.flush_now() {
            // Counted when it fired.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(Timeout::Write.into()),
            result => result,
        }
    }

    /// Writes what TLS still holds, waiting for room as a write does.
    fn flush_pending(&self) -> io::Result<()> {
        loop {
            match self.transport.flush_now() {
                Ok(()) => {
                    self.write_stalled.set(false);
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
            self.check_usable()?;
            self.wait_for_room()?;
        }
    }

    /// Waits until the socket may take more, or the write timeout or
    /// deadline passes. A shutdown does not end the wait (the client may
    /// be about to read); the drain deadline does, which `check_usable`
    /// then reports.
    fn wait_for_room(&self) -> io::Result<()> {
        loop {
            let limit = self.limit(Bounds {
                op: (
                    self.limits.get().write_timeout,
                    Cause::Timeout(Timeout::Write),
                ),
                idle: None,
            })?;
            let signal: &Signal = self.shared.force_signal();
            let socket = &**self.transport.socket();
            if wait::wait(socket, Interest::Write, Some(signal), limit.timeout)? != Woken::TimedOut
            {
                return Ok(());
            }
            if let Cause::Timeout(timeout) = limit.cause {
                if let Some(error) = self.expired(timeout) {
                    return Err(error);
                }
            }
        }
    }

    /// Fails when the connection can no longer be used: a timeout finished
    /// it, or the drain deadline passed.
    fn check_usable(&self) -> io::Result<()> {
        if let Some(ended) = self.ended.get() {
            return Err(ended.into());
        }
        if self.shared.is_forced() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server's drain deadline passed",
            ));
        }
        Ok(())
    }

    /// The error for a wait that timed out on `timeout`, or `None` when
    /// the wait ended a little before the deadline (the kernel's timer may
    /// fire early) and should go round again.
    fn expired(&self, timeout: Timeout) -> Option<io::Error> {
        if timeout == Timeout::Deadline && !self.deadline_passed() {
            return None;
        }
        Some(self.timed_out(timeout))
    }

    /// The time the next wait may take and the limit it comes from, or the
    /// error if the deadline has already passed.
    fn limit(&self, bounds: Bounds) -> io::Result<Limit> {
        let (timeout, cause) = bounds.op;
        let mut limit = Limit { timeout, cause };
        limit.tighten(bounds.idle, Cause::Timeout(Timeout::Idle));
        if let Some(left) = self.deadline_left() {
            if left.is_zero() {
                return Err(self.timed_out(Timeout::Deadline));
            }
            limit.tighten(Some(left), Cause::Timeout(Timeout::Deadline));
        }
        Ok(limit)
    }

    fn deadline_passed(&self) -> bool {
        self.deadline_left() == Some(Duration::ZERO)
    }

    fn timed_out(&self, timeout: Timeout) -> io::Error {
        Counters::bump(self.shared.counters.timed_out(timeout));
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
    op: (Option<Duration>, Cause),
    idle: Option<Duration>,
}

/// What ends a wait when its time runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Timeout(Timeout),
    /// The client sent nothing for the drain's quiet time.
    DrainQuiet,
}

/// How long a wait may take, and why.
#[derive(Debug, Clone, Copy)]
struct Limit {
    timeout: Option<Duration>,
    cause: Cause,
}

impl Limit {
    /// Makes `candidate` the limit if it is at least as short; so of two
    /// equal limits the later one is reported.
    fn tighten(&mut self, candidate: Option<Duration>, cause: Cause) {
        if let Some(candidate) = candidate {
            if self.timeout.map_or(true, |t| candidate <= t) {
                self.timeout = Some(candidate);
                self.cause = cause;
            }
        }
    }
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
            transport,
            peer_addr,
            proxy: _,
            id,
            credentials,
            listener: _,
            shared: _,
            limits,
            deadline,
            ended,
            silent_since: _,
            replied: _,
            client_end: _,
            write_stalled: _,
            brief: _,
        } = self;
        f.debug_struct("Connection")
            .field("id", id)
            .field("peer_addr", peer_addr)
            .field("listener", self.listener())
            .field("transport", transport)
            .field("credentials", credentials)
            .field("limits", limits)
            .field("deadline", deadline)
            .field("ended", &ended.get())
            .finish_non_exhaustive()
    }
}
