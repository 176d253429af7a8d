//! A connected socket, TCP or Unix, as the listener accepts it: what every
//! layer above hands around until the connection ends.

use std::io;
use std::net::{Shutdown, TcpStream};

#[cfg(unix)]
use std::os::unix::net::UnixStream;

use crate::addr::Addr;

/// Who is at the other end of a Unix socket: the user, the group and
/// the process of the client, as the kernel recorded them when the client
/// connected (`SO_PEERCRED` on Linux), so the client cannot lie about
/// them. Read once, before the handler first sees the connection: see
/// [`Connection::peer_credentials`](crate::Connection::peer_credentials),
/// [`Turn::peer_credentials`](crate::Turn::peer_credentials) and
/// [`Peer::peer_credentials`](crate::Peer::peer_credentials).
///
/// They are the credentials of the process that made the connection: the
/// proxy's, behind a local proxy, whatever its PROXY header says.
///
/// # Platform notes
///
/// Linux and Android tell all three (`SO_PEERCRED`); macOS and the BSDs
/// the user and group only (`getpeereid(3)`), so [`pid`](PeerCredentials::pid)
/// is `None` there; other systems tell nothing, and a connection has no
/// credentials at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCredentials {
    uid: u32,
    gid: u32,
    pid: Option<u32>,
}

impl PeerCredentials {
    /// The client's effective user id when it connected.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The client's effective group id when it connected.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// The id of the process that connected, where the system tells it:
    /// `None` on macOS and the BSDs, and on Linux for a process in a pid
    /// namespace this one cannot see (a client on the host of a server
    /// in a container), for which the kernel reports 0. A process may
    /// have exited since, and its id been reused.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// Reading a Unix socket peer's credentials: `SO_PEERCRED`, or
/// `getpeereid(3)`, through `libc`. Not rustix's `socket_peercred`: its
/// `UCred` holds the pid as a non-zero number, and Linux reports 0 for a
/// peer in a pid namespace this process cannot see.
#[cfg(unix)]
mod credentials {
    use std::io;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::PeerCredentials;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn read(stream: &UnixStream) -> io::Result<PeerCredentials> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let size = std::mem::size_of::<libc::ucred>();
        let mut len = size as libc::socklen_t;
        // SAFETY: `cred` is a `ucred` and `len` its size, which is what
        // SO_PEERCRED writes (at most `len` bytes; any bytes make a valid
        // `ucred`, three integers); the descriptor is `stream`'s, open for
        // the call.
        #[allow(unsafe_code)]
        let result = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        if len as usize != size {
            return Err(io::Error::other("SO_PEERCRED gave a value of another size"));
        }
        Ok(PeerCredentials {
            uid: cred.uid,
            gid: cred.gid,
            pid: u32::try_from(cred.pid).ok().filter(|&pid| pid != 0),
        })
    }

    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "openbsd",
        target_os = "netbsd"
    ))]
    pub(super) fn read(stream: &UnixStream) -> io::Result<PeerCredentials> {
        let (mut uid, mut gid) = (0, 0);
        // SAFETY: two pointers to integers of the types `getpeereid`
        // writes; the descriptor is `stream`'s, open for the call.
        #[allow(unsafe_code)]
        let result = unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PeerCredentials {
            uid,
            gid,
            pid: None,
        })
    }

    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "openbsd",
        target_os = "netbsd"
    )))]
    pub(super) fn read(_: &UnixStream) -> io::Result<PeerCredentials> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

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

    /// The credentials of the process at the other end of a Unix socket,
    /// as the kernel recorded them when it connected; `None` over TCP,
    /// and where the system does not tell (see [`PeerCredentials`]).
    pub(crate) fn peer_credentials(&self) -> Option<PeerCredentials> {
        match self {
            Socket::Tcp(_) => None,
            #[cfg(unix)]
            Socket::Unix(stream) => match credentials::read(stream) {
                Ok(credentials) => Some(credentials),
                Err(error) => {
                    log::debug!("no credentials for a Unix socket's peer: {error}");
                    None
                }
            },
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
