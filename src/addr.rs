//! `Addr`: an address as a transport knows it, an IP address and port or
//! a Unix socket's path.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// The address of a server or of a client: an IP address and port for TCP
/// (with or without TLS), or a path for a Unix domain socket.
///
/// It prints as a `SocketAddr` does for TCP (`127.0.0.1:7878`) and as
/// `unix:PATH` for a Unix socket (`unix:` alone for a client, which
/// usually has no name). It compares equal to the `SocketAddr` it holds,
/// and it is [`ToSocketAddrs`], so a TCP server's address goes straight to
/// `TcpStream::connect`.
///
/// # Examples
///
/// ```
/// use std::net::{SocketAddr, TcpStream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = frontdesk::Server::bind("127.0.0.1:0")?;
/// let addr: frontdesk::Addr = server.local_addr();
/// let tcp: SocketAddr = addr.tcp().expect("a TCP server");
/// assert_eq!(addr, tcp);
/// let _client = TcpStream::connect(&addr)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Addr {
    /// A TCP address, TLS or not.
    Tcp(SocketAddr),
    /// A Unix domain socket's path; `None` for an unnamed socket, as a
    /// client's usually is.
    Unix(Option<PathBuf>),
}

impl Addr {
    /// The TCP address, or `None` for a Unix socket.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Addr::Tcp(addr) => Some(*addr),
            Addr::Unix(_) => None,
        }
    }

    /// The Unix socket's path, or `None` for TCP and for an unnamed Unix
    /// socket.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Addr::Tcp(_) => None,
            Addr::Unix(path) => path.as_deref(),
        }
    }

    /// Whether this is a Unix socket's address.
    pub fn is_unix(&self) -> bool {
        matches!(self, Addr::Unix(_))
    }

    #[cfg(unix)]
    pub(crate) fn from_unix(addr: &std::os::unix::net::SocketAddr) -> Addr {
        Addr::Unix(addr.as_pathname().map(Path::to_path_buf))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(addr) => addr.fmt(f),
            Addr::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            Addr::Unix(None) => f.write_str("unix:"),
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Addr {
        Addr::Tcp(addr)
    }
}

impl PartialEq<SocketAddr> for Addr {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.tcp() == Some(*other)
    }
}

impl PartialEq<Addr> for SocketAddr {
    fn eq(&self, other: &Addr) -> bool {
        other == self
    }
}

/// A TCP address resolves to itself; a Unix socket's fails with
/// [`io::ErrorKind::InvalidInput`].
impl ToSocketAddrs for Addr {
    type Iter = std::option::IntoIter<SocketAddr>;

    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        match self {
            Addr::Tcp(addr) => Ok(Some(*addr).into_iter()),
            Addr::Unix(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self} is a Unix socket, not an IP address"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_a_socket_addr_or_a_unix_path() {
        let tcp: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        assert_eq!(Addr::from(tcp).to_string(), "127.0.0.1:7878");
        let unix = Addr::Unix(Some(PathBuf::from("/run/app.sock")));
        assert_eq!(unix.to_string(), "unix:/run/app.sock");
        assert_eq!(Addr::Unix(None).to_string(), "unix:");
        assert!(unix.to_socket_addrs().is_err());
        assert_eq!(Addr::from(tcp), tcp);
        assert_ne!(unix, tcp);
    }
}
