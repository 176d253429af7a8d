//! `Turn::deadline` gives back what `Turn::set_deadline` set, though the
//! engine keeps it in 8 bytes (a `Moment`, not an `Instant`: issue #14
//! counts every byte of an idle connection): in the past, before the
//! engine's clock began, now, and a century ahead. One further than 292
//! years is kept as none: it could never come. And a deadline set before
//! the engine's clock began is past, and ends the connection at once.

mod util;

use std::io;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use frontdesk::{CloseReason, Next, Server, Timeout, Turn, TurnHandler};

use util::{assert_accounted, client, tcp_addr, LOCALHOST, TIMEOUT};

const YEAR: Duration = Duration::from_secs(60 * 60 * 24 * 365);

/// In `open`, sets each deadline it has in turn and reports what
/// `Turn::deadline` gives back; then keeps the last one, and reports how
/// the connection closes.
struct Deadlines {
    deadlines: Vec<Option<Instant>>,
    read_back: Sender<Vec<Option<Instant>>>,
    closed: Sender<CloseReason>,
}

impl TurnHandler for Deadlines {
    type State = ();

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<()> {
        let read_back = self
            .deadlines
            .iter()
            .map(|&deadline| {
                turn.set_deadline(deadline);
                turn.deadline()
            })
            .collect();
        let _ = self.read_back.send(read_back);
        Ok(())
    }

    /// Closes at the client's end of stream.
    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        util::turn_until_closed(turn)
    }

    fn close(&self, _: (), _: &mut Turn<'_>, reason: CloseReason) {
        let _ = self.closed.send(reason);
    }
}

/// Opens one connection to a [`Deadlines`] server; returns what the turn
/// read back, and the reason the connection closed for, if it did
/// within `wait` (else it ends with the client's end of stream).
fn run(
    deadlines: Vec<Option<Instant>>,
    wait: Duration,
) -> (Vec<Option<Instant>>, Option<CloseReason>) {
    let (read_back, read_back_rx) = crossbeam_channel::unbounded();
    let (closed, closed_rx) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(1)
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(Deadlines {
            deadlines,
            read_back,
            closed,
        })
        .unwrap();
    let client = client(tcp_addr(handle.local_addr()));
    let read_back = read_back_rx.recv_timeout(TIMEOUT).expect("open ran");
    let reason = closed_rx.recv_timeout(wait).ok();
    drop(client);
    if reason.is_none() {
        // Closed before the shutdown, so that the shutdown does not
        // race with the client's end of stream: that is not what this
        // file tests.
        let ended = closed_rx.recv_timeout(TIMEOUT);
        assert_eq!(ended, Ok(CloseReason::Done), "closed at the end of stream");
    }
    let report = handle.shutdown().unwrap();
    assert_accounted(&report.stats);
    (read_back, reason)
}

#[test]
fn a_deadline_reads_back_as_set() {
    let now = Instant::now();
    let mut deadlines = vec![
        Some(now),
        Some(now + Duration::from_nanos(1)),
        Some(now + 100 * YEAR),
        None,
    ];
    // Before the engine's clock began (when the server's first connection
    // came), where this system's clock goes back that far.
    deadlines.extend(now.checked_sub(Duration::from_secs(3600)).map(Some));
    // Kept, so that the connection does not end before the test looks.
    deadlines.push(None);
    let (read_back, _) = run(deadlines.clone(), Duration::ZERO);
    assert_eq!(read_back, deadlines);
}

#[test]
fn a_deadline_beyond_292_years_is_none() {
    // Where this system's clock goes that far at all.
    let Some(far) = Instant::now().checked_add(300 * YEAR) else {
        return;
    };
    let (read_back, _) = run(vec![Some(far)], Duration::ZERO);
    assert_eq!(read_back, vec![None]);
}

#[test]
fn a_deadline_from_before_the_engines_clock_ends_the_connection_at_once() {
    let Some(long_ago) = Instant::now().checked_sub(Duration::from_secs(3600)) else {
        return;
    };
    // At once, but on a loaded machine a turn and the timer may take a
    // while: the bound only keeps a bug from hanging the test.
    let (_, reason) = run(vec![Some(long_ago)], TIMEOUT);
    assert_eq!(reason, Some(CloseReason::TimedOut(Timeout::Deadline)));
}
