//! Findings of the review of the turn engine whose idle workers wait in
//! the readiness set themselves (no poller thread between the set and the
//! workers): each test states what the engine must do, and failed on the
//! engine as first written.
//!
//! 1. A busy connection whose input never runs out does not keep the only
//!    worker from the other connections: after its turns in a row it lets
//!    a parked connection whose input came meanwhile go first, though no
//!    idle worker waits in the readiness set to report it.
//! 2. The same for a connection that keeps its worker with `Next::Stay`.
//!
//! Conventions as in the other tests: servers bind `127.0.0.1:0`, clients
//! have read and write timeouts, every wait is bounded and none is a sleep.
#![cfg(unix)]

mod util;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use frontdesk::{Addr, Next, Server, Turn, TurnHandler};

use util::{assert_accounted, client, read_line, send_line, tcp_addr, LOCALHOST, TIMEOUT};

// ---------------------------------------------------------------------------
// 1, 2. A busy connection and a parked one, on one worker
// ---------------------------------------------------------------------------

/// Reads one byte a turn: `?` is answered with `!`, anything else is
/// swallowed. With a client that sends all along (far faster than a byte a
/// turn), input waits after every turn. A turn that finds nothing tells
/// the test whose it was (the client's address), then parks. Returns
/// `Next::Stay` after a byte when `stay`, else `Next::Park`; closes the
/// connection once `done` (rather than read a flood's backlog a byte a
/// turn until the drain deadline).
struct Nibble {
    stay: bool,
    found_nothing: Sender<Addr>,
    done: Arc<AtomicBool>,
}

impl TurnHandler for Nibble {
    type State = ();

    fn open(&self, _: &mut Turn<'_>) -> io::Result<()> {
        Ok(())
    }

    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        if self.done.load(Ordering::Relaxed) {
            return Ok(Next::Close);
        }
        let mut byte = [0u8; 1];
        match turn.read(&mut byte) {
            Ok(0) => Ok(Next::Close),
            Ok(_) => {
                if byte[0] == b'?' {
                    turn.send("!\n")?;
                }
                Ok(if self.stay { Next::Stay } else { Next::Park })
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                let _ = self.found_nothing.send(turn.peer_addr());
                Ok(Next::Park)
            }
            Err(error) => Err(error),
        }
    }
}

/// A client that sends bytes all along, until told to stop or for twice
/// `TIMEOUT` at most (longer than the test waits for anything). Returns
/// once the server has a backlog of it (64 KiB written: far more than the
/// turns of a byte each take while the test waits for anything, and less
/// than loopback's buffers hold), so that it has input at every park.
fn flood(addr: SocketAddr) -> (Arc<AtomicBool>, thread::JoinHandle<()>) {
    let mut stream = client(addr);
    let stop = Arc::new(AtomicBool::new(false));
    let (backlog, backlog_rx) = crossbeam_channel::bounded(1);
    let writer = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let start = Instant::now();
            let chunk = [b'x'; 1024];
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < 2 * TIMEOUT {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                written += chunk.len();
                if written == 64 << 10 {
                    let _ = backlog.send(());
                }
            }
        })
    };
    backlog_rx
        .recv_timeout(TIMEOUT)
        .expect("the flood's backlog is written");
    (stop, writer)
}

/// One worker; a flooding client, then a second client that parks (its
/// first turn finds nothing) and then asks `?`: its answer must come while
/// the flood goes on.
fn a_parked_client_is_answered_beside_a_flood(stay: bool) {
    let (found_nothing, found_nothing_rx) = crossbeam_channel::unbounded();
    let done = Arc::new(AtomicBool::new(false));
    let handle = Server::builder()
        .workers(1)
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(Nibble {
            stay,
            found_nothing,
            done: Arc::clone(&done),
        })
        .unwrap();
    let addr = tcp_addr(handle.local_addr());
    let (stop, writer) = flood(addr);
    let mut quiet = client(addr);
    let quiet_addr = Addr::Tcp(quiet.local_addr().unwrap());
    // Its first turn (it came through the queue, which the flood's worker
    // looks at) finds nothing: it parks, into the readiness set.
    let start = Instant::now();
    loop {
        let left = TIMEOUT.saturating_sub(start.elapsed());
        match found_nothing_rx.recv_timeout(left) {
            Ok(addr) if addr == quiet_addr => break,
            Ok(_) => {}
            Err(_) => panic!("the second client's first turn never came"),
        }
    }
    quiet.write_all(b"?").unwrap();
    // The engine as first written never answered: the one worker went
    // from the flood's turns to the flood's requeued turn and back, and
    // never looked at the readiness set, where the report of `?` waited.
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_line(&mut quiet)));
    // The flood's next turn closes it, and its writer stops.
    done.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(quiet);
    let report = handle.shutdown().expect("the server stops");
    assert_eq!(
        answer.ok().as_deref(),
        Some("!"),
        "the parked client was not answered while the other one sent"
    );
    assert_eq!(report.forced, 0, "{report:#?}");
    assert_accounted(&report.stats);
}

#[test]
fn a_busy_connection_lets_a_parked_one_go_first() {
    a_parked_client_is_answered_beside_a_flood(false);
}

#[test]
fn a_staying_connection_lets_a_parked_one_go_first() {
    a_parked_client_is_answered_beside_a_flood(true);
}

// ---------------------------------------------------------------------------
// 3. An outbox while every worker is in a turn
// ---------------------------------------------------------------------------

/// How much `big` sends: more than loopback's socket buffers hold, so that
/// the rest waits in the outbox for the client to read.
const BIG: usize = 16 << 20;

/// Line by line: `big` is answered with [`BIG`] bytes, `block` holds the
/// worker (it tells the test, then waits until the test lets it go).
struct BigOrBlock {
    sent_big: Sender<()>,
    blocking: Sender<()>,
    let_go: Receiver<()>,
}

impl TurnHandler for BigOrBlock {
    type State = Vec<u8>;

    fn open(&self, _: &mut Turn<'_>) -> io::Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn ready(&self, line: &mut Vec<u8>, turn: &mut Turn<'_>) -> io::Result<Next> {
        let mut byte = [0u8; 1];
        loop {
            match turn.read(&mut byte) {
                Ok(0) => return Ok(Next::Close),
                Ok(_) if byte[0] == b'\n' => match std::mem::take(line).as_slice() {
                    b"big" => {
                        turn.send(vec![b'b'; BIG])?;
                        let _ = self.sent_big.send(());
                    }
                    b"block" => {
                        let _ = self.blocking.send(());
                        // Bounded: the test lets it go once it has read.
                        let _ = self.let_go.recv_timeout(2 * TIMEOUT);
                    }
                    other => return Err(io::Error::other(format!("{other:?}?"))),
                },
                Ok(_) => line.push(byte[0]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(Next::Park),
                Err(error) => return Err(error),
            }
        }
    }
}

/// One worker, held in a turn; a parked connection with most of a large
/// reply in its outbox, whose client reads: the reply reaches it. With a
/// write timeout far shorter than the wait, it is not closed for it
/// either: its client takes what the socket is given.
#[test]
fn an_outbox_is_written_while_every_worker_is_in_a_turn() {
    let (sent_big, sent_big_rx) = crossbeam_channel::bounded(1);
    let (blocking, blocking_rx) = crossbeam_channel::bounded(1);
    let (let_go, let_go_rx) = crossbeam_channel::bounded(1);
    let handle = Server::builder()
        .workers(1)
        .write_timeout(Duration::from_millis(200))
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(BigOrBlock {
            sent_big,
            blocking,
            let_go: let_go_rx,
        })
        .unwrap();
    let addr = tcp_addr(handle.local_addr());
    let mut reader = client(addr);
    send_line(&mut reader, "big");
    sent_big_rx
        .recv_timeout(TIMEOUT)
        .expect("`big` is answered");
    let mut holder = client(addr);
    send_line(&mut holder, "block");
    blocking_rx
        .recv_timeout(TIMEOUT)
        .expect("the worker is held");
    // The engine as first written wrote the rest of the outbox only from
    // an idle worker: none was, and the reader waited (then, past the
    // write timeout, its connection was closed as not reading).
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    let outcome = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Err("end of stream".to_string()),
            Ok(n) => {
                got += n;
                if got == BIG {
                    break Ok(());
                }
            }
            Err(error) => break Err(error.to_string()),
        }
    };
    let_go.send(()).unwrap();
    drop((reader, holder));
    let report = handle.shutdown().expect("the server stops");
    assert_eq!(outcome, Ok(()), "{got} of {BIG} bytes came");
    assert_eq!(report.stats.timeouts.write, 0, "{report:#?}");
    assert_accounted(&report.stats);
}
