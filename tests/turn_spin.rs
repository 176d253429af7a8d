//! No turn is given that its handler cannot use, and no limit is lost on
//! the way: a handler that keeps its worker (`Next::Stay`) with a client
//! that reads late, one that parks without taking the lines `Lines` kept,
//! and a `Peer` that sends to a client that never reads.
//!
//! A spin shows as hundreds of thousands of turns a second; the bounds
//! here are far below that and far above what a working engine gives.
//! The waits that let a spin show are the scenario (a client that reads
//! late, a handler busy elsewhere), not synchronisation.

mod util;

use std::io::{self, BufRead, BufReader, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use frontdesk::{CloseReason, LineError, Lines, Next, Peer, Server, Timeout, Turn, TurnHandler};

use util::{assert_accounted, client, tcp_addr, LOCALHOST, TIMEOUT};

/// How long each scenario lets a spin run before it counts the turns.
const WINDOW: Duration = Duration::from_millis(500);

/// The obvious line loop, keeping its worker between turns.
struct StayingAnswer {
    turns: Arc<AtomicU64>,
    backed_up: Sender<()>,
}

impl TurnHandler for StayingAnswer {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        Ok(Lines::new(turn, 1024))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        self.turns.fetch_add(1, Ordering::Relaxed);
        loop {
            match lines.next_line_str() {
                Ok(Some(line)) => turn.send(format!("{}\n", line.repeat(4)))?,
                Ok(None) => break,
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
        if turn.outbox_len() > turn.outbox_room() {
            let _ = self.backed_up.try_send(());
        }
        Ok(Next::Stay)
    }
}

#[test]
fn a_staying_connection_whose_client_reads_late_does_not_spin_and_loses_nothing() {
    const LINES: usize = 200_000;
    let turns = Arc::new(AtomicU64::new(0));
    let (backed_up, backed_up_rx) = crossbeam_channel::bounded(1);
    let handle = Server::builder()
        .workers(2)
        .outbox_limit(16 * 1024)
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(StayingAnswer {
            turns: Arc::clone(&turns),
            backed_up,
        })
        .unwrap();
    let stream = client(tcp_addr(handle.local_addr()));
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        thread::spawn(move || {
            let requests: String = (0..LINES).map(|i| format!("line-{i:08}\n")).collect();
            stream.write_all(requests.as_bytes())
        })
    };
    backed_up_rx
        .recv_timeout(TIMEOUT)
        .expect("the unread replies back the connection up");
    let before = turns.load(Ordering::Relaxed);
    thread::sleep(WINDOW);
    let during = turns.load(Ordering::Relaxed) - before;
    assert!(
        during < 1_000,
        "{during} turns in {WINDOW:?} of a backed-up Stay"
    );

    let mut replies = BufReader::new(&stream);
    let mut reply = String::new();
    for i in 0..LINES {
        reply.clear();
        replies.read_line(&mut reply).unwrap();
        assert_eq!(reply, format!("{}\n", format!("line-{i:08}").repeat(4)));
    }
    writer.join().unwrap().unwrap();
    drop(replies);
    drop(stream);
    let report = handle.shutdown().unwrap();
    assert_eq!(report.stats.handler_errors, 0, "{report:#?}");
    assert_eq!(report.stats.timeouts.write, 0, "{report:#?}");
    assert_accounted(&report.stats);
}

/// Takes one line, then is busy elsewhere for a while and takes no other:
/// it parks without asking `Lines` for the line it keeps.
struct OneAtATime {
    turns: Arc<AtomicU64>,
    started: Sender<()>,
}

struct Busy {
    lines: Lines,
    until: Option<Instant>,
}

impl TurnHandler for OneAtATime {
    type State = Busy;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Busy> {
        Ok(Busy {
            lines: Lines::new(turn, 1024),
            until: None,
        })
    }

    fn ready(&self, busy: &mut Busy, turn: &mut Turn<'_>) -> io::Result<Next> {
        self.turns.fetch_add(1, Ordering::Relaxed);
        if busy.until.is_some_and(|until| Instant::now() < until) {
            return Ok(Next::Park);
        }
        if let Some(line) = busy.lines.next_line_str()? {
            turn.send(format!("started {line}\n"))?;
            busy.until = Some(Instant::now() + 2 * TIMEOUT);
            let _ = self.started.send(());
        }
        Ok(Next::Park)
    }
}

#[test]
fn lines_a_handler_leaves_kept_wake_it_once_not_over_and_over() {
    let turns = Arc::new(AtomicU64::new(0));
    let (started, started_rx) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(2)
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(OneAtATime {
            turns: Arc::clone(&turns),
            started,
        })
        .unwrap();
    let mut stream = client(tcp_addr(handle.local_addr()));
    stream.write_all(b"a\nb\n").unwrap();
    started_rx
        .recv_timeout(TIMEOUT)
        .expect("the first line starts");
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).unwrap();
    assert_eq!(reply, "started a\n");
    let before = turns.load(Ordering::Relaxed);
    thread::sleep(WINDOW);
    let during = turns.load(Ordering::Relaxed) - before;
    assert!(
        during <= 2,
        "{during} turns in {WINDOW:?} for a line the handler does not take yet"
    );
    // The client stays until the server has stopped: an end of stream it
    // sent now would be input the busy handler does not read, which gives
    // it turn after turn (see `TurnHandler`'s docs).
    let report = handle.shutdown().unwrap();
    assert_accounted(&report.stats);
    drop(stream);
}

/// Reads nothing and says nothing; hands the test a `Peer` and its close.
struct Silent {
    opened: Sender<Peer>,
    closed: Sender<CloseReason>,
}

impl TurnHandler for Silent {
    type State = ();

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<()> {
        let _ = self.opened.send(turn.peer());
        Ok(())
    }

    fn ready(&self, _: &mut (), _: &mut Turn<'_>) -> io::Result<Next> {
        Ok(Next::Park)
    }

    fn close(&self, _: (), _: &mut Turn<'_>, reason: CloseReason) {
        let _ = self.closed.send(reason);
    }
}

#[test]
fn a_peer_send_to_a_client_that_never_reads_runs_into_the_write_timeout() {
    let (opened, opened_rx) = crossbeam_channel::unbounded();
    let (closed, closed_rx) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(2)
        // As a chat relay sets it: silent clients may stay.
        .idle_timeout(None)
        .write_timeout(Duration::from_millis(300))
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(Silent { opened, closed })
        .unwrap();
    let stream = client(tcp_addr(handle.local_addr()));
    let peer = opened_rx
        .recv_timeout(TIMEOUT)
        .expect("the connection opens");
    // Far more than the socket buffers hold; an empty outbox takes it.
    peer.send(vec![b'x'; 16 << 20]).unwrap();
    assert_eq!(
        closed_rx.recv_timeout(TIMEOUT),
        Ok(CloseReason::TimedOut(Timeout::Write))
    );
    drop(stream);
    let report = handle.shutdown().unwrap();
    assert_eq!(report.stats.timeouts.write, 1, "{report:#?}");
    assert_accounted(&report.stats);
}
