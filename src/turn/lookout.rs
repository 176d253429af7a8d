//! Which idle workers of the turn mode watch the readiness set, and which
//! sleep.
//!
//! A worker that waits in the set is woken by the kernel for each report
//! that comes while it waits: with eight workers on one CPU, seven of
//! them would be woken, one report each, while the eighth was already
//! on its way back to take them all. So no more workers watch the set
//! than the process has CPUs (`available_parallelism`, which counts the
//! CPUs it may run on); the other idle workers sleep in a [`Parking`],
//! where a job sent to the queue reaches them when nobody watches, and
//! the poller's tick (below) when the set is left unwatched too long.
//!
//! For the same reason a worker wakes another for work it leaves in the
//! queue only where a CPU is free to run that one beside the workers
//! already running: else the jobs wait for the first worker back from its
//! turn, which looks at the queue before it waits.
//!
//! # The tick
//!
//! Both of those bets lose when a turn blocks (a handler that waits for a
//! database): the connections whose turns it queued, and the set it left
//! unwatched, would wait for it. Whoever leaves work so (jobs queued
//! without a wake-up, or the set unwatched while workers sleep) makes
//! sure that the poller thread ticks until neither is the case (every
//! [`TICK`] at first, further apart while the ticks find nobody stuck:
//! see [`Tick`]). At a tick, if no worker has come to watch the set since the
//! last one, the poller wakes a sleeping worker (not a second while the
//! one it woke has not come), or a watching one for the queue. A turn
//! that blocks delays the others by a tick or two (the first tick of a
//! spell only looks who came); a server where workers come back often
//! pays one poller wake-up per tick while it is busy, every
//! [`LONGEST_TICK`] once the ticks have backed off, and nothing while it
//! is idle. (On one CPU, a request that comes
//! alone pays two: its watcher leaves the set unwatched while it serves
//! it, which starts the ticking, and the first tick stops it.) A pool of
//! one worker never ticks: what it leaves is its own to take.
//!
//! The hand-over of the ticking is the pattern of `pool/queue.rs`: the
//! worker changes its count (or queues jobs) and then looks at the flag,
//! the poller clears the flag and then looks at the counts and the queue,
//! with a full fence between the write and the read on each side, so at
//! least one sees the other's write. The fences, rather than the
//! orderings of the accesses alone, so that this holds whatever
//! orderings crossbeam's channel uses inside, and so that loom (which
//! takes a sequentially consistent access for acquire-release, but
//! models fences) checks it (`model` below).

use std::fmt;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

use crate::pool::queue::Parking;

/// How often the poller looks at a set left unwatched or a queue left
/// without a wake-up, at first and again once it found a worker stuck.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// The longest the ticks get apart, while none finds a worker stuck.
const LONGEST_TICK: Duration = Duration::from_millis(8);

/// How many ticks in a row find nobody stuck before they get further
/// apart: a few, so that a handler that often waits (and so is often
/// found stuck) keeps the short tick.
const CALM_TICKS: u32 = 8;

/// The counts, in one word so that a worker changes them, and the number
/// of times a worker came to watch, with one atomic operation.
const WATCHING: u64 = 1;
const SLEEPING: u64 = 1 << 16;
const CAME: u64 = 1 << 32;
const COUNT: u64 = 0xffff;

/// How many watch, in a value of `Lookout::posts`.
fn watchers(posts: u64) -> u64 {
    posts & COUNT
}

/// How many sleep, in a value of `Lookout::posts`.
fn sleepers(posts: u64) -> u64 {
    (posts >> 16) & COUNT
}

/// Whether nobody watches the set while workers sleep, in a value of
/// `Lookout::posts`: the set is left to the tick.
fn unwatched(posts: u64) -> bool {
    watchers(posts) == 0 && sleepers(posts) > 0
}

/// Where an idle worker waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Post {
    /// In the readiness set.
    Watching,
    /// In the [`Parking`].
    Sleeping,
}

/// The idle workers' posts, and the sleepers' bed.
pub(crate) struct Lookout {
    /// Watching workers (bits 0..16), sleeping ones (16..32), and how many
    /// times a worker took the watch (32..64, wrapping).
    posts: AtomicU64,
    /// The most workers that watch the set at once: the CPUs.
    cpus: usize,
    /// A pool of one worker, which leaves work only for itself (it looks
    /// at the queue before it waits) and never sleeps: a tick could wake
    /// nobody.
    alone: bool,
    sleepers: Parking,
    /// Whether the poller ticks.
    ticking: AtomicBool,
}

impl Lookout {
    /// For a pool of `workers`.
    pub(crate) fn new(workers: usize) -> Lookout {
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        Lookout::with_cpus(workers, cpus)
    }

    fn with_cpus(workers: usize, cpus: usize) -> Lookout {
        Lookout {
            posts: AtomicU64::new(0),
            cpus: cpus.clamp(1, workers.clamp(1, COUNT as usize)),
            alone: workers <= 1,
            sleepers: Parking::default(),
            ticking: AtomicBool::new(false),
        }
    }

    /// Takes a post: the watch while fewer than the CPUs watch, else a
    /// bed. Before the worker counts itself idle (`Idle::begin_wait`), so
    /// that a sender that sees it idle knows where it waits.
    pub(crate) fn take_post(&self) -> Post {
        let mut posts = self.posts.load(Ordering::SeqCst);
        loop {
            let (post, add) = if watchers(posts) < self.cpus as u64 {
                (Post::Watching, WATCHING + CAME)
            } else {
                (Post::Sleeping, SLEEPING)
            };
            match self.posts.compare_exchange_weak(
                posts,
                posts.wrapping_add(add),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return post,
                Err(now) => posts = now,
            }
        }
    }

    /// Leaves `post`, after the wait. A watcher that leaves the set
    /// unwatched while others sleep returns `true`: the poller must tick
    /// ([`keep_ticking`](Lookout::keep_ticking)).
    pub(crate) fn leave(&self, post: Post) -> bool {
        match post {
            Post::Watching => {
                let before = self.posts.fetch_sub(WATCHING, Ordering::SeqCst);
                unwatched(before - WATCHING)
            }
            Post::Sleeping => {
                self.posts.fetch_sub(SLEEPING, Ordering::SeqCst);
                false
            }
        }
    }

    /// How many workers watch the set.
    pub(crate) fn watching(&self) -> usize {
        watchers(self.posts.load(Ordering::SeqCst)) as usize
    }

    fn sleeping(&self) -> usize {
        sleepers(self.posts.load(Ordering::SeqCst)) as usize
    }

    /// Whether a worker woken now could run beside the `busy` ones and
    /// the caller: a CPU is free for it.
    pub(crate) fn spare_cpu(&self, busy: usize) -> bool {
        busy + 1 < self.cpus
    }

    /// Sleeps until woken.
    pub(crate) fn sleep(&self) {
        self.sleepers.sleep();
    }

    /// Wakes one idle worker for a job in the queue: a watcher through
    /// the set's wake-up (`notify`), or a sleeper when nobody watches.
    pub(crate) fn wake_one(&self, notify: impl FnOnce()) {
        if self.watching() > 0 {
            notify();
        } else {
            self.sleepers.wake_one();
        }
    }

    /// Makes sure the poller ticks (unless the pool has one worker);
    /// `wake_poller` when it did not. After the caller left work behind
    /// (its post, or jobs in the queue).
    pub(crate) fn keep_ticking(&self, wake_poller: impl FnOnce()) {
        if self.alone {
            return;
        }
        // Between that change and the look at the flag (see the module's
        // docs): the queue's own orderings are crossbeam's to choose.
        fence(Ordering::SeqCst);
        if !self.ticking.load(Ordering::SeqCst) && !self.ticking.swap(true, Ordering::SeqCst) {
            wake_poller();
        }
    }

    /// Whether the poller ticks.
    pub(crate) fn is_ticking(&self) -> bool {
        self.ticking.load(Ordering::SeqCst)
    }

    /// The poller's tick (see the module's docs), at most one per period
    /// of `last` (see [`Tick`]): `queued` says whether jobs wait in the
    /// queue, `notify` wakes a watcher. Clears the flag when nothing is
    /// left behind.
    pub(crate) fn tick(&self, last: &mut Tick, queued: impl Fn() -> bool, notify: impl FnOnce()) {
        let now = Instant::now();
        if now < last.at + last.every {
            return;
        }
        let posts = self.posts.load(Ordering::SeqCst);
        let came = posts >> 32;
        let stuck = last.came == Some(came);
        let (left_unwatched, queued_now) = (unwatched(posts), queued());
        *last = last.next(now, came, stuck && (left_unwatched || queued_now));
        if stuck && left_unwatched {
            // One sleeper is enough to take the watch. One woken at an
            // earlier tick may not have come yet, its CPU busy: waking
            // more would only leave them wake-ups to loop on, one per
            // tick that passes meanwhile.
            self.sleepers.wake_one_unless_owed();
        } else if stuck && queued_now && watchers(posts) > 0 {
            notify();
        }
        if left_unwatched || queued_now {
            return;
        }
        // Nothing left behind: stop, unless a worker left something
        // meanwhile (it looks at the flag after its change).
        self.ticking.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if unwatched(self.posts.load(Ordering::SeqCst)) || queued() {
            self.ticking.store(true, Ordering::SeqCst);
        } else {
            *last = Tick::default();
        }
    }
}

impl fmt::Debug for Lookout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lookout")
            .field("watching", &self.watching())
            .field("sleeping", &self.sleeping())
            .field("cpus", &self.cpus)
            .field("alone", &self.alone)
            .finish_non_exhaustive()
    }
}

/// What the poller's last tick saw, and when the next is due.
///
/// The ticks of a busy spell start [`TICK`] apart. A server whose
/// workers keep coming back (one busy with more clients than CPUs)
/// would pay a poller wake-up every millisecond for ticks that find
/// nobody stuck: after [`CALM_TICKS`] such ticks in a row, each gets
/// twice as far from the last, up to [`LONGEST_TICK`] (as Go's `sysmon`
/// sleeps longer while it finds nothing to take back). The first that
/// finds a worker stuck brings them back to [`TICK`]: a turn that blocks
/// after a calm spell delays the others by two long ticks at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tick {
    at: Instant,
    /// How many times a worker had taken the watch; `None` before the
    /// first tick of a busy spell.
    came: Option<u64>,
    /// How long after `at` the next tick is due.
    every: Duration,
    /// How many ticks in a row found nobody stuck.
    calm: u32,
}

impl Tick {
    /// How long the poller may wait before the next tick is due: what is
    /// left of the period, not a whole one, when something else woke it
    /// meanwhile (a timer, room to write), so that such wake-ups never put
    /// a tick off.
    pub(crate) fn until_due(&self) -> Duration {
        (self.at + self.every).saturating_duration_since(Instant::now())
    }

    /// The tick taken `at`, which saw `came` and found a worker `stuck`
    /// (or not), after this one.
    fn next(&self, at: Instant, came: u64, stuck: bool) -> Tick {
        let (every, calm) = if stuck {
            (TICK, 0)
        } else if self.calm + 1 >= CALM_TICKS {
            ((self.every * 2).min(LONGEST_TICK), CALM_TICKS)
        } else {
            (self.every, self.calm + 1)
        };
        Tick {
            at,
            came: Some(came),
            every,
            calm,
        }
    }
}

impl Default for Tick {
    fn default() -> Tick {
        Tick {
            at: Instant::now(),
            came: None,
            every: TICK,
            calm: 0,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The poller's last tick as it is when the next one is due: a tick
    /// ago, having seen `came`.
    fn a_tick_ago(came: Option<u64>) -> Tick {
        due(Tick {
            came,
            ..Tick::default()
        })
    }

    /// `last`, moved back so that the next tick is due now.
    fn due(last: Tick) -> Tick {
        let at = Instant::now()
            .checked_sub(last.every)
            .expect("the clock runs");
        Tick { at, ..last }
    }

    fn came(lookout: &Lookout) -> u64 {
        lookout.posts.load(Ordering::SeqCst) >> 32
    }

    /// One CPU, three workers: one watches, two sleep; the watcher leaves
    /// the set (a turn that blocks). The tick that follows only looks;
    /// the next, with nobody come meanwhile, wakes a sleeper; and while
    /// that one has not come (its CPU is busy), later ticks wake nobody
    /// else: each would only add a wake-up for a sleeper to take, and
    /// loop on, once the CPU is free.
    #[test]
    fn a_set_left_unwatched_wakes_one_sleeper_until_it_comes() {
        let lookout = Lookout::with_cpus(3, 1);
        assert_eq!(lookout.take_post(), Post::Watching);
        assert_eq!(lookout.take_post(), Post::Sleeping);
        assert_eq!(lookout.take_post(), Post::Sleeping);
        assert!(lookout.leave(Post::Watching), "the set is left unwatched");
        let mut woke_poller = false;
        lookout.keep_ticking(|| woke_poller = true);
        assert!(woke_poller && lookout.is_ticking());

        let mut last = a_tick_ago(None);
        lookout.tick(&mut last, || false, || panic!("no watcher to wake"));
        assert_eq!(lookout.sleepers.owed(), 0, "the first tick only looks");
        assert!(lookout.is_ticking());
        for _ in 0..5 {
            last = a_tick_ago(last.came);
            lookout.tick(&mut last, || false, || panic!("no watcher to wake"));
            assert_eq!(lookout.sleepers.owed(), 1, "one sleeper woken, no more");
            assert!(lookout.is_ticking());
        }

        // The sleeper comes: it takes the wake-up, and the watch.
        lookout.sleep();
        assert!(!lookout.leave(Post::Sleeping));
        assert_eq!(lookout.take_post(), Post::Watching);
        last = a_tick_ago(last.came);
        lookout.tick(&mut last, || false, || panic!("nothing queued"));
        assert_eq!(lookout.sleepers.owed(), 0);
        assert!(!lookout.is_ticking(), "nothing is left behind");
    }

    /// Jobs left in the queue while a watcher waits in the set: the tick
    /// after one where nobody came wakes the watcher, and the ticking
    /// goes on until the queue is empty.
    #[test]
    fn jobs_left_queued_wake_a_watcher_after_a_tick() {
        let lookout = Lookout::with_cpus(2, 2);
        assert_eq!(lookout.take_post(), Post::Watching);
        lookout.keep_ticking(|| ());
        let mut notified = 0;
        let mut last = a_tick_ago(None);
        lookout.tick(&mut last, || true, || notified += 1);
        assert_eq!((notified, last.came), (0, Some(came(&lookout))));
        last = a_tick_ago(last.came);
        lookout.tick(&mut last, || true, || notified += 1);
        assert_eq!(notified, 1);
        assert!(lookout.is_ticking(), "the job is still queued");
        // Before its time, a tick does nothing.
        last.at = Instant::now();
        lookout.tick(&mut last, || false, || notified += 1);
        assert_eq!(notified, 1);
        assert!(lookout.is_ticking());
        last = a_tick_ago(last.came);
        lookout.tick(&mut last, || false, || notified += 1);
        assert_eq!(notified, 1);
        assert!(!lookout.is_ticking(), "the queue is empty");
        assert_eq!(lookout.sleepers.owed(), 0);
    }

    /// A server busier than its CPUs: a job is always queued, and the
    /// watcher keeps coming back for it. Ticks that find nobody stuck get
    /// further apart, up to the longest; the first that finds the watcher
    /// stuck (a turn that blocks) wakes it and brings the short tick back.
    #[test]
    fn ticks_get_further_apart_while_nobody_is_stuck() {
        let lookout = Lookout::with_cpus(2, 1);
        assert_eq!(lookout.take_post(), Post::Watching);
        lookout.keep_ticking(|| ());
        let mut last = a_tick_ago(None);
        let mut apart = Vec::new();
        for _ in 0..CALM_TICKS + 4 {
            // The watcher takes a job, and comes back.
            assert!(!lookout.leave(Post::Watching));
            assert_eq!(lookout.take_post(), Post::Watching);
            last = due(last);
            lookout.tick(&mut last, || true, || panic!("nobody is stuck"));
            apart.push(last.every.as_millis());
        }
        assert!(lookout.is_ticking(), "a job is still queued");
        let mut expected = vec![1; CALM_TICKS as usize - 1];
        expected.extend([2, 4, 8, 8, 8]);
        assert_eq!(apart, expected);
        assert_eq!(LONGEST_TICK.as_millis(), 8);

        // Its turn blocks: the next tick finds it stuck.
        let mut notified = 0;
        last = due(last);
        lookout.tick(&mut last, || true, || notified += 1);
        assert_eq!((notified, last.every), (1, TICK));
    }

    /// The poller woken between two ticks (a timer, room to write, a
    /// parked connection's news) waits again only for what is left until
    /// the next tick is due, not for a whole period: else each such
    /// wake-up puts the tick off by up to a period, and a turn that blocks
    /// after a calm spell delays the others by up to four long ticks, not
    /// the two the docs promise.
    #[test]
    fn a_poller_woken_between_ticks_waits_only_until_the_next() {
        let at = Instant::now()
            .checked_sub(LONGEST_TICK / 2)
            .expect("the clock runs");
        let last = Tick {
            at,
            came: Some(0),
            every: LONGEST_TICK,
            calm: CALM_TICKS,
        };
        let before = Instant::now();
        let wait = last.until_due();
        assert!(
            before + wait <= at + LONGEST_TICK,
            "waits {wait:?} where the tick is due in {:?}",
            (at + LONGEST_TICK).saturating_duration_since(before)
        );
    }

    /// A pool of one worker: what it leaves in the queue is its own to
    /// take (it looks at the queue before it waits), and nobody sleeps,
    /// so a tick could wake nobody; the poller is not made to tick for
    /// it, every millisecond while it is busy.
    #[test]
    fn a_lone_worker_never_makes_the_poller_tick() {
        let lookout = Lookout::with_cpus(1, 4);
        assert_eq!(lookout.take_post(), Post::Watching);
        assert!(!lookout.leave(Post::Watching));
        assert!(!lookout.spare_cpu(0));
        lookout.keep_ticking(|| panic!("the poller woken for a lone worker"));
        assert!(!lookout.is_ticking());
    }
}

/// The wake-up of `pool/queue.rs` checked again with posts, for every
/// interleaving: one CPU, so of two idle workers one watches (waits for
/// the set's wake-up) and the other sleeps; a sender queues jobs and
/// goes. A job left in the queue while both wait is a deadlock, which
/// loom reports. And the hand-over of the ticking: the poller stops it
/// while a worker leaves work behind, and must tick on. Run with
/// `RUSTFLAGS="--cfg loom" cargo test --lib --release turn::lookout`.
#[cfg(all(test, loom))]
mod model {
    use std::time::Instant;

    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Arc;
    use loom::thread;

    use super::{unwatched, Lookout, Post, Tick, TICK};
    use crate::pool::queue::model::{send_and_go, worker_posted, Channel, Waker};
    use crate::pool::queue::Idle;

    fn check(jobs: u32) {
        let mut model = loom::model::Builder::new();
        // As in `pool/queue.rs`: a lost wake-up needs two preemptions.
        model.preemption_bound = Some(3);
        model.check(move || {
            let channel = Arc::new(Channel::default());
            let waker = Arc::new(Waker::default());
            let lookout = Arc::new(Lookout::with_cpus(2, 1));
            let idle = {
                let (waker, lookout) = (Arc::clone(&waker), Arc::clone(&lookout));
                Arc::new(Idle::elsewhere(move || lookout.wake_one(|| waker.raise())))
            };
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (channel, idle) = (Arc::clone(&channel), Arc::clone(&idle));
                    let (waker, lookout) = (Arc::clone(&waker), Arc::clone(&lookout));
                    thread::spawn(move || {
                        worker_posted(
                            &channel,
                            &idle,
                            &|| lookout.take_post(),
                            &|post| match post {
                                Post::Watching => waker.wait(),
                                Post::Sleeping => lookout.sleep(),
                            },
                            &|post| {
                                lookout.leave(post);
                            },
                        )
                    })
                })
                .collect();
            send_and_go(&channel, &idle, jobs);
            let taken: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
            assert_eq!(taken, jobs as usize);
        });
    }

    #[test]
    fn a_job_reaches_the_watcher_or_the_sleeper() {
        check(1);
    }

    #[test]
    fn two_jobs_reach_the_watcher_and_the_sleeper() {
        check(2);
    }

    /// What a worker leaves behind in [`hand_over`].
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Left {
        /// The set, unwatched while a worker sleeps: the last watcher
        /// leaves (`Turns::leave`).
        Unwatched,
        /// A job in the queue, without a wake-up (`Hub::left_in_queue`
        /// with no CPU to spare).
        Queued,
    }

    /// The poller ticks and finds nothing left behind, so it stops, while
    /// a worker leaves `left` behind and makes sure the poller ticks.
    /// Whatever the order, the poller ticks on: it kept the flag (and
    /// sees it before its next wait), or the worker raised it again and
    /// woke the poller.
    fn hand_over(left: Left) {
        loom::model(move || {
            let lookout = Arc::new(Lookout::with_cpus(2, 1));
            let channel = Arc::new(Channel::default());
            let woken = Arc::new(AtomicBool::new(false));
            assert_eq!(lookout.take_post(), Post::Watching);
            if left == Left::Unwatched {
                // A sleeper, counted: nothing here needs it woken.
                assert_eq!(lookout.take_post(), Post::Sleeping);
            }
            // The poller ticks already, for what was left before.
            lookout.keep_ticking(|| ());
            let worker = {
                let (lookout, channel) = (Arc::clone(&lookout), Arc::clone(&channel));
                let woken = Arc::clone(&woken);
                thread::spawn(move || {
                    let wake_poller = || woken.store(true, Ordering::SeqCst);
                    match left {
                        Left::Unwatched => {
                            if lookout.leave(Post::Watching) {
                                lookout.keep_ticking(wake_poller);
                            }
                        }
                        Left::Queued => {
                            channel.push();
                            lookout.keep_ticking(wake_poller);
                        }
                    }
                })
            };
            // A tick's time is up, and it is the first of its spell: it
            // wakes nobody, it only decides whether to go on.
            let mut last = Tick {
                at: Instant::now().checked_sub(TICK).expect("the clock runs"),
                ..Tick::default()
            };
            lookout.tick(&mut last, || !channel.is_empty(), || ());
            // The poller's next loop, before its wait.
            let ticks_on = lookout.is_ticking();
            worker.join().unwrap();
            if unwatched(lookout.posts.load(Ordering::SeqCst)) || !channel.is_empty() {
                assert!(lookout.is_ticking(), "work left behind, and no tick");
                assert!(
                    ticks_on || woken.load(Ordering::SeqCst),
                    "the poller waits without its tick, and nobody wakes it"
                );
            }
        });
    }

    #[test]
    fn the_poller_ticks_on_for_a_set_left_unwatched() {
        hand_over(Left::Unwatched);
    }

    #[test]
    fn the_poller_ticks_on_for_a_job_left_queued() {
        hand_over(Left::Queued);
    }
}
