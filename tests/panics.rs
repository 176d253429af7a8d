//! A panic in a handler or in the reject hook is caught, counted, closes
//! that one connection, and never costs the server a worker or its
//! acceptor.
//!
//! The panics print their messages through the default panic hook; the
//! test harness captures that output (worker threads inherit the capture
//! of the test thread that started the server), so it shows only when a
//! test fails. The global hook is left alone: tests run in parallel.

mod util;

use std::io::{self, Write};
use std::net::TcpStream;

use frontdesk::{Connection, Overload, Rejected, Server};
use util::{
    assert_closed, client, read_exactly, read_request_line, serve, tcp_addr, until_closed,
    wait_for_stats,
};

/// `panic` and `panic-any` panic (with a string and a non-string payload),
/// `hold` answers and keeps the connection until the client closes it, and
/// anything else is echoed.
fn commands(conn: &mut Connection) -> io::Result<()> {
    let Some(line) = read_request_line(conn)? else {
        return Ok(());
    };
    match line.as_str() {
        "panic" => panic!("handler panics on purpose (test)"),
        "panic-any" => std::panic::panic_any(42u32),
        "hold" => {
            conn.write_all(b"held\n")?;
            until_closed(conn)
        }
        _ => writeln!(conn, "echo: {line}"),
    }
}

#[test]
fn server_keeps_serving_after_more_panics_than_workers() {
    let handle = serve(Server::builder().workers(2), commands);

    // Five panicking connections at once on two workers: every worker
    // panics at least twice.
    let mut panicking: Vec<TcpStream> = (0..5)
        .map(|i| {
            let mut client = client(handle.local_addr());
            let command: &[u8] = if i == 0 { b"panic-any\n" } else { b"panic\n" };
            client.write_all(command).unwrap();
            client
        })
        .collect();
    for client in &mut panicking {
        assert_closed(client);
    }
    let stats = wait_for_stats(&handle, "5 panics are counted", |s| s.panics >= 5);
    assert_eq!(stats.panics, 5, "{stats:?}");

    // Both workers are still there: two clients are served at the same
    // time (the second would wait forever if a worker had died).
    let mut first = client(handle.local_addr());
    first.write_all(b"hold\n").unwrap();
    assert_eq!(read_exactly(&mut first, 5), b"held\n");
    let mut second = client(handle.local_addr());
    second.write_all(b"hold\n").unwrap();
    assert_eq!(read_exactly(&mut second, 5), b"held\n");
    assert_eq!(handle.stats().busy_workers, 2);
    drop((first, second));

    let mut normal = client(handle.local_addr());
    normal.write_all(b"hello\n").unwrap();
    assert_eq!(read_exactly(&mut normal, 12), b"echo: hello\n");
    drop(normal);

    let stats = wait_for_stats(&handle, "8 connections are completed", |s| s.completed >= 8);
    assert_eq!(stats.completed, 8, "{stats:?}");
    assert_eq!(stats.panics, 5, "{stats:?}");
    assert_eq!(stats.handler_errors, 0, "{stats:?}");
    assert_eq!(stats.workers, 2, "{stats:?}");
    let report = handle.shutdown().unwrap();
    assert_eq!(report.stuck_workers, 0);
}

#[test]
fn panic_in_the_reject_hook_does_not_kill_the_acceptor() {
    let handle = serve(
        Server::builder()
            .workers(1)
            .queue(1)
            .overload(Overload::Reject)
            .on_reject(|_: &mut Rejected| -> io::Result<()> {
                panic!("reject hook panics on purpose (test)")
            }),
        |conn: &mut Connection| {
            conn.write_all(b"hi\n")?;
            until_closed(conn)
        },
    );
    let addr = tcp_addr(handle.local_addr());

    // Take the only worker and the only queue slot.
    let mut served = client(addr);
    assert_eq!(read_exactly(&mut served, 3), b"hi\n");
    let mut queued = client(addr);
    wait_for_stats(&handle, "a connection is queued", |s| s.queued == 1);

    // Each of these goes to the reject hook, which panics; the client is
    // closed, not left hanging.
    for _ in 0..3 {
        let mut rejected = client(addr);
        assert_closed(&mut rejected);
    }
    let stats = wait_for_stats(&handle, "3 panics are counted", |s| s.panics >= 3);
    assert_eq!(stats.rejected.overload, 3, "{stats:?}");
    assert_eq!(stats.panics, 3, "{stats:?}");

    // The queued client is served once the worker is free, and the
    // acceptor still takes new connections.
    drop(served);
    assert_eq!(read_exactly(&mut queued, 3), b"hi\n");
    drop(queued);
    let mut later = client(addr);
    assert_eq!(read_exactly(&mut later, 3), b"hi\n");
    drop(later);

    let stats = wait_for_stats(&handle, "3 connections are completed", |s| s.completed >= 3);
    assert_eq!(stats.accepted, 6, "{stats:?}");
    assert_eq!(stats.completed, 3, "{stats:?}");
    // A panicking acceptor would resurface here, in `shutdown`.
    handle.shutdown().unwrap();
}
