//! `WorkerPool`: a fixed set of worker threads fed by a bounded channel of
//! accepted streams, and the drain-then-force end of a shutdown.

use std::fmt;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::addr::Addr;
use crate::config::{Config, Limits, ListenerSetup};
use crate::error::{Error, Result};
use crate::net::socket::Socket;
use crate::pool::closer::{ClientEnd, Closer};
use crate::pool::per_ip::IpSlot;
use crate::pool::queue::{Accepted, Idle, Job, Queue};
use crate::pool::shutdown::Shared;
use crate::stats::Counters;
use crate::stream::proxy::{self, ProxyHeader};
use crate::stream::transport::Transport;
use crate::sync::lock;

/// How long shutdown waits for workers after ending their connections by
/// force. A handler waiting on its connection returns at once; one that
/// ignores errors and keeps computing is left behind after this.
pub(crate) const FORCE_GRACE: Duration = Duration::from_secs(1);

/// A connection a worker has let in: its PROXY header read and its TLS
/// handshake done, when the server asks for them, unless the service
/// does both itself between parks (the turn mode).
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) transport: Transport,
    /// The client's address: the socket's peer, or the one the PROXY
    /// header names.
    pub(crate) peer: Addr,
    /// The header; `None` when the server requires none, or when it is
    /// still to read (then `handshake_by` is its deadline).
    pub(crate) proxy: Option<ProxyHeader>,
    pub(crate) id: u64,
    /// The listener it came through.
    pub(crate) listener: usize,
    /// When what is still to do before the handler sees the connection
    /// (the turn mode does it between turns) must be done by: the PROXY
    /// header, if still to read, else the TLS handshake.
    pub(crate) handshake_by: Option<Instant>,
    /// Its place in its address's count (`max_connections_per_ip`); it
    /// must be given back (dropped) where the connection stops being
    /// counted open.
    pub(crate) ip_slot: Option<IpSlot>,
}

/// How the workers serve what they take from the queue: a mode (the
/// `Handler` mode serves a whole connection per job, the turn mode a turn
/// per job). The pool knows nothing of a mode but this.
pub(crate) trait Service: Send + Sync + Sized + 'static {
    /// The mode's own jobs, which it queues itself.
    type Job: Send + 'static;

    fn accepted(&self, conn: Admitted, worker: &Worker<Self>);
    /// Whether this service reads the PROXY header and runs the TLS
    /// handshake itself, a step at a time as the client's bytes arrive,
    /// rather than on the worker that admits the connection. Then it also
    /// takes the connection's place in its address's count once the
    /// header names the client.
    fn parks_handshakes(&self) -> bool {
        false
    }
    fn run(&self, job: Self::Job, worker: &Worker<Self>);
    /// A worker took a job and more wait in the queue. By default one
    /// idle worker is woken for them (it wakes the next if more are left).
    fn left_in_queue(&self, worker: &Worker<Self>) {
        worker.idle().wake_one();
    }
    /// How a worker with nothing queued waits for work. By default on the
    /// channel ([`Waited::OnChannel`]); a mode whose idle workers wait
    /// elsewhere counts them in [`Worker::idle`] (see `queue.rs`).
    fn wait(&self, _worker: &Worker<Self>) -> Waited<Self::Job> {
        Waited::OnChannel
    }
    /// Ends the connection of a job that will not run: the drain deadline
    /// passed (`on_worker`: this is a worker, which may still run the
    /// handler's goodbye), or the workers that would have run it are stuck
    /// (then no user code may run: this is the thread shutting down).
    fn drop_job(&self, job: Self::Job, on_worker: bool);
}

/// What [`Service::wait`] came back with.
pub(crate) enum Waited<T> {
    /// Nothing: the worker waits on the channel.
    OnChannel,
    /// A job for this worker.
    Job(Job<T>),
    /// Woken: the worker looks at the channel again.
    Woken,
}

/// The connection a worker is serving, if any, so that shutdown can end it
/// by force.
type Slot = Mutex<Option<Arc<Socket>>>;

pub(crate) struct WorkerPool<S: Service> {
    threads: Vec<JoinHandle<()>>,
    slots: Arc<[Slot]>,
    /// Disconnected once every worker has returned: each holds a sender.
    done: Receiver<()>,
    /// The queue, to close what is left in it when every worker is stuck.
    jobs: Receiver<Job<S::Job>>,
    service: Arc<S>,
    shared: Arc<Shared>,
    closer: Closer,
}

/// What the end of a shutdown found in the pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drained {
    /// Connections ended by force at the drain deadline.
    pub(crate) forced: u64,
    /// Queued connections closed unserved.
    pub(crate) dropped: u64,
    pub(crate) stuck_workers: usize,
}

impl<S: Service> WorkerPool<S> {
    /// Starts `workers` threads and returns the pool and the sending end of
    /// its queue. Dropping the sender stops the workers once the queue is
    /// empty.
    /// Starts `workers` threads that take their jobs from `receiver`
    /// (`sender` is its other end). They stop once the queue is empty and
    /// every sender is gone.
    pub(crate) fn start(
        config: &Config,
        sender: &Queue<S::Job>,
        receiver: Receiver<Job<S::Job>>,
        service: Arc<S>,
        shared: Arc<Shared>,
        closer: &Closer,
    ) -> Result<WorkerPool<S>> {
        let workers = config.workers;
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let slots: Arc<[Slot]> = (0..workers).map(|_| Mutex::new(None)).collect();
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let worker = Worker {
                index,
                jobs: receiver.clone(),
                idle: Arc::clone(sender.idle()),
                service: Arc::clone(&service),
                shared: Arc::clone(&shared),
                slots: Arc::clone(&slots),
                limits: config.limits,
                closer: closer.clone(),
                _done: done_tx.clone(),
            };
            let name = format!("frontdesk-worker-{index}");
            match thread::Builder::new()
                .name(name.clone())
                .spawn(move || worker.run())
            {
                Ok(thread) => threads.push(thread),
                Err(source) => {
                    // Stop the workers already started: each takes one
                    // `Exit` (the queue is empty, nobody else sends yet).
                    for _ in &threads {
                        let _ = sender.send(Job::Exit);
                    }
                    for thread in threads {
                        let _ = thread.join();
                    }
                    return Err(Error::Spawn { name, source });
                }
            }
        }
        Ok(WorkerPool {
            threads,
            slots,
            done,
            jobs: receiver,
            service,
            shared,
            closer: closer.clone(),
        })
    }

    /// Waits until `deadline` for the workers to finish what is active and
    /// queued, then ends what is left by force, closes what is still
    /// queued, and joins every worker that returns within [`FORCE_GRACE`].
    ///
    /// The queue's sender must be gone already.
    pub(crate) fn shut_down(self, deadline: Instant) -> Drained {
        let WorkerPool {
            threads,
            slots,
            done,
            jobs,
            service,
            shared,
            closer,
        } = self;
        let counters = &shared.counters;
        let forced_before = counters.forced_closed.load(Ordering::SeqCst);
        let dropped_before = counters.dropped.load(Ordering::SeqCst);

        let mut all_returned = done.recv_deadline(deadline) == Err(RecvTimeoutError::Disconnected);
        if !all_returned {
            // Counted before the force is raised: a handler it wakes may
            // return and clear its slot at once.
            for_each_active(&slots, |stream| force_close(stream, counters));
            shared.force();
            all_returned = done.recv_timeout(FORCE_GRACE) == Err(RecvTimeoutError::Disconnected);
        }
        // Workers that are stuck no longer take from the queue: what they
        // left there is closed here, so no client waits for nothing.
        for job in jobs.try_iter() {
            drop_unserved(job, (&*service, false), &closer, &shared);
        }

        let mut stuck_workers = 0;
        for thread in threads {
            // A worker drops its end of `done` as it returns, a moment
            // before its thread has finished: once all have, joining waits
            // for no more than the threads' exit.
            if all_returned || thread.is_finished() {
                let _ = thread.join();
            } else {
                // A handler that neither returns nor notices its ended
                // connection. Waiting longer could wait forever; the thread
                // is left to end on its own.
                stuck_workers += 1;
                log::error!(
                    "worker {} did not stop after its connection was ended; leaving it behind",
                    thread.thread().name().unwrap_or("?")
                );
            }
        }
        Drained {
            forced: counters.forced_closed.load(Ordering::SeqCst) - forced_before,
            dropped: counters.dropped.load(Ordering::SeqCst) - dropped_before,
            stuck_workers,
        }
    }
}

impl<S: Service> fmt::Debug for WorkerPool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let WorkerPool {
            threads,
            slots: _,
            done: _,
            jobs: _,
            service: _,
            shared: _,
            closer: _,
        } = self;
        f.debug_struct("WorkerPool")
            .field("workers", &threads.len())
            .finish_non_exhaustive()
    }
}

/// Calls `f` with the stream of every worker serving a connection.
fn for_each_active(slots: &[Slot], mut f: impl FnMut(&Socket)) {
    for slot in slots {
        if let Some(stream) = lock(slot).as_ref() {
            f(stream);
        }
    }
}

/// Ends an active connection at the drain deadline. The force signal has
/// already woken the handler if it waits in a read or write of its
/// `Connection` (a read still in its first, brief wait in `recv` ends with
/// that wait, within 50 ms); `shutdown(SHUT_WR)` also ends a write it makes
/// on the stream directly (or on a clone) and tells the client. The read
/// side is left alone: the gentle close still reads what the client sends.
fn force_close(stream: &Socket, counters: &Counters) {
    let _ = stream.shutdown(Shutdown::Write);
    Counters::bump(&counters.forced_closed);
}

/// Closes a queued connection that no worker will serve; `on_worker` as
/// for [`Service::drop_job`].
fn drop_unserved<S: Service>(
    job: Job<S::Job>,
    (service, on_worker): (&S, bool),
    closer: &Closer,
    shared: &Shared,
) {
    match job {
        Job::Accepted(job) => close_unserved(
            (Arc::new(job.stream), job.ip_slot),
            (&job.peer, job.id),
            "closing queued connection unserved",
            &shared.counters.dropped,
            closer,
            shared,
        ),
        Job::Mode(job) => service.drop_job(job, on_worker),
        Job::Exit => {}
    }
}

/// Closes an accepted connection no handler will see, counted in `why`,
/// after giving back its place in its address's count, if it has one.
fn close_unserved(
    (socket, ip_slot): (Arc<Socket>, Option<IpSlot>),
    (peer, id): (&Addr, u64),
    what: &str,
    why: &AtomicU64,
    closer: &Closer,
    shared: &Shared,
) {
    log::debug!("{what}: peer={peer} id={id}");
    drop(ip_slot);
    Counters::bump(why);
    shared.connection_ended();
    closer.close(socket, ClientEnd::NotSeen);
}

/// A worker thread, and what a [`Service`] may use of it.
pub(crate) struct Worker<S: Service> {
    index: usize,
    jobs: Receiver<Job<S::Job>>,
    idle: Arc<Idle>,
    service: Arc<S>,
    pub(crate) shared: Arc<Shared>,
    slots: Arc<[Slot]>,
    limits: Limits,
    pub(crate) closer: Closer,
    /// Dropped when the thread ends; see `WorkerPool::done`.
    _done: Sender<()>,
}

impl<S: Service> Worker<S> {
    fn run(self) {
        let counters = &self.shared.counters;
        loop {
            let job = match self.jobs.try_recv() {
                Ok(job) => {
                    if !self.jobs.is_empty() {
                        // More for the workers that wait elsewhere (when
                        // they do): one at a time, each wakes the next.
                        self.service.left_in_queue(&self);
                    }
                    job
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => match self.service.wait(&self) {
                    Waited::Job(job) => job,
                    Waited::Woken => continue,
                    Waited::OnChannel => match self.jobs.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    },
                },
            };
            if self.shared.is_forced() {
                // The drain deadline passed before this one was reached.
                drop_unserved(job, (&*self.service, true), &self.closer, &self.shared);
                continue;
            }
            counters.busy.fetch_add(1, Ordering::Relaxed);
            match job {
                Job::Accepted(job) => {
                    if let Some(conn) = self.admit(job) {
                        self.service.accepted(conn, &self);
                    }
                }
                Job::Mode(job) => self.service.run(job, &self),
                Job::Exit => {
                    counters.busy.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
            }
            counters.busy.fetch_sub(1, Ordering::Relaxed);
        }
        // The queue has disconnected: a worker still waiting elsewhere
        // learns it from the next one that ends.
        self.idle.wake_one();
    }

    /// Lets a new connection in: reads its PROXY header, takes its place
    /// in its address's count, and runs its TLS handshake, when the
    /// server asks for them (unless the service does them between parks),
    /// or closes it (counted as rejected) when one fails.
    fn admit(&self, job: Accepted) -> Option<Admitted> {
        let Accepted {
            stream,
            peer,
            id,
            listener,
            mut ip_slot,
        } = job;
        let socket = Arc::new(stream);
        let counters = &self.shared.counters;
        let parks = self.service.parks_handshakes();
        let setup = self.shared.listener(listener);
        let proxy = match &setup.proxy {
            // The service reads the header between parks: only a peer
            // that may not send one is closed now.
            Some(config) if parks => proxy::check_trusted(&peer, config).map(|()| None),
            config => proxy::admit(&socket, &peer, config.as_ref(), &*self.shared),
        };
        let proxy = match proxy {
            Ok(proxy) => proxy,
            Err(error) => {
                let what = format!("closing a connection without a valid PROXY header ({error})");
                let why = &counters.rejected_proxy;
                let closing = (socket, ip_slot);
                close_unserved(closing, (&peer, id), &what, why, &self.closer, &self.shared);
                return None;
            }
        };
        let peer = match proxy.as_ref().and_then(ProxyHeader::client) {
            Some(client) => Addr::Tcp(client),
            None => peer,
        };
        if proxy.is_some() {
            // The header named the client: its place in its address's
            // count, before the handshake and the handler.
            match self.shared.ip_slot(&peer) {
                Ok(slot) => ip_slot = slot,
                Err(reason) => {
                    self.shared.say_no(&socket, (&peer, id), listener, reason);
                    let what = format!("rejecting connection ({reason})");
                    let why = &counters.rejected_max_connections_per_ip;
                    let closing = (socket, None);
                    close_unserved(closing, (&peer, id), &what, why, &self.closer, &self.shared);
                    return None;
                }
            }
        }
        let header_by =
            (parks && setup.proxy.is_some()).then(|| Instant::now() + proxy::PROXY_HEADER_TIME);
        let (transport, handshake_by) = match self.secure(&socket, setup) {
            Ok(secured) => secured,
            Err(error) => {
                let what = format!("closing a connection whose TLS handshake failed ({error})");
                let why = &counters.rejected_tls;
                let closing = (socket, ip_slot);
                close_unserved(closing, (&peer, id), &what, why, &self.closer, &self.shared);
                return None;
            }
        };
        Some(Admitted {
            transport,
            peer,
            proxy,
            id,
            listener,
            handshake_by: header_by.or(handshake_by),
            ip_slot,
        })
    }

    /// The connection's transport: TLS over the socket when its listener
    /// speaks it, the socket itself otherwise. The handshake is run here,
    /// unless the service runs it between parks: then it is still to run,
    /// by the deadline returned.
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn secure(
        &self,
        socket: &Arc<Socket>,
        setup: &ListenerSetup,
    ) -> std::io::Result<(Transport, Option<Instant>)> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &setup.tls {
            let by = Instant::now() + tls.handshake_time;
            let (session, handshake_by) = match self.service.parks_handshakes() {
                true => (crate::stream::tls::Session::start(&tls.config)?, Some(by)),
                false => {
                    let session =
                        crate::stream::tls::handshake(socket, &tls.config, by, &*self.shared)?;
                    (session, None)
                }
            };
            return Ok((Transport::tls(Arc::clone(socket), session), handshake_by));
        }
        Ok((Transport::plain(Arc::clone(socket)), None))
    }

    /// Whether another job waits for a worker.
    pub(crate) fn others_waiting(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// The idle workers' count, for a [`Service::wait`] that waits
    /// outside the channel.
    pub(crate) fn idle(&self) -> &Idle {
        &self.idle
    }

    /// The start of a wait outside the channel (see `pool/queue.rs`):
    /// counts this worker idle, then looks at the channel a last time.
    /// `Some` when that look found a job, or the end of the queue: the
    /// worker is counted out again and does not wait. `None`: it may
    /// wait now, and counts itself out with `Idle::end_wait` after.
    pub(crate) fn begin_wait(&self) -> Option<Waited<S::Job>> {
        self.idle.begin_wait();
        let waited = match self.jobs.try_recv() {
            Ok(job) => Waited::Job(job),
            Err(TryRecvError::Disconnected) => Waited::Woken,
            Err(TryRecvError::Empty) => return None,
        };
        self.idle.end_wait();
        Some(waited)
    }

    /// The per-connection limits configured on the builder.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Marks `stream` as the connection this worker serves from now until
    /// [`serving_done`](Worker::serving_done), so that the shutdown can end
    /// it by force at the drain deadline.
    pub(crate) fn serving(&self, stream: &Arc<Socket>) {
        *lock(&self.slots[self.index]) = Some(Arc::clone(stream));
        // Shutdown looks at the slots, then raises the force flag; we
        // filled our slot before looking at the flag. A connection taken
        // in between is ended by the force without being counted as
        // forced: only a worker that takes a new connection in that
        // instant misses the count.
        if self.shared.is_forced() {
            force_close(stream, &self.shared.counters);
        }
    }

    pub(crate) fn serving_done(&self) {
        *lock(&self.slots[self.index]) = None;
    }
}
