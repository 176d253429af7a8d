//! Shutdown: stopping at once, draining queued connections, forcing what is
//! left at the deadline, dropping the handle, `ServerControl` with `run` and
//! `join`, and the stats a stopped server ends with.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use frontdesk::{Connection, Overload, Rejected, Server};
use util::{
    assert_accounted, assert_clean_end, assert_closed, client, client_with_request, exchange,
    read_line, run_on_thread, serve, tcp_addr, wait_for_stats, wait_until, DropSignal, Gate,
    LOCALHOST, QUIET, TIMEOUT,
};

/// How much longer than its drain deadline a shutdown may take: the force
/// grace (1 s) plus slack for a loaded machine.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(3);

/// Whether nothing listens on `addr` any more: a new listener can bind it
/// (std sets SO_REUSEADDR, so connections in TIME_WAIT do not matter).
fn port_is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect(addr) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("expected the connection to be refused, got {other:?}"),
    }
}

/// A handler that reads from its client until the client closes, without
/// answering: with a silent client it stays blocked in `read`. Reports on
/// `entered` when it starts and on `ended` what its last read returned.
fn blocked_reader(
    entered: crossbeam_channel::Sender<u64>,
    ended: crossbeam_channel::Sender<String>,
) -> impl Fn(&mut Connection) -> io::Result<()> {
    move |conn: &mut Connection| {
        entered.send(conn.id()).unwrap();
        let mut buf = [0u8; 64];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => {
                    let _ = ended.send("eof".to_string());
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = ended.send(format!("error: {e}"));
                    return Err(e);
                }
            }
        }
    }
}

#[test]
fn shutdown_of_an_idle_server_is_quick_and_frees_the_port() {
    let handle = Server::bind(LOCALHOST).unwrap().spawn(util::echo).unwrap();
    let addr = tcp_addr(handle.local_addr());
    assert!(!port_is_free(addr));

    let start = Instant::now();
    let report = handle.shutdown().unwrap();
    // Nothing to drain: no deadline is waited for. The bound is generous
    // for a loaded machine; the usual time is well under a millisecond.
    assert!(start.elapsed() < Duration::from_secs(2), "{report:?}");
    assert_eq!(
        (
            report.drained,
            report.forced,
            report.dropped,
            report.stuck_workers
        ),
        (0, 0, 0, 0)
    );

    assert_refused(addr);
    let again = Server::bind(addr).expect("the port is free after shutdown");
    drop(again);
}

#[test]
fn shutdown_drains_queued_connections() {
    const WORKERS: usize = 2;
    const QUEUED: usize = 4;
    let gate = Gate::new();
    let handle = serve(
        Server::builder()
            .workers(WORKERS)
            .queue(QUEUED)
            .shutdown_timeout(TIMEOUT),
        gate.guard(|conn: &mut Connection| -> io::Result<()> {
            let mut line = String::new();
            BufReader::new(&*conn).read_line(&mut line)?;
            writeln!(
                conn,
                "{} shutting_down={}",
                line.trim_end(),
                conn.is_shutting_down()
            )
        }),
    );
    let addr = tcp_addr(handle.local_addr());

    // Fill the workers, then queue clients that have already sent their
    // request.
    let mut clients: Vec<(TcpStream, String)> = Vec::new();
    for i in 0..WORKERS + QUEUED {
        let line = format!("request {i}");
        clients.push((client_with_request(addr, &line), line));
        if i + 1 == WORKERS {
            gate.wait_entered(WORKERS);
        }
    }
    wait_until("the queue is full", || {
        let stats = handle.stats();
        stats.accepted == (WORKERS + QUEUED) as u64 && stats.queued == QUEUED
    });

    let stopper = handle.control();
    let shutdown = thread::spawn(move || handle.shutdown());
    // Let the handlers go only once the server has stopped accepting (its
    // listener is closed): `report.drained` counts the connections open at
    // that moment, so one finishing earlier would not be counted.
    wait_until("the listener is closed", || port_is_free(addr));
    assert!(stopper.is_stopping());
    assert_refused(addr);
    gate.open();

    for (mut stream, line) in clients {
        assert_eq!(read_line(&mut stream), format!("{line} shutting_down=true"));
    }
    let report = shutdown.join().unwrap().unwrap();
    assert_eq!(report.drained, (WORKERS + QUEUED) as u64, "{report:?}");
    assert_eq!(report.forced, 0);
    assert_eq!(report.dropped, 0);
    assert_eq!(report.stuck_workers, 0);
}

#[test]
fn handlers_see_that_the_server_is_shutting_down() {
    // A handler serving many requests on one connection answers the
    // current one and returns once the server shuts down. It looks at the
    // flag after reading a request and tells the client what it saw.
    let handle = Server::builder()
        .shutdown_timeout(TIMEOUT)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(|conn: &mut Connection| -> io::Result<()> {
            let mut reader = BufReader::new(&*conn);
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                let stopping = conn.is_shutting_down();
                writeln!(&*conn, "{} shutting_down={stopping}", line.trim_end())?;
                if stopping {
                    return Ok(());
                }
            }
        })
        .unwrap();
    let addr = tcp_addr(handle.local_addr());
    let mut stream = client(addr);
    assert_eq!(exchange(&mut stream, "first"), "first shutting_down=false");

    let stopper = handle.control();
    assert!(!stopper.is_stopping());
    let shutdown = thread::spawn(move || handle.shutdown());
    // See `shutdown_drains_queued_connections` for why wait for this.
    wait_until("the listener is closed", || port_is_free(addr));
    assert!(stopper.is_stopping());
    assert_eq!(exchange(&mut stream, "last"), "last shutting_down=true");
    assert_closed(&mut stream);
    let report = shutdown.join().unwrap().unwrap();
    assert_eq!((report.drained, report.forced), (1, 0), "{report:?}");
}

#[test]
fn shutdown_force_closes_a_handler_blocked_in_read_at_the_deadline() {
    const DEADLINE: Duration = Duration::from_millis(500);
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    // The drain's quiet time is longer than the deadline: the handler's
    // read waits for its silent client until the force.
    let handle = Server::builder()
        .workers(1)
        .idle_timeout(None)
        .shutdown_timeout(DEADLINE)
        .drain_quiet_time(TIMEOUT)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(blocked_reader(entered_tx, ended_tx))
        .unwrap();
    let mut silent = client(handle.local_addr());
    entered.recv_timeout(TIMEOUT).unwrap();

    let start = Instant::now();
    let report = handle.shutdown().unwrap();
    let took = start.elapsed();
    assert!(took >= DEADLINE, "forced before the deadline: {took:?}");
    assert!(took < DEADLINE + SHUTDOWN_SLACK, "took {took:?}");
    assert_eq!(report.forced, 1, "{report:?}");
    assert_eq!(report.drained, 0);
    assert_eq!(report.dropped, 0);
    assert_eq!(report.stuck_workers, 0);
    // The handler's read failed at the deadline...
    let ended = ended.try_recv().unwrap();
    assert!(ended.contains("drain deadline"), "{ended}");
    // ...and the client sees the connection closed gently.
    assert_clean_end(&mut silent);
}

#[test]
fn queued_connections_still_waiting_at_the_deadline_are_dropped() {
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let (ended_tx, _ended) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(1)
        .queue(2)
        .idle_timeout(None)
        .shutdown_timeout(Duration::from_millis(300))
        .drain_quiet_time(TIMEOUT)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(blocked_reader(entered_tx, ended_tx))
        .unwrap();
    let addr = tcp_addr(handle.local_addr());
    let _silent = client(addr);
    entered.recv_timeout(TIMEOUT).unwrap();
    let mut queued: Vec<TcpStream> = (0..2)
        .map(|i| client_with_request(addr, &format!("request {i}")))
        .collect();
    wait_until("two connections are queued", || {
        let stats = handle.stats();
        stats.accepted == 3 && stats.queued == 2
    });

    let (report, stats) = util::stop(handle);
    assert_eq!(report.forced, 1, "{report:?}");
    assert_eq!(report.dropped, 2, "{report:?}");
    assert_eq!(report.drained, 0, "{report:?}");
    assert_eq!(report.stuck_workers, 0);
    // The queued clients were never served: no handler started for them.
    assert!(entered.try_recv().is_err());
    for stream in &mut queued {
        assert_clean_end(stream);
    }
    assert_eq!(stats.dropped, 2);
    assert_eq!(stats.forced_closed, 1);
    assert_eq!(stats.completed, 1);
    assert_accounted(&stats);
}

#[test]
fn shutdown_leaves_behind_a_handler_that_never_returns() {
    // A handler that ignores its closed socket cannot make shutdown wait
    // forever: it is reported as stuck and left to end on its own.
    let gate = Gate::new();
    let in_handler = gate.clone();
    let handle = Server::builder()
        .workers(2)
        .shutdown_timeout(Duration::from_millis(200))
        .bind(LOCALHOST)
        .unwrap()
        .spawn(move |conn: &mut Connection| in_handler.pass(conn))
        .unwrap();
    let _client = client(handle.local_addr());
    gate.wait_entered(1);

    let start = Instant::now();
    let report = handle.shutdown().unwrap();
    assert!(start.elapsed() < Duration::from_millis(200) + SHUTDOWN_SLACK);
    assert_eq!(report.stuck_workers, 1, "{report:?}");
    assert_eq!(report.forced, 1, "{report:?}");
    gate.open();
}

#[test]
fn client_held_by_the_acceptor_at_shutdown_is_rejected_as_shutting_down() {
    // Under `Block` the acceptor holds one extra connection while it waits
    // for room in the queue; a shutdown ends that wait.
    let gate = Gate::new();
    let handle = serve(
        Server::builder()
            .workers(1)
            .queue(0)
            .overload(Overload::Block)
            .shutdown_timeout(TIMEOUT)
            .on_reject(|conn: &mut Rejected| conn.write_all(b"error: shutting down\n")),
        gate.guard(util::answer_line),
    );
    let addr = tcp_addr(handle.local_addr());
    let mut active = client_with_request(addr, "served");
    gate.wait_entered(1);
    let mut held = client_with_request(addr, "held");
    wait_until("the acceptor holds the second client", || {
        handle.stats().accepted == 2
    });

    let stopper = handle.control();
    stopper.stop();
    assert_eq!(read_line(&mut held), "error: shutting down");
    // See `shutdown_drains_queued_connections` for why wait for this.
    wait_until("the listener is closed", || port_is_free(addr));
    gate.open();
    assert_eq!(read_line(&mut active), "served");
    wait_until("the server has stopped", || handle.is_finished());
    let stats = handle.stats();
    let report = handle.join().unwrap();
    assert_eq!(stats.rejected.shutting_down, 1);
    assert_eq!(report.drained, 1, "{report:?}");
    // The report's stats are the final ones, as the handle shows them.
    assert_eq!(report.stats, stats);
    assert_accounted(&stats);
}

#[test]
fn dropping_the_handle_shuts_down_and_joins_the_workers() {
    let (dropped_tx, dropped) = crossbeam_channel::bounded(1);
    let signal = DropSignal(dropped_tx);
    let handle = Server::builder()
        .workers(3)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(move |conn: &mut Connection| {
            let _held = &signal;
            util::echo(conn)
        })
        .unwrap();
    let addr = tcp_addr(handle.local_addr());
    assert_eq!(exchange(&mut client(addr), "hello"), "hello");

    drop(handle);
    // The handler is dropped only after the last worker has ended: by the
    // time `drop` returns, that has happened.
    assert_eq!(dropped.try_recv(), Ok(()));
    assert!(port_is_free(addr));
    assert_refused(addr);
}

#[test]
fn stopper_ends_run_on_the_calling_thread() {
    let server = Server::builder().workers(2).bind(LOCALHOST).unwrap();
    let addr = tcp_addr(server.local_addr());
    let stopper = server.control();
    // A broken stop fails this test instead of hanging it.
    let (runner, result) = run_on_thread(server, util::echo);
    assert_eq!(exchange(&mut client(addr), "running"), "running");
    assert!(matches!(
        result.recv_timeout(QUIET),
        Err(RecvTimeoutError::Timeout)
    ));

    stopper.stop();
    let report = result
        .recv_timeout(TIMEOUT)
        .expect("run returns after stop")
        .unwrap();
    runner.join().unwrap();
    assert_eq!(report.forced, 0);
    assert_eq!(report.stuck_workers, 0);
    assert_refused(addr);
}

#[test]
fn stop_before_run_makes_run_return_at_once() {
    let server = Server::bind(LOCALHOST).unwrap();
    server.control().stop();
    let (_runner, result) = run_on_thread(server, util::echo);
    let report = result.recv_timeout(TIMEOUT).unwrap().unwrap();
    assert_eq!(report.drained + report.forced + report.dropped, 0);
}

#[test]
fn join_waits_for_a_stop_from_a_stopper() {
    let handle = Server::bind(LOCALHOST).unwrap().spawn(util::echo).unwrap();
    let addr = tcp_addr(handle.local_addr());
    let stopper = handle.control();
    assert!(!handle.is_finished());
    let (result_tx, result) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = result_tx.send(handle.join());
    });
    // `join` must not return on its own, and the server keeps serving.
    assert!(matches!(
        result.recv_timeout(QUIET),
        Err(RecvTimeoutError::Timeout)
    ));
    assert_eq!(
        exchange(&mut client(addr), "still serving"),
        "still serving"
    );

    stopper.stop();
    let report = result
        .recv_timeout(TIMEOUT)
        .expect("join returns after stop")
        .unwrap();
    assert_eq!(report.forced, 0);
    // Stopping again does nothing.
    stopper.stop();
    assert!(stopper.is_stopping());
}

#[test]
fn stats_add_up_after_a_busy_life() {
    // A mix of served, rejected, failed and dropped connections, then the
    // identity `accepted == completed + rejected + dropped`.
    let gate = Gate::new();
    let in_handler = gate.clone();
    let handle = Server::builder()
        .workers(2)
        .queue(1)
        .max_connections(3)
        .overload(Overload::Reject)
        .shutdown_timeout(Duration::from_millis(200))
        .drain_quiet_time(TIMEOUT)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(move |conn: &mut Connection| -> io::Result<()> {
            let mut line = String::new();
            BufReader::new(&*conn).read_line(&mut line)?;
            match line.trim_end() {
                "hold" => {
                    in_handler.pass(conn)?;
                    // Stays in `read` until forced at the deadline.
                    let mut rest = Vec::new();
                    (&*conn).read_to_end(&mut rest)?;
                    Ok(())
                }
                "fail" => Err(io::Error::other("asked to fail")),
                _ => conn.write_all(line.as_bytes()),
            }
        })
        .unwrap();
    let addr = tcp_addr(handle.local_addr());

    for i in 0..3 {
        let line = format!("plain {i}");
        assert_eq!(exchange(&mut client(addr), &line), line);
    }
    let mut failed = client_with_request(addr, "fail");
    assert_closed(&mut failed);
    wait_until("the first four are completed", || {
        handle.stats().completed == 4
    });

    // One at a time: under `Reject` a second client arriving before a
    // worker has taken the first from the queue (of one) would be turned
    // away.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(client_with_request(addr, "hold"));
        gate.wait_entered(1);
    }
    gate.open();
    let _queued = client_with_request(addr, "queued");
    wait_until("one connection is queued", || handle.stats().queued == 1);
    // Over max_connections (3): rejected.
    assert_closed(&mut client(addr));

    let (report, stats) = util::stop(handle);
    assert_eq!(stats.accepted, 8, "{stats:#?}");
    assert_eq!(stats.completed, 6, "{stats:#?}");
    // `fail`, and the two `hold`s whose reads failed at the deadline.
    assert_eq!(stats.handler_errors, 3, "{stats:#?}");
    assert_eq!(stats.rejected.max_connections, 1, "{stats:#?}");
    assert_eq!(stats.dropped, 1, "{stats:#?}");
    assert_eq!((report.forced, report.dropped), (2, 1), "{report:?}");
    assert_accounted(&stats);
}

/// A line protocol: answers each line with `got <line>` until end of stream.
fn answer_every_line(conn: &mut Connection) -> io::Result<()> {
    let mut lines = frontdesk::LineReader::new(&*conn, 1024);
    loop {
        match lines.read_line_str() {
            Ok(line) => (&*conn).write_all(format!("got {line}\n").as_bytes())?,
            Err(frontdesk::LineError::Closed { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}

#[test]
fn drain_answers_what_was_sent_and_ends_without_waiting_for_the_deadline() {
    // A handler waiting for a silent client does not hold the shutdown
    // until the drain deadline: it answers what it got, sees end of stream
    // once the client has been quiet for the drain's quiet time, and
    // returns.
    let handle = serve(
        Server::builder().workers(2).shutdown_timeout(TIMEOUT),
        answer_every_line,
    );
    let addr = tcp_addr(handle.local_addr());
    let mut talker = client(addr);
    let mut silent = client(addr);
    assert_eq!(exchange(&mut silent, "hello"), "got hello");
    // Sent without waiting: still unread when the shutdown begins.
    talker.write_all(b"one\ntwo\nthree\n").unwrap();
    wait_for_stats(&handle, "both connections served", |s| s.active == 2);

    let started = Instant::now();
    let report = handle.shutdown().unwrap();
    assert!(
        started.elapsed() < TIMEOUT / 2,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!((report.drained, report.forced), (2, 0), "{report:?}");
    let mut replies = String::new();
    talker.read_to_string(&mut replies).unwrap();
    assert_eq!(replies, "got one\ngot two\ngot three\n");
    assert_closed(&mut silent);
}

/// The `recvfrom` system call's number, where a test can see which call a
/// thread is blocked in (`/proc/<pid>/task/<tid>/syscall`).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const RECVFROM: Option<u64> = Some(45);
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
const RECVFROM: Option<u64> = Some(207);
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
const RECVFROM: Option<u64> = None;

/// Waits until the thread whose `/proc` directory is `thread` blocks in a
/// system call, and says whether that call is `recvfrom`: a read's first
/// wait, in `recv` itself (else it is its `poll`). `None` where the
/// system does not say.
fn blocked_in_recv(thread: &std::path::Path) -> Option<bool> {
    let recvfrom = RECVFROM?;
    let begin = Instant::now();
    // Bounded: a thread that never blocks fails the test after TIMEOUT.
    while begin.elapsed() < TIMEOUT {
        let call = std::fs::read_to_string(thread.join("syscall")).ok()?;
        if let Some(Ok(number)) = call.split_whitespace().next().map(str::parse::<u64>) {
            return Some(number == recvfrom);
        }
        thread::yield_now();
    }
    panic!("the handler's thread never blocked");
}

/// How a read of a silent client ended, as the tests below report it.
fn outcome(result: &io::Result<usize>) -> String {
    match result {
        Ok(0) => "eof".to_string(),
        Ok(n) => format!("{n} bytes from a silent client"),
        Err(e) => format!("error: {e}"),
    }
}

/// Starts a server from `builder`, with one worker and no idle timeout,
/// whose handler reads once from its client. Before the read it sends
/// its thread's `/proc` directory (for [`blocked_in_recv`]) on the first
/// receiver; after it, how the read ended on the second.
fn serve_one_read(
    builder: frontdesk::ServerBuilder,
) -> (
    frontdesk::ServerHandle,
    crossbeam_channel::Receiver<Option<std::path::PathBuf>>,
    crossbeam_channel::Receiver<String>,
) {
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let handle = builder
        .workers(1)
        .idle_timeout(None)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(move |conn: &mut Connection| {
            let thread = std::fs::read_link("/proc/thread-self").ok();
            entered_tx
                .send(thread.map(|t| Path::new("/proc").join(t)))
                .unwrap();
            let result = conn.read(&mut [0u8; 64]);
            let _ = ended_tx.send(outcome(&result));
            result.map(drop)
        })
        .unwrap();
    (handle, entered, ended)
}

/// Shuts down a server whose one handler is blocked reading a silent
/// client, as soon as the handler's read waits in `recv` itself where it
/// can (up to 50 ms, where the stop signal cannot reach it), 20 times.
/// Returns how many rounds caught the read there, and checks what the
/// drain deadline `deadline` promises: with a long one the read notices
/// the shutdown when that wait ends and, the quiet time being zero, sees
/// end of stream; with none it ends with the deadline's error, or end of
/// stream if it got there first. Either way the shutdown does not wait
/// for the silent client.
fn shut_down_while_a_read_waits_in_recv(deadline: Duration) -> usize {
    let mut caught = 0;
    for round in 0..20 {
        let (handle, entered, ended) = serve_one_read(
            Server::builder()
                .shutdown_timeout(deadline)
                .drain_quiet_time(Duration::ZERO),
        );
        let mut silent = client(handle.local_addr());
        let thread = entered.recv_timeout(TIMEOUT).unwrap();
        if thread.and_then(|t| blocked_in_recv(&t)) == Some(true) {
            caught += 1;
        }
        // The client reads its end beside the shutdown and then closes, so
        // that the gentle close does not wait for it.
        let client = thread::spawn(move || assert_clean_end(&mut silent));
        let start = Instant::now();
        let report = handle.shutdown().unwrap();
        assert!(start.elapsed() < TIMEOUT / 2, "round {round}: {report:?}");
        assert_eq!(report.stuck_workers, 0, "round {round}");
        let ended = ended.recv_timeout(TIMEOUT).unwrap();
        if deadline.is_zero() {
            assert_eq!(
                report.drained + report.forced,
                1,
                "round {round}: {report:?}"
            );
            assert!(
                ended == "eof" || ended.contains("drain deadline"),
                "round {round}: {ended}"
            );
        } else {
            assert_eq!((report.drained, report.forced), (1, 0), "round {round}");
            assert_eq!(ended, "eof", "round {round}");
        }
        client.join().unwrap();
    }
    caught
}

#[test]
fn a_read_waiting_in_recv_when_the_shutdown_begins_ends_in_the_drain() {
    let caught = shut_down_while_a_read_waits_in_recv(TIMEOUT);
    // The read blocks in `recv` within microseconds of saying it is about
    // to, and stays there 50 ms: on a quiet machine every round sees it
    // there. A round whose test thread was held up longer sees the `poll`
    // instead; but one round at least must catch the read in `recv`, or
    // the test did not test what it is for.
    assert!(RECVFROM.is_none() || caught >= 1, "caught {caught} of 20");
}

#[test]
fn a_read_waiting_in_recv_is_forced_by_a_zero_drain_deadline() {
    let caught = shut_down_while_a_read_waits_in_recv(Duration::ZERO);
    // As above.
    assert!(RECVFROM.is_none() || caught >= 1, "caught {caught} of 20");
}

/// The kernel's id of the calling thread, for `tgkill`.
#[cfg(target_os = "linux")]
fn thread_id() -> libc::pid_t {
    // SAFETY: gettid(2) takes nothing and cannot fail.
    #[allow(unsafe_code)]
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    libc::pid_t::try_from(tid).expect("a thread id fits in pid_t")
}

/// Sends `SIGUSR1` to the thread `tid` of this process; false once the
/// thread is gone.
#[cfg(target_os = "linux")]
fn interrupt(tid: libc::pid_t) -> bool {
    // SAFETY: tgkill(2) takes plain integers; the thread group is ours, so
    // the signal reaches none but our own threads, and the caller keeps
    // `tid`'s thread alive while it sends.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, std::process::id(), tid, libc::SIGUSR1) };
    sent == 0
}

#[cfg(target_os = "linux")]
#[test]
fn a_read_interrupted_by_signals_again_and_again_still_sees_the_shutdown() {
    // A program may get signals often (a profiler's timer, a child's
    // SIGCHLD): each one interrupts a blocked `recv`. If the read then
    // waited its whole 50 ms in `recv` again, signals more often than
    // that would keep it there for good, where the stop cannot reach it:
    // the shutdown would be forced, and the worker left stuck.
    let usr1 = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGUSR1, usr1).unwrap();
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let (storm_over_tx, storm_over) = crossbeam_channel::bounded::<()>(0);
    let handle = Server::builder()
        .workers(1)
        .idle_timeout(None)
        .shutdown_timeout(Duration::from_millis(500))
        .drain_quiet_time(Duration::ZERO)
        .bind(LOCALHOST)
        .unwrap()
        .spawn(move |conn: &mut Connection| {
            entered_tx.send(thread_id()).unwrap();
            let result = conn.read(&mut [0u8; 64]);
            let _ = ended_tx.send(outcome(&result));
            // This thread must outlive the signals aimed at it.
            let _ = storm_over.recv_timeout(TIMEOUT);
            result.map(drop)
        })
        .unwrap();
    let mut silent = client(handle.local_addr());
    let tid = entered.recv_timeout(TIMEOUT).unwrap();
    let (stop_storm_tx, stop_storm) = crossbeam_channel::bounded::<()>(1);
    let storm = thread::spawn(move || {
        let begin = Instant::now();
        let mut sent = 0;
        // A signal every 5 ms, well within the read's 50 ms in `recv`,
        // until the handler's read ended (or the test gave up on it).
        while ended.is_empty() && stop_storm.is_empty() && begin.elapsed() < TIMEOUT {
            assert!(interrupt(tid), "the handler's thread is gone");
            sent += 1;
            thread::sleep(Duration::from_millis(5));
        }
        drop(storm_over_tx);
        (ended.recv_timeout(TIMEOUT), sent)
    });
    let client = thread::spawn(move || assert_clean_end(&mut silent));
    let report = handle.shutdown().unwrap();
    let _ = stop_storm_tx.send(());
    let (ended, sent) = storm.join().unwrap();
    assert!(sent > 0);
    assert_eq!(
        (report.drained, report.forced, report.stuck_workers),
        (1, 0, 0),
        "{report:?}"
    );
    assert_eq!(ended.unwrap(), "eof");
    client.join().unwrap();
}

#[test]
fn the_drain_quiet_time_counts_from_the_stop_for_a_read_waiting_in_recv() {
    // A read in its brief wait in `recv` when the shutdown begins notices
    // it only when that wait ends, up to 50 ms later. The client has been
    // quiet all that time: the quiet time counts from the stop, not from
    // when the read noticed it, so a silent client is let go at the quiet
    // time, as with a read that waited in `poll(2)`, and a drain deadline
    // a little longer than the quiet time ends the connection gently
    // instead of by force. 40 ms between the two is more than the worker
    // needs to wake and return, even on a loaded machine; the read's wait
    // in `recv` (50 ms) would be more than that.
    let quiet = Duration::from_millis(300);
    let mut caught = 0;
    for round in 0..5 {
        let (handle, entered, ended) = serve_one_read(
            Server::builder()
                .shutdown_timeout(quiet + Duration::from_millis(40))
                .drain_quiet_time(quiet),
        );
        let mut silent = client(handle.local_addr());
        let thread = entered.recv_timeout(TIMEOUT).unwrap();
        if thread.and_then(|t| blocked_in_recv(&t)) != Some(true) {
            // Not caught in `recv` (or the system does not say): this
            // round tests nothing new.
            drop(silent);
            handle.shutdown().unwrap();
            continue;
        }
        caught += 1;
        let client = thread::spawn(move || assert_clean_end(&mut silent));
        let report = handle.shutdown().unwrap();
        assert_eq!(
            (report.drained, report.forced, report.stuck_workers),
            (1, 0, 0),
            "round {round}: {report:?}"
        );
        assert_eq!(ended.recv_timeout(TIMEOUT).unwrap(), "eof", "round {round}");
        client.join().unwrap();
    }
    assert!(RECVFROM.is_none() || caught >= 1, "caught {caught} of 5");
}
