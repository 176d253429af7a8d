//! TLS (the `tls` feature) end to end, with a real rustls client and the
//! real `openssl s_client`: lines echoed in both modes and a clean TLS end
//! (`close_notify`) after them; a large transfer in the turn mode, with
//! the client reading as it writes and with a client that makes the
//! server wait for it; a plain-TCP client and a silent client turned away
//! and counted while others are served; certificates replaced while the
//! server runs; a shutdown that answers every line sent before it, and
//! that does not wait for its deadline for a client silent in its
//! handshake. Then what a review found mishandled: a client's
//! `close_notify` without its TCP end, a write retried after a write
//! timeout, `close_notify` behind a full send buffer, and a handshake
//! under way when the shutdown begins. Last, the PROXY header read parked
//! before the handshake in the turn mode, and `max_connections_per_ip`
//! checked before the handshake in both modes.
//!
//! Conventions (as in the other tests): servers bind `127.0.0.1:0`,
//! clients have read and write timeouts of [`PATIENCE`], handlers report
//! what they see on channels, and what no channel reports (a counter in
//! the stats) is polled with a bound. Nothing sleeps to wait for the
//! server. Certificates are made at test time and written to a fresh
//! directory under `CARGO_TARGET_TMPDIR`.
//!
//! Every end of stream is checked for what it is: a clean TLS end is
//! rustls' reader returning `Ok(0)` after the server's `close_notify`,
//! not `UnexpectedEof` (the TCP stream ended without it: a cut, as far as
//! the client can tell) and not a reset.
//!
//! The `openssl s_client` test needs Debian's `openssl` binary (which
//! `.ci/run` installs when missing); without it, it says so on stderr and
//! passes without running.
#![cfg(feature = "tls")]

mod support;
mod tls_util;
mod util;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use frontdesk::{
    Addr, Connection, Handler, LineError, LineReader, Lines, Next, Server, ServerBuilder,
    ServerHandle, ShutdownReport, Stats, Timeout, Turn, TurnHandler,
};
use tls_util::{
    assert_close_notify, assert_same_bytes, connect, connect_with_receive_buffer, exchange,
    init_logging, numbered_lines, preview, read_to_clean_tcp_end, read_to_end, rustls_error,
    send_then_close_notify, tcp_client, try_connect, try_handshake, Certs, Duplex, TlsEnd,
    TlsStream, PATIENCE,
};
use util::{assert_accounted, read_line, tcp_addr, wait_for_stats, LOCALHOST};

/// The longest line the handlers accept; every line sent here is shorter.
const MAX_LINE: usize = 1024;

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

/// What a handler saw of a connection when it began.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    tls: Option<bool>,
    peer: Addr,
}

/// A line echo for the handler mode: reports what it sees of the
/// connection, then answers each line with itself until the client sends
/// `bye` (answered too) or closes.
fn line_echo(seen: Sender<Seen>) -> impl Handler {
    move |conn: &mut Connection| -> io::Result<()> {
        let _ = seen.send(Seen {
            tls: Some(conn.is_tls()),
            peer: conn.peer_addr(),
        });
        let mut lines = LineReader::new(&*conn, MAX_LINE);
        loop {
            let reply = match lines.read_line() {
                Ok(line) => [line, b"\n"].concat(),
                Err(LineError::Closed { .. }) => return Ok(()),
                Err(error) => return Err(error.into()),
            };
            let mut writer: &Connection = lines.get_ref();
            writer.write_all(&reply)?;
            if reply == b"bye\n" {
                return Ok(());
            }
        }
    }
}

/// A line echo for the turn mode, with [`Lines`]: answers each line with
/// itself until `bye` (answered too) or the client's end of stream.
///
/// It reads no more while the outbox could not take another line (what
/// [`Turn::outbox_len`] advises for a handler that produces a lot) and
/// parks instead: the connection's next turn comes once the client has
/// read enough. Each such park is counted in `full_parks`, and the first
/// one is reported on `full`.
#[derive(Debug)]
struct TurnLineEcho {
    opened: Sender<Seen>,
    full: Sender<()>,
    full_parks: Arc<AtomicU64>,
}

/// What a test learns from a [`TurnLineEcho`].
#[derive(Debug)]
struct TurnEvents {
    /// What the handler saw of each connection as it opened.
    opened: Receiver<Seen>,
    /// Receives once, when the outbox first stopped the handler reading.
    full: Receiver<()>,
    /// How many turns ended early for want of room in the outbox.
    full_parks: Arc<AtomicU64>,
}

impl TurnLineEcho {
    fn new() -> (TurnLineEcho, TurnEvents) {
        let (opened, opened_rx) = crossbeam_channel::unbounded();
        // One report is enough; the handler never waits to send it.
        let (full, full_rx) = crossbeam_channel::bounded(1);
        let full_parks = Arc::new(AtomicU64::new(0));
        let echo = TurnLineEcho {
            opened,
            full,
            full_parks: Arc::clone(&full_parks),
        };
        let events = TurnEvents {
            opened: opened_rx,
            full: full_rx,
            full_parks,
        };
        (echo, events)
    }
}

impl TurnHandler for TurnLineEcho {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        let _ = self.opened.send(Seen {
            tls: Some(turn.is_tls()),
            peer: turn.peer_addr(),
        });
        Ok(Lines::new(turn, MAX_LINE))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            if turn.outbox_room() <= MAX_LINE + 1 {
                self.full_parks.fetch_add(1, Ordering::Relaxed);
                let _ = self.full.try_send(());
                return Ok(Next::Park);
            }
            match lines.next_line() {
                Ok(Some(line)) => {
                    let bye = line == b"bye";
                    turn.send([line, b"\n"].concat())?;
                    if bye {
                        return Ok(Next::Close);
                    }
                }
                Ok(None) => {
                    // `Lines` yields nothing while the outbox is over half
                    // full (back-pressure): that also ends a turn for want
                    // of room.
                    if turn.outbox_len() > turn.outbox_room() {
                        self.full_parks.fetch_add(1, Ordering::Relaxed);
                        let _ = self.full.try_send(());
                    }
                    return Ok(Next::Park);
                }
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// A TLS server in the handler mode with [`line_echo`], and what the
/// handler sees of each connection.
fn serve_lines(builder: ServerBuilder) -> (ServerHandle, SocketAddr, Receiver<Seen>) {
    let (seen, seen_rx) = crossbeam_channel::unbounded();
    let handle = util::serve(builder, line_echo(seen));
    let addr = tcp_addr(handle.local_addr());
    (handle, addr, seen_rx)
}

/// A TLS server in the turn mode with [`TurnLineEcho`], and what the
/// handler tells.
fn serve_turn_lines(builder: ServerBuilder) -> (ServerHandle, SocketAddr, TurnEvents) {
    let (echo, events) = TurnLineEcho::new();
    let handle = builder
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(echo)
        .expect("spawn_turns");
    let addr = tcp_addr(handle.local_addr());
    (handle, addr, events)
}

/// The next connection a handler saw.
fn next_seen(seen: &Receiver<Seen>) -> Seen {
    seen.recv_timeout(PATIENCE)
        .expect("the handler saw the connection")
}

/// A few lines one at a time, then several in one write (so one TLS
/// record holds many lines), then `bye`; checks every answer, then the
/// server's `close_notify`.
fn converse_and_end(client: &mut TlsStream) {
    for line in ["hello", "", "a line with spaces", "ünïcödé"] {
        assert_eq!(exchange(client, line), line);
    }
    client
        .write_all(b"one\ntwo\r\nthree\n")
        .and_then(|()| client.flush())
        .expect("send three lines at once");
    for line in ["one", "two", "three"] {
        assert_eq!(read_line(client), line);
    }
    assert_eq!(exchange(client, "bye"), "bye");
    assert_close_notify(client);
}

/// Stops the server and checks that every connection is accounted for
/// and that no handler failed; returns the final stats.
fn stop(handle: ServerHandle) -> Stats {
    let (report, stats) = util::stop(handle);
    check_report(&report);
    stats
}

fn check_report(report: &ShutdownReport) {
    let stats = &report.stats;
    assert_eq!(report.forced, 0, "{report:#?}");
    assert_accounted(stats);
    assert_eq!(stats.handler_errors, 0, "{stats:#?}");
    assert_eq!(stats.panics, 0, "{stats:#?}");
}

// ---------------------------------------------------------------------------
// 1. and 2. Echo in both modes, and large transfers in the turn mode
// ---------------------------------------------------------------------------

#[test]
fn handler_mode_echoes_lines_over_tls_and_ends_with_close_notify() {
    init_logging();
    let certs = Certs::new("handler-echo");
    let (handle, addr, seen) = serve_lines(Server::builder().workers(2).tls(certs.tls_config()));

    let mut client = connect(addr, &certs.client_config());
    let me = client.sock.local_addr().unwrap();
    converse_and_end(&mut client);
    drop(client);

    assert_eq!(
        next_seen(&seen),
        Seen {
            tls: Some(true),
            peer: Addr::Tcp(me),
        }
    );
    let stats = stop(handle);
    assert_eq!(stats.completed, 1, "{stats:#?}");
    assert_eq!(stats.rejected.tls, 0, "{stats:#?}");
}

#[test]
fn turn_mode_echoes_lines_over_tls_and_ends_with_close_notify() {
    init_logging();
    let certs = Certs::new("turn-echo");
    let (handle, addr, events) =
        serve_turn_lines(Server::builder().workers(2).tls(certs.tls_config()));

    let mut client = connect(addr, &certs.client_config());
    let me = client.sock.local_addr().unwrap();
    converse_and_end(&mut client);
    drop(client);

    assert_eq!(
        next_seen(&events.opened),
        Seen {
            tls: Some(true),
            peer: Addr::Tcp(me),
        }
    );
    let stats = stop(handle);
    assert_eq!(stats.completed, 1, "{stats:#?}");
    assert_eq!(stats.rejected.tls, 0, "{stats:#?}");
}

/// How much the client encrypts and writes at once in a large transfer.
const CHUNK: usize = 32 * 1024;

/// Sends `payload` and `bye` through `duplex` and checks that the echo is
/// exactly what was sent, in order, and then `close_notify`. `context`
/// describes the server's state for a failure's message.
fn stream_and_check(mut duplex: Duplex, payload: &[u8], context: impl Fn() -> String) {
    for (i, chunk) in payload.chunks(CHUNK).chain([&b"bye\n"[..]]).enumerate() {
        if let Err(error) = duplex.send(chunk) {
            panic!(
                "sending stopped after {} of {} bytes: {error} ({:?}); \
                 the server stopped reading and did not resume; {}",
                i * CHUNK,
                payload.len(),
                error.kind(),
                context()
            );
        }
    }
    let (echoed, end) = duplex.finish();
    assert_eq!(
        end,
        TlsEnd::CloseNotify,
        "how the echo ended, after {} of {} bytes; {}",
        echoed.len(),
        payload.len() + 4,
        context()
    );
    assert_same_bytes(&echoed, &[payload, b"bye\n"].concat());
}

#[test]
fn turn_mode_echoes_two_mebibytes_in_order_while_the_client_writes_and_reads() {
    init_logging();
    let certs = Certs::new("turn-large");
    let (handle, addr, _) = serve_turn_lines(Server::builder().workers(2).tls(certs.tls_config()));
    let payload = numbered_lines(2 << 20, MAX_LINE);

    let client = connect(addr, &certs.client_config());
    let control = handle.control();
    let context = move || format!("stats: {:#?}", control.stats());
    stream_and_check(Duplex::split(client, || {}), &payload, context);

    let stats = stop(handle);
    assert_eq!(stats.completed, 1, "{stats:#?}");
}

/// How much the back-pressure test sends: more than every buffer between
/// the handler and a client that does not read can hold, so the handler
/// must stop reading and wait for the client. On Linux those are the
/// server's send buffer, which grows to at most `tcp_wmem`'s maximum,
/// and the client's receive buffer, which does not grow while the client
/// does not read (it starts at `tcp_rmem`'s default); 8 MiB elsewhere.
fn more_than_buffers() -> usize {
    let sysctl = |name: &str, field: usize| -> Option<usize> {
        let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok()?;
        text.split_whitespace().nth(field)?.parse().ok()
    };
    let buffers =
        sysctl("tcp_wmem", 2).unwrap_or(4 << 20) + sysctl("tcp_rmem", 1).unwrap_or(1 << 20);
    (buffers + (4 << 20)).max(8 << 20)
}

/// The echo's outbox fills while the client does not read; then the
/// client reads, and everything arrives. The handler stops reading for
/// want of room (or `Lines` stops yielding lines, the outbox being over
/// half full) while TLS records it has decrypted still hold lines (its
/// reads take at most a line's worth of a 16 KiB record), so the
/// connection must be woken once the client has read enough, and its
/// outbox written, even though the socket may have nothing new to read.
#[test]
fn turn_mode_echo_goes_on_after_the_outbox_filled_with_decrypted_input_left() {
    init_logging();
    let certs = Certs::new("turn-full");
    let (handle, addr, events) = serve_turn_lines(
        Server::builder()
            .workers(2)
            .outbox_limit(64 * 1024)
            .tls(certs.tls_config()),
    );
    let payload = numbered_lines(more_than_buffers(), MAX_LINE);

    let client = connect(addr, &certs.client_config());
    // The reader starts once the handler has stopped reading for want of
    // room. (Should that never happen, it starts after a while, and the
    // test fails below.) Until then the writer writes what the buffers
    // take, then waits.
    let full = events.full.clone();
    let duplex = Duplex::split(client, move || {
        let _ = full.recv_timeout(PATIENCE);
    });
    let control = handle.control();
    let parks = Arc::clone(&events.full_parks);
    let context = move || {
        format!(
            "the handler's turns ended for want of room {} times (a spin if \
             that is millions); stats: {:#?}",
            parks.load(Ordering::Relaxed),
            control.stats()
        )
    };
    stream_and_check(duplex, &payload, context);

    let stats = stop(handle);
    assert_eq!(stats.completed, 1, "{stats:#?}");
    let parks = events.full_parks.load(Ordering::Relaxed);
    assert!(
        parks > 0,
        "the outbox never filled: the test did not make the server wait"
    );
}

// ---------------------------------------------------------------------------
// 3. and 4. Clients turned away: plain TCP, silence
// ---------------------------------------------------------------------------

/// The content type of a TLS alert record, its first byte.
const ALERT: u8 = 0x15;

#[test]
fn plain_tcp_client_gets_an_alert_and_the_end_and_the_server_goes_on() {
    init_logging();
    let certs = Certs::new("plain-client");
    let (handle, addr, seen) = serve_lines(Server::builder().workers(2).tls(certs.tls_config()));

    let mut plain = tcp_client(addr);
    plain.write_all(b"hello\n").unwrap();
    // An alert, then a clean end: not a hang, not a reset.
    let got = read_to_clean_tcp_end(&mut plain);
    assert!(
        got.first() == Some(&ALERT),
        "expected a TLS alert record, got {got:02x?}"
    );
    drop(plain);
    wait_for_stats(&handle, "the failed handshake is counted", |s| {
        s.rejected.tls == 1
    });

    let mut client = connect(addr, &certs.client_config());
    converse_and_end(&mut client);
    drop(client);

    // The handler ran for the TLS client only.
    assert_eq!(next_seen(&seen).tls, Some(true));
    let stats = stop(handle);
    assert!(seen.try_recv().is_err(), "the handler ran twice");
    assert_eq!(stats.rejected.tls, 1, "{stats:#?}");
    assert_eq!(stats.completed, 1, "{stats:#?}");
}

/// The handshake timeout of the silent-client test: long enough that the
/// other client's whole conversation (a handshake and a few lines, a few
/// milliseconds) surely ends within it even on a loaded machine, short
/// enough to keep the test quick.
const HANDSHAKE_TIME: Duration = Duration::from_secs(1);

#[test]
fn silent_client_is_closed_after_the_handshake_timeout_while_another_is_served() {
    init_logging();
    let certs = Certs::new("silent-client");
    let (handle, addr, seen) = serve_lines(
        Server::builder()
            .workers(2)
            .tls_handshake_timeout(HANDSHAKE_TIME)
            .tls(certs.tls_config()),
    );

    let start = Instant::now();
    let mut silent = tcp_client(addr);
    // A worker runs the silent client's handshake: one of the two is busy.
    wait_for_stats(&handle, "a worker waits for the silent client", |s| {
        s.busy_workers == 1
    });

    // The other worker serves a client meanwhile.
    let mut client = connect(addr, &certs.client_config());
    converse_and_end(&mut client);
    drop(client);
    let stats = handle.stats();
    assert_eq!(
        stats.rejected.tls,
        0,
        "the silent client was closed before the other one was served \
         (in {:?}): {stats:#?}",
        start.elapsed()
    );

    // The silent client is closed at the timeout, cleanly, with nothing
    // sent to it.
    let got = read_to_clean_tcp_end(&mut silent);
    let waited = start.elapsed();
    assert!(got.is_empty(), "the silent client got {got:02x?}");
    // The timeout runs from the moment a worker takes the connection,
    // after the client connected; `poll(2)` counts in milliseconds.
    assert!(
        waited + Duration::from_millis(2) >= HANDSHAKE_TIME,
        "closed after {waited:?}, before the handshake timeout"
    );
    drop(silent);
    wait_for_stats(&handle, "the silent client is counted", |s| {
        s.rejected.tls == 1
    });

    assert_eq!(next_seen(&seen).tls, Some(true));
    let stats = stop(handle);
    assert!(seen.try_recv().is_err(), "the handler ran twice");
    assert_eq!(stats.rejected.tls, 1, "{stats:#?}");
    assert_eq!(stats.completed, 1, "{stats:#?}");
}

/// In the turn mode a handshake holds no worker between the client's
/// records: clients silent in their handshakes, more than there are
/// workers, leave the one worker free for a client that speaks. The
/// handshake timeout is far longer than the client's own timeouts
/// (`PATIENCE`), so if a silent client held the worker, the speaking
/// client's handshake would time out first and the test fail.
#[test]
fn turn_mode_silent_handshakes_hold_no_worker() {
    init_logging();
    let certs = Certs::new("turn-silent");
    let (handle, addr, _events) = serve_turn_lines(
        Server::builder()
            .workers(1)
            .tls_handshake_timeout(PATIENCE * 3)
            .tls(certs.tls_config()),
    );
    const SILENT: usize = 8;
    let mut silent: Vec<_> = (0..SILENT).map(|_| tcp_client(addr)).collect();
    wait_for_stats(&handle, "the silent clients wait parked", |s| {
        s.parked == SILENT && s.busy_workers == 0
    });

    let mut client = connect(addr, &certs.client_config());
    converse_and_end(&mut client);
    drop(client);

    // The shutdown closes them once they have been quiet for the drain's
    // quiet time: they sent nothing to answer.
    let stopping = thread::spawn(move || util::stop(handle));
    for client in &mut silent {
        assert!(read_to_clean_tcp_end(client).is_empty());
    }
    let (report, stats) = stopping.join().expect("the shutdown did not panic");
    check_report(&report);
    assert_eq!(stats.rejected.tls, SILENT as u64, "{stats:#?}");
    assert_eq!(stats.completed, 1, "{stats:#?}");
}

/// In the turn mode the handshake timeout is a parked connection's
/// deadline: it closes the silent client, counted as a failed handshake
/// (not as a handler's deadline), and the handler never runs.
#[test]
fn turn_mode_handshake_timeout_closes_a_silent_client() {
    init_logging();
    let certs = Certs::new("turn-timeout");
    let (handle, addr, events) = serve_turn_lines(
        Server::builder()
            .workers(1)
            .tls_handshake_timeout(HANDSHAKE_TIME)
            .tls(certs.tls_config()),
    );
    let start = Instant::now();
    let mut silent = tcp_client(addr);
    assert!(read_to_clean_tcp_end(&mut silent).is_empty());
    let waited = start.elapsed();
    // `poll(2)` and the timers count in milliseconds.
    assert!(
        waited + Duration::from_millis(2) >= HANDSHAKE_TIME,
        "closed after {waited:?}, before the handshake timeout"
    );
    drop(silent);
    wait_for_stats(&handle, "the silent client is counted", |s| {
        s.rejected.tls == 1
    });
    assert!(events.opened.try_recv().is_err(), "open ran");
    let stats = stop(handle);
    assert_eq!(stats.timeouts.deadline, 0, "{stats:#?}");
    assert_eq!(stats.completed, 0, "{stats:#?}");
}

// ---------------------------------------------------------------------------
// 5. Certificates replaced while the server runs
// ---------------------------------------------------------------------------

#[test]
fn reloaded_certificates_serve_new_clients_and_open_connections_go_on() {
    init_logging();
    let a = Certs::new("reload-a");
    let b = Certs::new("reload-b");
    let tls = a.tls_config();
    // Three connections at once: two served, one refused.
    let (handle, addr, seen) = serve_lines(Server::builder().workers(4).tls(tls.clone()));

    let mut first = connect(addr, &a.client_config());
    assert_eq!(
        exchange(&mut first, "before the reload"),
        "before the reload"
    );

    // A reload that fails changes nothing.
    let before = tls.current();
    let missing = b.cert.with_file_name("missing.pem");
    let error = tls
        .reload_pem_files(&missing, &b.key)
        .expect_err("a missing certificate file");
    assert!(
        error.to_string().contains("missing.pem") || format!("{error:?}").contains("missing.pem"),
        "the error names the file: {error:?}"
    );
    tls.reload_pem_files(&b.cert, &a.key)
        .expect_err("a key that does not fit the certificate");
    assert!(
        Arc::ptr_eq(&before, &tls.current()),
        "a failed reload changed the settings"
    );

    tls.reload_pem_files(&b.cert, &b.key).expect("reload B");
    assert!(!Arc::ptr_eq(&before, &tls.current()));

    // A new client that trusts only B is served.
    let mut second = connect(addr, &b.client_config());
    assert_eq!(
        exchange(&mut second, "after the reload"),
        "after the reload"
    );

    // A new client that trusts only A refuses the server's certificate.
    let error = try_connect(addr, &a.client_config())
        .map(|_| ())
        .expect_err("a client that trusts only the old certificate");
    assert!(
        matches!(
            rustls_error(&error),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "expected the client to refuse the certificate, got {error:?}"
    );
    wait_for_stats(&handle, "the refused handshake is counted", |s| {
        s.rejected.tls == 1
    });

    // The connection made before the reload goes on with A's session.
    assert_eq!(exchange(&mut first, "still here"), "still here");
    assert_eq!(exchange(&mut first, "bye"), "bye");
    assert_close_notify(&mut first);
    assert_eq!(exchange(&mut second, "bye"), "bye");
    assert_close_notify(&mut second);
    drop((first, second));

    let stats = stop(handle);
    assert_eq!(next_seen(&seen).tls, Some(true));
    assert_eq!(next_seen(&seen).tls, Some(true));
    assert!(
        seen.try_recv().is_err(),
        "the handler ran for the refused client"
    );
    assert_eq!(stats.rejected.tls, 1, "{stats:#?}");
    assert_eq!(stats.completed, 2, "{stats:#?}");
}

// ---------------------------------------------------------------------------
// 6. Shutdown
// ---------------------------------------------------------------------------

/// A client that sent lines right before `shutdown` gets every answer,
/// then `close_notify`, and the shutdown forces nothing.
fn shutdown_answers_every_line(handle: ServerHandle, addr: SocketAddr, certs: &Certs) {
    let mut client = connect(addr, &certs.client_config());
    // Served: the handshake is over and the connection has had a turn.
    assert_eq!(exchange(&mut client, "first"), "first");
    let lines: Vec<String> = (0..5).map(|i| format!("line {i}")).collect();
    client
        .write_all(format!("{}\n", lines.join("\n")).as_bytes())
        .and_then(|()| client.flush())
        .expect("send the lines");

    // `shutdown` waits for the drain, and the drain for this client (its
    // gentle close waits for the client's end of stream): on a thread.
    let stopping = thread::spawn(move || handle.shutdown());
    for line in &lines {
        assert_eq!(&read_line(&mut client), line);
    }
    assert_close_notify(&mut client);
    drop(client);

    let report = stopping
        .join()
        .expect("shutdown did not panic")
        .expect("the server stops cleanly");
    check_report(&report);
    assert_eq!(report.stats.completed, 1, "{report:#?}");
}

#[test]
fn handler_mode_shutdown_answers_every_line_sent_before_it_then_close_notify() {
    init_logging();
    let certs = Certs::new("handler-shutdown");
    let (handle, addr, _) = serve_lines(Server::builder().workers(2).tls(certs.tls_config()));
    shutdown_answers_every_line(handle, addr, &certs);
}

#[test]
fn turn_mode_shutdown_answers_every_line_sent_before_it_then_close_notify() {
    init_logging();
    let certs = Certs::new("turn-shutdown");
    let (handle, addr, _) = serve_turn_lines(Server::builder().workers(2).tls(certs.tls_config()));
    shutdown_answers_every_line(handle, addr, &certs);
}

/// The drain deadline of the next test: the default, long enough that a
/// shutdown that waits for it is told from one that does not, whatever
/// the load.
const SHUTDOWN_TIME: Duration = Duration::from_secs(10);

/// During a shutdown, a client silent in its handshake is treated as a
/// silent client in a read is: closed once it has been quiet for the
/// drain's quiet time (200 ms), not held until the drain deadline. A port
/// scanner, a health check or a browser's speculative connection must not
/// make every restart of a TLS server take `shutdown_timeout`.
#[test]
fn shutdown_does_not_wait_for_the_deadline_for_a_client_silent_in_its_handshake() {
    init_logging();
    let certs = Certs::new("silent-shutdown");
    let (handle, addr, seen) = serve_lines(
        Server::builder()
            .workers(2)
            .shutdown_timeout(SHUTDOWN_TIME)
            // Not what ends the handshake here.
            .tls_handshake_timeout(PATIENCE * 3)
            .tls(certs.tls_config()),
    );
    let mut silent = tcp_client(addr);
    wait_for_stats(&handle, "a worker waits for the silent client", |s| {
        s.busy_workers == 1
    });

    let start = Instant::now();
    let stopping = thread::spawn(move || handle.shutdown());
    let got = read_to_clean_tcp_end(&mut silent);
    let waited = start.elapsed();
    drop(silent);
    let report = stopping
        .join()
        .expect("shutdown did not panic")
        .expect("the server stops cleanly");
    assert!(got.is_empty(), "the silent client got {got:02x?}");
    assert!(
        waited < SHUTDOWN_TIME / 2,
        "the silent client was closed {waited:?} after the shutdown began \
         (the drain deadline is {SHUTDOWN_TIME:?}): {report:#?}"
    );
    assert!(seen.try_recv().is_err(), "the handler ran");
    assert_eq!(report.stats.rejected.total(), 1, "{report:#?}");
    assert_eq!(report.stats.completed, 0, "{report:#?}");
}

// ---------------------------------------------------------------------------
// 7. The real `openssl s_client` against the `echo` example
// ---------------------------------------------------------------------------

/// A child process, killed if it is still running when dropped (a test
/// that fails must not leave it behind).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn openssl_s_client_gets_its_line_echoed_by_the_echo_example() {
    let Some(openssl) = support::tool("openssl") else {
        eprintln!(
            "SKIPPED openssl_s_client_gets_its_line_echoed_by_the_echo_example: \
             openssl not found; install Debian's openssl (package `openssl`)"
        );
        return;
    };
    let certs = Certs::new("openssl");
    let cert = certs.cert.to_str().expect("a UTF-8 path");
    let key = certs.key.to_str().expect("a UTF-8 path");
    let mut server = support::Example::start("echo", &["--tls-cert", cert, "--tls-key", key]);

    let mut s_client = Reaped(
        Command::new(openssl)
            .arg("s_client")
            .args(["-connect", &server.addr.to_string()])
            // `-quiet` prints only what the server sends; it also implies
            // `-ign_eof`, which `-no_ign_eof` undoes: at the end of its
            // input s_client sends close_notify and exits.
            .args(["-quiet", "-no_ign_eof"])
            .args(["-CAfile", cert, "-verify_return_error"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start openssl s_client"),
    );
    let stdout = s_client.0.stdout.take().expect("piped stdout");
    let stderr = s_client.0.stderr.take().expect("piped stderr");
    let lines = support::lines_of(stdout);
    let said = support::lines_of(stderr);
    let mut stdin = s_client.0.stdin.take().expect("piped stdin");
    stdin
        .write_all(b"hello from openssl\n")
        .expect("write to s_client");
    stdin.flush().unwrap();

    let reply = lines.recv_timeout(PATIENCE);
    let err_text = || said.try_iter().collect::<Vec<_>>().join("\n");
    assert_eq!(
        reply.as_deref(),
        Ok("hello from openssl"),
        "s_client said on stderr:\n{}\nthe server said:\n{}",
        err_text(),
        server.stderr()
    );

    // End of input: s_client sends close_notify, the example answers with
    // its own and closes, and s_client exits with nothing more printed.
    drop(stdin);
    match lines.recv_timeout(PATIENCE) {
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {}
        other => panic!(
            "expected s_client's output to end, got {other:?}; stderr:\n{}",
            err_text()
        ),
    }
    let status = s_client.0.wait().expect("wait for s_client");
    assert!(
        status.success(),
        "s_client exited with {status}; stderr:\n{}",
        err_text()
    );

    server.stop();
    let log = server.stderr();
    assert!(
        !log.contains("TLS handshake failed"),
        "the example refused a handshake:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// 8. Behind the real HAProxy: TLS passes through, the PROXY header first
// ---------------------------------------------------------------------------

/// HAProxy in TCP mode in front of a TLS server that requires the PROXY
/// protocol: HAProxy sends its header, then passes the client's TLS bytes
/// through, and the server reads them in that order; `whoami` answers
/// with the client's own address, not HAProxy's.
#[test]
fn behind_a_real_haproxy_tls_passes_through_and_whoami_names_the_real_client() {
    let Some(tool) = support::tool("haproxy") else {
        eprintln!(
            "SKIPPED behind_a_real_haproxy_tls_passes_through_and_whoami_names_the_real_client: \
             haproxy is not installed (Debian package `haproxy`)"
        );
        return;
    };
    let certs = Certs::new("haproxy");
    let cert = certs.cert.to_str().expect("a UTF-8 path");
    let key = certs.key.to_str().expect("a UTF-8 path");
    let mut server = support::Example::start(
        "commands",
        &["--proxy-protocol", "--tls-cert", cert, "--tls-key", key],
    );
    for send_proxy in ["send-proxy", "send-proxy-v2"] {
        let haproxy = support::Haproxy::start(&tool, &server.addr.to_string(), send_proxy);
        let mut client = connect(haproxy.addr, &certs.client_config());
        let me = client.sock.local_addr().unwrap();
        assert_eq!(
            exchange(&mut client, "whoami"),
            format!("you are {me}"),
            "{send_proxy}"
        );
        assert_eq!(exchange(&mut client, "quit"), "bye");
        assert_close_notify(&mut client);
    }
    server.stop();
}

// ---------------------------------------------------------------------------
// 9. Ends, write timeouts and shutdowns a review found mishandled
// ---------------------------------------------------------------------------

/// The idle timeout of the next tests: far beyond the client's patience
/// ([`PATIENCE`], its read timeout), so a server that waits for it to end
/// the connection fails the test, which passes only if the server sees
/// the client's end at once.
const NEVER_IDLE: Duration = PATIENCE.saturating_mul(10);

/// A line echo for the turn mode that answers one line per turn and
/// parks: a handler that serves one request per turn and counts on the
/// server to give it the next turn as long as input is waiting, decrypted
/// or not. On the client's end of stream it closes.
#[derive(Debug)]
struct LinePerTurn;

impl TurnHandler for LinePerTurn {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        Ok(Lines::new(turn, MAX_LINE))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        match lines.next_line() {
            Ok(Some(line)) => {
                turn.send([line, b"\n"].concat())?;
                Ok(Next::Park)
            }
            Ok(None) => Ok(Next::Park),
            Err(LineError::Closed { .. }) => Ok(Next::Close),
            Err(error) => Err(error.into()),
        }
    }
}

/// A client sends `ping`, then `close_notify` in the same write, and
/// keeps its TCP side open: the server must answer and end the stream
/// (its own `close_notify`) at once. The socket shows nothing after the
/// two records, so a server that looks only at the socket for the end,
/// not at the session that has taken it in, waits for the idle timeout.
fn close_notify_without_a_tcp_end_is_an_end(handle: ServerHandle, certs: &Certs) {
    let addr = tcp_addr(handle.local_addr());
    let mut client = connect(addr, &certs.client_config());
    send_then_close_notify(&mut client, b"ping\n");
    let (got, end) = read_to_end(&mut client);
    assert!(
        got == b"ping\n" && end == TlsEnd::CloseNotify,
        "expected `ping` and close_notify within {PATIENCE:?} (the idle timeout is \
         {NEVER_IDLE:?}), got {:?} and then {end:?}; stats: {:#?}",
        preview(&got),
        handle.stats()
    );
    drop(client);
    let stats = stop(handle);
    assert_eq!(stats.timeouts.idle, 0, "{stats:#?}");
    assert_eq!(stats.completed, 1, "{stats:#?}");
}

#[test]
fn handler_mode_a_client_close_notify_without_its_tcp_end_ends_the_stream_at_once() {
    init_logging();
    let certs = Certs::new("handler-close-notify-open");
    let handle = util::serve(
        Server::builder()
            .workers(2)
            .idle_timeout(NEVER_IDLE)
            .tls(certs.tls_config()),
        util::echo,
    );
    close_notify_without_a_tcp_end_is_an_end(handle, &certs);
}

#[test]
fn turn_mode_a_client_close_notify_without_its_tcp_end_ends_the_stream_at_once() {
    init_logging();
    let certs = Certs::new("turn-close-notify-open");
    let handle = Server::builder()
        .workers(2)
        .idle_timeout(NEVER_IDLE)
        .tls(certs.tls_config())
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(LinePerTurn)
        .expect("spawn_turns");
    close_notify_without_a_tcp_end_is_an_end(handle, &certs);
}

/// The write timeout of the next tests: short, so that a client that
/// does not read makes a write time out quickly.
const WRITE_TIMEOUT: Duration = Duration::from_millis(300);

/// The send buffer a handler sets, and the receive buffer its client
/// has: small (Linux doubles them), so a few KiB fill them.
const SMALL_BUFFER: usize = 4608;

/// Makes the connection's send buffer small (`SO_SNDBUF`), which also
/// stops Linux from growing it.
fn shrink_send_buffer(conn: &Connection) {
    let stream = conn.tcp_stream().expect("a TCP connection");
    socket2::SockRef::from(stream)
        .set_send_buffer_size(SMALL_BUFFER)
        .expect("set the send buffer size");
}

/// In the handler mode, a write that timed out took nothing, whatever
/// TLS did with earlier bytes: a handler that retries the same bytes
/// after `Timeout::Write` (as a patient `write_all` would) sends each
/// byte once. The handler writes 4 MiB of numbered lines to a client that
/// reads nothing until the handler has seen a write time out, then
/// everything; a byte sent twice or lost shows as a difference.
#[test]
fn handler_mode_a_write_retried_after_a_write_timeout_sends_every_byte_once() {
    init_logging();
    let certs = Certs::new("write-retry");
    let payload: Arc<[u8]> = numbered_lines(4 << 20, MAX_LINE).into();
    // Once, at the first write timeout; then how many there were.
    let (stalled_tx, stalled) = crossbeam_channel::bounded(1);
    let (timeouts_tx, timeouts_seen) = crossbeam_channel::bounded(1);
    let handler = {
        let payload = Arc::clone(&payload);
        move |conn: &mut Connection| -> io::Result<()> {
            shrink_send_buffer(conn);
            let mut timeouts = 0u64;
            let mut rest = &payload[..];
            while !rest.is_empty() {
                match (&*conn).write(rest) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => rest = &rest[n..],
                    Err(error) if Timeout::of(&error) == Some(Timeout::Write) => {
                        timeouts += 1;
                        let _ = stalled_tx.try_send(());
                    }
                    Err(error) => return Err(error),
                }
            }
            let _ = timeouts_tx.send(timeouts);
            Ok(())
        }
    };
    let handle = util::serve(
        Server::builder()
            .workers(2)
            .write_timeout(WRITE_TIMEOUT)
            // The close_notify waits for the client as long as it may.
            .linger_time(PATIENCE)
            .tls(certs.tls_config()),
        handler,
    );
    let addr = tcp_addr(handle.local_addr());
    let mut client = connect_with_receive_buffer(addr, &certs.client_config(), SMALL_BUFFER);
    stalled
        .recv_timeout(PATIENCE)
        .expect("a write timed out while the client did not read");

    let (got, end) = read_to_end(&mut client);
    assert_same_bytes(&got, &payload);
    assert_eq!(end, TlsEnd::CloseNotify, "after {} bytes", got.len());
    drop(client);
    let timeouts = timeouts_seen
        .recv_timeout(PATIENCE)
        .expect("the handler wrote everything");
    let stats = stop(handle);
    assert!(timeouts >= 1, "{stats:#?}");
    assert!(stats.timeouts.write >= timeouts, "{stats:#?}");
    assert_eq!(stats.completed, 1, "{stats:#?}");
}

/// In the handler mode, the end of a reply whose write succeeded while its
/// TLS records still waited (the write timeout fired meanwhile) leaves
/// before the handler's next read waits for the client: a client reading
/// the whole reply before it sends its next request is not left waiting
/// for the idle timeout (far longer than the client's PATIENCE here).
#[test]
fn handler_mode_a_read_sends_the_end_of_the_last_reply_first() {
    init_logging();
    let certs = Certs::new("reply-tail");
    // Less than one write takes (rustls takes up to 64 KiB), more than
    // the small buffers hold: the one write that takes it all waits for
    // the client, who reads nothing until it has returned.
    let reply: Arc<[u8]> = numbered_lines(32 << 10, MAX_LINE).into();
    let (wrote_tx, wrote) = crossbeam_channel::bounded(1);
    let handler = {
        let reply = Arc::clone(&reply);
        move |conn: &mut Connection| -> io::Result<()> {
            shrink_send_buffer(conn);
            let written = (&*conn).write(&reply)?;
            let _ = wrote_tx.send(written);
            // The next request, answered.
            let mut request = [0u8; 64];
            let n = io::Read::read(&mut &*conn, &mut request)?;
            (&*conn).write_all(&request[..n])
        }
    };
    let handle = util::serve(
        Server::builder()
            .workers(2)
            .write_timeout(WRITE_TIMEOUT)
            .idle_timeout(NEVER_IDLE)
            .tls(certs.tls_config()),
        handler,
    );
    let addr = tcp_addr(handle.local_addr());
    let mut client = connect_with_receive_buffer(addr, &certs.client_config(), SMALL_BUFFER);
    let written = wrote.recv_timeout(PATIENCE).expect("the write returned");
    assert_eq!(written, reply.len(), "one write took the whole reply");
    let mut got = vec![0u8; reply.len()];
    io::Read::read_exact(&mut client, &mut got)
        .expect("the whole reply, before the next request is sent");
    assert_same_bytes(&got, &reply);
    assert_eq!(exchange(&mut client, "next"), "next");
    assert_close_notify(&mut client);
    drop(client);
    let stats = stop(handle);
    assert_eq!(stats.timeouts.idle, 0, "{stats:#?}");
    assert_eq!(stats.completed, 1, "{stats:#?}");
}

/// In the handler mode, a handler that returns while the client does not
/// read still ends the stream with `close_notify`, after every byte it
/// wrote: both wait for room in the send buffer, for up to the linger
/// time, rather than being cut off by the close. The linger time is
/// PATIENCE here, so that only a server that does not wait can fail.
///
/// The handler writes numbered lines until a write times out (the send
/// buffer, which it makes small, and the client's small receive buffer
/// are full, and TLS holds what they could not take), reports how much
/// its writes took, and returns.
/// The client reads only then. Writing until a timeout, rather than a
/// fixed amount, makes the buffers full when the handler returns on any
/// machine, whatever sizes its kernel gives them.
///
/// The outcome does not depend on timing with a correct server. A server
/// that sends the end only as far as the socket takes it at once fails
/// unless the client, woken by the report sent just before the handler
/// returns, makes room before the close has begun: a race it lost in
/// every run tried. (The client cannot wait until the close has begun: a
/// correct close waits for it.)
#[test]
fn handler_mode_close_notify_waits_for_room_in_a_full_send_buffer() {
    init_logging();
    let certs = Certs::new("close-notify-full");
    const ROUNDS: usize = 3;
    // Far more than the buffers hold.
    let payload: Arc<[u8]> = numbered_lines(8 << 20, MAX_LINE).into();
    let (written_tx, written) = crossbeam_channel::unbounded();
    let handler = {
        let payload = Arc::clone(&payload);
        move |conn: &mut Connection| -> io::Result<()> {
            shrink_send_buffer(conn);
            let mut taken = 0;
            loop {
                match (&*conn).write(&payload[taken..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => taken += n,
                    Err(error) if Timeout::of(&error) == Some(Timeout::Write) => break,
                    Err(error) => return Err(error),
                }
                if taken == payload.len() {
                    return Err(io::Error::other("no write timed out: the client read"));
                }
            }
            let _ = written_tx.send(taken);
            Ok(())
        }
    };
    let handle = util::serve(
        Server::builder()
            .workers(2)
            .write_timeout(WRITE_TIMEOUT)
            .linger_time(PATIENCE)
            .tls(certs.tls_config()),
        handler,
    );
    let addr = tcp_addr(handle.local_addr());
    for round in 0..ROUNDS {
        let mut client = connect_with_receive_buffer(addr, &certs.client_config(), SMALL_BUFFER);
        let taken = written
            .recv_timeout(PATIENCE)
            .expect("the handler's writes stopped for want of room");
        let (got, end) = read_to_end(&mut client);
        assert!(
            got.len() == taken && end == TlsEnd::CloseNotify,
            "round {round}: the handler's writes took {taken} bytes, the client got {} and \
             then {end:?}: what TLS held when the handler returned, close_notify last, \
             was cut off",
            got.len()
        );
        assert_same_bytes(&got, &payload[..taken]);
    }
    let stats = stop(handle);
    assert_eq!(stats.completed, ROUNDS as u64, "{stats:#?}");
}

/// A [`TurnLineEcho`] that also reports each turn it has once the server
/// is shutting down, with the client's address.
#[derive(Debug)]
struct ReportsShutdownTurns {
    echo: TurnLineEcho,
    shutdown_turns: Sender<Addr>,
}

impl TurnHandler for ReportsShutdownTurns {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        self.echo.open(turn)
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        if turn.is_shutting_down() {
            let _ = self.shutdown_turns.send(turn.peer_addr());
        }
        self.echo.ready(lines, turn)
    }
}

/// In the turn mode, a TLS handshake under way when the shutdown begins
/// goes on, as a quiet client's input does: a client that connected just
/// before the shutdown and completes its handshake now is served, not
/// refused. Only a client quiet for the drain's quiet time would be
/// closed, and that time here is long ([`PATIENCE`]), so no timing
/// decides the outcome.
///
/// The client must begin its handshake after the shutdown has reached
/// its parked connection, and no sleep can tell when that is. A second
/// client, opened and idle (the canary), tells: the shutdown gives every
/// parked connection one last turn, in one pass of the poller thread, and
/// the canary has no other reason for a turn. Its turn, reported by the
/// handler, shows that the pass has begun; the client's first handshake
/// bytes, sent after it, can only be seen by the poller after the pass,
/// so its connection has had its shutdown turn while it was still
/// waiting for them.
#[test]
fn turn_mode_a_handshake_under_way_when_the_shutdown_begins_goes_on() {
    init_logging();
    let certs = Certs::new("turn-shutdown-handshake");
    let config = certs.client_config();
    let (echo, _events) = TurnLineEcho::new();
    let (shutdown_turns_tx, shutdown_turns) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(2)
        .drain_quiet_time(PATIENCE)
        // Neither ends anything here.
        .shutdown_timeout(PATIENCE * 3)
        .tls_handshake_timeout(PATIENCE * 3)
        .tls(certs.tls_config())
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(ReportsShutdownTurns {
            echo,
            shutdown_turns: shutdown_turns_tx,
        })
        .expect("spawn_turns");
    let addr = tcp_addr(handle.local_addr());

    let mut canary = connect(addr, &config);
    assert_eq!(exchange(&mut canary, "hello"), "hello");
    let canary_addr = Addr::Tcp(canary.sock.local_addr().unwrap());
    // Connected; its handshake not begun.
    let silent = tcp_client(addr);
    wait_for_stats(&handle, "both connections wait parked", |s| {
        s.parked == 2 && s.busy_workers == 0
    });

    let stopping = thread::spawn(move || handle.shutdown());
    let first = shutdown_turns
        .recv_timeout(PATIENCE)
        .expect("the canary's turn at the shutdown");
    assert_eq!(first, canary_addr, "the first turn after the shutdown");

    let mut client = try_handshake(silent, &config).unwrap_or_else(|e| {
        panic!("the handshake under way when the shutdown began was refused: {e}")
    });
    assert_eq!(exchange(&mut client, "ping"), "ping");
    assert_eq!(exchange(&mut client, "bye"), "bye");
    assert_close_notify(&mut client);
    assert_eq!(exchange(&mut canary, "bye"), "bye");
    assert_close_notify(&mut canary);
    drop((client, canary));

    let report = stopping
        .join()
        .expect("shutdown did not panic")
        .expect("the server stops cleanly");
    check_report(&report);
    assert_eq!(report.stats.rejected.tls, 0, "{report:#?}");
    assert_eq!(report.stats.completed, 2, "{report:#?}");
}

// ---------------------------------------------------------------------------
// The PROXY header before the handshake, and the per-address cap
// ---------------------------------------------------------------------------

/// In the turn mode the PROXY header and then the handshake are read
/// with the connection parked, a byte at a time here: the header first
/// (it comes first on the wire), then the handshake, and `open` sees the
/// header's client.
#[test]
fn turn_mode_reads_a_trickled_proxy_header_then_the_handshake_parked() {
    init_logging();
    let certs = Certs::new("turn-proxy");
    let (handle, addr, events) = serve_turn_lines(
        Server::builder()
            .workers(1)
            .proxy_protocol(true)
            .tls(certs.tls_config()),
    );
    let mut sock = tcp_client(addr);
    for byte in b"PROXY TCP4 192.0.2.7 198.51.100.1 4567 80\r\n" {
        sock.write_all(std::slice::from_ref(byte)).unwrap();
    }
    let mut client = try_handshake(sock, &certs.client_config())
        .unwrap_or_else(|e| panic!("the handshake after the header failed: {e}"));
    converse_and_end(&mut client);
    drop(client);
    assert_eq!(
        next_seen(&events.opened),
        Seen {
            tls: Some(true),
            peer: Addr::Tcp("192.0.2.7:4567".parse().unwrap()),
        }
    );
    let stats = stop(handle);
    assert_eq!(stats.completed, 1, "{stats:#?}");
    assert_eq!(stats.rejected.total(), 0, "{stats:#?}");
}

/// `max_connections_per_ip` is checked before the handshake: the client
/// beyond it is closed with no reply (the reject handler is not called
/// on a TLS server, as for any rejection), in both modes.
#[test]
fn the_client_beyond_max_connections_per_ip_gets_no_handshake() {
    init_logging();
    let certs = Certs::new("per-ip");
    let builder = || {
        Server::builder()
            .workers(2)
            .max_connections_per_ip(1)
            .on_reject(|_: &mut frontdesk::Rejected| panic!("not called on a TLS server"))
            .tls(certs.tls_config())
    };
    for turns in [false, true] {
        let (handle, addr) = match turns {
            false => {
                let (handle, addr, _seen) = serve_lines(builder());
                (handle, addr)
            }
            true => {
                let (handle, addr, _events) = serve_turn_lines(builder());
                (handle, addr)
            }
        };
        let mut first = connect(addr, &certs.client_config());
        assert_eq!(exchange(&mut first, "hello"), "hello");
        let mut second = tcp_client(addr);
        assert!(
            read_to_clean_tcp_end(&mut second).is_empty(),
            "turns={turns}"
        );
        drop(second);
        wait_for_stats(&handle, "the refusal is counted", |s| {
            s.rejected.max_connections_per_ip == 1
        });
        assert_eq!(exchange(&mut first, "bye"), "bye");
        assert_close_notify(&mut first);
        drop(first);
        let stats = stop(handle);
        assert_eq!(stats.completed, 1, "turns={turns}: {stats:#?}");
        assert_eq!(stats.panics, 0, "turns={turns}: {stats:#?}");
    }
}
