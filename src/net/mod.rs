//! The listening side: addresses, the listening socket and its options
//! (socket2), the connected socket it accepts, and the service manager's
//! sockets (socket activation) and notifications.
//!
//! - Lives here: `Listener`, `Socket`, socket options, a Unix socket's
//!   file and its lock (`SocketFile`), the passed listener
//!   (`sd_listen_fds`), `sd_notify`.
//! - May use: the leaves (`addr.rs`, `error.rs`, `sync.rs`) only.
//! - Must never use it: nothing; every layer above may.

#[cfg(unix)]
pub(crate) mod activation;
pub(crate) mod listener;
#[cfg(unix)]
pub(crate) mod notify;
pub(crate) mod options;
pub(crate) mod socket;
#[cfg(unix)]
pub(crate) mod socket_file;
