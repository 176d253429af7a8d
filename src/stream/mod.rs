//! One connection's bytes: reading and writing without waiting, waiting
//! on a socket or a signal, TLS over the socket, the PROXY header before
//! the client's bytes, and lines and length-prefixed frames.
//!
//! - Lives here: `wait`, `Transport`, the TLS session, `ProxyHeader`,
//!   `LineReader`, `FrameReader`.
//! - May use: `net/` and the leaves (`addr.rs`, `error.rs`, `sync.rs`).
//!   It knows no server: a shutdown reaches it as a `Stopping` it is given.
//! - Must never use it: `net/` and the leaves.

pub(crate) mod frames;
pub(crate) mod lines;
pub(crate) mod proxy;
#[cfg(feature = "tls")]
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod wait;
