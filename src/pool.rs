//! `WorkerPool`: a fixed set of worker threads fed by a bounded channel of
//! accepted streams, and the drain-then-force end of a shutdown.

use std::any::Any;
use std::fmt;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::connection::{Connection, Limits, SocketTimeouts};
use crate::error::{Error, Result};
use crate::handle::ShutdownReport;
use crate::handler::Handler;
use crate::server::Config;
use crate::shutdown::{lock, Shared};
use crate::stats::Counters;

/// How long shutdown waits for workers after closing their connections by
/// force. A handler blocked on its socket returns at once; one that ignores
/// errors and keeps computing is left behind after this.
pub(crate) const FORCE_GRACE: Duration = Duration::from_secs(1);

/// An accepted connection on its way from the acceptor to a worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) id: u64,
    /// The timeouts the socket has, when known.
    pub(crate) timeouts: Option<SocketTimeouts>,
}

/// The connection a worker is serving, if any, so that shutdown can close
/// it by force.
type Slot = Mutex<Option<Arc<TcpStream>>>;

pub(crate) struct WorkerPool {
    threads: Vec<JoinHandle<()>>,
    slots: Arc<[Slot]>,
    /// Disconnected once every worker has returned: each holds a sender.
    done: Receiver<()>,
    shared: Arc<Shared>,
    stop_reading: bool,
}

impl WorkerPool {
    /// Starts `workers` threads and returns the pool and the sending end of
    /// its queue. Dropping the sender stops the workers once the queue is
    /// empty.
    pub(crate) fn start(
        config: &Config,
        handler: Arc<dyn Handler>,
        shared: Arc<Shared>,
    ) -> Result<(WorkerPool, Sender<Job>)> {
        let workers = config.workers;
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(config.queue);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let slots: Arc<[Slot]> = (0..workers).map(|_| Mutex::new(None)).collect();
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let worker = Worker {
                index,
                jobs: receiver.clone(),
                handler: Arc::clone(&handler),
                shared: Arc::clone(&shared),
                slots: Arc::clone(&slots),
                limits: config.limits,
                stop_reading: config.stop_reading_on_shutdown,
                _done: done_tx.clone(),
            };
            let name = format!("frontdesk-worker-{index}");
            match thread::Builder::new()
                .name(name.clone())
                .spawn(move || worker.run())
            {
                Ok(thread) => threads.push(thread),
                Err(source) => {
                    // Stop the workers already started: with the only
                    // sender gone, each returns from `recv` at once.
                    drop(sender);
                    for thread in threads {
                        let _ = thread.join();
                    }
                    return Err(Error::Spawn { name, source });
                }
            }
        }
        let stop_reading = config.stop_reading_on_shutdown;
        Ok((
            WorkerPool {
                threads,
                slots,
                done,
                shared,
                stop_reading,
            },
            sender,
        ))
    }

    /// Waits until `stopped_at + timeout` for the workers to finish what is
    /// active and queued, then closes what is left by force and joins every
    /// worker that returns within [`FORCE_GRACE`].
    ///
    /// The queue's sender must be gone already.
    pub(crate) fn shut_down(self, stopped_at: Instant, timeout: Duration) -> ShutdownReport {
        let WorkerPool {
            threads,
            slots,
            done,
            shared,
            stop_reading,
        } = self;
        let counters = &shared.counters;
        if stop_reading {
            // Handlers blocked in a read get what the client already sent,
            // then end of stream; their writes still work. The stop flag is
            // up, so a worker that fills its slot after this scan does the
            // same itself.
            for_each_active(&slots, |stream| {
                let _ = stream.shutdown(Shutdown::Read);
            });
        }
        let forced_before = counters.forced_closed.load(Ordering::SeqCst);
        let dropped_before = counters.dropped.load(Ordering::SeqCst);

        let deadline = stopped_at.checked_add(timeout).unwrap_or_else(far_future);
        let mut all_returned = done.recv_deadline(deadline) == Err(RecvTimeoutError::Disconnected);
        if !all_returned {
            shared.force();
            for_each_active(&slots, |stream| force_close(stream, counters));
            all_returned = done.recv_timeout(FORCE_GRACE) == Err(RecvTimeoutError::Disconnected);
        }

        let mut stuck_workers = 0;
        for thread in threads {
            // A worker drops its end of `done` as it returns, a moment
            // before its thread has finished: once all have, joining waits
            // for no more than the threads' exit.
            if all_returned || thread.is_finished() {
                let _ = thread.join();
            } else {
                // A handler that neither returns nor notices its closed
                // socket. Waiting longer could wait forever; the thread is
                // left to end on its own.
                stuck_workers += 1;
                log::error!(
                    "worker {} did not stop after its connection was closed; leaving it behind",
                    thread.thread().name().unwrap_or("?")
                );
            }
        }

        let forced = counters.forced_closed.load(Ordering::SeqCst) - forced_before;
        let dropped = counters.dropped.load(Ordering::SeqCst) - dropped_before;
        ShutdownReport {
            drained: shared.completed_since_stop().saturating_sub(forced),
            forced,
            dropped,
            stuck_workers,
            elapsed: stopped_at.elapsed(),
            stats: counters.snapshot(shared.workers),
        }
    }
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let WorkerPool {
            threads,
            slots: _,
            done: _,
            shared: _,
            stop_reading: _,
        } = self;
        f.debug_struct("WorkerPool")
            .field("workers", &threads.len())
            .finish_non_exhaustive()
    }
}

fn far_future() -> Instant {
    // About 30 years: "no timeout" without overflowing `Instant`.
    Instant::now() + Duration::from_secs(60 * 60 * 24 * 365 * 30)
}

/// Calls `f` with the stream of every worker serving a connection.
fn for_each_active(slots: &[Slot], mut f: impl FnMut(&TcpStream)) {
    for slot in slots {
        if let Some(stream) = lock(slot).as_ref() {
            f(stream);
        }
    }
}

fn force_close(stream: &TcpStream, counters: &Counters) {
    // shutdown(2), not close: the handler still owns the descriptor, and
    // a shut-down socket makes its blocked read or write return at once.
    let _ = stream.shutdown(Shutdown::Both);
    Counters::bump(&counters.forced_closed);
}

struct Worker {
    index: usize,
    jobs: Receiver<Job>,
    handler: Arc<dyn Handler>,
    shared: Arc<Shared>,
    slots: Arc<[Slot]>,
    limits: Limits,
    stop_reading: bool,
    /// Dropped when the thread ends; see `WorkerPool::done`.
    _done: Sender<()>,
}

impl Worker {
    fn run(self) {
        let counters = &self.shared.counters;
        let slot = &self.slots[self.index];
        for Job {
            stream,
            peer,
            id,
            timeouts,
        } in self.jobs.iter()
        {
            if self.shared.is_forced() {
                // The drain deadline passed before this one was reached.
                log::debug!("closing queued connection unserved: peer={peer} id={id}");
                Counters::bump(&counters.dropped);
                counters.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            counters.busy.fetch_add(1, Ordering::Relaxed);
            let stream = Arc::new(stream);
            *lock(slot) = Some(Arc::clone(&stream));
            // Shutdown sets the flag before it looks at the slots, and we
            // filled our slot before looking at the flag: one of us sees
            // the other.
            if self.shared.is_forced() {
                force_close(&stream, counters);
            } else if self.stop_reading && self.shared.is_stopping() {
                // Picked up during the drain: what the client sent is
                // answered, then its reads end (see `stop_reading`).
                let _ = stream.shutdown(Shutdown::Read);
            }
            log::debug!("serving connection: peer={peer} id={id}");
            let shared = Arc::clone(&self.shared);
            let mut conn = Connection::new(stream, peer, id, shared, self.limits, timeouts);
            self.serve(&mut conn);
            drop(conn);
            // Dropping the slot's reference closes the socket.
            *lock(slot) = None;
            Counters::bump(&counters.completed);
            counters.busy.fetch_sub(1, Ordering::Relaxed);
            counters.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn serve(&self, conn: &mut Connection) {
        let counters = &self.shared.counters;
        let (peer, id) = (conn.peer_addr(), conn.id());
        match panic::catch_unwind(AssertUnwindSafe(|| self.handler.handle(conn))) {
            Ok(Ok(())) => log::debug!("connection closed: peer={peer} id={id}"),
            Ok(Err(error)) => {
                Counters::bump(&counters.handler_errors);
                log::debug!("connection closed with error: peer={peer} id={id} error={error}");
            }
            Err(payload) => {
                Counters::bump(&counters.panics);
                log::error!(
                    "handler panicked: peer={peer} id={id} panic={}",
                    panic_message(&*payload)
                );
            }
        }
    }
}

/// The message of a panic, when it has one (as `panic!` with a string does).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "<not a string>"
    }
}
