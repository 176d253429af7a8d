//! A panic in a handler or in the reject hook is caught, counted, closes
//! that one connection, and never costs the server a worker or its
//! acceptor.
//!
//! The panics print their messages through the default panic hook; the
//! test harness captures that output (worker threads inherit the capture
//! of the test thread that started the server), so it shows only when a
//! test fails. The global hook is left alone: tests run in parallel.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use frontdesk::{Connection, Overload, Server, ServerHandle, Stats};

/// How long a client or the test waits for anything before calling it a
/// bug; nothing here should take more than a fraction of it.
const PATIENCE: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Asserts that the server closed `stream`: a read returns end of file or a
/// reset, not data and not a client-side timeout (which would be a hang).
fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected the connection closed, got {n} bytes"),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ) => {}
        Err(e) => panic!("expected the connection closed, got {e} ({:?})", e.kind()),
    }
}

fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).expect("read from server");
    buf
}

fn wait_for_stats(handle: &ServerHandle, what: &str, ok: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = handle.stats();
        if ok(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "stats never showed {what}: {stats:?}"
        );
        // Polling a counter: nothing can notify us when it changes.
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads one line (without its `\n`) a byte at a time, so nothing after it
/// is consumed; `None` at end of file.
fn read_line(conn: &mut Connection) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if conn.read(&mut byte)? == 0 {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
        line.push(byte[0]);
    }
}

/// Reads and discards until the client closes.
fn until_closed(conn: &mut Connection) -> io::Result<()> {
    let mut buf = [0u8; 256];
    while conn.read(&mut buf)? > 0 {}
    Ok(())
}

/// `panic` and `panic-any` panic (with a string and a non-string payload),
/// `hold` answers and keeps the connection until the client closes it, and
/// anything else is echoed.
fn commands(conn: &mut Connection) -> io::Result<()> {
    let Some(line) = read_line(conn)? else {
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
    let handle = Server::builder()
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn(commands)
        .unwrap();

    // Five panicking connections at once on two workers: every worker
    // panics at least twice.
    let mut panicking: Vec<TcpStream> = (0..5)
        .map(|i| {
            let mut client = connect(handle.local_addr());
            let command: &[u8] = if i == 0 { b"panic-any\n" } else { b"panic\n" };
            client.write_all(command).unwrap();
            client
        })
        .collect();
    for client in &mut panicking {
        assert_closed(client);
    }
    let stats = wait_for_stats(&handle, "5 panics", |s| s.panics >= 5);
    assert_eq!(stats.panics, 5, "{stats:?}");

    // Both workers are still there: two clients are served at the same
    // time (the second would wait forever if a worker had died).
    let mut first = connect(handle.local_addr());
    first.write_all(b"hold\n").unwrap();
    assert_eq!(read_exactly(&mut first, 5), b"held\n");
    let mut second = connect(handle.local_addr());
    second.write_all(b"hold\n").unwrap();
    assert_eq!(read_exactly(&mut second, 5), b"held\n");
    assert_eq!(handle.stats().busy_workers, 2);
    drop((first, second));

    let mut normal = connect(handle.local_addr());
    normal.write_all(b"hello\n").unwrap();
    assert_eq!(read_exactly(&mut normal, 12), b"echo: hello\n");
    drop(normal);

    let stats = wait_for_stats(&handle, "8 completed", |s| s.completed >= 8);
    assert_eq!(stats.completed, 8, "{stats:?}");
    assert_eq!(stats.panics, 5, "{stats:?}");
    assert_eq!(stats.handler_errors, 0, "{stats:?}");
    assert_eq!(stats.workers, 2, "{stats:?}");
    let report = handle.shutdown().unwrap();
    assert_eq!(report.stuck_workers, 0);
}

#[test]
fn panic_in_the_reject_hook_does_not_kill_the_acceptor() {
    let handle = Server::builder()
        .workers(1)
        .queue(1)
        .overload(Overload::Reject)
        .on_reject(|_: &mut Connection| -> io::Result<()> {
            panic!("reject hook panics on purpose (test)")
        })
        .bind("127.0.0.1:0")
        .unwrap()
        .spawn(|conn: &mut Connection| {
            conn.write_all(b"hi\n")?;
            until_closed(conn)
        })
        .unwrap();
    let addr = handle.local_addr();

    // Take the only worker and the only queue slot.
    let mut served = connect(addr);
    assert_eq!(read_exactly(&mut served, 3), b"hi\n");
    let mut queued = connect(addr);
    wait_for_stats(&handle, "a queued connection", |s| s.queued == 1);

    // Each of these goes to the reject hook, which panics; the client is
    // closed, not left hanging.
    for _ in 0..3 {
        let mut rejected = connect(addr);
        assert_closed(&mut rejected);
    }
    let stats = wait_for_stats(&handle, "3 panics", |s| s.panics >= 3);
    assert_eq!(stats.rejected.overload, 3, "{stats:?}");
    assert_eq!(stats.panics, 3, "{stats:?}");

    // The queued client is served once the worker is free, and the
    // acceptor still takes new connections.
    drop(served);
    assert_eq!(read_exactly(&mut queued, 3), b"hi\n");
    drop(queued);
    let mut later = connect(addr);
    assert_eq!(read_exactly(&mut later, 3), b"hi\n");
    drop(later);

    let stats = wait_for_stats(&handle, "3 completed", |s| s.completed >= 3);
    assert_eq!(stats.accepted, 6, "{stats:?}");
    assert_eq!(stats.completed, 3, "{stats:?}");
    // A panicking acceptor would resurface here, in `shutdown`.
    handle.shutdown().unwrap();
}
