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
/// systems that copy them to accepted sockets (Linux does).
pub(crate) fn prepare_listener(
    listener: &TcpListener,
    nodelay: bool,
    write_timeout: Option<Duration>,
) -> io::Result<()> {
    let socket = SockRef::from(listener);
    socket.set_tcp_nodelay(nodelay)?;
    socket.set_write_timeout(write_timeout)
}

/// Whether `stream` has these options, as it does when it inherited them
/// from a listener prepared by `prepare_listener`.
pub(crate) fn has(
    stream: &TcpStream,
    nodelay: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
) -> bool {
    let matches = || -> io::Result<bool> {
        Ok(stream.nodelay()? == nodelay
            && stream.read_timeout()? == read_timeout
            && stream.write_timeout()? == write_timeout)
    };
    matches().unwrap_or(false)
}

/// Wakes a thread blocked in `accept` on `listener`, which stops listening.
///
/// On Linux `shutdown(SHUT_RD)` on a listening socket does this: the
/// blocked `accept` and every later one fail with `EINVAL`. Other systems
/// refuse the call (`ENOTCONN`) or ignore it, so this fails there.
pub(crate) fn interrupt_accept(listener: &TcpListener) -> io::Result<()> {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        SockRef::from(listener).shutdown(std::net::Shutdown::Read)
    } else {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Connects to `addr` from a socket bound to an OS-assigned port on the
/// same IP, and tells `bound` the source address before connecting, so the
/// other side can recognise the connection the moment it arrives.
pub(crate) fn connect_reporting_source(
    addr: SocketAddr,
    timeout: Duration,
    bound: impl FnOnce(SocketAddr),
) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(addr.ip(), 0).into())?;
    if let Some(source) = socket.local_addr()?.as_socket() {
        bound(source);
    }
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
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
        let timeout = Some(Duration::from_secs(7));
        prepare_listener(&listener, true, timeout).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        assert!(has(&stream, true, None, timeout));
        assert!(!has(&stream, false, None, timeout));
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
