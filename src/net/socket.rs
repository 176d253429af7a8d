//! A connected socket, TCP or Unix, as the listener accepts it: what every
//! layer above hands around until the connection ends.

use std::io;
use std::net::{Shutdown, TcpStream};

#[cfg(unix)]
use std::os::unix::net::UnixStream;

use crate::addr::Addr;

/// A connected socket, as accepted.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Socket {
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Socket::Tcp(stream) => stream.shutdown(how),
            #[cfg(unix)]
            Socket::Unix(stream) => stream.shutdown(how),
        }
    }

    /// The server's end of the connection.
    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Socket::Tcp(stream) => stream.local_addr().map(Addr::Tcp),
            #[cfg(unix)]
            Socket::Unix(stream) => stream.local_addr().map(|addr| Addr::from_unix(&addr)),
        }
    }

    /// The Unix stream, unless this is a TCP socket.
    #[cfg(unix)]
    pub(crate) fn unix(&self) -> Option<&UnixStream> {
        match self {
            Socket::Tcp(_) => None,
            Socket::Unix(stream) => Some(stream),
        }
    }

    /// The TCP stream, unless this is a Unix socket.
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Socket::Tcp(stream) => Some(stream),
            #[cfg(unix)]
            Socket::Unix(_) => None,
        }
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Socket::Tcp(stream) => stream.as_fd(),
            Socket::Unix(stream) => stream.as_fd(),
        }
    }
}

/// For `polling`, which takes raw descriptors.
#[cfg(unix)]
impl std::os::fd::AsRawFd for Socket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsRawSocket for Socket {
    fn as_raw_socket(&self) -> std::os::windows::io::RawSocket {
        use std::os::windows::io::AsSocket;
        self.as_socket().as_raw_socket()
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for Socket {
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        match self {
            Socket::Tcp(stream) => stream.as_socket(),
        }
    }
}
