//! The stats add up: after a mixed workload (served, failing, panicking,
//! timed-out, rejected, force-closed and dropped connections) and a
//! shutdown, every accepted connection is accounted for exactly once and
//! every counter holds exactly what happened.

mod util;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use frontdesk::{Connection, Overload, Server};
use util::{
    assert_accounted, assert_closed, client, read_exactly, read_request_line, serve, tcp_addr,
    until_closed, wait_for_stats, wait_until,
};

/// One command per connection; see the match.
fn commands(conn: &mut Connection) -> io::Result<()> {
    let Some(command) = read_request_line(conn)? else {
        return Ok(());
    };
    let mut buf = [0u8; 64];
    match command.as_str() {
        "ok" => conn.write_all(b"ok\n"),
        "err" => Err(io::Error::other("refused on purpose (test)")),
        "panic" => panic!("handler panics on purpose (test)"),
        // The client stays silent: the builder's idle timeout ends it.
        "idle" => conn.read(&mut buf).map(drop),
        // The client stays silent: the deadline (shorter than the idle
        // timeout) ends it.
        "deadline" => {
            conn.set_deadline(Instant::now() + Duration::from_millis(100));
            conn.read(&mut buf).map(drop)
        }
        // Kept until the client closes, or the server closes it by force.
        "hold" => {
            conn.set_idle_timeout(None);
            conn.write_all(b"held\n")?;
            until_closed(conn)
        }
        other => panic!("unknown command {other:?}"),
    }
}

#[test]
fn counters_add_up_after_a_mixed_workload() {
    let handle = serve(
        Server::builder()
            .workers(2)
            .queue(1)
            .overload(Overload::Reject)
            .idle_timeout(Duration::from_millis(300))
            .shutdown_timeout(Duration::from_millis(300))
            // Longer than the drain deadline: the held connections, whose
            // clients stay silent, are still open at the deadline.
            .drain_quiet_time(Duration::from_secs(10)),
        commands,
    );
    let addr = tcp_addr(handle.local_addr());

    // One connection at a time, each closed before the next starts: two
    // workers and a queue slot always have room, so none is rejected.
    let workload = [
        "ok", "err", "panic", "idle", "ok", "deadline", "err", "ok", "panic", "idle", "err", "ok",
    ];
    for command in workload {
        let mut client = client(addr);
        writeln!(client, "{command}").unwrap();
        if command == "ok" {
            assert_eq!(read_exactly(&mut client, 3), b"ok\n");
        }
        assert_closed(&mut client);
    }
    let stats = wait_for_stats(&handle, "the workload is done", |s| {
        s.completed == 12 && s.active == 0
    });
    assert_eq!(stats.accepted, 12, "{stats:?}");

    // Both workers held, the queue slot taken, two more turned away.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut client = client(addr);
            client.write_all(b"hold\n").unwrap();
            assert_eq!(read_exactly(&mut client, 5), b"held\n");
            client
        })
        .collect();
    let queued = client(addr);
    wait_for_stats(&handle, "a connection is queued", |s| s.queued == 1);
    for _ in 0..2 {
        assert_closed(&mut client(addr));
    }

    // Shut down: the held ones are closed by force at the drain deadline,
    // and the queued one is dropped unserved. `shutdown` consumes the
    // handle, so stop through a stopper and read the final stats before
    // joining.
    handle.control().stop();
    // Polling: `is_finished` is the only non-consuming way to tell.
    wait_until("the server has stopped", || handle.is_finished());
    let stats = handle.stats();
    let report = handle.join().unwrap();
    for client in &mut held {
        assert_closed(client);
    }
    drop(queued);

    assert_eq!((report.forced, report.dropped), (2, 1), "{report:?}");
    assert_accounted(&stats);
    assert_eq!(stats.accepted, 17, "{stats:?}");
    assert_eq!(stats.completed, 14, "{stats:?}");
    assert_eq!(stats.rejected.overload, 2, "{stats:?}");
    assert_eq!(stats.rejected.total(), 2, "{stats:?}");
    assert_eq!(stats.dropped, 1, "{stats:?}");
    assert_eq!(stats.forced_closed, 2, "{stats:?}");
    // 3 `err`, 2 `idle`, 1 `deadline` and the 2 forced `hold`s returned
    // an error.
    assert_eq!(stats.handler_errors, 8, "{stats:?}");
    assert_eq!(stats.panics, 2, "{stats:?}");
    assert_eq!(stats.timeouts.idle, 2, "{stats:?}");
    assert_eq!(stats.timeouts.deadline, 1, "{stats:?}");
    assert_eq!(stats.timeouts.read, 0, "{stats:?}");
    assert_eq!(stats.timeouts.write, 0, "{stats:?}");
    assert_eq!(stats.accept_errors, 0, "{stats:?}");
    assert_eq!(
        (stats.active, stats.queued, stats.busy_workers),
        (0, 0, 0),
        "{stats:?}"
    );
}
