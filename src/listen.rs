//! `Listen`: one listener a server is to accept on, as the builder is
//! given it, with the settings it does not take from the builder.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixListener;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::Arc;

/// One listener for [`ServerBuilder::listen`](crate::ServerBuilder::listen):
/// where to listen (a TCP address, a Unix socket path, or a socket the
/// caller already has), and the settings that may differ from one
/// listener to another.
///
/// A server can listen on several sockets at once (IPv4 and IPv6, a plain
/// and a TLS port, a Unix socket), sharing one pool of workers, one
/// [`max_connections`](crate::ServerBuilder::max_connections) and one
/// shutdown. Each connection knows which listener it came through
/// ([`Connection::listener`](crate::Connection::listener),
/// [`Turn::listener`](crate::Turn::listener)).
///
/// What a `Listen` does not set, it takes from the builder: TLS
/// ([`ServerBuilder::tls`](crate::ServerBuilder::tls)), the PROXY protocol
/// ([`ServerBuilder::proxy_protocol`](crate::ServerBuilder::proxy_protocol)),
/// and always `trusted_proxies`, `unix_permissions`, the socket options
/// and the backlog. Nothing is opened until
/// [`ServerBuilder::build`](crate::ServerBuilder::build).
///
/// A `Listen` made from a listener the caller has
/// ([`from_tcp`](Listen::from_tcp), [`from_unix`](Listen::from_unix))
/// shares it when cloned (as a builder clone does): the server built
/// from a clone adopts a duplicate descriptor of the same socket.
///
/// # Examples
///
/// Two TCP listeners on one server, the second with a name:
///
/// ```
/// use frontdesk::{Listen, Server};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::builder()
///     .workers(4)
///     .listen(Listen::tcp("127.0.0.1:0"))
///     .listen(Listen::tcp("127.0.0.1:0").name("admin"))
///     .build()?;
/// let addrs = server.local_addrs();
/// assert_eq!(addrs.len(), 2);
/// assert_eq!(server.local_addr(), addrs[0]); // the first one's
/// assert_eq!(server.listeners()[1].name(), Some("admin"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Listen {
    pub(crate) source: Source,
    pub(crate) name: Option<Arc<str>>,
    /// `None`: the builder's.
    pub(crate) proxy_protocol: Option<bool>,
    /// `None`: the builder's; `Some(None)`: plain, whatever the builder
    /// says.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Option<crate::stream::tls::TlsConfig>>,
}

/// Where a listener listens.
#[derive(Clone)]
pub(crate) enum Source {
    /// An address to bind, resolved when the `Listen` was made: the
    /// addresses, or the resolver's error (kept to be reported by
    /// `build`, as `Error::Resolve`).
    Tcp {
        shown: String,
        addrs: Result<Vec<SocketAddr>, (io::ErrorKind, String)>,
    },
    #[cfg(unix)]
    Unix(PathBuf),
    /// Adopted; shared by clones of the `Listen`.
    FromTcp(Arc<TcpListener>),
    #[cfg(unix)]
    FromUnix(Arc<UnixListener>),
}

impl Listen {
    /// A TCP listener bound to `addr` (with the builder's socket options
    /// and backlog). When `addr` resolves to several addresses, each is
    /// tried in turn, as [`ServerBuilder::bind`](crate::ServerBuilder::bind)
    /// does; port 0 asks the system for a free port.
    ///
    /// The address is resolved now; an address that does not resolve is
    /// reported by [`build`](crate::ServerBuilder::build) as
    /// [`Error::Resolve`](crate::Error::Resolve).
    pub fn tcp(addr: impl ToSocketAddrs + fmt::Debug) -> Listen {
        let addrs = match addr.to_socket_addrs() {
            Ok(addrs) => Ok(addrs.collect()),
            Err(error) => Err((error.kind(), error.to_string())),
        };
        Listen::new(Source::Tcp {
            shown: format!("{addr:?}"),
            addrs,
        })
    }

    /// A Unix domain socket bound at `path`, as
    /// [`ServerBuilder::bind_unix`](crate::ServerBuilder::bind_unix) binds
    /// one: the path taken under a lock, a stale socket file replaced,
    /// the builder's [`unix_permissions`](crate::ServerBuilder::unix_permissions)
    /// set before it listens, and the file removed when the server stops.
    ///
    /// # Platform notes
    ///
    /// Unix only.
    #[cfg(unix)]
    pub fn unix(path: impl Into<PathBuf>) -> Listen {
        Listen::new(Source::Unix(path.into()))
    }

    /// A TCP listener the caller already has, adopted as
    /// [`ServerBuilder::from_listener`](crate::ServerBuilder::from_listener)
    /// adopts one: its options stay as they are, and it keeps listening
    /// after the server stops.
    pub fn from_tcp(listener: TcpListener) -> Listen {
        Listen::new(Source::FromTcp(Arc::new(listener)))
    }

    /// A Unix domain listener the caller already has, adopted as
    /// [`ServerBuilder::from_unix_listener`](crate::ServerBuilder::from_unix_listener)
    /// adopts one; its socket file is the caller's.
    ///
    /// # Platform notes
    ///
    /// Unix only.
    #[cfg(unix)]
    pub fn from_unix(listener: UnixListener) -> Listen {
        Listen::new(Source::FromUnix(Arc::new(listener)))
    }

    fn new(source: Source) -> Listen {
        Listen {
            source,
            name: None,
            proxy_protocol: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Names the listener, for the handler
    /// ([`Listener::name`](crate::Listener::name)) and the log.
    ///
    /// Defaults to none: the listener is known by its index and address.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(Arc::from(name));
        self
    }

    /// Requires a PROXY protocol header on every connection of this
    /// listener (`true`), or none (`false`), whatever
    /// [`ServerBuilder::proxy_protocol`](crate::ServerBuilder::proxy_protocol)
    /// says; the builder's `trusted_proxies` apply.
    ///
    /// Defaults to the builder's setting. A server behind a proxy on one
    /// port and reached directly on another sets it per listener.
    pub fn proxy_protocol(mut self, yes: bool) -> Self {
        self.proxy_protocol = Some(yes);
        self
    }

    /// Speaks TLS with `config` on this listener, or, with `None`, plain
    /// TCP (or Unix), whatever [`ServerBuilder::tls`](crate::ServerBuilder::tls)
    /// says; the builder's `tls_handshake_timeout` applies.
    ///
    /// Defaults to the builder's setting. A server with a plain and a TLS
    /// port sets it on the TLS one.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, config: impl Into<Option<crate::stream::tls::TlsConfig>>) -> Self {
        self.tls = Some(config.into());
        self
    }
}

impl fmt::Debug for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Listen {
            source,
            name,
            proxy_protocol,
            #[cfg(feature = "tls")]
            tls,
        } = self;
        let mut out = f.debug_struct("Listen");
        match source {
            Source::Tcp { shown, .. } => out.field("tcp", shown),
            #[cfg(unix)]
            Source::Unix(path) => out.field("unix", path),
            Source::FromTcp(listener) => out.field("from_tcp", listener),
            #[cfg(unix)]
            Source::FromUnix(listener) => out.field("from_unix", listener),
        };
        out.field("name", name)
            .field("proxy_protocol", proxy_protocol);
        #[cfg(feature = "tls")]
        out.field(
            "tls",
            &tls.as_ref().map(|tls| tls.as_ref().map(|_| "<config>")),
        );
        out.finish()
    }
}
