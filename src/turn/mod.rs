//! The turn mode: a `TurnHandler` serves a connection a turn at a time,
//! and between turns the connection waits, parked, in the engine's
//! readiness set, holding no worker.
//!
//! - Lives here: `TurnHandler`, `Turn`, `Next`, `Lines`, `Frames`,
//!   `Peer`, `Message`, `Room`, the engine (`Hub`, `Entry`), the news of
//!   each connection's input (`Input`), the edge-triggered readiness set
//!   (`ReadySet`) and its poller thread, and the `Service` that runs turns
//!   on the pool's workers.
//! - May use: `pool/`, `stream/`, `net/`, `config.rs`, `stats.rs` and the
//!   leaves.
//! - Must never use it: everything but `server.rs` and `lib.rs`; the
//!   `Handler` mode (`handler/`) in particular.

pub(crate) mod engine;
pub(crate) mod events;
pub(crate) mod frames;
pub(crate) mod handler;
pub(crate) mod input;
pub(crate) mod lines;
pub(crate) mod lookout;
pub(crate) mod peer;
pub(crate) mod poller;
pub(crate) mod room;
pub(crate) mod service;
