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
use std::sync::Arc;

use crate::net::socket::Socket;
use crate::stream::wait;

/// A connection's byte stream: its socket, and the TLS session over it
/// when the server speaks TLS. Cheap to clone (one or two `Arc`s), so a
/// turn-mode connection keeps it in place, without an allocation of its
/// own, and clones it to read outside the connection's lock.
#[derive(Clone)]
pub(crate) struct Transport {
    socket: Arc<Socket>,
    /// The socket's descriptor, kept beside the `Arc` as well as behind
    /// it: a read or a write then touches no memory of the socket's own.
    /// A chat relay sends each message to a thousand connections that are
    /// not in the cache, and that is one cache line fewer for each.
    #[cfg(unix)]
    fd: std::os::fd::RawFd,
    #[cfg(feature = "tls")]
    tls: Option<Arc<crate::stream::tls::Session>>,
}

impl Transport {
    pub(crate) fn plain(socket: Arc<Socket>) -> Transport {
        Transport {
            #[cfg(unix)]
            fd: raw_fd(&socket),
            socket,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    #[cfg(feature = "tls")]
    pub(crate) fn tls(socket: Arc<Socket>, session: crate::stream::tls::Session) -> Transport {
        Transport {
            #[cfg(unix)]
            fd: raw_fd(&socket),
            socket,
            tls: Some(Arc::new(session)),
        }
    }

    /// The socket, to wait on, to shut down, or to close gently.
    pub(crate) fn socket(&self) -> &Arc<Socket> {
        &self.socket
    }

    /// The socket's descriptor, for a read or a write.
    #[cfg(unix)]
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: `self.socket` owns the descriptor and is not dropped
        // while `self` is borrowed, so it stays open for the borrow.
        #[allow(unsafe_code)]
        unsafe {
            std::os::fd::BorrowedFd::borrow_raw(self.fd)
        }
    }

    /// Whether TLS runs over the socket.
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// What the TLS handshake settled, once it is complete; `None` on a
    /// plain socket.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_info(&self) -> Option<&Arc<crate::stream::tls::TlsInfo>> {
        self.tls.as_ref()?.info()
    }

    /// Reads what has arrived, without waiting: `WouldBlock` when nothing
    /// has (and, with TLS, nothing is left decrypted either).
    pub(crate) fn recv_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.recv_now(&self.socket, buf);
        }
        #[cfg(unix)]
        return wait::recv_now(&self.fd(), buf);
        #[cfg(not(unix))]
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
        #[cfg(unix)]
        return wait::send_now(&self.fd(), buf);
        #[cfg(not(unix))]
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

/// The descriptor of `socket`, which stays open as long as it does.
#[cfg(unix)]
fn raw_fd(socket: &Socket) -> std::os::fd::RawFd {
    use std::os::fd::{AsFd, AsRawFd};
    socket.as_fd().as_raw_fd()
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("socket", &self.socket)
            .field("tls", &self.is_tls())
            .finish()
    }
}
