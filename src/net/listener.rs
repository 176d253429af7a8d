//! The listening socket, TCP or Unix.

use std::io;
use std::net::TcpListener;

#[cfg(unix)]
use std::os::unix::net::UnixListener;

use crate::addr::Addr;
use crate::net::socket::Socket;

/// A listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener),
}

impl Listener {
    /// Takes a client from the backlog: the connected socket and the
    /// client's address.
    pub(crate) fn accept(&self) -> io::Result<(Socket, Addr)> {
        match self {
            Listener::Tcp(listener) => listener
                .accept()
                .map(|(stream, peer)| (Socket::Tcp(stream), Addr::Tcp(peer))),
            #[cfg(unix)]
            Listener::Unix(listener) => listener
                .accept()
                .map(|(stream, peer)| (Socket::Unix(stream), Addr::from_unix(&peer))),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().map(Addr::Tcp),
            #[cfg(unix)]
            Listener::Unix(listener) => listener.local_addr().map(|addr| Addr::from_unix(&addr)),
        }
    }

    pub(crate) fn set_nonblocking(&self, yes: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(listener) => listener.set_nonblocking(yes),
            #[cfg(unix)]
            Listener::Unix(listener) => listener.set_nonblocking(yes),
        }
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listener::Tcp(listener) => listener.as_fd(),
            Listener::Unix(listener) => listener.as_fd(),
        }
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for Listener {
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        match self {
            Listener::Tcp(listener) => listener.as_socket(),
        }
    }
}
