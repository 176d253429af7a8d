//! `Server`: a bound listener and its configuration, and the two ways to
//! start serving: `run` on the calling thread, `spawn` in the background.

use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::acceptor::Acceptor;
use crate::builder::{Overload, ServerBuilder};
use crate::connection::Limits;
use crate::error::{Error, Result};
use crate::handle::{ServerHandle, ShutdownReport};
use crate::handler::Handler;
use crate::pool::WorkerPool;
use crate::shutdown::{Shared, Stopper};
use crate::socket::StreamOptions;

/// The checked configuration a server runs with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) queue: usize,
    pub(crate) overload: Overload,
    pub(crate) max_connections: Option<usize>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) stop_reading_on_shutdown: bool,
    pub(crate) limits: Limits,
    pub(crate) stream: StreamOptions,
    pub(crate) on_reject: Option<Arc<dyn Handler>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Config {
            workers,
            queue,
            overload,
            max_connections,
            shutdown_timeout,
            stop_reading_on_shutdown,
            limits,
            stream,
            on_reject,
        } = self;
        f.debug_struct("Config")
            .field("workers", workers)
            .field("queue", queue)
            .field("overload", overload)
            .field("max_connections", max_connections)
            .field("shutdown_timeout", shutdown_timeout)
            .field("stop_reading_on_shutdown", stop_reading_on_shutdown)
            .field("limits", limits)
            .field("stream", stream)
            .field("on_reject", &on_reject.as_ref().map(|_| "<handler>"))
            .finish()
    }
}

/// A listening TCP server that has not started serving yet.
///
/// Made by [`Server::bind`] or a [`ServerBuilder`]. The socket is already
/// listening, so [`local_addr`](Server::local_addr) tells the real port when
/// binding port 0, and clients that connect now wait in the backlog. No
/// thread is started until [`run`](Server::run) or [`spawn`](Server::spawn).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
    shared: Arc<Shared>,
}

impl Server {
    /// A builder to configure a server; see [`ServerBuilder`] for the
    /// options and their defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    /// Binds `addr` with every option at its default; shorthand for
    /// `Server::builder().bind(addr)`.
    ///
    /// # Errors
    ///
    /// See [`ServerBuilder::bind`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Port 0: the OS picks a free port.
    /// let server = frontdesk::Server::bind("127.0.0.1:0")?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok(()) }
    /// ```
    pub fn bind(addr: impl ToSocketAddrs + fmt::Debug) -> Result<Server> {
        ServerBuilder::new().bind(addr)
    }

    /// Serves on a listener the caller already has, with every option at
    /// its default; shorthand for `Server::builder().from_listener(listener)`.
    ///
    /// # Errors
    ///
    /// See [`ServerBuilder::from_listener`].
    pub fn from_listener(listener: TcpListener) -> Result<Server> {
        ServerBuilder::new().from_listener(listener)
    }

    pub(crate) fn new(listener: TcpListener, config: Config) -> Result<Server> {
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Listener { source })?;
        let shared = Arc::new(Shared::new(local_addr, config.workers));
        Ok(Server {
            listener,
            local_addr,
            config,
            shared,
        })
    }

    /// The address the server listens on, with the real port when port 0
    /// was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A [`Stopper`] to shut the server down from another thread, for
    /// example when it runs with [`run`](Server::run).
    pub fn stopper(&self) -> Stopper {
        Stopper::new(Arc::clone(&self.shared))
    }

    /// Serves connections with `handler` on the calling thread until the
    /// server is stopped through a [`Stopper`], then shuts down gracefully
    /// and returns the report.
    ///
    /// The calling thread runs the accept loop; the workers are started
    /// here.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if a worker thread cannot be started (the ones
    /// already started are stopped first), and [`Error::Accept`] if the
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
        let (pool, queue) =
            WorkerPool::start(&self.config, Arc::new(handler), Arc::clone(&self.shared))?;
        self.serve(pool, queue)
    }

    /// Starts serving connections with `handler` in the background and
    /// returns a handle to watch and stop the server.
    ///
    /// The accept loop runs on a thread named `frontdesk-acceptor`, and the
    /// workers on threads named `frontdesk-worker-N`. All of them are
    /// running when this returns.
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
        let shared = Arc::clone(&self.shared);
        let local_addr = self.local_addr;
        let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
        let name = "frontdesk-acceptor".to_string();
        let thread = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let (pool, queue) =
                    WorkerPool::start(&self.config, Arc::new(handler), Arc::clone(&self.shared))?;
                let _ = started_tx.send(());
                self.serve(pool, queue)
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
        Ok(ServerHandle::new(thread, shared, local_addr))
    }

    /// Runs the accept loop, then the shutdown sequence.
    fn serve(
        self,
        pool: WorkerPool,
        queue: crossbeam_channel::Sender<crate::pool::Job>,
    ) -> Result<ShutdownReport> {
        let Server {
            listener,
            local_addr,
            config,
            shared,
        } = self;
        log::info!(
            "listening on {local_addr} workers={} queue={} overload={:?}",
            config.workers,
            config.queue,
            config.overload
        );
        let result = Acceptor::new(listener, queue, &config, Arc::clone(&shared)).run();
        // The listener and the queue's sender are gone now: the port is
        // free and the workers stop once the queue is empty.
        let stopped_at = Instant::now();
        shared.stop_without_wake();
        let report = pool.shut_down(stopped_at, config.shutdown_timeout);
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
