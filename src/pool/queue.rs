//! The workers' queue as its senders hold it: the crossbeam channel, and
//! the wake-up owed to workers that wait for work somewhere else.
//!
//! Idle workers never wait in the channel's own `recv`. In the turn mode
//! an idle worker waits in the readiness set of the parked connections,
//! so that the thread that learns a connection is ready is the one that
//! serves it (no hand-off from a poller thread). In the `Handler` mode it
//! sleeps in [`Parking`]: crossbeam's `recv` spins and yields the CPU a
//! few times before it sleeps, which on a busy server with more workers
//! than cores hands the CPU around for nothing (4 `sched_yield` per
//! connection on churn). A job put in the channel must then wake one of
//! those workers: that is [`Idle::wake_one`], which every send here
//! calls. The closer thread (`closer.rs`) waits in its own readiness set
//! the same way, and uses the same protocol for the sockets sent to it.
//!
//! # No job left unseen
//!
//! A worker about to wait counts itself in [`Idle`], then looks at the
//! channel once more; a sender puts its job in the channel, then looks at
//! the count. A full fence between the write and the read on each side
//! (the pattern of Dekker's algorithm) makes sure that at least one of
//! the two sees the other: the worker finds the job, or the sender sees
//! the worker waiting and wakes it. A wake-up nobody needed costs one
//! loop of a worker.

use std::fmt;
use std::sync::{Arc, PoisonError};

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::{Condvar, Mutex};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex};

use crossbeam_channel::{SendError, Sender, TrySendError};

use crate::addr::Addr;
use crate::net::socket::Socket;
use crate::pool::per_ip::IpSlot;

/// An accepted connection on its way from the acceptor to a worker.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) stream: Socket,
    pub(crate) peer: Addr,
    pub(crate) id: u64,
    /// The listener it came through (its index in `Shared::listeners`).
    pub(crate) listener: usize,
    /// Its place in its address's count, when the acceptor took one (see
    /// `Shared::caps_per_ip_on_accept`).
    pub(crate) ip_slot: Option<IpSlot>,
}

/// What a worker takes from the queue. `T` is the mode's own kind of job
/// (the turn mode's turns); the pool only runs it.
pub(crate) enum Job<T> {
    /// A new connection, from the acceptor.
    Accepted(Accepted),
    /// A job of the mode's own, for [`Service::run`].
    Mode(T),
    /// Stop this worker (only when the pool fails to start).
    Exit,
}

impl<T> Job<T> {
    /// The accepted connection of a job the acceptor made.
    pub(crate) fn into_accepted(self) -> Accepted {
        match self {
            Job::Accepted(accepted) => accepted,
            Job::Mode(_) | Job::Exit => unreachable!("the acceptor only makes Accepted jobs"),
        }
    }
}

/// Threads waiting for a channel's messages outside the channel (workers
/// in a readiness set or in [`Parking`], the closer in its own set), and
/// how to wake one.
pub(crate) struct Idle {
    waiting: AtomicUsize,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Idle {
    /// Idle threads wait somewhere `wake` wakes one of them from.
    pub(crate) fn elsewhere(wake: impl Fn() + Send + Sync + 'static) -> Arc<Idle> {
        Arc::new(Idle {
            waiting: AtomicUsize::new(0),
            wake: Box::new(wake),
        })
    }

    /// Counts a worker in, before it looks at the channel a last time and
    /// waits (see the module's docs).
    pub(crate) fn begin_wait(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Counts a worker out, after its wait.
    pub(crate) fn end_wait(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many workers are waiting, or about to.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Wakes one waiting worker, if any: after a job was put in the
    /// channel, or the channel may have disconnected.
    pub(crate) fn wake_one(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            (self.wake)();
        }
    }
}

impl fmt::Debug for Idle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idle")
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

/// Where the `Handler` mode's idle workers sleep: a count of wake-ups
/// owed, under a lock, and a condition variable. A wake-up given while
/// nobody sleeps yet is kept for the next to sleep, which then finds it
/// at once: with [`Idle`]'s count and fences, a worker that counted
/// itself in and then sleeps is never left asleep beside a queued job. A
/// wake-up nobody needed costs one loop of a worker.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    owed: Mutex<usize>,
    woken: Condvar,
}

impl Parking {
    /// Wakes one sleeper, or the next to sleep.
    pub(crate) fn wake_one(&self) {
        *self.owed.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.woken.notify_one();
    }

    /// Wakes one sleeper, or the next to sleep, unless a wake-up is owed
    /// already: the one that takes it is on its way.
    pub(crate) fn wake_one_unless_owed(&self) {
        let mut owed = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
        if *owed == 0 {
            *owed = 1;
            self.woken.notify_one();
        }
    }

    /// How many wake-ups are owed and not yet taken.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn owed(&self) -> usize {
        *self.owed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps until a wake-up is owed, and takes it.
    pub(crate) fn sleep(&self) {
        let mut owed = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
        while *owed == 0 {
            owed = self
                .woken
                .wait(owed)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *owed -= 1;
    }
}

/// A sending end of the workers' queue.
pub(crate) struct Queue<T> {
    /// Taken only by `drop`.
    sender: Option<Sender<Job<T>>>,
    idle: Arc<Idle>,
}

impl<T> Queue<T> {
    pub(crate) fn new(sender: Sender<Job<T>>, idle: Arc<Idle>) -> Queue<T> {
        Queue {
            sender: Some(sender),
            idle,
        }
    }

    fn sender(&self) -> &Sender<Job<T>> {
        self.sender.as_ref().expect("taken only when dropped")
    }

    /// The idle workers this queue wakes.
    pub(crate) fn idle(&self) -> &Arc<Idle> {
        &self.idle
    }

    /// Sends `job`, waiting for room if the channel is bounded and full.
    pub(crate) fn send(&self, job: Job<T>) -> Result<(), SendError<Job<T>>> {
        self.sender().send(job)?;
        self.idle.wake_one();
        Ok(())
    }

    /// Sends `job` without waking anyone: the caller sends several, then
    /// wakes one worker with [`sent`](Queue::sent); each worker that takes
    /// a job and sees more wakes the next (see `Worker::run`).
    pub(crate) fn send_quietly(&self, job: Job<T>) -> Result<(), SendError<Job<T>>> {
        self.sender().send(job)
    }

    /// Sends `job` if there is room now.
    pub(crate) fn try_send(&self, job: Job<T>) -> Result<(), TrySendError<Job<T>>> {
        self.sender().try_send(job)?;
        self.idle.wake_one();
        Ok(())
    }

    /// Whether the channel holds no job.
    pub(crate) fn is_empty(&self) -> bool {
        self.sender().is_empty()
    }

    /// How many jobs the channel holds; `None`: as many as are sent.
    pub(crate) fn capacity(&self) -> Option<usize> {
        self.sender().capacity()
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Queue<T> {
        Queue {
            sender: Some(self.sender().clone()),
            idle: Arc::clone(&self.idle),
        }
    }
}

impl<T> Drop for Queue<T> {
    /// The last sender gone disconnects the channel, which the idle
    /// workers must learn to end; each worker that ends wakes the next.
    fn drop(&mut self) {
        // Gone before the wake-up, so that the woken worker can see it.
        drop(self.sender.take());
        self.idle.wake_one();
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue").field("idle", &self.idle).finish()
    }
}

/// The wake-up protocol checked for every interleaving, with the real
/// [`Idle`]: a sender queues jobs and then goes (as `Queue`'s `send` and
/// `drop` do), while two workers take them and, with nothing queued, wait
/// in a model of the readiness set (as `Worker::run` and the turn mode's
/// `Service::wait` do), or in the real [`Parking`] (the `Handler` mode's
/// `Service::wait`). The set's wake-up is an eventfd: wakes that come
/// before anyone takes them collapse into one, and one waiter takes it. A
/// job left in the queue while both workers wait is a deadlock, which
/// loom reports. Run with
/// `RUSTFLAGS="--cfg loom" cargo test --lib --release pool::queue`.
#[cfg(all(test, loom))]
pub(crate) mod model {
    use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    use super::{Idle, Parking};

    /// The channel, lock-free as crossbeam's is: a count of queued jobs
    /// published with release and taken with acquire, and whether the
    /// sender is gone. No stronger ordering than that, so that the
    /// model leans on `Idle`'s fences alone.
    #[derive(Default)]
    pub(crate) struct Channel {
        jobs: AtomicU32,
        gone: AtomicBool,
    }

    impl Channel {
        pub(crate) fn push(&self) {
            self.jobs.fetch_add(1, Ordering::Release);
        }

        /// The sender is gone, after its last push.
        pub(crate) fn close(&self) {
            self.gone.store(true, Ordering::Release);
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.jobs.load(Ordering::Acquire) == 0
        }
    }

    /// The readiness set's eventfd: set by a wake-up, cleared by the
    /// waiter that takes it.
    #[derive(Default)]
    pub(crate) struct Waker {
        raised: Mutex<bool>,
        ready: Condvar,
    }

    impl Waker {
        pub(crate) fn raise(&self) {
            *self.raised.lock().unwrap() = true;
            self.ready.notify_one();
        }

        pub(crate) fn wait(&self) {
            let mut raised = self.raised.lock().unwrap();
            while !*raised {
                raised = self.ready.wait(raised).unwrap();
            }
            *raised = false;
        }
    }

    enum Took {
        Job,
        Empty,
        Gone,
    }

    fn take(channel: &Channel) -> Took {
        // The sender's `gone` comes after its last push: read first, so
        // that "gone and empty" means no job is left.
        let gone = channel.gone.load(Ordering::Acquire);
        let mut jobs = channel.jobs.load(Ordering::Acquire);
        while jobs > 0 {
            match channel
                .jobs
                .compare_exchange(jobs, jobs - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Took::Job,
                Err(now) => jobs = now,
            }
        }
        if gone {
            Took::Gone
        } else {
            Took::Empty
        }
    }

    pub(crate) fn worker(channel: &Channel, idle: &Idle, sleep: &dyn Fn()) -> usize {
        worker_posted(channel, idle, &|| (), &|()| sleep(), &|()| ())
    }

    /// A worker that takes a post (`post`) before it counts itself idle,
    /// sleeps where the post says, and leaves the post after (the turn
    /// mode's `Lookout`).
    pub(crate) fn worker_posted<P: Copy>(
        channel: &Channel,
        idle: &Idle,
        post: &dyn Fn() -> P,
        sleep: &dyn Fn(P),
        leave: &dyn Fn(P),
    ) -> usize {
        let mut taken = 0;
        loop {
            match take(channel) {
                Took::Job => {
                    taken += 1;
                    if !channel.is_empty() {
                        idle.wake_one();
                    }
                    continue;
                }
                Took::Gone => {
                    idle.wake_one();
                    return taken;
                }
                Took::Empty => {}
            }
            let posted = post();
            idle.begin_wait();
            match take(channel) {
                Took::Job => {
                    idle.end_wait();
                    leave(posted);
                    taken += 1;
                    continue;
                }
                Took::Gone => {
                    idle.end_wait();
                    leave(posted);
                    continue;
                }
                Took::Empty => {}
            }
            sleep(posted);
            idle.end_wait();
            leave(posted);
        }
    }

    /// Where the model's workers sleep.
    #[derive(Clone, Copy)]
    enum Sleep {
        /// In a readiness set (the turn mode).
        InSet,
        /// In the real [`Parking`] (the `Handler` mode).
        Parked,
    }

    fn check(jobs: u32, sleep: Sleep) {
        let mut model = loom::model::Builder::new();
        // Every interleaving with up to three preemptions (loom's advice
        // for models of this size: the full space of three threads with a
        // lock and a condition variable does not end in hours). Lost
        // wake-ups need at most two: between the sender's push and its
        // look at the count, and between the worker's count and its look.
        model.preemption_bound = Some(3);
        model.check(move || {
            let channel = Arc::new(Channel::default());
            let waker = Arc::new(Waker::default());
            let parking = Arc::new(Parking::default());
            let idle = {
                let (waker, parking) = (Arc::clone(&waker), Arc::clone(&parking));
                Arc::new(Idle::elsewhere(move || match sleep {
                    Sleep::InSet => waker.raise(),
                    Sleep::Parked => parking.wake_one(),
                }))
            };
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (channel, idle) = (Arc::clone(&channel), Arc::clone(&idle));
                    let (waker, parking) = (Arc::clone(&waker), Arc::clone(&parking));
                    thread::spawn(move || {
                        worker(&channel, &idle, &|| match sleep {
                            Sleep::InSet => waker.wait(),
                            Sleep::Parked => parking.sleep(),
                        })
                    })
                })
                .collect();
            send_and_go(&channel, &idle, jobs);
            let taken: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
            assert_eq!(taken, jobs as usize);
        });
    }

    /// The sender: queues `jobs`, each with its wake-up, then goes (as
    /// `Queue`'s `send` and `drop` do).
    pub(crate) fn send_and_go(channel: &Channel, idle: &Idle, jobs: u32) {
        for _ in 0..jobs {
            channel.push();
            idle.wake_one();
        }
        channel.close();
        idle.wake_one();
    }

    #[test]
    fn a_job_wakes_a_waiting_worker() {
        check(1, Sleep::InSet);
    }

    #[test]
    fn two_jobs_reach_two_waiting_workers() {
        check(2, Sleep::InSet);
    }

    #[test]
    fn a_job_wakes_a_parked_worker() {
        check(1, Sleep::Parked);
    }

    #[test]
    fn two_jobs_reach_two_parked_workers() {
        check(2, Sleep::Parked);
    }
}
