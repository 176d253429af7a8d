//! Several listeners on one server (`ServerBuilder::listen`): two TCP
//! listeners (one bound, one adopted) and a Unix socket, in both modes;
//! each connection knows its listener; per-listener TLS and PROXY
//! settings; one `max_connections`, one pause and one shutdown for all;
//! fairness between a flooded listener and a quiet one; the builder's
//! errors.
//!
//! Unix only: every server here has a Unix listener beside its TCP ones.

#![cfg(unix)]

#[cfg(feature = "tls")]
mod tls_util;
mod util;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use frontdesk::{
    Addr, Connection, Error, LineError, Lines, Listen, Next, RejectReason, Rejected, Server,
    ServerBuilder, ServerHandle, Turn, TurnHandler,
};
use util::{assert_accounted, read_request_line, tcp_addr, wait_for_stats, TIMEOUT};

/// What every handler here says first: the listener's index and how it
/// prints (its name, or its address), the client's address, and the
/// connection's id.
fn welcome(index: usize, listener: &dyn std::fmt::Display, peer: &Addr, id: u64) -> String {
    format!("welcome listener={index} via={listener} peer={peer} id={id}\n")
}

/// The `Handler` mode: the welcome, then `echo LINE` for each line until
/// the client closes.
fn host(conn: &mut Connection) -> io::Result<()> {
    let listener = conn.listener().clone();
    let line = welcome(listener.index(), &listener, &conn.peer_addr(), conn.id());
    conn.write_all(line.as_bytes())?;
    while let Some(line) = read_request_line(conn)? {
        conn.write_all(format!("echo {line}\n").as_bytes())?;
    }
    Ok(())
}

/// The welcome, and the end: in the `Handler` mode a client that stays
/// connected holds a worker, and a test with more clients than workers
/// needs each to let go.
fn greet_once(conn: &mut Connection) -> io::Result<()> {
    let listener = conn.listener().clone();
    let line = welcome(listener.index(), &listener, &conn.peer_addr(), conn.id());
    conn.write_all(line.as_bytes())
}

/// [`host`] in the turn mode; `Peer::listener` must agree with
/// `Turn::listener`.
struct TurnHost;

impl TurnHandler for TurnHost {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        let listener = turn.listener().clone();
        assert_eq!(turn.peer().listener(), &listener);
        turn.send(welcome(
            listener.index(),
            &listener,
            &turn.peer_addr(),
            turn.id(),
        ))?;
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

fn busy_hook(conn: &mut Rejected) -> io::Result<()> {
    assert_eq!(conn.reason(), RejectReason::MaxConnections);
    conn.write_all(b"error: server busy\n")
}

fn spawn(mode: Mode, server: Server) -> ServerHandle {
    match mode {
        Mode::Handler => server.spawn(host).unwrap(),
        Mode::Turns => server.spawn_turns(TurnHost).unwrap(),
    }
}

/// A directory for one test's Unix sockets, short enough for `sun_path`,
/// removed when dropped.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new(tag: &str) -> SocketDir {
        let name = format!("ls-{}-{tag}", std::process::id());
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&name);
        // `sun_path` holds 104 bytes on the BSDs; leave room for a name.
        let dir = match target.as_os_str().len() < 90 {
            true => target,
            false => std::env::temp_dir().join(&name),
        };
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        SocketDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A client of either family, with timeouts, reading lines.
enum Client {
    Tcp(BufReader<TcpStream>),
    Unix(BufReader<UnixStream>),
}

impl Client {
    fn connect(addr: &Addr) -> Client {
        match addr {
            Addr::Tcp(addr) => Client::Tcp(BufReader::new(util::client(addr))),
            Addr::Unix(Some(path)) => {
                let stream = UnixStream::connect(path).unwrap();
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(TIMEOUT)).unwrap();
                Client::Unix(BufReader::new(stream))
            }
            other => panic!("cannot connect to {other}"),
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let read = match self {
            Client::Tcp(reader) => reader.read_line(&mut line),
            Client::Unix(reader) => reader.read_line(&mut line),
        };
        read.unwrap_or_else(|e| panic!("read a line: {e}"));
        assert!(line.ends_with('\n'), "a whole line, got {line:?}");
        line.trim_end().to_string()
    }

    fn send(&mut self, line: &str) {
        let bytes = format!("{line}\n");
        match self {
            Client::Tcp(reader) => reader.get_mut().write_all(bytes.as_bytes()).unwrap(),
            Client::Unix(reader) => reader.get_mut().write_all(bytes.as_bytes()).unwrap(),
        }
    }

    /// The welcome's fields: `(listener index, via, peer, id)`.
    fn welcomed(&mut self) -> (usize, String, String, u64) {
        let line = self.line();
        let field = |name: &str| -> String {
            line.split(' ')
                .find_map(|word| word.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_string()
        };
        assert!(line.starts_with("welcome "), "{line:?}");
        (
            field("listener").parse().unwrap(),
            field("via"),
            field("peer"),
            field("id").parse().unwrap(),
        )
    }

    /// Reads to the end, which must be clean (no reset).
    fn clean_end(&mut self) -> String {
        let mut rest = String::new();
        match self {
            Client::Tcp(reader) => reader.read_to_string(&mut rest),
            Client::Unix(reader) => reader.read_to_string(&mut rest),
        }
        .unwrap_or_else(|e| panic!("a clean end, got {e}"));
        rest
    }

    /// Nothing arrives for `util::QUIET`: the one bounded wait here, to
    /// show a client is not served (it would be within milliseconds).
    fn silent(&mut self) {
        let result = match self {
            Client::Tcp(reader) => {
                reader
                    .get_ref()
                    .set_read_timeout(Some(util::QUIET))
                    .unwrap();
                let result = reader.get_mut().read(&mut [0; 64]);
                reader.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
                result
            }
            Client::Unix(reader) => {
                reader
                    .get_ref()
                    .set_read_timeout(Some(util::QUIET))
                    .unwrap();
                let result = reader.get_mut().read(&mut [0; 64]);
                reader.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
                result
            }
        };
        match result {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }
}

/// A server on three listeners: TCP bound and named `front`, TCP adopted
/// (unnamed), and a Unix socket named `local`.
fn three_listeners(builder: ServerBuilder, dir: &SocketDir) -> Server {
    let adopted = TcpListener::bind(util::LOCALHOST).unwrap();
    builder
        .listen(Listen::tcp(util::LOCALHOST).name("front"))
        .listen(Listen::from_tcp(adopted))
        .listen(Listen::unix(dir.path("s.sock")).name("local"))
        .build()
        .unwrap()
}

#[test]
fn clients_on_every_listener_are_served_and_told_apart() {
    for mode in MODES {
        let dir = SocketDir::new("every");
        let server = three_listeners(Server::builder(), &dir);
        let addrs = server.local_addrs();
        assert_eq!(addrs.len(), 3);
        assert_eq!(server.local_addr(), addrs[0], "the first one's");
        assert_eq!(addrs[2], Addr::Unix(Some(dir.path("s.sock"))));
        let names: Vec<Option<String>> = server
            .listeners()
            .iter()
            .map(|l| l.name().map(str::to_string))
            .collect();
        assert_eq!(names, [Some("front".into()), None, Some("local".into())]);
        let handle = spawn(mode, server);
        assert_eq!(handle.local_addrs(), addrs);
        assert_eq!(handle.control().local_addrs(), addrs);

        let mut clients: Vec<Client> = addrs.iter().map(Client::connect).collect();
        let expected_via = ["front".to_string(), addrs[1].to_string(), "local".into()];
        for (index, client) in clients.iter_mut().enumerate() {
            let (listener, via, peer, _) = client.welcomed();
            assert_eq!(listener, index, "{mode:?}");
            assert_eq!(via, expected_via[index], "{mode:?}");
            match index {
                2 => assert!(peer.starts_with("unix:"), "{peer}"),
                _ => assert!(peer.starts_with("127.0.0.1:"), "{peer}"),
            }
            client.send("hi");
            assert_eq!(client.line(), "echo hi");
        }
        drop(clients);
        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.completed, 3, "{mode:?}: {stats:?}");
        assert!(!dir.path("s.sock").exists(), "the socket file is removed");
        assert!(!dir.path("s.sock.lock").exists(), "and its lock file");
    }
}

/// Shutdown with a client on every listener: each gets the answer to
/// what it sent before the stop, then a clean end; the bound sockets are
/// closed, the adopted one keeps listening, the Unix file is gone.
#[test]
fn shutdown_drains_the_clients_of_every_listener() {
    for mode in MODES {
        let dir = SocketDir::new("shutdown");
        let adopted = TcpListener::bind(util::LOCALHOST).unwrap();
        let kept = adopted.try_clone().unwrap();
        let server = Server::builder()
            .listen(Listen::tcp(util::LOCALHOST))
            .listen(Listen::from_tcp(adopted))
            .listen(Listen::unix(dir.path("s.sock")))
            .build()
            .unwrap();
        let addrs = server.local_addrs();
        let handle = spawn(mode, server);
        let mut clients: Vec<Client> = addrs.iter().map(Client::connect).collect();
        for client in &mut clients {
            client.welcomed();
            client.send("last");
        }
        let (report, stats) = util::stop(handle);
        for client in &mut clients {
            assert_eq!(client.line(), "echo last", "{mode:?}");
            assert_eq!(client.clean_end(), "", "{mode:?}");
        }
        assert_eq!(report.forced, 0, "{mode:?}: {report:?}");
        assert_accounted(&stats);
        assert_eq!(stats.completed, 3, "{mode:?}");
        assert!(TcpStream::connect(tcp_addr(addrs[0].clone())).is_err());
        // Adopted: still listening, back in blocking mode, for its owner.
        let _waiting = TcpStream::connect(tcp_addr(addrs[1].clone())).unwrap();
        assert!(kept.accept().is_ok());
        assert!(!dir.path("s.sock").exists());
    }
}

/// One `max_connections` for all the listeners.
#[test]
fn max_connections_is_shared_across_listeners() {
    for mode in MODES {
        let dir = SocketDir::new("max");
        let server = three_listeners(
            Server::builder().max_connections(2).on_reject(busy_hook),
            &dir,
        );
        let addrs = server.local_addrs();
        let handle = spawn(mode, server);
        let mut first = Client::connect(&addrs[0]);
        first.welcomed();
        let mut second = Client::connect(&addrs[2]);
        second.welcomed();
        for addr in &addrs {
            let mut refused = Client::connect(addr);
            assert_eq!(refused.line(), "error: server busy", "{mode:?} {addr}");
            assert_eq!(refused.clean_end(), "");
        }
        drop(first);
        wait_for_stats(&handle, "one connection ended", |s| s.completed == 1);
        let mut third = Client::connect(&addrs[1]);
        assert_eq!(third.welcomed().0, 1);
        drop((second, third));
        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.rejected.max_connections, 3, "{mode:?}: {stats:?}");
    }
}

/// A pause holds every listener's new clients in its backlog; the resume
/// lets them all in.
#[test]
fn pause_and_resume_cover_every_listener() {
    for mode in MODES {
        let dir = SocketDir::new("pause");
        let server = three_listeners(Server::builder(), &dir);
        let addrs = server.local_addrs();
        let control = server.control();
        let handle = spawn(mode, server);
        control.pause();
        let mut waiting: Vec<Client> = addrs.iter().map(Client::connect).collect();
        for client in &mut waiting {
            client.silent();
        }
        assert_eq!(handle.stats().accepted, 0, "{mode:?}");
        control.resume();
        let mut seen: Vec<usize> = waiting.iter_mut().map(|c| c.welcomed().0).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2], "{mode:?}");
        drop(waiting);
        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.accepted, 3);
    }
}

/// A flooded listener does not starve a quiet one: with 60 clients
/// waiting on the first and one on the second when accepting resumes,
/// the second's client is among the first accepted (a round takes at
/// most 16 from one listener), not the 61st.
#[test]
fn a_busy_listener_does_not_starve_another() {
    for mode in MODES {
        let server = Server::builder()
            .listen(Listen::tcp(util::LOCALHOST))
            .listen(Listen::tcp(util::LOCALHOST))
            .build()
            .unwrap();
        let addrs = server.local_addrs();
        let control = server.control();
        control.pause();
        let handle = match mode {
            Mode::Handler => server.spawn(greet_once).unwrap(),
            Mode::Turns => server.spawn_turns(TurnHost).unwrap(),
        };
        let mut flood: Vec<Client> = (0..60).map(|_| Client::connect(&addrs[0])).collect();
        let mut quiet = Client::connect(&addrs[1]);
        control.resume();
        let (listener, _, _, id) = quiet.welcomed();
        assert_eq!(listener, 1);
        assert!(
            id <= 17,
            "{mode:?}: the quiet listener's client was accepted {id}th"
        );
        for client in &mut flood {
            assert_eq!(client.welcomed().0, 0);
        }
        drop((flood, quiet));
        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.accepted, 61);
    }
}

/// PROXY on one listener only: behind it the header names the client;
/// on the other, a PROXY line is just a line.
#[test]
fn proxy_protocol_on_one_listener_only() {
    for mode in MODES {
        let server = Server::builder()
            .listen(Listen::tcp(util::LOCALHOST).name("direct"))
            .listen(
                Listen::tcp(util::LOCALHOST)
                    .name("proxied")
                    .proxy_protocol(true),
            )
            .build()
            .unwrap();
        let addrs = server.local_addrs();
        let handle = spawn(mode, server);

        let mut proxied = util::client(tcp_addr(addrs[1].clone()));
        proxied
            .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 4567 80\r\n")
            .unwrap();
        let mut proxied = Client::Tcp(BufReader::new(proxied));
        let (_, via, peer, _) = proxied.welcomed();
        assert_eq!((via.as_str(), peer.as_str()), ("proxied", "192.0.2.7:4567"));

        let mut direct = Client::connect(&addrs[0]);
        let (_, via, peer, _) = direct.welcomed();
        assert_eq!(via, "direct");
        assert!(peer.starts_with("127.0.0.1:"), "{peer}");
        direct.send("PROXY TCP4 192.0.2.7 198.51.100.1 4567 80");
        assert_eq!(
            direct.line(),
            "echo PROXY TCP4 192.0.2.7 198.51.100.1 4567 80"
        );

        // The builder's setting is the default a listener can turn off.
        drop((proxied, direct));
        let (_, stats) = util::stop(handle);
        assert_accounted(&stats);
        assert_eq!(stats.rejected.proxy, 0, "{mode:?}: {stats:?}");
    }
    let server = Server::builder()
        .proxy_protocol(true)
        .listen(Listen::tcp(util::LOCALHOST))
        .listen(Listen::tcp(util::LOCALHOST).proxy_protocol(false))
        .build()
        .unwrap();
    let addrs = server.local_addrs();
    let handle = spawn(Mode::Handler, server);
    let mut direct = Client::connect(&addrs[1]);
    assert!(direct.welcomed().2.starts_with("127.0.0.1:"));
    let mut inherits = util::client(tcp_addr(addrs[0].clone()));
    inherits.write_all(b"hello\r\n").unwrap();
    // No header: closed without a welcome, counted.
    let mut rest = Vec::new();
    let _ = inherits.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    drop(direct);
    let (_, stats) = util::stop(handle);
    assert_eq!(stats.rejected.proxy, 1, "{stats:?}");
}

/// A plain and a TLS listener on one server, in both modes; and the other
/// way round, a TLS builder with one listener that opts out.
#[cfg(feature = "tls")]
#[test]
fn a_plain_and_a_tls_listener_on_one_server() {
    let certs = tls_util::Certs::new("listeners");
    let client_config = certs.client_config();
    for mode in MODES {
        for tls_on_builder in [false, true] {
            let (builder, plain, secure) = match tls_on_builder {
                false => (
                    Server::builder(),
                    Listen::tcp(util::LOCALHOST),
                    Listen::tcp(util::LOCALHOST).tls(certs.tls_config()),
                ),
                true => (
                    Server::builder().tls(certs.tls_config()),
                    Listen::tcp(util::LOCALHOST).tls(None),
                    Listen::tcp(util::LOCALHOST),
                ),
            };
            let server = builder.listen(plain).listen(secure).build().unwrap();
            let addrs = server.local_addrs();
            let handle = spawn(mode, server);

            let mut plain = Client::connect(&addrs[0]);
            assert_eq!(plain.welcomed().0, 0, "{mode:?}");
            plain.send("clear");
            assert_eq!(plain.line(), "echo clear");

            let stream = tls_util::connect(tcp_addr(addrs[1].clone()), &client_config);
            let mut secure = BufReader::new(stream);
            let mut line = String::new();
            secure.read_line(&mut line).unwrap();
            assert!(
                line.starts_with("welcome listener=1 "),
                "{mode:?}: {line:?}"
            );
            secure.get_mut().write_all(b"secret\n").unwrap();
            line.clear();
            secure.read_line(&mut line).unwrap();
            assert_eq!(line, "echo secret\n");

            drop((plain, secure));
            let (_, stats) = util::stop(handle);
            assert_accounted(&stats);
            assert_eq!(stats.completed, 2, "{mode:?}: {stats:?}");
            assert_eq!(stats.rejected.tls, 0, "{mode:?}: {stats:?}");
        }
    }
}

/// IPv6 loopback beside IPv4, when the machine has it.
#[test]
fn ipv4_and_ipv6_on_one_server() {
    let server = match Server::builder()
        .listen(Listen::tcp("127.0.0.1:0"))
        .listen(Listen::tcp("[::1]:0"))
        .build()
    {
        Ok(server) => server,
        Err(error) => {
            eprintln!("SKIPPED ipv4_and_ipv6_on_one_server: cannot bind [::1] ({error})");
            return;
        }
    };
    let addrs = server.local_addrs();
    let handle = spawn(Mode::Handler, server);
    let mut v6 = Client::connect(&addrs[1]);
    let (listener, _, peer, _) = v6.welcomed();
    assert_eq!(listener, 1);
    assert!(peer.starts_with("[::1]:"), "{peer}");
    drop(v6);
    util::stop(handle);
}

#[test]
fn build_without_a_listener_is_a_config_error() {
    let error = Server::builder().build().unwrap_err();
    assert!(
        matches!(error, Error::Config(message) if message.contains("no listener")),
        "{error:?}"
    );
}

/// `bind` and its siblings add their listener after those added before.
#[test]
fn a_terminal_call_adds_its_listener_after_the_others() {
    let dir = SocketDir::new("terminal");
    let server = Server::builder()
        .listen(Listen::unix(dir.path("a.sock")))
        .bind(util::LOCALHOST)
        .unwrap();
    let addrs = server.local_addrs();
    assert_eq!(addrs[0], Addr::Unix(Some(dir.path("a.sock"))));
    assert!(matches!(addrs[1], Addr::Tcp(_)));
    drop(server);
    assert!(
        !dir.path("a.sock").exists(),
        "removed with the unused server"
    );

    let other = TcpListener::bind(util::LOCALHOST).unwrap();
    let other_addr = other.local_addr().unwrap();
    let server = Server::builder()
        .listen(Listen::tcp(util::LOCALHOST))
        .from_listener(other)
        .unwrap();
    assert_eq!(server.local_addrs()[1], Addr::Tcp(other_addr));
}

/// When one listener cannot be opened, `build` fails with its error and
/// closes those opened before it (their socket files removed).
#[test]
fn a_listener_that_fails_closes_those_opened_before() {
    let dir = SocketDir::new("fails");
    let taken = TcpListener::bind(util::LOCALHOST).unwrap();
    let taken_addr: SocketAddr = taken.local_addr().unwrap();
    let error = Server::builder()
        .reuse_address(false)
        .listen(Listen::unix(dir.path("a.sock")))
        .listen(Listen::tcp(taken_addr))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, Error::Bind { addr, .. } if *addr == Addr::Tcp(taken_addr)),
        "{error:?}"
    );
    assert!(!dir.path("a.sock").exists());
    // The path is free again.
    let server = Server::builder()
        .listen(Listen::unix(dir.path("a.sock")))
        .build()
        .unwrap();
    drop(server);

    let error = Server::builder()
        .listen(Listen::tcp("127.0.0.1:notaport"))
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Resolve { .. }), "{error:?}");
}

/// A builder clone shares an adopted listener: each build adopts the
/// same socket (the clone's through a duplicate descriptor).
#[test]
fn a_cloned_builder_adopts_the_same_socket() {
    let listener = TcpListener::bind(util::LOCALHOST).unwrap();
    let addr = listener.local_addr().unwrap();
    let builder = Server::builder().listen(Listen::from_tcp(listener));
    let first = builder.clone().build().unwrap();
    assert_eq!(first.local_addr(), Addr::Tcp(addr));
    let handle = spawn(Mode::Handler, first);
    let mut client = Client::connect(&Addr::Tcp(addr));
    assert_eq!(client.welcomed().0, 0);
    drop(client);
    util::stop(handle);
    // The last owner takes the socket itself.
    let second = builder.build().unwrap();
    let handle = spawn(Mode::Handler, second);
    let mut client = Client::connect(&Addr::Tcp(addr));
    assert_eq!(client.welcomed().0, 0);
    drop(client);
    util::stop(handle);
}

/// A listener that breaks ends the server with `Error::Accept`, which
/// names it, whichever of several it is. Here the second listener is shut
/// down under the server through a second descriptor of its socket, which
/// makes Linux report it ready and `accept` fail with `EINVAL`.
#[cfg(target_os = "linux")]
#[test]
fn a_broken_listener_ends_the_server_with_an_error_naming_it() {
    let healthy = TcpListener::bind(util::LOCALHOST).unwrap();
    let broken = TcpListener::bind(util::LOCALHOST).unwrap();
    let broken_addr = broken.local_addr().unwrap();
    let ours = broken.try_clone().unwrap();
    let server = Server::builder()
        .listen(Listen::from_tcp(healthy))
        .listen(Listen::from_tcp(broken))
        .build()
        .unwrap();
    let handle = spawn(Mode::Handler, server);
    socket2::SockRef::from(&ours)
        .shutdown(std::net::Shutdown::Both)
        .unwrap();
    match handle.join() {
        Err(Error::Accept {
            listener: Some(addr),
            source,
        }) => {
            assert_eq!(addr, Addr::Tcp(broken_addr));
            assert_eq!(source.kind(), io::ErrorKind::InvalidInput, "{source}");
        }
        other => panic!("expected an accept error naming {broken_addr}, got {other:?}"),
    }
}
