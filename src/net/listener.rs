//! The listening socket, TCP or Unix, and the file a Unix socket lives in.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

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

/// The file of a Unix socket the server bound: removed when the server is
/// done with it, unless another socket has taken its path since.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    /// The file's device and inode when it was made.
    identity: (u64, u64),
}

#[cfg(unix)]
impl SocketFile {
    pub(crate) fn new(path: &Path) -> io::Result<SocketFile> {
        Ok(SocketFile {
            path: path.to_path_buf(),
            identity: identity(path)?,
        })
    }
}

#[cfg(unix)]
fn identity(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path)?;
    Ok((metadata.dev(), metadata.ino()))
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        #[cfg(unix)]
        match identity(&self.path) {
            Ok(identity) if identity == self.identity => {
                if let Err(error) = std::fs::remove_file(&self.path) {
                    log::warn!(
                        "could not remove the socket file {}: error={error}",
                        self.path.display()
                    );
                }
            }
            // Removed, or replaced by another server's socket: not ours.
            _ => {}
        }
    }
}

/// Makes way for a Unix socket at `path`: nothing to do when no file is
/// there; a socket file that nobody listens on (left by a server that
/// crashed) is removed; a live socket is `AddrInUse`; any other file is
/// left alone and `AlreadyExists`.
#[cfg(unix)]
pub(crate) fn clear_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    if crate::net::options::unix_socket_is_live(path)? {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another server is listening on this socket",
        ));
    }
    log::info!("removing the stale socket file {}", path.display());
    std::fs::remove_file(path)
}
