//! `ServerHandle`: watching and stopping a server that runs in the
//! background, and the `ShutdownReport` it ends with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::Result;
use crate::shutdown::{Shared, Stopper};
use crate::stats::Stats;

/// What a graceful shutdown did, from [`ServerHandle::shutdown`],
/// [`ServerHandle::join`] or [`Server::run`](crate::Server::run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections that finished on their own between the stop request and
    /// the drain deadline: those active or queued at the stop, and any
    /// accepted while the acceptor was stopping.
    pub drained: u64,
    /// Active connections shut down by force at the drain deadline.
    pub forced: u64,
    /// Queued connections closed unserved at the drain deadline.
    pub dropped: u64,
    /// Workers whose handler did not return even after its connection was
    /// closed (it ignores errors and never returns). They are left running
    /// rather than waited for forever; anything else is joined.
    pub stuck_workers: usize,
    /// Time from the moment the server stopped accepting to the end of the
    /// shutdown.
    pub elapsed: Duration,
    /// The server's counters at the end, when every accepted connection
    /// has been served, rejected or dropped.
    pub stats: Stats,
}

/// A server running in the background, from [`Server::spawn`](crate::Server::spawn).
///
/// The handle is `Send` and `Sync`. Dropping it shuts the server down
/// gracefully, as [`shutdown`](ServerHandle::shutdown) does, and waits for
/// it.
///
/// # Shutdown
///
/// [`shutdown`](ServerHandle::shutdown) (or a [`Stopper`]) stops the server
/// in this order:
///
/// 1. stop accepting and close the listener at once: the port is free for
///    a new server;
/// 2. let the workers serve the queued connections and finish the active
///    ones until the drain deadline (`shutdown_timeout` after step 1);
///    handlers can see it through
///    [`Connection::is_shutting_down`](crate::Connection::is_shutting_down);
/// 3. at the deadline, shut down (both ways) the connections still active,
///    so that handlers blocked in a read return, and close the queued ones
///    unserved;
/// 4. join every thread and return a [`ShutdownReport`].
#[derive(Debug)]
pub struct ServerHandle {
    thread: Option<JoinHandle<Result<ShutdownReport>>>,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl ServerHandle {
    pub(crate) fn new(
        thread: JoinHandle<Result<ShutdownReport>>,
        shared: Arc<Shared>,
        local_addr: SocketAddr,
    ) -> ServerHandle {
        ServerHandle {
            thread: Some(thread),
            shared,
            local_addr,
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot(self.shared.workers)
    }

    /// A [`Stopper`] to start the shutdown from another thread while this
    /// one waits in [`join`](ServerHandle::join).
    pub fn stopper(&self) -> Stopper {
        Stopper::new(Arc::clone(&self.shared))
    }

    /// Whether the server has stopped (its accept loop and shutdown are
    /// over), so that [`join`](ServerHandle::join) would not wait.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, JoinHandle::is_finished)
    }

    /// Shuts the server down gracefully (see [Shutdown](#shutdown)) and
    /// waits for it; it takes at most `shutdown_timeout` plus about a
    /// second.
    ///
    /// # Errors
    ///
    /// [`Error::Accept`](crate::Error::Accept) if the server had already
    /// stopped on a fatal accept error.
    pub fn shutdown(mut self) -> Result<ShutdownReport> {
        self.shared.stop();
        self.wait()
    }

    /// Waits until the server stops: after a [`Stopper`] asked it to, or
    /// on a fatal accept error.
    ///
    /// # Errors
    ///
    /// [`Error::Accept`](crate::Error::Accept) if the server stopped on a
    /// fatal accept error.
    pub fn join(mut self) -> Result<ShutdownReport> {
        self.wait()
    }

    fn wait(&mut self) -> Result<ShutdownReport> {
        let thread = self.thread.take().expect("the handle is waited for once");
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.shared.stop();
            // A panic or error here has nobody to go to.
            let _ = thread.join();
        }
    }
}
