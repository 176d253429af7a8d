//! The byte stream under a connection: a TCP or Unix socket, with or
//! without TLS over it.
//!
//! Both modes need the same four things of it, whatever it is: read what
//! has arrived without waiting, write what fits without waiting, push out
//! what TLS still holds, and a descriptor to wait on (`poll(2)` in the
//! handler mode, the readiness set in the turn mode). TLS adds one twist
//! to each: records may hold more plaintext than a read takes, so
//! "nothing more on the socket" is not "nothing more to read"
//! ([`Transport::has_buffered_input`]), and a write may leave encrypted
//! bytes that the socket did not take yet ([`Transport::wants_write`]).

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

#[cfg(unix)]
use std::os::unix::net::UnixStream;

use crate::net::addr::Addr;
use crate::stream::wait;

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

/// A connection's byte stream: its socket, and the TLS session over it
/// when the server speaks TLS. Cheap to clone (one or two `Arc`s), so a
/// turn-mode connection keeps it in place, without an allocation of its
/// own, and clones it to read outside the connection's lock.
#[derive(Clone)]
pub(crate) struct Transport {
    socket: Arc<Socket>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<crate::stream::tls::Session>>,
}

impl Transport {
    pub(crate) fn plain(socket: Arc<Socket>) -> Transport {
        Transport {
            socket,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    #[cfg(feature = "tls")]
    pub(crate) fn tls(socket: Arc<Socket>, session: crate::stream::tls::Session) -> Transport {
        Transport {
            socket,
            tls: Some(Arc::new(session)),
        }
    }

    /// The socket, to wait on, to shut down, or to close gently.
    pub(crate) fn socket(&self) -> &Arc<Socket> {
        &self.socket
    }

    /// Whether TLS runs over the socket.
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Reads what has arrived, without waiting: `WouldBlock` when nothing
    /// has (and, with TLS, nothing is left decrypted either).
    pub(crate) fn recv_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.recv_now(&self.socket, buf);
        }
        wait::recv_now(&*self.socket, buf)
    }

    /// Writes what fits, without waiting: `WouldBlock` when nothing does.
    /// With TLS, the bytes taken may still wait, encrypted, for the socket
    /// to take them: see [`wants_write`](Transport::wants_write).
    pub(crate) fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.send_now(&self.socket, buf);
        }
        wait::send_now(&*self.socket, buf)
    }

    /// Writes what TLS still holds, without waiting: `WouldBlock` while
    /// some is left. Plain sockets hold nothing.
    pub(crate) fn flush_now(&self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.flush_now(&self.socket);
        }
        Ok(())
    }

    /// Runs a TLS handshake as far as it goes without waiting: `Ok(true)`
    /// once complete (a plain socket has none to run), `Ok(false)` when it
    /// needs the client, or room when [`wants_write`](Transport::wants_write).
    pub(crate) fn advance_handshake(&self) -> io::Result<bool> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.advance(&self.socket);
        }
        Ok(true)
    }

    /// Whether TLS holds encrypted bytes the socket has not taken yet.
    pub(crate) fn wants_write(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.wants_write();
        }
        false
    }

    /// Whether input is ready to read without the socket: plaintext TLS
    /// decrypted beyond what was read, or the end of stream its
    /// `close_notify` announced. A plain socket never has any, so a
    /// read that returns less than asked for means the socket is empty.
    pub(crate) fn has_buffered_input(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.has_buffered_input();
        }
        false
    }

    /// Ends the stream as its protocol wants before the gentle close: TLS
    /// sends its `close_notify`, as far as the socket takes it now. The
    /// socket comes back, for the closer.
    pub(crate) fn finish(&self) -> Arc<Socket> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            tls.close_notify(&self.socket);
        }
        Arc::clone(&self.socket)
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("socket", &self.socket)
            .field("tls", &self.is_tls())
            .finish()
    }
}
