//! `ServerBuilder`: defaults, setters, validation, and `bind`.

use std::fmt;
use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::connection::Limits;
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::server::{Config, Server};
use crate::socket::{self, ListenOptions, StreamOptions};

/// The most worker threads a server may have. Far above what a blocking
/// server should run; it only catches a mistyped number before it turns
/// into thousands of threads.
pub const MAX_WORKERS: usize = 4096;

/// The longest queue a server may have: the queue's slots are allocated
/// up front, so a mistyped number would cost memory.
pub const MAX_QUEUE: usize = 1 << 20;

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

/// Configures and binds a [`Server`].
///
/// Every setter takes and returns the builder; nothing happens until
/// [`bind`](ServerBuilder::bind) or
/// [`from_listener`](ServerBuilder::from_listener), which check the values
/// and return [`Error::Config`] for a bad one (setters never panic).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = frontdesk::Server::builder()
///     .workers(4)
///     .queue(16)
///     .idle_timeout(Duration::from_secs(30))
///     .bind("127.0.0.1:0")?;
/// assert_ne!(server.local_addr().port(), 0);
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `bind` is called"]
#[derive(Clone)]
pub struct ServerBuilder {
    workers: usize,
    queue: usize,
    backlog: u32,
    nodelay: bool,
    reuse_address: bool,
    reuse_port: bool,
    only_v6: bool,
    keepalive: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    overload: Overload,
    max_connections: Option<usize>,
    shutdown_timeout: Duration,
    stop_reading_on_shutdown: bool,
    on_reject: Option<Arc<dyn Handler>>,
}

impl Default for ServerBuilder {
    fn default() -> ServerBuilder {
        ServerBuilder::new()
    }
}

impl ServerBuilder {
    /// A builder with every option at its default.
    pub fn new() -> ServerBuilder {
        ServerBuilder {
            workers: 16,
            queue: 64,
            backlog: 1024,
            nodelay: true,
            reuse_address: true,
            reuse_port: false,
            only_v6: true,
            keepalive: None,
            read_timeout: None,
            write_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(300)),
            overload: Overload::Block,
            max_connections: None,
            shutdown_timeout: Duration::from_secs(10),
            stop_reading_on_shutdown: false,
            on_reject: None,
        }
    }

    /// Sets the number of worker threads, each serving one connection at a
    /// time.
    ///
    /// Defaults to 16. A handler spends most of its time waiting for its
    /// client, not computing, so size the pool by how many clients should be
    /// served at once rather than by the number of cores. Must be between 1
    /// and [`MAX_WORKERS`].
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Sets how many accepted connections may wait for a free worker.
    ///
    /// Defaults to 64. `0` means none wait: a connection is handed over only
    /// if a worker is idle at that moment. What happens when the queue is
    /// full is decided by [`overload`](ServerBuilder::overload). At most
    /// [`MAX_QUEUE`]; the queue's slots are allocated when the server starts.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// Sets the `listen(2)` backlog: connections the kernel completes before
    /// the server accepts them.
    ///
    /// Defaults to 1024. Linux silently caps it at `net.core.somaxconn`
    /// (4096 on recent kernels). Must fit in an `i32`.
    pub fn backlog(mut self, n: u32) -> Self {
        self.backlog = n;
        self
    }

    /// Sets `TCP_NODELAY` on every accepted stream, so small writes are sent
    /// at once instead of waiting for Nagle's algorithm.
    ///
    /// Defaults to on: request/response protocols pay up to 40 ms per
    /// exchange without it.
    pub fn nodelay(mut self, yes: bool) -> Self {
        self.nodelay = yes;
        self
    }

    /// Sets `SO_REUSEADDR` on the listener, so a restarted server can bind
    /// its port while connections of the previous one are in `TIME_WAIT`.
    ///
    /// Defaults to on. Ignored on Windows, where the option lets another
    /// socket take over a port in use.
    pub fn reuse_address(mut self, yes: bool) -> Self {
        self.reuse_address = yes;
        self
    }

    /// Sets `SO_REUSEPORT` on the listener, so several servers (or
    /// processes) can listen on one port and the kernel spreads connections
    /// between them.
    ///
    /// Defaults to off. Unix only: elsewhere `bind` fails with
    /// [`Error::Bind`] when this is on.
    pub fn reuse_port(mut self, yes: bool) -> Self {
        self.reuse_port = yes;
        self
    }

    /// Sets `IPV6_V6ONLY` on an IPv6 listener: when on, `[::]` accepts only
    /// IPv6 clients; when off, IPv4 clients too (as `::ffff:a.b.c.d`).
    ///
    /// Defaults to on, so the listener takes exactly the family it was given
    /// on every system (the systems' own defaults differ). Ignored for IPv4
    /// addresses.
    pub fn only_v6(mut self, yes: bool) -> Self {
        self.only_v6 = yes;
        self
    }

    /// Turns on TCP keepalive (`SO_KEEPALIVE`) for accepted streams, with
    /// probes starting after the connection has been idle this long
    /// (`TCP_KEEPIDLE`); `None` leaves it off.
    ///
    /// Defaults to off. Keepalive finds peers that vanished without closing
    /// (a crashed host, a dropped NAT entry); it does not limit how long a
    /// live but silent client may stay (that is the idle timeout). Must be
    /// between 1 and 32767 seconds (Linux's range for `TCP_KEEPIDLE`).
    pub fn keepalive(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.keepalive = idle.into();
        self
    }

    /// Sets the longest time one read may wait; `None` for no limit. A read
    /// that times out fails with [`Timeout::Read`](crate::Timeout::Read)
    /// and the connection stays usable. As for every timeout here, zero
    /// means "fail at once", not "no limit".
    ///
    /// Defaults to none: the idle timeout already bounds waiting for input.
    /// Maps to `SO_RCVTIMEO`.
    pub fn read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.read_timeout = timeout.into();
        self
    }

    /// Sets the longest time one write may wait for room in the send buffer
    /// (a client that does not read); `None` for no limit.
    ///
    /// Defaults to 30 seconds. Maps to `SO_SNDTIMEO`.
    pub fn write_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.write_timeout = timeout.into();
        self
    }

    /// Closes a connection whose client sent nothing for this long while the
    /// handler waited for input; `None` lets clients stay silent forever.
    ///
    /// Defaults to 5 minutes: with a fixed pool, a silent client holds a
    /// worker, and forgotten connections must not take the pool away. Turn
    /// it off, or raise it, for clients that are silent by design (a chat
    /// user reading). Maps to `SO_RCVTIMEO`.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = timeout.into();
        self
    }

    /// Chooses what happens to a new connection when every worker is busy
    /// and the queue is full.
    ///
    /// Defaults to [`Overload::Block`].
    pub fn overload(mut self, policy: Overload) -> Self {
        self.overload = policy;
        self
    }

    /// Caps the connections held by the server (being served or queued);
    /// beyond it new connections go to the reject handler. `None` for no cap
    /// other than `workers + queue`.
    ///
    /// Defaults to none. Must be at least 1.
    pub fn max_connections(mut self, n: impl Into<Option<usize>>) -> Self {
        self.max_connections = n.into();
        self
    }

    /// Sets how long shutdown lets active and queued connections finish
    /// before it closes them by force.
    ///
    /// Defaults to 10 seconds.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// When the server shuts down, ends every connection's input: a read
    /// returns what the client had already sent, then end of stream, while
    /// writes still work (`shutdown(SHUT_RD)` on each connection being
    /// served, and on each queued one as a worker takes it).
    ///
    /// Defaults to off: handlers go on reading until they return (they can
    /// watch [`Connection::is_shutting_down`](crate::Connection::is_shutting_down))
    /// or the drain deadline closes their connection. Turn it on for a
    /// protocol where every message is answered as it arrives (a line
    /// protocol, a chat): everything received before the shutdown is then
    /// answered, and a handler waiting for a silent client returns at once
    /// instead of holding the shutdown until the deadline. Leave it off when
    /// a request can span many reads and must not be cut short.
    ///
    /// # Platform notes
    ///
    /// Relies on Linux's behaviour: after `SHUT_RD` a read returns the
    /// bytes already received, then 0. Elsewhere a read may fail instead.
    pub fn stop_reading_on_shutdown(mut self, yes: bool) -> Self {
        self.stop_reading_on_shutdown = yes;
        self
    }

    /// Sets the handler run on the acceptor thread for every rejected
    /// connection before it is closed, for example to write a "busy" line.
    ///
    /// By default a rejected connection is closed at once. The handler runs
    /// under a deadline of [`REJECT_TIME`](crate::REJECT_TIME), so a client
    /// can never stall the acceptor for longer; then the connection is shut
    /// down for writing and closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use frontdesk::{Connection, Overload, Server};
    ///
    /// let _builder = Server::builder()
    ///     .overload(Overload::Reject)
    ///     .on_reject(|conn: &mut Connection| conn.write_all(b"error: server busy\n"));
    /// ```
    pub fn on_reject(mut self, handler: impl Handler) -> Self {
        self.on_reject = Some(Arc::new(handler));
        self
    }

    /// Binds a listener to `addr` with these options and returns the
    /// server, ready to [`run`](Server::run) or [`spawn`](Server::spawn).
    ///
    /// The socket is listening when this returns: clients may connect (they
    /// wait in the backlog until the server runs). Port 0 asks the OS for a
    /// free port; [`Server::local_addr`] tells which. When `addr` resolves to
    /// several addresses, each is tried in turn, as std does.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid option, [`Error::Resolve`] when `addr`
    /// resolves to nothing, and [`Error::Bind`] naming the address when the
    /// OS refuses (for example `AddrInUse`).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let first = frontdesk::Server::bind("127.0.0.1:0")?;
    /// let taken = first.local_addr();
    /// let error = frontdesk::Server::bind(taken).unwrap_err();
    /// assert!(matches!(error, frontdesk::Error::Bind { addr, .. } if addr == taken));
    /// # Ok(()) }
    /// ```
    pub fn bind(self, addr: impl ToSocketAddrs + fmt::Debug) -> Result<Server> {
        let config = self.config()?;
        let options = self.listen_options()?;
        let resolve_error = |source| Error::Resolve {
            addr: format!("{addr:?}"),
            source,
        };
        let addrs = addr.to_socket_addrs().map_err(resolve_error)?;
        let mut last = None;
        for addr in addrs {
            match socket::listen(addr, options) {
                Ok(listener) => return Server::new(listener, config),
                Err(source) => last = Some(Error::Bind { addr, source }),
            }
        }
        Err(last.unwrap_or_else(|| {
            resolve_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any addresses",
            ))
        }))
    }

    /// Builds a server on a listener the caller already has (from a test, a
    /// socket-activation manager or another library).
    ///
    /// The listener's own options are left as they are; the
    /// listener-related setters (`backlog`, `reuse_address`, `reuse_port`,
    /// `only_v6`) do not apply. The listener is switched to blocking mode.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid option, [`Error::Listener`] when the
    /// listener's address or mode cannot be read or set.
    pub fn from_listener(self, listener: TcpListener) -> Result<Server> {
        let config = self.config()?;
        listener
            .set_nonblocking(false)
            .map_err(|source| Error::Listener { source })?;
        Server::new(listener, config)
    }

    fn listen_options(&self) -> Result<ListenOptions> {
        let backlog = i32::try_from(self.backlog)
            .map_err(|_| Error::Config("`backlog` must fit in an i32"))?;
        Ok(ListenOptions {
            backlog,
            reuse_address: self.reuse_address,
            reuse_port: self.reuse_port,
            only_v6: self.only_v6,
        })
    }

    fn config(&self) -> Result<Config> {
        if self.workers == 0 {
            return Err(Error::Config("`workers` must be at least 1"));
        }
        if self.workers > MAX_WORKERS {
            return Err(Error::Config(
                "`workers` must be at most MAX_WORKERS (4096)",
            ));
        }
        if self.queue > MAX_QUEUE {
            return Err(Error::Config("`queue` must be at most MAX_QUEUE (1048576)"));
        }
        if let Some(idle) = self.keepalive {
            // Outside Linux's range, setsockopt fails with EINVAL on every
            // accepted stream, and only a debug log would say so.
            if idle < Duration::from_secs(1) || idle > Duration::from_secs(32767) {
                return Err(Error::Config(
                    "`keepalive` must be between 1 and 32767 seconds",
                ));
            }
        }
        if self.max_connections == Some(0) {
            return Err(Error::Config("`max_connections` must be at least 1"));
        }
        Ok(Config {
            workers: self.workers,
            queue: self.queue,
            overload: self.overload,
            max_connections: self.max_connections,
            shutdown_timeout: self.shutdown_timeout,
            stop_reading_on_shutdown: self.stop_reading_on_shutdown,
            limits: Limits {
                read_timeout: self.read_timeout,
                write_timeout: self.write_timeout,
                idle_timeout: self.idle_timeout,
            },
            stream: StreamOptions {
                nodelay: self.nodelay,
                keepalive: self.keepalive,
            },
            on_reject: self.on_reject.clone(),
        })
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ServerBuilder {
            workers,
            queue,
            backlog,
            nodelay,
            reuse_address,
            reuse_port,
            only_v6,
            keepalive,
            read_timeout,
            write_timeout,
            idle_timeout,
            overload,
            max_connections,
            shutdown_timeout,
            stop_reading_on_shutdown,
            on_reject,
        } = self;
        f.debug_struct("ServerBuilder")
            .field("workers", workers)
            .field("queue", queue)
            .field("backlog", backlog)
            .field("nodelay", nodelay)
            .field("reuse_address", reuse_address)
            .field("reuse_port", reuse_port)
            .field("only_v6", only_v6)
            .field("keepalive", keepalive)
            .field("read_timeout", read_timeout)
            .field("write_timeout", write_timeout)
            .field("idle_timeout", idle_timeout)
            .field("overload", overload)
            .field("max_connections", max_connections)
            .field("shutdown_timeout", shutdown_timeout)
            .field("stop_reading_on_shutdown", stop_reading_on_shutdown)
            .field("on_reject", &on_reject.as_ref().map(|_| "<handler>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn config_error(builder: ServerBuilder) -> &'static str {
        match builder.bind("127.0.0.1:0") {
            Err(Error::Config(message)) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn zero_workers_is_config_error() {
        assert!(config_error(ServerBuilder::new().workers(0)).contains("workers"));
    }

    #[test]
    fn too_many_workers_is_config_error() {
        assert!(config_error(ServerBuilder::new().workers(MAX_WORKERS + 1)).contains("workers"));
    }

    #[test]
    fn huge_queue_is_config_error() {
        assert!(config_error(ServerBuilder::new().queue(usize::MAX)).contains("queue"));
    }

    #[test]
    fn huge_backlog_is_config_error() {
        assert!(config_error(ServerBuilder::new().backlog(u32::MAX)).contains("backlog"));
    }

    #[test]
    fn keepalive_outside_the_kernels_range_is_config_error() {
        for idle in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(32768),
        ] {
            assert!(config_error(ServerBuilder::new().keepalive(idle)).contains("keepalive"));
        }
        ServerBuilder::new()
            .keepalive(Duration::from_secs(1))
            .bind("127.0.0.1:0")
            .unwrap();
    }

    #[test]
    fn zero_max_connections_is_config_error() {
        assert!(config_error(ServerBuilder::new().max_connections(0)).contains("max_connections"));
    }

    #[test]
    fn unresolvable_address_is_resolve_error() {
        let error = ServerBuilder::new().bind("127.0.0.1:notaport").unwrap_err();
        assert!(matches!(error, Error::Resolve { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            r#"failed to resolve "127.0.0.1:notaport""#
        );
        let no_addrs: &[SocketAddr] = &[];
        let error = ServerBuilder::new().bind(no_addrs).unwrap_err();
        assert!(matches!(error, Error::Resolve { .. }), "{error:?}");
    }
}
