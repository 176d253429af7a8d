//! The pool: the accept loop, the workers fed over the crossbeam channel,
//! the gentle close, the stop signal, and the guard around user code.
//!
//! - Lives here: `Acceptor`, `WorkerPool`, `Worker`, `Job`, `Queue`, `Idle`, `Service`,
//!   `Closer`, `Shared`, `run_guarded`, the per-address counts (`PerIp`,
//!   `IpSlot`).
//! - May use: `net/`, `stream/`, the shared root files (`config.rs`,
//!   `stats.rs`, `reject.rs`) and the leaves. It knows no mode: a mode is
//!   a `Service`, generic over its own jobs.
//! - Must never use it: `net/`, `stream/`, the shared root files, the
//!   leaves.

pub(crate) mod acceptor;
pub(crate) mod closer;
pub(crate) mod guard;
pub(crate) mod per_ip;
pub(crate) mod queue;
pub(crate) mod shutdown;
pub(crate) mod workers;
