//! frontdesk serves TCP clients with plain blocking code: a listener, a
//! fixed pool of worker threads, and a [`Handler`] you write that talks to
//! one client at a time through a [`Connection`].
//!
//! ```text
//! bind ──► accept loop ──► bounded queue ──► worker 0..N ──► Handler::handle(&mut Connection)
//!           (acceptor)        (queue(n))       (workers(n))
//! ```
//!
//! # Example: an echo server
//!
//! ```
//! use std::io::{self, Read, Write};
//! use std::net::TcpStream;
//! use std::time::Duration;
//!
//! use frontdesk::{Connection, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::builder()
//!     .workers(4)
//!     .idle_timeout(Duration::from_secs(30))
//!     .bind("127.0.0.1:0")?; // bound and listening now; port 0 picks a free port
//! let handle = server.spawn(|conn: &mut Connection| -> io::Result<()> {
//!     let mut buf = [0u8; 4096];
//!     loop {
//!         let n = conn.read(&mut buf)?;
//!         if n == 0 {
//!             return Ok(());
//!         }
//!         conn.write_all(&buf[..n])?;
//!     }
//! })?;
//!
//! let mut client = TcpStream::connect(handle.local_addr())?;
//! client.write_all(b"hello")?;
//! let mut reply = [0u8; 5];
//! client.read_exact(&mut reply)?;
//! assert_eq!(&reply, b"hello");
//! drop(client);
//!
//! let report = handle.shutdown()?; // stop, drain, force what is left, join
//! assert_eq!(report.forced, 0);
//! # Ok(()) }
//! ```
//!
//! # How a connection is served
//!
//! One thread, `frontdesk-acceptor` (or the thread that calls
//! [`Server::run`]), accepts connections and puts them in a bounded queue.
//! `workers` threads take them from the queue one at a time and run the
//! handler; the connection is closed when the handler returns. A handler's
//! error is logged and counted, a handler's panic is caught, logged and
//! counted, and the worker goes on to the next connection: the pool never
//! shrinks.
//!
//! # Overload
//!
//! When every worker is busy and the queue is full, the [`Overload`] policy
//! decides: `Block` (the default) stops accepting so that new clients wait
//! in the kernel's backlog; `Reject` accepts and hands the connection to the
//! [`on_reject`](ServerBuilder::on_reject) handler (for a "busy" reply) and
//! closes it; `Wait(d)` waits up to `d` for room, then rejects.
//! [`max_connections`](ServerBuilder::max_connections) caps the connections
//! held at once the same way.
//!
//! # Timeouts
//!
//! By default a write may wait 30 s and a client may stay silent for 5
//! minutes while the handler waits for it; a handler can also set a
//! deadline for a whole exchange. See [`Connection`] for the details and
//! [`Timeout`] for the errors.
//!
//! # Shutdown
//!
//! [`ServerHandle::shutdown`] (or a [`Stopper`]) stops accepting at once,
//! lets queued and active connections finish until `shutdown_timeout`, then
//! closes what is left and joins every thread; see [`ServerHandle`].
//!
//! # Logging
//!
//! The library never prints; it logs through the [`log`] crate: `info` when
//! it starts and stops listening, `debug` for each connection and for
//! accept errors that concern one connection, `warn` for the first resource
//! error (`EMFILE`, ...) of a back-off and for rejected connections (at most
//! once a second), `error` for panics in handlers and fatal accept errors.
//!
//! # Accept errors
//!
//! The accept loop never dies on an error that concerns one connection and
//! never spins on one that concerns the whole process:
//!
//! | error | what the loop does |
//! |---|---|
//! | `ECONNABORTED`, `ECONNRESET`, `EPROTO`, `EPERM`, `EINTR`, and the network errors `accept(2)` may pass on (`ENETDOWN`, `ENETUNREACH`, `EHOSTDOWN`, `EHOSTUNREACH`, `ENOPROTOOPT`, `EOPNOTSUPP`) | accept again at once |
//! | `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` | wait 5 ms, doubling up to 1 s while the error lasts, back to 5 ms after a success; one warning per episode |
//! | anything else | the server shuts down; `run` / `join` return [`Error::Accept`] |
//!
//! # Platform notes
//!
//! Written and tested on Linux. `SO_REUSEADDR` is never set on Windows
//! (there it allows another socket to take over the port);
//! [`reuse_port`](ServerBuilder::reuse_port) is Unix only.

#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod acceptor;
mod builder;
mod connection;
mod error;
mod handle;
mod handler;
mod lines;
mod pool;
mod server;
mod shutdown;
mod socket;
mod stats;

// The guide's and the README's snippets run as doc tests, so they cannot
// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
mod guide {}
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}

pub use crate::acceptor::REJECT_TIME;
pub use crate::builder::{Overload, ServerBuilder, MAX_QUEUE, MAX_WORKERS};
pub use crate::connection::{Connection, Timeout};
pub use crate::error::{Error, Result};
pub use crate::handle::{ServerHandle, ShutdownReport};
pub use crate::handler::Handler;
pub use crate::lines::{LineError, LineReader};
pub use crate::server::Server;
pub use crate::shutdown::Stopper;
pub use crate::stats::{RejectedStats, Stats, TimeoutStats};
