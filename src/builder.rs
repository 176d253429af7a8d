//! `ServerBuilder`: defaults, setters, validation, and `bind`.

use std::fmt;
use std::io;
use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::addr::Addr;
use crate::config::{Config, Limits, Linger, Outbox, OutboxFull, Overload, TlsSetup};
use crate::error::{Error, Result};
use crate::listen::{Listen, Source};
use crate::net::listener::ListenSocket;
use crate::net::options::{self, ListenOptions, StreamOptions};
use crate::reject::RejectHandler;
use crate::server::{Opened, Server};
use crate::stream::proxy::ProxyConfig;

/// The most worker threads a server may have. Far above what a blocking
/// server should run; it only catches a mistyped number before it turns
/// into thousands of threads.
pub const MAX_WORKERS: usize = 4096;

/// How long a TLS handshake may take by default; see
/// [`ServerBuilder::tls_handshake_timeout`].
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub const TLS_HANDSHAKE_TIME: Duration = Duration::from_secs(10);

/// The longest timeout kept as given: longer ones (`Duration::MAX` for
/// "no limit") are cut to this, about 30 years, which an `Instant` can
/// always hold.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);

/// The longest queue a server may have: the queue's slots are allocated
/// up front, so a mistyped number would cost memory.
pub const MAX_QUEUE: usize = 1 << 20;

// `Server`'s constructors are here, beside the builder they use, so that
// `server.rs` (which runs a server) does not depend on this file.
impl Server {
    /// A builder to configure a server; see [`ServerBuilder`] for the
    /// options and their defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    /// Binds `addr` with every option at its default; shorthand for
    /// `Server::builder().bind(addr)`.
    ///
    /// # Errors
    ///
    /// See [`ServerBuilder::bind`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Port 0: the OS picks a free port.
    /// let server = frontdesk::Server::bind("127.0.0.1:0")?;
    /// assert_ne!(server.local_addr().tcp().unwrap().port(), 0);
    /// # Ok(()) }
    /// ```
    pub fn bind(addr: impl ToSocketAddrs + fmt::Debug) -> Result<Server> {
        ServerBuilder::new().bind(addr)
    }

    /// Binds a Unix domain socket at `path` with every option at its
    /// default; shorthand for `Server::builder().bind_unix(path)`.
    ///
    /// # Errors
    ///
    /// See [`ServerBuilder::bind_unix`].
    #[cfg(unix)]
    pub fn bind_unix(path: impl AsRef<std::path::Path>) -> Result<Server> {
        ServerBuilder::new().bind_unix(path)
    }

    /// Serves on a listener the caller already has, with every option at
    /// its default; shorthand for `Server::builder().from_listener(listener)`.
    ///
    /// # Errors
    ///
    /// See [`ServerBuilder::from_listener`].
    pub fn from_listener(listener: TcpListener) -> Result<Server> {
        ServerBuilder::new().from_listener(listener)
    }
}

/// Configures and binds a [`Server`].
///
/// Every setter takes and returns the builder; nothing happens until
/// [`build`](ServerBuilder::build) (after [`listen`](ServerBuilder::listen)),
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
/// assert_ne!(server.local_addr().tcp().unwrap().port(), 0);
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
    max_connections_per_ip: Option<usize>,
    shutdown_timeout: Duration,
    drain_quiet_time: Duration,
    linger_time: Duration,
    linger_bytes: usize,
    outbox_limit: usize,
    outbox_full: OutboxFull,
    notify_service_manager: bool,
    proxy_protocol: bool,
    trusted_proxies: Vec<IpAddr>,
    unix_permissions: Option<u32>,
    #[cfg(feature = "tls")]
    tls: Option<crate::stream::tls::TlsConfig>,
    #[cfg(feature = "tls")]
    tls_handshake_timeout: Duration,
    on_reject: Option<Arc<dyn RejectHandler>>,
    /// Added with `listen`, in order.
    listens: Vec<Listen>,
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
            max_connections_per_ip: None,
            shutdown_timeout: Duration::from_secs(10),
            drain_quiet_time: Duration::from_millis(200),
            linger_time: Duration::from_secs(2),
            linger_bytes: 1 << 20,
            outbox_limit: 256 << 10,
            outbox_full: OutboxFull::Close,
            notify_service_manager: true,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            unix_permissions: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_handshake_timeout: TLS_HANDSHAKE_TIME,
            on_reject: None,
            listens: Vec::new(),
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
    /// Enforced by the library, not by the socket's `SO_RCVTIMEO`: on
    /// Unix a read's first 50 ms of waiting in `recv` (which that receive
    /// timeout bounds, see [`Connection`](crate::Connection)) and the
    /// `poll(2)` after it add up to this limit, never more than it.
    pub fn read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.read_timeout = timeout.into();
        self
    }

    /// Sets the longest time one write may wait for room in the send buffer
    /// (a client that does not read); `None` for no limit.
    ///
    /// Defaults to 30 seconds. Enforced by the `poll(2)` a write waits in
    /// (the socket's `SO_SNDTIMEO` is not used); in the turn mode, by a
    /// timer on a connection whose outbox the client stops taking.
    pub fn write_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.write_timeout = timeout.into();
        self
    }

    /// Closes a connection whose client sent nothing for this long while the
    /// handler waited for input; `None` lets clients stay silent forever.
    ///
    /// Defaults to 5 minutes: with a `Handler`, a silent client holds a
    /// worker, and forgotten connections must not take the pool away. Turn
    /// it off, or raise it, for clients that are silent by design (a chat
    /// user reading). In the turn mode it closes a parked connection whose
    /// client has sent nothing for this long.
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

    /// Caps the connections held by the server (being served, queued or,
    /// in the turn mode, parked); beyond it new connections go to the
    /// reject handler. `None` for no cap other than `workers + queue` in
    /// the [`Handler`](crate::Handler) mode.
    ///
    /// Defaults to none, which in the turn mode
    /// ([`spawn_turns`](Server::spawn_turns)) means
    /// [`TURN_MAX_CONNECTIONS`](crate::TURN_MAX_CONNECTIONS). Must be at
    /// least 1.
    pub fn max_connections(mut self, n: impl Into<Option<usize>>) -> Self {
        self.max_connections = n.into();
        self
    }

    /// Caps the connections one client address holds at once; beyond it,
    /// a new connection from that address goes to the reject handler with
    /// [`RejectReason::MaxConnectionsPerIp`](crate::RejectReason::MaxConnectionsPerIp)
    /// and is counted in
    /// [`RejectedStats::max_connections_per_ip`](crate::RejectedStats::max_connections_per_ip).
    /// `None` for no cap, so that one host (or one client behind a proxy)
    /// cannot take every connection [`max_connections`](ServerBuilder::max_connections)
    /// allows.
    ///
    /// Defaults to none. Must be at least 1, as `max_connections` must:
    /// zero would refuse every client, and is [`Error::Config`].
    /// `usize::MAX` is no cap in practice (the counts are still kept).
    ///
    /// The address is the client's IP address as
    /// [`Connection::peer_addr`](crate::Connection::peer_addr) reports it:
    /// the TCP peer's, or with [`proxy_protocol`](ServerBuilder::proxy_protocol)
    /// the one the header names (a header that names none, such as a load
    /// balancer's health check, counts for the proxy's address). An
    /// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, an IPv4 client of a
    /// dual-stack listener) is the IPv4 address, as for
    /// [`trusted_proxies`](ServerBuilder::trusted_proxies); each IPv6
    /// address is a client of its own (a host with a /64 has many). The
    /// clients of a Unix socket have no IP address and are not capped,
    /// unless a PROXY header names one.
    ///
    /// A connection takes its place before its TLS handshake and before
    /// the handler sees it (before `open` in the turn mode): when it is
    /// accepted or, behind a PROXY header, as soon as the header is read
    /// (a connection still waiting for its header counts against
    /// `max_connections` only). It holds the place until it is closed,
    /// however it ends; a client turned away gets what an overloaded one
    /// gets (see [`on_reject`](ServerBuilder::on_reject)).
    pub fn max_connections_per_ip(mut self, n: impl Into<Option<usize>>) -> Self {
        self.max_connections_per_ip = n.into();
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

    /// Sets how long, during a shutdown, a read that finds nothing to read
    /// waits for more before it reports end of stream.
    ///
    /// Defaults to 200 ms. A shutdown answers everything a client sent
    /// before it: a handler's reads return what has arrived and what keeps
    /// arriving, and end once the client has been quiet this long, so a
    /// handler waiting for a silent client returns within this time
    /// instead of holding the shutdown until its deadline (in the
    /// `Handler` mode on Unix, a read may notice the shutdown up to 50 ms
    /// late: with a quiet time shorter than that, it returns then; see
    /// [`Connection`](crate::Connection)). The default is
    /// well above a round trip on any network a server and its clients
    /// share, so a client whose requests are still on their way is not cut
    /// off; raise it for clients far away. Bounded by the drain deadline
    /// ([`shutdown_timeout`](ServerBuilder::shutdown_timeout)) in any case.
    pub fn drain_quiet_time(mut self, time: Duration) -> Self {
        self.drain_quiet_time = time;
        self
    }

    /// Sets how long a gentle close waits for the client's end of stream.
    ///
    /// Defaults to 2 seconds. Every connection ends gently, however it
    /// ends (handler returned or failed, rejected, dropped at shutdown,
    /// timed out): the server shuts down its side for writing, so the
    /// client reads every reply and then end of stream; then it reads and
    /// discards whatever the client still sends until the client closes,
    /// and only then closes the socket. Closing at once with unread input
    /// would make the kernel send a reset, which can destroy replies the
    /// client has not read yet. The wait holds no worker: a closer thread
    /// waits for every such connection at once. When the client has not
    /// closed within this time, or has sent more than
    /// [`linger_bytes`](ServerBuilder::linger_bytes), the socket is closed
    /// anyway and counted in [`Stats::linger_cut`](crate::Stats::linger_cut).
    /// Zero closes as soon as nothing more has arrived.
    pub fn linger_time(mut self, time: Duration) -> Self {
        self.linger_time = time;
        self
    }

    /// Sets how many bytes a gentle close discards while it waits for the
    /// client's end of stream (see [`linger_time`](ServerBuilder::linger_time)).
    ///
    /// Defaults to 1 MiB.
    pub fn linger_bytes(mut self, bytes: usize) -> Self {
        self.linger_bytes = bytes;
        self
    }

    /// Sets how many bytes may wait in the outbox of a turn-mode
    /// connection ([`Turn::send`](crate::Turn::send), [`Peer::send`](crate::Peer::send)).
    ///
    /// Defaults to 256 KiB: far more than a chat line or a game update, so
    /// only a client that stops reading fills it, and 1,000 such clients
    /// hold at most 256 MiB (plus one message each: an empty outbox takes a
    /// message of any size). A turn that finds the outbox full gets
    /// `WouldBlock` (back-pressure); a `Peer` that does follows
    /// [`outbox_full`](ServerBuilder::outbox_full). A connection whose
    /// outbox is over half full is not read from, and its
    /// [`Lines`](crate::Lines) yield no line, until the client has read
    /// enough, so a client that sends without reading its replies cannot
    /// grow it either.
    pub fn outbox_limit(mut self, bytes: usize) -> Self {
        self.outbox_limit = bytes;
        self
    }

    /// Sets what a [`Peer::send`](crate::Peer::send) to a full outbox does.
    ///
    /// Defaults to [`OutboxFull::Close`].
    pub fn outbox_full(mut self, policy: OutboxFull) -> Self {
        self.outbox_full = policy;
        self
    }

    /// Sets the handler run on the acceptor thread for every rejected
    /// connection before it is closed, for example to write a "busy" line.
    ///
    /// By default a rejected connection is closed at once. The handler gets
    /// a [`Rejected`](crate::Rejected): the client's address, the
    /// [reason](crate::RejectReason), and writes that never wait (nothing
    /// the client does can stall the acceptor through it). It must return
    /// quickly all the same: nothing is accepted while it runs. The
    /// connection is then closed gently, so the reply arrives even when
    /// the client had already sent a request.
    ///
    /// One case runs elsewhere: behind a PROXY header, the
    /// [`max_connections_per_ip`](ServerBuilder::max_connections_per_ip)
    /// cap is checked once the header is read, so a client it turns away
    /// gets the handler on the worker that read the header (or, in the
    /// turn mode, ran the turn that did). A connection that fails its
    /// PROXY header or TLS handshake is closed without it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use frontdesk::{Overload, RejectReason, Rejected, Server};
    ///
    /// let _builder = Server::builder()
    ///     .overload(Overload::Reject)
    ///     .on_reject(|conn: &mut Rejected| match conn.reason() {
    ///         RejectReason::ShuttingDown => conn.write_all(b"error: shutting down\n"),
    ///         _ => conn.write_all(b"error: server busy\n"),
    ///     });
    /// ```
    pub fn on_reject(mut self, handler: impl RejectHandler) -> Self {
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
    /// let error = frontdesk::Server::bind(&taken).unwrap_err();
    /// assert!(matches!(error, frontdesk::Error::Bind { addr, .. } if addr == taken));
    /// # Ok(()) }
    /// ```
    pub fn bind(self, addr: impl ToSocketAddrs + fmt::Debug) -> Result<Server> {
        self.listen(Listen::tcp(addr)).build()
    }

    /// Adds a listener to the server: a TCP address, a Unix socket, or a
    /// socket the caller has, with its own TLS and PROXY settings if it
    /// needs them (see [`Listen`]). Nothing is opened until
    /// [`build`](ServerBuilder::build) (or another terminal call, which
    /// adds its own listener after these).
    ///
    /// Every listener of a server shares its workers, its limits
    /// (`max_connections`, `max_connections_per_ip`), its pause and its
    /// shutdown. One thread accepts on all of them, waiting on all at once
    /// in one `poll(2)`, and takes at most 16 connections from one ready
    /// listener before the next ready one gets its turn, so a busy
    /// listener cannot starve another.
    pub fn listen(mut self, listen: Listen) -> Self {
        self.listens.push(listen);
        self
    }

    /// Opens every listener added with [`listen`](ServerBuilder::listen),
    /// in order, and returns the server, ready to [`run`](Server::run) or
    /// [`spawn`](Server::spawn).
    ///
    /// Every socket is listening when this returns.
    /// [`Server::local_addr`] is the first listener's address;
    /// [`Server::local_addrs`] lists them all, in the order added.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid option, or when no listener was
    /// added; then the first error of a listener, as
    /// [`bind`](ServerBuilder::bind), [`bind_unix`](ServerBuilder::bind_unix)
    /// and [`from_listener`](ServerBuilder::from_listener) report them. The
    /// listeners opened before the one that failed are closed again (and
    /// their socket files removed).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::net::TcpStream;
    ///
    /// use frontdesk::{Connection, Listen, Server};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder()
    ///     .listen(Listen::tcp("127.0.0.1:0"))
    ///     .listen(Listen::tcp("127.0.0.1:0"))
    ///     .build()?;
    /// let addrs = server.local_addrs();
    /// let handle = server.spawn(|conn: &mut Connection| {
    ///     let line = format!("listener {}\n", conn.listener().index());
    ///     conn.write_all(line.as_bytes())
    /// })?;
    /// for (index, addr) in addrs.iter().enumerate() {
    ///     let mut reply = String::new();
    ///     TcpStream::connect(addr.tcp().unwrap())?.read_to_string(&mut reply)?;
    ///     assert_eq!(reply, format!("listener {index}\n"));
    /// }
    /// handle.shutdown()?;
    /// # Ok(()) }
    /// ```
    pub fn build(mut self) -> Result<Server> {
        let config = self.config()?;
        if self.listens.is_empty() {
            return Err(Error::Config(
                "no listener: add one with `listen`, or call `bind`",
            ));
        }
        let listens = std::mem::take(&mut self.listens);
        let mut opened = Vec::with_capacity(listens.len());
        for listen in listens {
            // On an error, those opened so far are dropped: closed, and
            // their socket files removed.
            opened.push(self.open(listen)?);
        }
        Server::new(opened, config)
    }

    /// Opens one listener: binds it, or adopts the socket given, with its
    /// settings or the builder's.
    fn open(&self, listen: Listen) -> Result<Opened> {
        let options = self.listen_options()?;
        let listener_error = |source| Error::Listener { source };
        let proxy = listen
            .proxy_protocol
            .unwrap_or(self.proxy_protocol)
            .then(|| ProxyConfig::new(self.trusted_proxies.iter().copied()));
        let tls = self.tls_setup(&listen);
        let name = listen.name;
        let (socket, adopted, socket_file) = match listen.source {
            Source::Tcp { shown, addrs } => {
                let resolve_error = |source| Error::Resolve {
                    addr: shown.clone(),
                    source,
                };
                let addrs = addrs.as_ref().map_err(|(kind, message)| {
                    resolve_error(io::Error::new(*kind, message.clone()))
                })?;
                let mut last = None;
                let mut bound = None;
                for addr in addrs {
                    match options::listen(*addr, options) {
                        Ok(listener) => {
                            bound = Some(listener);
                            break;
                        }
                        Err(source) => {
                            last = Some(Error::Bind {
                                addr: Addr::Tcp(*addr),
                                source,
                            })
                        }
                    }
                }
                match bound {
                    Some(listener) => (ListenSocket::Tcp(listener), false, None),
                    None => {
                        return Err(last.unwrap_or_else(|| {
                            resolve_error(io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "could not resolve to any addresses",
                            ))
                        }))
                    }
                }
            }
            #[cfg(unix)]
            Source::Unix(path) => {
                let bind_error = |source| Error::Bind {
                    addr: Addr::Unix(Some(path.clone())),
                    source,
                };
                let (listener, file) = crate::net::socket_file::bind_unix(
                    &path,
                    options.backlog,
                    self.unix_permissions,
                )
                .map_err(bind_error)?;
                (ListenSocket::Unix(listener), false, Some(file))
            }
            Source::FromTcp(listener) => {
                // Ours alone unless the `Listen` was cloned: then a
                // duplicate descriptor of the same socket.
                let listener = Arc::try_unwrap(listener)
                    .or_else(|shared| shared.try_clone())
                    .map_err(listener_error)?;
                (ListenSocket::Tcp(listener), true, None)
            }
            #[cfg(unix)]
            Source::FromUnix(listener) => {
                let listener = Arc::try_unwrap(listener)
                    .or_else(|shared| shared.try_clone())
                    .map_err(listener_error)?;
                (ListenSocket::Unix(listener), true, None)
            }
        };
        Ok(Opened {
            socket,
            adopted,
            socket_file,
            name,
            proxy,
            tls,
        })
    }

    /// Builds a server on a listener the caller already has (from a test, a
    /// socket-activation manager or another library).
    ///
    /// The listener may be shared (a `try_clone`, a socket passed on by
    /// systemd or a parent process), so the server changes nothing on it
    /// for good: its options are left as they are (the listener-related
    /// setters `backlog`, `reuse_address`, `reuse_port` and `only_v6` do
    /// not apply, and `TCP_NODELAY` is set on each accepted stream instead
    /// of once on the listener), and stopping the server does not stop
    /// the socket listening. The one change is its blocking mode, which
    /// every descriptor of the socket shares: it is non-blocking from this
    /// call until the server stops, then put back as it was.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid option, [`Error::Listener`] when the
    /// listener's address or mode cannot be read or set.
    pub fn from_listener(self, listener: TcpListener) -> Result<Server> {
        self.listen(Listen::from_tcp(listener)).build()
    }

    /// Binds a Unix domain stream socket at `path` and returns the server,
    /// listening, as [`bind`](ServerBuilder::bind) does for TCP.
    ///
    /// The path is taken under a lock: `PATH.lock`, a file beside the
    /// socket locked with `flock(2)` for as long as the server holds the
    /// path, so that of two servers started on one path at once exactly
    /// one takes it, and the other fails at once with [`Error::Bind`]
    /// ([`io::ErrorKind::AddrInUse`], naming the lock file). The lock
    /// file is made with mode `0o600`, and removed with the socket file.
    ///
    /// A socket file left at `path` by a server that is gone (nobody
    /// accepts on it: a crash, a `kill -9`) is replaced; a socket some
    /// server still listens on is [`Error::Bind`] with
    /// [`io::ErrorKind::AddrInUse`], and a path that is not a socket (a
    /// symbolic link included) is never removed
    /// ([`io::ErrorKind::AlreadyExists`]). The file gets the permissions
    /// set by [`unix_permissions`](ServerBuilder::unix_permissions)
    /// before the socket listens, and is removed when the server stops
    /// accepting (if it is still this server's), or when the server is
    /// dropped without running.
    ///
    /// The TCP-only options (`nodelay`, `keepalive`, `reuse_address`,
    /// `reuse_port`, `only_v6`) do not apply; the others do. A client's
    /// [`peer_addr`](crate::Connection::peer_addr) is
    /// [`Addr::Unix`](crate::Addr::Unix), usually without a path.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid option, [`Error::Bind`] naming the
    /// path when it cannot be bound.
    ///
    /// # Platform notes
    ///
    /// Unix only.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    ///
    /// use frontdesk::Connection;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let path = std::env::temp_dir().join(format!("frontdesk-doc-{}.sock", std::process::id()));
    /// let server = frontdesk::Server::builder().unix_permissions(0o600).bind_unix(&path)?;
    /// let handle = server.spawn(|conn: &mut Connection| conn.write_all(b"hi\n"))?;
    /// let mut reply = String::new();
    /// UnixStream::connect(&path)?.read_to_string(&mut reply)?;
    /// assert_eq!(reply, "hi\n");
    /// handle.shutdown()?;
    /// assert!(!path.exists()); // removed when the server stopped
    /// # Ok(()) }
    /// ```
    #[cfg(unix)]
    pub fn bind_unix(self, path: impl AsRef<std::path::Path>) -> Result<Server> {
        self.listen(Listen::unix(path.as_ref())).build()
    }

    /// Builds a server on a Unix domain listener the caller already has,
    /// as [`from_listener`](ServerBuilder::from_listener) does for TCP.
    /// Its socket file is the caller's: the server never removes it.
    ///
    /// # Errors
    ///
    /// As [`from_listener`](ServerBuilder::from_listener).
    ///
    /// # Platform notes
    ///
    /// Unix only.
    #[cfg(unix)]
    pub fn from_unix_listener(self, listener: std::os::unix::net::UnixListener) -> Result<Server> {
        self.listen(Listen::from_unix(listener)).build()
    }

    /// Sets the permissions of the socket file
    /// [`bind_unix`](ServerBuilder::bind_unix) makes, as `chmod` takes
    /// them (`0o660`: the owner and the group may connect).
    ///
    /// Defaults to none: the file gets what the process's umask leaves.
    /// Connecting to a Unix socket takes write permission on its file, so
    /// this decides who may be a client. Set before the socket listens,
    /// so no client connects under looser ones, and on the file the bind
    /// made, never through a symbolic link put in its place: on Linux
    /// through `/proc/self/fd` (which must be mounted), elsewhere with
    /// `fchmodat(AT_SYMLINK_NOFOLLOW)`. Unix only.
    #[cfg(unix)]
    pub fn unix_permissions(mut self, mode: u32) -> Self {
        self.unix_permissions = Some(mode);
        self
    }

    /// Speaks TLS on every connection, with these certificates and
    /// settings.
    ///
    /// Defaults to off. Each connection's handshake runs before the
    /// handler sees the connection (after the PROXY header, when there is
    /// one), for at most
    /// [`tls_handshake_timeout`](ServerBuilder::tls_handshake_timeout): in
    /// the [`Handler`](crate::Handler) mode on the worker that then serves
    /// the connection; in the turn mode a step at a time as the client's
    /// records arrive, the connection parked in between as between turns,
    /// so a slow or silent client holds no worker. A client that fails it
    /// (one that does not speak TLS, or refuses the certificate) or does
    /// not finish in time is closed and counted in
    /// [`RejectedStats::tls`](crate::RejectedStats::tls), and the handler
    /// never runs for it. The handler reads and writes plaintext, as
    /// over plain TCP, in both modes; a gentle close sends TLS's
    /// `close_notify` first. Works over TCP and Unix sockets.
    ///
    /// A rejected connection (see [`on_reject`](ServerBuilder::on_reject))
    /// has had no handshake, so on a TLS server the reject handler is not
    /// called: its reply would reach the client unencrypted.
    ///
    /// Keep a clone of `config` to replace the certificates while the
    /// server runs ([`TlsConfig::reload_pem_files`](crate::TlsConfig::reload_pem_files)).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, config: crate::stream::tls::TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Sets how long a TLS handshake may take, from the moment a worker
    /// takes the connection (behind a PROXY header, from the moment the
    /// header is read).
    ///
    /// Defaults to [`TLS_HANDSHAKE_TIME`] (10 seconds): ample for a
    /// client far away, and a bound on what a client that connects and
    /// says nothing costs: in the `Handler` mode a worker for that long,
    /// in the turn mode a parked connection. Zero fails every handshake
    /// that needs to wait for the client (all of them, in practice);
    /// `Duration::MAX` is no limit. In the turn mode the idle timeout,
    /// when shorter, ends a silent handshake too. Only used with
    /// [`tls`](ServerBuilder::tls).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.tls_handshake_timeout = timeout;
        self
    }

    /// Builds a server on the listening sockets a service manager passed
    /// to this process (systemd socket activation: `LISTEN_FDS`, and
    /// `LISTEN_PID` naming this process), or returns `None` when the
    /// process was not started that way.
    ///
    /// As `sd_listen_fds(3)`, this takes the sockets only when
    /// `LISTEN_PID` is this process's id: when it is missing, empty or
    /// another's (a child that inherited the variables), the process was
    /// not activated and this returns `None` (with a warning in the log
    /// when `LISTEN_FDS` is set). Tools that pass sockets without a pid
    /// (`systemfd --no-pid`) are not followed.
    ///
    /// Every passed socket, TCP or Unix, becomes a listener of the server,
    /// in the order passed, after any added with
    /// [`listen`](ServerBuilder::listen); each is named after
    /// `LISTEN_FDNAMES` when the manager names them (systemd's
    /// `FileDescriptorName=`, see [`Listener::name`](crate::Listener::name)).
    /// Each is adopted as [`from_listener`](ServerBuilder::from_listener)
    /// adopts one: its options stay as the manager set them, and it keeps
    /// listening after the server stops, so a restarted service finds the
    /// clients that connected in between waiting in its backlog. Each must
    /// be listening: a systemd socket unit with `Accept=yes` passes a
    /// connection instead, which is an error here, before the server
    /// could tell systemd it is ready. The variables (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`)
    /// are removed from the environment in every case, so child processes
    /// do not take the socket for theirs; call this early, before other
    /// threads read the environment.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid option, [`Error::Listener`] when
    /// the passed descriptor is not a TCP or Unix stream socket, and
    /// [`Error::NotListening`] when it is one but does not listen (a
    /// connection, from a unit with `Accept=yes`).
    ///
    /// # Platform notes
    ///
    /// Unix only. Whether the socket listens is read from `SO_ACCEPTCONN`;
    /// Apple's systems do not implement it, and there only a socket that
    /// is connected to a peer is taken for one that does not listen.
    ///
    /// # Examples
    ///
    /// Serve the socket systemd passes, or bind one when run by hand:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let builder = frontdesk::Server::builder();
    /// let server = match builder.clone().from_socket_activation()? {
    ///     Some(server) => server,
    ///     None => builder.bind("127.0.0.1:0")?,
    /// };
    /// # let _ = server;
    /// # Ok(()) }
    /// ```
    #[cfg(unix)]
    pub fn from_socket_activation(mut self) -> Result<Option<Server>> {
        let passed = crate::net::activation::take_passed_listeners()?;
        if passed.is_empty() {
            return Ok(None);
        }
        for (socket, name) in passed {
            let listen = match socket {
                ListenSocket::Tcp(listener) => Listen::from_tcp(listener),
                ListenSocket::Unix(listener) => Listen::from_unix(listener),
            };
            self = self.listen(match name {
                Some(name) => listen.name(&name),
                None => listen,
            });
        }
        self.build().map(Some)
    }

    /// Requires a PROXY protocol header (v1 or v2, as HAProxy's
    /// `send-proxy` and `send-proxy-v2` send it) at the start of every
    /// connection.
    ///
    /// Defaults to off, and is never guessed: behind a proxy that sends
    /// it, turn it on; anywhere else, leave it off, or any client could
    /// claim any address. The header is read before the handler runs
    /// (and before the TLS handshake), across however many TCP segments
    /// it arrives in, for at most
    /// [`PROXY_HEADER_TIME`](crate::PROXY_HEADER_TIME): in the
    /// [`Handler`](crate::Handler) mode on a worker, which a client that
    /// says nothing holds that long, in the turn mode with the connection
    /// parked, holding no worker; either way the connection counts
    /// against [`max_connections`](ServerBuilder::max_connections)
    /// meanwhile. Then
    /// [`Connection::peer_addr`](crate::Connection::peer_addr) (and
    /// [`Turn::peer_addr`](crate::Turn::peer_addr)) is the client's
    /// address from the header, and
    /// [`Connection::proxy`](crate::Connection::proxy) tells the proxy's
    /// address and the v2 TLVs. A connection without a valid header is
    /// closed and counted in
    /// [`RejectedStats::proxy`](crate::RejectedStats::proxy).
    pub fn proxy_protocol(mut self, yes: bool) -> Self {
        self.proxy_protocol = yes;
        self
    }

    /// Accepts a PROXY header only from these addresses (the proxies'):
    /// a TCP connection from any other is closed at once and counted in
    /// [`RejectedStats::proxy`](crate::RejectedStats::proxy).
    ///
    /// Defaults to empty: any address (for a server only the proxies can
    /// reach). Only used with [`proxy_protocol`](ServerBuilder::proxy_protocol).
    /// An IPv4 address and its IPv4-mapped IPv6 form (`127.0.0.1` and
    /// `::ffff:127.0.0.1`) are the same entry, either way round: on a
    /// dual-stack listener ([`only_v6(false)`](ServerBuilder::only_v6),
    /// or a socket a service manager passes) an IPv4 proxy connects as
    /// `::ffff:a.b.c.d`, and its IPv4 entry matches it.
    /// A Unix socket's clients have no IP address and are not checked
    /// against the list: whoever may connect to the socket file (see
    /// [`unix_permissions`](ServerBuilder::unix_permissions)) may send a
    /// header, so give that permission only to the proxy's user.
    pub fn trusted_proxies(mut self, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.trusted_proxies = addresses.into_iter().collect();
        self
    }

    /// Sets whether the server tells a service manager (systemd, through
    /// `$NOTIFY_SOCKET`) that it is ready (`READY=1`, once it accepts
    /// connections) and stopping (`STOPPING=1`, when the shutdown begins).
    ///
    /// Defaults to on; it does nothing when `NOTIFY_SOCKET` is not set,
    /// that is, unless the process runs as a `Type=notify` service. Turn
    /// it off when the application has more to do before it is ready, and
    /// notifies itself.
    pub fn notify_service_manager(mut self, yes: bool) -> Self {
        self.notify_service_manager = yes;
        self
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

    /// TLS for `listen`: its own setting, or else the builder's.
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn tls_setup(&self, listen: &Listen) -> Option<TlsSetup> {
        #[cfg(feature = "tls")]
        return listen
            .tls
            .as_ref()
            .unwrap_or(&self.tls)
            .as_ref()
            .map(|config| TlsSetup {
                config: config.clone(),
                // Deadlines are `Instant`s: a timeout of centuries is no limit
                // in practice, and must not overflow one.
                handshake_time: self.tls_handshake_timeout.min(LONGEST_TIMEOUT),
            });
        #[cfg(not(feature = "tls"))]
        None
    }

    pub(crate) fn config(&self) -> Result<Config> {
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
        if self.max_connections_per_ip == Some(0) {
            return Err(Error::Config("`max_connections_per_ip` must be at least 1"));
        }
        Ok(Config {
            workers: self.workers,
            queue: self.queue,
            overload: self.overload,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            shutdown_timeout: self.shutdown_timeout,
            drain_quiet: self.drain_quiet_time,
            linger: Linger {
                // The closer's deadlines are `Instant`s (see LONGEST_TIMEOUT).
                time: self.linger_time.min(LONGEST_TIMEOUT),
                bytes: self.linger_bytes,
            },
            outbox: Outbox {
                limit: self.outbox_limit,
                full: self.outbox_full,
            },
            notify_service_manager: self.notify_service_manager,
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
            max_connections_per_ip,
            shutdown_timeout,
            drain_quiet_time,
            linger_time,
            linger_bytes,
            outbox_limit,
            outbox_full,
            notify_service_manager,
            proxy_protocol,
            trusted_proxies,
            unix_permissions,
            #[cfg(feature = "tls")]
            tls,
            #[cfg(feature = "tls")]
            tls_handshake_timeout,
            on_reject,
            listens,
        } = self;
        let mut out = f.debug_struct("ServerBuilder");
        out.field("workers", workers)
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
            .field("max_connections_per_ip", max_connections_per_ip)
            .field("shutdown_timeout", shutdown_timeout)
            .field("drain_quiet_time", drain_quiet_time)
            .field("linger_time", linger_time)
            .field("linger_bytes", linger_bytes)
            .field("outbox_limit", outbox_limit)
            .field("outbox_full", outbox_full)
            .field("notify_service_manager", notify_service_manager)
            .field("proxy_protocol", proxy_protocol)
            .field("trusted_proxies", trusted_proxies)
            .field("unix_permissions", unix_permissions)
            .field("on_reject", &on_reject.as_ref().map(|_| "<handler>"))
            .field("listens", listens);
        #[cfg(feature = "tls")]
        out.field("tls", &tls.as_ref().map(|_| "<config>"))
            .field("tls_handshake_timeout", tls_handshake_timeout);
        out.finish()
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
    fn zero_max_connections_per_ip_is_config_error() {
        let builder = ServerBuilder::new().max_connections_per_ip(0);
        assert_eq!(
            config_error(builder),
            "`max_connections_per_ip` must be at least 1"
        );
        for n in [Some(1), Some(usize::MAX), None] {
            ServerBuilder::new()
                .max_connections_per_ip(n)
                .bind("127.0.0.1:0")
                .unwrap();
        }
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
