//! Findings of the review of the edge-triggered turn engine (each
//! connection registered once, `EPOLLET`, the connection keeping the news
//! of its input): each test states what the engine must do, and failed on
//! the engine as first written.
//!
//! 1. A connection that keeps its worker (`Next::Stay`) before its first
//!    park, when it is not yet in the readiness set, reads the input that
//!    `Stay`'s wait found: no turn may be told "nothing waits" while the
//!    socket holds bytes no report will ever tell of.
//! 2. In a shutdown, a parked connection whose handler leaves the news of
//!    its input unanswered, with the socket empty, is closed once quiet,
//!    not given turn after turn until the drain deadline forces it.
//! 3. A connection whose client sends all along, so that input waits after
//!    every turn and the worker goes on with it without parking, still
//!    ends at its deadline (`Turn::set_deadline`).
//!
//! Conventions as in the other tests: servers bind `127.0.0.1:0`, clients
//! have read and write timeouts, every wait is bounded and none is a sleep.
#![cfg(unix)]

mod util;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use frontdesk::{CloseReason, Next, Server, Timeout, Turn, TurnHandler};

use util::{assert_accounted, client, read_line, send_line, tcp_addr, LOCALHOST, TIMEOUT};

// ---------------------------------------------------------------------------
// 1. `Next::Stay` before the first park
// ---------------------------------------------------------------------------

/// Echoes what it reads and keeps its worker (`Next::Stay`). In its first
/// turn, once it has read the first line, it tells the test and waits
/// (bounded) until the test has sent the second, so that the second is in
/// the socket when `Stay` looks for input: before the connection has ever
/// parked, so before it is in the readiness set.
struct StayEcho {
    first_read: Sender<()>,
    second_sent: Receiver<()>,
    turns: Arc<AtomicUsize>,
}

impl TurnHandler for StayEcho {
    type State = bool;

    fn open(&self, _: &mut Turn<'_>) -> io::Result<bool> {
        Ok(true)
    }

    fn ready(&self, first: &mut bool, turn: &mut Turn<'_>) -> io::Result<Next> {
        self.turns.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 512];
        loop {
            match turn.read(&mut buf) {
                Ok(0) => return Ok(Next::Close),
                Ok(n) => {
                    turn.send(buf[..n].to_vec())?;
                    if std::mem::take(first) {
                        let _ = self.first_read.send(());
                        // Bounded: the test sends at once.
                        let _ = self.second_sent.recv_timeout(TIMEOUT);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(Next::Stay),
                Err(error) => return Err(error),
            }
        }
    }
}

#[test]
fn stay_before_the_first_park_reads_what_its_wait_found() {
    let (first_read, first_read_rx) = crossbeam_channel::bounded(1);
    let (second_sent, second_sent_rx) = crossbeam_channel::bounded(1);
    let turns = Arc::new(AtomicUsize::new(0));
    let handle = Server::builder()
        .workers(2)
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(StayEcho {
            first_read,
            second_sent: second_sent_rx,
            turns: Arc::clone(&turns),
        })
        .unwrap();
    let mut stream = client(tcp_addr(handle.local_addr()));
    send_line(&mut stream, "first");
    first_read_rx
        .recv_timeout(TIMEOUT)
        .expect("the first turn reads the first line");
    send_line(&mut stream, "second");
    second_sent.send(()).unwrap();
    assert_eq!(read_line(&mut stream), "first");
    // The engine as first written told every read of the staying turn
    // "nothing waits" (the news said the socket was empty, and no report
    // could come before the first park), while `Stay`'s wait found input
    // at once: the worker spun, and this line never came back.
    let second = {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_line(&mut stream)))
    };
    drop(stream);
    let shutdown = thread::spawn(move || handle.shutdown());
    let report = shutdown.join().unwrap().expect("the server stops");
    assert_eq!(
        second.ok().as_deref(),
        Some("second"),
        "the second line was not echoed; turns run: {}",
        turns.load(Ordering::Relaxed)
    );
    assert_accounted(&report.stats);
}

// ---------------------------------------------------------------------------
// 2. The drain and news the handler leaves unanswered
// ---------------------------------------------------------------------------

/// Reads one 4-byte greeting (a read that fills its buffer, so it cannot
/// show the socket empty), then never reads again: a push-only protocol.
/// Counts its turns.
struct GreetingOnly {
    greeted: Sender<()>,
    turns: Arc<AtomicUsize>,
}

impl TurnHandler for GreetingOnly {
    type State = bool;

    fn open(&self, _: &mut Turn<'_>) -> io::Result<bool> {
        Ok(false)
    }

    fn ready(&self, greeted: &mut bool, turn: &mut Turn<'_>) -> io::Result<Next> {
        self.turns.fetch_add(1, Ordering::Relaxed);
        if !*greeted {
            let mut hello = [0u8; 4];
            match turn.read(&mut hello) {
                Ok(4) => {
                    *greeted = true;
                    turn.send("ok\n")?;
                    let _ = self.greeted.send(());
                }
                Ok(0) => return Ok(Next::Close),
                Ok(_) => return Err(io::Error::other("a short greeting")),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok(Next::Park)
    }
}

#[test]
fn the_drain_closes_a_quiet_connection_whose_news_the_handler_left() {
    let (greeted, greeted_rx) = crossbeam_channel::bounded(1);
    let turns = Arc::new(AtomicUsize::new(0));
    let handle = Server::builder()
        .workers(1)
        .drain_quiet_time(Duration::from_millis(50))
        // Far longer than a quiet close takes: reaching it is the failure.
        .shutdown_timeout(Duration::from_secs(5))
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(GreetingOnly {
            greeted,
            turns: Arc::clone(&turns),
        })
        .unwrap();
    let mut stream = client(tcp_addr(handle.local_addr()));
    stream.write_all(b"helo").unwrap();
    greeted_rx
        .recv_timeout(TIMEOUT)
        .expect("the greeting is read");
    assert_eq!(read_line(&mut stream), "ok");
    let report = handle.shutdown().expect("the server stops");
    let turns = turns.load(Ordering::Relaxed);
    assert_eq!(
        report.forced, 0,
        "forced at the drain deadline: {report:#?}"
    );
    // The greeting's turn, perhaps one more for its news, the shutdown's
    // last `ready`: a handful, not a spin.
    assert!(turns < 10, "{turns} turns for one greeting");
    assert_accounted(&report.stats);
}

// ---------------------------------------------------------------------------
// 3. The deadline of a connection whose input never stops
// ---------------------------------------------------------------------------

/// Sets a deadline in `open`, then swallows one byte a turn and parks:
/// with a client that sends all along (far faster than a byte a turn),
/// input waits after every turn. Tells the test why the connection closed.
struct SwallowAndPark {
    deadline: Duration,
    closed: Sender<CloseReason>,
}

impl TurnHandler for SwallowAndPark {
    type State = ();

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<()> {
        turn.set_deadline(Instant::now() + self.deadline);
        Ok(())
    }

    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        let mut byte = [0u8; 1];
        match turn.read(&mut byte) {
            Ok(0) => Ok(Next::Close),
            Ok(_) => Ok(Next::Park),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(Next::Park),
            Err(error) => Err(error),
        }
    }

    fn close(&self, _: (), _: &mut Turn<'_>, reason: CloseReason) {
        let _ = self.closed.send(reason);
    }
}

#[test]
fn the_deadline_ends_a_connection_whose_input_never_stops() {
    let (closed, closed_rx) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(2)
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(SwallowAndPark {
            deadline: Duration::from_millis(300),
            closed,
        })
        .unwrap();
    let mut stream = client(tcp_addr(handle.local_addr()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let start = Instant::now();
            let chunk = [b'x'; 8192];
            // Until the connection ends, or for `TIMEOUT` at most.
            while !stop.load(Ordering::Relaxed) && start.elapsed() < TIMEOUT {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    let reason = closed_rx.recv_timeout(TIMEOUT / 2);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let report = handle.shutdown().expect("the server stops");
    assert_eq!(reason, Ok(CloseReason::TimedOut(Timeout::Deadline)));
    assert_accounted(&report.stats);
}
