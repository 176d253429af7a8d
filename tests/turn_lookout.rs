//! The turn mode lets no more idle workers watch the readiness set than
//! there are CPUs; the others sleep. Turns that block (a handler waiting
//! for a database) must not leave the other connections unserved: the
//! poller's tick wakes a sleeping worker when nobody has come to watch
//! the set for a tick (`src/turn/lookout.rs`).

mod util;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use frontdesk::{Lines, Next, Server, ServerBuilder, ServerHandle, Turn, TurnHandler};

use util::{assert_accounted, client, exchange, send_line, stop, tcp_addr, LOCALHOST, TIMEOUT};

/// Echoes each line; `block` instead tells the test, then waits until the
/// test lets it go (or a minute passes, so that a failed test still ends).
struct Blocking {
    blocked: Sender<()>,
    release: Receiver<()>,
}

impl TurnHandler for Blocking {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        Ok(Lines::new(turn, 1024))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        while let Some(line) = lines.next_line_str().map_err(io::Error::other)? {
            if line == "block" {
                let _ = self.blocked.send(());
                let _ = self.release.recv_timeout(Duration::from_secs(60));
                turn.send("released\n")?;
            } else {
                let reply = format!("{line}\n");
                turn.send(reply)?;
            }
        }
        Ok(Next::Park)
    }
}

/// Serves [`Blocking`] with `builder`; returns the server, its address,
/// where the blocked turns say so, and how to let them go.
fn serve_blocking(builder: ServerBuilder) -> (ServerHandle, SocketAddr, Receiver<()>, Sender<()>) {
    let (blocked, blocked_rx) = crossbeam_channel::unbounded();
    let (release, release_rx) = crossbeam_channel::unbounded();
    let handle = builder
        .bind(LOCALHOST)
        .unwrap()
        .spawn_turns(Blocking {
            blocked,
            release: release_rx,
        })
        .unwrap();
    let addr = tcp_addr(handle.local_addr());
    (handle, addr, blocked_rx, release)
}

/// As many turns block as the process has CPUs, so that every worker that
/// may watch the set is stuck in one; a client that talks meanwhile is
/// still answered, by a worker that was asleep, long before they end.
#[test]
fn turns_that_block_every_watch_leave_the_others_served() {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let (handle, addr, blocked_rx, release) = serve_blocking(Server::builder().workers(cpus + 2));
    // Every client is accepted and served once before the blocking, so
    // that from now on no job goes through the queue: a send to the queue
    // while nobody watches would wake a sleeper, which would then watch,
    // and the probe below would be answered without the tick (so it was
    // on one CPU, where the acceptor ran while the only watcher was still
    // in its turn). Now only reports come, to the watchers: the workers
    // beyond the CPUs sleep, and only the tick wakes them.
    let mut blockers: Vec<_> = (0..cpus).map(|_| client(addr)).collect();
    for blocker in &mut blockers {
        assert_eq!(exchange(blocker, "hi"), "hi");
    }
    let mut probe = client(addr);
    assert_eq!(exchange(&mut probe, "hello"), "hello");
    for blocker in &mut blockers {
        send_line(blocker, "block");
    }
    for _ in 0..cpus {
        blocked_rx
            .recv_timeout(TIMEOUT)
            .expect("every blocking turn started");
    }
    // Every watcher is in a blocked turn: the probe's line waits in the
    // set until the tick wakes a sleeper. Without it, the answer would
    // come only after the release, a minute away: the read times out
    // after `TIMEOUT` and the test fails.
    assert_eq!(exchange(&mut probe, "still here?"), "still here?");
    for _ in 0..cpus {
        release.send(()).unwrap();
    }
    for blocker in &mut blockers {
        let mut reply = [0u8; 9];
        blocker.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"released\n");
    }
    drop((probe, blockers));
    let (_, stats) = stop(handle);
    assert_accounted(&stats);
}

/// A turn that never ends at the shutdown: the forced end leaves its
/// worker behind, and only that one. Every other worker, watching the set
/// or asleep, learns that the queue has closed (each that ends wakes the
/// next, a sleeper through its bed): the poller, whose tick would wake a
/// sleeper while the set is unwatched, has gone by then.
#[test]
fn the_shutdown_reaches_every_idle_worker_past_a_turn_that_never_ends() {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let (handle, addr, blocked_rx, release) = serve_blocking(
        Server::builder()
            .workers(cpus + 2)
            .shutdown_timeout(Duration::from_millis(100)),
    );
    let mut blocker = client(addr);
    assert_eq!(exchange(&mut blocker, "hi"), "hi");
    send_line(&mut blocker, "block");
    blocked_rx
        .recv_timeout(TIMEOUT)
        .expect("the blocking turn started");
    // The drain (100 ms), then the forced end's grace (1 s).
    let report = handle.shutdown().expect("the server stops");
    assert_eq!(report.stuck_workers, 1, "{report:?}");
    // Lets the worker left behind end.
    drop(release);
}
