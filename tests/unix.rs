#![cfg(unix)]
//! Unix domain sockets: both modes served over one, what `Addr` says about
//! it, the socket file's life (a stale one replaced, a live one and a
//! regular file refused, the file removed when the server is done unless
//! it is no longer the server's, its permissions), an adopted listener,
//! and the examples run with `unix:PATH`, by hand and under
//! `systemd-socket-activate`.
//!
//! Conventions (as in the other tests): each test makes its socket in a
//! directory of its own under `CARGO_TARGET_TMPDIR` ([`SocketDir`]);
//! clients have read and write timeouts of [`TIMEOUT`] (or
//! [`PATIENCE`] for the examples, which are separate processes), so a
//! server that never answers or never closes fails the test instead of
//! hanging it; and nothing sleeps to wait for the server: a reply is there
//! when a read returns it, a process has exited when its stderr closes,
//! and what no channel reports (how many connections are parked) is
//! polled from the stats with a bound. An end of stream is checked to be
//! clean (a read returns 0): on a Unix socket, as on TCP, a peer closed
//! with unread input makes the next read fail with `ConnectionReset`,
//! which the tests report as such.

mod support;
mod util;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;

use frontdesk::{Addr, Connection, Error, LineError, Lines, Next, Server, Turn, TurnHandler};
use support::{activator, example_path, Process, PATIENCE};
use util::{assert_accounted, wait_for_stats, SocketDir, TIMEOUT};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The file's device and inode: which file is at a path, not just that
/// one is.
fn identity(path: &Path) -> (u64, u64) {
    let metadata =
        fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (metadata.dev(), metadata.ino())
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_socket())
}

/// A Unix socket client with read and write timeouts.
struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects with timeouts of [`TIMEOUT`].
    fn connect(path: &Path) -> Client {
        Client::connect_with(path, TIMEOUT)
    }

    fn connect_with(path: &Path, timeout: std::time::Duration) -> Client {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        Client::new(stream, timeout)
    }

    fn new(stream: UnixStream, timeout: std::time::Duration) -> Client {
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.set_write_timeout(Some(timeout)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &str) {
        self.reader
            .get_mut()
            .write_all(bytes.as_bytes())
            .unwrap_or_else(|e| panic!("send {bytes:?}: {e}"));
    }

    /// Reads one line, without its `\n`.
    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("end of stream, expected a line"),
            Ok(_) => {}
            Err(e) => panic!("reading a line: {e} ({:?}; got {line:?} so far)", e.kind()),
        }
        assert!(line.ends_with('\n'), "unterminated line {line:?}");
        line.pop();
        line
    }

    fn exchange(&mut self, line: &str) -> String {
        self.send(&format!("{line}\n"));
        self.line()
    }

    /// Ends this side's writing, as a client that has nothing more to say.
    fn finish(&self) {
        self.reader
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown(Write)");
    }

    /// Checks that the server ends the stream cleanly with nothing more to
    /// say, then closes: the server's gentle close, which waits for the
    /// client's end of stream, is over at once instead of at its linger
    /// time (which would slow down the shutdown that follows).
    fn expect_clean_end(mut self) {
        let rest = self.read_to_clean_end();
        assert!(
            rest.is_empty(),
            "expected a clean end of stream, got {:?} first",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Reads until the server's clean end of stream and returns what came
    /// before it. Panics on a reset (the server closed with input unread)
    /// or when no end comes within the read timeout.
    fn read_to_clean_end(&mut self) -> Vec<u8> {
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let what = match e.kind() {
                        io::ErrorKind::ConnectionReset => "a reset".to_string(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                            "no end of stream within the read timeout".to_string()
                        }
                        kind => format!("{e} ({kind:?})"),
                    };
                    panic!(
                        "expected a clean end of stream after {:?}, got {what}",
                        String::from_utf8_lossy(&received)
                    );
                }
            }
        }
    }
}

/// A handler that echoes each line until the client closes, or answers
/// `quit` with `bye` and returns.
fn echo_lines(conn: &mut Connection) -> io::Result<()> {
    let mut reader = BufReader::new(&*conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "quit\n" {
            return (&*conn).write_all(b"bye\n");
        }
        (&*conn).write_all(line.as_bytes())?;
    }
}

/// A server bound at `path` with two workers, serving [`echo_lines`].
fn spawn_echo(path: &Path) -> frontdesk::ServerHandle {
    Server::builder()
        .workers(2)
        .bind_unix(path)
        .expect("bind_unix")
        .spawn(echo_lines)
        .expect("spawn")
}

/// The `io::Error` inside an `Error::Bind` for `path`.
fn bind_error_source(result: frontdesk::Result<Server>, path: &Path) -> io::Error {
    match result {
        Err(Error::Bind { addr, source }) => {
            assert_eq!(addr, Addr::Unix(Some(path.to_path_buf())));
            source
        }
        other => panic!("expected Error::Bind for {}, got {other:?}", path.display()),
    }
}

// ---------------------------------------------------------------------------
// 1. Handler mode
// ---------------------------------------------------------------------------

#[test]
fn handler_mode_echoes_lines_over_a_unix_socket() {
    let dir = SocketDir::new("handler");
    let path = dir.path("s.sock");
    let server = Server::builder()
        .workers(2)
        .bind_unix(&path)
        .expect("bind_unix");
    let addr = server.local_addr();
    assert_eq!(addr, Addr::Unix(Some(path.clone())));
    assert!(addr.is_unix() && addr.tcp().is_none(), "{addr:?}");
    assert_eq!(addr.unix_path(), Some(path.as_path()));
    assert_eq!(addr.to_string(), format!("unix:{}", path.display()));
    assert!(is_socket(&path), "bind_unix made no socket file");

    // Each connection reports its peer and local address and whether it
    // has a TCP stream, then echoes.
    let (seen_tx, seen) = crossbeam_channel::unbounded();
    let handle = server
        .spawn(move |conn: &mut Connection| {
            let _ = seen_tx.send((
                conn.peer_addr(),
                conn.local_addr()?,
                conn.tcp_stream().is_some(),
            ));
            echo_lines(conn)
        })
        .expect("spawn");
    assert_eq!(handle.local_addr(), addr);

    let mut client = Client::connect(&path);
    for line in ["one", "two", "a longer third line"] {
        assert_eq!(client.exchange(line), line);
    }
    assert_eq!(client.exchange("quit"), "bye");
    // The handler returned: the connection ends cleanly, nothing more.
    client.expect_clean_end();

    let (peer, local, has_tcp) = seen.recv_timeout(TIMEOUT).expect("the handler ran");
    // A client that did not bind its socket has no name.
    assert_eq!(peer, Addr::Unix(None));
    assert!(peer.is_unix() && peer.tcp().is_none() && peer.unix_path().is_none());
    assert_eq!(peer.to_string(), "unix:");
    assert_eq!(local, addr);
    assert!(!has_tcp, "a Unix connection has no TCP stream");

    // A client that bound its socket to a path is known by it.
    let client_path = dir.path("client.sock");
    let named = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    named
        .bind(&socket2::SockAddr::unix(&client_path).unwrap())
        .expect("bind the client");
    named
        .connect(&socket2::SockAddr::unix(&path).unwrap())
        .expect("connect the named client");
    let mut named = Client::new(named.into(), TIMEOUT);
    assert_eq!(named.exchange("hi"), "hi");
    let (peer, _, _) = seen.recv_timeout(TIMEOUT).expect("the handler ran");
    assert_eq!(peer, Addr::Unix(Some(client_path.clone())));
    assert_eq!(peer.to_string(), format!("unix:{}", client_path.display()));
    named.finish();
    named.expect_clean_end();

    let (report, stats) = util::stop(handle);
    assert_eq!((report.forced, report.dropped), (0, 0), "{report:#?}");
    assert_eq!(stats.completed, 2, "{stats:#?}");
    assert_eq!(stats.handler_errors + stats.panics, 0, "{stats:#?}");
    assert_accounted(&stats);
    assert!(!path.exists(), "the socket file outlived the server");
}

// ---------------------------------------------------------------------------
// 2. Turn mode
// ---------------------------------------------------------------------------

/// Greets each client with the address the server sees, then echoes its
/// lines; parks between them.
struct GreetAndEcho;

impl TurnHandler for GreetAndEcho {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        turn.send(format!("hello {}\n", turn.peer_addr()))?;
        Ok(Lines::new(turn, 1024))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line_str() {
                Ok(Some(line)) => {
                    let reply = format!("{line}\n");
                    turn.send(reply)?;
                }
                Ok(None) => return Ok(Next::Park),
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// How many clients the turn-mode test holds at once, on two workers.
const CLIENTS: usize = 50;

#[test]
fn a_handler_that_takes_the_unix_socket_gets_it_without_a_receive_timeout() {
    // As over TCP: the connection's reads wait first in `recv`, bounded by
    // a 50 ms receive timeout it sets on the socket; `unix_stream` hands
    // the socket over without it, or the handler's own blocking reads
    // would fail after 50 ms. The connection's reads work on without it.
    let dir = SocketDir::new("take");
    let path = dir.path("s.sock");
    let (taken_tx, taken) = std::sync::mpsc::channel();
    let handle = Server::builder()
        .workers(1)
        .bind_unix(&path)
        .expect("bind_unix")
        .spawn(move |conn: &mut Connection| {
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte)?;
            let stream = conn.unix_stream().expect("a Unix connection");
            let _ = taken_tx.send(stream.read_timeout()?);
            conn.read_exact(&mut byte)?;
            conn.write_all(&byte)
        })
        .expect("spawn");
    let mut client = Client::connect(&path);
    client.send("a");
    assert_eq!(taken.recv_timeout(TIMEOUT).unwrap(), None);
    client.send("b");
    let mut reply = [0u8; 1];
    client.reader.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"b");
    drop(client);
    handle.shutdown().unwrap();
}

#[test]
fn turn_mode_holds_many_unix_clients_on_two_workers() {
    let dir = SocketDir::new("turns");
    let path = dir.path("s.sock");
    let handle = Server::builder()
        .workers(2)
        .bind_unix(&path)
        .expect("bind_unix")
        .spawn_turns(GreetAndEcho)
        .expect("spawn_turns");
    assert_eq!(handle.local_addr(), Addr::Unix(Some(path.clone())));

    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut client = Client::connect(&path);
            assert_eq!(client.line(), "hello unix:", "client {i}");
            client
        })
        .collect();
    // Every client is held, none of them holding a worker.
    let stats = wait_for_stats(&handle, "every client is parked", |s| {
        s.parked == CLIENTS && s.busy_workers == 0
    });
    assert_eq!(stats.workers, 2, "{stats:#?}");
    assert_eq!(stats.accepted, CLIENTS as u64, "{stats:#?}");

    // Every client asks at once; each gets its own answer.
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(&format!("line from client {i}\n"));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.line(), format!("line from client {i}"));
    }
    // The clients leave; each sees a clean end of stream.
    for client in &clients {
        client.finish();
    }
    for client in clients {
        client.expect_clean_end();
    }
    wait_for_stats(&handle, "every departure is served", |s| {
        s.completed == CLIENTS as u64 && s.parked == 0
    });
    let (report, stats) = util::stop(handle);
    assert_eq!((report.forced, report.dropped), (0, 0), "{report:#?}");
    assert_eq!(stats.handler_errors + stats.panics, 0, "{stats:#?}");
    assert_accounted(&stats);
    assert!(!path.exists(), "the socket file outlived the server");
}

// ---------------------------------------------------------------------------
// 3. What is already at the path
// ---------------------------------------------------------------------------

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = SocketDir::new("stale");
    let path = dir.path("s.sock");
    // A server that is gone leaves its file behind: nobody listens on it.
    drop(UnixListener::bind(&path).expect("bind a listener"));
    assert!(is_socket(&path), "the stale socket file is there");
    let refused = UnixStream::connect(&path).expect_err("nobody listens");
    assert_eq!(
        refused.kind(),
        io::ErrorKind::ConnectionRefused,
        "{refused}"
    );

    let handle = spawn_echo(&path);
    let mut client = Client::connect(&path);
    assert_eq!(client.exchange("still here"), "still here");
    client.finish();
    client.expect_clean_end();
    util::stop(handle);
    assert!(!path.exists(), "the socket file outlived the server");
}

#[test]
fn a_live_socket_is_addr_in_use_and_left_alone() {
    let dir = SocketDir::new("live");
    let path = dir.path("s.sock");
    let live = UnixListener::bind(&path).expect("bind the live listener");
    let before = identity(&path);

    let error = bind_error_source(Server::bind_unix(&path), &path);
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
    let error = Server::bind_unix(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("failed to listen on unix:{}", path.display())
    );

    // The file is the live listener's still, and it still serves.
    assert_eq!(
        identity(&path),
        before,
        "the live socket's file was replaced"
    );
    let mut client = Client::connect(&path);
    client.send("for the live listener\n");
    // `bind_unix` found the socket live by connecting to it; those probes
    // (one per attempt above) are in the backlog first, already closed.
    let mut got = None;
    for _ in 0..3 {
        let (stream, _) = live.accept().expect("accept");
        let mut accepted = Client::new(stream, TIMEOUT);
        let mut first = String::new();
        accepted.reader.read_line(&mut first).expect("read");
        if !first.is_empty() {
            got = Some(first);
            break;
        }
    }
    assert_eq!(got.as_deref(), Some("for the live listener\n"));
}

// A blocking connect to a live socket whose backlog is full waits (on
// Linux) until there is room: telling a live socket from a stale one must
// not, or `bind_unix` hangs on a stuck server instead of `AddrInUse`.
#[test]
fn a_live_socket_with_a_full_backlog_is_addr_in_use() {
    use socket2::{Domain, SockAddr, Socket, Type};

    let dir = SocketDir::new("full");
    let path = dir.path("s.sock");
    let address = SockAddr::unix(&path).unwrap();
    let live = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    live.bind(&address).unwrap();
    // The smallest backlog the kernel allows (one connection on Linux).
    live.listen(0).unwrap();
    // Fill the backlog: non-blocking connects until one would wait.
    let mut waiting = Vec::new();
    loop {
        let client = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        client.set_nonblocking(true).unwrap();
        match client.connect(&address) {
            Ok(()) => waiting.push(client),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(waiting.len() < 1000, "the backlog never filled");
    }

    let (result_tx, result) = crossbeam_channel::bounded(1);
    let bind_path = path.clone();
    let binder = thread::spawn(move || {
        let _ = result_tx.send(Server::bind_unix(&bind_path));
    });
    let outcome = result.recv_timeout(TIMEOUT);
    // Closing the live listener ends a connect still waiting in
    // `bind_unix`, so the thread does not outlive the test.
    drop(live);
    binder.join().unwrap();
    let result = outcome.unwrap_or_else(|_| {
        panic!("bind_unix did not return within {TIMEOUT:?} on a live socket with a full backlog")
    });
    let error = bind_error_source(result, &path);
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
}

#[test]
fn a_regular_file_is_already_exists_and_kept() {
    let dir = SocketDir::new("file");
    let path = dir.path("s.sock");
    fs::write(&path, "precious\n").unwrap();
    let error = bind_error_source(Server::bind_unix(&path), &path);
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "precious\n");

    // A directory is no socket either.
    let subdir = dir.path("d.sock");
    fs::create_dir(&subdir).unwrap();
    let error = bind_error_source(Server::bind_unix(&subdir), &subdir);
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
    assert!(subdir.is_dir());
}

#[test]
fn an_unusable_path_is_a_bind_error() {
    let dir = SocketDir::new("badpath");
    // No such directory.
    let missing = dir.path("no/s.sock");
    let error = bind_error_source(Server::bind_unix(&missing), &missing);
    assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
    // Longer than `sun_path` holds.
    let long = dir.dir.join("x".repeat(200));
    bind_error_source(Server::bind_unix(&long), &long);
    assert!(!long.exists());
}

#[test]
fn a_symbolic_link_at_the_path_is_neither_followed_nor_removed() {
    let dir = SocketDir::new("symlink");
    let path = dir.path("s.sock");
    let target = dir.path("target");
    fs::write(&target, "precious\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    let stale = dir.path("stale.sock");
    drop(UnixListener::bind(&stale).expect("bind a listener"));
    // To a file, to a stale socket (which must not be taken for one to
    // replace), and to nothing.
    for pointee in [&target, &stale, &dir.path("nothing")] {
        std::os::unix::fs::symlink(pointee, &path).unwrap();
        let result = Server::builder().unix_permissions(0o666).bind_unix(&path);
        let error = bind_error_source(result, &path);
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
        assert_eq!(
            &fs::read_link(&path).unwrap(),
            pointee,
            "the link was replaced"
        );
        fs::remove_file(&path).unwrap();
    }
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the link's target got the socket's mode");
    assert!(
        is_socket(&stale),
        "the stale socket behind the link was removed"
    );
}

/// How many times the races below are run. Against the code before issue
/// #16 each test failed within a few hundred rounds (in 5 runs of 1,000 out
/// of 5, on 2 cores); a round takes well under a millisecond.
const ROUNDS: usize = 1000;

/// Binds `path` with `builder` on two threads released together, and
/// returns both results.
fn bind_twice_at_once(
    builder: frontdesk::ServerBuilder,
    path: &Path,
) -> [frontdesk::Result<Server>; 2] {
    let start = Arc::new(Barrier::new(2));
    let binders = [(); 2].map(|()| {
        let (start, builder, path) = (Arc::clone(&start), builder.clone(), path.to_path_buf());
        thread::spawn(move || {
            start.wait();
            builder.bind_unix(&path)
        })
    });
    binders.map(|binder| binder.join().expect("a binding thread"))
}

// Two servers starting on one path at once: the second one's probe could
// find the first one's socket bound but not yet listening, take it for
// stale and replace it, and both started (issue #16). Exactly one may
// win; the other fails at once naming the lock, and leaves the winner's
// socket alone.
#[test]
fn two_servers_starting_on_one_path_at_once_never_both_take_it() {
    let dir = SocketDir::new("race");
    let path = dir.path("s.sock");
    let lock = dir.path("s.sock.lock");
    // The permissions widen the window between bind and listen, where the
    // race was.
    let builder = Server::builder().workers(1).unix_permissions(0o600);
    for round in 0..ROUNDS {
        let [first, second] = bind_twice_at_once(builder.clone(), &path);
        let (server, lost) = match (first, second) {
            (Ok(server), Err(error)) | (Err(error), Ok(server)) => (server, error),
            (first, second) => panic!(
                "round {round}: exactly one server must take the path, got {:?} and {:?}",
                first.map(|_| "bound"),
                second.map(|_| "bound"),
            ),
        };
        let error = bind_error_source(Err(lost), &path);
        assert_eq!(
            error.kind(),
            io::ErrorKind::AddrInUse,
            "round {round}: {error}"
        );
        assert!(
            error.to_string().contains(&*lock.to_string_lossy()),
            "round {round}: the error does not name the lock: {error}"
        );
        // The winner's socket is in place and listening.
        assert!(is_socket(&path), "round {round}");
        UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("round {round}: the winner's socket is gone: {e}"));
        drop(server);
        assert!(
            !path.exists(),
            "round {round}: the file outlived the server"
        );
        assert!(
            !lock.exists(),
            "round {round}: the lock file outlived the server"
        );
    }
}

#[test]
fn a_lock_file_left_by_a_crash_does_not_stop_the_next_server() {
    let dir = SocketDir::new("oldlock");
    let path = dir.path("s.sock");
    let lock = dir.path("s.sock.lock");
    // A server killed with -9 leaves its socket file and its lock file;
    // the lock itself went with the process.
    drop(UnixListener::bind(&path).expect("bind a listener"));
    fs::write(&lock, "").unwrap();
    let handle = spawn_echo(&path);
    let mut client = Client::connect(&path);
    assert_eq!(client.exchange("still here"), "still here");
    client.finish();
    client.expect_clean_end();
    util::stop(handle);
    assert!(!path.exists() && !lock.exists());
}

// ---------------------------------------------------------------------------
// 4. Removing the file
// ---------------------------------------------------------------------------

#[test]
fn the_socket_file_is_removed_on_shutdown_and_the_path_can_be_bound_again() {
    let dir = SocketDir::new("remove");
    let path = dir.path("s.sock");
    for round in 0..3 {
        let handle = spawn_echo(&path);
        assert!(is_socket(&path), "round {round}");
        let mut client = Client::connect(&path);
        assert_eq!(client.exchange("ping"), "ping");
        client.finish();
        client.expect_clean_end();
        handle.shutdown().expect("shutdown");
        assert!(
            !path.exists(),
            "round {round}: the file outlived the server"
        );
    }
}

#[test]
fn a_server_dropped_without_running_removes_its_file() {
    let dir = SocketDir::new("unused");
    let path = dir.path("s.sock");
    let server = Server::bind_unix(&path).expect("bind_unix");
    assert!(is_socket(&path));
    drop(server);
    assert!(!path.exists(), "the unused server's file is left behind");
}

#[test]
fn a_file_that_is_no_longer_the_servers_is_not_removed() {
    let dir = SocketDir::new("replaced");
    let path = dir.path("s.sock");

    // Running: another server takes the path while the first one runs.
    let handle = spawn_echo(&path);
    fs::remove_file(&path).unwrap();
    let other = UnixListener::bind(&path).expect("bind the other listener");
    let others = identity(&path);
    handle.shutdown().expect("shutdown");
    assert_eq!(
        identity(&path),
        others,
        "the other server's file was removed"
    );
    let mut client = Client::connect(&path);
    client.send("for the other\n");
    let (stream, _) = other.accept().expect("the other listener still serves");
    let mut accepted = Client::new(stream, TIMEOUT);
    assert_eq!(accepted.line(), "for the other");
    drop((other, client, accepted));
    fs::remove_file(&path).unwrap();

    // Never run: the same when the server is dropped.
    let server = Server::bind_unix(&path).expect("bind_unix");
    fs::remove_file(&path).unwrap();
    let _other = UnixListener::bind(&path).expect("bind the other listener");
    let others = identity(&path);
    drop(server);
    assert_eq!(
        identity(&path),
        others,
        "the other server's file was removed"
    );
    fs::remove_file(&path).unwrap();

    // Removed by someone else: nothing to remove, and no error.
    let handle = spawn_echo(&path);
    fs::remove_file(&path).unwrap();
    let report = handle.shutdown().expect("shutdown without the file");
    assert_accounted(&report.stats);
    assert!(!path.exists());
}

// ---------------------------------------------------------------------------
// 5. Permissions
// ---------------------------------------------------------------------------

#[test]
fn unix_permissions_sets_the_files_mode() {
    let dir = SocketDir::new("mode");
    let path = dir.path("s.sock");
    // 0o666 is wider than the usual umask (0o022) leaves: the mode is set
    // as `chmod` sets it, not masked.
    for mode in [0o600, 0o660, 0o666] {
        let handle = Server::builder()
            .workers(1)
            .unix_permissions(mode)
            .bind_unix(&path)
            .expect("bind_unix")
            .spawn(echo_lines)
            .expect("spawn");
        let actual = fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(actual, mode, "asked {mode:o}, got {actual:o}");
        // The owner may connect.
        let mut client = Client::connect(&path);
        assert_eq!(client.exchange("owner"), "owner");
        client.finish();
        client.expect_clean_end();
        handle.shutdown().expect("shutdown");
        assert!(!path.exists());
    }
}

// A symbolic link put in the socket's place right after the bind (to a
// file the server may write, here one of the test's) must not get the
// socket's permissions: `chmod(path)` follows links (issue #16). The
// link wins the race only sometimes, hence the rounds; whoever wins, the
// file it points to keeps its mode.
#[test]
fn a_link_swapped_in_for_the_socket_never_gets_its_permissions() {
    let dir = SocketDir::new("swap");
    let path = dir.path("s.sock");
    let victim = dir.path("victim");
    let link = dir.path("link");
    fs::write(&victim, "precious\n").unwrap();
    let mut replaced = 0;
    for round in 0..ROUNDS {
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let start = Arc::new(Barrier::new(2));
        let swapper = {
            let (start, path, link) = (Arc::clone(&start), path.clone(), link.clone());
            thread::spawn(move || {
                start.wait();
                // As soon as the socket's file is there, the link takes
                // its place (rename replaces at once).
                let deadline = std::time::Instant::now() + TIMEOUT;
                while !is_socket(&path) {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no socket file came within {TIMEOUT:?}"
                    );
                    std::hint::spin_loop();
                }
                fs::rename(&link, &path).expect("swap the link in");
            })
        };
        start.wait();
        let result = Server::builder()
            .workers(1)
            .unix_permissions(0o666)
            .bind_unix(&path);
        swapper.join().expect("the swapping thread");
        if result.is_err() {
            replaced += 1;
        }
        drop(result);
        let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "round {round}: the link's target got the socket's mode"
        );
        assert_eq!(
            fs::read_link(&path).ok().as_ref(),
            Some(&victim),
            "round {round}: the link was removed"
        );
        fs::remove_file(&path).unwrap();
    }
    eprintln!(
        "the server found its socket replaced, and refused it, in {replaced} of {ROUNDS} rounds"
    );
}

// ---------------------------------------------------------------------------
// 6. An adopted listener
// ---------------------------------------------------------------------------

#[test]
fn an_adopted_unix_listener_is_served_and_its_file_kept() {
    let dir = SocketDir::new("adopted");
    let path = dir.path("s.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    // The caller's own handle on the socket, as a service manager keeps.
    let kept = listener.try_clone().unwrap();
    let server = Server::builder()
        .workers(2)
        .from_unix_listener(listener)
        .expect("from_unix_listener");
    assert_eq!(server.local_addr(), Addr::Unix(Some(path.clone())));
    let handle = server.spawn(echo_lines).expect("spawn");

    let mut client = Client::connect(&path);
    assert_eq!(client.exchange("adopted"), "adopted");
    assert_eq!(client.exchange("quit"), "bye");
    client.expect_clean_end();
    let (_, stats) = util::stop(handle);
    assert_eq!(stats.completed, 1, "{stats:#?}");

    // The file is the caller's: still there, and the socket still listens
    // for the caller, back in blocking mode.
    assert!(is_socket(&path), "the adopted listener's file was removed");
    assert!(
        !socket2::SockRef::from(&kept).nonblocking().unwrap(),
        "the listener was left non-blocking"
    );
    let mut client = Client::connect(&path);
    client.send("after\n");
    let (stream, _) = kept.accept().expect("the caller's listener still listens");
    assert_eq!(Client::new(stream, TIMEOUT).line(), "after");
}

// ---------------------------------------------------------------------------
// 7. and 8. The examples
// ---------------------------------------------------------------------------

/// The path in a `listening on unix:PATH` line.
fn listening_path(line: &str) -> PathBuf {
    line.strip_prefix("listening on unix:")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("expected `listening on unix:PATH`, got {line:?}"))
}

#[test]
fn the_commands_example_serves_unix_path() {
    let dir = SocketDir::new("commands");
    let path = dir.path("s.sock");
    // A stale file from an earlier run is no obstacle.
    drop(UnixListener::bind(&path).expect("bind a listener"));
    let mut command = Command::new(example_path("commands"));
    command.arg(format!("unix:{}", path.display()));
    let process = Process::spawn(command);
    let listening = listening_path(&process.stdout_line());
    assert_eq!(listening, path);

    // Timeouts of PATIENCE: the example is another process, which a loaded
    // machine may schedule late.
    let mut client = Client::connect_with(&listening, PATIENCE);
    assert_eq!(client.exchange("ping"), "pong");
    // The example prints the peer's `Addr`: an unnamed Unix client.
    assert_eq!(client.exchange("whoami"), "you are unix:");
    assert_eq!(client.exchange("quit"), "bye");
    client.expect_clean_end();

    // A client still connected at SIGTERM is closed cleanly. It waits for
    // that on a thread and closes when it comes, as a real client would:
    // the example's gentle close waits for it before the process exits.
    let mut idle = Client::connect_with(&path, PATIENCE);
    assert_eq!(idle.exchange("ping"), "pong");
    let idle = thread::spawn(move || idle.expect_clean_end());
    process.terminate();
    idle.join().expect("the idle client saw a clean end");
    assert!(!path.exists(), "the example left its socket file behind");
}

#[test]
fn the_examples_refuse_a_bad_unix_address_with_one_line() {
    // No path: a bad argument, exit code 2.
    let (status, stdout, stderr) = support::run("commands", &["unix:"]);
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert!(
        stderr.starts_with("commands: ") && stderr.contains("'unix:'"),
        "stderr:\n{stderr}"
    );

    // A path taken by a live server: the server cannot start, exit code 1.
    let dir = SocketDir::new("busy");
    let path = dir.path("s.sock");
    let live = UnixListener::bind(&path).expect("bind the live listener");
    let addr = format!("unix:{}", path.display());
    let (status, stdout, stderr) = support::run("echo", &[&addr]);
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert!(
        stderr.starts_with(&format!("echo: failed to listen on {addr}: ")),
        "stderr:\n{stderr}"
    );
    assert!(is_socket(&path), "the live socket's file was removed");
    drop(live);

    // A regular file: kept, exit code 1.
    fs::remove_file(&path).unwrap();
    fs::write(&path, "data").unwrap();
    let (status, _, stderr) = support::run("echo", &[&addr]);
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "data");
}

#[cfg(target_os = "linux")]
#[test]
fn an_example_serves_a_unix_socket_systemd_socket_activate_passes() {
    let Some(tool) = activator() else {
        eprintln!(
            "SKIPPED an_example_serves_a_unix_socket_systemd_socket_activate_passes: \
             systemd-socket-activate is not installed (Debian package `systemd`)"
        );
        return;
    };
    let dir = SocketDir::new("activate");
    let path = dir.path("s.sock");
    let mut command = Command::new(tool);
    command.arg("--listen").arg(&path).arg(example_path("echo"));
    let process = Process::spawn(command);
    assert!(
        process.stderr_line_with("Listening on").is_some(),
        "systemd-socket-activate did not listen on {}",
        path.display()
    );
    // The activator holds the socket; the first connection makes it start
    // the example with it (LISTEN_FDS=1), which then serves this very
    // connection from the backlog.
    let mut client = Client::connect_with(&path, PATIENCE);
    assert_eq!(client.exchange("hello"), "hello");
    // It serves the passed socket, not its default 127.0.0.1:7878.
    assert_eq!(
        process.stdout_line(),
        format!("listening on unix:{}", path.display())
    );
    let mut second = Client::connect_with(&path, PATIENCE);
    assert_eq!(second.exchange("second"), "second");
    assert_eq!(client.exchange("first again"), "first again");
    for client in [client, second] {
        client.finish();
        client.expect_clean_end();
    }
    process.terminate();
    // The socket is the service manager's: the example leaves its file.
    assert!(is_socket(&path), "the example removed a socket it adopted");
}

/// The real HAProxy in front of a server on a Unix socket, as on one
/// machine: HAProxy takes the TCP clients and connects to the socket with
/// a PROXY v2 header, and `whoami` answers with the TCP client's address.
#[test]
fn behind_a_real_haproxy_on_a_unix_socket_whoami_names_the_real_client() {
    let Some(tool) = support::tool("haproxy") else {
        eprintln!(
            "SKIPPED behind_a_real_haproxy_on_a_unix_socket_whoami_names_the_real_client: \
             haproxy is not installed (Debian package `haproxy`)"
        );
        return;
    };
    let dir = SocketDir::new("haproxy");
    let path = dir.path("s.sock");
    let mut command = Command::new(example_path("commands"));
    command
        .arg(format!("unix:{}", path.display()))
        .arg("--proxy-protocol");
    let process = Process::spawn(command);
    assert_eq!(listening_path(&process.stdout_line()), path);

    let backend = path.to_str().expect("a UTF-8 path");
    let haproxy = support::Haproxy::start(&tool, backend, "send-proxy-v2");
    let client = std::net::TcpStream::connect(haproxy.addr).expect("connect to haproxy");
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let me = client.local_addr().unwrap();
    let mut writer = &client;
    writer.write_all(b"whoami\nquit\n").unwrap();
    let mut replies = BufReader::new(&client).lines();
    assert_eq!(replies.next().unwrap().unwrap(), format!("you are {me}"));
    assert_eq!(replies.next().unwrap().unwrap(), "bye");
    drop(haproxy);
    process.terminate();
}
