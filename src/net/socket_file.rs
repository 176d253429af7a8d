//! The file a Unix socket the server binds lives in: taken under a lock,
//! replaced only when it is a stale socket, its permissions set without
//! following a link, and removed when the server is done with it if it is
//! still the server's.
//!
//! Two servers started on one path at once must not both believe it is
//! theirs (issue #16). Without a lock, the second one's liveness probe
//! finds the first one's socket bound but not yet listening, takes it for
//! stale and removes it; both report success, and the first one's socket
//! is unreachable. So the path is taken under `PATH.lock`, a file beside
//! it locked with `flock(2)` for as long as the server holds the path (as
//! many daemons do): a second server finds the lock held and fails at
//! once. The lock is a convention between frontdesk servers; the checks
//! below also guard against other programs, as far as the file system
//! lets them.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::net::options;

/// Binds a Unix stream socket at `path` and listens on it, returning the
/// listener and the file it made (which removes itself when dropped).
///
/// In order: take `PATH.lock`; clear the way (nothing there, or a stale
/// socket, removed); bind; record which file the bind made; set `mode`
/// on that very file; listen. Permissions are set before the socket
/// listens, so no client connects under the umask's. Any failure after
/// the bind removes the file again, if it is still the one the bind made.
pub(crate) fn bind_unix(
    path: &Path,
    backlog: i32,
    mode: Option<u32>,
) -> io::Result<(UnixListener, SocketFile)> {
    let lock = PathLock::take(path)?;
    clear_stale_socket(path)?;
    let bound = options::bind_unix(path)?;
    // Right after the bind, before anything else can happen to the path:
    // with the lock held no other frontdesk server touches it.
    let metadata = fs::symlink_metadata(path)?;
    if !metadata.file_type().is_socket() {
        return Err(replaced(path));
    }
    let file = SocketFile {
        path: path.to_path_buf(),
        identity: identity(&metadata),
        _lock: lock,
    };
    if let Some(mode) = mode {
        file.set_mode(mode)?;
    }
    let listener = bound.listen(backlog)?;
    Ok((listener, file))
}

/// The file of a Unix socket the server bound: removed when dropped,
/// unless another file has taken its path since; then its lock is let go.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    /// The file's device and inode, read right after the bind made it.
    identity: (u64, u64),
    /// Held until the file is removed: fields drop after `drop` runs.
    _lock: PathLock,
}

impl SocketFile {
    /// Sets the file's permissions (`chmod`), on the file the bind made
    /// and on no other: never through a symbolic link, nor on a file put
    /// in its place.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn set_mode(&self, mode: u32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::PermissionsExt;
        // O_PATH opens the file itself without connecting to the socket,
        // and O_NOFOLLOW a link itself. The descriptor pins the file: once
        // it is checked to be ours, `chmod` through /proc/self/fd reaches
        // it whatever happens to the path (this is how glibc implements
        // `fchmodat(AT_SYMLINK_NOFOLLOW)`; Linux's own syscall ignores the
        // flag before 6.6).
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(&self.path)?;
        let metadata = opened.metadata()?;
        if !metadata.file_type().is_socket() || identity(&metadata) != self.identity {
            return Err(replaced(&self.path));
        }
        let by_descriptor = format!("/proc/self/fd/{}", opened.as_raw_fd());
        fs::set_permissions(by_descriptor, fs::Permissions::from_mode(mode)).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("setting the socket file's permissions through /proc/self/fd: {error}"),
            )
        })
    }

    /// Sets the file's permissions (`chmod`) without following a link:
    /// `fchmodat(AT_SYMLINK_NOFOLLOW)`, which these systems implement,
    /// after checking that the path is still the file the bind made.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn set_mode(&self, mode: u32) -> io::Result<()> {
        use rustix::fs::{AtFlags, Mode, RawMode, CWD};
        let metadata = fs::symlink_metadata(&self.path)?;
        if !metadata.file_type().is_socket() || identity(&metadata) != self.identity {
            return Err(replaced(&self.path));
        }
        let mode = RawMode::try_from(mode)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mode out of range"))?;
        rustix::fs::chmodat(
            CWD,
            &self.path,
            Mode::from_raw_mode(mode),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match fs::symlink_metadata(&self.path) {
            Ok(metadata) if identity(&metadata) == self.identity => {
                if let Err(error) = fs::remove_file(&self.path) {
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

/// `PATH.lock`, locked (`flock(2)`, exclusive) while this server holds
/// `PATH`; removed, then unlocked, when dropped.
#[derive(Debug)]
struct PathLock {
    path: PathBuf,
    file: File,
}

impl PathLock {
    /// Takes the lock for the socket at `socket`, or fails at once with
    /// `AddrInUse` when another server holds it.
    fn take(socket: &Path) -> io::Result<PathLock> {
        let mut path = OsString::from(socket);
        path.push(".lock");
        let path = PathBuf::from(path);
        loop {
            // Only the owner may open it, so no other user can hold the
            // lock to keep the server from starting. No link is followed
            // (the directory may be shared), and opening a FIFO put there
            // does not wait.
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
                .map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("opening the lock file {}: {error}", path.display()),
                    )
                })?;
            let opened = file.metadata()?;
            if !opened.file_type().is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("the lock file {} is not a regular file", path.display()),
                ));
            }
            match lock_now(&file) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "another server is starting or serving on this path (it holds {})",
                            path.display()
                        ),
                    ))
                }
                Err(error) => return Err(error.into()),
            }
            // The holder before us removes the file before it unlocks:
            // locking a file that is no longer at the path (opened just
            // before it was removed) holds nothing, so open it anew.
            match fs::symlink_metadata(&path) {
                Ok(now) if identity(&now) == identity(&opened) => {
                    return Ok(PathLock { path, file })
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// Locks `file` for writing, or fails with `WOULDBLOCK` at once when
/// someone else holds it: `flock(2)`, whose lock belongs to the open file,
/// so two servers in one process exclude each other as two processes do.
#[cfg(not(target_os = "solaris"))]
fn lock_now(file: &File) -> rustix::io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
}

/// Solaris has no `flock(2)`: a POSIX record lock (`F_SETLK`), which
/// excludes other processes but not another server in this one.
#[cfg(target_os = "solaris")]
fn lock_now(file: &File) -> rustix::io::Result<()> {
    use rustix::io::Errno;
    match rustix::fs::fcntl_lock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Err(Errno::ACCESS) => Err(Errno::WOULDBLOCK),
        other => other,
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this), so
        // that whoever opened it in the meantime sees it gone once it has
        // the lock, and tries again on a new one.
        let ours = self.file.metadata().map(|metadata| identity(&metadata));
        let there = fs::symlink_metadata(&self.path).map(|metadata| identity(&metadata));
        if let (Ok(ours), Ok(there)) = (ours, there) {
            if ours == there {
                if let Err(error) = fs::remove_file(&self.path) {
                    log::warn!(
                        "could not remove the lock file {}: error={error}",
                        self.path.display()
                    );
                }
            }
        }
    }
}

/// Makes way for a Unix socket at `path`: nothing to do when no file is
/// there; a socket file that nobody listens on (left by a server that
/// crashed) is removed; a live socket is `AddrInUse`; any other file
/// (a symbolic link included, whatever it points to) is left alone and
/// `AlreadyExists`.
///
/// The file removed is the socket found stale: it is looked at again
/// right before it is removed, and anything else found there then is
/// left alone (and looked at anew). POSIX has no "remove if still this
/// file", so a program that replaces the path in the instant between
/// that look and the removal loses its file; with the lock held, no
/// frontdesk server does.
fn clear_stale_socket(path: &Path) -> io::Result<()> {
    loop {
        let metadata = match fs::symlink_metadata(path) {
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
        if options::unix_socket_is_live(path)? {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another server is listening on this socket",
            ));
        }
        match fs::symlink_metadata(path) {
            Ok(now) if now.file_type().is_socket() && identity(&now) == identity(&metadata) => {}
            // Replaced while it was probed: look again.
            _ => continue,
        }
        log::info!("removing the stale socket file {}", path.display());
        return match fs::remove_file(path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        };
    }
}

/// A file's device and inode: which file is at a path, not just that one
/// is.
fn identity(metadata: &fs::Metadata) -> (u64, u64) {
    (metadata.dev(), metadata.ino())
}

/// The error for a socket file that is no longer the one the bind made.
fn replaced(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} was replaced by another file while the server bound it",
            path.display()
        ),
    )
}
