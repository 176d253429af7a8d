//! End-to-end tests of `examples/commands.rs`: the compiled example, run as
//! a user would, talked to over loopback and stopped with a signal.
//!
//! The protocol cases run against both of the example's handlers (see
//! `in_both_modes!`): `handler::CASE` against its `Handler`, the default,
//! and `turns::CASE` against its `TurnHandler` (`--turns`). The cases after
//! them are each mode's own: the `Handler` mode's pool (`--workers`,
//! `--queue` and the busy reply), and the turn mode's idle clients.

#![cfg(unix)]

mod support;

use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use support::{in_both_modes, Client, Example, Mode, PATIENCE};

/// How soon a client turned away must have its busy reply. On an idle
/// machine it takes about a millisecond; the bound leaves room for a
/// loaded 2-core CI machine. A client that is left waiting instead waits
/// for ever in these tests (the clients holding the workers never leave),
/// so the bound tells "at once" from "never", not fast from slow.
const BUSY_WITHIN: Duration = Duration::from_secs(2);

in_both_modes![
    answers_ping_quit_and_unknown_lines,
    whoami_names_the_client,
    pipelined_commands_are_answered_in_order,
    command_split_across_one_byte_writes,
    crlf_and_lf_lines,
    line_of_max_line_bytes_is_answered_and_a_longer_one_closes,
    over_long_line_is_refused_without_waiting_for_its_end,
    invalid_utf8_is_reported_and_the_connection_goes_on,
    half_close_gets_every_answer_then_a_clean_end,
    a_line_not_finished_in_time_closes_the_connection,
    every_line_has_its_own_request_timeout,
    idle_connection_is_closed_after_the_idle_timeout,
    idle_timeout_counts_from_the_last_byte,
    max_connections_turns_the_next_client_away,
    max_connections_per_ip_turns_the_next_client_from_an_address_away,
    max_connections_per_ip_behind_a_proxy_counts_the_headers_clients,
    sigterm_answers_every_line_sent_before_it_then_exits,
    sigint_with_a_silent_client_and_a_half_sent_line_exits_0,
];

fn answers_ping_quit_and_unknown_lines(mode: Mode) {
    let mut server = mode.start("commands", &[]);
    let mut client = server.connect();
    client.send("ping\n");
    client.expect("pong");
    client.send("  hello world \t\n");
    client.expect("unknown: hello world");
    client.send("\n");
    client.expect("unknown: ");
    client.send("   \n");
    client.expect("unknown: ");
    client.send("PING\n");
    client.expect("unknown: PING");
    client.send(" ping \n");
    client.expect("pong");
    client.send("quit\n");
    client.expect("bye");
    client.expect_clean_end();
    server.stop();
}

fn whoami_names_the_client(mode: Mode) {
    let mut server = mode.start("commands", &[]);
    let mut client = server.connect();
    let me = client.stream().local_addr().expect("the client's address");
    client.send(" whoami \n");
    client.expect(&format!("you are {me}"));
    server.stop();
}

fn pipelined_commands_are_answered_in_order(mode: Mode) {
    let mut server = mode.start("commands", &[]);
    let mut client = server.connect();
    // About 17 KiB in one write: more than the line reader reads at once,
    // so lines also straddle reads.
    let mut batch = String::new();
    let mut expected = Vec::new();
    for i in 0..2000 {
        if i % 3 == 0 {
            batch.push_str("ping\n");
            expected.push("pong".to_string());
        } else {
            batch.push_str(&format!("cmd {i}\n"));
            expected.push(format!("unknown: cmd {i}"));
        }
    }
    batch.push_str("quit\nping\n");
    client.send(&batch);
    for line in &expected {
        client.expect(line);
    }
    // Nothing after `quit` is answered.
    client.expect("bye");
    client.expect_clean_end();
    server.stop();
}

fn command_split_across_one_byte_writes(mode: Mode) {
    let mut server = mode.start("commands", &[]);
    let mut client = server.connect();
    for byte in b"ping\nhello\r\n" {
        client.send([*byte]);
    }
    client.expect("pong");
    client.expect("unknown: hello");
    for byte in b"quit\r\n" {
        client.send([*byte]);
    }
    client.expect("bye");
    client.expect_clean_end();
    server.stop();
}

fn crlf_and_lf_lines(mode: Mode) {
    let mut server = mode.start("commands", &[]);
    let mut client = server.connect();
    client.send("ping\r\nhello\r\n\r\nping\nthere\n");
    client.expect("pong");
    client.expect("unknown: hello");
    client.expect("unknown: ");
    client.expect("pong");
    client.expect("unknown: there");
    // Only the `\r` of a `\r\n` terminator is taken off; others are data.
    client.send("a\rb\n");
    client.expect("unknown: a\rb");
    server.stop();
}

fn line_of_max_line_bytes_is_answered_and_a_longer_one_closes(mode: Mode) {
    let mut server = mode.start("commands", &["--max-line", "32"]);
    let mut client = server.connect();
    let longest = "a".repeat(32);
    client.send(format!("{longest}\n{longest}\r\n"));
    client.expect(&format!("unknown: {longest}"));
    client.expect(&format!("unknown: {longest}"));
    client.send(format!("{longest}b\n"));
    client.expect("error: line too long");
    client.expect_closed();
    server.stop();
}

fn over_long_line_is_refused_without_waiting_for_its_end(mode: Mode) {
    // The default limit is 8192 bytes; the line never ends.
    let mut server = mode.start("commands", &[]);
    let mut client = server.connect();
    client.send("ping\n");
    client.expect("pong");
    client.send("x".repeat(9000));
    client.expect("error: line too long");
    client.expect_closed();
    server.stop();
}

fn invalid_utf8_is_reported_and_the_connection_goes_on(mode: Mode) {
    let mut server = mode.start("commands", &[]);
    let mut client = server.connect();
    client.send(b"\xff\xfe\n");
    client.expect("error: invalid utf-8");
    client.send(b"caf\xc3\nping\n");
    client.expect("error: invalid utf-8");
    client.expect("pong");
    client.send("café\n");
    client.expect("unknown: café");
    server.stop();
}

fn half_close_gets_every_answer_then_a_clean_end(mode: Mode) {
    // A client that sends its last commands and then `shutdown(Write)`
    // (as `nc -N` does at end of input) is answered in full; the server
    // then ends the connection as it would after `quit`, not as after an
    // error.
    let mut server = mode.start("commands", &[]);
    let mut client = server.connect();
    client.send("ping\nhello\nhalf a li");
    client
        .stream()
        .shutdown(Shutdown::Write)
        .expect("half-close");
    client.expect("pong");
    client.expect("unknown: hello");
    // The half-sent line gets no answer.
    client.expect_clean_end();
    server.stop();
}

fn a_line_not_finished_in_time_closes_the_connection(mode: Mode) {
    let mut server = mode.start("commands", &["--request-timeout-ms", "300"]);
    let mut slow = server.connect();
    slow.send("pi");
    // Nothing more comes: the connection is closed gently at the request
    // timeout (the read waits up to PATIENCE, so a missing timeout fails).
    let started = Instant::now();
    slow.expect_clean_end();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, before the timeout",
        started.elapsed()
    );
    // A line completed in time is answered as usual.
    let mut quick = server.connect();
    quick.send("pi");
    quick.send("ng\n");
    quick.expect("pong");
    server.stop();
}

fn every_line_has_its_own_request_timeout(mode: Mode) {
    // Each line takes 0.4 s to finish, within the 1 s request timeout,
    // and the next one begins in the same write, so that from the
    // server's side a line is always in progress for 2 s: the timeout
    // must count from each line's first byte, not from the first line's.
    let mut server = mode.start("commands", &["--request-timeout-ms", "1000"]);
    let mut client = server.connect();
    let start = Instant::now();
    client.send("pi");
    for _ in 0..5 {
        // Pacing, not synchronisation: the test is about time passing.
        thread::sleep(Duration::from_millis(400));
        client.send("ng\npi");
        client.expect("pong");
    }
    assert!(start.elapsed() >= Duration::from_secs(2));
    client.send("ng\n");
    client.expect("pong");
    server.stop();
}

fn idle_connection_is_closed_after_the_idle_timeout(mode: Mode) {
    let idle = Duration::from_millis(300);
    let mut server = mode.start("commands", &["--idle-timeout-ms", "300"]);
    let mut client = server.connect();
    client.send("ping\n");
    client.expect("pong");
    let silent_since = Instant::now();
    client.expect_clean_end();
    let waited = silent_since.elapsed();
    // Not (much) before the timeout: the server counts from its receipt of
    // the last byte, a little before `silent_since`.
    assert!(
        waited >= idle - Duration::from_millis(50),
        "closed after {waited:?}"
    );
    server.stop();
}

fn idle_timeout_counts_from_the_last_byte(mode: Mode) {
    // Bytes come 200 ms apart, well within the 1 s idle timeout, but the
    // whole line takes longer than that: the client is slow, not idle.
    let mut server = mode.start("commands", &["--idle-timeout-ms", "1000"]);
    let mut client = server.connect();
    let start = Instant::now();
    for byte in b" ping  \n" {
        client.send([*byte]);
        // Pacing, not synchronisation: the test is about time passing.
        thread::sleep(Duration::from_millis(200));
    }
    assert!(start.elapsed() > Duration::from_secs(1));
    client.expect("pong");
    server.stop();
}

fn max_connections_turns_the_next_client_away(mode: Mode) {
    // Below what the pool would hold (4 workers, a queue of 64): the cap
    // is what turns the third client away, in either mode.
    let server = mode.start("commands", &["--workers", "4", "--max-connections", "2"]);
    two_held_the_third_busy_then_room(server);
}

fn max_connections_per_ip_turns_the_next_client_from_an_address_away(mode: Mode) {
    // Far below the pool and `--max-connections`: the address's cap is
    // what turns the third client from 127.0.0.1 away, in either mode.
    let server = mode.start(
        "commands",
        &["--workers", "4", "--max-connections-per-ip", "2"],
    );
    two_held_the_third_busy_then_room(server);
}

/// With a cap of two on `server` (its own, or its address's): two clients
/// are served and held, a third is told it is busy at once, and once one
/// of the two leaves a new client is served.
fn two_held_the_third_busy_then_room(mut server: Example) {
    let mut held: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    for client in &mut held {
        client.send("ping\n");
        client.expect("pong");
    }
    let started = Instant::now();
    server.connect().expect_busy();
    assert!(started.elapsed() < BUSY_WITHIN, "{:?}", started.elapsed());
    // One leaves: there is room again.
    held[0].send("quit\n");
    held[0].expect("bye");
    held[0].expect_clean_end();
    let mut next = Client::connect_served(server.addr, |client| {
        client.send("ping\n");
        client.line() == "pong"
    });
    next.send("ping\n");
    next.expect("pong");
    server.stop();
}

fn max_connections_per_ip_behind_a_proxy_counts_the_headers_clients(mode: Mode) {
    let mut server = mode.start(
        "commands",
        &["--proxy-protocol", "--max-connections-per-ip", "1"],
    );
    let through_proxy = |client: &str| {
        let mut stream = server.connect();
        stream.send(format!("PROXY TCP4 {client} 198.51.100.1 4567 80\r\n"));
        stream.send("whoami\n");
        stream
    };
    // Both come from 127.0.0.1, the proxy: their headers tell them apart.
    let mut ada = through_proxy("192.0.2.7");
    ada.expect("you are 192.0.2.7:4567");
    let mut bob = through_proxy("192.0.2.8");
    bob.expect("you are 192.0.2.8:4567");
    through_proxy("192.0.2.7").expect_busy();
    server.stop();
}

fn sigterm_answers_every_line_sent_before_it_then_exits(mode: Mode) {
    let mut server = mode.start("commands", &["--workers", "4"]);
    let mut talking = server.connect();
    let mut silent = server.connect();
    let mut half = server.connect();
    // All three are being served by a worker.
    for client in [&mut talking, &mut silent, &mut half] {
        client.send("ping\n");
        client.expect("pong");
    }
    half.send("pin");
    // Sent before the signal, and not answered yet: on loopback the bytes
    // are in the server's socket when `send` returns.
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!("line {i}\n"));
    }
    talking.send(&batch);
    server.signal(libc::SIGTERM);
    for i in 0..1000 {
        talking.expect(&format!("unknown: line {i}"));
    }
    talking.expect_closed();
    silent.expect_closed();
    half.expect_closed();
    let (status, took) = server.wait(PATIENCE);
    assert!(status.success(), "{status}; stderr:\n{}", server.stderr());
    assert!(took <= support::EXIT_WITHIN, "exited after {took:?}");
}

fn sigint_with_a_silent_client_and_a_half_sent_line_exits_0(mode: Mode) {
    let mut server = mode.start("commands", &[]);
    let mut silent = server.connect();
    let mut half = server.connect();
    for client in [&mut silent, &mut half] {
        client.send("ping\n");
        client.expect("pong");
    }
    half.send("qu");
    server.stop_with(libc::SIGINT);
    silent.expect_closed();
    half.expect_closed();
    // The handlers ended on their own once they found nothing more to
    // answer, rather than being closed by force at the drain deadline.
    let stderr = server.stderr();
    assert!(stderr.contains("forced=0"), "{stderr}");
}

// The `Handler` mode: a worker per client, so `--workers` + `--queue`
// clients at most; the next one is told at once.

#[test]
fn handler_queue_0_a_third_client_is_busy_at_once() {
    let mut server = Example::start("commands", &["--workers", "2", "--queue", "0"]);
    // Both workers serving a client that stays.
    let mut served: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    for client in &mut served {
        client.send("ping\n");
        client.expect("pong");
    }
    let started = Instant::now();
    let mut third = server.connect();
    third.expect_busy();
    assert!(started.elapsed() < BUSY_WITHIN, "{:?}", started.elapsed());
    // The two are still served.
    for client in &mut served {
        client.send("ping\n");
        client.expect("pong");
    }
    server.stop();
}

#[test]
fn handler_queue_1_a_third_client_waits_for_a_worker_and_a_fourth_is_busy() {
    let mut server = Example::start("commands", &["--workers", "2", "--queue", "1"]);
    let mut first = server.connect();
    let mut second = server.connect();
    for client in [&mut first, &mut second] {
        client.send("ping\n");
        client.expect("pong");
    }
    // The third is accepted and queued: its line waits, unanswered.
    let mut third = server.connect();
    third.send("ping\n");
    // The fourth finds workers and queue full. The server accepts in
    // order, so the third was queued before the fourth came.
    let started = Instant::now();
    let mut fourth = server.connect();
    fourth.expect_busy();
    assert!(started.elapsed() < BUSY_WITHIN, "{:?}", started.elapsed());
    assert!(third.nothing_arrived(), "the queued client was answered");
    // A worker frees: the third is served, and its line answered.
    first.send("quit\n");
    first.expect("bye");
    first.expect_clean_end();
    third.expect("pong");
    third.send("ping\n");
    third.expect("pong");
    server.stop();
}

// The turn mode: clients waiting for input hold no worker, and `--queue`
// is accepted and changes nothing.

#[test]
fn turns_a_fresh_client_is_answered_while_idle_and_trickling_clients_wait() {
    // One worker and no queue, which in the Handler mode would turn away
    // all but one; idle and trickling clients wait without the worker, so
    // a fresh client is answered at once and nobody is turned away.
    let mut server = Mode::Turns.start("commands", &["--workers", "1", "--queue", "0"]);
    let mut idle: Vec<Client> = (0..20).map(|_| server.connect()).collect();
    let mut trickling: Vec<Client> = (0..5).map(|_| server.connect()).collect();
    for (i, client) in trickling.iter_mut().enumerate() {
        client.send(&"ping"[..1 + i % 3]);
    }
    for _ in 0..3 {
        let mut fresh = server.connect();
        fresh.send("ping\n");
        fresh.expect("pong");
    }
    // The others were only waiting: they are served too.
    for client in &mut trickling {
        client.send("\n");
        let line = client.line();
        assert!(line.starts_with("unknown: p"), "{line}");
    }
    for client in &mut idle {
        client.send("ping\n");
        client.expect("pong");
    }
    server.stop();
}
