//! The turn mode over real loopback sockets: thousands of idle connections
//! parked on two workers and each answered after a long silence; a line put
//! together across many parks; a broadcast to 500 clients, one of which
//! never reads and is dropped while the others get every line in order; a
//! trickling client closed at its deadline while fresh clients are served;
//! a shutdown that gives parked connections a last word and a gentle close;
//! and no descriptor left open after all of that.
//!
//! Conventions (as in the other tests): servers bind `127.0.0.1:0`, clients
//! have read and write timeouts of [`TIMEOUT`], the handlers report their
//! turns and closes on channels, and what no channel reports (how many
//! connections are parked) is polled from the stats with a bound. The only
//! sleeps are a client's pace (a trickle, a silence), which is the
//! scenario under test, never a way to wait for the server.
//!
//! Timing assertions are one-sided and generous: a limit did not fire
//! early, and did fire within a slack meant for a loaded 2-core machine.
#![cfg(unix)]
// The file descriptor limit is raised with setrlimit, which std does not
// wrap (see `turns_util::raise_fd_limit`).
#![allow(unsafe_code)]

mod turns_util;
mod util;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use frontdesk::{CloseReason, Peer, Server, ServerHandle, Timeout};
use rustix::event::{PollFd, PollFlags, Timespec};
use turns_util::{
    affordable_clients, client_with_little_room, next_event, raise_fd_limit, run_alone,
    serve_turns, share_process, Echo, Event, Room,
};
use util::{
    assert_accounted, client, exchange, read_line, read_to_clean_end, send_line, tcp_addr,
    wait_for_stats, TIMEOUT,
};

// ---------------------------------------------------------------------------
// 1. Thousands of parked connections on two workers
// ---------------------------------------------------------------------------

/// How many idle clients the first test parks.
const PARKED_CLIENTS: usize = 2_000;

/// How long the parked clients say nothing before they ask. This is the
/// scenario (connections that wait a long while without a worker, as a
/// chat's or a lobby's do), not a synchronization: nothing is waited for.
/// Many times what any wake-up or hand-off of the server takes, and short
/// enough to keep the test quick.
const SILENCE: Duration = Duration::from_secs(1);

#[test]
fn two_thousand_parked_connections_on_two_workers_are_each_answered() {
    let _process = share_process();
    let count = affordable_clients(
        "two_thousand_parked_connections_on_two_workers_are_each_answered",
        PARKED_CLIENTS,
        0.6,
    );
    let (echo, events) = Echo::new();
    let handle = serve_turns(
        Server::builder()
            .workers(2)
            // Room in the backlog for every client at once, so no SYN is
            // dropped (and retried a second later) if the acceptor falls
            // behind on a loaded machine.
            .backlog(u32::try_from(count).unwrap()),
        echo,
    );
    let addr = tcp_addr(handle.local_addr());
    let mut clients: Vec<TcpStream> = (0..count).map(|_| client(addr)).collect();
    let stats = wait_for_stats(&handle, "every client is parked, holding no worker", |s| {
        s.parked == count && s.busy_workers == 0
    });
    assert_eq!(stats.workers, 2, "{stats:#?}");
    assert_eq!(stats.accepted, count as u64, "{stats:#?}");

    thread::sleep(SILENCE);
    let stats = handle.stats();
    assert_eq!(
        (stats.parked, stats.completed),
        (count, 0),
        "after {SILENCE:?} of silence every client is still parked: {stats:#?}"
    );

    // Every client asks at once; then each must get its own answer.
    for (i, client) in clients.iter_mut().enumerate() {
        send_line(client, &format!("hello from client {i}"));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            read_line(client),
            format!("hello from client {i}"),
            "client {i}"
        );
    }

    // The clients leave; each end of stream is a last turn and a close.
    drop(clients);
    wait_for_stats(&handle, "every client's departure is served", |s| {
        s.completed == count as u64 && s.parked == 0
    });
    // Every turn of every connection ran on one of the two workers.
    let mut threads = HashSet::new();
    let (mut turns, mut closes) = (0, 0);
    for event in events.try_iter() {
        match event {
            Event::Turn { thread, .. } => {
                threads.insert(thread);
                turns += 1;
            }
            Event::Closed { peer, reason, .. } => {
                assert_eq!(reason, CloseReason::Done, "{peer}");
                closes += 1;
            }
        }
    }
    assert!(
        turns >= 2 * count && closes == count,
        "{turns} turns and {closes} closes for {count} clients that each sent a line and left"
    );
    assert!(
        threads.len() <= 2,
        "the turns of {count} connections ran on {} threads, not on the 2 workers",
        threads.len()
    );
    let (report, stats) = util::stop(handle);
    assert_eq!(
        (report.forced, report.dropped, report.stuck_workers),
        (0, 0, 0),
        "{report:#?}"
    );
    assert_eq!(stats.handler_errors + stats.panics, 0, "{stats:#?}");
    assert_accounted(&stats);
}

// ---------------------------------------------------------------------------
// 2. A line split across many parks
// ---------------------------------------------------------------------------

#[test]
fn a_line_split_across_many_parks_is_put_together() {
    let _process = share_process();
    raise_fd_limit();
    let (echo, events) = Echo::new();
    let handle = serve_turns(Server::builder().workers(2), echo);
    let mut stream = client(handle.local_addr());
    // One byte per segment, sent at once: without this, Nagle's algorithm
    // would hold each byte until the previous one is acknowledged.
    stream.set_nodelay(true).unwrap();
    let me = stream.local_addr().unwrap();
    wait_for_stats(&handle, "the client is parked", |s| s.parked == 1);

    let line: Vec<u8> = (0..50u8).map(|i| b'a' + i % 26).collect();
    for (i, byte) in line.iter().enumerate() {
        stream.write_all(&[*byte]).unwrap();
        // The turn this byte caused kept the unfinished line...
        next_event(
            &events,
            &format!("a turn with {} bytes buffered", i + 1),
            |e| match e {
                Event::Turn { peer, buffered, .. } if *peer == me => {
                    assert!(
                        *buffered <= i + 1,
                        "byte {i}: the server buffered {buffered} bytes, more than were sent"
                    );
                    *buffered == i + 1
                }
                Event::Closed { peer, reason, .. } if *peer == me => {
                    panic!("byte {i}: the connection was closed ({reason:?})")
                }
                _ => false,
            },
        );
        // ...and the connection went back to the readiness set: the next
        // byte finds it parked, not on a worker.
        wait_for_stats(&handle, "the client is parked again", |s| {
            s.parked == 1 && s.busy_workers == 0
        });
    }
    stream.write_all(b"\n").unwrap();
    assert_eq!(read_line(&mut stream).as_bytes(), &line[..]);
    // Answered exactly once: the next reply is the next line's.
    assert_eq!(exchange(&mut stream, "and this one"), "and this one");

    drop(stream);
    let (report, stats) = util::stop(handle);
    assert_eq!(report.forced, 0, "{report:#?}");
    assert_eq!(stats.completed, 1, "{stats:#?}");
    assert_eq!(stats.handler_errors, 0, "{stats:#?}");
}

// ---------------------------------------------------------------------------
// 3. A broadcast to 500 clients, one of which never reads
// ---------------------------------------------------------------------------

/// Every broadcast line is this long, newline included, so that a byte
/// offset tells how many whole lines a client has.
const LINE_LEN: usize = 100;

/// The outbox limit of the broadcast server: small, so that the client
/// that never reads fills its outbox quickly.
const OUTBOX_LIMIT: usize = 16 * 1024;

/// The sender sends this many lines, then waits until every reading
/// listener has read all of them. So a reading listener never has more
/// than this much outstanding, wherever it is (its outbox, the kernel's
/// buffers, its reader thread): less than half the outbox limit, so no
/// reading listener's outbox can fill, however slow its reader thread or
/// the machine. The client that never reads has no such bound.
const WINDOW_LINES: usize = 80;
const _: () = assert!(WINDOW_LINES * LINE_LEN <= OUTBOX_LIMIT / 2);

/// Lines still broadcast after the non-reader was closed: the others go on
/// getting every line.
const LINES_AFTER_CLOSE: usize = 4 * WINDOW_LINES;

/// The most lines (5 MB) a broadcast sends before it gives up on the
/// non-reader being closed. Its outbox and the kernel's buffers on both
/// sides of its connection hold far less: about 70 KB here (see
/// [`NON_READER_MSS`]), and even without the small segments some 2.6 MB.
const MAX_BROADCAST_LINES: usize = 50_000;

/// The receive buffer and the segment size asked for on the client that
/// never reads, so that the kernel's buffers on both sides of its
/// connection hold tens of kilobytes, not megabytes (see
/// `client_with_little_room`): the broadcast that fills them is then
/// short.
const NON_READER_RCVBUF: usize = 4 * 1024;
const NON_READER_MSS: u32 = 1024;

/// Threads reading the listeners of a broadcast, each polling its share of
/// the sockets.
const READER_THREADS: usize = 4;

#[test]
fn broadcast_to_500_with_one_that_never_reads() {
    let _process = share_process();
    let listeners = affordable_clients("broadcast_to_500_with_one_that_never_reads", 500, 0.3);
    let outcome = broadcast_with_one_that_never_reads(listeners);
    eprintln!(
        "broadcast: {} lines to {listeners} listeners; the non-reader was closed after \
         {} lines were sent, having taken {} lines",
        outcome.lines_sent, outcome.non_reader_closed_after, outcome.non_reader_got
    );
}

/// What a broadcast did, for the curious.
#[derive(Debug)]
struct BroadcastOutcome {
    lines_sent: usize,
    /// Lines sent when the test learned that the non-reader was closed.
    non_reader_closed_after: usize,
    /// Whole lines the non-reader received before its end of stream.
    non_reader_got: usize,
}

/// Runs a [`Room`] server with `listeners` reading clients, one client
/// that never reads (until the end), and a sender; the sender broadcasts
/// until the server has closed the non-reader for its full outbox, and
/// some more. Checks that every listener received every line in order,
/// then a clean end of stream at shutdown; that the non-reader was closed
/// with [`CloseReason::OutboxFull`] and had received a prefix of the lines;
/// and that the shutdown forced nothing.
fn broadcast_with_one_that_never_reads(listeners: usize) -> BroadcastOutcome {
    let (room, closes) = Room::new();
    let handle = serve_turns(
        Server::builder()
            .workers(2)
            .backlog(u32::try_from(listeners + 2).unwrap())
            .outbox_limit(OUTBOX_LIMIT),
        room,
    );
    let addr = tcp_addr(handle.local_addr());
    let listening: Vec<TcpStream> = (0..listeners).map(|_| client(addr)).collect();
    let listener_addrs: HashSet<SocketAddr> =
        listening.iter().map(|s| s.local_addr().unwrap()).collect();
    let mut non_reader = client_with_little_room(addr, NON_READER_RCVBUF, NON_READER_MSS);
    let non_reader_addr = non_reader.local_addr().unwrap();
    let mut sender = client(addr);
    let sender_addr = sender.local_addr().unwrap();
    wait_for_stats(&handle, "every member has joined the room", |s| {
        s.parked == listeners + 2
    });

    let expected: Arc<[u8]> = broadcast_lines(MAX_BROADCAST_LINES).into();
    let (progress_tx, progress) = crossbeam_channel::unbounded();
    let mut shares: Vec<Vec<TcpStream>> = (0..READER_THREADS).map(|_| Vec::new()).collect();
    for (i, stream) in listening.into_iter().enumerate() {
        shares[i % READER_THREADS].push(stream);
    }
    let readers: Vec<JoinHandle<Vec<Result<usize, String>>>> = shares
        .into_iter()
        .enumerate()
        .map(|(index, streams)| {
            let expected = Arc::clone(&expected);
            let progress = progress_tx.clone();
            thread::spawn(move || read_broadcast(index, streams, &expected, &progress))
        })
        .collect();
    drop(progress_tx);

    // Broadcast a window at a time until the server has closed the
    // non-reader, then some more.
    let mut read_by = vec![0usize; READER_THREADS];
    let mut sent = 0;
    let mut non_reader_closed_after = None;
    loop {
        let batch = WINDOW_LINES.min(MAX_BROADCAST_LINES - sent);
        assert!(
            batch > 0,
            "{sent} lines ({} KiB) were broadcast and the client that never reads is \
             still a member: its outbox never filled? stats: {:#?}",
            sent * LINE_LEN / 1024,
            handle.stats()
        );
        sender
            .write_all(&expected[sent * LINE_LEN..(sent + batch) * LINE_LEN])
            .unwrap_or_else(|e| panic!("the sender could not send after {sent} lines: {e}"));
        sent += batch;
        wait_until_every_listener_has(&progress, &mut read_by, sent);
        for (peer, reason) in closes.try_iter() {
            assert_eq!(
                (peer, reason),
                (non_reader_addr, CloseReason::OutboxFull),
                "only the client that never reads may be closed during the broadcast \
                 (sender {sender_addr}, {sent} lines sent)"
            );
            non_reader_closed_after = Some(sent);
        }
        if non_reader_closed_after.is_some_and(|at| sent >= at + LINES_AFTER_CLOSE) {
            break;
        }
    }
    let non_reader_closed_after = non_reader_closed_after.unwrap();
    let stats = handle.stats();
    assert_eq!(
        stats.outbox_full, 1,
        "one full outbox (the non-reader's), none of a reading listener: {stats:#?}"
    );

    // The non-reader reads at last: the lines queued before its outbox
    // filled (whole lines, in order), then the end of its stream.
    let (received, end) = read_until_end(&mut non_reader);
    assert!(
        expected.starts_with(&received),
        "the non-reader received something else than the first {} bytes of the broadcast",
        received.len()
    );
    let non_reader_got = received.len() / LINE_LEN;
    assert!(
        non_reader_got < non_reader_closed_after,
        "the non-reader got {non_reader_got} lines, but was closed before \
         {non_reader_closed_after} had been sent"
    );
    if let Err(error) = end {
        // A reset would be acceptable for this client, but since it sent
        // nothing the gentle close has no reason to send one: say so.
        eprintln!("note: the non-reader saw a reset rather than an end of stream: {error}");
    } else {
        assert_eq!(
            received.len() % LINE_LEN,
            0,
            "the non-reader's stream ended inside a line"
        );
    }
    drop(non_reader);

    // The sender leaves, then the server shuts down: the listeners see a
    // clean end of stream after the last line, and close.
    drop(sender);
    let (_, reason) = next_event(&closes, "the sender's close", |(peer, _)| {
        *peer == sender_addr
    });
    assert_eq!(reason, CloseReason::Done);
    let (report, stats) = util::stop(handle);
    for reader in readers {
        for (i, outcome) in reader.join().unwrap().into_iter().enumerate() {
            let bytes = outcome.unwrap_or_else(|why| panic!("listener {i}: {why}"));
            assert_eq!(
                bytes,
                sent * LINE_LEN,
                "a listener got {} of the {sent} lines before its end of stream",
                bytes as f64 / LINE_LEN as f64
            );
        }
    }
    let closed: HashMap<SocketAddr, CloseReason> = closes.try_iter().collect();
    for addr in &listener_addrs {
        assert_eq!(
            closed.get(addr),
            Some(&CloseReason::Shutdown),
            "listener {addr}"
        );
    }
    assert_eq!(
        (report.forced, report.dropped, report.stuck_workers),
        (0, 0, 0),
        "{report:#?}"
    );
    assert_eq!(stats.outbox_full, 1, "{stats:#?}");
    assert_eq!(stats.handler_errors + stats.panics, 0, "{stats:#?}");
    assert_accounted(&stats);
    BroadcastOutcome {
        lines_sent: sent,
        non_reader_closed_after,
        non_reader_got,
    }
}

/// `count` lines of exactly [`LINE_LEN`] bytes: `line 000042 ....\n`.
fn broadcast_lines(count: usize) -> Vec<u8> {
    let mut all = Vec::with_capacity(count * LINE_LEN);
    for i in 0..count {
        let start = all.len();
        write!(all, "line {i:06} ").unwrap();
        all.resize(start + LINE_LEN - 1, b'.');
        all.push(b'\n');
    }
    all
}

/// What a reader thread tells the sender.
#[derive(Debug)]
enum Progress {
    /// Every listener of reader `reader` has received at least `lines`
    /// whole lines, each as sent.
    Read { reader: usize, lines: usize },
    /// A listener of reader `reader` got something wrong.
    Failed { reader: usize, why: String },
}

/// Waits until every reader reports that all its listeners have `lines`
/// lines; panics if one fails or none reports within [`TIMEOUT`].
fn wait_until_every_listener_has(
    progress: &Receiver<Progress>,
    read_by: &mut [usize],
    lines: usize,
) {
    while read_by.iter().copied().min().unwrap_or(lines) < lines {
        match progress.recv_timeout(TIMEOUT) {
            Ok(Progress::Read { reader, lines }) => read_by[reader] = lines,
            Ok(Progress::Failed { reader, why }) => panic!("a listener of reader {reader}: {why}"),
            Err(_) => panic!(
                "the listeners did not all receive {lines} lines within {TIMEOUT:?}; \
                 lines received by each reader's slowest listener: {read_by:?}"
            ),
        }
    }
}

/// One listener, as a reader thread sees it.
struct Listening {
    /// `None` once it has ended (and is closed).
    stream: Option<TcpStream>,
    /// Bytes received, each checked against the broadcast.
    received: usize,
    /// How it ended: the bytes received before a clean end of stream.
    outcome: Option<Result<usize, String>>,
}

/// A reader thread: reads its `streams` as data arrives, checks every byte
/// against `expected` (so every line, in order), reports progress, and
/// returns how each stream ended. A stream is closed as soon as it ends,
/// so that the server's gentle close is not kept waiting. Gives up on the
/// streams still open when nothing arrives for [`TIMEOUT`].
fn read_broadcast(
    reader: usize,
    streams: Vec<TcpStream>,
    expected: &[u8],
    progress: &Sender<Progress>,
) -> Vec<Result<usize, String>> {
    let mut listening: Vec<Listening> = streams
        .into_iter()
        .map(|stream| {
            stream.set_nonblocking(true).unwrap();
            Listening {
                stream: Some(stream),
                received: 0,
                outcome: None,
            }
        })
        .collect();
    let patience = Timespec::try_from(TIMEOUT).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut reported = 0;
    loop {
        let open: Vec<usize> = (0..listening.len())
            .filter(|&i| listening[i].stream.is_some())
            .collect();
        if open.is_empty() {
            break;
        }
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .map(|&i| PollFd::new(listening[i].stream.as_ref().unwrap(), PollFlags::IN))
                .collect();
            match rustix::event::poll(&mut fds, Some(&patience)) {
                Ok(0) => {
                    for &i in &open {
                        let l = &mut listening[i];
                        l.outcome = Some(Err(format!(
                            "nothing arrived for {TIMEOUT:?} after {} bytes ({} lines)",
                            l.received,
                            l.received / LINE_LEN
                        )));
                        l.stream = None;
                    }
                    break;
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => panic!("poll: {errno}"),
            }
            fds.iter()
                .zip(&open)
                .filter(|(fd, _)| !fd.revents().is_empty())
                .map(|(_, &i)| i)
                .collect()
        };
        for i in ready {
            read_listener(&mut listening[i], expected, &mut buf);
            if let Some(Err(why)) = &listening[i].outcome {
                let _ = progress.send(Progress::Failed {
                    reader,
                    why: why.clone(),
                });
            }
        }
        let lines = listening
            .iter()
            .map(|l| l.received / LINE_LEN)
            .min()
            .unwrap_or(0);
        if lines > reported {
            reported = lines;
            let _ = progress.send(Progress::Read { reader, lines });
        }
    }
    listening
        .into_iter()
        .map(|l| l.outcome.expect("every stream ended"))
        .collect()
}

/// Reads what `listener` has, without waiting, and checks it.
fn read_listener(listener: &mut Listening, expected: &[u8], buf: &mut [u8]) {
    let Some(mut stream) = listener.stream.as_ref() else {
        return;
    };
    let failure = loop {
        match stream.read(buf) {
            Ok(0) => {
                listener.outcome = Some(Ok(listener.received));
                listener.stream = None;
                return;
            }
            Ok(n) => {
                let at = listener.received;
                let want = expected.get(at..at + n);
                if want != Some(&buf[..n]) {
                    break format!(
                        "wrong bytes at offset {at} (line {}): got {:?}",
                        at / LINE_LEN,
                        String::from_utf8_lossy(&buf[..n.min(2 * LINE_LEN)])
                    );
                }
                listener.received += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                break format!(
                    "read failed after {} bytes ({} lines): {e} ({:?})",
                    listener.received,
                    listener.received / LINE_LEN,
                    e.kind()
                )
            }
        }
    };
    listener.outcome = Some(Err(failure));
    listener.stream = None;
}

/// Reads until the stream ends, cleanly (`Ok`) or not (the error); a read
/// timeout is a failure.
fn read_until_end(stream: &mut TcpStream) -> (Vec<u8>, Result<(), io::Error>) {
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (received, Ok(())),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if util::is_reset(&e) => return (received, Err(e)),
            Err(e) => panic!(
                "expected the stream to end after {} bytes, but: {e} ({:?})",
                received.len(),
                e.kind()
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// 4. A trickling client, closed at its deadline
// ---------------------------------------------------------------------------

/// A line must be complete within this long of its first byte.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);

/// The trickling client's pace: one byte this often, never a newline.
const TRICKLE_EVERY: Duration = Duration::from_millis(50);

/// The fresh clients' pace while the trickle goes on.
const FRESH_EVERY: Duration = Duration::from_millis(25);

/// How much later than its deadline the trickler may be closed: the
/// poller's timer fires at the deadline, the rest is scheduling on a busy
/// 2-core machine.
const DEADLINE_SLACK: Duration = Duration::from_secs(2);

/// The longest a fresh client may wait for its answer. A liveness bound,
/// not a benchmark: an answer on loopback takes well under a millisecond,
/// and a single worker held by the trickler until its deadline would still
/// answer within this; what shows that the trickler holds no worker is
/// that fresh clients are answered before the trickler is closed.
const PROMPTLY: Duration = Duration::from_secs(1);

#[test]
fn a_trickling_client_is_closed_at_its_deadline_while_fresh_clients_are_served() {
    let _process = share_process();
    raise_fd_limit();
    let (echo, events) = Echo::with_request_timeout(Some(REQUEST_TIMEOUT));
    let handle = serve_turns(Server::builder().workers(1), echo);
    let addr = tcp_addr(handle.local_addr());

    let mut trickler = client(addr);
    trickler.set_nodelay(true).unwrap();
    let trickler_addr = trickler.local_addr().unwrap();
    wait_for_stats(&handle, "the trickler is parked", |s| s.parked == 1);
    let (stop_trickle, trickle_stopped) = crossbeam_channel::bounded::<()>(0);
    let mut writer = trickler.try_clone().unwrap();
    let first_byte_at = Instant::now();
    let trickle = thread::spawn(move || {
        // A byte per TRICKLE_EVERY, until told to stop; at most for 10 s.
        let mut sent = 0;
        while sent < TIMEOUT.as_millis() / TRICKLE_EVERY.as_millis() {
            if writer.write_all(b"x").is_err() {
                break;
            }
            sent += 1;
            if trickle_stopped.recv_timeout(TRICKLE_EVERY) != Err(RecvTimeoutError::Timeout) {
                break;
            }
        }
        sent
    });
    next_event(
        &events,
        "the server has the trickle's first byte",
        |e| matches!(e, Event::Turn { peer, buffered, .. } if *peer == trickler_addr && *buffered > 0),
    );

    // Fresh clients, one every FRESH_EVERY, while the trickle goes on.
    let (stop_fresh, fresh_stopped) = crossbeam_channel::bounded::<()>(0);
    let fresh = thread::spawn(move || {
        let mut answered = Vec::new();
        for k in 0.. {
            let asked_at = Instant::now();
            let mut stream = client(addr);
            let line = format!("fresh client {k}");
            assert_eq!(exchange(&mut stream, &line), line);
            answered.push((asked_at.elapsed(), Instant::now()));
            if fresh_stopped.recv_timeout(FRESH_EVERY) != Err(RecvTimeoutError::Timeout) {
                break;
            }
        }
        answered
    });

    // The trickler is closed at its deadline: a clean end of stream, with
    // nothing before it (it never completed a line).
    let received = read_to_clean_end(&mut trickler);
    let closed_at = Instant::now();
    let after = closed_at - first_byte_at;
    drop(stop_trickle);
    drop(stop_fresh);
    let bytes_sent = trickle.join().unwrap();
    let answered = fresh.join().unwrap();
    drop(trickler);
    assert!(
        received.is_empty(),
        "the trickler got {:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        after >= REQUEST_TIMEOUT,
        "the trickler was closed {after:?} after its first byte, before its deadline \
         ({REQUEST_TIMEOUT:?})"
    );
    assert!(
        after <= REQUEST_TIMEOUT + DEADLINE_SLACK,
        "the trickler was closed {after:?} after its first byte, long after its deadline \
         ({REQUEST_TIMEOUT:?}; {bytes_sent} bytes trickled)"
    );
    let Event::Closed {
        reason, buffered, ..
    } = next_event(
        &events,
        "the trickler's close",
        |e| matches!(e, Event::Closed { peer, .. } if *peer == trickler_addr),
    )
    else {
        unreachable!()
    };
    assert_eq!(reason, CloseReason::TimedOut(Timeout::Deadline));
    assert!(
        !buffered.is_empty() && buffered.iter().all(|&b| b == b'x'),
        "the trickler's unfinished line at its close: {:?}",
        String::from_utf8_lossy(&buffered)
    );

    let during = answered.iter().filter(|(_, at)| *at < closed_at).count();
    assert!(
        during >= 3,
        "only {during} fresh clients were answered while the trickler was open \
         ({after:?}): with one worker, the trickler must not hold it between its bytes"
    );
    let slowest = answered.iter().map(|(took, _)| *took).max().unwrap();
    assert!(
        slowest < PROMPTLY,
        "a fresh client waited {slowest:?} for its answer"
    );

    let stats = wait_for_stats(&handle, "every client's close is served", |s| {
        s.completed == 1 + answered.len() as u64
    });
    assert_eq!(stats.timeouts.deadline, 1, "{stats:#?}");
    assert_eq!(stats.timeouts.idle, 0, "{stats:#?}");
    let (report, stats) = util::stop(handle);
    assert_eq!((report.forced, report.dropped), (0, 0), "{report:#?}");
    assert_eq!(stats.handler_errors, 0, "{stats:#?}");
    assert_accounted(&stats);
}

// ---------------------------------------------------------------------------
// 5. Shutdown with parked connections
// ---------------------------------------------------------------------------

#[test]
fn shutdown_gives_parked_connections_a_last_turn_and_a_gentle_close() {
    let _process = share_process();
    raise_fd_limit();
    const CLIENTS: usize = 50;
    let (echo, events) = Echo::new();
    let handle = serve_turns(
        Server::builder()
            .workers(2)
            .shutdown_timeout(Duration::from_secs(10)),
        echo,
    );
    let addr = tcp_addr(handle.local_addr());

    // A third of the clients say nothing, a third send half a line, and a
    // third a whole line (answered) and then half a line.
    let mut clients = Vec::new();
    let mut halves: HashMap<SocketAddr, Vec<u8>> = HashMap::new();
    for i in 0..CLIENTS {
        let mut stream = client(addr);
        let me = stream.local_addr().unwrap();
        let half = format!("half a line from client {i}").into_bytes();
        match i % 3 {
            0 => {}
            1 => stream.write_all(&half).unwrap(),
            _ => {
                let line = format!("a line from client {i}");
                stream.write_all(format!("{line}\n").as_bytes()).unwrap();
                stream.write_all(&half).unwrap();
                assert_eq!(read_line(&mut stream), line);
            }
        }
        if i % 3 != 0 {
            halves.insert(me, half);
        }
        clients.push((me, stream));
    }
    // The server has every half line in a buffer, and every connection is
    // parked.
    let mut waiting: HashSet<SocketAddr> = halves.keys().copied().collect();
    while !waiting.is_empty() {
        let event = next_event(&events, "a turn that buffered a half line", |e| {
            matches!(e, Event::Turn { .. })
        });
        if let Event::Turn { peer, buffered, .. } = event {
            if halves.get(&peer).is_some_and(|half| half.len() == buffered) {
                waiting.remove(&peer);
            }
        }
    }
    wait_for_stats(&handle, "every client is parked", |s| {
        s.parked == CLIENTS && s.busy_workers == 0
    });

    // Shut down while the clients read: the gentle close waits for each
    // client's end of stream, so the shutdown ends once they have closed.
    let (report_tx, report) = crossbeam_channel::bounded(1);
    let stopper = thread::spawn(move || {
        let _ = report_tx.send(handle.shutdown());
    });
    for (i, (_, mut stream)) in clients.into_iter().enumerate() {
        let rest = util::try_read_to_clean_end(&mut stream)
            .unwrap_or_else(|why| panic!("client {i}: {why}"));
        assert_eq!(String::from_utf8_lossy(&rest), "bye\n", "client {i}");
    }
    let report = report
        .recv_timeout(TIMEOUT)
        .expect("the shutdown ends once the clients have closed")
        .expect("the server stops cleanly");
    stopper.join().unwrap();
    assert_eq!(
        (report.forced, report.dropped, report.stuck_workers),
        (0, 0, 0),
        "{report:#?}"
    );
    assert_eq!(report.drained, CLIENTS as u64, "{report:#?}");
    let stats = report.stats;
    assert_eq!(stats.parked, 0, "{stats:#?}");
    assert_eq!(stats.completed, CLIENTS as u64, "{stats:#?}");
    assert_eq!(stats.handler_errors, 0, "{stats:#?}");
    assert_accounted(&stats);
    // Each close was for the shutdown, with the half line still there.
    let mut closed = 0;
    for event in events.try_iter() {
        if let Event::Closed {
            peer,
            reason,
            buffered,
        } = event
        {
            closed += 1;
            assert_eq!(reason, CloseReason::Shutdown, "{peer}");
            let half = halves.get(&peer).map_or(&[][..], Vec::as_slice);
            assert_eq!(
                String::from_utf8_lossy(&buffered),
                String::from_utf8_lossy(half),
                "{peer}"
            );
        }
    }
    assert_eq!(closed, CLIENTS);
}

// ---------------------------------------------------------------------------
// 6. No descriptor leaked
// ---------------------------------------------------------------------------

/// The request timeout of the workload in the descriptor test.
const SHORT_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

#[cfg(target_os = "linux")]
#[test]
fn no_descriptor_is_leaked() {
    // Other tests of this binary open descriptors in this process: this
    // one runs when none of them does.
    let _alone = run_alone();
    raise_fd_limit();
    let before = open_descriptors();

    // Parked connections, answers, a timeout, clients leaving, a shutdown.
    let (echo, events) = Echo::with_request_timeout(Some(SHORT_REQUEST_TIMEOUT));
    let handle = serve_turns(Server::builder().workers(2), echo);
    let addr = tcp_addr(handle.local_addr());
    let mut clients: Vec<TcpStream> = (0..40).map(|_| client(addr)).collect();
    wait_for_stats(&handle, "every client is parked", |s| s.parked == 40);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(exchange(client, &format!("line {i}")), format!("line {i}"));
    }
    let mut late = client(addr);
    late.write_all(b"never finished").unwrap();
    assert!(read_to_clean_end(&mut late).is_empty());
    drop(late);
    next_event(&events, "the late client's close", |e| {
        matches!(
            e,
            Event::Closed {
                reason: CloseReason::TimedOut(Timeout::Deadline),
                ..
            }
        )
    });
    clients.truncate(20);
    wait_for_stats(&handle, "the clients that left are closed", |s| {
        s.completed == 21
    });
    let stopper = thread::spawn(move || util::stop(handle));
    for (i, mut client) in clients.into_iter().enumerate() {
        let rest = util::try_read_to_clean_end(&mut client)
            .unwrap_or_else(|why| panic!("client {i}: {why}"));
        assert_eq!(String::from_utf8_lossy(&rest), "bye\n", "client {i}");
    }
    let (report, _) = stopper.join().unwrap();
    assert_eq!(report.forced, 0, "{report:#?}");
    drop(events);

    // A broadcast that drops a client for its full outbox.
    broadcast_with_one_that_never_reads(20);

    let after = open_descriptors();
    assert_eq!(
        after.len(),
        before.len(),
        "descriptors open before the servers: {before:?}, after they stopped: {after:?}"
    );
}

/// This process's open file descriptors, with what each refers to (a
/// socket, a pipe, an eventfd...), from `/proc/self/fd`. The listing's own
/// descriptor is in it each time.
#[cfg(target_os = "linux")]
fn open_descriptors() -> Vec<(String, String)> {
    let mut fds: Vec<(String, String)> = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "?".to_string());
            Some((entry.file_name().to_string_lossy().into_owned(), target))
        })
        .collect();
    fds.sort();
    fds
}

/// Keeps a `Peer` of every connection it ever opened, and never lets go:
/// the careless room.
struct Hoarder {
    peers: std::sync::Arc<std::sync::Mutex<Vec<frontdesk::Peer>>>,
}

impl frontdesk::TurnHandler for Hoarder {
    type State = ();

    fn open(&self, turn: &mut frontdesk::Turn<'_>) -> io::Result<()> {
        self.peers.lock().unwrap().push(turn.peer());
        Ok(())
    }

    fn ready(&self, _: &mut (), turn: &mut frontdesk::Turn<'_>) -> io::Result<frontdesk::Next> {
        let mut buf = [0u8; 64];
        loop {
            match io::Read::read(turn, &mut buf) {
                Ok(0) => return Ok(frontdesk::Next::Close),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(frontdesk::Next::Park)
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A turn-mode server of two workers whose handler keeps every
/// connection's `Peer`, with `count` clients connected and parked.
fn hoarding_server(count: usize) -> (ServerHandle, Arc<Mutex<Vec<Peer>>>, Vec<TcpStream>) {
    let peers = Arc::default();
    let hoarder = Hoarder {
        peers: Arc::clone(&peers),
    };
    let handle = serve_turns(Server::builder().workers(2), hoarder);
    let addr = tcp_addr(handle.local_addr());
    let clients: Vec<TcpStream> = (0..count).map(|_| client(addr)).collect();
    wait_for_stats(&handle, "every client is parked", |s| s.parked == count);
    (handle, peers, clients)
}

/// `Peer`s kept past the server's shutdown keep its engine (its readiness
/// sets and signals, as the `Peer` docs say), and nothing else: once they
/// are dropped, the process has the descriptors it had before the server
/// started. No cycle keeps any of it alive.
#[cfg(target_os = "linux")]
#[test]
fn peers_kept_past_the_shutdown_release_the_engine_when_dropped() {
    // Other tests of this binary open descriptors in this process: this
    // one runs when none of them does.
    let _alone = run_alone();
    let before = open_descriptors();
    let (handle, peers, clients) = hoarding_server(5);
    let report = handle.shutdown().unwrap();
    assert_eq!(report.stats.completed, 5);
    drop(clients);
    let kept = peers.lock().unwrap().len();
    assert_eq!(kept, 5);
    assert!(peers.lock().unwrap().iter().all(frontdesk::Peer::is_closed));
    assert!(
        open_descriptors().len() > before.len(),
        "the kept peers keep the engine's descriptors"
    );
    peers.lock().unwrap().clear();
    let after = open_descriptors();
    assert_eq!(after, before, "descriptors left once the peers are gone");
}

#[cfg(target_os = "linux")]
#[test]
fn a_peer_kept_after_its_connection_ended_holds_no_descriptor() {
    // Other tests of this binary open descriptors in this process: this
    // one runs when none of them does.
    let _alone = run_alone();
    let (handle, peers, clients) = hoarding_server(20);
    let before = open_descriptors();
    drop(clients);
    wait_for_stats(&handle, "every connection ended", |s| {
        s.completed == 20 && s.lingering == 0
    });
    // The 20 peers are still kept, all closed, and their sockets are gone:
    // 20 client and 20 server descriptors fewer.
    let peers = peers.lock().unwrap();
    assert_eq!(peers.len(), 20);
    assert!(peers.iter().all(frontdesk::Peer::is_closed));
    let after = open_descriptors();
    assert_eq!(
        after.len() + 40,
        before.len(),
        "before: {before:?}\nafter: {after:?}"
    );
    drop(peers);
    handle.shutdown().unwrap();
}
