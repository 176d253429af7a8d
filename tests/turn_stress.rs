//! Stress test of the turn mode (issue 14, item 9): 200 clients each
//! pipeline 1,000 line requests, written in pieces split at random byte
//! boundaries, to a turn-mode server with two workers. It asserts:
//!
//! - no connection is ever in two calls of its handler at once (`open`,
//!   `ready`, `close`), checked inside the handler with a per-connection
//!   "in a call" flag, and no more calls run at once than there are
//!   workers;
//! - every connection gets `open` once and `close` once, for
//!   [`CloseReason::Done`] (the client's half-close);
//! - every client receives exactly its 1,000 replies, in order and intact,
//!   then a clean end of stream (a FIN, not a reset);
//! - after `shutdown`: no handler error, no panic, and
//!   `accepted == completed + rejected + dropped`.
//!
//! The handler is the obvious loop over [`Lines`] with `turn.send(..)?`,
//! every 7th reply four times as long as the others. Half the clients
//! flood (all 1,000 requests in flight); the others keep a random window
//! of 2..=32 requests in flight, so that new input keeps arriving while
//! their connection is in a turn, where a lost wake-up or a second turn at
//! once would show. A quarter of the clients flood with a small receive
//! buffer against a small outbox: their outboxes fill, and `Lines` must
//! hold input back (and the engine wake the connection when the outbox
//! drains) instead of letting `send` fail.
//!
//! The chunking is random but seeded: the seed is printed, and
//! `FRONTDESK_STRESS_SEED=<seed> cargo test --test turn_stress -- --nocapture`
//! replays the same writes (the threads' interleaving is the OS's).
//!
//! Conventions as in the other tests: the server binds `127.0.0.1:0`,
//! clients have read and write timeouts, every loop is bounded, nothing
//! sleeps to wait for something, and the whole test is bounded by
//! [`TEST_WITHIN`]: a hang fails it rather than the CI job.
#![cfg(unix)]
// `turns_util::raise_fd_limit` calls setrlimit, which std does not wrap.
#![allow(unsafe_code)]

mod turns_util;
mod util;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use frontdesk::{CloseReason, LineError, Lines, Next, Server, Stats, Turn, TurnHandler};
use turns_util::{affordable_clients, client_with_little_room, serve_turns};
use util::{is_reset, tcp_addr, try_read_to_clean_end};

/// Clients at once.
const CLIENTS: usize = 200;
/// Requests each client pipelines.
const REQUESTS: usize = 1_000;
/// Worker threads of the server: far fewer than clients.
const WORKERS: usize = 2;
/// The largest single write of a client; each write is 1..=this bytes.
const MAX_CHUNK: usize = 300;
/// Every `LONG_EVERY`th reply is [`LONG_FACTOR`] times as long.
const LONG_EVERY: usize = 7;
const LONG_FACTOR: usize = 4;
/// The server's outbox limit: small, so that a tight client backs it up
/// (`Lines` holds input back once it is over half full). A long reply is
/// a few hundred bytes, well under half of it.
const OUTBOX_LIMIT: usize = 4 * 1024;
/// The longest request line the handler accepts; every one here is
/// shorter (under 80 bytes).
const MAX_LINE: usize = 1024;

/// The bound on the whole test: clients, then shutdown. A debug build
/// takes a few seconds on an idle 2-core machine; this is for a loaded
/// CI machine, and only has to be finite.
const TEST_WITHIN: Duration = Duration::from_secs(120);

/// The clients' read and write timeouts. Generous, because a client's
/// silence here is not a fault: 200 clients share two workers, and with
/// the clients' 400 threads on a loaded 2-core machine (in a debug build)
/// a client can wait seconds for its next reply or for room to write. The
/// timeout only turns a server that stopped answering into a failure
/// instead of a hang; [`TEST_WITHIN`] bounds the test as a whole.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Stack of each client thread: they only format and compare short lines.
const CLIENT_STACK: usize = 256 * 1024;

/// The kinds of client, in turn by index: one in four has a small
/// receive buffer and small segments (see [`client_with_little_room`]),
/// so that the server cannot push its replies into the kernel and its
/// outbox fills; that one and the next flood (all [`REQUESTS`] in flight);
/// the other two keep a random window of 2..=32 requests in flight.
const KINDS: usize = 4;

/// Whether client `index` has little room for replies.
fn is_tight(index: usize) -> bool {
    index % KINDS == 0
}

/// Whether client `index` writes all its requests without waiting for
/// replies (else it keeps a window).
fn floods(index: usize) -> bool {
    index % KINDS < 2
}

// ---------------------------------------------------------------------------
// A seeded PRNG
// ---------------------------------------------------------------------------

/// xorshift64*, seeded through splitmix64 so that nearby seeds (a seed
/// plus a client's index) give unrelated streams.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // xorshift's state must not be zero.
        Rng(z | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi` (the slight modulo bias does not matter here).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// The seed: `FRONTDESK_STRESS_SEED` (decimal or `0x` hex) to replay a
/// run, else one from the clock.
fn seed() -> u64 {
    match std::env::var("FRONTDESK_STRESS_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("FRONTDESK_STRESS_SEED={text:?}: {e}"))
        }
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x5EED, |d| d.as_nanos() as u64),
    }
}

// ---------------------------------------------------------------------------
// The protocol: what a client sends and what it must get back
// ---------------------------------------------------------------------------

/// The reply to the `index`th line (from 0) of a connection. The client
/// computes the same, so a reply out of order, lost, doubled or cut shows.
fn reply(index: usize, line: &str) -> String {
    if index % LONG_EVERY == LONG_EVERY - 1 {
        let mut long = String::from("re:");
        for _ in 0..LONG_FACTOR {
            long.push(' ');
            long.push_str(line);
        }
        long.push('\n');
        long
    } else {
        format!("re: {line}\n")
    }
}

/// A client's requests as one byte string, and the replies it expects.
/// Each line names its client and number, then random filler; one in five
/// ends with `\r\n` (which `Lines` strips), so a terminator is split
/// across writes as well.
fn requests(client: usize, rng: &mut Rng) -> (Vec<u8>, Vec<String>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::with_capacity(REQUESTS);
    for index in 0..REQUESTS {
        let mut line = format!("c{client}-r{index}-");
        for _ in 0..rng.range(0, 48) {
            line.push(char::from(b'a' + rng.range(0, 25) as u8));
        }
        bytes.extend_from_slice(line.as_bytes());
        if rng.range(0, 4) == 0 {
            bytes.extend_from_slice(b"\r\n");
        } else {
            bytes.push(b'\n');
        }
        expected.push(reply(index, &line));
    }
    (bytes, expected)
}

// ---------------------------------------------------------------------------
// The server's handler, which checks that calls never overlap
// ---------------------------------------------------------------------------

/// What the handler saw, shared by every connection.
#[derive(Debug, Default)]
struct Audit {
    /// A call of a connection's handler while another was running for the
    /// same connection, or a second `open` or `close`. Must stay 0.
    violations: AtomicU64,
    /// The first few violations, described.
    violation_notes: Mutex<Vec<String>>,
    /// Connections opened and not yet closed (ids).
    open_ids: Mutex<HashSet<u64>>,
    opens: AtomicU64,
    closes: AtomicU64,
    /// Closes for another reason than `Done`.
    unexpected_closes: Mutex<Vec<(u64, CloseReason)>>,
    /// `ready` calls.
    turns: AtomicU64,
    /// Turns that ended with replies still waiting in the outbox.
    turns_backed_up: AtomicU64,
    /// Handler calls running now, and the most ever at once.
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Audit {
    fn violation(&self, note: String) {
        self.violations.fetch_add(1, Ordering::SeqCst);
        let mut notes = self
            .violation_notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if notes.len() < 10 {
            notes.push(note);
        }
    }

    /// Marks connection `id` as in a call of its handler (`what`) until
    /// the guard is dropped; records a violation if it already was.
    fn enter<'a>(&'a self, id: u64, in_call: &'a AtomicBool, what: &'static str) -> InCall<'a> {
        if in_call.swap(true, Ordering::AcqRel) {
            self.violation(format!(
                "connection {id}: `{what}` began while another call of its handler was running"
            ));
        }
        let now = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_running.fetch_max(now, Ordering::AcqRel);
        InCall {
            audit: self,
            in_call,
        }
    }
}

/// A call of a connection's handler in progress (see [`Audit::enter`]).
struct InCall<'a> {
    audit: &'a Audit,
    in_call: &'a AtomicBool,
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        self.audit.running.fetch_sub(1, Ordering::AcqRel);
        self.in_call.store(false, Ordering::Release);
    }
}

/// Answers each line with [`reply`].
#[derive(Debug)]
struct Replier {
    audit: Arc<Audit>,
}

/// A connection's state.
#[derive(Debug)]
struct Conn {
    lines: Lines,
    /// Lines answered so far.
    answered: usize,
    /// Set while a call of the handler runs for this connection. Shared
    /// (not a plain field) so that the check does not rely on the engine
    /// handing out the state correctly, which is what is under test.
    in_call: Arc<AtomicBool>,
}

impl TurnHandler for Replier {
    type State = Conn;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Conn> {
        let in_call = Arc::new(AtomicBool::new(false));
        let _call = self.audit.enter(turn.id(), &in_call, "open");
        self.audit.opens.fetch_add(1, Ordering::Relaxed);
        let fresh = self
            .audit
            .open_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(turn.id());
        if !fresh {
            self.audit
                .violation(format!("connection {}: opened twice", turn.id()));
        }
        Ok(Conn {
            lines: Lines::new(turn, MAX_LINE),
            answered: 0,
            in_call: Arc::clone(&in_call),
        })
    }

    fn ready(&self, conn: &mut Conn, turn: &mut Turn<'_>) -> io::Result<Next> {
        let in_call = Arc::clone(&conn.in_call);
        let _call = self.audit.enter(turn.id(), &in_call, "ready");
        self.audit.turns.fetch_add(1, Ordering::Relaxed);
        // The loop the README and `Lines` document: `send` never finds the
        // outbox full, because `Lines` yields nothing while it is over
        // half full; a `WouldBlock` here would end the connection as
        // `Failed` and count a handler error.
        let next = loop {
            match conn.lines.next_line_str() {
                Ok(Some(line)) => {
                    turn.send(reply(conn.answered, line))?;
                    conn.answered += 1;
                }
                Ok(None) => break Next::Park,
                Err(LineError::Closed { .. }) => break Next::Close,
                Err(error) => return Err(error.into()),
            }
        };
        if turn.outbox_len() > 0 {
            self.audit.turns_backed_up.fetch_add(1, Ordering::Relaxed);
        }
        Ok(next)
    }

    fn close(&self, conn: Conn, turn: &mut Turn<'_>, reason: CloseReason) {
        let _call = self.audit.enter(turn.id(), &conn.in_call, "close");
        self.audit.closes.fetch_add(1, Ordering::Relaxed);
        let known = self
            .audit
            .open_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&turn.id());
        if !known {
            self.audit.violation(format!(
                "connection {}: closed twice, or without open",
                turn.id()
            ));
        }
        if reason != CloseReason::Done {
            self.audit
                .unexpected_closes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((turn.id(), reason));
        }
    }
}

// ---------------------------------------------------------------------------
// A client
// ---------------------------------------------------------------------------

/// Connects client `index`, with little room for replies if it
/// [`is_tight`].
fn connect(addr: SocketAddr, index: usize) -> TcpStream {
    let stream = if is_tight(index) {
        client_with_little_room(addr, 4 * 1024, 1024)
    } else {
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("client {index}: connect: {e}"))
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream
}

/// How a failed read or write came about, for a failure message.
fn describe(error: &io::Error) -> String {
    if is_reset(error) {
        format!("the connection was reset ({error})")
    } else if matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        format!("nothing happened within the timeout of {CLIENT_TIMEOUT:?} ({error})")
    } else {
        format!("{error} ({:?})", error.kind())
    }
}

/// Writes `bytes` in pieces of random sizes, then half-closes.
///
/// At most `window` requests are in flight (written, their reply not yet
/// read): the writer takes a credit from `credits`, which the reader
/// refills one per reply, for each request a piece completes. A window of
/// [`REQUESTS`] is a client that floods; a small one keeps the server
/// finding new input while it is in a turn, which is where a lost wake-up
/// or a connection in two turns at once would show.
fn write_chunked(
    mut stream: TcpStream,
    bytes: &[u8],
    rng: &mut Rng,
    window: usize,
    credits: &Receiver<()>,
) -> Result<(), String> {
    let mut sent = 0;
    let mut requests_sent = 0;
    let mut held = window;
    while sent < bytes.len() {
        let mut end = (sent + rng.range(1, MAX_CHUNK)).min(bytes.len());
        // A piece completes no more requests than the window holds, or
        // the writer would wait for credits that never come.
        let mut completes = 0;
        for (offset, &byte) in bytes[sent..end].iter().enumerate() {
            if byte == b'\n' {
                completes += 1;
                if completes == window {
                    end = sent + offset + 1;
                    break;
                }
            }
        }
        while held < completes {
            match credits.recv_timeout(CLIENT_TIMEOUT) {
                Ok(()) => held += 1,
                Err(_) => {
                    return Err(format!(
                        "after {requests_sent} requests, no reply came within \
                         {CLIENT_TIMEOUT:?} (or the reader stopped) to make room in a \
                         window of {window}"
                    ))
                }
            }
        }
        stream
            .write_all(&bytes[sent..end])
            .map_err(|e| format!("writing at byte {sent}: {}", describe(&e)))?;
        held -= completes;
        requests_sent += completes;
        sent = end;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("half-closing: {}", describe(&e)))
}

/// Reads the replies, checks each against `expected`, then checks for a
/// clean end of stream.
fn read_replies(stream: TcpStream, expected: &[String], credits: Sender<()>) -> Result<(), String> {
    let mut replies = BufReader::with_capacity(16 * 1024, stream);
    let mut got = Vec::new();
    for (index, want) in expected.iter().enumerate() {
        got.clear();
        match replies.read_until(b'\n', &mut got) {
            Ok(0) => {
                return Err(format!(
                    "the server ended the stream (clean EOF) after {index} of {} replies",
                    expected.len()
                ))
            }
            Ok(_) if got.last() != Some(&b'\n') => {
                return Err(format!(
                    "the server ended the stream in the middle of reply {index}: {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Ok(_) if got != want.as_bytes() => {
                return Err(format!(
                    "reply {index} is {:?}, expected {want:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Ok(_) => {
                // The writer may be gone already (it has sent everything).
                let _ = credits.send(());
            }
            Err(e) => {
                return Err(format!(
                    "reading reply {index} of {}: {}",
                    expected.len(),
                    describe(&e)
                ))
            }
        }
    }
    if !replies.buffer().is_empty() {
        return Err(format!(
            "after the last reply came more: {:?}",
            String::from_utf8_lossy(replies.buffer())
        ));
    }
    let rest = try_read_to_clean_end(replies.get_mut())
        .map_err(|why| format!("after every reply: {why}"))?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "after the last reply came {} more bytes: {:?}",
            rest.len(),
            String::from_utf8_lossy(&rest)
        ))
    }
}

/// One client: a writer thread pipelines the requests while this thread
/// reads the replies, so neither side waits for the other.
fn run_client(index: usize, stream: TcpStream, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let (bytes, expected) = requests(index, &mut rng);
    let window = if floods(index) {
        REQUESTS
    } else {
        rng.range(2, 32)
    };
    let (credits_tx, credits) = crossbeam_channel::unbounded();
    let writer_stream = stream.try_clone().map_err(|e| format!("try_clone: {e}"))?;
    let writer = thread::Builder::new()
        .name(format!("stress-writer-{index}"))
        .stack_size(CLIENT_STACK)
        .spawn(move || write_chunked(writer_stream, &bytes, &mut rng, window, &credits))
        .map_err(|e| format!("spawning the writer: {e}"))?;
    let read = read_replies(stream, &expected, credits_tx);
    let written = writer
        .join()
        .unwrap_or_else(|_| Err("the writer panicked".to_string()));
    match (read, written) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(read), Ok(())) => Err(format!("window {window}: {read}")),
        (Ok(()), Err(write)) => Err(format!("window {window}: {write}")),
        (Err(read), Err(write)) => Err(format!("window {window}: reader: {read}; writer: {write}")),
    }
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn two_hundred_pipelining_clients_on_two_workers_get_every_reply_in_order() {
    let start = Instant::now();
    let deadline = start + TEST_WITHIN;
    let seed = seed();
    println!(
        "turn_stress: seed {seed:#x} (replay the client writes with FRONTDESK_STRESS_SEED={seed:#x})"
    );
    let count = affordable_clients("turn_stress", CLIENTS, 0.9);

    let audit = Arc::new(Audit::default());
    let handle = serve_turns(
        Server::builder()
            .workers(WORKERS)
            .outbox_limit(OUTBOX_LIMIT)
            // Room in the backlog for every client at once: no SYN dropped
            // (and retried a second later) if the acceptor falls behind.
            .backlog(u32::try_from(count).unwrap()),
        Replier {
            audit: Arc::clone(&audit),
        },
    );
    let addr = tcp_addr(handle.local_addr());

    // Every client is connected before any writes, so that all 200 are
    // open at once.
    let streams: Vec<TcpStream> = (0..count).map(|i| connect(addr, i)).collect();
    let (results_tx, results) = crossbeam_channel::unbounded();
    for (index, stream) in streams.into_iter().enumerate() {
        let results_tx = results_tx.clone();
        thread::Builder::new()
            .name(format!("stress-client-{index}"))
            .stack_size(CLIENT_STACK)
            .spawn(move || {
                let _ = results_tx.send((index, run_client(index, stream, seed)));
            })
            .expect("spawn a client thread");
    }
    drop(results_tx);

    let mut failures = Vec::new();
    let mut finished = vec![false; count];
    let mut done = 0;
    while done < count {
        match results.recv_deadline(deadline) {
            Ok((index, result)) => {
                done += 1;
                finished[index] = true;
                if let Err(why) = result {
                    failures.push(format!("client {index}: {why}"));
                }
            }
            Err(_) => break,
        }
    }
    let clients_took = start.elapsed();
    if done < count {
        let missing: Vec<usize> = (0..count).filter(|&i| !finished[i]).collect();
        failures.push(format!(
            "{} clients did not finish within {TEST_WITHIN:?}: {:?}{}",
            missing.len(),
            &missing[..missing.len().min(20)],
            if missing.len() > 20 { " ..." } else { "" }
        ));
    }

    // The shutdown runs on a thread of its own, so that one that hangs
    // fails the test at the deadline instead of hanging it.
    let (stopped_tx, stopped) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = stopped_tx.send(handle.shutdown());
    });
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(10));
    let stats: Option<Stats> = match stopped.recv_timeout(wait) {
        Ok(Ok(report)) => Some(report.stats),
        Ok(Err(e)) => {
            failures.push(format!("shutdown failed: {e}"));
            None
        }
        Err(RecvTimeoutError::Timeout) => {
            failures.push(format!("shutdown did not return within {wait:?}"));
            None
        }
        Err(RecvTimeoutError::Disconnected) => {
            failures.push("shutdown panicked".to_string());
            None
        }
    };
    let took = start.elapsed();

    let opens = audit.opens.load(Ordering::SeqCst);
    let closes = audit.closes.load(Ordering::SeqCst);
    let max_running = audit.max_running.load(Ordering::SeqCst);
    let violations = audit.violations.load(Ordering::SeqCst);
    let mut summary = String::new();
    let _ = write!(
        summary,
        "seed {seed:#x}, {count} clients x {REQUESTS} requests, {WORKERS} workers: \
         clients done in {clients_took:.2?}, shutdown done at {took:.2?}; \
         {} turns ({} ended with replies waiting in the outbox), \
         at most {max_running} handler calls at once; outbox_full {}",
        audit.turns.load(Ordering::SeqCst),
        audit.turns_backed_up.load(Ordering::SeqCst),
        stats.map_or(0, |s| s.outbox_full),
    );
    println!("turn_stress: {summary}");

    if violations > 0 {
        failures.push(format!(
            "{violations} violations of one call at a time per connection: {:#?}",
            audit
                .violation_notes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        ));
    }
    if max_running > WORKERS {
        failures.push(format!(
            "{max_running} handler calls ran at once on {WORKERS} workers"
        ));
    }
    if opens != count as u64 || closes != count as u64 {
        failures.push(format!(
            "{opens} opens and {closes} closes for {count} connections"
        ));
    }
    let unexpected = audit
        .unexpected_closes
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if !unexpected.is_empty() {
        failures.push(format!(
            "{} connections closed for another reason than the client's \
             half-close (Done): {:?}",
            unexpected.len(),
            &unexpected[..unexpected.len().min(20)]
        ));
    }
    if let Some(stats) = &stats {
        if stats.handler_errors != 0 || stats.panics != 0 {
            failures.push(format!(
                "handler_errors {}, panics {} (expected none)",
                stats.handler_errors, stats.panics
            ));
        }
        if stats.accepted != stats.completed + stats.rejected.total() + stats.dropped {
            failures.push(
                "accepted != completed + rejected.total() + dropped after shutdown".to_string(),
            );
        }
        if stats.accepted != count as u64 {
            failures.push(format!(
                "{} connections accepted, {count} made",
                stats.accepted
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} failures ({summary}):\n{}\nfinal stats: {stats:#?}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}
