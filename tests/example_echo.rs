//! End-to-end tests of `examples/echo.rs`: the compiled example, run as a
//! user would, talked to over loopback and stopped with a signal.

#![cfg(unix)]

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;

use support::{Client, Example};

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

#[test]
fn echoes_4_mib_while_reading_concurrently() {
    let mut server = Example::start("echo", &[]);
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
    let echoed = client.read_to_end();
    sender.join().expect("sender thread");
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echo differs from what was sent");
    server.stop();
}

#[test]
fn every_byte_value_comes_back_and_half_close_ends_the_echo() {
    let mut server = Example::start("echo", &[]);
    let mut client = server.connect();
    let all: Vec<u8> = (0..=255).collect();
    client.send(&all);
    let mut first = vec![0; all.len()];
    client.reader().read_exact(&mut first).expect("echo");
    assert_eq!(first, all);
    client.send(b"\r\n\0rest");
    client.stream().shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(client.read_to_end(), b"\r\n\0rest");
    server.stop();
}

#[test]
fn more_clients_than_workers_are_echoed_at_once() {
    // One worker: the clients take turns on it, none is turned away.
    let mut server = Example::start("echo", &["--workers", "1", "--queue", "0"]);
    let mut clients: Vec<Client> = (0..10).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(format!("client {i}\n"));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.expect(&format!("client {i}"));
    }
    server.stop();
}

#[test]
fn sigint_with_clients_connected_exits_0() {
    let mut server = Example::start("echo", &[]);
    let mut silent = server.connect();
    let mut talking = server.connect();
    talking.send(b"before the signal");
    let mut reply = [0u8; 17];
    talking.reader().read_exact(&mut reply).expect("echo");
    talking.send(b"sent before the signal too");
    server.stop_with(libc::SIGINT);
    assert_eq!(talking.read_to_end(), b"sent before the signal too");
    silent.expect_closed();
}
