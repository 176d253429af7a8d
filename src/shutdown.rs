//! The stop signal: how a shutdown request reaches a blocked acceptor.
//!
//! The acceptor can be blocked in three places, and each has its own wake-up:
//! in `accept(2)`, in a channel send while the queue is full, and in the
//! back-off wait after a resource error (both wait on `closed`, a channel
//! that is disconnected when the signal is raised).
//!
//! A blocking `accept` is woken by `shutdown(SHUT_RD)` on the listener where
//! the system supports it (Linux), and otherwise by a loopback connection to
//! our own listener, the portable way. The connection alone is not enough:
//! with `SO_REUSEPORT` the kernel may hand it to another server's listener
//! on the same port.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::socket;
use crate::stats::Counters;

/// How long the wake-up connection may take. A listener on this machine
/// answers at once unless its backlog is full, and then `accept` is not
/// blocked anyway.
const WAKE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// State shared by the acceptor, the workers, every `Connection` and every
/// handle of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    pub(crate) workers: usize,
    stop: StopSignal,
    /// `counters.completed` when the stop signal was raised.
    completed_at_stop: AtomicU64,
}

impl Shared {
    pub(crate) fn new(local_addr: SocketAddr, workers: usize) -> Shared {
        Shared {
            counters: Counters::default(),
            workers,
            stop: StopSignal::new(local_addr),
            completed_at_stop: AtomicU64::new(0),
        }
    }

    /// Raises the stop signal and wakes the acceptor.
    pub(crate) fn stop(&self) {
        if self.raise() {
            self.stop.wake_accept();
        }
    }

    /// Raises the stop signal once the acceptor has already left its loop.
    pub(crate) fn stop_without_wake(&self) {
        self.raise();
    }

    fn raise(&self) -> bool {
        let completed = self.counters.completed.load(Ordering::SeqCst);
        let raised = self.stop.raise();
        if raised {
            self.completed_at_stop.store(completed, Ordering::SeqCst);
        }
        raised
    }

    /// Connections completed since the stop signal was raised.
    pub(crate) fn completed_since_stop(&self) -> u64 {
        let now = self.counters.completed.load(Ordering::SeqCst);
        now.saturating_sub(self.completed_at_stop.load(Ordering::SeqCst))
    }

    /// Lends the stop signal the listener so that it can interrupt a
    /// blocking `accept`. Must be called before the acceptor first looks at
    /// `is_stopping`. (Shared rather than duplicated: a second descriptor
    /// could be the one that `EMFILE` leaves no room for.)
    pub(crate) fn lend_listener(&self, listener: &Arc<TcpListener>) {
        *lock(&self.stop.listener) = Some(Arc::clone(listener));
    }

    /// Takes back the listener lent by `lend_listener`: the port is free
    /// only once the last reference is dropped.
    pub(crate) fn return_listener(&self) {
        drop(lock(&self.stop.listener).take());
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.raised.load(Ordering::SeqCst)
    }

    /// A receiver that becomes ready (disconnected) once the server stops.
    pub(crate) fn stopped(&self) -> &Receiver<()> {
        &self.stop.closed
    }

    /// Whether `peer` is the connection made by `stop` to wake the acceptor.
    pub(crate) fn is_wake_up(&self, peer: SocketAddr) -> bool {
        self.is_stopping() && *lock(&self.stop.waker) == Some(peer)
    }

    /// Marks the drain deadline as passed: workers close queued
    /// connections unserved from now on.
    pub(crate) fn force(&self) {
        self.stop.forced.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_forced(&self) -> bool {
        self.stop.forced.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct StopSignal {
    raised: AtomicBool,
    forced: AtomicBool,
    /// Dropped when the signal is raised, which disconnects `closed`.
    close: Mutex<Option<Sender<()>>>,
    closed: Receiver<()>,
    /// Where the wake-up connection goes.
    wake_addr: SocketAddr,
    /// The local address of the wake-up connection, so that the acceptor
    /// can tell it from a real client accepted at the same moment.
    waker: Mutex<Option<SocketAddr>>,
    /// The listener, while the acceptor runs.
    listener: Mutex<Option<Arc<TcpListener>>>,
}

impl StopSignal {
    fn new(local_addr: SocketAddr) -> StopSignal {
        let (close, closed) = crossbeam_channel::bounded(0);
        StopSignal {
            raised: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            close: Mutex::new(Some(close)),
            closed,
            wake_addr: wake_addr(local_addr),
            waker: Mutex::new(None),
            listener: Mutex::new(None),
        }
    }

    /// Raises the signal; false if it was already raised.
    fn raise(&self) -> bool {
        if self.raised.swap(true, Ordering::SeqCst) {
            return false;
        }
        drop(lock(&self.close).take());
        true
    }

    fn wake_accept(&self) {
        if let Some(listener) = lock(&self.listener).take() {
            if socket::interrupt_accept(&listener).is_ok() {
                return;
            }
        }
        let result =
            socket::connect_reporting_source(self.wake_addr, WAKE_CONNECT_TIMEOUT, |source| {
                *lock(&self.waker) = Some(source);
            });
        match result {
            Ok(_) => {}
            // The acceptor was not in `accept` and has already closed the
            // listener: nothing to wake.
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                log::debug!("acceptor already stopped: addr={}", self.wake_addr);
            }
            Err(error) => {
                // The acceptor still stops at its next accept; say why it may be late.
                log::warn!(
                    "could not wake the acceptor: addr={} error={error}",
                    self.wake_addr
                );
            }
        }
    }
}

/// The address to connect to in order to reach a listener bound to `addr`:
/// connecting to an unspecified address (`0.0.0.0`, `[::]`) fails on
/// Windows, so use loopback of the same family instead.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Locks a mutex that guards plain data, ignoring poisoning: no code holds
/// these locks across anything that can panic half-way.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a graceful shutdown from any thread.
///
/// Get one from [`Server::stopper`](crate::Server::stopper) or
/// [`ServerHandle::stopper`](crate::ServerHandle::stopper) and hand it to a
/// signal handler or another thread. [`stop`](Stopper::stop) returns at
/// once; the thread that owns the server ([`Server::run`](crate::Server::run)
/// or [`ServerHandle::join`](crate::ServerHandle::join)) carries out the
/// shutdown sequence and returns its report.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = frontdesk::Server::bind("127.0.0.1:0")?;
/// let stopper = server.stopper();
/// std::thread::spawn(move || stopper.stop());
/// let report = server.run(|_: &mut frontdesk::Connection| Ok(()))?;
/// assert_eq!(report.forced, 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl Stopper {
    pub(crate) fn new(shared: Arc<Shared>) -> Stopper {
        Stopper { shared }
    }

    /// Asks the server to shut down gracefully, and returns without waiting
    /// for the shutdown.
    ///
    /// On Linux it returns at once. Elsewhere it wakes the acceptor with a
    /// connection to the server's own port, which may take up to a second
    /// when the listen backlog is full. Calling it again, or after the
    /// server stopped, does nothing.
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Whether a shutdown has been asked for.
    pub fn is_stopping(&self) -> bool {
        self.shared.is_stopping()
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    #[test]
    fn wake_up_connection_reaches_accept_and_is_recognised() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let shared = Shared::new(listener.local_addr().unwrap(), 1);
        // Nothing lent: `stop` must fall back to the portable wake-up
        // connection, which Linux otherwise never uses.
        let accepting = thread::spawn(move || listener.accept().map(|(_, peer)| peer));
        shared.stop();
        let peer = accepting.join().unwrap().unwrap();
        assert!(shared.is_wake_up(peer));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stop_interrupts_a_blocked_accept_on_linux() {
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let shared = Shared::new(listener.local_addr().unwrap(), 1);
        shared.lend_listener(&listener);
        let accepting = {
            let listener = Arc::clone(&listener);
            thread::spawn(move || listener.accept().map(|(_, peer)| peer))
        };
        shared.stop();
        // Whether it was blocked already or calls accept afterwards, it
        // fails instead of waiting for a client.
        assert!(accepting.join().unwrap().is_err());
    }

    #[test]
    fn wake_addr_maps_unspecified_to_loopback() {
        let v4: SocketAddr = "0.0.0.0:7878".parse().unwrap();
        let v6: SocketAddr = "[::]:7878".parse().unwrap();
        let real: SocketAddr = "127.0.0.2:7878".parse().unwrap();
        assert_eq!(wake_addr(v4), "127.0.0.1:7878".parse().unwrap());
        assert_eq!(wake_addr(v6), "[::1]:7878".parse().unwrap());
        assert_eq!(wake_addr(real), real);
    }
}
