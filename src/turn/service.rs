//! The worker's side of the turn mode: runs a [`TurnHandler`]'s `open`,
//! `ready` and `close` for a connection, and parks it between turns.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::config::CloseReason;
use crate::pool::guard::run_guarded;
use crate::pool::workers::{Admitted, Service, Worker};
use crate::sync::lock;
use crate::turn::engine::{Entry, Hub, Parked, TurnJob, Why};
use crate::turn::handler::{Next, Turn, TurnHandler};

/// How long a connection that asked to keep its worker ([`Next::Stay`])
/// waits on it for its next input before it is parked.
const STAY_WAIT: Duration = Duration::from_millis(1);

/// How many turns in a row a worker gives one connection whose input keeps
/// waiting, before it lets the other connections' turns go first.
const TURNS_IN_A_ROW: u32 = 16;

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
                // At a shutdown, a handshake under way goes on as a quiet
                // client's input does: the drain closes it once the client
                // has been quiet for the drain's quiet time.
                Why::Ready | Why::Shutdown => self.handshake(&entry, worker),
                Why::Close(CloseReason::TimedOut(_)) => {
                    entry.refuse(&"no complete TLS handshake in time")
                }
                Why::Close(CloseReason::Shutdown) => {
                    entry.refuse(&"the server shut down before it was complete")
                }
                Why::Close(reason) => entry.refuse(&format!("closed: {reason:?}")),
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
    /// Runs the TLS handshake as far as the client's records allow, then
    /// opens the connection; parks it meanwhile, so a client that is slow
    /// or silent holds no worker.
    fn handshake(&self, entry: &Arc<Entry>, worker: &Worker<Self>) {
        loop {
            match entry.advance_handshake() {
                Ok(true) => return self.open(entry, worker),
                Ok(false) => match entry.park() {
                    Ok(Parked::Yes) => return,
                    // The client's next records are there already.
                    Ok(Parked::InputWaits) => entry.begin_turn(),
                    Err(reason) => return entry.refuse(&format!("closed: {reason:?}")),
                },
                Err(error) => return entry.refuse(&error),
            }
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
                    if !(worker.others_waiting()
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
                // the readiness set, unless other connections wait.
                Ok(Parked::InputWaits) if turns < TURNS_IN_A_ROW && !worker.others_waiting() => {
                    turns += 1;
                    entry.begin_turn();
                }
                Ok(Parked::InputWaits) => return self.hub.requeue(entry),
                Err(reason) => return self.close(entry, reason),
            }
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
