//! Nothing is lost when the server closes a connection: what the handler
//! wrote reaches the client, followed by a clean end of stream (a FIN),
//! never a reset. That must hold when the handler returns or fails with
//! input it did not read, when the idle timeout ends the connection, and
//! when a shutdown closes queued connections no worker can take. And a
//! listener given to `from_listener` comes back as it went in: a clone of
//! it still accepts, in the blocking mode it had.
//!
//! Why a reset matters: closing a socket that still has unread input makes
//! the kernel send a reset (RST) instead of a FIN and throw away what it
//! had not sent yet; the client reads "connection reset", maybe before the
//! reply. `read_to_clean_end` and `assert_clean_end` tell the two apart
//! (`assert_closed` accepts both).
//!
//! Every wait is bounded: clients have read timeouts of [`TIMEOUT`], and
//! the test thread waits on channels with a timeout, so a server that
//! never closes a connection fails the test instead of hanging it.

mod util;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use frontdesk::{Connection, Handler, Server, Timeout};
use socket2::SockRef;
use util::{
    assert_accounted, assert_clean_end, client, client_with_request, exchange, read_request_line,
    read_to_clean_end, serve, tcp_addr, try_read_to_clean_end, wait_for_stats, TIMEOUT,
};

/// How much a client sends after its first line, which the handler never
/// reads: more than one read of a careless drain would take, so the input
/// cannot all vanish by luck before the close.
const PIPELINED: usize = 64 * 1024;

/// Connections per test for the handler-return cases. On current Linux a
/// close with unread input resets every time, but a gentle close depends
/// on what has arrived when it happens: a few hundred rounds give such a
/// race room to show, and take well under a second on loopback.
const ROUNDS: usize = 300;

/// A handler's first step: reads the client's first line and answers it,
/// leaving the rest of the client's input unread.
fn answer_first_line(conn: &mut Connection) -> io::Result<()> {
    let line = read_request_line(conn)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no request line"))?;
    // The pipelined input came in the same write as the line, so it has
    // arrived by now in practice; waiting until at least one byte of it is
    // there (bounded by the idle timeout) makes sure that the close after
    // this handler has unread input, which is the case under test.
    conn.tcp_stream()
        .expect("a TCP connection")
        .peek(&mut [0u8; 1])?;
    conn.write_all(format!("reply to {line}\n").as_bytes())
}

/// Serves [`ROUNDS`] clients one after the other, each sending a line and
/// [`PIPELINED`] more bytes at once, and checks that each reads the reply,
/// then a clean end of stream. Returns the server's final stats.
fn pipelining_clients_get_reply_then_clean_end(handler: impl Handler) -> frontdesk::Stats {
    let handle = serve(
        Server::builder()
            .workers(2)
            // Bounds the handler's wait for input should a client misbehave.
            .idle_timeout(TIMEOUT),
        handler,
    );
    let addr = tcp_addr(handle.local_addr());
    for round in 0..ROUNDS {
        let mut stream = client(addr);
        // Room for the whole request in the client's send buffer: the write
        // returns at once, whatever the server does with the input, so the
        // outcome shows up where it matters, in what the client reads.
        SockRef::from(&stream)
            .set_send_buffer_size(4 * PIPELINED)
            .unwrap();
        let mut request = format!("request {round}\n").into_bytes();
        request.resize(request.len() + PIPELINED, b'x');
        stream
            .write_all(&request)
            .unwrap_or_else(|e| panic!("round {round}: sending the request failed: {e}"));
        let received = try_read_to_clean_end(&mut stream)
            .unwrap_or_else(|why| panic!("round {round} of {ROUNDS}: {why}"));
        assert_eq!(
            String::from_utf8_lossy(&received),
            format!("reply to request {round}\n"),
            "round {round}"
        );
    }
    let (report, stats) = util::stop(handle);
    assert_eq!(report.forced + report.dropped, 0, "{report:?}");
    assert_eq!(stats.completed, ROUNDS as u64, "{stats:#?}");
    assert_accounted(&stats);
    stats
}

#[test]
fn handler_that_returns_with_unread_input_closes_gently() {
    let stats = pipelining_clients_get_reply_then_clean_end(answer_first_line);
    assert_eq!(stats.handler_errors, 0, "{stats:#?}");
}

#[test]
fn handler_error_closes_gently() {
    let stats = pipelining_clients_get_reply_then_clean_end(|conn: &mut Connection| {
        answer_first_line(conn)?;
        Err(io::Error::other("giving up on the rest of the input"))
    });
    assert_eq!(stats.handler_errors, ROUNDS as u64, "{stats:#?}");
}

/// Whether `listener` is in non-blocking mode (`O_NONBLOCK`, which a
/// listener shares with its clones).
#[cfg(unix)]
fn is_nonblocking(listener: &TcpListener) -> bool {
    SockRef::from(listener)
        .nonblocking()
        .expect("read the listener's mode")
}

/// Runs a server on `listener` (with `from_listener`), has it answer one
/// client, and shuts it down.
fn serve_one_client_then_shut_down(listener: TcpListener) {
    let handle = Server::builder()
        .workers(1)
        .from_listener(listener)
        .expect("from_listener")
        .spawn(util::answer_line)
        .expect("spawn");
    let mut stream = client(handle.local_addr());
    assert_eq!(exchange(&mut stream, "hello"), "hello");
    drop(stream);
    let report = handle.shutdown().expect("the server stops cleanly");
    assert_eq!(report.stuck_workers, 0, "{report:?}");
}

/// Asserts that a client can connect to `listener`'s address and that
/// `listener` accepts it.
fn assert_still_accepts(listener: TcpListener) {
    let addr = listener.local_addr().expect("the listener's address");
    let (accepted_tx, accepted) = crossbeam_channel::bounded(1);
    // On a thread of its own: a blocking accept that never returns then
    // fails the test at the bounded `recv_timeout` below instead of
    // hanging it. A non-blocking listener is polled for at most TIMEOUT.
    thread::spawn(move || {
        let start = Instant::now();
        let result = loop {
            match listener.accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && start.elapsed() < TIMEOUT => {
                    thread::sleep(Duration::from_millis(2));
                }
                result => break result.map(|(_, peer)| peer),
            }
        };
        let _ = accepted_tx.send(result);
    });
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "connecting to {addr} failed ({e}): the stopped server took the listening \
             socket it shares with the clone down with it"
        )
    });
    // TIMEOUT for the poll above, and as much again for a loaded machine.
    let peer = accepted
        .recv_timeout(2 * TIMEOUT)
        .expect("accept on the clone returned neither a connection nor an error")
        .unwrap_or_else(|e| panic!("accept on the clone failed: {e} ({:?})", e.kind()));
    assert_eq!(peer, stream.local_addr().unwrap());
}

#[test]
fn listener_clone_still_accepts_after_shutdown_of_a_server_from_listener() {
    let listener = TcpListener::bind(util::LOCALHOST).unwrap();
    let clone = listener.try_clone().unwrap();
    #[cfg(unix)]
    assert!(!is_nonblocking(&clone), "a new std listener blocks");

    serve_one_client_then_shut_down(listener);

    #[cfg(unix)]
    assert!(
        !is_nonblocking(&clone),
        "the listener was blocking before the server, and must be after it"
    );
    assert_still_accepts(clone);
}

#[cfg(unix)]
#[test]
fn listener_clone_keeps_non_blocking_mode_after_shutdown_of_a_server_from_listener() {
    // The mode is shared by every clone of a listener (it belongs to the
    // open file, not to the descriptor), so whatever the server does to it
    // while it runs, it must give it back as it was.
    let listener = TcpListener::bind(util::LOCALHOST).unwrap();
    listener.set_nonblocking(true).unwrap();
    let clone = listener.try_clone().unwrap();
    assert!(is_nonblocking(&clone));

    serve_one_client_then_shut_down(listener);

    assert!(
        is_nonblocking(&clone),
        "the user set the listener non-blocking; after the server it is blocking"
    );
    assert_still_accepts(clone);
}

#[test]
fn queued_connections_are_closed_gently_when_every_worker_is_stuck() {
    const DRAIN: Duration = Duration::from_millis(300);
    const QUEUED: usize = 3;
    let (entered_tx, entered) = crossbeam_channel::unbounded();
    // The handler waits on this until the test drops `release` (at the end,
    // or while unwinding from a failed assertion).
    let (release, released) = crossbeam_channel::bounded::<()>(0);
    let handle = serve(
        Server::builder()
            .workers(1)
            .queue(4)
            .shutdown_timeout(DRAIN),
        move |conn: &mut Connection| -> io::Result<()> {
            entered_tx.send(conn.id()).unwrap();
            // Stuck: it neither returns nor notices that shutdown closes its
            // socket, so the only worker never comes back for the queue.
            let _ = released.recv();
            Ok(())
        },
    );
    let addr = tcp_addr(handle.local_addr());
    let _stuck = client(addr);
    entered
        .recv_timeout(TIMEOUT)
        .expect("the first client reaches the handler");
    // Each sends a few bytes that nobody will read, so closing it hard
    // would send a reset.
    let mut queued: Vec<TcpStream> = (0..QUEUED)
        .map(|i| client_with_request(addr, &format!("queued {i}")))
        .collect();
    wait_for_stats(&handle, "the three clients are queued", |s| {
        s.accepted == 1 + QUEUED as u64 && s.queued == QUEUED
    });

    // About DRAIN plus the force grace (1 s): on a thread, so that the
    // clients can watch their connections meanwhile.
    let shutdown = thread::spawn(move || handle.shutdown());

    // The queued connections should end at the drain deadline, DRAIN after
    // the stop, or at the latest when the force grace (1 s) runs out. Each
    // client waits up to its read timeout, TIMEOUT (10 s), several times
    // that: it runs out only when the server never closes them.
    for (i, stream) in queued.iter_mut().enumerate() {
        let rest =
            try_read_to_clean_end(stream).unwrap_or_else(|why| panic!("queued client {i}: {why}"));
        assert!(
            rest.is_empty(),
            "queued client {i} was never served, yet got {rest:?}"
        );
    }

    let report = shutdown
        .join()
        .expect("the shutdown thread")
        .expect("the server stops cleanly");
    let stats = report.stats;
    assert_eq!(report.dropped, QUEUED as u64, "{report:#?}");
    assert_eq!(report.stuck_workers, 1, "{report:#?}");
    assert_eq!(stats.dropped, QUEUED as u64, "{stats:#?}");
    // Every accepted connection was served, rejected, dropped, or is the
    // one still held by the stuck handler (open, not completed).
    assert_eq!(
        stats.accepted,
        stats.completed + stats.rejected.total() + stats.dropped + report.stuck_workers as u64,
        "accepted == completed + rejected + dropped + stuck: {stats:#?}"
    );
    assert!(
        entered.try_recv().is_err(),
        "a queued connection reached the stuck worker's handler"
    );
    drop(release);
}

/// A handler that reads one line and answers it, and reports how its read
/// ended: `Some(timeout)` when a timeout ended it.
fn answer_line_reporting_timeout(
    ended: crossbeam_channel::Sender<Option<Timeout>>,
    linger_for_late_input: bool,
) -> impl Handler {
    move |conn: &mut Connection| -> io::Result<()> {
        let result = read_request_line(conn);
        let timeout = result.as_ref().err().and_then(Timeout::of);
        let _ = ended.send(timeout);
        if timeout.is_some() && linger_for_late_input {
            // Still busy (logging, cleaning up) when the rest of the
            // request arrives: wait until it is there, unread, before
            // returning. Bounded: the client sends it at once.
            let stream = conn.tcp_stream().expect("a TCP connection");
            stream.set_read_timeout(Some(TIMEOUT))?;
            let _ = stream.peek(&mut [0u8; 1]);
        }
        match result? {
            Some(line) => conn.write_all(format!("{line}\n").as_bytes()),
            None => Ok(()),
        }
    }
}

/// The idle timeout used by the idle tests: short, so that they are quick;
/// the client's read timeout (TIMEOUT) is far longer, so it is the server
/// that ends the connection.
const IDLE: Duration = Duration::from_millis(200);

fn idle_server(
    ended: crossbeam_channel::Sender<Option<Timeout>>,
    linger: bool,
) -> (frontdesk::ServerHandle, SocketAddr) {
    let handle = serve(
        Server::builder().workers(1).idle_timeout(IDLE),
        answer_line_reporting_timeout(ended, linger),
    );
    let addr = tcp_addr(handle.local_addr());
    (handle, addr)
}

#[test]
fn idle_timeout_closes_gently() {
    // Half a line, then silence: the handler reads it all, waits IDLE for
    // the rest and gives up. Nothing is left unread at the close.
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let (handle, addr) = idle_server(ended_tx, false);
    let mut stream = client(addr);
    stream.write_all(b"half a li").unwrap();

    assert_clean_end(&mut stream);
    assert_eq!(ended.recv_timeout(TIMEOUT), Ok(Some(Timeout::Idle)));
    let (_, stats) = util::stop(handle);
    assert_eq!(stats.timeouts.idle, 1, "{stats:#?}");
    assert_eq!(stats.handler_errors, 1, "{stats:#?}");
    assert_accounted(&stats);
}

#[test]
fn idle_timeout_closes_gently_when_the_rest_of_the_request_comes_too_late() {
    // Half a line, then silence until the server has given up; then the
    // rest of the line arrives while the handler is still finishing, and
    // nobody reads it.
    let (ended_tx, ended) = crossbeam_channel::unbounded();
    let (handle, addr) = idle_server(ended_tx, true);
    let mut stream = client(addr);
    stream.write_all(b"half a li").unwrap();
    assert_eq!(
        ended.recv_timeout(TIMEOUT),
        Ok(Some(Timeout::Idle)),
        "the handler gives up after the idle timeout"
    );
    stream.write_all(b"ne\n").unwrap();

    assert_clean_end(&mut stream);
    let (_, stats) = util::stop(handle);
    assert_eq!(stats.timeouts.idle, 1, "{stats:#?}");
    assert_eq!(stats.handler_errors, 1, "{stats:#?}");
    assert_accounted(&stats);
}

#[test]
fn a_client_that_never_closes_is_cut_at_the_linger_time_and_counted() {
    // The client reads the reply and the server's end of stream but never
    // closes its side: the gentle close waits for it no longer than
    // `linger_time`, on the closer thread, and counts the cut.
    let handle = serve(
        Server::builder()
            .workers(1)
            .linger_time(Duration::from_millis(100)),
        |conn: &mut Connection| conn.write_all(b"bye\n"),
    );
    let mut stream = client(handle.local_addr());
    stream.write_all(b"unread\n").unwrap();
    assert_eq!(read_to_clean_end(&mut stream), b"bye\n");
    let stats = wait_for_stats(&handle, "the close is cut", |s| s.linger_cut == 1);
    assert_eq!(stats.lingering, 0, "{stats:?}");
    // The worker was free all along: a second client is served while the
    // first still lingers or after it was cut.
    let mut second = client(handle.local_addr());
    assert_eq!(read_to_clean_end(&mut second), b"bye\n");
    drop((stream, second));
    let (report, stats) = util::stop(handle);
    assert_eq!(report.forced, 0, "{report:?}");
    assert_accounted(&stats);
}
