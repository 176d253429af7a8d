//! End-to-end tests of `examples/commands.rs`: the compiled example, run as
//! a user would, talked to over loopback and stopped with a signal.

#![cfg(unix)]

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::{Client, Example, PATIENCE};

#[test]
fn answers_ping_quit_and_unknown_lines() {
    let mut server = Example::start("commands", &[]);
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
    client.expect_closed();
    server.stop();
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut server = Example::start("commands", &[]);
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
    client.expect_closed();
    server.stop();
}

#[test]
fn command_split_across_one_byte_writes() {
    let mut server = Example::start("commands", &[]);
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
    client.expect_closed();
    server.stop();
}

#[test]
fn crlf_and_lf_lines() {
    let mut server = Example::start("commands", &[]);
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

#[test]
fn line_of_max_line_bytes_is_answered_and_a_longer_one_closes() {
    let mut server = Example::start("commands", &["--max-line", "32"]);
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

#[test]
fn over_long_line_is_refused_without_waiting_for_its_end() {
    // The default limit is 8192 bytes; the line never ends.
    let mut server = Example::start("commands", &[]);
    let mut client = server.connect();
    client.send("ping\n");
    client.expect("pong");
    client.send("x".repeat(9000));
    client.expect("error: line too long");
    client.expect_closed();
    server.stop();
}

#[test]
fn invalid_utf8_is_reported_and_the_connection_goes_on() {
    let mut server = Example::start("commands", &[]);
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

#[test]
fn a_fresh_client_is_answered_while_idle_and_trickling_clients_wait() {
    // One worker; idle and trickling clients wait without it, so a fresh
    // client is answered at once and nobody is turned away.
    let mut server = Example::start("commands", &["--workers", "1", "--queue", "0"]);
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

#[test]
fn a_line_not_finished_in_time_closes_the_connection() {
    let mut server = Example::start("commands", &["--request-timeout-ms", "300"]);
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

#[test]
fn idle_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let mut server = Example::start("commands", &["--idle-timeout-ms", "300"]);
    let mut client = server.connect();
    client.send("ping\n");
    client.expect("pong");
    let silent_since = Instant::now();
    client.expect_closed();
    let waited = silent_since.elapsed();
    // Not (much) before the timeout: the server counts from its receipt of
    // the last byte, a little before `silent_since`.
    assert!(
        waited >= idle - Duration::from_millis(50),
        "closed after {waited:?}"
    );
    server.stop();
}

#[test]
fn idle_timeout_counts_from_the_last_byte() {
    // Bytes come 200 ms apart, well within the 1 s idle timeout, but the
    // whole line takes longer than that: the client is slow, not idle.
    let mut server = Example::start("commands", &["--idle-timeout-ms", "1000"]);
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

#[test]
fn sigterm_answers_every_line_sent_before_it_then_exits() {
    let mut server = Example::start("commands", &["--workers", "4"]);
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

#[test]
fn sigint_with_a_silent_client_and_a_half_sent_line_exits_0() {
    let mut server = Example::start("commands", &[]);
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
