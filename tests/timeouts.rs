//! Timeouts a slow client cannot defeat: the idle timeout frees a worker,
//! the per-connection deadline stops a client that trickles bytes, read and
//! write timeouts fire and leave the connection usable, and the defaults are
//! the documented ones.
//!
//! Timing assertions only say that a limit fired, not much earlier than
//! asked and at most `SLACK` after it: never exact times, so a loaded
//! machine cannot make them flaky. Clients and the test give up after
//! [`TIMEOUT`]: far beyond every limit used here, so it only fires when the
//! server really hangs.

mod util;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use frontdesk::{Connection, ServerBuilder, Stats, Timeout};
use util::{assert_closed, client, echo, read_exactly, serve, TIMEOUT};

/// How much later than its limit a timeout may fire (scheduling on a busy
/// 2-core machine, kernel timer granularity).
const SLACK: Duration = Duration::from_secs(2);

/// How much earlier than its limit a timeout may be observed: the handler
/// measures from just before its read, and the kernel rounds timers to a
/// tick, so allow a little.
const EARLY: Duration = Duration::from_millis(50);

/// The timeout carried by a handler's result, `Ok(())` when it succeeded.
fn timeout_of<T>(result: &io::Result<T>) -> Result<(), Option<Timeout>> {
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(Timeout::of(e)),
    }
}

#[derive(Debug)]
struct Finished {
    id: u64,
    outcome: Result<(), Option<Timeout>>,
    /// From the start of the handler to its return.
    after: Duration,
}

/// An echo handler that reports when it starts and how it ended.
fn reporting_echo(
    started: mpsc::Sender<u64>,
    finished: mpsc::Sender<Finished>,
) -> impl Fn(&mut Connection) -> io::Result<()> + Send + Sync + 'static {
    move |conn: &mut Connection| {
        let begin = Instant::now();
        let _ = started.send(conn.id());
        let result = echo(conn);
        let _ = finished.send(Finished {
            id: conn.id(),
            outcome: timeout_of(&result),
            after: begin.elapsed(),
        });
        result
    }
}

#[test]
fn idle_timeout_closes_a_silent_client_and_frees_the_worker() {
    const IDLE: Duration = Duration::from_millis(500);
    let (started_tx, started) = mpsc::channel();
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1).idle_timeout(IDLE),
        reporting_echo(started_tx, finished_tx),
    );

    let mut silent = client(handle.local_addr());
    let silent_id = started.recv_timeout(TIMEOUT).expect("silent client served");
    // The only worker is taken: this one waits in the queue until the
    // silent client is timed out.
    let mut second = client(handle.local_addr());
    second.write_all(b"hello").unwrap();

    assert_closed(&mut silent);
    let done = finished.recv_timeout(TIMEOUT).expect("handler returned");
    assert_eq!(done.id, silent_id);
    assert_eq!(done.outcome, Err(Some(Timeout::Idle)));
    assert!(done.after >= IDLE - EARLY, "idle fired early: {done:?}");
    assert!(done.after <= IDLE + SLACK, "idle fired late: {done:?}");

    // The freed worker serves the client that was waiting.
    let second_id = started.recv_timeout(TIMEOUT).expect("second client served");
    assert_ne!(second_id, silent_id);
    assert_eq!(read_exactly(&mut second, 5), b"hello");
    drop(second);
    let done = finished
        .recv_timeout(TIMEOUT)
        .expect("second handler returned");
    assert_eq!((done.id, done.outcome), (second_id, Ok(())));

    let stats = handle.stats();
    assert_eq!(stats.timeouts.idle, 1, "{stats:?}");
    assert_eq!(stats.handler_errors, 1, "{stats:?}");
    handle.shutdown().unwrap();
}

#[test]
fn a_client_that_keeps_sending_within_the_idle_timeout_is_not_closed() {
    const IDLE: Duration = Duration::from_secs(1);
    let (started_tx, _started) = mpsc::channel();
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1).idle_timeout(IDLE),
        reporting_echo(started_tx, finished_tx),
    );

    let mut client = client(handle.local_addr());
    let begin = Instant::now();
    // 25 bytes 100 ms apart: the connection lives 2.5 idle timeouts, but
    // the client is never silent for more than a tenth of one.
    for i in 0..25u8 {
        client.write_all(&[b'a' + i]).unwrap();
        assert_eq!(read_exactly(&mut client, 1), [b'a' + i], "byte {i}");
        // Paces the client; not a synchronisation.
        thread::sleep(Duration::from_millis(100));
    }
    assert!(begin.elapsed() > 2 * IDLE);
    drop(client);

    let done = finished.recv_timeout(TIMEOUT).expect("handler returned");
    assert_eq!(done.outcome, Ok(()), "{done:?}");
    assert_eq!(handle.stats().timeouts.idle, 0);
    handle.shutdown().unwrap();
}

#[test]
fn idle_timeout_set_in_the_handler_overrides_the_builder() {
    const IDLE: Duration = Duration::from_millis(300);
    // The builder's idle timeout (the default, 5 minutes) would never fire
    // within this test; the handler's own does.
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1),
        move |conn: &mut Connection| {
            let begin = Instant::now();
            conn.set_idle_timeout(Some(IDLE));
            let result = echo(conn);
            let _ = finished_tx.send((timeout_of(&result), begin.elapsed()));
            result
        },
    );

    let mut silent = client(handle.local_addr());
    assert_closed(&mut silent);
    let (outcome, after) = finished.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(outcome, Err(Some(Timeout::Idle)));
    assert!(after >= IDLE - EARLY && after <= IDLE + SLACK, "{after:?}");
    assert_eq!(handle.stats().timeouts.idle, 1);
    handle.shutdown().unwrap();
}

#[test]
fn no_idle_timeout_set_in_the_handler_overrides_the_builder() {
    const IDLE: Duration = Duration::from_millis(200);
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1).idle_timeout(IDLE),
        move |conn: &mut Connection| {
            conn.set_idle_timeout(None);
            let result = echo(conn);
            let _ = finished_tx.send(timeout_of(&result));
            result
        },
    );

    let mut client = client(handle.local_addr());
    // Silent for five of the builder's idle timeouts: shows that nothing
    // closes the connection in that window.
    thread::sleep(5 * IDLE);
    client.write_all(b"still here").unwrap();
    assert_eq!(read_exactly(&mut client, 10), b"still here");
    drop(client);

    assert_eq!(finished.recv_timeout(TIMEOUT).unwrap(), Ok(()));
    assert_eq!(handle.stats().timeouts.idle, 0);
    handle.shutdown().unwrap();
}

#[derive(Debug)]
struct Trickled {
    outcome: Result<(), Option<Timeout>>,
    bytes: usize,
    after: Duration,
}

#[test]
fn deadline_stops_a_client_trickling_one_byte_at_a_time() {
    const DEADLINE: Duration = Duration::from_millis(500);
    let (finished_tx, finished) = mpsc::channel();
    // Default idle timeout (5 minutes): every byte arrives well within it,
    // so only the deadline can stop this client.
    let handle = serve(
        ServerBuilder::new().workers(1),
        move |conn: &mut Connection| {
            let begin = Instant::now();
            conn.set_deadline(begin + DEADLINE);
            // Reads a line one byte at a time; the client never ends it.
            let mut bytes = 0;
            let mut byte = [0u8; 1];
            let result = loop {
                match conn.read(&mut byte) {
                    Ok(0) => break Ok(()),
                    Ok(_) if byte[0] == b'\n' => break Ok(()),
                    Ok(_) => bytes += 1,
                    Err(e) => break Err(e),
                }
            };
            let _ = finished_tx.send(Trickled {
                outcome: timeout_of(&result),
                bytes,
                after: begin.elapsed(),
            });
            result
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let trickler = thread::spawn({
        let mut client = client(handle.local_addr());
        let stop = Arc::clone(&stop);
        move || {
            // At most 200 bytes, 50 ms apart (10 s): far past the deadline.
            for _ in 0..200 {
                if stop.load(Ordering::SeqCst) || client.write_all(b"a").is_err() {
                    break;
                }
                // Paces the trickle.
                thread::sleep(Duration::from_millis(50));
            }
        }
    });

    let done = finished.recv_timeout(TIMEOUT).expect("handler returned");
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    assert_eq!(done.outcome, Err(Some(Timeout::Deadline)), "{done:?}");
    // Several reads succeeded before the deadline: it is enforced across
    // reads, not per read.
    assert!(done.bytes >= 2, "the client did not trickle: {done:?}");
    assert!(
        done.after >= DEADLINE - EARLY,
        "deadline fired early: {done:?}"
    );
    assert!(
        done.after <= DEADLINE + SLACK,
        "deadline fired late: {done:?}"
    );
    let stats = handle.stats();
    assert_eq!(stats.timeouts.deadline, 1, "{stats:?}");
    assert_eq!(stats.timeouts.idle, 0, "{stats:?}");
    handle.shutdown().unwrap();
}

#[test]
fn deadline_also_bounds_writes_to_a_client_that_does_not_read() {
    const DEADLINE: Duration = Duration::from_millis(500);
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1),
        move |conn: &mut Connection| {
            let begin = Instant::now();
            // No write timeout: only the deadline can stop the writes.
            conn.set_write_timeout(None);
            conn.set_deadline(begin + DEADLINE);
            let chunk = [0u8; 64 * 1024];
            // Bounded: 1 GiB is far more than loopback buffers hold.
            let mut result = Ok(());
            for _ in 0..16 * 1024 {
                if let Err(e) = conn.write(&chunk) {
                    result = Err(e);
                    break;
                }
            }
            let _ = finished_tx.send((timeout_of(&result), begin.elapsed()));
            result
        },
    );

    let client = client(handle.local_addr());
    let (outcome, after) = finished.recv_timeout(TIMEOUT).expect("handler returned");
    assert_eq!(outcome, Err(Some(Timeout::Deadline)));
    assert!(after <= DEADLINE + SLACK, "deadline fired late: {after:?}");
    let stats = handle.stats();
    assert_eq!(stats.timeouts.deadline, 1, "{stats:?}");
    assert_eq!(stats.timeouts.write, 0, "{stats:?}");
    drop(client);
    handle.shutdown().unwrap();
}

/// What a handler saw after its connection timed out for good.
#[derive(Debug)]
struct AfterEnd {
    first: Result<(), Option<Timeout>>,
    read_again: Result<(), Option<Timeout>>,
    write_again: Result<(), Option<Timeout>>,
    took: Duration,
}

/// Times the connection out with `end` (idle or deadline), then lifts every
/// limit, lets the client send data, and tries to read and write again.
fn reads_and_writes_after(end: Timeout) -> (AfterEnd, Stats) {
    const LIMIT: Duration = Duration::from_millis(200);
    let (timed_out_tx, timed_out) = mpsc::channel();
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1),
        move |conn: &mut Connection| {
            match end {
                Timeout::Idle => conn.set_idle_timeout(Some(LIMIT)),
                _ => conn.set_deadline(Instant::now() + LIMIT),
            }
            let mut buf = [0u8; 16];
            let first = timeout_of(&conn.read(&mut buf));
            let _ = timed_out_tx.send(());
            // Wait (bounded) until the client's bytes are here, without
            // consuming them: a read that is not refused would get them.
            let until = Instant::now() + TIMEOUT;
            while Instant::now() < until {
                let stream = conn.tcp_stream().expect("a TCP connection");
                if matches!(stream.peek(&mut buf), Ok(n) if n > 0) {
                    break;
                }
            }
            // Lifting the limits does not revive a finished connection.
            conn.set_deadline(None);
            conn.set_idle_timeout(None);
            let begin = Instant::now();
            let read_again = timeout_of(&conn.read(&mut buf));
            let write_again = timeout_of(&conn.write(b"late\n"));
            let _ = finished_tx.send(AfterEnd {
                first,
                read_again,
                write_again,
                took: begin.elapsed(),
            });
            Ok(())
        },
    );

    let mut client = client(handle.local_addr());
    timed_out
        .recv_timeout(TIMEOUT)
        .expect("first read timed out");
    client.write_all(b"too late").unwrap();
    let after = finished.recv_timeout(TIMEOUT).expect("handler returned");
    let stats = handle.stats();
    drop(client);
    handle.shutdown().unwrap();
    (after, stats)
}

/// Asserts that once `end` (idle or deadline) has ended a connection, every
/// later read and write fails with it at once, and that it is counted once.
fn assert_every_read_and_write_fails_at_once_after(end: Timeout) {
    let (after, stats) = reads_and_writes_after(end);
    assert_eq!(after.first, Err(Some(end)), "{after:?}");
    assert_eq!(after.read_again, Err(Some(end)), "{after:?}");
    assert_eq!(after.write_again, Err(Some(end)), "{after:?}");
    // "At once": no waiting on the socket (the client's data was there
    // and the write had room, so the only way to fail is to refuse).
    assert!(after.took < Duration::from_secs(1), "{after:?}");
    // Counted once per connection, not once per refused call.
    let counted = match end {
        Timeout::Idle => stats.timeouts.idle,
        _ => stats.timeouts.deadline,
    };
    assert_eq!(counted, 1, "{stats:?}");
}

#[test]
fn after_an_idle_timeout_every_read_and_write_fails_at_once() {
    assert_every_read_and_write_fails_at_once_after(Timeout::Idle);
}

#[test]
fn after_the_deadline_every_read_and_write_fails_at_once() {
    assert_every_read_and_write_fails_at_once_after(Timeout::Deadline);
}

#[test]
fn read_timeout_fires_and_leaves_the_connection_usable() {
    const READ: Duration = Duration::from_millis(200);
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1).read_timeout(READ),
        move |conn: &mut Connection| {
            // A read timeout used as a tick: say so after the first one and
            // keep waiting for the client (at most 100 ticks).
            let mut ticks = 0u64;
            let mut buf = [0u8; 16];
            let result = loop {
                match conn.read(&mut buf) {
                    Ok(n) => break Ok(n),
                    Err(e) if Timeout::of(&e) == Some(Timeout::Read) && ticks < 100 => {
                        ticks += 1;
                        if ticks == 1 {
                            conn.write_all(b"tick\n")?;
                        }
                    }
                    Err(e) => break Err(e),
                }
            };
            let _ = finished_tx.send((timeout_of(&result), ticks));
            let n = result?;
            conn.write_all(&buf[..n])
        },
    );

    let mut client = client(handle.local_addr());
    assert_eq!(read_exactly(&mut client, 5), b"tick\n");
    client.write_all(b"x").unwrap();
    assert_eq!(read_exactly(&mut client, 1), b"x");
    let (outcome, ticks) = finished.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(outcome, Ok(()));
    assert!(ticks >= 1);
    let stats = handle.stats();
    assert_eq!(stats.timeouts.read, ticks, "{stats:?}");
    assert_eq!(stats.timeouts.idle, 0, "{stats:?}");
    drop(client);
    handle.shutdown().unwrap();
}

#[derive(Debug)]
struct Flooded {
    outcome: Result<(), Option<Timeout>>,
    written: u64,
}

#[test]
fn write_timeout_fires_for_a_client_that_never_reads() {
    const WRITE: Duration = Duration::from_millis(300);
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1).write_timeout(WRITE),
        move |conn: &mut Connection| {
            let chunk = [b'.'; 64 * 1024];
            let mut written = 0u64;
            // Bounded: 1 GiB is far more than loopback buffers hold.
            let mut result = Ok(());
            for _ in 0..16 * 1024 {
                match conn.write(&chunk) {
                    Ok(n) => written += n as u64,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let _ = finished_tx.send(Flooded {
                outcome: timeout_of(&result),
                written,
            });
            match result {
                Err(e) if Timeout::of(&e) == Some(Timeout::Write) => {}
                other => return other,
            }
            // The client starts reading now; the connection is still usable
            // (with a write timeout that allows for a slow test machine).
            conn.set_write_timeout(Some(TIMEOUT));
            conn.write_all(b"END")
        },
    );

    let mut client = client(handle.local_addr());
    let flooded = finished.recv_timeout(TIMEOUT).expect("write timed out");
    assert_eq!(flooded.outcome, Err(Some(Timeout::Write)), "{flooded:?}");
    assert!(flooded.written > 0, "{flooded:?}");

    // Every byte the handler was told it wrote arrives, then its last words.
    let mut received = Vec::new();
    client.read_to_end(&mut received).expect("read everything");
    assert_eq!(received.len() as u64, flooded.written + 3);
    assert!(received.ends_with(b"END"));
    assert!(received[..received.len() - 3].iter().all(|&b| b == b'.'));

    let stats = handle.stats();
    assert_eq!(stats.timeouts.write, 1, "{stats:?}");
    assert_eq!(stats.handler_errors, 0, "{stats:?}");
    handle.shutdown().unwrap();
}

#[test]
fn default_timeouts_are_the_documented_ones() {
    // The docs: no read timeout, a 30 s write timeout, a 5 min idle
    // timeout.
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1),
        move |conn: &mut Connection| {
            let limits = (
                conn.read_timeout(),
                conn.write_timeout(),
                conn.idle_timeout(),
            );
            let _ = finished_tx.send(limits);
            Ok(())
        },
    );

    let _client = client(handle.local_addr());
    let (read, write, idle) = finished.recv_timeout(TIMEOUT).expect("handler ran");
    assert_eq!(read, None, "read timeout");
    assert_eq!(write, Some(Duration::from_secs(30)), "write timeout");
    assert_eq!(idle, Some(Duration::from_secs(300)), "idle timeout");
    handle.shutdown().unwrap();
}

#[test]
fn a_read_timeout_set_on_the_stream_directly_is_overwritten() {
    // `Connection::tcp_stream` says timeouts set directly on the stream are
    // overwritten by the connection's own. A connection that skipped the
    // `setsockopt` because its own limit had not changed kept the stream's
    // 20 ms, and reported it as an idle timeout that ended the connection.
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1),
        move |conn: &mut Connection| {
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte)?;
            conn.tcp_stream()
                .expect("a TCP connection")
                .set_read_timeout(Some(Duration::from_millis(20)))?;
            let result = conn.read_exact(&mut byte);
            let _ = finished_tx.send(timeout_of(&result));
            result
        },
    );
    let mut client = client(handle.local_addr());
    client.write_all(b"a").unwrap();
    // Silent for ten times the stream's own timeout (but far less than the
    // idle timeout): shows that the stream's timeout is not in force.
    thread::sleep(Duration::from_millis(200));
    client.write_all(b"b").unwrap();
    assert_eq!(finished.recv_timeout(TIMEOUT).unwrap(), Ok(()));
    handle.shutdown().unwrap();
}

#[test]
fn idle_timeout_counts_across_read_timeouts() {
    // A handler that polls with a short read timeout and retries must still
    // end a client that stays silent for the idle timeout.
    let idle = Duration::from_millis(600);
    let (tx, rx) = mpsc::channel();
    let handle = serve(
        frontdesk::Server::builder()
            .read_timeout(Duration::from_millis(100))
            .idle_timeout(idle),
        move |conn: &mut Connection| {
            let started = Instant::now();
            let mut buf = [0u8; 16];
            let mut polls = 0;
            let result = loop {
                match conn.read(&mut buf) {
                    Err(e) if Timeout::of(&e) == Some(Timeout::Read) => polls += 1,
                    other => break other,
                }
            };
            tx.send((timeout_of(&result), polls, started.elapsed()))
                .unwrap();
            result.map(drop)
        },
    );
    let mut client = client(handle.local_addr());
    let (outcome, polls, elapsed) = rx.recv_timeout(TIMEOUT).expect("handler reports");
    assert_eq!(outcome, Err(Some(Timeout::Idle)));
    assert!(polls >= 2, "the handler polled {polls} times");
    assert!(elapsed + EARLY >= idle, "idle fired after {elapsed:?}");
    assert!(elapsed <= idle + SLACK, "idle fired after {elapsed:?}");
    assert_closed(&mut client);
    let stats = handle.shutdown().expect("shutdown").stats;
    assert_eq!(stats.timeouts.idle, 1);
}

#[test]
fn write_all_gives_up_after_about_one_write_timeout() {
    // The kernel answers a write that times out after taking part of the
    // buffer with the partial count, not the timeout; `write_all` must not
    // start a whole new timeout for the rest each time (it took 3x here).
    const WRITE: Duration = Duration::from_secs(2);
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1).write_timeout(WRITE),
        move |conn: &mut Connection| {
            // Far more than loopback buffers hold, sent in one call.
            let reply = vec![b'.'; 64 << 20];
            let started = Instant::now();
            let result = conn.write_all(&reply);
            let _ = finished_tx.send((timeout_of(&result), started.elapsed()));
            result
        },
    );
    let _client = client(handle.local_addr());
    let (outcome, elapsed) = finished.recv_timeout(TIMEOUT).expect("write_all returns");
    assert_eq!(outcome, Err(Some(Timeout::Write)));
    assert!(elapsed + EARLY >= WRITE, "gave up after {elapsed:?}");
    assert!(elapsed <= WRITE + SLACK, "gave up after {elapsed:?}");
    handle.shutdown().unwrap();
}

/// The read timeouts around the 50 ms a read first waits in `recv` itself
/// (the socket's receive timeout, on Unix): below it, at it, above it, and
/// the two ends.
const READ_TIMEOUTS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(20),
    Duration::from_millis(50),
    Duration::from_millis(120),
    Duration::MAX,
];

#[test]
fn a_read_timeout_counts_the_wait_in_recv_and_is_never_early() {
    // A read waits first in `recv`, then in `poll(2)` for what is left: the
    // two waits must add up to the limit, not each take all of it, and
    // the time in `recv` must not be counted twice. `poll` never returns
    // before its timeout and the wait in `recv` is measured, so a timeout
    // may fire late (a loaded machine) but never early: 5 ms covers the
    // clock reads around the handler's read.
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1),
        move |conn: &mut Connection| {
            let mut buf = [0u8; 16];
            for timeout in READ_TIMEOUTS {
                conn.set_read_timeout(timeout);
                let begin = Instant::now();
                let result = conn.read(&mut buf);
                let _ = finished_tx.send((timeout, timeout_of(&result), begin.elapsed()));
                if result.is_ok() {
                    break;
                }
            }
            Ok(())
        },
    );
    let mut silent = client(handle.local_addr());
    for timeout in &READ_TIMEOUTS[..4] {
        let (limit, outcome, took) = finished.recv_timeout(TIMEOUT).unwrap();
        assert_eq!(limit, *timeout);
        assert_eq!(outcome, Err(Some(Timeout::Read)), "{limit:?}");
        assert!(
            took + Duration::from_millis(5) >= limit,
            "{limit:?} fired after {took:?}"
        );
        assert!(took <= limit + SLACK, "{limit:?} fired after {took:?}");
    }
    // `Duration::MAX`: no limit. The client speaks well after the wait in
    // `recv` has passed (the delay is what is tested, not a
    // synchronisation), and the read returns its byte.
    thread::sleep(Duration::from_millis(150));
    silent.write_all(b"x").unwrap();
    let (limit, outcome, took) = finished.recv_timeout(TIMEOUT).unwrap();
    assert_eq!((limit, outcome), (Duration::MAX, Ok(())));
    assert!(
        took >= Duration::from_millis(100),
        "read back after {took:?}"
    );
    handle.shutdown().unwrap();
}

#[test]
fn an_idle_timeout_and_a_deadline_count_the_wait_in_recv() {
    // As for the read timeout: a 70 ms idle timeout or deadline waits 50
    // ms in `recv` and the rest in `poll(2)`; it fires once, not early, and
    // finishes the connection.
    for end in [Timeout::Idle, Timeout::Deadline] {
        let limit = Duration::from_millis(70);
        let (finished_tx, finished) = mpsc::channel();
        let handle = serve(
            ServerBuilder::new().workers(1).idle_timeout(None),
            move |conn: &mut Connection| {
                let begin = Instant::now();
                match end {
                    Timeout::Idle => conn.set_idle_timeout(limit),
                    _ => conn.set_deadline(begin + limit),
                }
                let result = conn.read(&mut [0u8; 16]);
                let _ = finished_tx.send((timeout_of(&result), begin.elapsed()));
                result.map(drop)
            },
        );
        let mut silent = client(handle.local_addr());
        let (outcome, took) = finished.recv_timeout(TIMEOUT).unwrap();
        assert_eq!(outcome, Err(Some(end)));
        assert!(
            took + Duration::from_millis(5) >= limit,
            "{end:?} after {took:?}"
        );
        assert!(took <= limit + SLACK, "{end:?} after {took:?}");
        assert_closed(&mut silent);
        handle.shutdown().unwrap();
    }
}

#[test]
fn a_handler_that_takes_the_socket_gets_it_without_a_receive_timeout() {
    // The connection's reads wait first in `recv`, bounded by the socket's
    // receive timeout. A handler that takes the socket to read it directly
    // must find it as it left it (none), or its blocking reads would fail
    // after 50 ms; the connection's own reads keep working without it.
    let (finished_tx, finished) = mpsc::channel();
    let handle = serve(
        ServerBuilder::new().workers(1),
        move |conn: &mut Connection| {
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte)?;
            let stream = conn.tcp_stream().expect("a TCP connection");
            let _ = finished_tx.send(stream.read_timeout()?);
            conn.read_exact(&mut byte)?;
            conn.write_all(&byte)
        },
    );
    let mut client = client(handle.local_addr());
    client.write_all(b"a").unwrap();
    assert_eq!(finished.recv_timeout(TIMEOUT).unwrap(), None);
    client.write_all(b"b").unwrap();
    assert_eq!(read_exactly(&mut client, 1), b"b");
    handle.shutdown().unwrap();
}
