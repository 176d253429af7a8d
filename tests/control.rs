//! Live control through `ServerControl` (and `ServerHandle`): pausing and
//! resuming the accept loop, and changing `max_connections` and
//! `max_connections_per_ip` while clients are connected, in both modes,
//! with real clients; the stats show the state.
//!
//! "Not accepted" is shown by the counters (`Stats::accepted` does not
//! move) and by silence on the client's socket for `util::QUIET`, the one
//! bounded wait these tests make on purpose (see `util::assert_silent`):
//! a connection the server took would have been greeted within
//! milliseconds on loopback.

mod util;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};

use frontdesk::{
    Connection, Error, LineError, Lines, Next, RejectReason, Rejected, Server, ServerBuilder,
    ServerControl, ServerHandle, Stats, Turn, TurnHandler, TURN_MAX_CONNECTIONS,
};
use util::{
    assert_accounted, assert_silent, exchange, read_line, read_request_line, read_to_clean_end,
    send_line, tcp_addr, wait_for_stats,
};

const BUSY: &str = "error: server busy";

/// Answers a rejected client with [`BUSY`] and its reason, so that a test
/// sees which cap turned it away.
fn busy_hook(conn: &mut Rejected) -> io::Result<()> {
    let reason = match conn.reason() {
        RejectReason::MaxConnections => "max_connections",
        RejectReason::MaxConnectionsPerIp => "max_connections_per_ip",
        _ => "other",
    };
    conn.write_all(format!("{BUSY} ({reason})\n").as_bytes())
}

/// The `Handler` mode: greets with `welcome`, then answers each line
/// `LINE` with `echo LINE` until the client closes.
fn host(conn: &mut Connection) -> io::Result<()> {
    conn.write_all(b"welcome\n")?;
    while let Some(line) = read_request_line(conn)? {
        conn.write_all(format!("echo {line}\n").as_bytes())?;
    }
    Ok(())
}

/// [`host`] in the turn mode.
struct TurnHost;

impl TurnHandler for TurnHost {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        turn.send("welcome\n")?;
        Ok(Lines::new(turn, 1024))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line_str() {
                Ok(Some(line)) => turn.send(format!("echo {line}\n"))?,
                Ok(None) => return Ok(Next::Park),
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Handler,
    Turns,
}

const MODES: [Mode; 2] = [Mode::Handler, Mode::Turns];

fn serve(mode: Mode, builder: ServerBuilder) -> ServerHandle {
    let server = builder.on_reject(busy_hook).bind(util::LOCALHOST).unwrap();
    match mode {
        Mode::Handler => server.spawn(host).unwrap(),
        Mode::Turns => server.spawn_turns(TurnHost).unwrap(),
    }
}

/// Connects and expects the greeting.
fn welcomed(addr: SocketAddr) -> TcpStream {
    let mut client = util::client(addr);
    assert_eq!(read_line(&mut client), "welcome");
    client
}

/// Connects and expects to be turned away by `cap`, with a clean end.
fn refused(addr: SocketAddr, cap: &str) {
    let mut client = util::client(addr);
    assert_eq!(read_line(&mut client), format!("{BUSY} ({cap})"));
    assert!(read_to_clean_end(&mut client).is_empty());
}

/// Asks `client` for an echo: its connection is still served.
fn still_served(client: &mut TcpStream, what: &str) {
    assert_eq!(exchange(client, what), format!("echo {what}"));
}

/// Connects while the server is paused: the kernel completes the
/// handshake (`connect` returns), but nothing answers and the server
/// does not count the connection.
fn waits_in_backlog(control: &ServerControl, addr: SocketAddr) -> TcpStream {
    let accepted = control.stats().accepted;
    let mut client = util::client(addr);
    assert_silent(&mut client);
    assert_eq!(control.stats().accepted, accepted, "accepted while paused");
    client
}

#[test]
fn a_paused_server_leaves_new_clients_in_the_backlog_until_resumed() {
    for mode in MODES {
        let handle = serve(mode, Server::builder());
        let addr = tcp_addr(handle.local_addr());
        let control = handle.control();
        let mut open = welcomed(addr);

        control.pause();
        assert!(control.is_paused() && handle.is_paused(), "{mode:?}");
        assert!(handle.stats().paused, "{mode:?}");
        let mut waiting = waits_in_backlog(&control, addr);
        // It may even send: the bytes wait in its socket's buffer.
        send_line(&mut waiting, "early");
        // The connection opened before the pause is served as before.
        still_served(&mut open, "while paused");
        assert_eq!(handle.stats().accepted, 1, "{mode:?}");

        control.resume();
        assert!(!control.is_paused() && !handle.stats().paused, "{mode:?}");
        assert_eq!(read_line(&mut waiting), "welcome");
        assert_eq!(read_line(&mut waiting), "echo early");
        still_served(&mut waiting, "after the resume");
        assert_eq!(handle.stats().accepted, 2, "{mode:?}");
        drop((open, waiting));

        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.completed, 2, "{mode:?}: {stats:?}");
        assert!(!stats.paused, "{mode:?}");
    }
}

#[test]
fn pause_and_resume_are_idempotent_and_work_through_the_handle_too() {
    for mode in MODES {
        let handle = serve(mode, Server::builder());
        let addr = tcp_addr(handle.local_addr());
        let control = handle.control();
        // Resuming a server that is not paused does nothing.
        control.resume();
        assert!(!handle.is_paused());
        handle.pause();
        control.pause();
        assert!(control.is_paused());
        let mut waiting = waits_in_backlog(&control, addr);
        // One resume undoes any number of pauses.
        handle.resume();
        assert_eq!(read_line(&mut waiting), "welcome");
        control.resume();
        // Several rounds: a stale wake-up from a resume never lets one
        // connection through while paused.
        for round in 0..3 {
            control.pause();
            let mut waiting = waits_in_backlog(&control, addr);
            control.resume();
            assert_eq!(read_line(&mut waiting), "welcome", "{mode:?} round {round}");
        }
        drop(waiting);
        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.accepted, 4, "{mode:?}: {stats:?}");
    }
}

/// A stop while paused shuts down as usual: the open connection drains,
/// the one in the backlog is never served, and the shutdown does not wait
/// for it.
#[test]
fn a_stop_while_paused_shuts_down_cleanly() {
    for mode in MODES {
        let handle = serve(mode, Server::builder());
        let addr = tcp_addr(handle.local_addr());
        let control = handle.control();
        let mut open = welcomed(addr);
        control.pause();
        let mut waiting = waits_in_backlog(&control, addr);
        // Sent before the stop: answered by the drain.
        send_line(&mut open, "last");
        let (report, stats) = util::stop(handle);
        assert_eq!(read_line(&mut open), "echo last");
        assert!(read_to_clean_end(&mut open).is_empty());
        assert_eq!(report.forced, 0, "{mode:?}: {report:?}");
        assert_accounted(&stats);
        assert_eq!(stats.accepted, 1, "{mode:?}: {stats:?}");
        assert!(stats.paused, "{mode:?}: the state is reported as it was");
        // The listener is closed: the client that waited in its backlog
        // is reset (or, at worst, sees an end of stream), never greeted.
        let mut rest = Vec::new();
        match io::Read::read_to_end(&mut waiting, &mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{mode:?}: {rest:?}"),
            Err(error) => assert!(util::is_reset(&error), "{mode:?}: {error}"),
        }
    }
}

/// The same with `Server::run` on a thread of its own, stopped through a
/// control taken before it ran: pausing works before the accept loop
/// starts.
#[test]
fn a_server_run_on_its_thread_pauses_from_the_start() {
    let server = Server::builder().bind(util::LOCALHOST).unwrap();
    let addr = tcp_addr(server.local_addr());
    let control = server.control();
    control.pause();
    let (runner, result) = util::run_on_thread(server, host);
    let mut waiting = waits_in_backlog(&control, addr);
    control.resume();
    assert_eq!(read_line(&mut waiting), "welcome");
    drop(waiting);
    control.stop();
    let report = result
        .recv_timeout(util::TIMEOUT)
        .expect("run returns after the stop")
        .expect("a clean shutdown");
    runner.join().unwrap();
    assert_eq!(report.stats.accepted, 1);
    assert_accounted(&report.stats);
}

#[test]
fn lowering_max_connections_closes_nobody_and_refuses_the_next_until_some_leave() {
    for mode in MODES {
        let handle = serve(mode, Server::builder());
        let addr = tcp_addr(handle.local_addr());
        let control = handle.control();
        let default = match mode {
            Mode::Handler => None,
            Mode::Turns => Some(TURN_MAX_CONNECTIONS),
        };
        assert_eq!(handle.stats().max_connections, default, "{mode:?}");
        let mut clients: Vec<TcpStream> = (0..3).map(|_| welcomed(addr)).collect();

        control.set_max_connections(2).unwrap();
        assert_eq!(handle.stats().max_connections, Some(2), "{mode:?}");
        for (i, client) in clients.iter_mut().enumerate() {
            still_served(client, &format!("client {i}"));
        }
        refused(addr, "max_connections");

        // Two leave: one more fits under the cap, and then none.
        drop(clients.drain(..2));
        wait_for_stats(&handle, "two connections ended", |s| s.completed == 2);
        clients.push(welcomed(addr));
        refused(addr, "max_connections");

        // Raised: two more fit.
        handle.set_max_connections(4).unwrap();
        clients.push(welcomed(addr));
        clients.push(welcomed(addr));
        refused(addr, "max_connections");

        // `None` goes back to the mode's default.
        control.set_max_connections(None).unwrap();
        assert_eq!(handle.stats().max_connections, default, "{mode:?}");
        clients.push(welcomed(addr));
        drop(clients);

        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.rejected.max_connections, 3, "{mode:?}: {stats:?}");
        assert_eq!(stats.rejected.total(), 3, "{mode:?}: {stats:?}");
        assert_eq!(stats.completed, 7, "{mode:?}: {stats:?}");
    }
}

/// The builder set no per-address cap; the control switches one on,
/// lowers it, and switches it off again.
#[test]
fn the_per_address_cap_can_be_switched_on_while_running() {
    for mode in MODES {
        let handle = serve(mode, Server::builder());
        let addr = tcp_addr(handle.local_addr());
        let control = handle.control();
        assert_eq!(handle.stats().max_connections_per_ip, None);
        // Let in while there was no cap: not counted.
        let mut before = welcomed(addr);

        control.set_max_connections_per_ip(2).unwrap();
        assert_eq!(handle.stats().max_connections_per_ip, Some(2));
        let mut first = welcomed(addr);
        let second = welcomed(addr);
        refused(addr, "max_connections_per_ip");
        still_served(&mut before, "uncounted");

        // Lowered below what the address holds: nobody is closed.
        handle.set_max_connections_per_ip(1).unwrap();
        still_served(&mut first, "still here");
        refused(addr, "max_connections_per_ip");
        drop(second);
        wait_for_stats(&handle, "a counted connection ended", |s| s.completed == 1);
        // `first` still holds the one place.
        refused(addr, "max_connections_per_ip");

        control.set_max_connections_per_ip(None).unwrap();
        let extra = welcomed(addr);
        drop((before, first, extra));

        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.rejected.max_connections_per_ip, 3, "{stats:?}");
        assert_eq!(stats.max_connections_per_ip, None);
    }
}

/// Zero is refused as the builder refuses it, and leaves the cap as it
/// was; `usize::MAX` is taken (no cap in practice).
#[test]
fn a_cap_of_zero_is_a_config_error_and_usize_max_is_no_cap_in_practice() {
    let handle = serve(
        Mode::Handler,
        Server::builder()
            .max_connections(5)
            .max_connections_per_ip(3),
    );
    let addr = tcp_addr(handle.local_addr());
    let control = handle.control();
    let error = control.set_max_connections(0).unwrap_err();
    assert!(
        matches!(error, Error::Config("`max_connections` must be at least 1")),
        "{error:?}"
    );
    let error = handle.set_max_connections_per_ip(Some(0)).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Config("`max_connections_per_ip` must be at least 1")
        ),
        "{error:?}"
    );
    let stats = handle.stats();
    assert_eq!(
        (stats.max_connections, stats.max_connections_per_ip),
        (Some(5), Some(3))
    );

    control.set_max_connections(usize::MAX).unwrap();
    control.set_max_connections_per_ip(usize::MAX).unwrap();
    let stats: Stats = handle.stats();
    assert_eq!(
        (stats.max_connections, stats.max_connections_per_ip),
        (Some(usize::MAX), Some(usize::MAX))
    );
    let clients: Vec<TcpStream> = (0..6).map(|_| welcomed(addr)).collect();
    drop(clients);
    let (_, stats) = util::stop(handle);
    assert_accounted(&stats);
    assert_eq!(stats.rejected.total(), 0, "{stats:?}");
}
