//! Helpers for `tests/turns.rs`, the turn mode over real loopback sockets:
//! two turn handlers that tell the test what they do, the file descriptor
//! budget of a test that opens thousands of sockets, and a way to run the
//! one test that counts descriptors alone in its process.
//!
//! As everywhere in `tests/`, nothing here sleeps to wait for something:
//! the handlers report their turns and closes on channels, and every wait
//! is bounded by [`TIMEOUT`] so that a bug fails a test instead of hanging
//! it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use frontdesk::{
    CloseReason, LineError, Lines, Message, Next, Peer, ServerBuilder, ServerHandle, Turn,
    TurnHandler,
};
use socket2::{Domain, Socket, Type};

use crate::util::{tcp_addr, LOCALHOST, TIMEOUT};

/// The longest line the handlers accept. Every line used here is shorter.
pub(crate) const MAX_LINE: usize = 1024;

/// Binds `builder` to [`LOCALHOST`] and spawns a turn-mode server with
/// `handler`.
pub(crate) fn serve_turns(builder: ServerBuilder, handler: impl TurnHandler) -> ServerHandle {
    builder
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(handler)
        .expect("spawn_turns")
}

/// What a handler tells the test, keyed by the client's address (the
/// client's `local_addr`), which a test knows without asking the server.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// A `ready` turn ended; `buffered` bytes of an unfinished line are
    /// kept for the next turn.
    Turn {
        peer: SocketAddr,
        buffered: usize,
        thread: ThreadId,
    },
    /// `close` ran, for `reason`, with these bytes of an unfinished line
    /// still buffered.
    Closed {
        peer: SocketAddr,
        reason: CloseReason,
        buffered: Vec<u8>,
    },
}

/// A line echo: answers each line with itself. A line must be complete
/// within `request_timeout` of its first byte (see
/// [`Lines::line_deadline`]); at shutdown a client gets `bye\n` as its
/// last line.
#[derive(Debug)]
pub(crate) struct Echo {
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) events: Sender<Event>,
}

impl Echo {
    /// An echo without a request timeout, and the receiver of its events.
    pub(crate) fn new() -> (Echo, Receiver<Event>) {
        Echo::with_request_timeout(None)
    }

    pub(crate) fn with_request_timeout(timeout: Option<Duration>) -> (Echo, Receiver<Event>) {
        let (events, receiver) = crossbeam_channel::unbounded();
        let echo = Echo {
            request_timeout: timeout,
            events,
        };
        (echo, receiver)
    }
}

impl TurnHandler for Echo {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        Ok(Lines::new(turn, MAX_LINE))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        let next = loop {
            match lines.next_line() {
                Ok(Some(line)) => turn.send([line, b"\n"].concat())?,
                Ok(None) => break Next::Park,
                Err(LineError::Closed { .. }) => break Next::Close,
                Err(error) => return Err(error.into()),
            }
        };
        turn.set_deadline(lines.line_deadline(self.request_timeout));
        let _ = self.events.send(Event::Turn {
            peer: tcp_addr(turn.peer_addr()),
            buffered: lines.buffered().len(),
            thread: thread::current().id(),
        });
        Ok(next)
    }

    fn close(&self, lines: Lines, turn: &mut Turn<'_>, reason: CloseReason) {
        if reason == CloseReason::Shutdown {
            let _ = turn.send("bye\n");
        }
        let _ = self.events.send(Event::Closed {
            peer: tcp_addr(turn.peer_addr()),
            reason,
            buffered: lines.buffered().to_vec(),
        });
    }
}

/// A chat room: every line a member sends goes to every other member, as
/// one shared [`Message`], through the members' [`Peer`]s. It reports
/// each close (the client's address and the reason) on a channel.
#[derive(Debug)]
pub(crate) struct Room {
    members: Mutex<HashMap<u64, Peer>>,
    closes: Sender<(SocketAddr, CloseReason)>,
}

impl Room {
    pub(crate) fn new() -> (Room, Receiver<(SocketAddr, CloseReason)>) {
        let (closes, receiver) = crossbeam_channel::unbounded();
        let room = Room {
            members: Mutex::new(HashMap::new()),
            closes,
        };
        (room, receiver)
    }
}

impl TurnHandler for Room {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(turn.id(), turn.peer());
        Ok(Lines::new(turn, MAX_LINE))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line() {
                Ok(Some(line)) => {
                    let message = Message::from([line, b"\n"].concat());
                    // `Peer::send` never waits, so the room stays locked
                    // for no longer than the sends take. A member whose
                    // outbox is full is closed by the server (the default
                    // `OutboxFull::Close`); the others are not held up.
                    let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
                    for (id, peer) in members.iter() {
                        if *id != turn.id() {
                            let _ = peer.send(&message);
                        }
                    }
                }
                Ok(None) => return Ok(Next::Park),
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn close(&self, _: Lines, turn: &mut Turn<'_>, reason: CloseReason) {
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&turn.id());
        let _ = self.closes.send((tcp_addr(turn.peer_addr()), reason));
    }
}

/// Receives events until `want` accepts one, and returns it; panics naming
/// `what`, with the events seen meanwhile, if none comes within
/// [`TIMEOUT`].
pub(crate) fn next_event<T: std::fmt::Debug>(
    events: &Receiver<T>,
    what: &str,
    mut want: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    loop {
        match events.recv_deadline(deadline) {
            Ok(event) if want(&event) => return event,
            Ok(event) => seen.push(event),
            Err(_) => {
                panic!("no event within {TIMEOUT:?} for: {what}; events seen meanwhile: {seen:#?}")
            }
        }
    }
}

/// Connects to `addr` as a client with little room for what the server
/// sends it: a receive buffer of about `receive_buffer` bytes (the kernel
/// rounds it up to its minimum and doubles it), and segments of at most
/// `mss` bytes. Read and write timeouts are [`TIMEOUT`].
///
/// Both are set before `connect`. The receive buffer sizes the window the
/// client advertises. The segment size matters as much: on loopback
/// segments are 64 KiB, and Linux sizes a new connection's send buffer
/// for ten segments in flight, twice over, so the server's side of a
/// loopback connection buffers about 2.6 MB before its writes would
/// block. The server's segments to this client are at most `mss` bytes,
/// which shrinks that to tens of kilobytes.
pub(crate) fn client_with_little_room(
    addr: SocketAddr,
    receive_buffer: usize,
    mss: u32,
) -> TcpStream {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .set_recv_buffer_size(receive_buffer)
        .expect("SO_RCVBUF");
    socket.set_tcp_mss(mss).expect("TCP_MAXSEG");
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Raises this process's soft limit of open files to its hard limit (once
/// per process) and returns the soft limit then in force.
///
/// A turn-mode test holds thousands of sockets at once, and in one process
/// each client costs two descriptors: the client's socket and the one the
/// server accepted.
pub(crate) fn raise_fd_limit() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable `rlimit` that outlives the
        // call.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: `raised` points to a valid `rlimit` for the whole
            // call, which only reads it.
            let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
            if rc == 0 {
                limit = raised;
            } else {
                eprintln!(
                    "could not raise RLIMIT_NOFILE to {}: {}",
                    limit.rlim_max,
                    io::Error::last_os_error()
                );
            }
        }
        // `rlim_t` is `u64` on Linux, not on every Unix.
        #[allow(clippy::useless_conversion)]
        let soft = u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX);
        soft
    })
}

/// How many clients a test can afford out of `wanted`: each costs two
/// descriptors (client and server side), and the test may use `share` of
/// the process's limit, the rest being for the tests that run at the same
/// time. Says so loudly when that is fewer than wanted.
pub(crate) fn affordable_clients(test: &str, wanted: usize, share: f64) -> usize {
    let limit = raise_fd_limit();
    let budget = (limit as f64 * share) as usize;
    let fit = budget.saturating_sub(64) / 2;
    if fit < wanted {
        eprintln!(
            "\n!!! {test}: RLIMIT_NOFILE is {limit} (hard limit included), which leaves room \
             for {fit} clients, not {wanted}: running with {fit}. Raise `ulimit -Hn` to \
             test the full number.\n"
        );
    }
    assert!(
        fit >= 10,
        "{test}: too few file descriptors ({limit}) to test anything"
    );
    fit.min(wanted)
}

/// Tests in one binary run at the same time, in one process. The test that
/// counts this process's descriptors must run alone: every other test
/// holds [`share_process`] for its whole life, and that one
/// [`run_alone`].
static DESCRIPTORS: RwLock<()> = RwLock::new(());

/// For a test that opens descriptors: hold the guard until the end of the
/// test (declare it first, so that it is dropped last).
pub(crate) fn share_process() -> RwLockReadGuard<'static, ()> {
    DESCRIPTORS.read().unwrap_or_else(PoisonError::into_inner)
}

/// For the test that counts descriptors: no other test of this binary runs
/// while the guard is held.
pub(crate) fn run_alone() -> RwLockWriteGuard<'static, ()> {
    DESCRIPTORS.write().unwrap_or_else(PoisonError::into_inner)
}
