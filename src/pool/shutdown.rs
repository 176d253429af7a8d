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
//! - in a channel send while the queue is full, and in the back-off wait
//!   after a resource error: both also wait on `closed`, a channel that is
//!   disconnected when the stop is raised;
//! - at the drain deadline, `force` (a second `Signal`) ends the reads and
//!   writes still waiting.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::addr::Addr;
use crate::config::{Config, TlsSetup};
use crate::net::socket::Socket;
use crate::pool::guard::run_guarded;
use crate::pool::per_ip::{IpSlot, PerIp};
use crate::reject::{RejectHandler, RejectReason, Rejected};
use crate::stats::Counters;
use crate::stream::proxy::ProxyConfig;
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
    /// The PROXY protocol, when every connection must start with its
    /// header.
    pub(crate) proxy: Option<ProxyConfig>,
    /// TLS, when every connection speaks it.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) tls: Option<TlsSetup>,
    /// The connections of each client address, when they are capped
    /// (`max_connections_per_ip`).
    per_ip: Option<Arc<PerIp>>,
    /// The reject handler, unless there is none or the server speaks TLS
    /// (a client turned away has had no handshake: a reply would reach it
    /// unencrypted).
    on_reject: Option<RejectHook>,
    stop: StopSignal,
    /// `counters.completed` when the stop signal was raised.
    completed_at_stop: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: &Config) -> io::Result<Shared> {
        Ok(Shared {
            counters: Counters::default(),
            workers: config.workers,
            drain_quiet: config.drain_quiet,
            linger_time: config.linger.time,
            proxy: config.proxy.clone(),
            tls: config.tls.clone(),
            per_ip: config.max_connections_per_ip.map(PerIp::new),
            on_reject: config
                .on_reject
                .clone()
                .filter(|_| config.tls.is_none())
                .map(RejectHook),
            stop: StopSignal::new()?,
            completed_at_stop: AtomicU64::new(0),
        })
    }

    /// Whether the per-address cap is checked when a connection is
    /// accepted: unless a PROXY header names the client, which only a
    /// worker (or a turn) reads, later.
    pub(crate) fn caps_per_ip_on_accept(&self) -> bool {
        self.proxy.is_none()
    }

    /// A place in the count of `client`'s connections, or the reason to
    /// turn it away; `Ok(None)` when the count is not capped or `client`
    /// has no IP address (a Unix socket's client).
    pub(crate) fn ip_slot(&self, client: &Addr) -> Result<Option<IpSlot>, RejectReason> {
        match &self.per_ip {
            Some(table) => table
                .take(client)
                .map_err(|_| RejectReason::MaxConnectionsPerIp),
            None => Ok(None),
        }
    }

    /// Runs the reject handler, if any, for a connection turned away; the
    /// caller counts and closes it.
    pub(crate) fn say_no(&self, socket: &Arc<Socket>, peer: &Addr, id: u64, reason: RejectReason) {
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
            forced: AtomicBool::new(false),
            close: Mutex::new(Some(close)),
            closed,
            signal: Signal::new()?,
            force: Signal::new()?,
        })
    }

    /// Raises the signal; false if it was already raised.
    fn raise(&self) -> bool {
        if self.raised.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.signal.raise();
        drop(lock(&self.close).take());
        true
    }
}
