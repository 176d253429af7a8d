//! Regression tests for findings of issue 14, each stating what the fixed
//! library must do (and each failing on the engine the issue describes):
//!
//! 1. any `Duration` is a valid setting, at `Duration::MAX` ("no limit")
//!    and at `Duration::ZERO`, in both modes: no panic, a shutdown that
//!    returns, every connection accounted for;
//! 2. the README's `Shout` turn handler (`turn.send(..)?` in a loop over
//!    `Lines`) answers every request of a client that pipelines 500,000
//!    lines before it reads, in order;
//! 3. input a turn handler left in `Lines` (it takes a line only while its
//!    reply fits the outbox) is served once the outbox drains;
//! 4. a message larger than `outbox_limit` is delivered, from a turn and
//!    from a `Peer`, and the client is not closed for it.
//!
//! Conventions as in the other tests: servers bind `127.0.0.1:0`, clients
//! have read and write timeouts, and every wait is bounded. A shutdown that
//! hangs (as one does today after a worker panicked) must fail the test,
//! not hang the test binary: each server's handle lives on a thread of its
//! own ([`Stopper`]) that shuts it down when asked, and the test waits for
//! the result for at most [`SHUTDOWN_WITHIN`]; a hung shutdown leaves that
//! thread behind. The only waits that are not for an event are a client's
//! pace (it starts reading later: the scenario under test).
#![cfg(unix)]

mod util;

use std::any::Any;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, Once, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use frontdesk::{
    Connection, LineError, LineReader, Lines, Next, Overload, Peer, Server, ServerBuilder,
    ServerControl, ServerHandle, ShutdownReport, Turn, TurnHandler,
};
use socket2::{Domain, Socket, Type};

use util::{client, is_reset, tcp_addr, LOCALHOST, TIMEOUT};

/// The longest line the handlers here accept; every line used is shorter.
const MAX_LINE: usize = 1024;

/// How long a test waits for `ServerHandle::shutdown` to return. A correct
/// shutdown of the servers here takes a few seconds at most (their drain
/// deadline, then the gentle closes); this is generous for a loaded 2-core
/// CI machine running the tests in parallel. It only has to be finite, so
/// that a shutdown that hangs fails the test instead of hanging it.
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// A running server whose handle is kept on a thread of its own, which
/// shuts the server down when asked (or when the `Stopper` is dropped, for
/// example by a test that failed), so that the test can wait for the
/// shutdown with a bound.
struct Stopper {
    addr: SocketAddr,
    control: ServerControl,
    /// Dropped to start the shutdown.
    stop: Option<Sender<()>>,
    done: Receiver<frontdesk::Result<ShutdownReport>>,
}

impl Stopper {
    fn new(handle: ServerHandle) -> Stopper {
        let addr = tcp_addr(handle.local_addr());
        let control = handle.control();
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        thread::Builder::new()
            .name(format!("test-stopper-{addr}"))
            .spawn(move || {
                // Returns when the sender is dropped: asked, or the test ended.
                let _ = stop_rx.recv();
                let _ = done_tx.send(handle.shutdown());
            })
            .expect("spawn the stopper thread");
        Stopper {
            addr,
            control,
            stop: Some(stop),
            done,
        }
    }

    /// Starts the shutdown and returns at once.
    fn begin(&mut self) {
        self.stop.take();
    }

    /// Shuts the server down (if not begun yet) and waits for the report,
    /// for at most [`SHUTDOWN_WITHIN`].
    fn finish(mut self) -> Result<ShutdownReport, String> {
        self.begin();
        match self.done.recv_timeout(SHUTDOWN_WITHIN) {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(error)) => Err(format!("shutdown() failed: {error}")),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "shutdown() did not return within {SHUTDOWN_WITHIN:?} (stats then: {:?})",
                self.control.stats()
            )),
            Err(RecvTimeoutError::Disconnected) => Err("shutdown() panicked".to_string()),
        }
    }

    /// Polls the stats until `ok` holds, for at most [`TIMEOUT`].
    fn wait_for_stats(&self, what: &str, ok: impl Fn(&frontdesk::Stats) -> bool) {
        let start = Instant::now();
        loop {
            let stats = self.control.stats();
            if ok(&stats) {
                return;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out after {TIMEOUT:?} waiting until {what}; last seen: {stats:#?}"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
}

/// What is wrong with a stopped server's report: a panic anywhere in a
/// handler, or a connection not accounted for.
fn report_problems(report: &ShutdownReport) -> Vec<String> {
    let stats = &report.stats;
    let mut problems = Vec::new();
    if stats.panics != 0 {
        problems.push(format!("stats.panics == {}, expected 0", stats.panics));
    }
    let accounted = stats.completed + stats.rejected.total() + stats.dropped;
    if stats.accepted != accounted {
        problems.push(format!(
            "accepted ({}) != completed ({}) + rejected ({}) + dropped ({}) after shutdown \
             (stuck workers: {})",
            stats.accepted,
            stats.completed,
            stats.rejected.total(),
            stats.dropped,
            report.stuck_workers
        ));
    }
    problems
}

/// Shuts the server down and asserts that it stopped within the bound, with
/// no panic and every connection accounted for; returns the report.
fn stop_cleanly(stopper: Stopper) -> ShutdownReport {
    let report = stopper.finish().unwrap_or_else(|why| panic!("{why}"));
    let problems = report_problems(&report);
    assert!(problems.is_empty(), "{problems:#?}; {:#?}", report.stats);
    report
}

/// How a stream ended, or failed, where the client expected more.
#[derive(Debug)]
enum Ended {
    /// A clean end of stream (a read returned 0), after `partial` bytes of
    /// an unfinished line or message.
    Clean { partial: usize },
    /// The connection was reset (`ConnectionReset` and its kin).
    Reset(io::Error),
    /// Nothing came within the read timeout: the server neither answered
    /// nor closed.
    Silent,
    /// Another error.
    Failed(io::Error),
}

impl Ended {
    fn from_error(error: io::Error) -> Ended {
        if is_reset(&error) {
            Ended::Reset(error)
        } else if matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            Ended::Silent
        } else {
            Ended::Failed(error)
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Clean { partial: 0 } => f.write_str("a clean end of stream"),
            Ended::Clean { partial } => {
                write!(f, "a clean end of stream after {partial} bytes of a reply")
            }
            Ended::Reset(error) => write!(f, "a reset ({error})"),
            Ended::Silent => write!(
                f,
                "nothing within the read timeout: the server neither answered nor closed"
            ),
            Ended::Failed(error) => write!(f, "a failed read ({error}, {:?})", error.kind()),
        }
    }
}

/// Reads the next line into `line`, without its `\n`.
fn next_line(reader: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> Result<(), Ended> {
    line.clear();
    match reader.read_until(b'\n', line) {
        Ok(_) if line.last() == Some(&b'\n') => {
            line.pop();
            Ok(())
        }
        Ok(_) => Err(Ended::Clean {
            partial: line.len(),
        }),
        Err(error) => Err(Ended::from_error(error)),
    }
}

/// Reads exactly `n` bytes.
fn read_bytes(reader: &mut BufReader<TcpStream>, n: usize) -> Result<Vec<u8>, Ended> {
    let mut bytes = Vec::with_capacity(n);
    match reader.by_ref().take(n as u64).read_to_end(&mut bytes) {
        Ok(_) if bytes.len() == n => Ok(bytes),
        Ok(_) => Err(Ended::Clean {
            partial: bytes.len(),
        }),
        Err(error) => Err(Ended::from_error(error)),
    }
}

/// Reads until the stream ends; `Ok` with what came before a clean end.
fn read_to_end(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, Ended> {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => Ok(rest),
        Err(error) => Err(Ended::from_error(error)),
    }
}

/// Half-closes `stream` and checks that the server then ends the stream
/// cleanly, with nothing more to say.
fn half_close_and_expect_clean_end(reader: &mut BufReader<TcpStream>) {
    reader
        .get_ref()
        .shutdown(Shutdown::Write)
        .expect("half-close");
    match read_to_end(reader) {
        Ok(rest) if rest.is_empty() => {}
        Ok(rest) => panic!(
            "expected a clean end of stream after the half-close, got {} more bytes first: {:?}",
            rest.len(),
            String::from_utf8_lossy(&rest[..rest.len().min(120)])
        ),
        Err(ended) => panic!("expected a clean end of stream after the half-close, got {ended}"),
    }
}

/// A client whose side holds little of what the server sends it: a small
/// receive buffer and small segments, both set before `connect`, so that
/// the kernel's buffers on both sides of the connection hold tens of
/// kilobytes instead of megabytes (see `turns_util::client_with_little_room`)
/// and a server writing to a client that does not read backs up into its
/// outbox quickly. Read and write timeouts are [`TIMEOUT`].
fn client_with_little_room(addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4 * 1024).expect("SO_RCVBUF");
    socket.set_tcp_mss(1024).expect("TCP_MAXSEG");
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// The message of a panic payload.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "<not a string>".to_string()
    }
}

/// Panics seen on the library's threads (`frontdesk-*`) in this test
/// binary, for the failure messages: a panic on the poller or the acceptor
/// is counted nowhere in the stats.
static LIBRARY_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records panics on the library's threads in [`LIBRARY_PANICS`], then lets
/// the default hook print them as usual.
fn watch_library_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let thread = thread::current();
            if let Some(name) = thread.name().filter(|n| n.starts_with("frontdesk-")) {
                LIBRARY_PANICS
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("{name}: {info}"));
            }
            default(info);
        }));
    });
}

fn library_panics() -> Vec<String> {
    LIBRARY_PANICS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

// ---------------------------------------------------------------------------
// 1. Any `Duration` is valid, in both modes
// ---------------------------------------------------------------------------

/// The drain deadline of the servers in test 1 (unless the case sets
/// `shutdown_timeout` itself): a correct drain needs the 200 ms quiet time;
/// a case whose drain runs to its deadline (`drain_quiet_time(MAX)`, a
/// connection left idle) costs this much.
const DRAIN_DEADLINE: Duration = Duration::from_secs(1);

/// Lines the first client sends without reading, to back the echo up into
/// the connection's outbox (the turn mode's write-timeout timer starts
/// then): more than the server's send buffer can ever hold. Linux grows a
/// socket's send buffer up to `tcp_wmem`'s maximum (4 MiB by default) for
/// a peer whose window is small but open, so a fixed 128 kB flood was
/// sometimes absorbed whole and never backed up. Beyond half the outbox
/// limit, `Lines` yields no line and the server stops reading until the
/// client reads: back-pressure, which the flood exercises too.
fn flood_lines() -> usize {
    let send_buffer_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    send_buffer_max / flood_line(0).len() + 2_000
}

/// How long the Handler-mode client lets the server write before it reads
/// its flood's echo, unless its writer has finished before: the scenario (a
/// client that reads late), not a synchronization. In the turn mode the
/// handler says when its outbox has backed up instead.
const READ_LATER: Duration = Duration::from_secs(2);

/// All cases of one mode run at once; each is bounded by its clients' read
/// timeouts and [`SHUTDOWN_WITHIN`]. This bounds the whole.
const ALL_CASES_WITHIN: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `Server::spawn` with a `Handler`.
    Handler,
    /// `Server::spawn_turns` with a `TurnHandler`.
    Turns,
}

/// What a case sets to the duration under test.
#[derive(Clone, Copy)]
enum Knob {
    /// A builder setting.
    Builder(fn(ServerBuilder, Duration) -> ServerBuilder),
    /// `turn.set_deadline(lines.line_deadline(Some(d)))` after every turn of
    /// the turn-mode echo, as `examples/common/mod.rs` (`answer_lines`)
    /// does (turn mode only).
    LineDeadline,
}

/// Every setting that takes a duration, by name.
const KNOBS: [(&str, Knob); 8] = [
    ("read_timeout", Knob::Builder(|b, d| b.read_timeout(d))),
    ("write_timeout", Knob::Builder(|b, d| b.write_timeout(d))),
    ("idle_timeout", Knob::Builder(|b, d| b.idle_timeout(d))),
    (
        "shutdown_timeout",
        Knob::Builder(|b, d| b.shutdown_timeout(d)),
    ),
    (
        "drain_quiet_time",
        Knob::Builder(|b, d| b.drain_quiet_time(d)),
    ),
    ("linger_time", Knob::Builder(|b, d| b.linger_time(d))),
    (
        "overload(Overload::Wait(d))",
        Knob::Builder(|b, d| b.overload(Overload::Wait(d))),
    ),
    ("Lines::line_deadline(Some(d))", Knob::LineDeadline),
];

#[test]
fn any_duration_is_valid_in_the_handler_mode() {
    any_duration_is_valid(Mode::Handler);
}

#[test]
fn any_duration_is_valid_in_the_turn_mode() {
    any_duration_is_valid(Mode::Turns);
}

/// Runs every knob of [`KNOBS`] at `Duration::MAX` and at `Duration::ZERO`
/// in `mode`, all at once, and fails listing every case that went wrong.
fn any_duration_is_valid(mode: Mode) {
    watch_library_panics();
    let (results_tx, results) = crossbeam_channel::unbounded();
    let mut cases = 0;
    for (name, knob) in KNOBS {
        if mode == Mode::Handler && matches!(knob, Knob::LineDeadline) {
            continue;
        }
        for (at, at_name) in [(Duration::MAX, "MAX"), (Duration::ZERO, "ZERO")] {
            cases += 1;
            let label = format!("{mode:?} mode, {name} at Duration::{at_name}");
            let results_tx = results_tx.clone();
            thread::Builder::new()
                .name(label.clone())
                .spawn(move || {
                    let problems =
                        panic::catch_unwind(AssertUnwindSafe(|| run_case(mode, knob, at)))
                            .unwrap_or_else(|payload| {
                                vec![format!("the case panicked: {}", panic_text(&*payload))]
                            });
                    let _ = results_tx.send((label, problems));
                })
                .expect("spawn a case");
        }
    }
    drop(results_tx);
    let deadline = Instant::now() + ALL_CASES_WITHIN;
    let mut failures = Vec::new();
    for finished in 0..cases {
        match results.recv_deadline(deadline) {
            Ok((_, problems)) if problems.is_empty() => {}
            Ok((label, problems)) => {
                failures.push(format!("{label}:\n    - {}", problems.join("\n    - ")))
            }
            Err(_) => {
                failures.push(format!(
                    "{} of {cases} cases did not finish within {ALL_CASES_WITHIN:?}",
                    cases - finished
                ));
                break;
            }
        }
    }
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}\n\npanics on frontdesk threads in this test binary \
         so far (any test):\n{:#?}",
        failures.len(),
        failures.join("\n"),
        library_panics()
    );
}

/// One case: a server with `knob` at `at`, two clients through a whole
/// life (request, a line across two writes, a flood read late, half-close,
/// a client waiting for the single worker, a shutdown with a client
/// connected); returns what went wrong.
///
/// At `Duration::MAX` ("no limit") everything is answered and every end is
/// clean. At `Duration::ZERO` the documented meaning is "fail at once",
/// so a connection may end early; only a hang (no answer and no end within
/// the read timeout) or a wrong answer counts. In both: no panic, a
/// shutdown that returns, every connection accounted for.
fn run_case(mode: Mode, knob: Knob, at: Duration) -> Vec<String> {
    // One worker and no queue, so that the second client waits for the
    // worker in the `Handler` mode (the path `Overload::Wait` takes).
    let mut builder = Server::builder()
        .workers(1)
        .queue(0)
        .shutdown_timeout(DRAIN_DEADLINE);
    let mut line_timeout = None;
    match knob {
        Knob::Builder(set) => builder = set(builder, at),
        Knob::LineDeadline => line_timeout = Some(at),
    }
    let (stalls_tx, stalls) = crossbeam_channel::unbounded();
    let server = match builder.bind(LOCALHOST) {
        Ok(server) => server,
        Err(error) => return vec![format!("bind: {error}")],
    };
    let spawned = match mode {
        Mode::Handler => server.spawn(line_echo),
        Mode::Turns => server.spawn_turns(TurnEcho {
            line_timeout,
            stalls: stalls_tx,
        }),
    };
    let stopper = match spawned {
        Ok(handle) => Stopper::new(handle),
        Err(error) => return vec![format!("spawn: {error}")],
    };
    let mut script = Script {
        strict: at == Duration::MAX,
        problems: Vec::new(),
    };
    let report = script.run(mode, stopper, &stalls);
    let mut problems = script.problems;
    match report {
        Ok(report) => problems.extend(report_problems(&report)),
        Err(why) => problems.push(why),
    }
    problems
}

/// The clients of a case, and what they found wrong.
struct Script {
    /// At `Duration::MAX`: every deviation is a failure.
    strict: bool,
    problems: Vec<String>,
}

/// What a client step found instead of what it expected.
enum Deviation {
    Ended(Ended),
    Wrong(String),
}

impl From<Ended> for Deviation {
    fn from(ended: Ended) -> Deviation {
        Deviation::Ended(ended)
    }
}

impl Script {
    /// Judges a step; returns whether the client goes on.
    fn check(&mut self, step: &str, result: Result<(), Deviation>) -> bool {
        match result {
            Ok(()) => true,
            Err(Deviation::Wrong(what)) => {
                self.problems.push(format!("{step}: {what}"));
                false
            }
            Err(Deviation::Ended(ended)) => {
                // A zero limit may end a connection at any point; it must
                // not leave the client waiting for nothing.
                if self.strict || matches!(ended, Ended::Silent) {
                    self.problems.push(format!("{step}: {ended}"));
                }
                false
            }
        }
    }

    fn run(
        &mut self,
        mode: Mode,
        mut stopper: Stopper,
        stalls: &Receiver<()>,
    ) -> Result<ShutdownReport, String> {
        let addr = stopper.addr;
        let a = client_with_little_room(addr);
        let mut a_reader = BufReader::new(a.try_clone().expect("clone a"));
        let mut a_alive = self.check(
            "first client: hello",
            exchange(&a, &mut a_reader, b"hello\npart", b"hello"),
        );
        // "part" waited in the server (a line deadline runs meanwhile).
        a_alive = a_alive
            && self.check(
                "first client: a line in two writes",
                exchange(&a, &mut a_reader, b"ial\n", b"partial"),
            );
        a_alive = a_alive
            && self.check(
                "first client: a flood read late",
                flood(mode, &a, &mut a_reader, stalls, self.strict),
            );

        // The single worker serves the first client (in the `Handler`
        // mode): this one waits for it, in the acceptor.
        let mut b = client(addr);
        let mut b_reader = BufReader::new(b.try_clone().expect("clone b"));
        let mut b_alive = self.check(
            "second client: hello",
            b.write_all(b"hello\n")
                .map_err(|e| Deviation::Ended(Ended::from_error(e))),
        );

        if a_alive {
            let _ = a.shutdown(Shutdown::Write);
            self.check(
                "first client: end after its half-close",
                expect_end(&mut a_reader),
            );
        }
        drop((a, a_reader));

        b_alive = b_alive
            && self.check(
                "second client: its answer",
                expect_line(&mut b_reader, b"hello"),
            );
        // A shutdown with a client connected and silent.
        stopper.begin();
        if b_alive {
            self.check("second client: end at shutdown", expect_end(&mut b_reader));
        }
        drop((b, b_reader));
        stopper.finish()
    }
}

/// Sends `request` and expects the line `reply` back.
fn exchange(
    mut stream: &TcpStream,
    reader: &mut BufReader<TcpStream>,
    request: &[u8],
    reply: &[u8],
) -> Result<(), Deviation> {
    stream
        .write_all(request)
        .map_err(|e| Deviation::Ended(Ended::from_error(e)))?;
    expect_line(reader, reply)
}

/// Expects the line `expected` next.
fn expect_line(reader: &mut BufReader<TcpStream>, expected: &[u8]) -> Result<(), Deviation> {
    let mut line = Vec::new();
    next_line(reader, &mut line)?;
    if line == expected {
        Ok(())
    } else {
        Err(Deviation::Wrong(format!(
            "expected {:?}, got {:?}",
            String::from_utf8_lossy(expected),
            String::from_utf8_lossy(&line)
        )))
    }
}

/// Expects a clean end of stream with nothing before it.
fn expect_end(reader: &mut BufReader<TcpStream>) -> Result<(), Deviation> {
    match read_to_end(reader)? {
        rest if rest.is_empty() => Ok(()),
        rest => Err(Deviation::Wrong(format!(
            "expected the end of stream, got {} more bytes first",
            rest.len()
        ))),
    }
}

/// Line `i` of a flood: 64 bytes with its `\n`.
fn flood_line(i: usize) -> String {
    format!("flood {i:06} {}\n", "x".repeat(50))
}

/// Sends [`flood_lines`] lines without reading (on a thread: the server
/// stops reading while its echo waits), lets the echo back up, then reads
/// it all.
fn flood(
    mode: Mode,
    stream: &TcpStream,
    reader: &mut BufReader<TcpStream>,
    stalls: &Receiver<()>,
    strict: bool,
) -> Result<(), Deviation> {
    let count = flood_lines();
    let requests: String = (0..count).map(flood_line).collect();
    let mut writer = stream.try_clone().expect("clone the flooding client");
    let (wrote_tx, wrote) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = wrote_tx.send(writer.write_all(requests.as_bytes()));
    });
    let mut written = None;
    match mode {
        Mode::Turns => {
            // The echo handler reports a turn that ended with bytes in its
            // outbox (the client's buffers are full, the write-timeout
            // timer runs); give up waiting if the writer failed.
            let deadline = Instant::now() + TIMEOUT;
            let mut writer_done = wrote.clone();
            let stalled = loop {
                crossbeam_channel::select! {
                    recv(stalls) -> _ => break true,
                    recv(writer_done) -> result => {
                        let result = result.expect("the writer reports once");
                        let failed = result.is_err();
                        written = Some(result);
                        if failed {
                            break false;
                        }
                        // Wrote everything: wait on for the stall alone.
                        writer_done = crossbeam_channel::never();
                    }
                    default(deadline.saturating_duration_since(Instant::now())) => break false,
                }
            };
            if strict && !stalled && written.as_ref().map_or(true, Result::is_ok) {
                return Err(Deviation::Wrong(format!(
                    "the echo never backed up into the outbox within {TIMEOUT:?} \
                     (the test expects the client's small buffers to fill)"
                )));
            }
        }
        Mode::Handler => written = wrote.recv_timeout(READ_LATER).ok(),
    }
    let mut line = Vec::new();
    for i in 0..count {
        next_line(reader, &mut line)?;
        let expected = flood_line(i);
        if line != expected.trim_end().as_bytes() {
            return Err(Deviation::Wrong(format!(
                "echo {i}: expected {:?}, got {:?}",
                expected.trim_end(),
                String::from_utf8_lossy(&line)
            )));
        }
    }
    let written = match written {
        Some(result) => result,
        None => wrote
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
    };
    written.map_err(|e| Deviation::Ended(Ended::from_error(e)))
}

/// The `Handler`-mode echo: each line back, until the client closes.
fn line_echo(conn: &mut Connection) -> io::Result<()> {
    let mut out = &*conn;
    let mut lines = LineReader::new(&*conn, MAX_LINE);
    loop {
        match lines.read_line() {
            Ok(line) => out.write_all(&[line, b"\n"].concat())?,
            Err(LineError::Closed { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}

/// The turn-mode echo: each line back; after each turn, a deadline for
/// the line in progress (`line_timeout`), and a word on `stalls` when the
/// outbox holds bytes the client has not taken.
struct TurnEcho {
    line_timeout: Option<Duration>,
    stalls: Sender<()>,
}

impl TurnHandler for TurnEcho {
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
        turn.set_deadline(lines.line_deadline(self.line_timeout));
        if turn.outbox_len() > 0 {
            let _ = self.stalls.send(());
        }
        Ok(next)
    }
}

// ---------------------------------------------------------------------------
// 2. The README's `Shout` handler under pipelining
// ---------------------------------------------------------------------------

/// Requests the client pipelines before it reads.
const PIPELINED: usize = 500_000;

/// How long the client writes before it starts reading, unless it has
/// written everything before: the scenario (a client that reads late), not
/// a synchronization.
const PIPELINE_READ_LATER: Duration = Duration::from_secs(2);

/// The whole exchange must be over within this (it takes a few seconds in
/// a debug build on an idle machine); checked as the replies come in.
const PIPELINE_WITHIN: Duration = Duration::from_secs(60);

/// The README's turn-mode example (`while let Some(line) =
/// lines.next_line_str()? { turn.send(..)?; } Ok(Next::Park)`) with a
/// reply four times the size of the request, and an arm for the client's
/// end of stream (which the README's `?` turns into a handler error).
struct Shout;

/// Request `i`: 12 bytes with its `\n`.
fn pipelined_request(i: usize) -> String {
    format!("line-{i:06}\n")
}

/// The reply to `line`: 48 bytes with its `\n`, four times the request.
fn shout(line: &str) -> String {
    let upper = line.to_uppercase();
    format!("{upper} {upper} {upper} {upper}\n")
}

impl TurnHandler for Shout {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        Ok(Lines::new(turn, MAX_LINE))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line_str() {
                Ok(Some(line)) => turn.send(shout(line))?,
                Ok(None) => return Ok(Next::Park),
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

#[test]
fn readme_shout_answers_every_pipelined_request_in_order() {
    let started = Instant::now();
    let handle = Server::builder()
        .workers(2)
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(Shout)
        .expect("spawn_turns");
    let stopper = Stopper::new(handle);
    let stream = client(stopper.addr);
    // The writer waits while the server does not read (its outbox is full
    // and the client is not reading yet), up to `PIPELINE_READ_LATER`
    // plus the time to drain what is queued: generous.
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let requests: String = (0..PIPELINED).map(pipelined_request).collect();
    let mut writer = stream.try_clone().unwrap();
    let (wrote_tx, wrote) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let result = writer.write_all(requests.as_bytes());
        let _ = wrote_tx.send(result);
    });
    let written = wrote.recv_timeout(PIPELINE_READ_LATER).ok();
    let reading_from = started.elapsed();

    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    for i in 0..PIPELINED {
        if let Err(ended) = next_line(&mut reader, &mut line) {
            let written = written.or_else(|| wrote.try_recv().ok());
            panic!(
                "after {i} of {PIPELINED} replies: {ended} (the writer: {written:?}; \
                 stats: {:?})",
                stopper.control.stats()
            );
        }
        let expected = shout(pipelined_request(i).trim_end());
        assert_eq!(
            String::from_utf8_lossy(&line),
            expected.trim_end(),
            "reply {i} out of order"
        );
        if i % 10_000 == 0 {
            assert!(
                started.elapsed() < PIPELINE_WITHIN,
                "only {i} of {PIPELINED} replies within {PIPELINE_WITHIN:?}"
            );
        }
    }
    let written = written.unwrap_or_else(|| {
        wrote
            .recv_timeout(TIMEOUT)
            .expect("the writer has finished once every reply has arrived")
    });
    written.expect("every request is written");
    half_close_and_expect_clean_end(&mut reader);
    let took = started.elapsed();
    let report = stop_cleanly(stopper);
    let stats = report.stats;
    assert_eq!(stats.handler_errors, 0, "{stats:#?}");
    assert_eq!(stats.outbox_full, 0, "{stats:#?}");
    eprintln!(
        "{PIPELINED} pipelined requests answered in {took:?} (reading from {reading_from:?})"
    );
}

// ---------------------------------------------------------------------------
// 3. Input buffered in `Lines` is served when the outbox drains
// ---------------------------------------------------------------------------

/// The outbox limit of test 3, and the size of its replies: one reply
/// fits an outbox holding at most [`FILL_CHUNK`] bytes, two never do.
const SMALL_OUTBOX: usize = 64;
const REPLY_LEN: usize = 40;

/// The filler `open` sends, a chunk at a time, until the client's buffers
/// are full: at most this much is left in the outbox then.
const FILL_CHUNK: usize = 24;
const _: () = assert!(SMALL_OUTBOX - FILL_CHUNK >= REPLY_LEN && SMALL_OUTBOX < 2 * REPLY_LEN);
// At most half the outbox waits: the connection is still read from.
const _: () = assert!(FILL_CHUNK <= SMALL_OUTBOX / 2);

/// More filler than any kernel buffers a [`client_with_little_room`] can
/// hold: reaching it means the test could not set up its scenario.
const FILL_MAX: usize = 8 << 20;

/// What the handler of test 3 tells the test.
#[derive(Debug)]
enum FillEvent {
    /// `open` filled the client's buffers: `sent` bytes of filler, of
    /// which `left` wait in the outbox.
    Filled { sent: usize, left: usize },
    /// A turn answered `answered` lines and parked, for room in the outbox
    /// (`for_room`) or for input, with `buffered` bytes left in `Lines`.
    Parked {
        answered: usize,
        for_room: bool,
        buffered: usize,
    },
}

/// A turn handler that takes a line only while its reply fits the outbox
/// (the way out of back-pressure that `examples/echo.rs` takes), else
/// parks with the rest left in `Lines`.
///
/// Its `open` first fills the client's buffers, so that replies wait in
/// the outbox, then waits (bounded) until the test has written its
/// requests: the first turn follows `open` on the same worker, before the
/// connection is in the readiness set, so nothing flushes the outbox in
/// between however the kernel's buffers shift, and that turn finds the
/// requests.
struct TakeWhileItFits {
    events: Sender<FillEvent>,
    written: Receiver<()>,
}

/// The reply to `line`: [`REPLY_LEN`] bytes with its `\n`.
fn fill_reply(line: &str) -> String {
    let reply = format!("{:<width$}\n", format!("re: {line}"), width = REPLY_LEN - 1);
    assert_eq!(reply.len(), REPLY_LEN);
    reply
}

impl TurnHandler for TakeWhileItFits {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        // The socket takes each chunk at once until the client's buffers
        // are full; then the rest of a chunk waits in the outbox.
        let mut sent = 0;
        while turn.outbox_len() == 0 && sent < FILL_MAX {
            turn.send(&[b'.'; FILL_CHUNK])?;
            sent += FILL_CHUNK;
        }
        let left = turn.outbox_len();
        let _ = self.events.send(FillEvent::Filled { sent, left });
        let _ = self.written.recv_timeout(TIMEOUT);
        Ok(Lines::new(turn, MAX_LINE))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        let mut answered = 0;
        let (next, for_room) = loop {
            if turn.outbox_room() < REPLY_LEN {
                break (Next::Park, true);
            }
            match lines.next_line_str() {
                Ok(Some(line)) => turn.send(fill_reply(line))?,
                Ok(None) => break (Next::Park, false),
                Err(LineError::Closed { .. }) => break (Next::Close, false),
                Err(error) => return Err(error.into()),
            }
            answered += 1;
        };
        let buffered = lines.buffered().len();
        let _ = self.events.send(FillEvent::Parked {
            answered,
            for_room,
            buffered,
        });
        Ok(next)
    }
}

#[test]
fn lines_left_buffered_are_served_when_the_outbox_drains() {
    let (events_tx, events) = crossbeam_channel::unbounded();
    let (written_tx, written) = crossbeam_channel::bounded(1);
    let handle = Server::builder()
        .workers(1)
        .outbox_limit(SMALL_OUTBOX)
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(TakeWhileItFits {
            events: events_tx,
            written,
        })
        .expect("spawn_turns");
    let stopper = Stopper::new(handle);
    let mut stream = client_with_little_room(stopper.addr);
    let (sent, left) = match events.recv_timeout(TIMEOUT) {
        Ok(FillEvent::Filled { sent, left }) => (sent, left),
        other => panic!("expected the filler to be sent, got {other:?}"),
    };
    assert!(
        left > 0,
        "{sent} bytes of filler did not fill the client's buffers: the scenario needs \
         replies to wait in the outbox"
    );

    // Three requests in one write. Today the first turn reads them all
    // into `Lines`, answers the first into the outbox (behind the filler
    // the socket did not take) and parks for room, the other two left in
    // `Lines` and the socket empty.
    let requests = ["one", "two", "three"];
    stream.write_all(b"one\ntwo\nthree\n").unwrap();
    written_tx.send(()).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match events.recv_deadline(deadline) {
            Ok(FillEvent::Parked {
                answered: 0,
                for_room: false,
                ..
            }) => {}
            Ok(FillEvent::Parked {
                answered,
                for_room,
                buffered,
            }) => {
                // Whether the scenario arose (it does on the engine of
                // issue 14); the replies are checked either way.
                let arose = for_room && buffered > 0;
                eprintln!(
                    "the first turn with the requests answered {answered}, then parked \
                     (for room: {for_room}) with {buffered} bytes left in `Lines`: the \
                     scenario {}",
                    if arose { "arose" } else { "did not arise" }
                );
                break;
            }
            Ok(event) => panic!("unexpected {event:?}"),
            Err(_) => panic!("no turn answered the requests within {TIMEOUT:?}"),
        }
    }

    // Now the client reads: the outbox drains, and the lines left in
    // `Lines` must get their turn.
    let mut reader = BufReader::new(stream);
    let filler =
        read_bytes(&mut reader, sent).unwrap_or_else(|ended| panic!("the filler: {ended}"));
    assert!(filler.iter().all(|&b| b == b'.'), "the filler is dots");
    let mut line = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        if let Err(ended) = next_line(&mut reader, &mut line) {
            panic!(
                "got {i} of {} replies, then {ended} (stats: {:?})",
                requests.len(),
                stopper.control.stats()
            );
        }
        line.push(b'\n');
        assert_eq!(String::from_utf8_lossy(&line), fill_reply(request));
    }
    half_close_and_expect_clean_end(&mut reader);
    let report = stop_cleanly(stopper);
    assert_eq!(report.stats.handler_errors, 0, "{:#?}", report.stats);
}

// ---------------------------------------------------------------------------
// 4. Messages larger than `outbox_limit`
// ---------------------------------------------------------------------------

const OUTBOX_LIMIT: usize = 1024;
/// Four times the outbox limit, sent to an empty outbox.
const BIG: usize = 4096;

/// `BIG` bytes of `fill`, the last one a `\n`.
fn big_message(fill: u8) -> Vec<u8> {
    let mut message = vec![fill; BIG - 1];
    message.push(b'\n');
    message
}

/// A line echo that answers `big` with a [`BIG`]-byte message, and hands
/// each connection's [`Peer`] to the test.
struct Big {
    peers: Sender<Peer>,
}

impl TurnHandler for Big {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        let _ = self.peers.send(turn.peer());
        Ok(Lines::new(turn, MAX_LINE))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line_str() {
                Ok(Some("big")) => turn.send(big_message(b'a'))?,
                Ok(Some("pattern")) => turn.send(pattern())?,
                Ok(Some(line)) => turn.send(format!("{line}\n"))?,
                Ok(None) => return Ok(Next::Park),
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

fn serve_big() -> (Stopper, Receiver<Peer>) {
    let (peers_tx, peers) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(2)
        .outbox_limit(OUTBOX_LIMIT)
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(Big { peers: peers_tx })
        .expect("spawn_turns");
    (Stopper::new(handle), peers)
}

/// Reads the big message and checks it, then that the connection still
/// answers a request, then that it ends cleanly after a half-close.
fn expect_big_then_still_open(reader: &mut BufReader<TcpStream>, fill: u8, what: &str) {
    let got = read_bytes(reader, BIG)
        .unwrap_or_else(|ended| panic!("{what}: expected {BIG} bytes, got {ended}"));
    assert!(got == big_message(fill), "{what}: the bytes differ");
    expect_still_open(reader, what);
}

/// After a big message: the connection still answers a request, then
/// ends cleanly after a half-close.
fn expect_still_open(reader: &mut BufReader<TcpStream>, what: &str) {
    let mut stream = reader.get_ref();
    stream.write_all(b"still there?\n").unwrap();
    let mut line = Vec::new();
    next_line(reader, &mut line)
        .unwrap_or_else(|ended| panic!("{what}: after the big message, a request got {ended}"));
    assert_eq!(line, b"still there?");
    half_close_and_expect_clean_end(reader);
}

/// More than the socket takes at once (loopback's send and receive
/// buffers grow to a few MiB), each byte telling its place.
const PATTERN: usize = 16 << 20;

fn pattern() -> &'static [u8] {
    static PATTERN_BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN_BYTES.get_or_init(|| (0..PATTERN).map(|i| (i % 251) as u8).collect())
}

/// `Turn::send` of a borrowed slice writes what the socket takes from the
/// caller's bytes, and only the rest waits in the outbox: a client that
/// reads 16 MiB after the send gets every byte in its place, then the
/// connection still answers.
#[test]
fn turn_send_of_a_borrowed_slice_arrives_whole_and_in_order() {
    let (stopper, _peers) = serve_big();
    let mut stream = client(stopper.addr);
    stream.write_all(b"pattern\n").unwrap();
    let mut reader = BufReader::new(stream);
    let got = read_bytes(&mut reader, PATTERN)
        .unwrap_or_else(|ended| panic!("expected {PATTERN} bytes, got {ended}"));
    if let Some(at) = got.iter().zip(pattern()).position(|(a, b)| a != b) {
        panic!("byte {at} of {PATTERN} differs");
    }
    expect_still_open(&mut reader, "Turn::send of a borrowed slice");
    let report = stop_cleanly(stopper);
    assert_eq!(report.stats.handler_errors, 0, "{:#?}", report.stats);
}

/// Bytes of the caller's own type whose `AsRef<[u8]>` (the pattern) and
/// `Into<Message>` (six other bytes) disagree: `send` writes the one
/// where the socket takes it, and would keep the rest of the other.
struct Disagreeing;

impl AsRef<[u8]> for Disagreeing {
    fn as_ref(&self) -> &[u8] {
        pattern()
    }
}

impl From<Disagreeing> for frontdesk::Message {
    fn from(_: Disagreeing) -> frontdesk::Message {
        frontdesk::Message::from("short\n")
    }
}

/// Sends [`Disagreeing`] bytes as it opens, and says when `send` is back.
struct SendsDisagreeing {
    sent: Sender<()>,
}

impl TurnHandler for SendsDisagreeing {
    type State = ();

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<()> {
        turn.send(Disagreeing)?;
        let _ = self.sent.send(());
        Ok(())
    }

    fn ready(&self, (): &mut (), _: &mut Turn<'_>) -> io::Result<Next> {
        Ok(Next::Park)
    }
}

/// A type whose two views of its bytes disagree, sent where the socket
/// takes only part of it (the client reads nothing until `send` is
/// back), must not break the engine (its outbox counted the rest of the
/// one from the offset of the other: a panic, or a count gone wrong): the
/// connection is cut after what was written, every byte of it in place.
#[test]
fn turn_send_of_bytes_that_disagree_with_their_message_cuts_the_connection() {
    let (sent_tx, sent) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(2)
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(SendsDisagreeing { sent: sent_tx })
        .expect("spawn_turns");
    let stopper = Stopper::new(handle);
    let stream = client(stopper.addr);
    sent.recv_timeout(TIMEOUT)
        .expect("`send` returned (the engine did not panic)");
    let mut reader = BufReader::new(stream);
    let got = match read_to_end(&mut reader) {
        Ok(got) => got,
        Err(ended) => panic!("expected a clean end, got {ended}"),
    };
    assert!(got.len() < PATTERN, "the socket took all {PATTERN} bytes");
    assert!(got[..] == pattern()[..got.len()], "the bytes differ");
    stop_cleanly(stopper);
}

#[test]
fn turn_send_larger_than_the_outbox_limit_is_delivered() {
    let (stopper, _peers) = serve_big();
    let mut stream = client(stopper.addr);
    stream.write_all(b"big\n").unwrap();
    let mut reader = BufReader::new(stream);
    expect_big_then_still_open(
        &mut reader,
        b'a',
        &format!("Turn::send of {BIG} bytes with outbox_limit({OUTBOX_LIMIT})"),
    );
    let report = stop_cleanly(stopper);
    assert_eq!(report.stats.handler_errors, 0, "{:#?}", report.stats);
}

#[test]
fn peer_send_larger_than_the_outbox_limit_is_delivered_and_keeps_the_client() {
    let (stopper, peers) = serve_big();
    let stream = client(stopper.addr);
    let peer = peers
        .recv_timeout(TIMEOUT)
        .expect("the handler hands over the connection's Peer");
    // A healthy idle client: parked, nothing in its outbox.
    stopper.wait_for_stats("the client's connection is parked", |s| s.parked == 1);
    let sent = peer.send(big_message(b'b'));
    let mut reader = BufReader::new(stream);
    let what = format!(
        "Peer::send of {BIG} bytes with outbox_limit({OUTBOX_LIMIT}), which returned {sent:?}"
    );
    expect_big_then_still_open(&mut reader, b'b', &what);
    assert!(sent.is_ok(), "{what}");
    let report = stop_cleanly(stopper);
    let stats = report.stats;
    assert_eq!(stats.outbox_full, 0, "{stats:#?}");
    assert_eq!(stats.handler_errors, 0, "{stats:#?}");
}
