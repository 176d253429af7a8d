//! The error type for setting up and running a server.

use std::io;
use std::path::PathBuf;

use crate::addr::Addr;

/// An error from setting up or running a [`Server`](crate::Server).
///
/// Errors that concern one connection never show up here: they go to the
/// [`Handler`](crate::Handler) as `io::Error`s, are logged and counted in
/// [`Stats`](crate::Stats), and the server goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address given to `bind` could not be resolved to any socket address.
    #[error("failed to resolve {addr}")]
    Resolve {
        /// The address as given to `bind`, in its `Debug` form.
        addr: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// Creating, configuring, binding or listening on the socket failed.
    ///
    /// When the address resolved to several socket addresses, this names the
    /// last one tried, as `std::net::TcpListener::bind` does.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address that could not be bound.
        addr: Addr,
        /// The operating system's reason, e.g. `AddrInUse`.
        #[source]
        source: io::Error,
    },
    /// A TLS certificate chain or key could not be loaded (the `tls`
    /// feature): `path` names the file, `reason` says what is wrong with
    /// it.
    #[error("failed to load TLS settings from {}: {reason}", path.display())]
    Tls {
        /// The certificate or key file.
        path: PathBuf,
        /// What went wrong, in a few words.
        reason: String,
    },
    /// A listener passed to `from_listener` could not be adopted.
    #[error("failed to adopt the listener")]
    Listener {
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The socket a service manager passed
    /// ([`from_socket_activation`](crate::ServerBuilder::from_socket_activation))
    /// is not listening: it is a connection, as a systemd socket unit with
    /// `Accept=yes` passes one to each instance it starts. frontdesk
    /// accepts its connections itself and needs `Accept=no` (systemd's
    /// default).
    #[error(
        "the socket passed by the service manager (descriptor {fd}) is not listening; \
         socket activation needs `Accept=no`"
    )]
    NotListening {
        /// The passed descriptor.
        fd: i32,
    },
    /// The builder was given a value it cannot use.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A worker or acceptor thread could not be spawned.
    #[error("failed to spawn thread `{name}`")]
    Spawn {
        /// The name the thread would have had.
        name: String,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The descriptors that wake waiting threads (a socket pair per signal)
    /// could not be created, usually for lack of file descriptors.
    #[error("failed to create the server's wake-up descriptors")]
    Signal {
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// `accept` failed in a way that retrying cannot fix; the server stopped.
    ///
    /// See the crate documentation for which accept errors are retried.
    #[error("accepting connections failed{}", on_listener(listener.as_ref()))]
    Accept {
        /// The address of the listener that failed; `None` when waiting
        /// for all of them failed (`poll(2)` itself).
        listener: Option<Addr>,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// ` on ADDR`, for a message that names a listener when there is one.
fn on_listener(listener: Option<&Addr>) -> String {
    listener
        .map(|addr| format!(" on {addr}"))
        .unwrap_or_default()
}
