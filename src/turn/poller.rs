//! The poller thread (`frontdesk-poller`) of the turn mode: keeps the
//! timers of parked connections, runs the shutdown (the drain's rounds,
//! the force), and ticks while workers have left work behind
//! (`lookout.rs`). It does not watch the connections: idle workers
//! wait in their readiness set themselves (see `service.rs`), so that the
//! thread that learns a connection is ready serves it. The timers are
//! kept here, apart, because they must act while every worker is in a
//! turn.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::error::{Error, Result};
use crate::stats::Counters;
use crate::time::Moment;
use crate::turn::engine::Hub;
use crate::turn::events::ReadySet;
use crate::turn::lookout::Tick;

/// Keys of the server's stop and force signals in the poller's set
/// (`usize::MAX` is the set's own wake-up); connections whose outbox it
/// watches have keys from 1 up (their ids).
const STOP: usize = usize::MAX - 1;
const FORCE: usize = usize::MAX - 2;

/// The running poller thread.
#[derive(Debug)]
pub(crate) struct PollerThread {
    thread: JoinHandle<()>,
    hub: Arc<Hub>,
}

impl PollerThread {
    pub(crate) fn start(hub: Arc<Hub>) -> Result<PollerThread> {
        register_signals(&hub).map_err(|source| Error::Signal { source })?;
        let name = "frontdesk-poller".to_string();
        let thread = {
            let hub = Arc::clone(&hub);
            thread::Builder::new()
                .name(name.clone())
                .spawn(move || run(&hub))
                .map_err(|source| Error::Spawn { name, source })?
        };
        Ok(PollerThread { thread, hub })
    }

    /// Tells the poller that the acceptor has stopped: no connection will
    /// be added, so once the last one has closed it may end.
    pub(crate) fn accepting_stopped(&self) {
        self.hub.accepting_stopped.store(true, Ordering::SeqCst);
        let _ = self.hub.poller.notify();
    }

    /// Waits for the thread, which ends when the last connection has
    /// closed after a stop, or at the force.
    pub(crate) fn join(self) {
        if self.thread.join().is_err() {
            log::error!("the poller thread panicked");
        }
    }
}

fn register_signals(hub: &Hub) -> io::Result<()> {
    let shared = &hub.shared;
    // Deleted by `run` before it returns; `Shared`, which owns them,
    // outlives the thread.
    hub.poller.add_signal(shared.stop_signal().source(), STOP)?;
    hub.poller
        .add_signal(shared.force_signal().source(), FORCE)?;
    Ok(())
}

fn run(hub: &Hub) {
    let mut events = Vec::new();
    let mut buf = ReadySet::buffer();
    let mut draining = false;
    let mut forced = false;
    let mut tick = Tick::default();
    let mut was_ticking = false;
    loop {
        let now = Moment::now();
        let next_timer = loop {
            match hub.pop_due(now) {
                Ok((due, id)) => {
                    if let Some(entry) = hub.entry(id) {
                        entry.on_timer(due, now);
                    }
                }
                Err(next) => break next,
            }
        };
        if forced {
            // The drain deadline passed: what is left is closed now.
            for entry in hub.close_registry() {
                if entry.end_by_force() {
                    Counters::bump(&hub.shared.counters.forced_closed);
                }
            }
            break;
        }
        if draining {
            let accepted_all = hub.accepting_stopped.load(Ordering::SeqCst);
            if accepted_all && !hub.closing_all.load(Ordering::SeqCst) && hub.none_in_turn() {
                // Every connection has had its last `ready` (a relay has
                // passed on every message sent before the stop): now each
                // closes, with its `close`, once it is quiet.
                hub.closing_all.store(true, Ordering::SeqCst);
                let now = Moment::now();
                for entry in hub.entries() {
                    entry.on_close_all(now);
                }
            }
            if accepted_all && hub.is_idle() {
                break;
            }
        }
        // After the drain's look above, so that these were out of their
        // turns when it was taken.
        for entry in hub.take_deferred() {
            entry.on_deferred();
        }
        let mut timeout = next_timer.map(|at| at.saturating_duration_since(Moment::now()));
        let ticking = hub.lookout.is_ticking();
        if ticking {
            if !was_ticking {
                // A spell begins: its first tick is a period from now, not
                // from the end of the last spell (a lone request's watcher
                // is usually back by then, and that tick stops the spell).
                tick = Tick::default();
            }
            let wait = tick.until_due();
            timeout = Some(timeout.map_or(wait, |timeout| timeout.min(wait)));
        }
        was_ticking = ticking;
        if let Err(error) = hub.poller.wait(&mut events, &mut buf, usize::MAX, timeout) {
            // Not expected: `polling` retries EINTR itself. Leaving would
            // strand every parked connection; the timers and the force
            // still end them.
            log::error!("waiting for readiness failed: error={error}");
            continue;
        }
        if ticking {
            hub.lookout.tick(
                &mut tick,
                || hub.has_queued_jobs(),
                || {
                    let _ = hub.ready.notify();
                },
            );
        }
        for &event in &events {
            match event.key {
                STOP => {
                    if !draining {
                        draining = true;
                        for entry in hub.entries() {
                            entry.on_shutdown();
                        }
                    }
                }
                FORCE => forced = true,
                // Room to write for an outbox no worker may be there to
                // write (see `Entry::watch_room`).
                key => {
                    if let Some(entry) = hub.entry(key as u64) {
                        entry.on_room();
                    }
                }
            }
        }
    }
    let shared = &hub.shared;
    let _ = hub.poller.delete(shared.stop_signal().source());
    let _ = hub.poller.delete(shared.force_signal().source());
    drop(hub.take_deferred());
    hub.release_jobs();
}
