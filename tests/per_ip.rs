//! `max_connections_per_ip`: one client address holds at most N
//! connections, in both modes; the one beyond gets the reject handler and
//! is counted; a place comes back however a connection ends (handler
//! error, panic, timeout, turned away by the queue after it took its
//! place); behind a PROXY header the header's client is the address;
//! a Unix socket's clients are not capped; zero is a configuration error
//! and `usize::MAX` no cap.
//!
//! Clients all connect from 127.0.0.1, so "one address" is every client
//! of a test; behind a proxy the headers name the addresses.

mod util;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use frontdesk::{
    Connection, Error, LineError, Lines, Next, Overload, RejectReason, Rejected, Server,
    ServerBuilder, ServerHandle, Stats, Turn, TurnHandler,
};
use util::{
    assert_accounted, assert_closed, read_line, read_request_line, read_to_clean_end, send_line,
    tcp_addr, wait_for_stats,
};

const BUSY: &str = "error: server busy";

/// Answers every rejected client with [`BUSY`], as the examples do, and
/// checks the reason is the one this file is about (a panic here is
/// counted in `Stats::panics`, which the tests check).
fn busy_hook(conn: &mut Rejected) -> io::Result<()> {
    assert_eq!(conn.reason(), RejectReason::MaxConnectionsPerIp, "{conn:?}");
    conn.write_all(b"error: server busy\n")
}

/// The `Handler` mode: greets the client with `welcome <peer_addr>`, then
/// reads commands until the client closes: `err` ends the connection
/// with an error, `panic` with a panic, anything else is ignored.
fn host(conn: &mut Connection) -> io::Result<()> {
    let welcome = format!("welcome {}\n", conn.peer_addr());
    conn.write_all(welcome.as_bytes())?;
    while let Some(command) = read_request_line(conn)? {
        match command.as_str() {
            "err" => return Err(io::Error::other("refused on purpose (test)")),
            "panic" => panic!("the handler panics on purpose (test)"),
            _ => {}
        }
    }
    Ok(())
}

/// [`host`] in the turn mode.
struct TurnHost;

impl TurnHandler for TurnHost {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        turn.send(format!("welcome {}\n", turn.peer_addr()))?;
        Ok(Lines::new(turn, 1024))
    }

    fn ready(&self, lines: &mut Lines, _: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line_str() {
                Ok(Some("err")) => return Err(io::Error::other("refused on purpose (test)")),
                Ok(Some("panic")) => panic!("the handler panics on purpose (test)"),
                Ok(Some(_)) => {}
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

/// Binds `builder` to 127.0.0.1:0 (with [`busy_hook`]) and spawns it in
/// `mode`.
fn serve(mode: Mode, builder: ServerBuilder) -> ServerHandle {
    let server = builder.on_reject(busy_hook).bind(util::LOCALHOST).unwrap();
    match mode {
        Mode::Handler => server.spawn(host).unwrap(),
        Mode::Turns => server.spawn_turns(TurnHost).unwrap(),
    }
}

/// Connects and expects the welcome line; returns the client and what
/// the server says its address is.
fn welcomed(addr: SocketAddr) -> (TcpStream, String) {
    let mut client = util::client(addr);
    let line = read_line(&mut client);
    let peer = line
        .strip_prefix("welcome ")
        .unwrap_or_else(|| panic!("expected a welcome, got {line:?}"))
        .to_string();
    (client, peer)
}

/// Connects and expects to be turned away with [`BUSY`] and a clean end.
fn refused(addr: SocketAddr) {
    let mut client = util::client(addr);
    assert_eq!(read_line(&mut client), BUSY);
    assert!(read_to_clean_end(&mut client).is_empty());
}

/// Closes `client` and waits until the server has counted its
/// connection as ended (`ended` in all), which gives its place back.
fn close_and_wait(handle: &ServerHandle, client: TcpStream, ended: u64) -> Stats {
    drop(client);
    wait_for_stats(handle, "the connection has ended", |s| s.completed == ended)
}

#[test]
fn the_client_beyond_n_from_one_address_is_refused_until_one_closes() {
    for mode in MODES {
        let handle = serve(mode, Server::builder().max_connections_per_ip(2));
        let addr = tcp_addr(handle.local_addr());
        let (first, _) = welcomed(addr);
        let (second, _) = welcomed(addr);
        refused(addr);
        let stats = handle.stats();
        assert_eq!(
            stats.rejected.max_connections_per_ip, 1,
            "{mode:?}: {stats:?}"
        );
        assert_eq!(stats.rejected.total(), 1, "{mode:?}: {stats:?}");

        // One closes: its place is free for the next client.
        close_and_wait(&handle, first, 1);
        let (third, _) = welcomed(addr);
        refused(addr);
        drop((second, third));

        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.accepted, 5, "{mode:?}: {stats:?}");
        assert_eq!(stats.completed, 3, "{mode:?}: {stats:?}");
        assert_eq!(
            stats.rejected.max_connections_per_ip, 2,
            "{mode:?}: {stats:?}"
        );
        assert_eq!(stats.panics, 0, "{mode:?}: {stats:?}");
    }
}

/// With one place per address, each connection must give its place back
/// for the next one to be let in, whichever way it ended.
#[test]
fn a_place_comes_back_however_the_connection_ends() {
    for mode in MODES {
        let handle = serve(
            mode,
            Server::builder()
                .max_connections_per_ip(1)
                .idle_timeout(Duration::from_millis(100)),
        );
        let addr = tcp_addr(handle.local_addr());
        let mut ended = 0;
        for how in ["err", "panic", "idle", "close"] {
            let (mut client, _) = welcomed(addr);
            match how {
                "idle" => {}
                "close" => client.shutdown(std::net::Shutdown::Write).unwrap(),
                command => send_line(&mut client, command),
            }
            // The server ends it (after the idle timeout, for `idle`).
            assert_closed(&mut client);
            ended += 1;
            close_and_wait(&handle, client, ended);
        }
        // The place is free: one more is let in.
        let (last, _) = welcomed(addr);
        drop(last);
        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.rejected.total(), 0, "{mode:?}: {stats:?}");
        // `err`, and in the `Handler` mode the read the idle timeout
        // ended; the turn mode closes an idle connection itself.
        let errors = match mode {
            Mode::Handler => 2,
            Mode::Turns => 1,
        };
        assert_eq!(stats.handler_errors, errors, "{mode:?}: {stats:?}");
        assert_eq!(stats.panics, 1, "{mode:?}: {stats:?}");
        assert_eq!(stats.timeouts.idle, 1, "{mode:?}: {stats:?}");
    }
}

/// A connection takes its place when accepted, before the queue: turned
/// away by the queue, it gives the place back at once. Were it kept, the
/// third client here would be refused for its address (two places
/// taken), not for the full pool.
#[test]
fn a_connection_the_queue_turns_away_gives_its_place_back() {
    let handle = util::serve(
        Server::builder()
            .workers(1)
            .queue(0)
            .overload(Overload::Reject)
            .max_connections_per_ip(2)
            .on_reject(|conn: &mut Rejected| {
                assert_eq!(conn.reason(), RejectReason::Overload, "{conn:?}");
                conn.write_all(b"error: server busy\n")
            }),
        host,
    );
    let addr = tcp_addr(handle.local_addr());
    // The one worker is held: this address has one place taken.
    let (held, _) = welcomed(addr);
    // Each takes the second place, finds no worker, and is turned away.
    refused(addr);
    refused(addr);
    let stats = handle.stats();
    assert_eq!(stats.rejected.overload, 2, "{stats:?}");
    assert_eq!(stats.rejected.max_connections_per_ip, 0, "{stats:?}");
    drop(held);
    let (_, stats) = util::stop(handle);
    assert_accounted(&stats);
    assert_eq!(stats.completed, 1, "{stats:?}");
    assert_eq!(stats.panics, 0, "{stats:?}");
}

/// The drain deadline ends a connection that holds a place, and it is
/// accounted for like any other. (Nothing can connect after a shutdown
/// to see the place come back; the slot is a value, dropped once, and a
/// place given back twice is a debug assertion.)
#[test]
fn a_connection_ended_by_the_drain_deadline_is_accounted_for() {
    for mode in MODES {
        let handle = serve(
            mode,
            Server::builder()
                .max_connections_per_ip(1)
                .shutdown_timeout(Duration::from_millis(100))
                // Longer than the deadline: the silent client is still
                // there when it passes.
                .drain_quiet_time(util::TIMEOUT),
        );
        let addr = tcp_addr(handle.local_addr());
        let (mut held, _) = welcomed(addr);
        refused(addr);
        let stopping = std::thread::spawn(move || util::stop(handle));
        assert_closed(&mut held);
        drop(held);
        let (report, stats) = stopping.join().expect("the shutdown did not panic");
        assert_eq!(report.forced, 1, "{mode:?}: {report:?}");
        assert_accounted(&stats);
        assert_eq!(
            stats.rejected.max_connections_per_ip, 1,
            "{mode:?}: {stats:?}"
        );
        assert_eq!(stats.panics, 0, "{mode:?}: {stats:?}");
    }
}

/// Behind a proxy, the header's client is the address: two clients that
/// come through the same proxy (the same TCP peer, 127.0.0.1) are
/// counted apart, and a second connection of either is refused. The
/// reject handler runs for it too, once its header is read.
#[test]
fn behind_a_proxy_the_headers_clients_are_counted_apart() {
    for mode in MODES {
        let handle = serve(
            mode,
            Server::builder()
                .proxy_protocol(true)
                .max_connections_per_ip(1),
        );
        let addr = tcp_addr(handle.local_addr());
        let through_proxy = |client: &str, port: u16| {
            let mut stream = util::client(addr);
            let header = format!("PROXY TCP4 {client} 198.51.100.1 {port} 80\r\n");
            stream.write_all(header.as_bytes()).unwrap();
            stream
        };
        let mut ada = through_proxy("192.0.2.7", 4567);
        assert_eq!(read_line(&mut ada), "welcome 192.0.2.7:4567", "{mode:?}");
        let mut bob = through_proxy("192.0.2.8", 4567);
        assert_eq!(read_line(&mut bob), "welcome 192.0.2.8:4567", "{mode:?}");
        // Ada again, from another port: her address holds its one place.
        let mut again = through_proxy("192.0.2.7", 4568);
        assert_eq!(read_line(&mut again), BUSY, "{mode:?}");
        assert!(read_to_clean_end(&mut again).is_empty(), "{mode:?}");
        drop(again);
        let stats = wait_for_stats(&handle, "the refusal is counted", |s| {
            s.rejected.max_connections_per_ip == 1
        });
        assert_eq!(stats.rejected.proxy, 0, "{mode:?}: {stats:?}");

        // Ada leaves: she may come back.
        close_and_wait(&handle, ada, 1);
        let mut back = through_proxy("192.0.2.7", 4569);
        assert_eq!(read_line(&mut back), "welcome 192.0.2.7:4569", "{mode:?}");
        drop((back, bob));

        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.completed, 3, "{mode:?}: {stats:?}");
        assert_eq!(
            stats.rejected.max_connections_per_ip, 1,
            "{mode:?}: {stats:?}"
        );
        assert_eq!(stats.panics, 0, "{mode:?}: {stats:?}");
    }
}

/// A path for a Unix socket under `CARGO_TARGET_TMPDIR`, unique to this
/// process and `tag` (short: socket paths are limited to about 100 bytes).
fn socket_path(tag: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("perip-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[cfg(unix)]
#[test]
fn a_unix_sockets_clients_have_no_address_and_no_cap() {
    use std::os::unix::net::UnixStream;

    for mode in MODES {
        let path = socket_path(&format!("{mode:?}"));
        let server = Server::builder()
            .max_connections_per_ip(1)
            .on_reject(busy_hook)
            .bind_unix(&path)
            .unwrap();
        let handle = match mode {
            Mode::Handler => server.spawn(host).unwrap(),
            Mode::Turns => server.spawn_turns(TurnHost).unwrap(),
        };
        let clients: Vec<UnixStream> = (0..3)
            .map(|_| {
                let mut client = UnixStream::connect(&path).unwrap();
                client.set_read_timeout(Some(util::TIMEOUT)).unwrap();
                assert!(read_line(&mut client).starts_with("welcome unix:"));
                client
            })
            .collect();
        drop(clients);
        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.completed, 3, "{mode:?}: {stats:?}");
        assert_eq!(stats.rejected.total(), 0, "{mode:?}: {stats:?}");
    }
}

#[test]
fn usize_max_is_no_cap() {
    for mode in MODES {
        let handle = serve(mode, Server::builder().max_connections_per_ip(usize::MAX));
        let addr = tcp_addr(handle.local_addr());
        let clients: Vec<TcpStream> = (0..8).map(|_| welcomed(addr).0).collect();
        drop(clients);
        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.completed, 8, "{mode:?}: {stats:?}");
        assert_eq!(stats.rejected.total(), 0, "{mode:?}: {stats:?}");
    }
}

/// Zero would refuse every client: it is a configuration error, as
/// `max_connections(0)` is.
#[test]
fn zero_is_a_configuration_error() {
    let error = Server::builder()
        .max_connections_per_ip(0)
        .bind(util::LOCALHOST)
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "invalid configuration: `max_connections_per_ip` must be at least 1"
    );
}
