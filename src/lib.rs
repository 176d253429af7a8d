//! frontdesk serves TCP clients with plain blocking code: a listener, a
//! fixed pool of worker threads, and code you write, in one of two modes
//! (over TCP, TLS with the `tls` feature, or a Unix domain socket; see
//! [Transports](#transports)):
//!
//! - a [`Handler`] talks to one client at a time through a
//!   [`Connection`], from accept to close, and holds its worker all along
//!   ([`Server::spawn`], [`Server::run`]);
//! - a [`TurnHandler`] is called when a connection opens, each time its
//!   client has sent something, and when it ends, through a [`Turn`];
//!   between turns the connection waits in the kernel's readiness set,
//!   without a worker, so a few workers hold thousands of clients
//!   ([`Server::spawn_turns`], [`Server::run_turns`]). [`Peer`] sends to a
//!   connection from any thread, never waiting, and a [`Room`] keeps a
//!   group of them: the way to broadcast.
//!
//! Input is read with a hard limit in either mode: lines with
//! [`LineReader`] (a `Handler`) or [`Lines`] (a `TurnHandler`),
//! length-prefixed binary frames with [`FrameReader`] or [`Frames`].
//! [`Stats::to_prometheus`] renders the server's counters for a
//! monitoring system to scrape.
//!
//! ```text
//! bind ──► accept loop ──► queue ──► worker 0..N ──► Handler::handle(&mut Connection)
//!           (acceptor)       ▲                   └─► TurnHandler::{open, ready, close}(&mut Turn)
//!                            └── poller (turn mode): parked connections with input
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
//! handler. A handler's error is logged and counted, a handler's panic is
//! caught, logged and counted, and the worker goes on to the next
//! connection: the pool never shrinks.
//!
//! When the handler returns, the connection is closed *gently*: the server
//! sends its end of stream, reads and discards what the client still
//! sends until the client closes, then closes the socket, so no reset
//! destroys a reply the client has not read yet. A thread of its own,
//! `frontdesk-closer`, does that waiting for every connection at once; see
//! [`ServerBuilder::linger_time`].
//!
//! # Overload
//!
//! When every worker is busy and the queue is full, the [`Overload`] policy
//! decides: `Block` (the default) stops accepting so that new clients wait
//! in the kernel's backlog; `Reject` accepts and hands the connection to the
//! [`on_reject`](ServerBuilder::on_reject) handler (for a "busy" reply) and
//! closes it; `Wait(d)` waits up to `d` for room, then rejects.
//! [`max_connections`](ServerBuilder::max_connections) caps the connections
//! held at once the same way, and
//! [`max_connections_per_ip`](ServerBuilder::max_connections_per_ip) those
//! one client address holds.
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
//! [`ServerHandle::shutdown`] (or a [`ServerControl`]) stops accepting at
//! once, then drains: every byte a client sent before the stop is read and
//! answered (a read returns end of stream once the client pauses), until
//! `shutdown_timeout`; then reads and writes still waiting fail, what is
//! left closes gently, and every thread is joined; see [`ServerHandle`].
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
//! # Transports
//!
//! [`ServerBuilder::bind`] listens on TCP, [`ServerBuilder::bind_unix`] on
//! a Unix domain socket, and with the `tls` cargo feature,
//! `ServerBuilder::tls` (with a `TlsConfig`: PEM files, reloadable) makes
//! every connection TLS, on rustls. Handlers are the same for all of
//! them: they read and write plaintext, and [`Addr`] tells the addresses.
//! Who the client is, where the transport knows, is read once before the
//! handler first sees the connection: a Unix socket client's
//! [`PeerCredentials`], and with TLS the verified client certificate, SNI
//! name and ALPN protocol (`TlsInfo`, from `Connection::tls_info` and
//! `Turn::tls_info`).
//! See `docs/deploy.md` for running them in production.
//!
//! One server can listen on several sockets at once
//! ([`ServerBuilder::listen`] with a [`Listen`] each, then
//! [`ServerBuilder::build`]): IPv4 and IPv6, a plain and a TLS port, a
//! Unix socket, every socket a service manager passes. They share the
//! workers, the limits and the shutdown; each may have its own TLS and
//! PROXY setting, and a handler learns which one a connection came
//! through from [`Connection::listener`] (a [`Listener`]).
//!
//! # Platform notes
//!
//! Written and tested on Linux. Reads and writes use `MSG_DONTWAIT` and wait
//! in `poll(2)` (through `rustix`), which every Unix has; a `Handler`-mode
//! read over a plain socket first waits up to 50 ms in `recv` itself,
//! bounded by the socket's `SO_RCVTIMEO` (see [`Connection`]); where a
//! system refuses that option, it waits in `poll(2)` alone. Windows builds
//! use WSAPoll and are untested. `SO_REUSEADDR` is never set on Windows
//! (there it allows another socket to take over the port);
//! [`reuse_port`](ServerBuilder::reuse_port) is Unix only.

// A few `unsafe` calls, each with its reason: adding a socket to the
// readiness set (`turn/events.rs`, `pool/closer.rs`), reading a Unix
// socket peer's credentials (`net/socket.rs`), and borrowing the
// descriptor a stream keeps beside its socket (`stream/transport.rs`).
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod addr;
mod builder;
mod config;
mod error;
#[cfg(all(unix, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod handler;
mod listen;
mod net;
mod pool;
mod reject;
mod server;
mod stats;
mod stream;
mod sync;
mod time;
mod turn;

// The guide's and the README's snippets run as doc tests, so they cannot
// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
mod guide {}
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
#[cfg(doctest)]
#[doc = include_str!("../docs/deploy.md")]
mod deploy {}

pub use crate::addr::Addr;
pub use crate::builder::{ServerBuilder, MAX_QUEUE, MAX_WORKERS};
pub use crate::config::{CloseReason, OutboxFull, Overload, Timeout};
pub use crate::error::{Error, Result};
pub use crate::handle::{ServerControl, ServerHandle, ShutdownReport};
pub use crate::handler::connection::Connection;
pub use crate::handler::Handler;
pub use crate::listen::Listen;
pub use crate::net::listener::Listener;
pub use crate::net::socket::PeerCredentials;
pub use crate::reject::{RejectHandler, RejectReason, Rejected};
pub use crate::server::{Server, TURN_MAX_CONNECTIONS};
pub use crate::stats::{RejectedStats, Stats, TimeoutStats};
pub use crate::stream::frames::{FrameError, FrameReader, LengthPrefix};
pub use crate::stream::lines::{LineError, LineReader};
pub use crate::stream::proxy::{ProxyHeader, PROXY_HEADER_TIME};
pub use crate::turn::engine::SendError;
pub use crate::turn::frames::Frames;
pub use crate::turn::handler::{Next, Turn, TurnHandler};
pub use crate::turn::lines::Lines;
pub use crate::turn::peer::{Message, Peer};
pub use crate::turn::room::{Delivery, Room};
#[cfg(feature = "tls")]
pub use crate::{
    builder::TLS_HANDSHAKE_TIME,
    stream::tls::{TlsConfig, TlsConfigBuilder, TlsInfo},
};
/// The rustls crate this one is built with, for [`TlsConfig::new`]:
/// building a `ServerConfig` with these types cannot mix versions.
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use rustls;
