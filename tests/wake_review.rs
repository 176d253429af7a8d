//! Regressions found by the review of the wake-up changes (issue 15): the
//! closer's second look, the acceptor's wait after a short burst, and the
//! `Handler` mode's parked workers with the pool's limit as a count.
//!
//! Each test here failed before its fix. They run clients one after
//! another and check what the previous one already saw, so a race shows
//! up within a few rounds; every loop is bounded in rounds, and every
//! read by the clients' timeouts.

mod util;

use std::io::{self, Read, Write};
use std::net::TcpStream;

use frontdesk::{Connection, Overload, Rejected, Server, ServerBuilder, Stats};
use util::{assert_accounted, client, read_to_clean_end, serve, tcp_addr, wait_for_stats};

/// Rounds of one client after another: each round that loses the race
/// fails the test, and on the code before the fix about one round in ten
/// did (on a 2-core machine).
const ROUNDS: usize = 1000;

fn goodbye(conn: &mut Connection) -> io::Result<()> {
    conn.write_all(b"bye\n")
}

fn busy(conn: &mut Rejected) -> io::Result<()> {
    conn.write_all(b"busy\n")
}

/// Connects `ROUNDS` clients to a server built from `builder` whose
/// handler says `bye` and returns, one after another: each reads its
/// answer and the server's clean end of stream before the next connects.
/// By then the connection has ended for the client, so its worker and its
/// place in every count are free again: no client may be turned away.
fn one_client_after_another(builder: ServerBuilder) -> Stats {
    let handle = serve(builder.on_reject(busy), goodbye);
    let addr = tcp_addr(handle.local_addr());
    for round in 0..ROUNDS {
        let mut stream = client(addr);
        let got = read_to_clean_end(&mut stream);
        assert_eq!(
            String::from_utf8_lossy(&got),
            "bye\n",
            "round {round}: the client before this one had seen its connection end; {:?}",
            handle.stats().rejected
        );
    }
    let (_, stats) = util::stop(handle);
    assert_accounted(&stats);
    assert_eq!(stats.rejected.total(), 0, "{stats:#?}");
    stats
}

#[test]
fn queue_zero_hands_over_to_the_worker_whose_client_saw_its_end() {
    // `queue(0)`: a connection goes only to a worker free at that moment.
    // The one worker's last client has read its end of stream: the worker
    // is free, whatever bookkeeping it still does.
    one_client_after_another(
        Server::builder()
            .workers(1)
            .queue(0)
            .overload(Overload::Reject),
    );
}

#[test]
fn wait_zero_hands_over_to_the_worker_whose_client_saw_its_end() {
    one_client_after_another(
        Server::builder()
            .workers(1)
            .queue(0)
            .overload(Overload::Wait(std::time::Duration::ZERO)),
    );
}

#[test]
fn max_connections_counts_out_a_connection_its_client_saw_end() {
    one_client_after_another(Server::builder().workers(2).max_connections(1));
}

#[test]
fn max_connections_per_ip_counts_out_a_connection_its_client_saw_end() {
    one_client_after_another(Server::builder().workers(2).max_connections_per_ip(1));
}

#[test]
fn lingering_counts_a_close_from_the_moment_its_client_sees_the_end() {
    // Clients that read the server's end of stream and never close: each
    // lingers (for the whole linger time) from the moment it saw the end,
    // so the count shows every one of them then, not a moment later when
    // the closer has looked at its inbox.
    let handle = serve(Server::builder().workers(2), goodbye);
    let addr = tcp_addr(handle.local_addr());
    let mut kept: Vec<TcpStream> = Vec::new();
    for round in 0..ROUNDS / 10 {
        let mut stream = client(addr);
        assert_eq!(read_to_clean_end(&mut stream), b"bye\n");
        kept.push(stream);
        let stats = handle.stats();
        assert_eq!(
            stats.lingering,
            kept.len(),
            "round {round}: every client so far saw the end and keeps its side open; {stats:#?}"
        );
    }
    // Closed by the clients now: the server's closes end at their end of
    // stream.
    let clients = kept.len();
    for mut stream in kept {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
    }
    wait_for_stats(&handle, "every close has ended", |s| s.lingering == 0);
    let (_, stats) = util::stop(handle);
    assert_accounted(&stats);
    assert_eq!(stats.completed, clients as u64);
    assert_eq!(stats.linger_cut, 0, "{stats:#?}");
}

// What the review checked and found sound, kept as regressions.

#[test]
fn every_parked_worker_ends_at_shutdown() {
    // Idle workers sleep in the `Handler` mode's parking; the queue's
    // last sender, dropped when the acceptor stops, wakes one, and each
    // that ends wakes the next. With no drain deadline, a worker left
    // asleep would hold the shutdown for ever.
    let handle = serve(
        Server::builder()
            .workers(16)
            .shutdown_timeout(std::time::Duration::MAX),
        goodbye,
    );
    let addr = tcp_addr(handle.local_addr());
    // Some of them have served, so they parked again after a job.
    for _ in 0..32 {
        assert_eq!(read_to_clean_end(&mut client(addr)), b"bye\n");
    }
    wait_for_stats(&handle, "every worker is idle", |s| s.busy_workers == 0);
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done_tx.send(util::stop(handle));
    });
    let (report, stats) = done
        .recv_timeout(util::TIMEOUT)
        .expect("the shutdown ends: every parked worker was woken");
    assert_eq!(report.stuck_workers, 0, "{report:#?}");
    assert_accounted(&stats);
}

#[test]
fn wait_max_waits_for_a_worker_like_block() {
    // `Overload::Wait(Duration::MAX)`: a deadline past the clock's range
    // is no deadline.
    let gate = util::Gate::new();
    let handle = serve(
        Server::builder()
            .workers(1)
            .queue(0)
            .overload(Overload::Wait(std::time::Duration::MAX))
            .on_reject(busy),
        gate.guard(goodbye),
    );
    let addr = tcp_addr(handle.local_addr());
    let mut first = client(addr);
    gate.wait_entered(1);
    let mut second = client(addr);
    util::assert_silent(&mut second);
    gate.open();
    assert_eq!(read_to_clean_end(&mut first), b"bye\n");
    assert_eq!(read_to_clean_end(&mut second), b"bye\n");
    let (_, stats) = util::stop(handle);
    assert_accounted(&stats);
    assert_eq!(stats.rejected.total(), 0, "{stats:#?}");
}
