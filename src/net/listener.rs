//! The listening socket, TCP or Unix, and `Listener`: one of a server's
//! listeners as its connections see it.

use std::fmt;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;

#[cfg(unix)]
use std::os::unix::net::UnixListener;

use crate::addr::Addr;
use crate::net::socket::Socket;

/// One of the listeners a server accepts on, as a connection that came
/// through it sees it: [`Connection::listener`](crate::Connection::listener),
/// [`Turn::listener`](crate::Turn::listener),
/// [`Peer::listener`](crate::Peer::listener).
///
/// A server listens on one or more sockets (see
/// [`ServerBuilder::listen`](crate::ServerBuilder::listen)); this tells
/// them apart: its [`index`](Listener::index) in the order they were
/// added, its [`name`](Listener::name) if one was given
/// ([`Listen::name`](crate::Listen::name)), and its
/// [`local_addr`](Listener::local_addr). Cloning one is cheap (a
/// reference count for the name, and a copy of the address). It prints
/// as its name, or its address when it has none.
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
///     .listen(Listen::tcp("127.0.0.1:0").name("public"))
///     .listen(Listen::tcp("127.0.0.1:0").name("admin"))
///     .build()?;
/// let addrs = server.local_addrs();
/// let handle = server.spawn(|conn: &mut Connection| {
///     let line = format!("{} {}\n", conn.listener().index(), conn.listener());
///     conn.write_all(line.as_bytes())
/// })?;
/// let mut reply = String::new();
/// TcpStream::connect(addrs[1].tcp().unwrap())?.read_to_string(&mut reply)?;
/// assert_eq!(reply, "1 admin\n");
/// # handle.shutdown()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    index: usize,
    name: Option<Arc<str>>,
    local_addr: Addr,
}

impl Listener {
    pub(crate) fn new(index: usize, name: Option<Arc<str>>, local_addr: Addr) -> Listener {
        Listener {
            index,
            name,
            local_addr,
        }
    }

    /// Where this listener is in the server's list, from 0, in the order
    /// the listeners were added to the builder (the same order as
    /// [`Server::local_addrs`](crate::Server::local_addrs)).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The name given with [`Listen::name`](crate::Listen::name), if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The address the listener listens on, with the real port when port
    /// 0 was asked for.
    pub fn local_addr(&self) -> &Addr {
        &self.local_addr
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => f.write_str(name),
            None => self.local_addr.fmt(f),
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub(crate) enum ListenSocket {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener),
}

impl ListenSocket {
    /// Takes a client from the backlog: the connected socket and the
    /// client's address.
    pub(crate) fn accept(&self) -> io::Result<(Socket, Addr)> {
        match self {
            ListenSocket::Tcp(listener) => listener
                .accept()
                .map(|(stream, peer)| (Socket::Tcp(stream), Addr::Tcp(peer))),
            #[cfg(unix)]
            ListenSocket::Unix(listener) => listener
                .accept()
                .map(|(stream, peer)| (Socket::Unix(stream), Addr::from_unix(&peer))),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        match self {
            ListenSocket::Tcp(listener) => listener.local_addr().map(Addr::Tcp),
            #[cfg(unix)]
            ListenSocket::Unix(listener) => {
                listener.local_addr().map(|addr| Addr::from_unix(&addr))
            }
        }
    }

    pub(crate) fn set_nonblocking(&self, yes: bool) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(listener) => listener.set_nonblocking(yes),
            #[cfg(unix)]
            ListenSocket::Unix(listener) => listener.set_nonblocking(yes),
        }
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for ListenSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            ListenSocket::Tcp(listener) => listener.as_fd(),
            ListenSocket::Unix(listener) => listener.as_fd(),
        }
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for ListenSocket {
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        match self {
            ListenSocket::Tcp(listener) => listener.as_socket(),
        }
    }
}
