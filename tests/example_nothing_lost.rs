//! End-to-end tests that nothing a client sent is lost when a connection
//! closes or the server shuts down: every request sent before SIGTERM is
//! answered, every byte echoed, and a connection the server ends (after
//! `quit`, or an over-long line) ends with the last reply and a clean end
//! of stream, never a reset.
//!
//! A reset is what the kernel sends when a socket is closed with input it
//! has not read, and it throws away whatever the server wrote that has not
//! reached the client yet. So these tests tell a clean end (a read returns
//! 0) from a reset, which `Client::expect_closed` does not.
//!
//! Every case runs against both of each example's handlers (see
//! `in_both_modes!`): `handler::CASE` against the `Handler`, the default,
//! and `turns::CASE` against the `TurnHandler` (`--turns`).

#![cfg(unix)]

mod support;

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use support::{in_both_modes, Client, End, Example, Mode, EXIT_WITHIN, PATIENCE};

in_both_modes![
    commands_answers_every_line_sent_before_sigterm_under_back_pressure,
    echo_returns_every_byte_sent_before_sigterm_under_back_pressure,
    quit_with_pipelined_data_gets_bye_then_a_clean_end,
    over_long_line_gets_the_error_line_every_time,
    sigterm_with_a_client_that_never_stops_sending_exits_0_in_time,
];

/// The client's kernel buffers, each way, in the back-pressure tests (the
/// kernel doubles the figure). Set so that backing up takes a moderate
/// amount of data: on Linux, about 700 KB of `ping` lines (some 140,000)
/// per `commands` client, and about 5 MB per `echo` client, whose server
/// reads fast enough for its own receive buffer to grow. Smaller buffers
/// leave so little in flight when the signal comes that losing it is left
/// to chance.
const CLIENT_BUFFER: usize = 256 * 1024;

/// Far more than the client and server buffers can hold together, so a
/// client that writes this much without being stopped has not found back
/// pressure at all (the server reads and drops, say).
const NEVER_BACKED_UP: u64 = 256 << 20;

/// How long after SIGTERM the back-pressure tests' client half-closes.
/// Within the examples' 2 s drain deadline, so a server that keeps reading
/// until its client is done has time to see the end; long enough that a
/// server that stops answering at the signal does not get it for free.
const HALF_CLOSE_AFTER: Duration = Duration::from_secs(1);

/// `ping\n`, the command of the back-pressure test, and its answer.
const PING: &[u8] = b"ping\n";
const PONG: &[u8] = b"pong\n";

/// Byte `at` of an endless stream of `ping\n`.
fn ping_byte(at: u64) -> u8 {
    PING[(at % PING.len() as u64) as usize]
}

/// Byte `at` of an endless stream of `pong\n`.
fn pong_byte(at: u64) -> u8 {
    PONG[(at % PONG.len() as u64) as usize]
}

/// Byte `at` of a stream in which every position has its own look, so that
/// a lost, repeated or reordered chunk of any length shows: the top byte of
/// a multiplicative hash of the position (Fibonacci hashing).
fn pattern_byte(at: u64) -> u8 {
    (at.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// The replies a client has received, checked byte by byte against what
/// they should be.
struct Replies {
    expected: fn(u64) -> u8,
    received: u64,
    /// The position of the first byte that was not the expected one.
    first_wrong: Option<u64>,
}

impl Replies {
    fn new(expected: fn(u64) -> u8) -> Replies {
        Replies {
            expected,
            received: 0,
            first_wrong: None,
        }
    }

    fn add(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.first_wrong.is_none() && byte != (self.expected)(self.received) {
                self.first_wrong = Some(self.received);
            }
            self.received += 1;
        }
    }
}

/// What one client of a back-pressure run saw.
struct Seen {
    /// Bytes the client wrote before the signal: whole requests only.
    sent: u64,
    replies: Replies,
    end: End,
}

/// What a back-pressure run saw.
struct Outcome {
    clients: Vec<Seen>,
    /// How long after the signal the server had exited, at most.
    exited_after: Duration,
    success: bool,
    stderr: String,
}

/// How many times each back-pressure test runs its scenario, each time
/// with a new server. Whether a server that stops reading at the signal
/// loses data depends on a race between its last read and the client's
/// last segments, which it loses nearly every time with this much in
/// flight, but not quite every time.
const ROUNDS: usize = 3;

/// How many clients the back-pressure tests back up at once: one per
/// worker, so that every worker is blocked writing replies when the signal
/// comes and every one of them has to drain, while the others compete for
/// the CPU.
const CLIENTS: usize = 4;

/// Held by the back-pressure run in progress, so that they run one at a
/// time. Each keeps both cores of a small machine busy while the server
/// drains its clients' backlog (some 670,000 lines), which it must finish
/// within the examples' 2 s drain deadline; the test binary runs its tests
/// in parallel, and two such runs at once (each example, in each mode)
/// made one miss the deadline now and then (2 in 10 runs of the file).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `example` with [`CLIENTS`] workers and a queue of as many, and
/// [`CLIENTS`] clients that each write the stream `request_byte` without
/// reading any reply until it is backed up, in whole requests of `unit`
/// bytes. Then SIGTERM; each client reads every reply, and half-closes
/// [`HALF_CLOSE_AFTER`] the signal. Replies are checked against
/// `reply_byte`.
fn sigterm_under_back_pressure(
    mode: Mode,
    example: &str,
    unit: u64,
    request_byte: fn(u64) -> u8,
    reply_byte: fn(u64) -> u8,
) -> Outcome {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let workers = CLIENTS.to_string();
    let mut server = mode.start(example, &["--workers", &workers, "--queue", &workers]);
    // One after the other: a client that is backed up stays so, since its
    // worker waits for it to read.
    let backed_up: Vec<(Client, Replies, u64)> = (0..CLIENTS)
        .map(|_| {
            let mut client =
                Client::connect_with_buffers(server.addr, CLIENT_BUFFER, CLIENT_BUFFER);
            let mut replies = Replies::new(reply_byte);
            let sent = back_up(&mut client, unit, request_byte, &mut replies);
            (client, replies, sent)
        })
        .collect();

    server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    // A timer, not synchronisation: it models clients that, having sent
    // their last request, take a while to say they are done. Until then
    // the server must go on reading what they sent before the signal.
    let half_close = {
        let streams: Vec<TcpStream> = backed_up
            .iter()
            .map(|(client, _, _)| client.stream().try_clone().expect("clone the client"))
            .collect();
        thread::spawn(move || {
            thread::sleep(HALF_CLOSE_AFTER);
            for stream in streams {
                // The server may have closed (even reset) the connection
                // by now; the test looks at what the client read, not at
                // this.
                let _ = stream.shutdown(Shutdown::Write);
            }
        })
    };
    let readers: Vec<_> = backed_up
        .into_iter()
        .map(|(mut client, mut replies, sent)| {
            thread::spawn(move || {
                let end = client.read_until_end(|bytes| replies.add(bytes));
                Seen { sent, replies, end }
            })
        })
        .collect();
    let clients: Vec<Seen> = readers
        .into_iter()
        .map(|reader| reader.join().expect("reader thread"))
        .collect();
    half_close.join().expect("half-close thread");
    let (status, _) = server.wait(PATIENCE);
    Outcome {
        clients,
        exited_after: signalled.elapsed(),
        success: status.success(),
        stderr: server.stderr(),
    }
}

/// Writes the stream `request_byte` to `client`, without reading replies,
/// until a write would block with a whole number of `unit`-byte requests
/// sent. Returns the number of bytes sent.
///
/// On loopback a write would block only when the client's send buffer is
/// full, which it is only when the server's receive buffer is full too and
/// the server is not reading: it is blocked writing replies that fill the
/// client's receive buffer and its own send buffer. That is the back
/// pressure the test is after, with every buffer on the way full.
///
/// When the write that blocks has sent part of a request, the rest must go
/// out before the signal, so that "requests sent before the signal" is a
/// whole number: the client reads a few replies (into `replies`) to make
/// room for it.
fn back_up(
    client: &mut Client,
    unit: u64,
    request_byte: fn(u64) -> u8,
    replies: &mut Replies,
) -> u64 {
    let mut stream = client.stream().try_clone().expect("clone the client");
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    // Set by the first write that would block: from then on the client
    // only finishes the request that write cut, if it did.
    let mut held_back = false;
    stream.set_nonblocking(true).expect("non-blocking");
    loop {
        if held_back && sent % unit == 0 {
            break;
        }
        assert!(
            sent < NEVER_BACKED_UP,
            "the client sent {sent} bytes without ever being held back"
        );
        assert!(
            start.elapsed() < PATIENCE,
            "still not backed up after {PATIENCE:?} ({sent} bytes sent)"
        );
        // After a partial request, only its rest.
        let len = match sent % unit {
            0 => chunk.len(),
            done => (unit - done) as usize,
        };
        for (at, byte) in (sent..).zip(&mut chunk[..len]) {
            *byte = request_byte(at);
        }
        match stream.write(&chunk[..len]) {
            Ok(0) => panic!("write returned 0 after {sent} bytes"),
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                held_back = true;
                if sent % unit != 0 {
                    read_some(client, &stream, replies);
                }
            }
            Err(e) => panic!("writing after {sent} bytes: {e}"),
        }
    }
    stream.set_nonblocking(false).expect("blocking again");
    sent
}

/// Reads one chunk of replies, waiting for it (at most [`PATIENCE`]).
fn read_some(client: &mut Client, stream: &TcpStream, replies: &mut Replies) {
    use std::io::BufRead;
    // Non-blocking mode belongs to the socket, which `stream` shares.
    stream.set_nonblocking(false).expect("blocking");
    let reader = client.reader();
    let len = match reader.fill_buf() {
        Ok([]) => panic!(
            "the server closed while the client was backing up ({} bytes of replies)",
            replies.received
        ),
        Ok(bytes) => {
            replies.add(bytes);
            bytes.len()
        }
        Err(e) => panic!("reading replies while backing up: {e}"),
    };
    reader.consume(len);
    stream.set_nonblocking(true).expect("non-blocking");
}

/// Checks what [`sigterm_under_back_pressure`] saw in `round`, describing
/// requests and replies with `describe` (in lines, or bytes).
fn check(outcome: &Outcome, round: usize, describe: impl Fn(u64) -> String) {
    let Outcome {
        clients,
        exited_after,
        success,
        stderr,
    } = outcome;
    let seen: Vec<String> = clients
        .iter()
        .map(|Seen { sent, replies, end }| {
            format!(
                "sent {}, answered {}{}, then {}",
                describe(*sent),
                describe(replies.received),
                match replies.first_wrong {
                    Some(at) => format!(" (wrong from byte {at} on)"),
                    None => String::new(),
                },
                match end {
                    End::Clean => "a clean end",
                    End::Reset => "a reset",
                },
            )
        })
        .collect();
    let summary = format!(
        "round {round} of {ROUNDS}: clients: [{}]; the server exited {} after {exited_after:?}",
        seen.join("; "),
        if *success { "with 0" } else { "with a failure" },
    );
    for Seen { sent, replies, end } in clients {
        assert!(replies.first_wrong.is_none(), "{summary}");
        assert_eq!(replies.received, *sent, "{summary}");
        assert_eq!(*end, End::Clean, "{summary}");
    }
    assert!(*success, "{summary}; stderr:\n{stderr}");
    assert!(*exited_after <= EXIT_WITHIN, "{summary}");
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
}

fn commands_answers_every_line_sent_before_sigterm_under_back_pressure(mode: Mode) {
    let unit = PING.len() as u64;
    for round in 1..=ROUNDS {
        let outcome = sigterm_under_back_pressure(mode, "commands", unit, ping_byte, pong_byte);
        check(&outcome, round, |bytes| {
            let lines = bytes / unit;
            match bytes % unit {
                0 => format!("{lines} lines"),
                part => format!("{lines} lines and {part} bytes"),
            }
        });
    }
}

fn echo_returns_every_byte_sent_before_sigterm_under_back_pressure(mode: Mode) {
    for round in 1..=ROUNDS {
        let outcome = sigterm_under_back_pressure(mode, "echo", 1, pattern_byte, pattern_byte);
        check(&outcome, round, |bytes| format!("{bytes} bytes"));
    }
}

/// How a connection that the server ends went, for the tests that make
/// many of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    /// The expected reply, then a clean end.
    Gentle,
    /// The expected reply, then a reset.
    ReplyThenReset,
    /// Something else (perhaps nothing, at most its first 100 bytes
    /// here) before the end, clean or not.
    Wrong { got: String, end: End },
    /// Sending the request failed (the server had already reset the
    /// connection).
    SendFailed(io::ErrorKind),
}

/// Connects `times` times in turn, sends `request` in one write, and sorts
/// how each connection ended. Fails listing every kind of ending seen
/// unless each one is `reply` then a clean end.
fn every_connection_ends_gently(server: &Example, times: usize, request: &[u8], reply: &[u8]) {
    let mut endings = std::collections::BTreeMap::<Ending, usize>::new();
    for _ in 0..times {
        let mut client = server.connect();
        let ending = match client.try_send(request) {
            Err(e) => Ending::SendFailed(e.kind()),
            Ok(()) => {
                let mut got = Vec::new();
                let end = client.read_until_end(|bytes| got.extend_from_slice(bytes));
                match (got == reply, end) {
                    (true, End::Clean) => Ending::Gentle,
                    (true, End::Reset) => Ending::ReplyThenReset,
                    (false, end) => Ending::Wrong {
                        // Enough to see what it was.
                        got: String::from_utf8_lossy(&got[..got.len().min(100)]).into_owned(),
                        end,
                    },
                }
            }
        };
        *endings.entry(ending).or_default() += 1;
    }
    let gentle = endings.get(&Ending::Gentle).copied().unwrap_or(0);
    assert_eq!(
        gentle,
        times,
        "of {times} connections, {gentle} got {:?} then a clean end; the others: {:?}",
        String::from_utf8_lossy(reply),
        endings
            .iter()
            .filter(|(ending, _)| **ending != Ending::Gentle)
            .collect::<Vec<_>>()
    );
}

fn quit_with_pipelined_data_gets_bye_then_a_clean_end(mode: Mode) {
    let mut server = mode.start("commands", &[]);
    // `quit`, then 64 KiB of commands that come too late to be answered,
    // all in one write: the server closes with most of them unread, and
    // must do so without a reset, which could destroy `bye`.
    let mut request = b"quit\n".to_vec();
    while request.len() < 5 + 64 * 1024 {
        request.extend_from_slice(PING);
    }
    every_connection_ends_gently(&server, 500, &request, b"bye\n");
    server.stop();
}

fn over_long_line_gets_the_error_line_every_time(mode: Mode) {
    let mut server = mode.start("commands", &["--max-line", "64"]);
    // 16 KiB without a newline, far over the limit: the server answers
    // after the first 65 bytes and closes with the rest unread.
    let request = vec![b'x'; 16 * 1024];
    every_connection_ends_gently(&server, 200, &request, b"error: line too long\n");
    server.stop();
}

/// A client that sends `ping` lines and reads the replies without pause
/// until the server goes away, on its own thread; returns how many lines
/// it wrote and how it ended.
fn endless_pinger(server: &Example) -> thread::JoinHandle<u64> {
    let mut client = server.connect();
    let stream = client.stream().try_clone().expect("clone the client");
    let reader = thread::spawn(move || {
        // Replies are read only so that the server never blocks writing
        // them; how the stream ends is the server's business here.
        let _ = client.read_until_end(|_| {});
    });
    thread::spawn(move || {
        let mut stream = stream;
        let mut sent = 0;
        let started = Instant::now();
        // Bounded in time (the server must be gone long before) so the
        // loop stops by itself even if the test failed.
        while started.elapsed() < PATIENCE {
            if stream.write_all(b"ping\n").is_err() {
                break;
            }
            sent += 1;
        }
        let _ = reader.join();
        sent
    })
}

fn sigterm_with_a_client_that_never_stops_sending_exits_0_in_time(mode: Mode) {
    // The drain answers a client for as long as it keeps sending; the
    // drain deadline ends that, and the process still exits with 0 within
    // EXIT_WITHIN.
    for name in ["commands", "echo"] {
        let mut server = mode.start(name, &["--workers", "2"]);
        let pinger = endless_pinger(&server);
        // The pinger has been answered at least once: the connection is
        // being served when the signal comes.
        let mut probe = server.connect();
        probe.send("ping\n");
        let _ = probe.line();
        drop(probe);
        server.stop();
        let sent = pinger.join().expect("the pinger ends");
        assert!(sent > 0, "{name}: the pinger never sent");
    }
}
