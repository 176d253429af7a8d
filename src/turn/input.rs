//! What a turn-mode connection knows of its unread input, between the
//! thread that learns that input arrived (an idle worker waiting in the
//! readiness set), and the worker whose turn reads it.
//!
//! The readiness set is edge-triggered: it reports input once, when it
//! arrives, and never again while it waits. So the connection keeps the
//! news itself. Every report counts one (`arrived`); a read that shows the
//! socket empty records the count it saw *before* it asked the kernel
//! (`empty_at`). Input may wait exactly while the two differ: a report
//! that comes after the read began is never covered by it, so no input is
//! forgotten, and a read never has to be repeated to find out that the
//! socket is empty (it costs a system call that finds nothing).
//!
//! The reports are made, and looked at before a connection parks, under
//! the connection's lock, so a report is either seen by the parking turn
//! or finds the connection parked and gives it a turn.

#[cfg(loom)]
use loom::sync::atomic::{
    AtomicBool, AtomicU32,
    Ordering::{Relaxed, SeqCst},
};
#[cfg(not(loom))]
use std::sync::atomic::{
    AtomicBool, AtomicU32,
    Ordering::{Relaxed, SeqCst},
};

/// The news of a connection's input.
#[derive(Debug)]
pub(crate) struct Input {
    /// Reports of input, counted (wrapping).
    arrived: AtomicU32,
    /// `arrived` as it was when a read last showed the socket empty.
    empty_at: AtomicU32,
    /// The client's end of stream (or an error) was reported: a short read
    /// shows nothing any more, since what remains is the end itself.
    read_closed: AtomicBool,
    /// A read found the end of stream: every later read finds it again,
    /// without asking the kernel.
    ended: AtomicBool,
    /// `arrived` as it was when the turn under way began.
    turn_began: AtomicU32,
    // The two flags below are what the turn under way did with the input,
    // not news of it; they are kept here rather than in the `Entry` because
    // here they fill this struct's padding: 8 bytes less for every idle
    // connection (issue #14).
    /// A read in the turn under way returned bytes: only a turn that read
    /// counts as input for the idle timeout and the drain's quiet time.
    took: AtomicBool,
    /// `Lines` keeps bytes the handler has not asked for (a line may be
    /// among them): the socket will not say so, so the connection gets a
    /// turn for them once its outbox is empty. Set in a turn, read under
    /// the entry's lock after it.
    held: AtomicBool,
}

/// What is known of a connection's input before a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// Nothing waits: the read would find nothing.
    Empty,
    /// The end of stream was read: the read would find it again.
    Ended,
    /// Input may wait: read, and tell [`Input::read`] what the read found,
    /// with this token.
    Unsure(u32),
}

/// What a read found, as far as [`Input`] cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// Fewer bytes than asked for, from a socket whose short reads show
    /// that its buffer was emptied (a plain socket, where the readiness
    /// set reports the end of stream apart).
    Short,
    /// Nothing: the socket (and any TLS session) holds no input now.
    Nothing,
    /// As many bytes as asked for, or bytes from a source whose short
    /// reads show nothing: more may wait.
    More,
    /// The end of stream.
    End,
}

impl Input {
    /// A new connection: its socket may hold input already (a client
    /// usually sends its first request at once), which no report will
    /// tell of, since it came before the connection was registered.
    pub(crate) fn new() -> Input {
        Input {
            arrived: AtomicU32::new(1),
            empty_at: AtomicU32::new(0),
            read_closed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            turn_began: AtomicU32::new(1),
            took: AtomicBool::new(false),
            held: AtomicBool::new(false),
        }
    }

    /// The poller's part: the readiness set reported input, or the end of
    /// stream (`read_closed`).
    pub(crate) fn arrived(&self, read_closed: bool) {
        if read_closed {
            // Before the count: a read that sees this report sees the flag.
            self.read_closed.store(true, SeqCst);
        }
        self.arrived.fetch_add(1, SeqCst);
    }

    /// Before a read: whether it can be skipped, its outcome known.
    pub(crate) fn before_read(&self) -> Known {
        if self.ended.load(SeqCst) {
            return Known::Ended;
        }
        let seen = self.arrived.load(SeqCst);
        match seen == self.empty_at.load(SeqCst) {
            true => Known::Empty,
            false => Known::Unsure(seen),
        }
    }

    /// After a read that began at `seen`.
    pub(crate) fn read(&self, seen: u32, found: Found) {
        let empty = match found {
            Found::Nothing => true,
            Found::End => {
                self.ended.store(true, SeqCst);
                true
            }
            // A report of the end of stream the read may have raced with:
            // only a read that finds nothing shows the socket empty then.
            Found::Short => !self.read_closed.load(SeqCst),
            Found::More => false,
        };
        if empty {
            self.empty_at.store(seen, SeqCst);
        }
    }

    /// A turn begins: [`news_in_turn`](Input::news_in_turn) counts from
    /// now, and it has read nothing and holds nothing yet.
    pub(crate) fn begin_turn(&self) {
        self.took.store(false, Relaxed);
        self.held.store(false, Relaxed);
        self.turn_began.store(self.arrived.load(SeqCst), SeqCst);
    }

    /// A read in the turn under way returned bytes.
    pub(crate) fn took_some(&self) {
        self.took.store(true, Relaxed);
    }

    /// Whether a read in the turn under way returned bytes.
    pub(crate) fn took_any(&self) -> bool {
        self.took.load(Relaxed)
    }

    /// `Lines` keeps bytes the handler has not asked for (`yes`), or none.
    pub(crate) fn hold(&self, yes: bool) {
        self.held.store(yes, Relaxed);
    }

    /// Whether `Lines` keeps bytes the handler has not asked for.
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Relaxed)
    }

    /// Whether input was reported since the turn under way began.
    pub(crate) fn news_in_turn(&self) -> bool {
        self.arrived.load(SeqCst) != self.turn_began.load(SeqCst)
    }

    /// Whether a read found the end of stream: nothing more can come.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(SeqCst)
    }

    /// Whether input may wait: reported and not yet shown gone. The end
    /// of stream, once read, does not wait: a handler that parks after it
    /// is not called again for it.
    pub(crate) fn may_wait(&self) -> bool {
        !self.ended.load(SeqCst) && self.arrived.load(SeqCst) != self.empty_at.load(SeqCst)
    }
}

/// The protocol checked for every interleaving, with the real [`Input`]:
/// a client's bytes and end of stream arrive while the connection's turns
/// read them and park; the model of the kernel is a socket buffer, and of
/// the engine the phase under the lock, as `Entry::on_ready` and
/// `Entry::park` keep them. Run with
/// `RUSTFLAGS="--cfg loom" cargo test --lib --release turn::input`.
#[cfg(all(test, loom))]
mod model {
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    use super::*;

    /// What the kernel holds for the connection.
    #[derive(Default)]
    struct Socket {
        bytes: usize,
        end: bool,
    }

    /// The connection as the engine keeps it.
    struct Conn {
        socket: Mutex<Socket>,
        input: Input,
        /// Under the lock: parked (true) or with a worker.
        parked: Mutex<bool>,
        /// Turns running now: never more than one.
        in_turn: AtomicUsize,
        /// What the turns read, and whether they saw the end.
        read: AtomicUsize,
        saw_end: AtomicBool,
    }

    const ASK: usize = 2;

    impl Conn {
        /// The kernel takes bytes (or the end) from the client; the set
        /// then reports it, as `Entry::on_ready` does: true when the
        /// connection was parked and the report gives it a turn.
        fn deliver(&self, bytes: usize, end: bool) -> bool {
            {
                let mut socket = self.socket.lock().unwrap();
                socket.bytes += bytes;
                socket.end |= end;
            }
            let mut parked = self.parked.lock().unwrap();
            self.input.arrived(end);
            if *parked {
                *parked = false;
                return true;
            }
            false
        }

        /// A turn: reads until the news says nothing waits (the handler
        /// reads until `WouldBlock`); returns whether it read anything.
        fn turn(&self) -> bool {
            assert_eq!(self.in_turn.fetch_add(1, SeqCst), 0, "two turns at once");
            self.input.begin_turn();
            let mut took = false;
            loop {
                let seen = match self.input.before_read() {
                    Known::Empty => break,
                    Known::Ended => {
                        assert!(self.saw_end.load(SeqCst));
                        break;
                    }
                    Known::Unsure(seen) => seen,
                };
                let (n, end) = {
                    let mut socket = self.socket.lock().unwrap();
                    let n = socket.bytes.min(ASK);
                    socket.bytes -= n;
                    (n, n == 0 && socket.end)
                };
                if end {
                    self.saw_end.store(true, SeqCst);
                    self.input.read(seen, Found::End);
                    break;
                }
                let found = match n {
                    0 => Found::Nothing,
                    n if n < ASK => Found::Short,
                    _ => Found::More,
                };
                self.read.fetch_add(n, SeqCst);
                took |= n > 0;
                self.input.read(seen, found);
                if found == Found::Nothing {
                    break;
                }
            }
            self.in_turn.fetch_sub(1, SeqCst);
            took
        }

        /// After a turn: parks, or goes on (true) when input may wait and
        /// the turn made progress (`Entry::made_progress`).
        fn park(&self, took: bool) -> bool {
            let mut parked = self.parked.lock().unwrap();
            if self.input.may_wait() && (took || self.input.news_in_turn()) {
                return true;
            }
            *parked = true;
            false
        }

        /// Turns until parked, as a worker runs them.
        fn serve(&self) {
            loop {
                let took = self.turn();
                if !self.park(took) {
                    return;
                }
            }
        }
    }

    fn check(deliveries: &'static [(usize, bool)]) {
        loom::model(move || {
            let conn = Arc::new(Conn {
                socket: Mutex::new(Socket::default()),
                input: Input::new(),
                parked: Mutex::new(false),
                in_turn: AtomicUsize::new(0),
                read: AtomicUsize::new(0),
                saw_end: AtomicBool::new(false),
            });
            let client = {
                let conn = Arc::clone(&conn);
                thread::spawn(move || {
                    // Each turn the poller gives is run by a worker.
                    let mut workers = Vec::new();
                    for &(bytes, end) in deliveries {
                        if conn.deliver(bytes, end) {
                            let conn = Arc::clone(&conn);
                            workers.push(thread::spawn(move || conn.serve()));
                        }
                    }
                    for worker in workers {
                        worker.join().unwrap();
                    }
                })
            };
            // The first turn, right after the connection is accepted.
            conn.serve();
            client.join().unwrap();
            let total: usize = deliveries.iter().map(|&(bytes, _)| bytes).sum();
            let ends = deliveries.iter().any(|&(_, end)| end);
            assert!(*conn.parked.lock().unwrap(), "every turn parks in the end");
            assert_eq!(conn.read.load(SeqCst), total, "input left unread");
            assert_eq!(conn.saw_end.load(SeqCst), ends, "end of stream unseen");
        });
    }

    #[test]
    fn no_input_is_forgotten() {
        check(&[(1, false), (3, false)]);
    }

    #[test]
    fn the_end_of_stream_is_seen_after_a_short_read() {
        check(&[(1, false), (0, true)]);
    }

    #[test]
    fn bytes_and_the_end_in_one_report() {
        check(&[(1, true)]);
    }
}
