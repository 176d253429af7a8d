//! The worker's side of the turn mode: runs a [`TurnHandler`]'s `open`,
//! `ready` and `close` for a connection, and parks it between turns.

use std::any::Any;
use std::cell::RefCell;
use std::fmt::Display;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::CloseReason;
use crate::pool::guard::run_guarded;

use crate::pool::queue::Job;
use crate::pool::workers::{Admitted, Service, Waited, Worker};
use crate::stream::proxy::HeaderRead;
use crate::sync::lock;
use crate::turn::engine::{Entry, Hub, Parked, TurnJob, Why};
use crate::turn::events::{RawReports, Ready, ReadySet};
use crate::turn::handler::{Next, Turn, TurnHandler};
use crate::turn::lookout::Post;

/// How long a connection that asked to keep its worker ([`Next::Stay`])
/// waits on it for its next input before it is parked.
const STAY_WAIT: Duration = Duration::from_millis(1);

/// How many turns in a row a worker gives one connection whose input keeps
/// waiting, before it lets the other connections' turns go first.
const TURNS_IN_A_ROW: u32 = 16;

/// The most reports an idle worker takes from the readiness set at once:
/// it serves one and queues the rest for the workers as they come back
/// from their turns.
const REPORTS_AT_ONCE: usize = 64;

thread_local! {
    /// An idle worker's buffers for what the readiness set reports.
    static REPORTS: RefCell<(Vec<Ready>, RawReports)> =
        RefCell::new((Vec::new(), ReadySet::buffer()));
}

/// Serves the turns of a [`TurnHandler`].
pub(crate) struct Turns<H> {
    pub(crate) handler: H,
    pub(crate) hub: Arc<Hub>,
}

impl<H: TurnHandler> Service for Turns<H> {
    /// A turn of a connection, from the poller or from whoever closed it.
    type Job = TurnJob;

    fn accepted(&self, conn: Admitted, worker: &Worker<Self>) {
        let handshaking = conn.handshake_by.is_some();
        let entry = Entry::new(conn, Arc::clone(&self.hub));
        if handshaking {
            return self.handshake(&entry, worker);
        }
        self.open(&entry, worker);
    }

    fn parks_handshakes(&self) -> bool {
        true
    }

    /// An idle worker waits in the parked connections' readiness set, so
    /// that the thread that learns a connection is ready is the one that
    /// serves it: no hand-off, no second thread woken. No more workers
    /// watch the set than there are CPUs; the others sleep until a job
    /// or the poller's tick wakes them (`lookout.rs`). A worker is
    /// counted idle after it took its post (see `pool/queue.rs`), so that
    /// a job queued meanwhile (an accepted connection, a timer's turn)
    /// wakes it, or another.
    ///
    /// A watcher takes every report (up to `REPORTS_AT_ONCE`), serves the
    /// first connection and queues the others for the workers as they
    /// come back from their turns, and wakes one for them only where a
    /// CPU is free to run it. Only where another watcher waits and a CPU
    /// is free for it does it take one report: the kernel wakes the other
    /// watcher for the next.
    fn wait(&self, worker: &Worker<Self>) -> Waited<TurnJob> {
        let lookout = &self.hub.lookout;
        let post = lookout.take_post();
        if let Some(waited) = worker.begin_wait() {
            self.leave(post);
            return waited;
        }
        let idle = worker.idle();
        if post == Post::Sleeping {
            lookout.sleep();
            idle.end_wait();
            self.leave(post);
            return Waited::Woken;
        }
        let max = if lookout.watching() > 1 && lookout.spare_cpu(self.hub.busy_workers()) {
            1
        } else {
            REPORTS_AT_ONCE
        };
        REPORTS.with(|reports| {
            let (ready, raw) = &mut *reports.borrow_mut();
            let waited = self.hub.ready.wait(ready, raw, max, None);
            idle.end_wait();
            self.leave(post);
            if let Err(error) = waited {
                // Not expected. This worker waits on the queue from now
                // on rather than spin; the others still wait here.
                log::error!("waiting for readiness failed: error={error}");
                return Waited::OnChannel;
            }
            let (mine, passed_on) = self.give_news(ready, true);
            if mine.is_some() && (passed_on || worker.others_waiting()) {
                // The turns passed on (a worker that takes one and sees
                // more wakes the next); and this wait may have taken the
                // wake-up meant for a job already in the queue.
                self.hub.left_in_queue(idle);
            }
            match mine {
                Some(job) => Waited::Job(Job::Mode(job)),
                None => Waited::Woken,
            }
        })
    }

    fn left_in_queue(&self, worker: &Worker<Self>) {
        self.hub.left_in_queue(worker.idle());
    }

    /// An open connection of the turn mode, past the drain deadline: the
    /// handler's `close` (on a worker), then closed at once.
    fn drop_job(&self, (entry, why): (Arc<Entry>, Why), on_worker: bool) {
        if on_worker {
            let reason = match why {
                Why::Close(reason) => reason,
                Why::Ready | Why::Shutdown => CloseReason::Shutdown,
            };
            self.say_goodbye(&entry, reason);
        }
        entry.abort();
    }

    fn run(&self, (entry, why): (Arc<Entry>, Why), worker: &Worker<Self>) {
        entry.begin_turn();
        if entry.is_handshaking() {
            return match why {
                // At a shutdown, a header or handshake under way goes on
                // as a quiet client's input does: the drain closes it once
                // the client has been quiet for the drain's quiet time.
                Why::Ready | Why::Shutdown => self.handshake(&entry, worker),
                Why::Close(CloseReason::TimedOut(_)) => {
                    self.refuse(&entry, &"not complete in time")
                }
                Why::Close(CloseReason::Shutdown) => {
                    self.refuse(&entry, &"the server shut down before it was complete")
                }
                Why::Close(reason) => self.refuse(&entry, &format!("closed: {reason:?}")),
            };
        }
        match why {
            Why::Ready => self.ready(&entry, worker),
            Why::Shutdown => {
                // What the client sent before the stop is answered; the
                // connection is closed once every one has had this turn.
                match self.run_ready(&entry) {
                    Some(Next::Park | Next::Stay) => self.after_turn(&entry, worker),
                    Some(Next::Close) => self.close(&entry, CloseReason::Done),
                    None => self.close(&entry, CloseReason::Failed),
                }
            }
            Why::Close(reason) => self.close(&entry, reason),
        }
    }
}

impl<H: TurnHandler> Turns<H> {
    /// Lets the connection in as far as the client's bytes allow: reads
    /// its PROXY header, takes its place in its address's count, runs its
    /// TLS handshake, then opens it. Parks it in between, so a client
    /// that is slow or silent holds no worker; the timer of the
    /// connection's deadline (`Admitted::handshake_by`) bounds each step.
    fn handshake(&self, entry: &Arc<Entry>, worker: &Worker<Self>) {
        loop {
            if self.awaits_header(entry) {
                match self.read_header(entry) {
                    Ok(true) => {
                        if !self.let_in(entry) {
                            return;
                        }
                    }
                    Ok(false) if self.park_unopened(entry) => return,
                    // More of the header is there already.
                    Ok(false) => continue,
                    Err(error) => return self.refuse(entry, &error),
                }
            }
            if !entry.is_handshaking() {
                return self.open(entry, worker);
            }
            match entry.advance_handshake() {
                Ok(true) => return self.open(entry, worker),
                Ok(false) if self.park_unopened(entry) => return,
                // The client's next records are there already.
                Ok(false) => {}
                Err(error) => return self.refuse(entry, &error),
            }
        }
    }

    /// Parks a connection that waits for more of its header or handshake:
    /// true once it is parked (or refused), false when input waits for it
    /// and its worker goes on.
    fn park_unopened(&self, entry: &Arc<Entry>) -> bool {
        match entry.park() {
            Ok(Parked::Yes) => true,
            Ok(Parked::InputWaits) => {
                entry.begin_turn();
                false
            }
            Err(reason) => {
                self.refuse(entry, &format!("closed: {reason:?}"));
                true
            }
        }
    }

    /// Whether the connection's PROXY header is still to read.
    fn awaits_header(&self, entry: &Entry) -> bool {
        let setup = self.hub.shared.listener(entry.listener);
        setup.proxy.is_some() && entry.peer_addr.header().is_none()
    }

    /// Takes what has arrived of the PROXY header, without waiting: true
    /// once it is complete, and recorded. What was taken of an unfinished
    /// one waits in the handler's state slot, empty until `open`.
    fn read_header(&self, entry: &Entry) -> io::Result<bool> {
        let socket = entry.socket()?;
        let mut state = lock(&entry.state);
        if !state.as_ref().is_some_and(|state| state.is::<HeaderRead>()) {
            *state = Some(Box::new(HeaderRead::default()));
        }
        let read = state
            .as_mut()
            .and_then(|state| state.downcast_mut::<HeaderRead>())
            .expect("put there above");
        match read.advance(&socket, entry.peer_addr.socket_peer())? {
            Some(header) => {
                *state = None;
                entry.peer_addr.set_header(header);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Once the header names the client: takes the connection's place in
    /// its address's count, or turns it away (false) when the address
    /// holds too many; then the TLS handshake, if any, is next, with its
    /// own time from now.
    fn let_in(&self, entry: &Arc<Entry>) -> bool {
        let shared = &self.hub.shared;
        let client = entry.peer_addr.get();
        match shared.ip_slot(&client) {
            Ok(Some(slot)) => entry.hold_ip_slot(slot),
            Ok(None) => {}
            Err(reason) => {
                if let Ok(socket) = entry.socket() {
                    shared.say_no(&socket, (&client, entry.id), entry.listener, reason);
                }
                let counted = &shared.counters.rejected_max_connections_per_ip;
                entry.refuse(&reason, counted);
                return false;
            }
        }
        let handshake_by = shared
            .listener(entry.listener)
            .tls
            .as_ref()
            .map(|tls| Instant::now() + tls.handshake_time);
        entry.header_done(handshake_by);
        true
    }

    /// Closes a connection before `open`, counted as refused for what it
    /// was still waiting for: its PROXY header, or its TLS handshake.
    fn refuse(&self, entry: &Arc<Entry>, why: &dyn Display) {
        let counters = &self.hub.shared.counters;
        if self.awaits_header(entry) {
            let why = format!("no valid PROXY header: {why}");
            entry.refuse(&why, &counters.rejected_proxy);
        } else {
            let why = format!("TLS handshake failed: {why}");
            entry.refuse(&why, &counters.rejected_tls);
        }
    }

    /// `open`, then a first turn for what the client has sent already.
    fn open(&self, entry: &Arc<Entry>, worker: &Worker<Self>) {
        let state = self.call(entry, "open", |handler, turn| handler.open(turn));
        match state {
            Some(state) => {
                *lock(&entry.state) = Some(Box::new(state));
                // A client usually sends its first request right after
                // connecting: when it is already there, it is answered now,
                // without a trip through the readiness set.
                self.ready(entry, worker);
            }
            // Nothing to close: the handler never had a state.
            None => entry.finish(),
        }
    }

    /// Turns for as long as input waits for them, then parks.
    fn ready(&self, entry: &Arc<Entry>, worker: &Worker<Self>) {
        let mut turns = 1;
        loop {
            match self.run_ready(entry) {
                Some(Next::Park) => {}
                Some(Next::Stay) => {
                    // Keep the worker while nobody else waits for one and
                    // input follows promptly; otherwise park. A connection
                    // asked to close (`Peer::close`, a full outbox) or past
                    // one of its limits parks, where that is acted on.
                    if !(self.others_waiting(worker)
                        || entry.must_park()
                        || !entry.wait_readable(STAY_WAIT))
                    {
                        continue;
                    }
                }
                Some(Next::Close) => return self.close(entry, CloseReason::Done),
                None => return self.close(entry, CloseReason::Failed),
            }
            match entry.park() {
                Ok(Parked::Yes) => return,
                // A busy client's next request is there: no trip through
                // the readiness set, unless other connections wait in the
                // queue. The set itself is looked at only when the turns in
                // a row run out (a system call that, made at every turn,
                // cost a busy 8-client echo about a tenth of its CPU): then
                // what it reports goes into the queue ahead of this
                // connection, so a parked one waits 16 turns at most.
                Ok(Parked::InputWaits) if turns < TURNS_IN_A_ROW && !worker.others_waiting() => {
                    turns += 1;
                    entry.begin_turn();
                }
                Ok(Parked::InputWaits) => {
                    self.take_unwatched_reports(worker);
                    return self.hub.requeue(entry);
                }
                Err(reason) => return self.close(entry, reason),
            }
        }
    }

    /// Whether another connection waits for a worker: a job in the queue,
    /// or a report in the readiness set while no idle worker waits there
    /// to take it (see [`take_unwatched_reports`](Self::take_unwatched_reports)).
    fn others_waiting(&self, worker: &Worker<Self>) -> bool {
        worker.others_waiting() || self.take_unwatched_reports(worker)
    }

    /// When no idle worker waits in the readiness set, this worker, busy
    /// with a connection whose input keeps coming, takes the set's
    /// reports itself, without waiting, and queues their turns: else,
    /// with every worker busy so, a parked connection would never be
    /// reported (nobody watches the set but idle workers). Returns
    /// whether it queued any.
    fn take_unwatched_reports(&self, worker: &Worker<Self>) -> bool {
        if self.hub.lookout.watching() > 0 {
            return false;
        }
        REPORTS.with(|reports| {
            let (ready, raw) = &mut *reports.borrow_mut();
            let max = REPORTS_AT_ONCE;
            if let Err(error) = self.hub.ready.wait(ready, raw, max, Some(Duration::ZERO)) {
                log::error!("looking for readiness failed: error={error}");
                return false;
            }
            let (_, queued) = self.give_news(ready, false);
            if queued {
                // A worker may have come back meanwhile and waits now.
                self.hub.left_in_queue(worker.idle());
            }
            queued
        })
    }

    /// Gives each connection the readiness set reported its news
    /// (`Entry::on_ready`). Of the turns that gives, the first is returned
    /// for the caller to run when it `keeps` one; the others are queued
    /// without waking anyone (the caller wakes one worker for them all).
    /// Also says whether any was queued.
    fn give_news(&self, reports: &[Ready], keeps: bool) -> (Option<TurnJob>, bool) {
        let mut mine = None;
        let mut queued = false;
        for &report in reports {
            let Some(entry) = self.hub.entry(report.key as u64) else {
                continue;
            };
            if let Some(why) = entry.on_ready(report) {
                if keeps && mine.is_none() {
                    mine = Some((entry, why));
                } else {
                    self.hub.dispatch_quietly(&entry, why);
                    queued = true;
                }
            }
        }
        (mine, queued)
    }

    /// Leaves an idle worker's post; a set left unwatched while others
    /// sleep makes the poller tick.
    fn leave(&self, post: Post) {
        if self.hub.lookout.leave(post) {
            self.hub.keep_ticking();
        }
    }

    /// One `ready` call; `None` when it failed or panicked.
    fn run_ready(&self, entry: &Arc<Entry>) -> Option<Next> {
        let mut state = lock(&entry.state);
        let state = state.as_mut()?.downcast_mut::<H::State>()?;
        self.call(entry, "ready", |handler, turn| handler.ready(state, turn))
    }

    /// Parks the connection after a turn (or goes on with it while input
    /// waits), or ends it if something asked for that meanwhile (or the
    /// shutdown is closing every connection).
    fn after_turn(&self, entry: &Arc<Entry>, worker: &Worker<Self>) {
        match entry.park() {
            Ok(Parked::Yes) => {}
            Ok(Parked::InputWaits) => {
                entry.begin_turn();
                self.ready(entry, worker);
            }
            Err(reason) => self.close(entry, reason),
        }
    }

    /// The last turn: `close`, then the outbox is flushed and the
    /// connection closed gently.
    fn close(&self, entry: &Arc<Entry>, reason: CloseReason) {
        self.say_goodbye(entry, reason);
        entry.finish();
    }

    /// Runs the handler's `close`, once: it takes the state, which only a
    /// connection whose `open` succeeded has.
    fn say_goodbye(&self, entry: &Arc<Entry>, reason: CloseReason) {
        let state = lock(&entry.state).take();
        if let Some(state) = state.and_then(downcast::<H::State>) {
            self.call(entry, "close", |handler, turn| {
                handler.close(state, turn, reason);
                Ok(())
            });
        }
    }

    fn call<T>(
        &self,
        entry: &Arc<Entry>,
        what: &str,
        call: impl FnOnce(&H, &mut Turn<'_>) -> std::io::Result<T>,
    ) -> Option<T> {
        let shared = &self.hub.shared;
        let counters = &shared.counters;
        let mut turn = Turn { entry, shared };
        run_guarded(
            what,
            &entry.peer_addr,
            entry.id,
            counters,
            Some(&counters.handler_errors),
            || call(&self.handler, &mut turn),
        )
    }
}

fn downcast<S: 'static>(state: Box<dyn Any + Send>) -> Option<S> {
    state.downcast::<S>().ok().map(|state| *state)
}
