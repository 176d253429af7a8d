//! The stop signal: how a shutdown request reaches every thread that waits.
//!
//! A server's threads wait in three kinds of places, and the stop reaches
//! each of them:
//!
//! - in `poll(2)`, for a socket (the acceptor for its listener, a worker
//!   for its client): `stop` is a [`Signal`], a descriptor that becomes
//!   readable for good when raised, polled next to the socket. The
//!   listener itself is never touched, so a listener shared with another
//!   process or a `try_clone` keeps listening for its other owners;
//! - for room in the pool (the `Handler` mode's overload policies `Block`
//!   and `Wait`), and in the back-off wait after a resource error: both
//!   also wait on `closed`, a channel that is disconnected when the stop
//!   is raised;
//! - at the drain deadline, `force` (a second `Signal`) ends the reads and
//!   writes still waiting.
//!
//! It also holds what can be changed while the server runs
//! (`ServerControl`): whether accepting is paused, and the connection
//! caps. A paused acceptor waits on `closed` too, and on the resume's own
//! channel: no timer, no polling.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};

use crate::addr::Addr;
use crate::config::{Config, ListenerSetup};
use crate::net::socket::Socket;
use crate::pool::guard::run_guarded;
use crate::pool::per_ip::{IpSlot, PerIp};
use crate::reject::{RejectHandler, RejectReason, Rejected};
use crate::stats::{Counters, Stats};
use crate::stream::wait::{Signal, Stopping};
use crate::sync::lock;

/// State shared by the acceptor, the workers, every `Connection` and every
/// handle of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    pub(crate) workers: usize,
    /// During a shutdown, how long a read waits for more input before it
    /// reports end of stream.
    pub(crate) drain_quiet: Duration,
    /// How long a close may wait for the client (`linger_time`).
    pub(crate) linger_time: Duration,
    /// The listeners, in the order they were added: each one's PROXY
    /// protocol and TLS settings, and what its connections see of it.
    listeners: Box<[ListenerSetup]>,
    /// Connections accepted through each listener (same order).
    accepted_by_listener: Box<[AtomicU64]>,
    /// The connections of each client address, while they are capped
    /// (`max_connections_per_ip`); the table exists even when they are
    /// not, so that a cap can be switched on while the server runs.
    per_ip: Arc<PerIp>,
    /// `max_connections` as set on the builder or the control; 0 when not
    /// set (0 is never a valid cap).
    max_connections: AtomicUsize,
    /// The cap when `max_connections` is not set: 0 (none) in the
    /// `Handler` mode, `TURN_MAX_CONNECTIONS` in the turn mode.
    default_max_connections: AtomicUsize,
    pause: Pause,
    /// The reject handler, if any. It is not run for a connection of a
    /// TLS listener (a client turned away has had no handshake: a reply
    /// would reach it unencrypted).
    on_reject: Option<RejectHook>,
    stop: StopSignal,
    /// `counters.completed` when the stop signal was raised.
    completed_at_stop: AtomicU64,
    /// A token put here each time a connection ends (at most one waits):
    /// what an acceptor waiting for room in the pool wakes on. It then
    /// counts again, so a token left from before costs one look.
    room: (Sender<()>, Receiver<()>),
}

impl Shared {
    /// `listeners` has at least one (the builder checks it).
    pub(crate) fn new(config: &Config, listeners: Vec<ListenerSetup>) -> io::Result<Shared> {
        debug_assert!(!listeners.is_empty());
        Ok(Shared {
            counters: Counters::default(),
            workers: config.workers,
            drain_quiet: config.drain_quiet,
            linger_time: config.linger.time,
            accepted_by_listener: listeners.iter().map(|_| AtomicU64::new(0)).collect(),
            listeners: listeners.into_boxed_slice(),
            per_ip: PerIp::new(config.max_connections_per_ip),
            max_connections: AtomicUsize::new(config.max_connections.unwrap_or(0)),
            default_max_connections: AtomicUsize::new(0),
            pause: Pause::new(),
            on_reject: config.on_reject.clone().map(RejectHook),
            stop: StopSignal::new()?,
            completed_at_stop: AtomicU64::new(0),
            room: crossbeam_channel::bounded(1),
        })
    }

    /// Counts an open connection out (served, or closed unserved), and
    /// tells an acceptor waiting for room in the pool to count again.
    pub(crate) fn connection_ended(&self) {
        self.counters.open.fetch_sub(1, Ordering::SeqCst);
        let _ = self.room.0.try_send(());
    }

    /// Gets a token each time a connection ends (see `connection_ended`).
    pub(crate) fn room_freed(&self) -> &Receiver<()> {
        &self.room.1
    }

    /// The listener at `index` (in the order added).
    pub(crate) fn listener(&self, index: usize) -> &ListenerSetup {
        &self.listeners[index]
    }

    /// Every listener, in the order added.
    pub(crate) fn listeners(&self) -> &[ListenerSetup] {
        &self.listeners
    }

    /// Counts a connection accepted through listener `index`.
    pub(crate) fn count_accepted(&self, index: usize) {
        self.accepted_by_listener[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections accepted through each listener, in the order added.
    pub(crate) fn accepted_by_listener(&self) -> Vec<u64> {
        let counts = self.accepted_by_listener.iter();
        counts.map(|count| count.load(Ordering::Relaxed)).collect()
    }

    /// Whether the per-address cap is checked when a connection of
    /// `listener` is accepted: unless a PROXY header names the client,
    /// which only a worker (or a turn) reads, later.
    pub(crate) fn caps_per_ip_on_accept(&self, listener: usize) -> bool {
        self.listener(listener).proxy.is_none()
    }

    /// A place in the count of `client`'s connections, or the reason to
    /// turn it away; `Ok(None)` when the count is not capped or `client`
    /// has no IP address (a Unix socket's client).
    pub(crate) fn ip_slot(&self, client: &Addr) -> Result<Option<IpSlot>, RejectReason> {
        self.per_ip
            .take(client)
            .map_err(|_| RejectReason::MaxConnectionsPerIp)
    }

    /// The cap on the connections one address holds, `None` for none.
    pub(crate) fn max_connections_per_ip(&self) -> Option<usize> {
        self.per_ip.max()
    }

    /// Changes the per-address cap for the connections let in from now
    /// on (`max` is never `Some(0)`: the caller checks).
    pub(crate) fn set_max_connections_per_ip(&self, max: Option<usize>) {
        self.per_ip.set_max(max);
    }

    /// The cap on the connections held at once, `None` for none: the one
    /// set, or else the mode's default.
    pub(crate) fn max_connections(&self) -> Option<usize> {
        match self.max_connections.load(Ordering::Relaxed) {
            0 => match self.default_max_connections.load(Ordering::Relaxed) {
                0 => None,
                max => Some(max),
            },
            max => Some(max),
        }
    }

    /// Changes the cap for the connections accepted from now on; `None`
    /// goes back to the mode's default (`max` is never `Some(0)`).
    pub(crate) fn set_max_connections(&self, max: Option<usize>) {
        debug_assert_ne!(max, Some(0));
        self.max_connections
            .store(max.unwrap_or(0), Ordering::Relaxed);
    }

    /// Sets the cap that applies while none is set (the turn mode has one).
    pub(crate) fn set_default_max_connections(&self, max: usize) {
        self.default_max_connections.store(max, Ordering::Relaxed);
    }

    /// Pauses accepting: from the moment this returns, the acceptor
    /// starts no `accept` until `resume`. Pausing again does nothing.
    pub(crate) fn pause(&self) {
        let mut paused = lock(&self.pause.paused);
        *paused = true;
        self.pause.is_paused.store(true, Ordering::SeqCst);
    }

    /// Resumes accepting, and wakes the acceptor if it waits paused.
    pub(crate) fn resume(&self) {
        let mut paused = lock(&self.pause.paused);
        *paused = false;
        self.pause.is_paused.store(false, Ordering::SeqCst);
        // At most one wake-up waits; a stale one costs the acceptor one
        // look at the flag.
        let _ = self.pause.wake.try_send(());
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.pause.is_paused.load(Ordering::SeqCst)
    }

    /// Runs `accept` unless accepting is paused (`None` then). The flag is
    /// read under the lock `pause` takes, and `accept` runs under it too
    /// (it never waits: the listeners are non-blocking), so a `pause` that
    /// has returned is never overtaken by an accept that read the flag
    /// before it.
    pub(crate) fn unless_paused<T>(&self, accept: impl FnOnce() -> T) -> Option<T> {
        let paused = lock(&self.pause.paused);
        if *paused {
            return None;
        }
        let accepted = accept();
        drop(paused);
        Some(accepted)
    }

    /// Waits, using no CPU, until accepting is resumed or the server
    /// stops (the caller looks again at both).
    pub(crate) fn wait_resumed(&self) {
        let mut select = Select::new();
        let woken = select.recv(&self.pause.woken);
        let stopped = select.recv(&self.stop.closed);
        let operation = select.select();
        if operation.index() == woken {
            let _ = operation.recv(&self.pause.woken);
        } else {
            debug_assert_eq!(operation.index(), stopped);
            let _ = operation.recv(&self.stop.closed);
        }
    }

    /// A snapshot of the counters, and of the state the control changes.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot(self.workers);
        stats.paused = self.is_paused();
        stats.max_connections = self.max_connections();
        stats.max_connections_per_ip = self.max_connections_per_ip();
        stats
    }

    /// Runs the reject handler, if any, for a connection of `listener`
    /// turned away (unless that listener speaks TLS); the caller counts
    /// and closes it.
    pub(crate) fn say_no(
        &self,
        socket: &Arc<Socket>,
        (peer, id): (&Addr, u64),
        listener: usize,
        reason: RejectReason,
    ) {
        if self.listener(listener).tls.is_some() {
            return;
        }
        if let Some(RejectHook(handler)) = &self.on_reject {
            let mut rejected = Rejected::new(Arc::clone(socket), peer.clone(), id, reason);
            run_guarded("reject handler", peer, id, &self.counters, None, || {
                handler.reject(&mut rejected)
            });
        }
    }

    /// Raises the stop signal: the acceptor stops accepting, and reads
    /// start to drain (see `Connection`). Raising it again does nothing.
    pub(crate) fn stop(&self) {
        let completed = self.counters.completed.load(Ordering::SeqCst);
        if self.stop.raise() {
            self.completed_at_stop.store(completed, Ordering::SeqCst);
        }
    }

    /// Connections completed since the stop signal was raised.
    pub(crate) fn completed_since_stop(&self) -> u64 {
        let now = self.counters.completed.load(Ordering::SeqCst);
        now.saturating_sub(self.completed_at_stop.load(Ordering::SeqCst))
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.raised.load(Ordering::SeqCst)
    }

    /// How long ago the stop signal was raised; zero before.
    pub(crate) fn stopped_for(&self) -> Duration {
        self.stop
            .raised_at
            .get()
            .map_or(Duration::ZERO, Instant::elapsed)
    }

    /// A receiver that becomes ready (disconnected) once the server stops.
    pub(crate) fn stopped(&self) -> &Receiver<()> {
        &self.stop.closed
    }

    /// The descriptor form of the stop signal, for `poll(2)`.
    pub(crate) fn stop_signal(&self) -> &Signal {
        &self.stop.signal
    }

    /// Marks the drain deadline as passed: reads and writes still waiting
    /// fail, and workers close queued connections unserved from now on.
    pub(crate) fn force(&self) {
        self.stop.forced.store(true, Ordering::SeqCst);
        self.stop.force.raise();
    }

    pub(crate) fn is_forced(&self) -> bool {
        self.stop.forced.load(Ordering::SeqCst)
    }

    /// The descriptor form of the force signal, for `poll(2)`.
    pub(crate) fn force_signal(&self) -> &Signal {
        &self.stop.force
    }
}

impl Stopping for Shared {
    fn is_stopping(&self) -> bool {
        Shared::is_stopping(self)
    }

    fn stop_signal(&self) -> &Signal {
        Shared::stop_signal(self)
    }

    fn force_signal(&self) -> &Signal {
        Shared::force_signal(self)
    }

    fn drain_quiet(&self) -> Duration {
        self.drain_quiet
    }
}

/// Whether accepting is paused, and the wake-up of a paused acceptor.
#[derive(Debug)]
struct Pause {
    paused: Mutex<bool>,
    /// `paused`, for readers that take no lock (stats).
    is_paused: AtomicBool,
    /// Holds at most one wake-up: `resume` never waits.
    wake: Sender<()>,
    woken: Receiver<()>,
}

impl Pause {
    fn new() -> Pause {
        let (wake, woken) = crossbeam_channel::bounded(1);
        Pause {
            paused: Mutex::new(false),
            is_paused: AtomicBool::new(false),
            wake,
            woken,
        }
    }
}

/// The user's reject handler.
struct RejectHook(Arc<dyn RejectHandler>);

impl fmt::Debug for RejectHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<handler>")
    }
}

#[derive(Debug)]
struct StopSignal {
    raised: AtomicBool,
    /// When `raised` was set: a read that could not see the stop at once
    /// (its brief wait in `recv`) counts the drain's quiet time from it.
    raised_at: OnceLock<Instant>,
    forced: AtomicBool,
    /// Dropped when the signal is raised, which disconnects `closed`.
    close: Mutex<Option<Sender<()>>>,
    closed: Receiver<()>,
    signal: Signal,
    force: Signal,
}

impl StopSignal {
    fn new() -> io::Result<StopSignal> {
        let (close, closed) = crossbeam_channel::bounded(0);
        Ok(StopSignal {
            raised: AtomicBool::new(false),
            raised_at: OnceLock::new(),
            forced: AtomicBool::new(false),
            close: Mutex::new(Some(close)),
            closed,
            signal: Signal::new()?,
            force: Signal::new()?,
        })
    }

    /// Raises the signal; false if it was already raised.
    fn raise(&self) -> bool {
        // Set first: whoever sees `raised` finds the time too.
        let _ = self.raised_at.set(Instant::now());
        if self.raised.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.signal.raise();
        drop(lock(&self.close).take());
        true
    }
}
