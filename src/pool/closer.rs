//! The gentle close: how every connection ends, whoever ends it.
//!
//! Closing a socket that still has unread input makes the kernel send a
//! reset instead of a FIN, and a reset can destroy data the client has not
//! read yet: the last reply, a "line too long" or "busy" error. So a
//! connection ends in three steps, as nginx's lingering close does:
//!
//! 1. `shutdown(SHUT_WR)`: the client reads everything we wrote, then end
//!    of stream;
//! 2. read and discard what the client still sends, until its end of
//!    stream, for at most [`Linger::time`] and [`Linger::bytes`];
//! 3. close.
//!
//! Step 2 is skipped when a read of the connection already returned the
//! client's end of stream ([`ClientEnd::Read`]): nothing more can come.
//! Step 1 as well when, besides, nobody else can hold the socket
//! ([`ClientEnd::ReadUnshared`]): the close alone sends the FIN.
//! Otherwise the socket goes to the closer thread (`frontdesk-closer`),
//! unread: a lingering client never holds a worker or the acceptor. A
//! close cut short by the bounds is counted in
//! [`Stats::linger_cut`](crate::Stats::linger_cut).
//!
//! # The closer's look
//!
//! Most clients that had not closed yet do so within a round trip: the
//! server closed first ("quit", "bye"), and the client's end of stream is
//! on its way; a read right after the shutdown would find nothing. The
//! closer takes a look at each socket a moment
//! after its close began ([`SECOND_LOOK`]), all those due at once, with
//! one read each: at a server closing thousands of connections a second,
//! one wake-up of the closer ends a batch of them, and a socket costs a
//! read and its close. Only a socket still open after that look goes into
//! the closer's readiness set (epoll, kqueue), where each costs the same
//! whether ten or ten thousand linger.
//!
//! The closer is woken for a new socket only when it has no second look
//! planned: otherwise it finds the socket at that look. The wake-up is
//! the workers' own protocol ([`Idle`]), so that no socket is left unseen
//! in the inbox while the closer sleeps.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use polling::{Event, Events, Poller};

use crate::config::Linger;
use crate::error::{Error, Result};
use crate::net::socket::Socket;
use crate::pool::queue::Idle;
use crate::pool::shutdown::Shared;
use crate::stats::Counters;
use crate::stream::wait;

/// Hands connections to be closed gently to the closer thread; cheap to
/// clone, one per thread that ends connections.
#[derive(Debug, Clone)]
pub(crate) struct Closer {
    inbox: Sender<Message>,
    /// The closer thread's readiness set; `notify` wakes it for a message.
    poller: Arc<Poller>,
    /// Whether the closer sleeps with no second look planned, and the
    /// wake-up it is then owed for a new socket.
    idle: Arc<Idle>,
    linger: Linger,
    shared: Arc<Shared>,
}

/// The closer thread, to be finished and joined at the end of a shutdown.
#[derive(Debug)]
pub(crate) struct CloserThread {
    thread: JoinHandle<()>,
    closer: Closer,
}

#[derive(Debug)]
enum Message {
    Linger(Lingering),
    /// The server is shutting down: close whatever still lingers at this
    /// instant, and stop once nothing does.
    Finish(Instant),
}

#[derive(Debug)]
struct Lingering {
    stream: Arc<Socket>,
    until: Instant,
    /// Bytes that may still be discarded.
    budget: usize,
    /// Last, so that it is dropped after the stream.
    _counted: Counted,
}

/// A close counted in [`Stats::lingering`](crate::Stats::lingering): from
/// before the client can see our end of stream until the socket is
/// dropped, wherever that is (closed at once, or by the closer thread,
/// or with the inbox of a closer that has finished). Counted so, and not
/// by the closer thread alone, a close is never missing from the count
/// while it sits in the closer's inbox, which it may until the closer's
/// next second look.
#[derive(Debug)]
struct Counted(Arc<Shared>);

impl Counted {
    fn new(shared: &Arc<Shared>) -> Counted {
        shared.counters.lingering.fetch_add(1, Ordering::Relaxed);
        Counted(Arc::clone(shared))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.counters.lingering.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Closer {
    /// Starts the closer thread; `poller` is made beforehand, when the
    /// server is bound, so that starting needs no new descriptor.
    pub(crate) fn start(
        shared: Arc<Shared>,
        linger: Linger,
        poller: Poller,
    ) -> Result<(Closer, CloserThread)> {
        let (inbox, messages) = crossbeam_channel::unbounded();
        let poller = Arc::new(poller);
        let idle = {
            let poller = Arc::clone(&poller);
            Idle::elsewhere(move || {
                if let Err(error) = poller.notify() {
                    log::error!("could not wake the closer: error={error}");
                }
            })
        };
        let closer = Closer {
            inbox,
            poller,
            idle,
            linger,
            shared,
        };
        let name = "frontdesk-closer".to_string();
        let thread = {
            let poller = Arc::clone(&closer.poller);
            let idle = Arc::clone(&closer.idle);
            let shared = Arc::clone(&closer.shared);
            thread::Builder::new()
                .name(name.clone())
                .spawn(move || run(&messages, &poller, &idle, &shared.counters))
                .map_err(|source| Error::Spawn { name, source })?
        };
        let closer_thread = CloserThread {
            thread,
            closer: closer.clone(),
        };
        Ok((closer, closer_thread))
    }

    /// Ends `stream` gently: shuts down the write side, then closes at once
    /// if `client` says the client's end of stream has been read (nothing
    /// more can come, so nothing can be left unread to make the close a
    /// reset); otherwise the closer thread discards what the client sends
    /// and waits for its end. Never waits, and does not read here: the
    /// client rarely has ended yet (it answers the end of stream this
    /// sends), so a read now would mostly find nothing, and the callers
    /// include the poller and the acceptor, which discarding up to
    /// `linger_bytes` would hold up. The closer's first look, a moment
    /// later, usually finds the client's end.
    ///
    /// `stream` may be shared (a worker's shutdown slot may still hold it
    /// for a moment); the socket is closed when the last reference goes.
    pub(crate) fn close(&self, stream: Arc<Socket>, client: ClientEnd) {
        let counted = Counted::new(&self.shared);
        // Moved after the count, so that a close ending here drops the
        // socket before it is counted out.
        let stream = stream;
        if client.closes_now(&stream) {
            // The drop is the close, and sends the FIN a shutdown would.
            return;
        }
        let _ = stream.shutdown(Shutdown::Write);
        if client != ClientEnd::NotSeen {
            return;
        }
        let budget = self.linger.bytes;
        if self.linger.time.is_zero() {
            // No time to wait: what is there now is all it gets.
            return match discard(&stream, budget, Some(1)) {
                Drained::Ended => {}
                Drained::OverBudget | Drained::Pending(_) => self.cut(),
            };
        }
        let lingering = Lingering {
            stream,
            until: Instant::now() + self.linger.time,
            budget,
            _counted: counted,
        };
        match self.inbox.send(Message::Linger(lingering)) {
            Ok(()) => self.idle.wake_one(),
            // The closer has finished: only a worker that outlived the
            // shutdown gets here. Closing at once is all that is left.
            Err(_) => self.cut(),
        }
    }

    fn cut(&self) {
        Counters::bump(&self.shared.counters.linger_cut);
    }

    fn wake(&self) {
        if let Err(error) = self.poller.notify() {
            log::error!("could not wake the closer: error={error}");
        }
    }
}

/// What the server knows of the client's side of a connection it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientEnd {
    /// A read returned the client's end of stream: everything it sent has
    /// been read, and nothing more can come.
    Read,
    /// As `Read`, and no copy of the socket's descriptor was ever given
    /// out (the turn mode gives none; the handler mode lends the
    /// `TcpStream`, which a handler may clone).
    ReadUnshared,
    /// Not seen (the server ends first, or its reads stopped before).
    NotSeen,
}

impl ClientEnd {
    /// Whether dropping `stream` closes the connection gently by itself,
    /// so that it needs no `shutdown`: the client's end was read, so
    /// nothing is left unread to turn the close into a reset, and this is
    /// the last reference to the only descriptor, so the drop closes it
    /// now, with a FIN. (A reference can only go meanwhile: whoever
    /// closes a connection has taken the socket from where others find
    /// it.) A busy server opening and closing connections makes one
    /// system call fewer for each, and the turn mode's engine also leaves
    /// the socket in its readiness set where the close takes it out (epoll,
    /// not `polling`'s kqueue: see `ReadySet::CLOSE_LEAVES_SET`).
    pub(crate) fn closes_now(self, stream: &Arc<Socket>) -> bool {
        self == ClientEnd::ReadUnshared && Arc::strong_count(stream) == 1
    }
}

impl CloserThread {
    /// Closes whatever still lingers at `deadline`, and waits for the
    /// thread to end, which is at `deadline` at the latest.
    pub(crate) fn finish(self, deadline: Instant) {
        let CloserThread { thread, closer } = self;
        if closer.inbox.send(Message::Finish(deadline)).is_ok() {
            closer.wake();
        }
        if thread.join().is_err() {
            log::error!("the closer thread panicked");
        }
    }
}

enum Drained {
    /// The client's end of stream (or an error): nothing to wait for.
    Ended,
    /// More than the budget arrived.
    OverBudget,
    /// Nothing more to read now; this much budget is left.
    Pending(usize),
}

/// Reads and discards what has arrived, without waiting, in at most
/// `reads` reads (`None`: until nothing more is there).
fn discard(stream: &Socket, mut budget: usize, mut reads: Option<usize>) -> Drained {
    let mut sink = [0u8; 4096];
    loop {
        if let Some(left) = &mut reads {
            if *left == 0 {
                return Drained::Pending(budget);
            }
            *left -= 1;
        }
        match wait::recv_now(stream, &mut sink) {
            Ok(0) => return Drained::Ended,
            Ok(n) if n > budget => return Drained::OverBudget,
            Ok(n) => budget -= n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return Drained::Pending(budget)
            }
            Err(_) => return Drained::Ended,
        }
    }
}

/// How long after its close began the closer looks at a socket again,
/// with one read, before it watches it in its readiness set: long enough
/// for a client's end of stream to cross a local network, and for the
/// closes of a busy second to gather into one wake-up of the closer;
/// short enough that a socket holds its descriptor for no longer than
/// the kernel's own timers would notice.
const SECOND_LOOK: Duration = Duration::from_millis(1);

/// The closer thread's loop: take new sockets from the inbox, give each
/// its second look when due, and wait for the watched ones to have input
/// (or their end of stream), for a message, or for the nearest deadline.
fn run(messages: &Receiver<Message>, poller: &Poller, idle: &Idle, counters: &Counters) {
    // Sockets still to get their second look, with its time, in the
    // order they came: that of their looks, as every one waits as long.
    let mut fresh: VecDeque<(Instant, Lingering)> = VecDeque::new();
    let mut lingering: HashMap<usize, Lingering> = HashMap::new();
    // Every socket lingers for the same time, so deadlines come in the
    // order the sockets arrived: the oldest is at the front.
    let mut deadlines: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut next_key = 0usize;
    let mut finish: Option<Instant> = None;
    let mut events = Events::new();
    let close = |lingering: &mut HashMap<usize, Lingering>, key: usize, cut: bool| {
        if let Some(l) = lingering.remove(&key) {
            // Deleted before the socket can close (see `register`).
            let _ = poller.delete(&*l.stream);
            if cut {
                Counters::bump(&counters.linger_cut);
            }
        }
    };
    loop {
        let now = Instant::now();
        loop {
            match messages.try_recv() {
                Ok(Message::Linger(l)) => {
                    let at = (now + SECOND_LOOK).min(l.until);
                    fresh.push_back((at, l));
                }
                Ok(Message::Finish(at)) => finish = Some(at),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    finish.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        let finishing = finish.is_some_and(|at| at <= now);
        while fresh.front().is_some_and(|&(at, _)| at <= now || finishing) {
            let Some((_, mut l)) = fresh.pop_front() else {
                break;
            };
            match discard(&l.stream, l.budget, None) {
                Drained::Ended => {}
                Drained::OverBudget => Counters::bump(&counters.linger_cut),
                Drained::Pending(_) if l.until <= now || finishing => {
                    Counters::bump(&counters.linger_cut)
                }
                Drained::Pending(budget) => {
                    l.budget = budget;
                    next_key = next_key.wrapping_add(1);
                    match register(poller, &l.stream, next_key) {
                        Ok(()) => {
                            deadlines.push_back((l.until, next_key));
                            lingering.insert(next_key, l);
                        }
                        Err(error) => {
                            log::warn!("could not watch a closing connection: error={error}");
                            Counters::bump(&counters.linger_cut);
                        }
                    }
                }
            }
        }
        if finishing {
            let keys: Vec<usize> = lingering.keys().copied().collect();
            for key in keys {
                close(&mut lingering, key, true);
            }
            deadlines.clear();
        }
        while let Some(&(until, key)) = deadlines.front() {
            if until > now {
                break;
            }
            deadlines.pop_front();
            close(&mut lingering, key, true);
        }
        if finish.is_some() && lingering.is_empty() && fresh.is_empty() {
            return;
        }
        let next = fresh
            .front()
            .map(|&(at, _)| at)
            .into_iter()
            .chain(deadlines.front().map(|&(until, _)| until))
            .chain(finish)
            .min()
            .map(|at| at.saturating_duration_since(now));
        // With a second look planned, the closer finds new sockets in the
        // inbox then, unwoken. Without one it counts itself idle, so that
        // the next socket wakes it, and looks at the inbox once more (see
        // `Idle`): a socket sent before the count is seen here.
        let counted = fresh.is_empty();
        if counted {
            idle.begin_wait();
            if !messages.is_empty() {
                idle.end_wait();
                continue;
            }
        }
        events.clear();
        let waited = poller.wait(&mut events, next);
        if counted {
            idle.end_wait();
        }
        if let Err(error) = waited {
            log::error!("the closer could not wait: error={error}");
            continue;
        }
        for event in events.iter() {
            let Some(l) = lingering.get_mut(&event.key) else {
                continue;
            };
            match discard(&l.stream, l.budget, None) {
                Drained::Ended => close(&mut lingering, event.key, false),
                Drained::OverBudget => close(&mut lingering, event.key, true),
                Drained::Pending(budget) => {
                    l.budget = budget;
                    // One-shot interest: arm it again for the next input.
                    if poller
                        .modify(&*l.stream, Event::readable(event.key))
                        .is_err()
                    {
                        close(&mut lingering, event.key, true);
                    }
                }
            }
        }
    }
}

/// Adds a lingering socket to the closer's readiness set.
#[allow(unsafe_code)]
fn register(poller: &Poller, stream: &Socket, key: usize) -> io::Result<()> {
    // SAFETY: `polling` requires the source to be deleted before it is
    // closed. The socket stays open while its `Lingering` is in the
    // closer's map (it holds an `Arc` of the stream), and it leaves the
    // map only through `close` in `run`, which deletes it first.
    unsafe { poller.add(stream, Event::readable(key)) }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;

    use super::ClientEnd;
    use crate::net::socket::Socket;

    /// Only an unshared socket whose client has ended closes by its drop
    /// alone; another reference, or a descriptor the handler mode lent
    /// out, needs the shutdown to send the FIN now.
    #[test]
    fn only_the_last_reference_to_an_ended_unshared_socket_skips_the_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let socket = Arc::new(Socket::Tcp(stream));
        assert!(ClientEnd::ReadUnshared.closes_now(&socket));
        assert!(!ClientEnd::Read.closes_now(&socket));
        assert!(!ClientEnd::NotSeen.closes_now(&socket));
        let other = Arc::clone(&socket);
        assert!(!ClientEnd::ReadUnshared.closes_now(&socket));
        drop(other);
        assert!(ClientEnd::ReadUnshared.closes_now(&socket));
    }
}
