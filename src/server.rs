//! `Server`: a bound listener and its configuration, and the two ways to
//! start serving: `run` on the calling thread, `spawn` in the background.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use polling::Poller;

use crate::addr::Addr;
use crate::config::{Config, ListenerSetup, TlsSetup};
use crate::error::{Error, Result};
use crate::handle::{listeners, local_addrs, ServerControl, ServerHandle, ShutdownReport};
use crate::handler::service::WholeConnections;
use crate::handler::Handler;
use crate::net::listener::{ListenSocket, Listener};
#[cfg(unix)]
use crate::net::notify::notify;
use crate::net::options;
#[cfg(unix)]
use crate::net::socket_file::SocketFile;
use crate::pool::acceptor::{Acceptor, Origin};
use crate::pool::closer::Closer;
use crate::pool::queue::{Idle, Job, Parking, Queue};
use crate::pool::shutdown::Shared;
use crate::pool::workers::{Service, WorkerPool};
use crate::stream::proxy::ProxyConfig;
use crate::turn::engine::Hub;
use crate::turn::events::ReadySet;
use crate::turn::handler::TurnHandler;
use crate::turn::lookout::Lookout;
use crate::turn::poller::PollerThread;
use crate::turn::service::Turns;

/// No Unix domain sockets here, so never a socket file.
#[cfg(not(unix))]
type SocketFile = std::convert::Infallible;

/// After a forced end, how long the gentle closes of the connections just
/// ended may still wait for their clients' end of stream.
const LINGER_AFTER_FORCE: Duration = Duration::from_millis(500);

/// A listening server (TCP, TLS or Unix socket) that has not started
/// serving yet.
///
/// Made by [`Server::bind`] or a [`ServerBuilder`](crate::ServerBuilder)
/// (the constructors live with the builder, in `builder.rs`). The sockets are already
/// listening, so [`local_addr`](Server::local_addr) tells the real port when
/// binding port 0, and clients that connect now wait in the backlog. No
/// thread is started until [`run`](Server::run) or [`spawn`](Server::spawn).
///
/// A server may listen on several sockets at once (see
/// [`ServerBuilder::listen`](crate::ServerBuilder::listen)): they share
/// the workers, the limits and the shutdown.
#[derive(Debug)]
pub struct Server {
    /// In the order added; their `Listener`s are in `shared`.
    listeners: Vec<(ListenSocket, Origin)>,
    /// The Unix sockets' files the server made: removed once the server
    /// stops accepting (or is dropped unused).
    socket_files: Vec<SocketFile>,
    /// For the closer thread, made here so that starting the server opens
    /// no descriptor (it may be started when the process has none left).
    closer_poller: Poller,
    config: Config,
    shared: Arc<Shared>,
}

/// A listening socket as the builder opened it, with what the server
/// needs to know of it.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) socket: ListenSocket,
    /// Adopted (`from_listener`, socket activation) rather than bound here.
    pub(crate) adopted: bool,
    /// The Unix socket's file, when the server made it.
    pub(crate) socket_file: Option<SocketFile>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) proxy: Option<ProxyConfig>,
    pub(crate) tls: Option<TlsSetup>,
}

impl Server {
    /// Makes a server on `opened` (at least one), each switched to
    /// non-blocking mode (the accept loop waits in `poll(2)`); an adopted
    /// listener's mode is put back when the server stops.
    pub(crate) fn new(opened: Vec<Opened>, config: Config) -> Result<Server> {
        let listener_error = |source| Error::Listener { source };
        // First what can fail without changing anything, then the one
        // change, undone on the adopted ones if a later one fails.
        let mut listeners = Vec::with_capacity(opened.len());
        let mut setups = Vec::with_capacity(opened.len());
        let mut socket_files = Vec::new();
        for (index, opened) in opened.into_iter().enumerate() {
            let local_addr = opened.socket.local_addr().map_err(listener_error)?;
            let origin = if opened.adopted {
                let was_nonblocking =
                    options::is_nonblocking(&opened.socket).map_err(listener_error)?;
                Origin::Adopted { was_nonblocking }
            } else {
                Origin::Bound
            };
            setups.push(ListenerSetup {
                info: Listener::new(index, opened.name, local_addr),
                proxy: opened.proxy,
                tls: opened.tls,
            });
            socket_files.extend(opened.socket_file);
            listeners.push((opened.socket, origin));
        }
        for (done, (socket, _)) in listeners.iter().enumerate() {
            if let Err(error) = socket.set_nonblocking(true) {
                for (socket, origin) in &listeners[..done] {
                    if *origin
                        == (Origin::Adopted {
                            was_nonblocking: false,
                        })
                    {
                        let _ = socket.set_nonblocking(false);
                    }
                }
                return Err(listener_error(error));
            }
        }
        let signal_error = |source| Error::Signal { source };
        let shared = Shared::new(&config, setups).map_err(signal_error)?;
        let closer_poller = Poller::new().map_err(signal_error)?;
        Ok(Server {
            listeners,
            socket_files,
            closer_poller,
            config,
            shared: Arc::new(shared),
        })
    }

    /// The address the server listens on, with the real port when port 0
    /// was asked for; with several listeners, the first one's (see
    /// [`local_addrs`](Server::local_addrs)).
    pub fn local_addr(&self) -> Addr {
        self.shared.listener(0).info.local_addr().clone()
    }

    /// The addresses of every listener, in the order they were added.
    pub fn local_addrs(&self) -> Vec<Addr> {
        local_addrs(&self.shared)
    }

    /// Every listener, in the order they were added: index, name and
    /// address, as a connection's [`Connection::listener`](crate::Connection::listener)
    /// tells them.
    pub fn listeners(&self) -> Vec<Listener> {
        listeners(&self.shared)
    }

    /// A [`ServerControl`] to stop the server or read its counters from
    /// another thread, for example while it runs with [`run`](Server::run).
    pub fn control(&self) -> ServerControl {
        ServerControl::new(Arc::clone(&self.shared))
    }

    /// Serves connections with `handler` on the calling thread until the
    /// server is stopped through a [`ServerControl`], then shuts down
    /// gracefully and returns the report.
    ///
    /// The calling thread runs the accept loop; the workers are started
    /// here.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if a thread cannot be started (the ones already
    /// started are stopped first), and [`Error::Accept`] if the
    /// accept loop met an error retrying cannot fix; the server has then
    /// been shut down as gracefully as for a requested stop.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::io::{self, Write};
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let server = frontdesk::Server::bind("127.0.0.1:7878")?;
    ///     server.run(|conn: &mut frontdesk::Connection| -> io::Result<()> {
    ///         conn.write_all(b"hello\n")
    ///     })?;
    ///     Ok(())
    /// }
    /// ```
    pub fn run(self, handler: impl Handler) -> Result<ShutdownReport> {
        self.serve(Whole(Arc::new(handler)), || {})
    }

    /// Serves connections a turn at a time with `handler` on the calling
    /// thread, as [`run`](Server::run) does with a [`Handler`]: between
    /// turns connections wait in the readiness set, without a worker (see
    /// [`TurnHandler`]).
    ///
    /// Unless [`max_connections`](crate::ServerBuilder::max_connections)
    /// was set, the turn mode holds at most
    /// [`TURN_MAX_CONNECTIONS`](crate::TURN_MAX_CONNECTIONS) connections.
    ///
    /// # Errors
    ///
    /// As [`run`](Server::run).
    pub fn run_turns(self, handler: impl TurnHandler) -> Result<ShutdownReport> {
        self.serve(TurnByTurn(handler), || {})
    }

    /// Starts serving connections with `handler` in the background and
    /// returns a handle to watch and stop the server.
    ///
    /// The accept loop runs on a thread named `frontdesk-acceptor`, the
    /// workers on threads named `frontdesk-worker-N`, and gentle closes on
    /// `frontdesk-closer`. All of them are running when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if a thread cannot be started; the threads already
    /// started are stopped and joined first.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{self, Read, Write};
    /// use std::net::TcpStream;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = frontdesk::Server::bind("127.0.0.1:0")?;
    /// let handle = server.spawn(|conn: &mut frontdesk::Connection| -> io::Result<()> {
    ///     conn.write_all(b"hello\n")
    /// })?;
    ///
    /// let mut client = TcpStream::connect(handle.local_addr())?;
    /// let mut reply = String::new();
    /// client.read_to_string(&mut reply)?;
    /// assert_eq!(reply, "hello\n");
    ///
    /// let report = handle.shutdown()?;
    /// assert_eq!(report.forced, 0);
    /// # Ok(()) }
    /// ```
    pub fn spawn(self, handler: impl Handler) -> Result<ServerHandle> {
        self.spawn_mode(Whole(Arc::new(handler)))
    }

    /// Starts serving connections a turn at a time with `handler` in the
    /// background, as [`spawn`](Server::spawn) does with a [`Handler`]. One
    /// more thread, `frontdesk-poller`, keeps the parked connections'
    /// timers; idle workers wait for their input.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Server::spawn).
    ///
    /// # Examples
    ///
    /// See [`TurnHandler`].
    pub fn spawn_turns(self, handler: impl TurnHandler) -> Result<ServerHandle> {
        self.spawn_mode(TurnByTurn(handler))
    }

    fn spawn_mode(self, mode: impl Mode) -> Result<ServerHandle> {
        let shared = Arc::clone(&self.shared);
        let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
        let name = "frontdesk-acceptor".to_string();
        let thread = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                self.serve(mode, || {
                    let _ = started_tx.send(());
                })
            })
            .map_err(|source| Error::Spawn { name, source })?;
        if started_rx.recv().is_err() {
            // The acceptor thread ended before the pool was up: it carries
            // the error.
            return match thread.join() {
                Ok(Err(error)) => Err(error),
                Ok(Ok(_)) => unreachable!("the acceptor signals once its pool is up"),
                Err(panic) => std::panic::resume_unwind(panic),
            };
        }
        Ok(ServerHandle::new(thread, shared))
    }

    /// Starts the closer, the poller (turn mode) and the workers, says so
    /// through `started`, runs the accept loop, then the shutdown sequence.
    fn serve<M: Mode>(self, mode: M, started: impl FnOnce()) -> Result<ShutdownReport> {
        let Server {
            listeners,
            socket_files,
            closer_poller,
            mut config,
            shared,
        } = self;
        let local_addr = shared.listener(0).info.local_addr().clone();
        let (closer, closer_thread) =
            Closer::start(Arc::clone(&shared), config.linger, closer_poller)?;
        let Started {
            service,
            poller,
            queue,
            jobs,
        } = match mode.start(&mut config, &shared, &closer) {
            Ok(started) => started,
            Err(error) => {
                closer_thread.finish(Instant::now());
                return Err(error);
            }
        };
        let pool = match WorkerPool::start(
            &config,
            &queue,
            jobs,
            Arc::new(service),
            Arc::clone(&shared),
            &closer,
        ) {
            Ok(pool) => pool,
            Err(error) => {
                shared.stop();
                if let Some(poller) = poller {
                    poller.accepting_stopped();
                    poller.join();
                }
                closer_thread.finish(Instant::now());
                return Err(error);
            }
        };
        started();
        if config.notify_service_manager {
            notify("READY=1");
        }
        for listener in shared.listeners() {
            log::info!(
                "listening on {} listener={} workers={} queue={} overload={:?}",
                listener.info.local_addr(),
                listener.info,
                config.workers,
                config.queue,
                config.overload
            );
        }
        let acceptor = Acceptor::new(listeners, queue, &config, Arc::clone(&shared), closer);
        let result = acceptor.run();
        // Nothing listens at the paths any more: a new server may take them.
        drop(socket_files);
        // The listener and the acceptor's sender are gone now: the port is
        // free and the workers stop once the queue is empty (in the turn
        // mode, once the poller has let go of its sender too).
        let stopped_at = Instant::now();
        shared.stop();
        if config.notify_service_manager {
            notify("STOPPING=1");
        }
        if let Some(poller) = &poller {
            poller.accepting_stopped();
        }
        let deadline = stopped_at
            .checked_add(config.shutdown_timeout)
            .unwrap_or_else(far_future);
        let drained = pool.shut_down(deadline);
        if let Some(poller) = poller {
            poller.join();
        }
        closer_thread.finish(deadline.max(Instant::now() + LINGER_AFTER_FORCE));
        let report = ShutdownReport {
            drained: shared.completed_since_stop().saturating_sub(drained.forced),
            forced: drained.forced,
            dropped: drained.dropped,
            stuck_workers: drained.stuck_workers,
            elapsed: stopped_at.elapsed(),
            stats: shared.stats(),
        };
        log::info!(
            "stopped {local_addr}: drained={} forced={} dropped={} in {:?}",
            report.drained,
            report.forced,
            report.dropped,
            report.elapsed
        );
        result.map(|()| report)
    }
}

/// The most connections a turn-mode server holds when
/// [`max_connections`](crate::ServerBuilder::max_connections) is not set:
/// thousands of mostly idle clients, as a chat relay or a game lobby has,
/// and still a bound (raise `ulimit -n` to match).
pub const TURN_MAX_CONNECTIONS: usize = 10_000;

/// What the workers run, and how it starts: a `Handler` per connection
/// ([`Whole`]), or a `TurnHandler` per turn ([`TurnByTurn`]).
trait Mode: Send + 'static {
    type Service: Service;

    /// Makes the workers' queue and the service, and starts what the
    /// service needs beside the workers.
    fn start(
        self,
        config: &mut Config,
        shared: &Arc<Shared>,
        closer: &Closer,
    ) -> Result<Started<Self::Service>>;
}

/// What [`Mode::start`] made.
struct Started<S: Service> {
    service: S,
    poller: Option<PollerThread>,
    /// The workers' queue: its sending end, and the workers' end.
    queue: Queue<S::Job>,
    jobs: Receiver<Job<S::Job>>,
}

struct Whole(Arc<dyn Handler>);

impl Mode for Whole {
    type Service = WholeConnections;

    /// The pool admits `workers + queue` connections at once (the
    /// acceptor counts them); beyond that the overload policy applies.
    /// The channel holds that many jobs, so a send never waits. Idle
    /// workers sleep in a `Parking`, which each send wakes.
    fn start(
        self,
        config: &mut Config,
        _: &Arc<Shared>,
        _: &Closer,
    ) -> Result<Started<Self::Service>> {
        let (sender, jobs) = crossbeam_channel::bounded(config.workers + config.queue);
        let parking = Arc::new(Parking::default());
        let idle = {
            let parking = Arc::clone(&parking);
            Idle::elsewhere(move || parking.wake_one())
        };
        Ok(Started {
            service: WholeConnections {
                handler: self.0,
                parking,
            },
            poller: None,
            queue: Queue::new(sender, idle),
            jobs,
        })
    }
}

struct TurnByTurn<H>(H);

impl<H: TurnHandler> Mode for TurnByTurn<H> {
    type Service = Turns<H>;

    /// Starts the hub of parked connections and the poller that keeps
    /// their timers. The queue is unbounded: each connection has at most
    /// one job queued, and `max_connections` bounds the connections. Idle
    /// workers wait in the parked connections' readiness set, as many as
    /// there are CPUs, and the others sleep (`turn/lookout.rs`); a job in
    /// the queue wakes one.
    fn start(
        self,
        config: &mut Config,
        shared: &Arc<Shared>,
        closer: &Closer,
    ) -> Result<Started<Self::Service>> {
        // The cap while none is set, on the builder or the control.
        shared.set_default_max_connections(TURN_MAX_CONNECTIONS);
        let ready = Arc::new(ReadySet::new().map_err(|source| Error::Signal { source })?);
        let lookout = Arc::new(Lookout::new(config.workers));
        let idle = {
            let (ready, lookout) = (Arc::clone(&ready), Arc::clone(&lookout));
            Idle::elsewhere(move || {
                lookout.wake_one(|| {
                    let _ = ready.notify();
                })
            })
        };
        let (sender, jobs) = crossbeam_channel::unbounded();
        let queue = Queue::new(sender, idle);
        let hub = Hub::new(
            config,
            Arc::clone(shared),
            closer.clone(),
            ready,
            lookout,
            queue.clone(),
        )
        .map_err(|source| Error::Signal { source })?;
        let hub = Arc::new(hub);
        let poller = PollerThread::start(Arc::clone(&hub))?;
        let handler = self.0;
        Ok(Started {
            service: Turns { handler, hub },
            poller: Some(poller),
            queue,
            jobs,
        })
    }
}

/// Service managers that listen for notifications are a Unix thing.
#[cfg(not(unix))]
fn notify(_: &str) {}

fn far_future() -> Instant {
    // About 30 years: "no timeout" without overflowing `Instant`.
    Instant::now() + Duration::from_secs(60 * 60 * 24 * 365 * 30)
}
