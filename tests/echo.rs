//! Basic serving: concurrency of the pool, options on accepted streams, what
//! a `Connection` reports, `&Connection` as Read + Write, handler errors.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;

use frontdesk::{Connection, Server};
use util::{client, exchange, read_line, send_line, serve, tcp_addr, wait_until, Gate, LOCALHOST};

#[test]
fn echoes_what_the_client_sends() {
    let handle = Server::bind(LOCALHOST).unwrap().spawn(util::echo).unwrap();
    let mut stream = client(handle.local_addr());
    for line in ["one", "two", "three"] {
        assert_eq!(exchange(&mut stream, line), line);
    }
    drop(stream);
    let report = handle.shutdown().unwrap();
    assert_eq!(report.forced, 0);
}

#[test]
fn echoes_a_large_payload_intact() {
    // More than the socket buffers hold, so reads and writes interleave.
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let handle = Server::bind(LOCALHOST).unwrap().spawn(util::echo).unwrap();
    let stream = client(handle.local_addr());
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let sender = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut received = Vec::with_capacity(payload.len());
    (&stream).read_to_end(&mut received).unwrap();
    sender.join().unwrap();
    assert!(received == payload, "the echo differs from what was sent");
    handle.shutdown().unwrap();
}

#[test]
fn n_workers_serve_n_clients_at_once() {
    const N: usize = 4;
    let gate = Gate::new();
    let handle = serve(
        Server::builder().workers(N).queue(0),
        gate.guard(util::echo),
    );

    let mut clients: Vec<TcpStream> = (0..N).map(|_| client(handle.local_addr())).collect();
    // The gate lets no handler go before the test does: all N are inside
    // their handlers at the same time, so N workers run at once.
    let ids = gate.wait_entered(N);
    assert_eq!(ids.len(), N);
    assert_eq!(handle.stats().busy_workers, N);
    gate.open();
    for (i, stream) in clients.iter_mut().enumerate() {
        let line = format!("client {i}");
        assert_eq!(exchange(stream, &line), line);
    }
    drop(clients);
    handle.shutdown().unwrap();
}

#[test]
fn accepted_streams_have_nodelay_by_default() {
    let report_nodelay = |conn: &mut Connection| -> io::Result<()> {
        writeln!(
            conn,
            "{}",
            conn.tcp_stream().expect("a TCP connection").nodelay()?
        )
    };
    let handle = Server::bind(LOCALHOST)
        .unwrap()
        .spawn(report_nodelay)
        .unwrap();
    assert_eq!(read_line(&mut client(handle.local_addr())), "true");
    handle.shutdown().unwrap();

    // And it is the option that sets it: off, the stream keeps the system's
    // default (off).
    let handle = Server::builder()
        .nodelay(false)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(report_nodelay)
        .unwrap();
    assert_eq!(read_line(&mut client(handle.local_addr())), "false");
    handle.shutdown().unwrap();
}

#[test]
fn connection_reports_peer_and_local_addresses() {
    let handle = Server::bind(LOCALHOST)
        .unwrap()
        .spawn(|conn: &mut Connection| {
            let local = conn.local_addr()?;
            writeln!(conn, "{} {}", conn.peer_addr(), local)
        })
        .unwrap();
    let addr = tcp_addr(handle.local_addr());
    let mut stream = client(addr);
    let line = read_line(&mut stream);
    let (peer, local) = line.split_once(' ').unwrap();
    assert_eq!(peer, stream.local_addr().unwrap().to_string());
    assert_eq!(local, addr.to_string());
    drop(stream);
    handle.shutdown().unwrap();
}

#[test]
fn connection_ids_start_at_one_and_grow_by_one() {
    let handle = Server::builder()
        .workers(2)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(|conn: &mut Connection| writeln!(conn, "{}", conn.id()))
        .unwrap();
    let ids: Vec<u64> = (0..5)
        .map(|_| read_line(&mut client(handle.local_addr())).parse().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    handle.shutdown().unwrap();
}

#[test]
fn concurrent_connections_get_unique_ids() {
    const CLIENTS: usize = 16;
    let handle = Server::builder()
        .workers(4)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(|conn: &mut Connection| writeln!(conn, "{}", conn.id()))
        .unwrap();
    let addr = tcp_addr(handle.local_addr());
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| thread::spawn(move || read_line(&mut client(addr)).parse::<u64>().unwrap()))
        .collect();
    let mut ids: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    ids.sort_unstable();
    let expected: Vec<u64> = (1..=CLIENTS as u64).collect();
    assert_eq!(ids, expected);
    handle.shutdown().unwrap();
}

#[test]
fn connection_by_reference_is_read_and_write() {
    // A BufReader over `&Connection` reads while writes go through another
    // `&Connection`: the shape of a line protocol.
    let handle = Server::bind(LOCALHOST)
        .unwrap()
        .spawn(|conn: &mut Connection| -> io::Result<()> {
            let conn: &Connection = conn;
            let mut writer = conn;
            for line in BufReader::new(conn).lines() {
                writeln!(writer, "{}", line?.to_uppercase())?;
            }
            Ok(())
        })
        .unwrap();
    let mut stream = client(handle.local_addr());
    // Several lines in one write: the BufReader must keep the ones it has
    // read ahead.
    stream.write_all(b"alpha\nbeta\ngamma\n").unwrap();
    assert_eq!(read_line(&mut stream), "ALPHA");
    assert_eq!(read_line(&mut stream), "BETA");
    assert_eq!(read_line(&mut stream), "GAMMA");
    assert_eq!(exchange(&mut stream, "delta"), "DELTA");
    drop(stream);
    handle.shutdown().unwrap();
}

#[test]
fn handler_error_does_not_stop_the_server_and_is_counted() {
    const CLIENTS: u64 = 5;
    let handle = Server::builder()
        .workers(1)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(|conn: &mut Connection| -> io::Result<()> {
            let mut line = String::new();
            BufReader::new(&*conn).read_line(&mut line)?;
            if line.trim_end() == "fail" {
                writeln!(conn, "failing")?;
                return Err(io::Error::other("the client asked for it"));
            }
            conn.write_all(line.as_bytes())
        })
        .unwrap();
    let addr = tcp_addr(handle.local_addr());

    for _ in 0..CLIENTS {
        let mut stream = client(addr);
        assert_eq!(exchange(&mut stream, "fail"), "failing");
        util::assert_closed(&mut stream);
    }
    // The one worker is still serving.
    assert_eq!(exchange(&mut client(addr), "still here"), "still here");

    wait_until("every connection is completed", || {
        handle.stats().completed == CLIENTS + 1
    });
    let (report, stats) = util::stop(handle);
    assert_eq!(stats.handler_errors, CLIENTS);
    assert_eq!(stats.panics, 0);
    assert_eq!(report.forced, 0);
    util::assert_accounted(&stats);
}

#[test]
fn client_that_closes_early_does_not_disturb_others() {
    // A client that sends half a line and vanishes costs its handler one
    // short read; the next client is served as usual.
    let handle = Server::builder()
        .workers(1)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(util::answer_line)
        .unwrap();
    let addr = tcp_addr(handle.local_addr());
    let mut early = client(addr);
    early.write_all(b"no newline").unwrap();
    drop(early);
    let mut stream = client(addr);
    send_line(&mut stream, "whole line");
    assert_eq!(read_line(&mut stream), "whole line");
    handle.shutdown().unwrap();
}
