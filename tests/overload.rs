//! Overload: what happens to a client when every worker is busy and the
//! queue is full (`Overload::Block`, `Reject`, `Wait`), the `max_connections`
//! cap, `queue(0)`, and how each outcome is counted.

mod util;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use frontdesk::{Overload, RejectReason, Rejected, Server, ServerBuilder, ServerHandle, Stats};
use util::{
    assert_accounted, assert_closed, assert_silent, client, client_with_request, read_line, serve,
    tcp_addr, wait_until, Gate, TIMEOUT,
};

const BUSY: &str = "error: server busy";

/// A builder with `workers` workers and a queue of `queue`.
fn builder(workers: usize, queue: usize) -> ServerBuilder {
    Server::builder().workers(workers).queue(queue)
}

fn busy_hook(conn: &mut Rejected) -> io::Result<()> {
    conn.write_all(b"error: server busy\n")
}

/// A server whose workers are all held in their handlers by a gate and
/// whose queue is full. Each client sent one request line; the handler,
/// once let through the gate, answers it with the same line.
struct Full {
    handle: ServerHandle,
    addr: SocketAddr,
    gate: Arc<Gate>,
    /// Clients being served (held at the gate), then the queued ones.
    clients: Vec<(TcpStream, String)>,
}

impl Full {
    /// Starts a server from `builder` (which sets `workers` and `queue`),
    /// holds `active` clients in their handlers and then queues `queued`
    /// more, waiting until the stats show them.
    fn start(builder: ServerBuilder, active: usize, queued: usize) -> Full {
        let gate = Gate::new();
        let handle = serve(builder, gate.guard(util::answer_line));
        let addr = tcp_addr(handle.local_addr());
        let mut full = Full {
            handle,
            addr,
            gate,
            clients: Vec::new(),
        };
        // One at a time, so that each is taken by a worker before the next
        // arrives: with a short queue and `Reject`, a burst could be turned
        // away while the workers are still picking up the first ones.
        for i in 0..active {
            let line = format!("active {i}");
            let stream = client_with_request(full.addr, &line);
            full.clients.push((stream, line));
            full.gate.wait_entered(1);
        }
        full.connect(queued, "queued");
        full.wait_for_stats("the clients are held and queued", |s| {
            s.accepted == (active + queued) as u64 && s.busy_workers == active && s.queued == queued
        });
        full
    }

    fn connect(&mut self, n: usize, what: &str) {
        for i in 0..n {
            let line = format!("{what} {i}");
            self.clients
                .push((client_with_request(self.addr, &line), line));
        }
    }

    fn stats(&self) -> Stats {
        self.handle.stats()
    }

    fn wait_for_stats(&self, what: &str, cond: impl Fn(&Stats) -> bool) {
        util::wait_for_stats(&self.handle, what, cond);
    }

    /// Opens the gate, checks that every client held or queued gets its
    /// answer, stops the server and returns its final stats.
    fn finish(self) -> Stats {
        self.gate.open();
        for (mut stream, line) in self.clients {
            assert_eq!(read_line(&mut stream), line);
        }
        let (report, stats) = util::stop(self.handle);
        assert_eq!(report.forced + report.dropped, 0, "{report:?}");
        assert_accounted(&stats);
        stats
    }
}

#[test]
fn block_keeps_extra_clients_waiting_until_a_worker_frees() {
    let full = Full::start(builder(2, 2).overload(Overload::Block), 2, 2);
    // The first extra client is taken by the acceptor, which then waits for
    // room; the second waits in the kernel's backlog. Both sent a request
    // larger than one read, which must arrive whole.
    let big = |name: &str| format!("{name} {}", "x".repeat(8 * 1024));
    let mut extras: Vec<(TcpStream, String)> = ["extra 0", "extra 1"]
        .iter()
        .map(|name| (client_with_request(full.addr, &big(name)), big(name)))
        .collect();

    for (stream, _) in &mut extras {
        assert_silent(stream);
    }
    full.gate.assert_none_enters();
    assert_eq!(full.stats().rejected.total(), 0);

    // Free the workers: everyone is served, the extra clients last.
    full.gate.open();
    for (stream, line) in &mut extras {
        assert_eq!(read_line(stream), *line);
    }
    let stats = full.finish();
    assert_eq!(stats.accepted, 6);
    assert_eq!(stats.completed, 6);
    assert_eq!(stats.rejected.total(), 0);
}

#[test]
fn reject_sends_the_hook_bytes_and_closes() {
    let full = Full::start(
        builder(2, 2)
            .overload(Overload::Reject)
            .on_reject(busy_hook),
        2,
        2,
    );
    let mut extra = client(full.addr);
    assert_eq!(read_line(&mut extra), BUSY);
    assert_closed(&mut extra);
    assert_eq!(full.stats().rejected.overload, 1);

    let stats = full.finish();
    assert_eq!(stats.rejected.overload, 1);
    assert_eq!(stats.rejected.total(), 1);
    assert_eq!(stats.completed, 4);
}

#[test]
fn reject_reaches_a_client_that_already_sent_data() {
    // The client's request is still unread when the server closes; the
    // busy line must reach the client all the same (a careless close would
    // send a reset that can destroy it).
    const EXTRA: u64 = 5;
    let full = Full::start(
        builder(1, 1)
            .overload(Overload::Reject)
            .on_reject(busy_hook),
        1,
        1,
    );
    for i in 0..EXTRA {
        let mut extra = client_with_request(full.addr, &format!("request {i}"));
        assert_eq!(read_line(&mut extra), BUSY);
        assert_closed(&mut extra);
    }
    let stats = full.finish();
    assert_eq!(stats.rejected.overload, EXTRA);
}

#[test]
fn reject_without_a_hook_just_closes() {
    let full = Full::start(builder(1, 1).overload(Overload::Reject), 1, 1);
    let mut silent = client(full.addr);
    assert_closed(&mut silent);
    let mut talking = client_with_request(full.addr, "hello");
    assert_closed(&mut talking);
    let stats = full.finish();
    assert_eq!(stats.rejected.overload, 2);
}

#[test]
fn wait_rejects_after_the_wait_when_no_worker_frees() {
    const WAIT: Duration = Duration::from_millis(200);
    let full = Full::start(
        builder(1, 1)
            .overload(Overload::Wait(WAIT))
            .on_reject(busy_hook),
        1,
        1,
    );
    let start = Instant::now();
    let mut extra = client_with_request(full.addr, "patient");
    assert_eq!(read_line(&mut extra), BUSY);
    let waited = start.elapsed();
    assert!(waited >= WAIT, "rejected after {waited:?}, before the wait");
    assert_closed(&mut extra);

    let stats = full.finish();
    assert_eq!(stats.rejected.overload, 1);
    assert_eq!(stats.completed, 2);
}

#[test]
fn wait_queues_the_client_when_a_worker_frees_in_time() {
    // The wait is long (TIMEOUT) so that the worker freed below is sure to
    // free up within it, however loaded the machine.
    let full = Full::start(
        builder(2, 1)
            .overload(Overload::Wait(TIMEOUT))
            .on_reject(busy_hook),
        2,
        1,
    );
    let mut extra = client_with_request(full.addr, "patient");
    full.wait_for_stats("the acceptor holds the extra client", |s| s.accepted == 4);

    // One held handler goes on; its worker answers its client and takes
    // the queued one, which makes room for the extra client.
    full.gate.release(1);
    full.gate.wait_entered(1);
    full.wait_for_stats("the extra client is queued", |s| {
        s.completed == 1 && s.busy_workers == 2 && s.queued == 1
    });
    assert_eq!(full.stats().rejected.total(), 0);

    full.gate.open();
    assert_eq!(read_line(&mut extra), "patient");
    let stats = full.finish();
    assert_eq!(stats.rejected.total(), 0);
    assert_eq!(stats.completed, 4);
}

#[test]
fn max_connections_below_workers_rejects_beyond_it() {
    let full = Full::start(builder(4, 0).max_connections(2).on_reject(busy_hook), 2, 0);
    // Two of four workers are busy and the queue is empty, yet the cap is
    // reached.
    assert_eq!(full.stats().busy_workers, 2);
    let mut extra = client_with_request(full.addr, "third");
    assert_eq!(read_line(&mut extra), BUSY);
    assert_closed(&mut extra);
    let stats = full.stats();
    assert_eq!(stats.rejected.max_connections, 1);
    assert_eq!(stats.rejected.overload, 0);

    let Full {
        handle,
        addr,
        gate,
        clients,
    } = full;
    gate.open();
    for (mut stream, line) in clients {
        assert_eq!(read_line(&mut stream), line);
    }
    // Below the cap again, new clients are served.
    wait_until("the first connections are finished", || {
        let stats = handle.stats();
        stats.active == 0 && stats.queued == 0
    });
    assert_eq!(
        util::exchange(&mut client(addr), "fourth"),
        "fourth",
        "served once below the cap"
    );
    let (_, stats) = util::stop(handle);
    assert_eq!(stats.rejected.max_connections, 1);
    assert_eq!(stats.completed, 3);
    assert_accounted(&stats);
}

#[test]
fn max_connections_counts_queued_connections() {
    let full = Full::start(
        builder(2, 1)
            .max_connections(3)
            .overload(Overload::Reject)
            .on_reject(busy_hook),
        2,
        1,
    );
    // 2 active + 1 queued = the cap; the queue would have no room either,
    // but the cap is checked first.
    let mut extra = client(full.addr);
    assert_eq!(read_line(&mut extra), BUSY);
    let stats = full.finish();
    assert_eq!(stats.rejected.max_connections, 1);
    assert_eq!(stats.rejected.overload, 0);
}

#[test]
fn queue_zero_means_no_client_waits() {
    let full = Full::start(
        builder(1, 0)
            .overload(Overload::Reject)
            .on_reject(busy_hook),
        1,
        0,
    );
    assert_eq!(full.stats().queued, 0);
    // The one worker is busy and nothing may wait: rejected at once.
    let mut extra = client_with_request(full.addr, "second");
    assert_eq!(read_line(&mut extra), BUSY);
    let stats = full.finish();
    assert_eq!(stats.rejected.overload, 1);
    assert_eq!(stats.completed, 1);
}

#[test]
fn reject_hook_cannot_stall_the_acceptor() {
    // A hook that tries to write far more than a socket buffer holds, to a
    // client that never reads: a write to a rejected connection never
    // waits, so the hook returns at once with `WouldBlock`, and the next
    // rejected client is turned away promptly too.
    let (reasons_tx, reasons) = crossbeam_channel::unbounded();
    let full = Full::start(
        builder(1, 0).overload(Overload::Reject).on_reject(
            move |conn: &mut Rejected| -> io::Result<()> {
                let _ = reasons_tx.send(conn.reason());
                let result = conn.write_all(&vec![b'x'; 64 << 20]);
                assert_eq!(
                    result.map_err(|e| e.kind()).unwrap_err(),
                    io::ErrorKind::WouldBlock
                );
                Ok(())
            },
        ),
        1,
        0,
    );
    let mut silent = Vec::new();
    for _ in 0..3 {
        // Kept open, so that the hook's write finds a full buffer, not a
        // closed connection.
        silent.push(client(full.addr));
        // The rejection shows the acceptor went on; a stalled acceptor
        // would never get here (the bound only keeps a bug from hanging).
        let reason = reasons
            .recv_timeout(TIMEOUT)
            .expect("the next client is rejected");
        assert_eq!(reason, RejectReason::Overload);
    }
    let stats = full.finish();
    assert_eq!(stats.rejected.overload, 3);
    assert_eq!(stats.panics, 0);
}
