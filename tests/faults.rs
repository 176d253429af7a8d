//! Fault injection between client and server (issue 16, item 2).
//!
//! Every client here talks to the server through a relay
//! (`support::relay`) that cuts the bytes into 1-byte segments, delays
//! them, resets or half-closes the connection after a given number of
//! bytes in either direction, or stops reading from one side for a while
//! or for good. Each case checks, whatever went wrong on the way:
//!
//! - the client gets every reply, whole and in order, or a prefix of them
//!   and then an end it can tell apart: a clean end of stream when the
//!   server closed, a reset only when a reset was injected towards it;
//! - no worker is held past the server's limits: a client that stalls is
//!   closed within its idle, request or write timeout (plus a generous
//!   margin), and a fresh client is then served by a server with a single
//!   worker;
//! - no descriptor leaks: the example process has the same descriptors
//!   open after the faults as before (`/proc/PID/fd`); a library server
//!   in this process opens none that it does not close again, while it
//!   runs and once it has stopped (`/proc/self/fd`, the test running
//!   alone);
//! - for the library servers, whose `Stats` the test can read, the
//!   identity `accepted == completed + rejected + dropped` after shutdown.
//!
//! The examples (`echo` and `commands`) run in both modes (see
//! `in_both_modes!`). Everything random (cut points, requests, delays)
//! comes from each test's seed, printed when the test fails; set
//! `FRONTDESK_FAULT_SEED` to replay a failure, or to try other plans.

#![cfg(target_os = "linux")]

mod support;
mod util;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use frontdesk::{Next, Server, ServerBuilder, ServerHandle, Stats, Turn, TurnHandler};

use support::fds::{self, Pid};
use support::relay::{Dir, Event, Faults, Plan, Relay, Rng, Seed};
use support::{in_both_modes, Client, End, Example, Mode, PATIENCE};

in_both_modes![
    every_reply_arrives_through_1_byte_segments,
    a_half_close_mid_stream_gets_the_replies_to_what_went_through,
    a_reset_towards_the_server_frees_its_worker,
    a_reset_towards_the_client_is_seen_as_a_reset,
    a_client_stalled_for_ever_is_closed_after_its_timeout,
    stalls_lose_nothing,
    library_a_reader_stalled_for_ever_is_closed_after_the_write_timeout,
    library_every_fault_is_accounted_for_in_the_stats,
];

/// The idle and request timeouts of the examples in the stall tests, and
/// the write timeout of the library server that stalls: long enough that
/// nothing else in a test takes that long on a loaded machine, short so
/// the tests stay quick.
const LIMIT: Duration = Duration::from_millis(400);

/// How late after its limit a stalled connection may be closed and still
/// pass. Timers fire within milliseconds on an idle machine; the margin is
/// for a loaded 2-core CI machine and only has to tell "closed by the
/// timeout" from "held for ever", not fast from slow.
const MARGIN: Duration = Duration::from_secs(5);

/// More than the buffers between a server and the relay hold, however
/// they grow: Linux lets a loopback socket's send buffer grow to
/// `net.ipv4.tcp_wmem`'s maximum (4 MiB by default), and the relay's
/// receive buffer towards the server is made small. A server that sends
/// this much to a relay that does not read has its writes back up.
const BACKS_UP: usize = 8 << 20;

/// How much waiting in a server's send buffer shows that its writes have
/// backed up: far more than the relay's small receive window (a few KiB)
/// lets through, and less than a loopback socket's send buffer holds.
const BACKED_UP: u64 = 64 * 1024;

/// The examples, each with a protocol the tests know the answers of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `commands`: a line in, a line out.
    Commands,
    /// `echo`: every byte back.
    Echo,
}

const PROTOCOLS: [Protocol; 2] = [Protocol::Commands, Protocol::Echo];

impl Protocol {
    fn example(self) -> &'static str {
        match self {
            Protocol::Commands => "commands",
            Protocol::Echo => "echo",
        }
    }

    /// A session of about `size` bytes of requests, drawn from `rng`.
    fn session(self, rng: &mut Rng, size: usize) -> Session {
        match self {
            Protocol::Echo => {
                let requests: Vec<u8> = (0..size).map(|_| rng.next_u64() as u8).collect();
                Session {
                    replies: requests.clone(),
                    requests,
                    ends: None,
                }
            }
            Protocol::Commands => {
                let mut session = Session {
                    requests: Vec::new(),
                    replies: Vec::new(),
                    ends: Some(Vec::new()),
                };
                let mut k = 0;
                while session.requests.len() < size {
                    k += 1;
                    let (request, reply): (Vec<u8>, Vec<u8>) = match rng.below(7) {
                        0 => (b"ping\n".to_vec(), b"pong\n".to_vec()),
                        1 => (b"ping\r\n".to_vec(), b"pong\n".to_vec()),
                        2 => (b"  ping \t\n".to_vec(), b"pong\n".to_vec()),
                        // A long line now and then, so that a large
                        // session takes fewer lines.
                        5 if size >= 64 * 1024 => {
                            let long = "x".repeat(rng.between(100, 4000) as usize);
                            (
                                format!("{long}\n").into_bytes(),
                                format!("unknown: {long}\n").into_bytes(),
                            )
                        }
                        3 | 5 => (
                            format!("hello {k}\n").into_bytes(),
                            format!("unknown: hello {k}\n").into_bytes(),
                        ),
                        4 => (b"\n".to_vec(), b"unknown: \n".to_vec()),
                        _ => (b"\xff\xfe\n".to_vec(), b"error: invalid utf-8\n".to_vec()),
                    };
                    session.requests.extend_from_slice(&request);
                    session.replies.extend_from_slice(&reply);
                    let ends = session.ends.as_mut().expect("commands");
                    ends.push((session.requests.len(), session.replies.len()));
                }
                session
            }
        }
    }
}

/// What a client sends, and what it should get back.
struct Session {
    requests: Vec<u8>,
    /// The replies to every request, in order.
    replies: Vec<u8>,
    /// For a line protocol: where each request ends in `requests` and its
    /// reply in `replies`. `None` for echo, where every byte is its own.
    ends: Option<Vec<(usize, usize)>>,
}

impl Session {
    /// The replies to the requests complete within the first `n` bytes:
    /// what the server owes a client whose requests were cut after `n`.
    fn replies_to_first(&self, n: u64) -> &[u8] {
        let n = usize::try_from(n).expect("a small count");
        match &self.ends {
            None => &self.replies[..n.min(self.replies.len())],
            Some(ends) => {
                let answered = ends
                    .iter()
                    .take_while(|(request_end, _)| *request_end <= n)
                    .last()
                    .map_or(0, |(_, reply_end)| *reply_end);
                &self.replies[..answered]
            }
        }
    }

    /// The first `n` bytes of the replies.
    fn first_reply_bytes(&self, n: u64) -> &[u8] {
        let n = usize::try_from(n).expect("a small count");
        &self.replies[..n.min(self.replies.len())]
    }

    /// `count` cut points within the requests (`dir` Up) or the replies
    /// (`dir` Down): the very start, the very end, and points between.
    fn cut_points(&self, dir: Dir, rng: &mut Rng, count: usize) -> Vec<u64> {
        let len = match dir {
            Dir::Up => self.requests.len(),
            Dir::Down => self.replies.len(),
        } as u64;
        let mut points = vec![0, len - 1];
        while points.len() < count {
            points.push(rng.between(1, len - 2));
        }
        points
    }
}

/// What a client saw of a session.
struct Seen {
    got: Vec<u8>,
    end: End,
    /// From before it connected to the end of the stream.
    took: Duration,
}

impl Seen {
    fn describe(&self) -> String {
        format!(
            "{} bytes, then {:?}, after {:?}; the last bytes: {:?}",
            self.got.len(),
            self.end,
            self.took,
            String::from_utf8_lossy(&self.got[self.got.len().saturating_sub(40)..])
        )
    }

    /// Checks that the client got exactly `expected`, then a clean end.
    fn assert_whole(&self, expected: &[u8], context: &str) {
        assert!(
            self.got == expected && self.end == End::Clean,
            "{context}: expected {} bytes then a clean end, got {}",
            expected.len(),
            self.describe()
        );
    }

    /// Checks that the client got a prefix of `expected` (all of it, or
    /// less), then `end`.
    fn assert_prefix(&self, expected: &[u8], end: End, context: &str) {
        assert!(
            expected.starts_with(&self.got) && self.end == end,
            "{context}: expected at most {} bytes, a prefix of the replies, then {end:?}; got {}",
            expected.len(),
            self.describe()
        );
    }
}

/// Whether `event` is a cut (a reset or a half-close), to check that a
/// plan's fault did happen.
fn is_cut(event: &Event) -> bool {
    matches!(event, Event::Cut { .. })
}

/// Connects to `addr`, sends `requests` from a thread and half-closes, and
/// reads everything that comes back until the stream ends.
///
/// The kernel reports a reset once, to the first call on the socket that
/// fails: when the sending thread's write meets it, the read that follows
/// returns 0, as after a clean end. So the sender's failure counts too: a
/// reset is what either thread saw.
fn converse(addr: SocketAddr, requests: &[u8]) -> Seen {
    let start = Instant::now();
    let mut client = Client::connect(addr);
    let mut writer = client.stream().try_clone().expect("clone the client");
    let requests = requests.to_vec();
    let sender = thread::spawn(move || {
        // The relay or the server may end the connection before all of
        // it is sent; what comes back is checked, and how it ended.
        let failed = writer.write_all(&requests).err();
        let _ = writer.shutdown(Shutdown::Write);
        failed.map(|error| error.kind())
    });
    let mut got = Vec::new();
    let mut end = client.read_until_end(|bytes| got.extend_from_slice(bytes));
    let took = start.elapsed();
    if sender.join().expect("the sender") == Some(io::ErrorKind::ConnectionReset) {
        end = End::Reset;
    }
    Seen { got, end, took }
}

/// An example under test, with the descriptors it had open once it had
/// served a first client.
struct Served {
    protocol: Protocol,
    server: Example,
    baseline: Vec<String>,
    /// This test opens descriptors in this process (the example's pipes,
    /// clients, relays) while it runs; declared last, so dropped last.
    _shared: RwLockReadGuard<'static, ()>,
}

/// Every example runs with one worker, so that in the `Handler` mode a
/// connection holding its worker for ever keeps every later client,
/// queued, from being served. (Not without a queue: the worker a
/// connection frees takes an instant to be ready for the next one, and a
/// client arriving in it would be turned away.)
const ONE_WORKER: [&str; 2] = ["--workers", "1"];

impl Served {
    fn start(mode: Mode, protocol: Protocol, extra: &[&str]) -> Served {
        let shared = share_process();
        let mut args = ONE_WORKER.to_vec();
        args.extend_from_slice(extra);
        let server = mode.start(protocol.example(), &args);
        let mut served = Served {
            protocol,
            server,
            baseline: Vec::new(),
            _shared: shared,
        };
        // What a server opens once (the turn mode's poller, the closer's)
        // is open once it has served a client.
        served.serves_a_fresh_client();
        served.wait_for_no_connection();
        served.baseline = fds::descriptor_kinds(Pid::Of(served.server.pid()));
        served
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Connects straight to the server (not through a relay) until it is
    /// served (a busy server turns clients away), and checks a request.
    fn serves_a_fresh_client(&self) {
        let mut client = Client::connect_served(self.server.addr, |client| {
            let (request, reply) = match self.protocol {
                Protocol::Commands => ("ping\n", "pong"),
                Protocol::Echo => ("fresh\n", "fresh"),
            };
            client.try_send(request).is_ok()
                && matches!(client.try_line(), Ok(Some(line)) if line == reply)
        });
        client.stream().shutdown(Shutdown::Write).expect("shutdown");
        client.expect_clean_end();
    }

    /// Waits until the server holds no connection, only its listener.
    fn wait_for_no_connection(&self) {
        let pid = Pid::Of(self.server.pid());
        let start = Instant::now();
        loop {
            let sockets = fds::tcp_sockets(pid);
            if sockets.iter().all(fds::TcpSocket::is_listening) {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the server still holds connections after {PATIENCE:?}: {sockets:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the server's writes to a client have backed up: a
    /// connection's send buffer holds [`BACKED_UP`] bytes the client has
    /// not taken.
    fn wait_until_backed_up(&self) {
        let pid = Pid::Of(self.server.pid());
        let port = self.server.addr.port();
        let start = Instant::now();
        loop {
            let sockets = fds::tcp_sockets(pid);
            let backed_up = sockets.iter().any(|socket| {
                socket.local_port == port
                    && !socket.is_listening()
                    && socket.send_queue >= BACKED_UP
            });
            if backed_up {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the server's writes never backed up: {sockets:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// After a case: a fresh client is served while the relay (if any is
    /// left) still holds what it held; then, the relay gone, the server's
    /// descriptors are those it had before; then it stops as it should.
    fn finish(mut self, relay: Option<Relay>) {
        self.serves_a_fresh_client();
        drop(relay);
        let pid = Pid::Of(self.server.pid());
        let start = Instant::now();
        loop {
            let now = fds::descriptor_kinds(pid);
            if now == self.baseline {
                break;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "descriptors leaked: {} before the faults, {} after, {PATIENCE:?} later: \
                 before {:?}, after {now:?}; TCP sockets: {:?}",
                self.baseline.len(),
                now.len(),
                self.baseline,
                fds::tcp_sockets(pid)
            );
            thread::sleep(Duration::from_millis(5));
        }
        self.server.stop();
    }
}

fn every_reply_arrives_through_1_byte_segments(mode: Mode) {
    let seed = Seed::new(0x5e6_0001);
    let mut rng = seed.rng(0);
    for protocol in PROTOCOLS {
        let served = Served::start(mode, protocol, &[]);
        let faults = Faults::none()
            .segments(1)
            .delay(Duration::ZERO, Duration::from_micros(200));
        let relay = Relay::start(
            served.addr(),
            Plan::new(&seed).up(faults.clone()).down(faults),
        );
        let session = protocol.session(&mut rng, 1500);
        let seen = converse(relay.addr, &session.requests);
        seen.assert_whole(&session.replies, protocol.example());
        served.finish(Some(relay));
    }
}

fn a_half_close_mid_stream_gets_the_replies_to_what_went_through(mode: Mode) {
    let seed = Seed::new(0x5e6_0002);
    let mut rng = seed.rng(0);
    for protocol in PROTOCOLS {
        let served = Served::start(mode, protocol, &[]);
        let session = protocol.session(&mut rng, 600);
        for dir in [Dir::Up, Dir::Down] {
            for at in session.cut_points(dir, &mut rng, 4) {
                let faults = Faults::none().half_close_after(at);
                let plan = match dir {
                    Dir::Up => Plan::new(&seed).up(faults),
                    Dir::Down => Plan::new(&seed).down(faults),
                };
                let relay = Relay::start(served.addr(), plan);
                let seen = converse(relay.addr, &session.requests);
                let expected = match dir {
                    // The server saw the requests end there.
                    Dir::Up => session.replies_to_first(at),
                    // The client saw the replies end there.
                    Dir::Down => session.first_reply_bytes(at),
                };
                seen.assert_whole(expected, &format!("{protocol:?}: {}", relay.plan()));
                relay.wait_for("the half-close", is_cut);
                drop(relay);
            }
        }
        served.finish(None);
    }
}

fn a_reset_towards_the_server_frees_its_worker(mode: Mode) {
    let seed = Seed::new(0x5e6_0003);
    let mut rng = seed.rng(0);
    for protocol in PROTOCOLS {
        let served = Served::start(mode, protocol, &[]);
        let session = protocol.session(&mut rng, 600);
        for at in session.cut_points(Dir::Up, &mut rng, 4) {
            // In 1-byte segments, so that the server has read the bytes
            // before the reset one by one, a request half read.
            let relay = Relay::start(
                served.addr(),
                Plan::new(&seed).up(Faults::none().segments(1).reset_after(at)),
            );
            let seen = converse(relay.addr, &session.requests);
            let context = format!("{protocol:?}: {}", relay.plan());
            relay.wait_for("the reset", is_cut);
            // Replies to the requests before the reset, or fewer: the
            // server's last ones may meet the reset. The relay then ends
            // the client's side cleanly.
            seen.assert_prefix(session.replies_to_first(at), End::Clean, &context);
            // The one worker is free again, for a client of its own.
            served.serves_a_fresh_client();
            drop(relay);
        }
        served.finish(None);
    }
}

fn a_reset_towards_the_client_is_seen_as_a_reset(mode: Mode) {
    let seed = Seed::new(0x5e6_0004);
    let mut rng = seed.rng(0);
    for protocol in PROTOCOLS {
        let served = Served::start(mode, protocol, &[]);
        let session = protocol.session(&mut rng, 600);
        for at in session.cut_points(Dir::Down, &mut rng, 4) {
            let relay = Relay::start(
                served.addr(),
                Plan::new(&seed).down(Faults::none().reset_after(at)),
            );
            let seen = converse(relay.addr, &session.requests);
            // Never a clean end: that would pass a cut reply off as whole.
            seen.assert_prefix(
                session.first_reply_bytes(at),
                End::Reset,
                &format!("{protocol:?}: {}", relay.plan()),
            );
            relay.wait_for("the reset", is_cut);
            served.serves_a_fresh_client();
            drop(relay);
        }
        served.finish(None);
    }
}

fn a_client_stalled_for_ever_is_closed_after_its_timeout(mode: Mode) {
    let seed = Seed::new(0x5e6_0005);
    let mut rng = seed.rng(0);
    let limit = LIMIT.as_millis().to_string();
    for protocol in PROTOCOLS {
        // A request cut short is due within the request timeout (commands);
        // a client that sends nothing more is idle (both).
        let served = Served::start(
            mode,
            protocol,
            &["--idle-timeout-ms", &limit, "--request-timeout-ms", &limit],
        );
        let session = protocol.session(&mut rng, 300);
        for at in session.cut_points(Dir::Up, &mut rng, 3) {
            // The relay stops reading the client's requests: the server
            // waits for the rest, and the client for the replies.
            let relay = Relay::start(
                served.addr(),
                Plan::new(&seed).up(Faults::none().stall_after(at, None)),
            );
            let seen = converse(relay.addr, &session.requests);
            let context = format!("{protocol:?}: {}", relay.plan());
            seen.assert_whole(session.replies_to_first(at), &context);
            relay.wait_for("the stall", |event| matches!(event, Event::Stalled { .. }));
            // The timer starts when the server reads the last byte it
            // gets, after the client began.
            assert!(
                seen.took >= LIMIT && seen.took <= LIMIT + MARGIN,
                "{context}: closed after {:?}, for a limit of {LIMIT:?}",
                seen.took
            );
            // The stalled connection holds no worker any more.
            served.serves_a_fresh_client();
            drop(relay);
        }
        served.finish(None);
    }
}

fn stalls_lose_nothing(mode: Mode) {
    let seed = Seed::new(0x5e6_0006);
    let mut rng = seed.rng(0);
    for protocol in PROTOCOLS {
        let served = Served::start(mode, protocol, &[]);
        let session = protocol.session(&mut rng, BACKS_UP);
        let up_at = rng.between(1, session.requests.len() as u64 / 2);
        let down_at = rng.between(1, session.replies.len() as u64 / 2);
        // The requests stall for a while; the replies until the server's
        // writes have backed up, then the relay reads again.
        let relay = Relay::start(
            served.addr(),
            Plan::new(&seed)
                .up(Faults::none().stall_after(up_at, Some(Duration::from_millis(200))))
                .down(Faults::none().stall_after(down_at, None))
                .server_receive_buffer(4096),
        );
        let talk = {
            let (addr, requests) = (relay.addr, session.requests.clone());
            thread::spawn(move || converse(addr, &requests))
        };
        relay.wait_for("the stall of the replies", |event| {
            matches!(event, Event::Stalled { dir: Dir::Down, .. })
        });
        served.wait_until_backed_up();
        relay.resume();
        let seen = talk.join().expect("the client");
        seen.assert_whole(&session.replies, &format!("{protocol:?}: {}", relay.plan()));
        served.finish(Some(relay));
    }
}

// The library's servers, whose `Stats` the test reads: an echo in each
// mode, in this process.

/// Tests in one binary run at the same time, in one process. A test with
/// a library server counts this process's descriptors, so it runs alone
/// ([`run_alone`]); every other test holds [`share_process`] for its
/// whole life.
static DESCRIPTORS: RwLock<()> = RwLock::new(());

/// For a test that opens descriptors in this process: hold the guard for
/// the whole test.
fn share_process() -> RwLockReadGuard<'static, ()> {
    DESCRIPTORS.read().unwrap_or_else(PoisonError::into_inner)
}

/// For a test that counts this process's descriptors: no other test of
/// this binary runs while the guard is held.
fn run_alone() -> RwLockWriteGuard<'static, ()> {
    DESCRIPTORS.write().unwrap_or_else(PoisonError::into_inner)
}

/// How much the turn-mode echo reads at a time, and the outbox room it
/// needs before reading.
const CHUNK: usize = 4096;

/// The turn mode's echo, as in `examples/echo.rs`.
struct EchoTurns;

impl TurnHandler for EchoTurns {
    type State = ();

    fn open(&self, _: &mut Turn<'_>) -> io::Result<()> {
        Ok(())
    }

    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        let mut buf = [0; CHUNK];
        while turn.outbox_room() >= CHUNK {
            match turn.read(&mut buf) {
                Ok(0) => return Ok(Next::Close),
                Ok(n) => turn.send(&buf[..n])?,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        Ok(Next::Park)
    }
}

/// A library echo server in this process, and its descriptors: those the
/// process had before it started, and once it had served a first client.
struct Library {
    handle: ServerHandle,
    addr: SocketAddr,
    /// Connections made to it so far, through a relay or not.
    clients: u64,
    before: Vec<String>,
    settled: Vec<String>,
    /// Held for the whole test, declared last so that it is dropped last.
    _alone: RwLockWriteGuard<'static, ()>,
}

impl Library {
    /// An echo server in `mode`, from `builder` with one worker.
    fn start(mode: Mode, builder: ServerBuilder) -> Library {
        let alone = run_alone();
        let before = fds::descriptor_kinds(Pid::Own);
        let server = builder
            .workers(1)
            // Small, so that a client that does not read fills it soon.
            .outbox_limit(4 * CHUNK)
            .bind(util::LOCALHOST)
            .expect("bind");
        let handle = match mode {
            Mode::Handler => server.spawn(util::echo),
            Mode::Turns => server.spawn_turns(EchoTurns),
        }
        .expect("spawn");
        let addr = util::tcp_addr(handle.local_addr());
        let mut library = Library {
            handle,
            addr,
            clients: 0,
            before,
            settled: Vec::new(),
            _alone: alone,
        };
        // What the server opens once (the turn mode's poller) is open once
        // it has served a client.
        library.serves_a_fresh_client();
        library.wait_until_idle();
        library.settled = fds::descriptor_kinds(Pid::Own);
        library
    }

    /// Connects straight to the server and checks an echo.
    fn serves_a_fresh_client(&mut self) {
        self.clients += 1;
        let mut fresh = util::client(self.addr);
        assert_eq!(util::exchange(&mut fresh, "fresh"), "fresh");
        fresh.shutdown(Shutdown::Write).expect("shutdown");
        util::assert_clean_end(&mut fresh);
    }

    /// A relay to the server with `plan`, for one more client.
    fn relay(&mut self, plan: Plan) -> Relay {
        self.clients += 1;
        Relay::start(self.addr, plan)
    }

    /// Waits until every connection so far has ended and been closed.
    fn wait_until_idle(&self) -> Stats {
        let clients = self.clients;
        util::wait_for_stats(&self.handle, "every connection is closed", |s| {
            s.completed == clients && s.active == 0 && s.parked == 0 && s.lingering == 0
        })
    }

    /// Once every client and relay is gone: checks that the server holds
    /// no descriptor it did not hold after its first client; stops it,
    /// checks the stats identity, that it served every client and turned
    /// none away, and that the process holds no descriptor it did not
    /// hold before the server started. Returns the final stats.
    fn finish(self) -> Stats {
        let Library {
            handle,
            clients,
            before,
            settled,
            ..
        } = self;
        util::wait_for_stats(&handle, "every connection is closed", |s| {
            s.completed == clients && s.active == 0 && s.parked == 0 && s.lingering == 0
        });
        wait_for_no_more_descriptors_than(&settled, "while the server runs");
        let (report, stats) = util::stop(handle);
        util::assert_accounted(&stats);
        assert_eq!(stats.accepted, clients, "{report:#?}");
        assert_eq!(stats.completed, clients, "{report:#?}");
        assert_eq!(stats.rejected.total(), 0, "{report:#?}");
        assert_eq!(report.forced + report.dropped, 0, "{report:#?}");
        wait_for_no_more_descriptors_than(&before, "after the shutdown");
        stats
    }
}

/// Waits until this process has no descriptor of a kind, or more of a
/// kind, than `base` lists; panics saying `when` if that takes longer than
/// [`PATIENCE`]. Fewer is fine: a test that ran before may still be
/// letting go of its last pipes (its example's output), and no test that
/// could open one runs meanwhile.
fn wait_for_no_more_descriptors_than(base: &[String], when: &str) {
    let count = |kinds: &[String]| {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for kind in kinds {
            *counts.entry(kind.clone()).or_default() += 1;
        }
        counts
    };
    let allowed = count(base);
    let start = Instant::now();
    loop {
        let now = fds::descriptor_kinds(Pid::Own);
        let extra: Vec<(String, usize)> = count(&now)
            .into_iter()
            .filter_map(|(kind, n)| {
                let more = n.saturating_sub(allowed.get(&kind).copied().unwrap_or(0));
                (more > 0).then_some((kind, more))
            })
            .collect();
        if extra.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "descriptors leaked {when}: {extra:?} more than {base:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A client that sends [`BACKS_UP`] bytes through `relay` and reads
/// nothing; returns it and the thread that sends, which ends once the
/// relay is dropped, if not before.
fn flood(relay: &Relay) -> (Client, thread::JoinHandle<()>) {
    let client = Client::connect(relay.addr);
    let mut writer = client.stream().try_clone().expect("clone the client");
    let sender = thread::spawn(move || {
        let _ = writer.write_all(&vec![b'x'; BACKS_UP]);
    });
    (client, sender)
}

fn library_a_reader_stalled_for_ever_is_closed_after_the_write_timeout(mode: Mode) {
    let seed = Seed::new(0x5e6_0007);
    let mut server = Library::start(
        mode,
        Server::builder()
            .write_timeout(LIMIT)
            // Only the write timeout may end the connection.
            .idle_timeout(None),
    );
    // The relay never reads the echo: the server's writes back up.
    let relay = server.relay(
        Plan::new(&seed)
            .down(Faults::none().stall_after(0, None))
            .server_receive_buffer(4096),
    );
    let start = Instant::now();
    let (client, sender) = flood(&relay);
    let clients = server.clients;
    let stats = util::wait_for_stats(
        &server.handle,
        "the write timeout closes the connection",
        |s| s.completed == clients,
    );
    let took = start.elapsed();
    assert_write_timeouts(mode, &stats);
    assert!(
        took >= LIMIT && took <= LIMIT + MARGIN,
        "closed {took:?} after the client began, for a write timeout of {LIMIT:?}"
    );
    // The one worker serves a fresh client.
    server.serves_a_fresh_client();
    drop(relay);
    drop(client);
    sender.join().expect("the sender");
    let stats = server.finish();
    assert_write_timeouts(mode, &stats);
}

/// Checks that the one stalled connection counted its write timeout,
/// once, in both modes (see `turns_a_stalled_reader_counts_one_write_timeout`).
fn assert_write_timeouts(_mode: Mode, stats: &Stats) {
    assert_eq!(stats.timeouts.write, 1, "{stats:#?}");
}

/// The turn mode counted a stalled reader's write timeout twice: once when
/// the timer closed the parked connection, and again when the same timer,
/// already due, ended the flush of its outbox that the close began.
#[test]
fn turns_a_stalled_reader_counts_one_write_timeout() {
    let seed = Seed::new(0x5e6_0009);
    let mut server = Library::start(
        Mode::Turns,
        Server::builder().write_timeout(LIMIT).idle_timeout(None),
    );
    let relay = server.relay(
        Plan::new(&seed)
            .down(Faults::none().stall_after(0, None))
            .server_receive_buffer(4096),
    );
    let (client, sender) = flood(&relay);
    let stats = server.wait_until_idle();
    drop(relay);
    drop(client);
    sender.join().expect("the sender");
    assert_eq!(stats.timeouts.write, 1, "{stats:#?}");
    server.finish();
}

fn library_every_fault_is_accounted_for_in_the_stats(mode: Mode) {
    let seed = Seed::new(0x5e6_0008);
    let mut rng = seed.rng(0);
    // The idle timeout ends the case that stalls for ever. Longer than
    // [`LIMIT`]: the other cases must not meet it, even when a loaded
    // machine pauses a relay between two 1-byte segments.
    let mut server = Library::start(mode, Server::builder().idle_timeout(Duration::from_secs(1)));
    let session = Protocol::Echo.session(&mut rng, 8 * 1024);
    let len = session.requests.len() as u64;
    let mut at = || rng.between(1, len - 1);
    let delays = Faults::none()
        .segments(1)
        .delay(Duration::ZERO, Duration::from_micros(20));
    // Each plan, and what the client must see: the echo of the first so
    // many bytes, whole then a clean end, or a prefix of it (a reset may
    // cut it short) then the given end.
    let (a, b, c, d, e, f, g) = (at(), at(), at(), at(), at(), at(), at());
    let cases: Vec<(Plan, u64, Option<End>)> = vec![
        (Plan::new(&seed).up(delays.clone()).down(delays), len, None),
        (
            Plan::new(&seed).up(Faults::none().half_close_after(a)),
            a,
            None,
        ),
        (
            Plan::new(&seed).down(Faults::none().half_close_after(b)),
            b,
            None,
        ),
        (
            Plan::new(&seed).up(Faults::none().reset_after(c)),
            c,
            Some(End::Clean),
        ),
        (
            Plan::new(&seed).down(Faults::none().reset_after(d)),
            d,
            Some(End::Reset),
        ),
        (
            Plan::new(&seed)
                .up(Faults::none().stall_after(e, Some(Duration::from_millis(100))))
                .down(Faults::none().stall_after(f, Some(Duration::from_millis(100)))),
            len,
            None,
        ),
        // Closed by the idle timeout.
        (
            Plan::new(&seed).up(Faults::none().stall_after(g, None)),
            g,
            None,
        ),
    ];
    for (plan, upto, prefix_then) in cases {
        let relay = server.relay(plan);
        let seen = converse(relay.addr, &session.requests);
        let context = relay.plan().to_string();
        let expected = session.first_reply_bytes(upto);
        match prefix_then {
            Some(end) => seen.assert_prefix(expected, end, &context),
            None => seen.assert_whole(expected, &context),
        }
        drop(relay);
    }
    let stats = server.finish();
    assert_eq!(stats.timeouts.idle, 1, "{stats:#?}");
}
