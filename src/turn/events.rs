//! The readiness set of the turn mode: every connection is registered once,
//! edge-triggered, for reading and writing, and reported each time new
//! input arrives or room opens to write. Nothing is re-armed between
//! turns, so a turn costs no `epoll_ctl`.
//!
//! Edge-triggered readiness tells of changes, not of states: an event
//! that comes while a turn runs is remembered by the connection (see
//! [`Input`](crate::turn::input::Input)), not repeated by the kernel.
//!
//! On Linux the set is an epoll descriptor used directly, because it also
//! reports `EPOLLRDHUP`: once the client's end of stream has arrived, a
//! short read no longer shows that the socket is empty. Elsewhere it is
//! `polling` in its edge mode (kqueue's `EV_CLEAR`), which does not say
//! so; there only a read that finds nothing counts as "empty".

/// What the readiness set reported for one key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    pub(crate) key: usize,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    /// The client's end of stream (or an error) has arrived: reads return
    /// what is left, then end of stream.
    pub(crate) read_closed: bool,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use self::epoll::{RawReports, ReadySet};

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) use self::portable::{RawReports, ReadySet};

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll {
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::Duration;

    use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
    use rustix::event::{eventfd, EventfdFlags, Timespec};

    use super::Ready;
    use crate::net::socket::Socket;
    use crate::stream::wait::Endpoint;

    /// The key of the set's own wake-up descriptor.
    const WAKER: u64 = u64::MAX;

    /// What the kernel fills in a wait (see [`ReadySet::buffer`]).
    pub(crate) type RawReports = Vec<epoll::Event>;

    /// The longest single wait: `i32::MAX` milliseconds, about 24 days.
    const LONGEST_WAIT: Duration = Duration::from_millis(i32::MAX as u64);

    /// An epoll set, and an eventfd that [`notify`](ReadySet::notify)
    /// makes readable.
    #[derive(Debug)]
    pub(crate) struct ReadySet {
        epoll: OwnedFd,
        waker: OwnedFd,
    }

    impl ReadySet {
        /// Whether a short read shows that a socket's buffer is empty:
        /// here it does, unless `read_closed` was reported.
        pub(crate) const SHORT_READ_SHOWS_EMPTY: bool = true;

        /// Whether closing a registered socket, its last descriptor, also
        /// takes it out of the set, so that it needs no `delete`: here it
        /// does (the kernel's epoll keys a registration by the open file,
        /// which the close ends).
        pub(crate) const CLOSE_LEAVES_SET: bool = true;

        pub(crate) fn new() -> io::Result<ReadySet> {
            let epoll = epoll::create(CreateFlags::CLOEXEC)?;
            let waker = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
            epoll::add(
                &epoll,
                &waker,
                EventData::new_u64(WAKER),
                EventFlags::IN | EventFlags::ET,
            )?;
            Ok(ReadySet { epoll, waker })
        }

        /// Registers a connection under `key`, for good: its input and its
        /// room to write, each reported as it changes.
        pub(crate) fn add(&self, socket: &Socket, key: usize) -> io::Result<()> {
            let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
            Ok(epoll::add(
                &self.epoll,
                socket,
                EventData::new_u64(key as u64),
                flags,
            )?)
        }

        /// Registers a connection under `key` for its room to write only,
        /// reported as it opens.
        pub(crate) fn add_room(&self, socket: &Socket, key: usize) -> io::Result<()> {
            let flags = EventFlags::OUT | EventFlags::ET;
            Ok(epoll::add(
                &self.epoll,
                socket,
                EventData::new_u64(key as u64),
                flags,
            )?)
        }

        /// Registers one of the server's signals, reported once when it is
        /// raised.
        pub(crate) fn add_signal(&self, signal: &Endpoint, key: usize) -> io::Result<()> {
            let flags = EventFlags::IN | EventFlags::ET;
            Ok(epoll::add(
                &self.epoll,
                signal,
                EventData::new_u64(key as u64),
                flags,
            )?)
        }

        pub(crate) fn delete(&self, source: impl AsFd) -> io::Result<()> {
            Ok(epoll::delete(&self.epoll, source)?)
        }

        /// Waits up to `timeout` (`None`: for ever) for events, or for
        /// [`notify`](ReadySet::notify); fills `events` with what came, at
        /// most `max` of them (and at most `buf`'s capacity). Several
        /// threads may wait at once: each report wakes one of them, and
        /// what one leaves in the set wakes the next.
        pub(crate) fn wait(
            &self,
            events: &mut Vec<Ready>,
            buf: &mut Vec<epoll::Event>,
            max: usize,
            timeout: Option<Duration>,
        ) -> io::Result<()> {
            events.clear();
            buf.clear();
            // At most what `epoll_pwait` takes (an `int` of milliseconds):
            // rustix asks `epoll_pwait2` for longer ones, which kernels
            // before 5.11 (and some seccomp filters) refuse, and the
            // poller would then spin on the error. Waking early costs one
            // loop of the poller.
            let timeout = timeout
                .map(|t| t.min(LONGEST_WAIT))
                .and_then(|t| Timespec::try_from(t).ok());
            let spare = buf.spare_capacity_mut();
            let max = max.clamp(1, spare.len());
            let got = match epoll::wait(&self.epoll, &mut spare[..max], timeout.as_ref()) {
                Ok((got, _)) => got,
                Err(rustix::io::Errno::INTR) => return Ok(()),
                Err(error) => return Err(error.into()),
            };
            for event in got.iter() {
                let key = event.data.u64();
                let flags = event.flags;
                if key == WAKER {
                    // Not read: edge-triggered, each write reports anew
                    // (see `notify`), and a read would cost every wake-up
                    // a system call more.
                    continue;
                }
                let failed = flags.intersects(EventFlags::ERR | EventFlags::HUP);
                events.push(Ready {
                    key: key as usize,
                    readable: failed || flags.intersects(EventFlags::IN | EventFlags::RDHUP),
                    writable: failed || flags.contains(EventFlags::OUT),
                    read_closed: failed || flags.contains(EventFlags::RDHUP),
                });
            }
            Ok(())
        }

        /// Wakes a [`wait`](ReadySet::wait) under way, or the next one.
        ///
        /// The eventfd is never read by the waits: registered
        /// edge-triggered, it is reported once for each write, whatever
        /// its counter holds. The counter only grows, by one a wake-up;
        /// should it ever fill (2^64 - 2 wake-ups), a write would fail
        /// and report nothing, so it is emptied and written again.
        pub(crate) fn notify(&self) -> io::Result<()> {
            let one = 1u64.to_ne_bytes();
            match rustix::io::write(&self.waker, &one) {
                Ok(_) => Ok(()),
                Err(rustix::io::Errno::AGAIN) => {
                    self.empty_wake_ups();
                    rustix::io::write(&self.waker, &one)?;
                    Ok(())
                }
                Err(error) => Err(error.into()),
            }
        }

        /// A buffer for [`wait`](ReadySet::wait)'s raw events.
        pub(crate) fn buffer() -> Vec<epoll::Event> {
            Vec::with_capacity(1024)
        }

        /// Empties the wake-up counter.
        fn empty_wake_ups(&self) {
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&self.waker, &mut count);
        }

        /// Fills the wake-up counter as 2^64 - 2 wake-ups would.
        #[cfg(test)]
        pub(crate) fn fill_wake_ups(&self) {
            self.empty_wake_ups();
            let most = (u64::MAX - 1).to_ne_bytes();
            rustix::io::write(&self.waker, &most).unwrap();
        }
    }
}

// Also built for the tests on Linux, so that its contract is tested
// where the tests run.
#[cfg(any(test, not(any(target_os = "linux", target_os = "android"))))]
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
mod portable {
    use std::io;
    use std::sync::{Mutex, TryLockError};
    use std::time::Duration;

    use polling::{Event, Events, PollMode, Poller};

    use super::Ready;
    use crate::net::socket::Socket;
    use crate::stream::wait::Endpoint;
    use crate::sync::lock;

    /// What `polling` fills in a wait (see [`ReadySet::buffer`]).
    pub(crate) type RawReports = Events;

    /// `polling` in its edge-triggered mode.
    #[derive(Debug)]
    pub(crate) struct ReadySet {
        poller: Poller,
        /// `polling` lets one thread wait at a time: another that calls
        /// `wait` meanwhile comes back at once with nothing, and idle
        /// workers, which all wait in the set, would spin. They take
        /// turns here instead; `notify` wakes the one in `wait`, and each
        /// that comes back lets the next in.
        waiting: Mutex<()>,
    }

    impl ReadySet {
        /// `polling` does not report the client's end of stream apart from
        /// input, so a short read shows nothing here.
        pub(crate) const SHORT_READ_SHOWS_EMPTY: bool = false;

        /// Whether closing a registered socket also takes it out of the
        /// set: not here. The kernel forgets it (kqueue does at the
        /// close), but `polling` keeps the registered descriptor numbers
        /// (its kqueue backend), and requires a `delete` first (see
        /// `add`): the next connection given that number could not be
        /// registered (`AlreadyExists`), and would be closed at once.
        pub(crate) const CLOSE_LEAVES_SET: bool = false;

        pub(crate) fn new() -> io::Result<ReadySet> {
            let poller = Poller::new()?;
            if !poller.supports_edge() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the turn mode needs edge-triggered readiness, which this system lacks",
                ));
            }
            Ok(ReadySet {
                poller,
                waiting: Mutex::new(()),
            })
        }

        #[allow(unsafe_code)]
        pub(crate) fn add(&self, socket: &Socket, key: usize) -> io::Result<()> {
            // SAFETY: `polling` requires the source to be deleted before it
            // is closed: the engine deletes a connection's socket before it
            // hands it to the closer, the only place it is closed (here
            // even when the close alone would do: `CLOSE_LEAVES_SET`).
            unsafe {
                self.poller
                    .add_with_mode(socket, Event::all(key), PollMode::Edge)
            }
        }

        #[allow(unsafe_code)]
        pub(crate) fn add_room(&self, socket: &Socket, key: usize) -> io::Result<()> {
            // SAFETY: as for `add`: deleted before the socket goes to the
            // closer.
            unsafe {
                self.poller
                    .add_with_mode(socket, Event::writable(key), PollMode::Edge)
            }
        }

        #[allow(unsafe_code)]
        pub(crate) fn add_signal(&self, signal: &Endpoint, key: usize) -> io::Result<()> {
            // SAFETY: the signals live in `Shared`, which outlives the
            // poller thread; it deletes them before it ends.
            unsafe {
                self.poller
                    .add_with_mode(signal, Event::readable(key), PollMode::Edge)
            }
        }

        pub(crate) fn delete(&self, source: impl polling::AsSource) -> io::Result<()> {
            self.poller.delete(source)
        }

        /// As on Linux, except that `max` is not kept: each wait takes
        /// what `buf` holds, and threads wait one after the other (see
        /// `waiting`). A look that does not wait (a zero `timeout`) finds
        /// nothing while another thread waits: that one takes what comes.
        pub(crate) fn wait(
            &self,
            events: &mut Vec<Ready>,
            buf: &mut Events,
            _max: usize,
            timeout: Option<Duration>,
        ) -> io::Result<()> {
            events.clear();
            buf.clear();
            let _turn = match timeout {
                Some(timeout) if timeout.is_zero() => match self.waiting.try_lock() {
                    Ok(turn) => turn,
                    Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(TryLockError::WouldBlock) => return Ok(()),
                },
                _ => lock(&self.waiting),
            };
            self.poller.wait(buf, timeout)?;
            for event in buf.iter() {
                events.push(Ready {
                    key: event.key,
                    readable: event.readable,
                    writable: event.writable,
                    read_closed: false,
                });
            }
            Ok(())
        }

        pub(crate) fn notify(&self) -> io::Result<()> {
            self.poller.notify()
        }

        pub(crate) fn buffer() -> Events {
            Events::new()
        }
    }
}

#[cfg(test)]
mod portable_tests {
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use super::portable::ReadySet;

    /// Idle workers wait in the set together: a second waiter must wait
    /// too, not come back at once with nothing (and be called again, and
    /// spin), and each wake-up must reach a waiter.
    #[test]
    fn two_waiters_both_wait_until_woken() {
        // Long enough that a waiter coming back at once would have done
        // so; the waits' own timeout only bounds a failing test.
        const QUIET: Duration = Duration::from_millis(300);
        const TIMEOUT: Duration = Duration::from_secs(10);
        let set = Arc::new(ReadySet::new().unwrap());
        let (back, back_rx) = crossbeam_channel::unbounded();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (set, back) = (Arc::clone(&set), back.clone());
                thread::spawn(move || {
                    let mut events = Vec::new();
                    let mut buf = ReadySet::buffer();
                    let waited = set.wait(&mut events, &mut buf, usize::MAX, Some(TIMEOUT));
                    back.send(waited.map(|()| events.len())).unwrap();
                })
            })
            .collect();
        assert!(
            back_rx.recv_timeout(QUIET).is_err(),
            "a waiter came back with nothing to report and no wake-up"
        );
        // A busy worker's look, which must not wait for the waiters.
        let (mut events, mut buf) = (Vec::new(), ReadySet::buffer());
        set.wait(&mut events, &mut buf, usize::MAX, Some(Duration::ZERO))
            .unwrap();
        assert!(events.is_empty());
        assert!(
            back_rx.try_recv().is_err(),
            "the look waited for a waiter to come back"
        );
        for _ in 0..2 {
            set.notify().unwrap();
            let back = back_rx
                .recv_timeout(TIMEOUT)
                .expect("a wake-up wakes a waiter");
            assert_eq!(back.unwrap(), 0, "the wake-up is not an event");
        }
        for waiter in waiters {
            waiter.join().unwrap();
        }
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use std::io::Write;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use super::ReadySet;
    use crate::net::socket::Socket;

    /// The engine closes a connection whose client ended first without
    /// deleting it from the set (`CLOSE_LEAVES_SET`): the close must take
    /// it out, so that nothing more is reported under its key, also once
    /// a new connection has its descriptor number.
    #[test]
    fn a_socket_closed_without_delete_leaves_the_set() {
        // Generous: only bounds a failing test on a loaded machine.
        const TIMEOUT: Duration = Duration::from_secs(10);
        const OLD: usize = 1;
        const NEW: usize = 2;
        const { assert!(ReadySet::CLOSE_LEAVES_SET) };
        let set = ReadySet::new().unwrap();
        let (mut events, mut buf) = (Vec::new(), ReadySet::buffer());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut old_client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let old = Socket::Tcp(listener.accept().unwrap().0);
        let old_fd = old.as_raw_fd();
        set.add(&old, OLD).unwrap();
        drop(old);
        let mut new_client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let new = Socket::Tcp(listener.accept().unwrap().0);
        // Most often the same number (the lowest free); other tests may
        // take it meanwhile, which leaves the rest of the test as it is.
        let _same_number = new.as_raw_fd() == old_fd;
        set.add(&new, NEW).unwrap();
        // The old client's bytes and end come first: an old registration
        // still in the set would report them before the new one's bytes.
        // (The old socket is closed: its kernel may answer with a reset.)
        let _ = old_client.write_all(b"stale");
        let _ = old_client.shutdown(Shutdown::Write);
        new_client.write_all(b"fresh").unwrap();
        let started = Instant::now();
        let mut new_readable = false;
        while !new_readable {
            assert!(started.elapsed() < TIMEOUT, "no report for the new socket");
            set.wait(&mut events, &mut buf, usize::MAX, Some(TIMEOUT))
                .unwrap();
            for event in &events {
                assert_ne!(event.key, OLD, "a closed socket is still in the set");
                new_readable |= event.key == NEW && event.readable;
            }
        }
    }

    /// A wait returns for a wake-up whatever its timeout: zero, longer
    /// than `epoll_pwait` takes in one call, `Duration::MAX`, none.
    #[test]
    fn a_wait_of_any_length_returns_for_a_wake_up() {
        let set = ReadySet::new().unwrap();
        let mut events = Vec::new();
        let mut buf = ReadySet::buffer();
        set.wait(&mut events, &mut buf, usize::MAX, Some(Duration::ZERO))
            .unwrap();
        assert!(events.is_empty());
        for timeout in [
            Some(Duration::from_secs(30 * 24 * 3600)),
            Some(Duration::MAX),
            None,
        ] {
            set.notify().unwrap();
            set.wait(&mut events, &mut buf, usize::MAX, timeout)
                .unwrap();
            assert!(events.is_empty(), "the wake-up is not an event");
        }
    }

    /// The wake-up counter is never read: each wake-up is reported once,
    /// wake-ups before a wait are reported together, and a full counter
    /// still wakes.
    #[test]
    fn each_wake_up_is_reported_once_and_a_full_counter_still_wakes() {
        // Returning for a wake-up is at once; a wait that returns before
        // `QUIET` without one was woken by an old wake-up. `LONG` only
        // bounds a failing test.
        const QUIET: Duration = Duration::from_millis(200);
        const LONG: Duration = Duration::from_secs(10);
        let set = ReadySet::new().unwrap();
        let (mut events, mut buf) = (Vec::new(), ReadySet::buffer());
        let mut wait = |timeout: Duration| {
            let started = Instant::now();
            set.wait(&mut events, &mut buf, usize::MAX, Some(timeout))
                .unwrap();
            started.elapsed()
        };
        for _ in 0..3 {
            set.notify().unwrap();
        }
        assert!(wait(LONG) < LONG, "three wake-ups wake a wait");
        assert!(wait(QUIET) >= QUIET, "they are reported once, together");
        set.notify().unwrap();
        assert!(wait(LONG) < LONG, "a later one wakes the next wait");
        set.fill_wake_ups();
        assert!(wait(LONG) < LONG, "filling it is a wake-up too");
        set.notify().unwrap();
        assert!(wait(LONG) < LONG, "a wake-up on a full counter wakes");
        assert!(wait(QUIET) >= QUIET);
    }
}
