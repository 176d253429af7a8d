//! Binding: port 0, busy ports, rebinding after a shutdown, adopting a
//! listener, IPv6, `SO_REUSEPORT`, configuration errors, and which types
//! may cross threads.

mod util;

use std::error::Error as _;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use frontdesk::{
    Addr, Connection, Error, Overload, RejectedStats, Server, ServerBuilder, ServerControl,
    ServerHandle, ShutdownReport, Stats, MAX_QUEUE, MAX_WORKERS,
};
use util::{client, echo, exchange, read_line, tcp_addr, wait_until, LOCALHOST};

/// A handler that writes `tag` and a newline, then closes: the server closes
/// first, so the server's side of the connection goes to `TIME_WAIT`.
fn say(tag: &'static str) -> impl Fn(&mut Connection) -> io::Result<()> {
    move |conn: &mut Connection| writeln!(conn, "{tag}")
}

fn bind_error(result: frontdesk::Result<Server>) -> (Addr, io::Error) {
    match result {
        Err(Error::Bind { addr, source }) => (addr, source),
        other => panic!("expected Error::Bind, got {other:?}"),
    }
}

fn config_error(builder: ServerBuilder) -> &'static str {
    match builder.bind(LOCALHOST) {
        Err(Error::Config(message)) => message,
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

#[test]
fn port_zero_gets_a_port_that_local_addr_reports() {
    let server = Server::bind(LOCALHOST).unwrap();
    let addr = tcp_addr(server.local_addr());
    assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
    assert_ne!(addr.port(), 0);

    let handle = server.spawn(echo).unwrap();
    assert_eq!(handle.local_addr(), addr);
    let mut stream = client(addr);
    assert_eq!(exchange(&mut stream, "hello"), "hello");
    drop(stream);
    handle.shutdown().unwrap();
}

#[test]
fn clients_can_connect_between_bind_and_spawn() {
    // `bind` returns a listening socket: a client that connects before the
    // server runs waits in the backlog and is served once it does.
    let server = Server::bind(LOCALHOST).unwrap();
    let mut stream = client(server.local_addr());
    util::send_line(&mut stream, "early");
    let handle = server.spawn(echo).unwrap();
    assert_eq!(read_line(&mut stream), "early");
    drop(stream);
    handle.shutdown().unwrap();
}

#[test]
fn busy_port_is_bind_error_naming_the_address() {
    let first = Server::bind(LOCALHOST).unwrap();
    let taken = tcp_addr(first.local_addr());

    let (addr, source) = bind_error(Server::bind(taken));
    assert_eq!(addr, taken);
    assert_eq!(source.kind(), io::ErrorKind::AddrInUse);

    let error = Server::bind(taken).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&taken.to_string()), "{message}");
    // The cause is the source, not repeated in the message.
    let cause = error.source().expect("a bind error has a source");
    assert!(!message.contains(&cause.to_string()), "{message}");
}

#[test]
fn port_held_by_a_std_listener_is_bind_error() {
    let std_listener = TcpListener::bind(LOCALHOST).unwrap();
    let taken = std_listener.local_addr().unwrap();
    let (addr, source) = bind_error(Server::bind(taken));
    assert_eq!(addr, taken);
    assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
}

/// How many sockets with local port `port` are in `TIME_WAIT`.
#[cfg(target_os = "linux")]
fn time_wait_count(port: u16) -> usize {
    const TIME_WAIT: &str = "06";
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1].rsplit(':').next().unwrap();
            u16::from_str_radix(local_port, 16) == Ok(port) && fields[3] == TIME_WAIT
        })
        .count()
}

/// Serves a few clients with a handler that closes first, so that the
/// server's side of each connection is in `TIME_WAIT`, then shuts down.
fn leave_connections_in_time_wait(server: Server) -> SocketAddr {
    let addr = tcp_addr(server.local_addr());
    let handle = server.spawn(say("bye")).unwrap();
    for _ in 0..3 {
        let mut stream = client(addr);
        assert_eq!(read_line(&mut stream), "bye");
        util::assert_closed(&mut stream);
        // Our close answers the server's: its side goes to TIME_WAIT.
    }
    handle.shutdown().unwrap();
    // Check the premise: without it this test would prove nothing.
    #[cfg(target_os = "linux")]
    wait_until("the server's connections are in TIME_WAIT", || {
        time_wait_count(addr.port()) >= 3
    });
    addr
}

#[test]
fn restarted_server_binds_the_port_while_old_connections_are_in_time_wait() {
    let addr = leave_connections_in_time_wait(Server::bind(LOCALHOST).unwrap());

    // Right after `shutdown` has returned.
    let server = Server::bind(addr).expect("rebind while connections are in TIME_WAIT");
    let handle = server.spawn(say("again")).unwrap();
    assert_eq!(read_line(&mut client(addr)), "again");
    handle.shutdown().unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn without_reuse_address_a_port_in_time_wait_stays_busy() {
    // The counterpart of the test above: it is SO_REUSEADDR (on by default)
    // that makes the rebind work.
    let addr = leave_connections_in_time_wait(Server::bind(LOCALHOST).unwrap());
    let (_, source) = bind_error(Server::builder().reuse_address(false).bind(addr));
    assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
}

#[test]
fn from_listener_adopts_a_std_listener() {
    let listener = TcpListener::bind(LOCALHOST).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::from_listener(listener).unwrap();
    assert_eq!(server.local_addr(), addr);

    let handle = server.spawn(echo).unwrap();
    assert_eq!(exchange(&mut client(addr), "adopted"), "adopted");
    let (report, stats) = util::stop(handle);
    assert_eq!(report.forced, 0);
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.accept_errors, 0);
}

#[test]
fn from_listener_makes_a_nonblocking_listener_block() {
    let listener = TcpListener::bind(LOCALHOST).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Server::builder()
        .workers(2)
        .from_listener(listener)
        .unwrap()
        .spawn(echo)
        .unwrap();

    for i in 0..3 {
        let line = format!("request {i}");
        assert_eq!(exchange(&mut client(addr), &line), line);
    }
    let (_, stats) = util::stop(handle);
    assert_eq!(stats.accepted, 3);
    // A listener left nonblocking would make `accept` fail with WouldBlock
    // over and over (a busy loop), each failure counted here.
    assert_eq!(stats.accept_errors, 0);
}

#[test]
fn from_listener_checks_the_configuration() {
    let listener = TcpListener::bind(LOCALHOST).unwrap();
    let result = Server::builder().workers(0).from_listener(listener);
    assert!(matches!(result, Err(Error::Config(_))), "{result:?}");
}

/// Binds `addr` on IPv6, or returns `None` when this machine has no IPv6
/// loopback (then the IPv6 tests pass without checking anything).
fn bind_v6(builder: ServerBuilder, addr: &str) -> Option<frontdesk::Result<Server>> {
    match Server::bind("[::1]:0") {
        Ok(_) => Some(builder.bind(addr)),
        Err(Error::Bind { source, .. })
            if matches!(
                source.kind(),
                io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
            ) || source.raw_os_error() == Some(97) =>
        {
            // 97 is EAFNOSUPPORT on Linux: no IPv6 in this kernel.
            eprintln!("skipped: no IPv6 loopback here ({source})");
            None
        }
        Err(error) => panic!("binding [::1]:0 failed: {error:?}"),
    }
}

#[test]
fn ipv6_loopback_works() {
    let Some(server) = bind_v6(Server::builder(), "[::1]:0") else {
        return;
    };
    let handle = server.unwrap().spawn(echo).unwrap();
    let addr = tcp_addr(handle.local_addr());
    assert!(addr.is_ipv6() && addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0);
    assert_eq!(exchange(&mut client(addr), "over v6"), "over v6");
    handle.shutdown().unwrap();
}

#[test]
fn only_v6_is_honoured() {
    // An IPv4-mapped address (`::ffff:127.0.0.1`) stays on loopback and
    // shows the option: an IPv6 socket may bind it only with IPV6_V6ONLY
    // off, and it then serves IPv4 clients.
    let mapped = "[::ffff:127.0.0.1]:0";
    let Some(refused) = bind_v6(Server::builder(), mapped) else {
        return;
    };
    assert!(
        matches!(refused, Err(Error::Bind { .. })),
        "only_v6 is on by default, so a mapped address cannot be bound: {refused:?}"
    );
    let refused = Server::builder().only_v6(true).bind(mapped);
    assert!(matches!(refused, Err(Error::Bind { .. })), "{refused:?}");

    let server = Server::builder().only_v6(false).bind(mapped).unwrap();
    let port = tcp_addr(server.local_addr()).port();
    let handle = server
        .spawn(|conn: &mut Connection| writeln!(conn, "{}", conn.peer_addr()))
        .unwrap();
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let peer = read_line(&mut client(v4));
    assert!(peer.starts_with("[::ffff:127.0.0.1]:"), "{peer}");
    handle.shutdown().unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn reuse_port_lets_two_servers_bind_one_port() {
    let a = Server::builder().reuse_port(true).bind(LOCALHOST).unwrap();
    let addr = tcp_addr(a.local_addr());
    // Without the option on both sockets the port is taken.
    let (_, source) = bind_error(Server::bind(addr));
    assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
    let b = Server::builder().reuse_port(true).bind(addr).unwrap();
    assert_eq!(b.local_addr(), addr);

    // Serve on `a` once `b` has closed its listener.
    drop(b);
    let a = a.spawn(say("a")).unwrap();
    assert_eq!(read_line(&mut client(addr)), "a");
    a.shutdown().unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn reuse_port_servers_serve_together_and_shut_down_one_at_a_time() {
    let a = Server::builder().reuse_port(true).bind(LOCALHOST).unwrap();
    let addr = tcp_addr(a.local_addr());
    let b = Server::builder().reuse_port(true).bind(addr).unwrap();
    let a = a.spawn(say("a")).unwrap();
    let b = b.spawn(say("b")).unwrap();
    // The kernel spreads clients between the two by a hash of the
    // addresses; each is served by one of them.
    for _ in 0..4 {
        let tag = read_line(&mut client(addr));
        assert!(tag == "a" || tag == "b", "{tag}");
    }

    // The wake-up connection of a portable shutdown may reach `b`'s
    // listener instead of `a`'s; shutdown must not depend on it. Shut `a`
    // down on another thread so that a hang fails the test.
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || done_tx.send(a.shutdown().map(|_| ())));
    done.recv_timeout(util::TIMEOUT)
        .expect("shutting down one of two SO_REUSEPORT servers finishes")
        .unwrap();
    // With `a` gone, `b` serves everyone.
    for _ in 0..4 {
        assert_eq!(read_line(&mut client(addr)), "b");
    }
    b.shutdown().unwrap();
}

#[test]
fn invalid_configuration_is_config_error_not_panic() {
    assert!(config_error(Server::builder().workers(0)).contains("workers"));
    assert!(config_error(Server::builder().workers(MAX_WORKERS + 1)).contains("workers"));
    assert!(config_error(Server::builder().queue(MAX_QUEUE + 1)).contains("queue"));
    assert!(config_error(Server::builder().queue(usize::MAX)).contains("queue"));
    assert!(config_error(Server::builder().max_connections(0)).contains("max_connections"));
    assert!(config_error(Server::builder().backlog(u32::MAX)).contains("backlog"));
}

#[test]
fn limits_themselves_are_valid_configuration() {
    // Only bound, never spawned: nothing is allocated for the queue yet.
    Server::builder()
        .workers(MAX_WORKERS)
        .queue(MAX_QUEUE)
        .max_connections(1)
        .bind(LOCALHOST)
        .unwrap();
    Server::builder()
        .workers(1)
        .queue(0)
        .overload(Overload::Reject)
        .bind(LOCALHOST)
        .unwrap();
}

#[test]
fn config_error_message_says_what_is_wrong() {
    let error = Server::builder().workers(0).bind(LOCALHOST).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration: `workers` must be at least 1"
    );
}

#[test]
fn is_send_and_sync() {
    fn is_send_and_sync<T: Send + Sync>() {}
    is_send_and_sync::<ServerHandle>();
    is_send_and_sync::<ServerControl>();
    is_send_and_sync::<Server>();
    is_send_and_sync::<ServerBuilder>();
    is_send_and_sync::<Error>();
    is_send_and_sync::<Stats>();
    is_send_and_sync::<RejectedStats>();
    is_send_and_sync::<ShutdownReport>();
    is_send_and_sync::<Overload>();
}
