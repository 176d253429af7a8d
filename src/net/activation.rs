//! The listening sockets a service manager passes (systemd socket
//! activation): `LISTEN_FDS` descriptors from 3 on, for the process that
//! `LISTEN_PID` names, as `sd_listen_fds(3)` takes them.

use std::env;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use crate::error::{Error, Result};
use crate::net::listener::ListenSocket;

/// The variables of the protocol, removed from the environment once read
/// (as `sd_listen_fds(1)` does), so that a child process never takes the
/// sockets for its own.
const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Takes every socket passed to this process, in order, each with its
/// name from `LISTEN_FDNAMES` when the manager gave one (systemd's
/// `FileDescriptorName=`); empty when none was passed, or when the
/// variables are meant for another process.
///
/// `LISTEN_PID` must name this process, as `sd_listen_fds(3)` requires:
/// a process that inherited the variables from the one they were meant
/// for (or was given no `LISTEN_PID`) has no socket passed to it. (The
/// `listenfd` crate, which reads the descriptors, also accepts a missing
/// or empty `LISTEN_PID`, for development tools that cannot know the
/// pid; a server must not: issue #16.)
///
/// Each socket must be a listening TCP or Unix stream socket. A
/// connection passed in its place (a systemd socket unit with
/// `Accept=yes` passes each connection to an instance of its own) is
/// [`Error::NotListening`] here, before the service manager is told the
/// server is ready, instead of an accept error after it was.
pub(crate) fn take_passed_listeners() -> Result<Vec<(ListenSocket, Option<String>)>> {
    if !for_this_process() {
        for name in VARIABLES {
            env::remove_var(name);
        }
        return Ok(Vec::new());
    }
    let names = env::var("LISTEN_FDNAMES").ok();
    // Reads and removes LISTEN_PID and LISTEN_FDS.
    let mut passed = listenfd::ListenFd::from_env();
    env::remove_var("LISTEN_FDNAMES");
    let mut names = names.as_deref().map(|names| names.split(':'));
    let listener_error = |source| Error::Listener { source };
    let mut listeners = Vec::with_capacity(passed.len());
    for index in 0..passed.len() {
        let name = names.as_mut().and_then(Iterator::next);
        // A socket that is not TCP stays in place for the second try.
        let listener = match passed.take_tcp_listener(index) {
            Ok(Some(listener)) => ListenSocket::Tcp(listener),
            _ => match passed.take_unix_listener(index).map_err(listener_error)? {
                Some(listener) => ListenSocket::Unix(listener),
                None => continue,
            },
        };
        if !is_listening(&listener).map_err(listener_error)? {
            return Err(Error::NotListening {
                fd: listener.as_fd().as_raw_fd(),
            });
        }
        // systemd names a socket without `FileDescriptorName=` after its
        // unit; an empty name is none.
        let name = name.filter(|name| !name.is_empty()).map(str::to_string);
        listeners.push((listener, name));
    }
    Ok(listeners)
}

/// Whether `LISTEN_PID` names this process.
fn for_this_process() -> bool {
    let pid = env::var_os("LISTEN_PID");
    let ours = pid
        .as_deref()
        .and_then(|pid| pid.to_str())
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    if !ours && env::var_os("LISTEN_FDS").is_some() {
        log::warn!(
            "ignoring the sockets in LISTEN_FDS: LISTEN_PID={pid:?} does not name this process \
             (pid {})",
            std::process::id()
        );
    }
    ours
}

/// Whether `listen(2)` was called on the socket (`SO_ACCEPTCONN`).
#[cfg(not(target_vendor = "apple"))]
fn is_listening(socket: &impl AsFd) -> io::Result<bool> {
    Ok(rustix::net::sockopt::socket_acceptconn(socket)?)
}

/// Apple's systems declare `SO_ACCEPTCONN` but do not implement it (as
/// rustix notes): there, a socket with a peer is a connection, and any
/// other is taken for a listener.
#[cfg(target_vendor = "apple")]
fn is_listening(socket: &impl AsFd) -> io::Result<bool> {
    match rustix::net::getpeername(socket) {
        Ok(peer) => Ok(peer.is_none()),
        Err(rustix::io::Errno::NOTCONN) => Ok(true),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn a_listener_listens_and_a_connection_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(is_listening(&listener).unwrap());
        assert!(!is_listening(&client).unwrap());
        assert!(!is_listening(&accepted).unwrap());
    }
}
