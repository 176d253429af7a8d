//! End-to-end tests of `examples/echo.rs`: the compiled example, run as a
//! user would, talked to over loopback and stopped with a signal.
//!
//! The protocol cases run against both of the example's handlers (see
//! `in_both_modes!`): `handler::CASE` against its `Handler`, the default,
//! and `turns::CASE` against its `TurnHandler` (`--turns`). The cases after
//! them are each mode's own.

#![cfg(unix)]

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use support::{in_both_modes, Client, Example, Mode};

/// How soon a client turned away must see its connection end. On an idle
/// machine it takes about a millisecond; the bound leaves room for a
/// loaded 2-core CI machine. A client left waiting instead would wait for
/// ever in these tests (the clients holding the workers never leave), so
/// the bound tells "at once" from "never", not fast from slow.
const CLOSED_WITHIN: Duration = Duration::from_secs(2);

in_both_modes![
    echoes_4_mib_while_reading_concurrently,
    every_byte_value_comes_back_and_half_close_ends_the_echo,
    max_connections_closes_the_next_client_at_once,
    max_connections_per_ip_closes_the_next_client_from_an_address_at_once,
    sigint_with_clients_connected_exits_0,
];

/// `len` bytes that are not all alike, so a lost or repeated chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            // xorshift32
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn echoes_4_mib_while_reading_concurrently(mode: Mode) {
    let mut server = mode.start("echo", &[]);
    let mut client = server.connect();
    let data = pattern(4 << 20);
    let mut writer = client.stream().try_clone().expect("clone the client");
    let sent = data.clone();
    let sender = thread::spawn(move || {
        // Uneven chunks, so writes and the server's reads do not line up.
        for chunk in sent.chunks(65_521) {
            writer.write_all(chunk).expect("send");
        }
        // Half-close: the server echoes what is left, then closes.
        writer.shutdown(Shutdown::Write).expect("shutdown");
    });
    let echoed = client.read_to_clean_end();
    sender.join().expect("sender thread");
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echo differs from what was sent");
    server.stop();
}

fn every_byte_value_comes_back_and_half_close_ends_the_echo(mode: Mode) {
    let mut server = mode.start("echo", &[]);
    let mut client = server.connect();
    let all: Vec<u8> = (0..=255).collect();
    client.send(&all);
    let mut first = vec![0; all.len()];
    client.reader().read_exact(&mut first).expect("echo");
    assert_eq!(first, all);
    client.send(b"\r\n\0rest");
    client.stream().shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(client.read_to_clean_end(), b"\r\n\0rest");
    server.stop();
}

fn max_connections_closes_the_next_client_at_once(mode: Mode) {
    // Below what the pool would hold (4 workers, a queue of 64): the cap
    // is what turns the third client away, in either mode.
    let mut server = mode.start("echo", &["--workers", "4", "--max-connections", "2"]);
    let mut held: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    echo_once(&mut held);
    let started = Instant::now();
    server.connect().expect_clean_end();
    assert!(started.elapsed() < CLOSED_WITHIN, "{:?}", started.elapsed());
    echo_once(&mut held);
    server.stop();
}

fn max_connections_per_ip_closes_the_next_client_from_an_address_at_once(mode: Mode) {
    let mut server = mode.start("echo", &["--workers", "4", "--max-connections-per-ip", "2"]);
    let mut held: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    echo_once(&mut held);
    let started = Instant::now();
    server.connect().expect_clean_end();
    assert!(started.elapsed() < CLOSED_WITHIN, "{:?}", started.elapsed());
    echo_once(&mut held);
    server.stop();
}

/// Each client sends a line and reads its echo.
fn echo_once(clients: &mut [Client]) {
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(format!("client {i}\n"));
        client.expect(&format!("client {i}"));
    }
}

#[test]
fn handler_queue_0_a_third_client_is_closed_at_once() {
    // Both workers echo for a client that stays; the third finds no
    // worker and no queue, and is closed without a word.
    let mut server = Example::start("echo", &["--workers", "2", "--queue", "0"]);
    let mut served: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    echo_once(&mut served);
    let started = Instant::now();
    server.connect().expect_clean_end();
    assert!(started.elapsed() < CLOSED_WITHIN, "{:?}", started.elapsed());
    echo_once(&mut served);
    server.stop();
}

#[test]
fn turns_more_clients_than_workers_are_echoed_at_once() {
    // One worker and no queue, which in the Handler mode would turn away
    // all but one: the clients take turns on the worker, none is turned
    // away.
    let mut server = Mode::Turns.start("echo", &["--workers", "1", "--queue", "0"]);
    let mut clients: Vec<Client> = (0..10).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(format!("client {i}\n"));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.expect(&format!("client {i}"));
    }
    server.stop();
}

fn sigint_with_clients_connected_exits_0(mode: Mode) {
    let mut server = mode.start("echo", &[]);
    let mut silent = server.connect();
    let mut talking = server.connect();
    talking.send(b"before the signal");
    let mut reply = [0u8; 17];
    talking.reader().read_exact(&mut reply).expect("echo");
    talking.send(b"sent before the signal too");
    server.stop_with(libc::SIGINT);
    assert_eq!(talking.read_to_clean_end(), b"sent before the signal too");
    silent.expect_clean_end();
}
