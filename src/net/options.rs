//! Creating the listening socket, and the options set on accepted streams.
//! The only module that talks to socket2.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Options for the listening socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenOptions {
    pub(crate) backlog: i32,
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
    pub(crate) only_v6: bool,
}

/// Creates a socket for `addr`, sets its options, binds and listens.
///
/// The steps are those of `std::net::TcpListener::bind` with the options in
/// between: socket, options, bind, listen.
pub(crate) fn listen(addr: SocketAddr, options: ListenOptions) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // On Unix SO_REUSEADDR lets a restarted server bind while connections
    // of the previous one sit in TIME_WAIT. On Windows it means something
    // else: another process may bind the same port and steal connections,
    // so it is never set there (std does not set it either).
    #[cfg(not(windows))]
    socket.set_reuse_address(options.reuse_address)?;
    #[cfg(windows)]
    let _ = options.reuse_address;
    set_reuse_port(&socket, options.reuse_port)?;
    if addr.is_ipv6() {
        // The default of IPV6_V6ONLY differs between systems (and on Linux
        // depends on a sysctl), so always say what we want.
        socket.set_only_v6(options.only_v6)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(options.backlog)?;
    Ok(socket.into())
}

#[cfg(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
))]
fn set_reuse_port(socket: &Socket, reuse: bool) -> io::Result<()> {
    if reuse {
        socket.set_reuse_port(true)?;
    }
    Ok(())
}

#[cfg(not(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
)))]
fn set_reuse_port(_: &Socket, reuse: bool) -> io::Result<()> {
    if reuse {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT is not supported on this platform",
        ));
    }
    Ok(())
}

/// A Unix stream socket bound to its path, not listening yet.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct BoundUnix(Socket);

/// Binds a Unix stream socket at `path`, which makes the socket's file
/// there (and fails with `AddrInUse` when any file is there, a link
/// included: `bind(2)` follows none).
#[cfg(unix)]
pub(crate) fn bind_unix(path: &std::path::Path) -> io::Result<BoundUnix> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    Ok(BoundUnix(socket))
}

#[cfg(unix)]
impl BoundUnix {
    /// Listens (`listen(2)`): from now on clients may connect.
    pub(crate) fn listen(self, backlog: i32) -> io::Result<std::os::unix::net::UnixListener> {
        self.0.listen(backlog)?;
        Ok(self.0.into())
    }
}

/// Whether a server listens on the Unix socket at `path`: a connection
/// is made, or would be once its backlog has room (a blocking connect
/// would wait for that, forever if the server is stuck); `false` when
/// the connection is refused, as for a socket file nobody listens on.
#[cfg(unix)]
pub(crate) fn unix_socket_is_live(path: &std::path::Path) -> io::Result<bool> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(error)
            if error.kind() == io::ErrorKind::WouldBlock
                || error.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            Ok(true)
        }
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
        Err(error) => Err(error),
    }
}

/// Options set on every accepted stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamOptions {
    pub(crate) nodelay: bool,
    pub(crate) keepalive: Option<Duration>,
}

/// Applies `options` to an accepted stream.
///
/// TCP_NODELAY is set on each stream because not every system copies it
/// from the listener to accepted sockets.
pub(crate) fn configure(stream: &TcpStream, options: StreamOptions) -> io::Result<()> {
    if options.nodelay {
        stream.set_nodelay(true)?;
    }
    if let Some(idle) = options.keepalive {
        SockRef::from(stream).set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    Ok(())
}

/// Sets on the listener the options accepted streams should have, for
/// systems that copy them to accepted sockets (Linux does). Only for a
/// listener the server made itself: the options of an adopted one belong
/// to its owner.
pub(crate) fn prepare_listener(listener: &TcpListener, nodelay: bool) -> io::Result<()> {
    SockRef::from(listener).set_tcp_nodelay(nodelay)
}

/// Whether `stream` has `TCP_NODELAY` as asked, as it does when it
/// inherited it from a listener prepared by `prepare_listener`.
pub(crate) fn has_nodelay(stream: &TcpStream, nodelay: bool) -> bool {
    stream.nodelay().is_ok_and(|value| value == nodelay)
}

/// Whether `listener` is in non-blocking mode (`O_NONBLOCK`), a mode every
/// descriptor of the socket shares.
#[cfg(unix)]
pub(crate) fn is_nonblocking(listener: &impl std::os::fd::AsFd) -> io::Result<bool> {
    SockRef::from(listener).nonblocking()
}

/// Windows cannot tell; the mode is assumed blocking, std's default.
#[cfg(not(unix))]
pub(crate) fn is_nonblocking<T>(_: &T) -> io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ListenOptions {
        ListenOptions {
            backlog: 16,
            reuse_address: true,
            reuse_port: false,
            only_v6: true,
        }
    }

    #[test]
    fn listens_on_an_os_assigned_port() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), options()).unwrap();
        assert_ne!(listener.local_addr().unwrap().port(), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_streams_inherit_a_prepared_listeners_options() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), options()).unwrap();
        prepare_listener(&listener, true).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        assert!(has_nodelay(&stream, true));
        assert!(!has_nodelay(&stream, false));
    }

    #[cfg(unix)]
    #[test]
    fn tells_the_listeners_mode() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), options()).unwrap();
        assert!(!is_nonblocking(&listener).unwrap());
        listener.set_nonblocking(true).unwrap();
        assert!(is_nonblocking(&listener).unwrap());
    }

    #[test]
    fn accepted_streams_get_nodelay_and_keepalive() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), options()).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let options = StreamOptions {
            nodelay: true,
            keepalive: Some(Duration::from_secs(60)),
        };
        configure(&stream, options).unwrap();
        assert!(stream.nodelay().unwrap());
        assert!(SockRef::from(&stream).keepalive().unwrap());
    }
}
