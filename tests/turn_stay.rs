//! A connection that keeps its worker (`Next::Stay`) while its client
//! keeps sending still ends when asked to (`Peer::close`) and at its
//! deadline, as a parked one does.

mod util;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use frontdesk::{CloseReason, Next, Peer, Server, Timeout, Turn, TurnHandler};

use util::{assert_accounted, client, tcp_addr, LOCALHOST, TIMEOUT};

/// Swallows whatever arrives and asks to keep its worker. Hands the test a
/// `Peer` when the connection opens, and the reason when it closes.
struct Swallow {
    deadline: Option<Duration>,
    opened: Sender<Peer>,
    closed: Sender<CloseReason>,
}

impl TurnHandler for Swallow {
    type State = ();

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<()> {
        if let Some(after) = self.deadline {
            turn.set_deadline(Instant::now() + after);
        }
        let _ = self.opened.send(turn.peer());
        Ok(())
    }

    /// One small read a turn: with a client that sends all along, the
    /// socket is never empty, so a `Stay` finds input at once every time.
    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        let mut buf = [0u8; 512];
        match turn.read(&mut buf) {
            Ok(0) => Ok(Next::Close),
            Ok(_) => Ok(Next::Stay),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(Next::Stay),
            Err(error) => Err(error),
        }
    }

    fn close(&self, _: (), _: &mut Turn<'_>, reason: CloseReason) {
        let _ = self.closed.send(reason);
    }
}

/// Serves [`Swallow`] and connects a client that sends as fast as the
/// server reads, so that the connection always has input when a `Stay`
/// looks for it; returns the server, the `Peer`, the close reasons
/// and the client's writer (which stops once the connection ends, or
/// after `TIMEOUT`).
fn staying_client(
    deadline: Option<Duration>,
) -> (
    frontdesk::ServerHandle,
    Peer,
    crossbeam_channel::Receiver<CloseReason>,
    thread::JoinHandle<()>,
    Arc<AtomicBool>,
) {
    let (opened, opened_rx) = crossbeam_channel::unbounded();
    let (closed, closed_rx) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(2)
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(Swallow {
            deadline,
            opened,
            closed,
        })
        .unwrap();
    let mut stream = client(tcp_addr(handle.local_addr()));
    let peer = opened_rx
        .recv_timeout(TIMEOUT)
        .expect("the connection opens");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let start = Instant::now();
            let chunk = [b'x'; 8192];
            while !stop.load(Ordering::Relaxed) && start.elapsed() < TIMEOUT {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
            // Whatever the server sent, then its end.
            let _ = stream.read_to_end(&mut Vec::new());
        })
    };
    (handle, peer, closed_rx, writer, stop)
}

#[test]
fn peer_close_ends_a_connection_that_stays() {
    let (handle, peer, closed, writer, stop) = staying_client(None);
    peer.close();
    // Well before the writer gives up (TIMEOUT): it sends all along.
    let reason = closed.recv_timeout(TIMEOUT / 2);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(reason, Ok(CloseReason::Closed));
    writer.join().unwrap();
    let report = handle.shutdown().unwrap();
    assert_accounted(&report.stats);
}

#[test]
fn the_deadline_ends_a_connection_that_stays() {
    let (handle, _peer, closed, writer, stop) = staying_client(Some(Duration::from_millis(300)));
    let reason = closed.recv_timeout(TIMEOUT / 2);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(reason, Ok(CloseReason::TimedOut(Timeout::Deadline)));
    writer.join().unwrap();
    let report = handle.shutdown().unwrap();
    assert_eq!(report.stats.timeouts.deadline, 1, "{report:#?}");
    assert_accounted(&report.stats);
}
