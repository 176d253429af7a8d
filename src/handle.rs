//! `ServerHandle`: watching and stopping a server that runs in the
//! background, and the `ShutdownReport` it ends with.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::addr::Addr;
use crate::error::{Error, Result};
use crate::net::listener::Listener;
use crate::pool::shutdown::Shared;
use crate::stats::{listeners_to_prometheus, Stats};

/// What a graceful shutdown did, from [`ServerHandle::shutdown`],
/// [`ServerHandle::join`] or [`Server::run`](crate::Server::run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections that finished on their own between the stop request and
    /// the drain deadline: those active or queued at the stop, and any
    /// accepted while the acceptor was stopping.
    pub drained: u64,
    /// Active connections whose reads and writes were ended by force at
    /// the drain deadline (they were still closed gently).
    pub forced: u64,
    /// Queued connections closed unserved at the drain deadline (gently:
    /// the client sees an end of stream, not a reset).
    pub dropped: u64,
    /// Workers whose handler did not return even after its connection was
    /// closed (it ignores errors and never returns). They are left running
    /// rather than waited for forever; anything else is joined.
    pub stuck_workers: usize,
    /// Time from the moment the server stopped accepting to the end of the
    /// shutdown.
    pub elapsed: Duration,
    /// The server's counters at the end, when every accepted connection
    /// has been served, rejected or dropped, except those of stuck workers:
    /// `accepted == completed + rejected.total() + dropped + stuck_workers`.
    pub stats: Stats,
}

/// A server running in the background, from [`Server::spawn`](crate::Server::spawn).
///
/// The handle is `Send` and `Sync`. Dropping it shuts the server down
/// gracefully, as [`shutdown`](ServerHandle::shutdown) does, and waits for
/// it: keep it for as long as the server should run.
///
/// # Shutdown
///
/// [`shutdown`](ServerHandle::shutdown) (or a [`ServerControl`]) stops the
/// server in this order:
///
/// 1. stop accepting and close the listener at once: the port is free for
///    a new server;
/// 2. drain: the workers serve the queued connections and finish the
///    active ones until the drain deadline (`shutdown_timeout` after step
///    1). Every byte a client sent before the stop is read by its handler:
///    a read returns what has arrived, and reports end of stream only once
///    the client has sent nothing for
///    [`drain_quiet_time`](crate::ServerBuilder::drain_quiet_time).
///    Handlers can also see the drain through
///    [`Connection::is_shutting_down`](crate::Connection::is_shutting_down).
///    In the turn mode ([`Server::spawn_turns`](crate::Server::spawn_turns)),
///    each parked connection first gets a last
///    [`ready`](crate::TurnHandler::ready) turn; once none is in a turn,
///    each is closed (its [`close`](crate::TurnHandler::close) runs with
///    [`CloseReason::Shutdown`](crate::CloseReason::Shutdown)) as soon as
///    its outbox is flushed and its client has been quiet for the same
///    quiet time;
/// 3. at the deadline, reads and writes still waiting fail, and queued
///    connections (in the turn mode, every connection left) are closed;
/// 4. every connection, however it ended, is closed gently (see
///    [`linger_time`](crate::ServerBuilder::linger_time)); lingering
///    closes get until the drain deadline, or half a second after the
///    force;
/// 5. join every thread and return a [`ShutdownReport`].
#[must_use = "dropping the handle shuts the server down"]
#[derive(Debug)]
pub struct ServerHandle {
    thread: Option<JoinHandle<Result<ShutdownReport>>>,
    shared: Arc<Shared>,
}

impl ServerHandle {
    pub(crate) fn new(
        thread: JoinHandle<Result<ShutdownReport>>,
        shared: Arc<Shared>,
    ) -> ServerHandle {
        ServerHandle {
            thread: Some(thread),
            shared,
        }
    }

    /// The address the server listens on; with several listeners, the
    /// first one's (see [`local_addrs`](ServerHandle::local_addrs)).
    pub fn local_addr(&self) -> Addr {
        self.shared.listener(0).info.local_addr().clone()
    }

    /// The addresses of every listener, in the order they were added.
    pub fn local_addrs(&self) -> Vec<Addr> {
        local_addrs(&self.shared)
    }

    /// Every listener, in the order they were added.
    pub fn listeners(&self) -> Vec<Listener> {
        listeners(&self.shared)
    }

    /// Connections accepted through each listener, in the order they
    /// were added; see [`ServerControl::accepted_by_listener`].
    pub fn accepted_by_listener(&self) -> Vec<(Listener, u64)> {
        accepted_by_listener(&self.shared)
    }

    /// The server's metrics in the Prometheus text format; see
    /// [`ServerControl::to_prometheus`].
    pub fn to_prometheus(&self) -> String {
        to_prometheus(&self.shared)
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops accepting, without closing anything; see
    /// [`ServerControl::pause`].
    pub fn pause(&self) {
        self.shared.pause();
    }

    /// Accepts again after a [`pause`](ServerHandle::pause); see
    /// [`ServerControl::resume`].
    pub fn resume(&self) {
        self.shared.resume();
    }

    /// Whether accepting is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.is_paused()
    }

    /// Changes `max_connections` while the server runs; see
    /// [`ServerControl::set_max_connections`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for `Some(0)`; the cap is then left as it was.
    pub fn set_max_connections(&self, max: impl Into<Option<usize>>) -> Result<()> {
        set_max_connections(&self.shared, max.into())
    }

    /// Changes `max_connections_per_ip` while the server runs; see
    /// [`ServerControl::set_max_connections_per_ip`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for `Some(0)`; the cap is then left as it was.
    pub fn set_max_connections_per_ip(&self, max: impl Into<Option<usize>>) -> Result<()> {
        set_max_connections_per_ip(&self.shared, max.into())
    }

    /// A [`ServerControl`] to stop the server or read its counters from
    /// another thread, for example while this one waits in
    /// [`join`](ServerHandle::join).
    pub fn control(&self) -> ServerControl {
        ServerControl::new(Arc::clone(&self.shared))
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

    /// Waits until the server stops: after a [`ServerControl`] asked it to, or
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

/// A cloneable handle to a server, for any thread: stop it, pause and
/// resume accepting, change its connection caps, read its counters, learn
/// its address. It works for a server started with
/// [`Server::run`](crate::Server::run) (which blocks the thread that could
/// otherwise ask) as for one started with
/// [`Server::spawn`](crate::Server::spawn).
///
/// Get one from [`Server::control`](crate::Server::control) or
/// [`ServerHandle::control`]. [`stop`](ServerControl::stop) returns at
/// once; the thread that owns the server carries out the shutdown and
/// returns its report.
///
/// # Live control
///
/// [`pause`](ServerControl::pause) stops accepting and
/// [`resume`](ServerControl::resume) starts again, as Ranch's
/// `suspend_listener` does: while paused, new clients wait in the kernel's
/// listen backlog (their handshake completes, they are not accepted), the
/// listening socket stays open, and the connections already open are
/// served as before. [`set_max_connections`](ServerControl::set_max_connections)
/// and [`set_max_connections_per_ip`](ServerControl::set_max_connections_per_ip)
/// change the caps for the next connection accepted. [`Stats`] shows the
/// state: [`paused`](Stats::paused), [`max_connections`](Stats::max_connections),
/// [`max_connections_per_ip`](Stats::max_connections_per_ip). All of them
/// work before the server runs too (on a [`Server::control`](crate::Server::control)),
/// in both modes.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = frontdesk::Server::bind("127.0.0.1:0")?;
/// let control = server.control();
/// let watcher = std::thread::spawn(move || {
///     let _served_so_far = control.stats().completed;
///     control.stop();
/// });
/// let report = server.run(|_: &mut frontdesk::Connection| Ok(()))?;
/// assert_eq!(report.forced, 0);
/// # watcher.join().unwrap();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ServerControl {
    shared: Arc<Shared>,
}

impl ServerControl {
    pub(crate) fn new(shared: Arc<Shared>) -> ServerControl {
        ServerControl { shared }
    }

    /// Asks the server to shut down gracefully (see
    /// [`ServerHandle`]'s Shutdown section), and returns at once without
    /// waiting for it. Calling it again, or after the server stopped, does
    /// nothing.
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Whether a shutdown has been asked for.
    pub fn is_stopping(&self) -> bool {
        self.shared.is_stopping()
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The address the server listens on; with several listeners, the
    /// first one's (see [`local_addrs`](ServerControl::local_addrs)).
    pub fn local_addr(&self) -> Addr {
        self.shared.listener(0).info.local_addr().clone()
    }

    /// The addresses of every listener, in the order they were added.
    pub fn local_addrs(&self) -> Vec<Addr> {
        local_addrs(&self.shared)
    }

    /// Every listener, in the order they were added.
    pub fn listeners(&self) -> Vec<Listener> {
        listeners(&self.shared)
    }

    /// Connections accepted through each listener, in the order they
    /// were added (their sum is [`Stats::accepted`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use frontdesk::{Listen, Server};
    ///
    /// # fn main() -> frontdesk::Result<()> {
    /// let server = Server::builder()
    ///     .listen(Listen::tcp("127.0.0.1:0").name("public"))
    ///     .listen(Listen::tcp("127.0.0.1:0").name("admin"))
    ///     .build()?;
    /// let admin = server.local_addrs()[1].tcp().unwrap();
    /// let handle = server.spawn(|_: &mut frontdesk::Connection| Ok(()))?;
    /// let mut client = std::net::TcpStream::connect(admin).unwrap();
    /// let _ = std::io::Read::read(&mut client, &mut [0; 1]); // closed when served
    /// let counts: Vec<(String, u64)> = handle
    ///     .accepted_by_listener()
    ///     .into_iter()
    ///     .map(|(listener, accepted)| (listener.to_string(), accepted))
    ///     .collect();
    /// assert_eq!(counts, [("public".to_string(), 0), ("admin".to_string(), 1)]);
    /// handle.shutdown()?;
    /// # Ok(()) }
    /// ```
    pub fn accepted_by_listener(&self) -> Vec<(Listener, u64)> {
        accepted_by_listener(&self.shared)
    }

    /// The server's metrics in the Prometheus text exposition format:
    /// [`Stats::to_prometheus`] of a snapshot, then the connections
    /// accepted through each listener
    /// (`frontdesk_listener_connections_accepted_total`, labelled
    /// `listener` with the listener's name, or its address when it has
    /// none). This is what the examples' `--metrics` serves.
    pub fn to_prometheus(&self) -> String {
        to_prometheus(&self.shared)
    }

    /// Stops accepting new connections until [`resume`](ServerControl::resume),
    /// without closing anything.
    ///
    /// Once this returns, no connection is accepted: clients that connect
    /// wait in the kernel's listen backlog (see
    /// [`backlog`](crate::ServerBuilder::backlog); the kernel completes
    /// their handshake, so they may already send, but nothing answers
    /// them and [`Stats::accepted`] does not count them). The listening
    /// socket stays open, and the connections already open (active,
    /// queued, parked) are served as before. The accept loop waits for the
    /// resume or the stop without using the CPU. A stop while paused shuts
    /// down as usual; the clients still in the backlog are never accepted
    /// (a listener the server bound is closed, and they see a reset).
    /// Pausing a paused server does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::net::TcpStream;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = frontdesk::Server::bind("127.0.0.1:0")?;
    /// let control = server.control();
    /// let handle = server.spawn(|conn: &mut frontdesk::Connection| conn.write_all(b"hi\n"))?;
    /// control.pause();
    /// assert!(control.stats().paused);
    /// let mut client = TcpStream::connect(handle.local_addr())?; // waits in the backlog
    /// assert_eq!(control.stats().accepted, 0);
    /// control.resume();
    /// let mut reply = String::new();
    /// client.read_to_string(&mut reply)?;
    /// assert_eq!(reply, "hi\n");
    /// # handle.shutdown()?;
    /// # Ok(()) }
    /// ```
    pub fn pause(&self) {
        self.shared.pause();
    }

    /// Accepts new connections again after a [`pause`](ServerControl::pause),
    /// starting with the clients waiting in the backlog. Resuming a server
    /// that is not paused does nothing.
    pub fn resume(&self) {
        self.shared.resume();
    }

    /// Whether accepting is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.is_paused()
    }

    /// Changes the cap on the connections held at once
    /// ([`ServerBuilder::max_connections`](crate::ServerBuilder::max_connections))
    /// while the server runs; `None` removes it (in the turn mode, back
    /// to [`TURN_MAX_CONNECTIONS`](crate::TURN_MAX_CONNECTIONS)).
    ///
    /// It applies from the next connection accepted. A cap below the
    /// connections open closes none of them: new ones are turned away
    /// (the reject handler, [`RejectReason::MaxConnections`](crate::RejectReason::MaxConnections))
    /// until enough have ended. `usize::MAX` is no cap in practice.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for `Some(0)`, as the builder: a cap of zero
    /// would refuse every client (to stop accepting, use
    /// [`pause`](ServerControl::pause)). The cap is then left as it was.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = frontdesk::Server::bind("127.0.0.1:0")?;
    /// let control = server.control();
    /// control.set_max_connections(100)?;
    /// assert_eq!(control.stats().max_connections, Some(100));
    /// assert!(control.set_max_connections(0).is_err());
    /// assert_eq!(control.stats().max_connections, Some(100));
    /// # Ok(()) }
    /// ```
    pub fn set_max_connections(&self, max: impl Into<Option<usize>>) -> Result<()> {
        set_max_connections(&self.shared, max.into())
    }

    /// Changes the cap on the connections one client address holds
    /// ([`ServerBuilder::max_connections_per_ip`](crate::ServerBuilder::max_connections_per_ip))
    /// while the server runs; `None` removes it. It may be switched on
    /// here even if the builder never set it.
    ///
    /// It applies from the next connection let in (behind a PROXY header,
    /// the next header read). A cap below what an address holds closes
    /// none of its connections: new ones are turned away
    /// ([`RejectReason::MaxConnectionsPerIp`](crate::RejectReason::MaxConnectionsPerIp))
    /// until enough have ended. While there is no cap, nothing is
    /// counted (it costs nothing), so a cap switched on while the server
    /// runs counts the connections let in from then on, not those already
    /// open.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for `Some(0)`, as the builder; the cap is then
    /// left as it was.
    pub fn set_max_connections_per_ip(&self, max: impl Into<Option<usize>>) -> Result<()> {
        set_max_connections_per_ip(&self.shared, max.into())
    }
}

fn set_max_connections(shared: &Shared, max: Option<usize>) -> Result<()> {
    if max == Some(0) {
        return Err(Error::Config("`max_connections` must be at least 1"));
    }
    shared.set_max_connections(max);
    Ok(())
}

fn set_max_connections_per_ip(shared: &Shared, max: Option<usize>) -> Result<()> {
    if max == Some(0) {
        return Err(Error::Config("`max_connections_per_ip` must be at least 1"));
    }
    shared.set_max_connections_per_ip(max);
    Ok(())
}

pub(crate) fn local_addrs(shared: &Shared) -> Vec<Addr> {
    let listeners = shared.listeners().iter();
    listeners.map(|l| l.info.local_addr().clone()).collect()
}

pub(crate) fn listeners(shared: &Shared) -> Vec<Listener> {
    shared.listeners().iter().map(|l| l.info.clone()).collect()
}

fn accepted_by_listener(shared: &Shared) -> Vec<(Listener, u64)> {
    listeners(shared)
        .into_iter()
        .zip(shared.accepted_by_listener())
        .collect()
}

fn to_prometheus(shared: &Shared) -> String {
    let by_listener: Vec<(String, u64)> = accepted_by_listener(shared)
        .into_iter()
        .map(|(listener, accepted)| (listener.to_string(), accepted))
        .collect();
    let mut text = shared.stats().to_prometheus();
    text.push_str(&listeners_to_prometheus(&by_listener));
    text
}
