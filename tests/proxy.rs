//! The PROXY protocol: headers of both versions, however they are split
//! across segments, garbage, untrusted peers, TLVs, in both modes; a
//! connection waiting for its header counts against `max_connections`,
//! and in the turn mode waits parked, holding no worker — and the real
//! HAProxy in front of the `commands` example, with `send-proxy` and
//! `send-proxy-v2`.
//!
//! The HAProxy test needs `haproxy` (Debian package `haproxy`, which
//! `.ci/run` installs when missing); without it, it says so on stderr and
//! passes without running.

mod support;
mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use frontdesk::{
    Connection, Next, RejectReason, Rejected, Server, ServerBuilder, ServerHandle, Turn,
    TurnHandler,
};
use util::{read_line, read_to_clean_end, wait_for_stats, TIMEOUT};

/// Answers `<peer> <proxy> <tlvs>` and what the client sent after the
/// header, then closes.
fn describe(conn: &mut Connection) -> io::Result<()> {
    let proxy = conn
        .proxy()
        .expect("the server requires the PROXY protocol")
        .clone();
    let tlvs: Vec<String> = proxy
        .tlvs()
        .map(|(kind, value)| format!("{kind:#04x}={}", String::from_utf8_lossy(value)))
        .collect();
    let mut rest = [0u8; 5];
    conn.read_exact(&mut rest)?;
    let line = format!(
        "{} {} [{}] {}\n",
        conn.peer_addr(),
        proxy.proxy(),
        tlvs.join(","),
        String::from_utf8_lossy(&rest)
    );
    conn.write_all(line.as_bytes())
}

/// [`describe`] in the turn mode: the bytes after the header are
/// gathered across turns, then answered the same way.
struct Describe;

impl TurnHandler for Describe {
    type State = Vec<u8>;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Vec<u8>> {
        assert!(turn.proxy().is_some(), "open runs once the header is read");
        Ok(Vec::new())
    }

    fn ready(&self, rest: &mut Vec<u8>, turn: &mut Turn<'_>) -> io::Result<Next> {
        let mut buf = [0u8; 5];
        while rest.len() < 5 {
            let want = 5 - rest.len();
            match turn.read(&mut buf[..want]) {
                Ok(0) => return Ok(Next::Close),
                Ok(n) => rest.extend_from_slice(&buf[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(Next::Park),
                Err(error) => return Err(error),
            }
        }
        let proxy = turn
            .proxy()
            .expect("the server requires the PROXY protocol");
        let tlvs: Vec<String> = proxy
            .tlvs()
            .map(|(kind, value)| format!("{kind:#04x}={}", String::from_utf8_lossy(value)))
            .collect();
        let line = format!(
            "{} {} [{}] {}\n",
            turn.peer_addr(),
            proxy.proxy(),
            tlvs.join(","),
            String::from_utf8_lossy(rest)
        );
        turn.send(line)?;
        Ok(Next::Close)
    }
}

/// Which handler serves: [`describe`] or [`Describe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Handler,
    Turns,
}

const MODES: [Mode; 2] = [Mode::Handler, Mode::Turns];

/// Spawns `builder`, with the PROXY protocol on, in `mode`.
fn serve_in(mode: Mode, builder: ServerBuilder) -> ServerHandle {
    let server = builder.proxy_protocol(true).bind(util::LOCALHOST).unwrap();
    match mode {
        Mode::Handler => server.spawn(describe).unwrap(),
        Mode::Turns => server.spawn_turns(Describe).unwrap(),
    }
}

fn serve(builder: ServerBuilder) -> ServerHandle {
    serve_in(Mode::Handler, builder.workers(2))
}

/// Sends `bytes` one at a time, each in its own segment, so the server
/// sees the header arrive in as many pieces as it has bytes.
fn send_bytewise(stream: &mut TcpStream, bytes: &[u8]) {
    stream.set_nodelay(true).unwrap();
    for byte in bytes {
        stream.write_all(std::slice::from_ref(byte)).unwrap();
    }
}

/// A v2 header for TCP over IPv4 from 192.0.2.7:4567 to 198.51.100.1:80,
/// with one TLV (`PP2_TYPE_AUTHORITY`, "lobby.example").
fn v2_header() -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21); // version 2, PROXY
    header.push(0x11); // TCP over IPv4
    let authority = b"lobby.example";
    let length = 12 + 3 + authority.len();
    header.extend_from_slice(&u16::try_from(length).unwrap().to_be_bytes());
    header.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 1]);
    header.extend_from_slice(&4567u16.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    header.push(0x02);
    header.extend_from_slice(&u16::try_from(authority.len()).unwrap().to_be_bytes());
    header.extend_from_slice(authority);
    header
}

// In the turn mode each byte of the header may wake the parked connection
// on its own: what was taken so far waits for the rest between turns.
#[test]
fn a_v1_header_split_into_single_bytes_names_the_client() {
    for mode in MODES {
        let handle = serve_in(mode, Server::builder().workers(2));
        let mut client = util::client(handle.local_addr());
        let mut sent = b"PROXY TCP4 192.0.2.7 198.51.100.1 4567 80\r\n".to_vec();
        sent.extend_from_slice(b"hello");
        send_bytewise(&mut client, &sent);
        let reply = String::from_utf8(read_to_clean_end(&mut client)).unwrap();
        let proxy = client.local_addr().unwrap();
        // The bytes after the header reach the handler, none of the header.
        assert_eq!(
            reply,
            format!("192.0.2.7:4567 {proxy} [] hello\n"),
            "{mode:?}"
        );
        drop(client);
        let (_, stats) = util::stop(handle);
        util::assert_accounted(&stats);
        assert_eq!(stats.completed, 1, "{mode:?}: {stats:?}");
    }
}

#[test]
fn a_v2_header_split_into_single_bytes_names_the_client_and_keeps_its_tlvs() {
    for mode in MODES {
        let handle = serve_in(mode, Server::builder().workers(2));
        let mut client = util::client(handle.local_addr());
        let mut sent = v2_header();
        sent.extend_from_slice(b"hello");
        send_bytewise(&mut client, &sent);
        let reply = String::from_utf8(read_to_clean_end(&mut client)).unwrap();
        let proxy = client.local_addr().unwrap();
        assert_eq!(
            reply,
            format!("192.0.2.7:4567 {proxy} [0x02=lobby.example] hello\n"),
            "{mode:?}"
        );
        drop(client);
        let (_, stats) = util::stop(handle);
        util::assert_accounted(&stats);
        assert_eq!(stats.completed, 1, "{mode:?}: {stats:?}");
    }
}

#[test]
fn a_header_and_the_first_bytes_in_one_segment_are_told_apart() {
    for mode in MODES {
        let handle = serve_in(mode, Server::builder().workers(2));
        let mut client = util::client(handle.local_addr());
        let mut sent = v2_header();
        sent.extend_from_slice(b"hello");
        client.write_all(&sent).unwrap();
        let reply = String::from_utf8(read_to_clean_end(&mut client)).unwrap();
        assert!(reply.starts_with("192.0.2.7:4567 "), "{mode:?}: {reply:?}");
        assert!(reply.ends_with("] hello\n"), "{mode:?}: {reply:?}");
        // Closed first: the server's gentle close need not wait for it.
        drop(client);
        handle.shutdown().unwrap();
    }
}

#[test]
fn garbage_or_a_missing_header_is_closed_and_counted() {
    for mode in MODES {
        garbage_or_a_missing_header_is_closed_and_counted_in(mode);
    }
}

fn garbage_or_a_missing_header_is_closed_and_counted_in(mode: Mode) {
    let handle = serve_in(mode, Server::builder().workers(2));
    let attempts: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 not-an-address 198.51.100.1 1 2\r\nhello",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 4567 80 and far too much to be a header at all, \
          going on past the hundred and seven bytes a v1 header may have",
        b"\r\n\r\n\0\r\nQUIT\n\x99\x11\0\0",
    ];
    for (i, sent) in attempts.iter().enumerate() {
        let mut client = util::client(handle.local_addr());
        client.write_all(sent).unwrap();
        // Closed without a word, and gently: the server read what it had.
        let reply = read_to_clean_end(&mut client);
        assert!(reply.is_empty(), "{mode:?}: attempt {i}: {reply:?}");
    }
    let stats = wait_for_stats(&handle, "every attempt counted", |s| s.rejected.proxy == 4);
    assert_eq!(stats.completed, 0, "{stats:?}");
    // The server goes on: a real header is still served.
    let mut client = util::client(handle.local_addr());
    client
        .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 4567 80\r\nhello")
        .unwrap();
    let reply = String::from_utf8(read_to_clean_end(&mut client)).unwrap();
    assert!(reply.starts_with("192.0.2.7:4567 "), "{mode:?}: {reply}");
    drop(client);
    let (_, stats) = util::stop(handle);
    util::assert_accounted(&stats);
}

fn busy_hook(conn: &mut Rejected) -> io::Result<()> {
    assert_eq!(conn.reason(), RejectReason::MaxConnections);
    conn.write_all(b"error: server busy\n")
}

/// A connection that waits for its header is open: it counts against
/// `max_connections` like any other, in both modes, so silent clients
/// cannot hold more than the cap.
#[test]
fn a_connection_waiting_for_its_header_counts_against_max_connections() {
    for mode in MODES {
        let handle = serve_in(
            mode,
            Server::builder()
                .workers(2)
                .max_connections(1)
                .on_reject(busy_hook),
        );
        let mut silent = util::client(handle.local_addr());
        wait_for_stats(&handle, "the silent client is accepted", |s| {
            s.accepted == 1
        });
        let mut refused = util::client(handle.local_addr());
        refused
            .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 4567 80\r\nhello")
            .unwrap();
        assert_eq!(read_line(&mut refused), "error: server busy", "{mode:?}");
        assert!(read_to_clean_end(&mut refused).is_empty(), "{mode:?}");
        drop(refused);
        let stats = handle.stats();
        assert_eq!(stats.rejected.max_connections, 1, "{mode:?}: {stats:?}");
        assert_eq!(stats.rejected.proxy, 0, "{mode:?}: {stats:?}");
        // The shutdown ends the wait for the header: closed, counted as
        // refused for its header.
        let stopping = std::thread::spawn(move || util::stop(handle));
        assert!(read_to_clean_end(&mut silent).is_empty(), "{mode:?}");
        drop(silent);
        let (_, stats) = stopping.join().expect("the shutdown did not panic");
        util::assert_accounted(&stats);
        assert_eq!(stats.rejected.proxy, 1, "{mode:?}: {stats:?}");
        assert_eq!(stats.completed, 0, "{mode:?}: {stats:?}");
    }
}

/// In the turn mode a connection waiting for its header is parked, as a
/// TLS handshake is: more silent clients than workers leave the workers
/// free, and a client with a header is served at once. (Read on a
/// worker, the header of each silent client would hold one for
/// `PROXY_HEADER_TIME`, and the last client would be served only once
/// two of them had been closed for it.) The header time is then the
/// parked connections' deadline.
#[test]
fn turn_mode_silent_clients_wait_for_their_header_parked_holding_no_worker() {
    const SILENT: usize = 4;
    let handle = serve_in(Mode::Turns, Server::builder().workers(2));
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..SILENT)
        .map(|_| util::client(handle.local_addr()))
        .collect();
    wait_for_stats(&handle, "the silent clients wait parked", |s| {
        s.parked == SILENT && s.busy_workers == 0
    });

    let mut client = util::client(handle.local_addr());
    client
        .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 4567 80\r\nhello")
        .unwrap();
    let reply = String::from_utf8(read_to_clean_end(&mut client)).unwrap();
    assert!(reply.starts_with("192.0.2.7:4567 "), "{reply:?}");
    drop(client);
    let stats = handle.stats();
    assert_eq!(
        (stats.rejected.proxy, stats.parked),
        (0, SILENT),
        "served while every silent client still waits: {stats:?}"
    );

    // Each is closed once the header time has passed, as on a worker.
    for client in &mut silent {
        assert!(read_to_clean_end(client).is_empty());
    }
    let waited = started.elapsed();
    drop(silent);
    assert!(
        waited >= frontdesk::PROXY_HEADER_TIME - Duration::from_millis(100),
        "closed after {waited:?}"
    );
    let stats = wait_for_stats(&handle, "the silent clients are counted", |s| {
        s.rejected.proxy == SILENT as u64
    });
    assert_eq!(stats.timeouts.deadline, 0, "{stats:?}");
    let (_, stats) = util::stop(handle);
    util::assert_accounted(&stats);
    assert_eq!(stats.completed, 1, "{stats:?}");
}

/// Answers the `PP2_TYPE_AUTHORITY` TLV's value and, in hex, every byte
/// the client sent after the header, up to its half-close.
fn authority(conn: &mut Connection) -> io::Result<()> {
    let proxy = conn
        .proxy()
        .expect("the PROXY protocol is required")
        .clone();
    let authority: Vec<String> = proxy
        .tlvs()
        .filter(|(kind, _)| *kind == 0x02)
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        .collect();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)?;
    let hex: String = rest.iter().map(|byte| format!("{byte:02x}")).collect();
    conn.write_all(format!("{} {hex}\n", authority.join(",")).as_bytes())
}

/// HAProxy's `reg-tests/connection/proxy_protocol_tlv_validation.vtc`,
/// case by case: a v2 header for TCP over IPv4 whose length is 20 (the 12
/// bytes of addresses and 8 of TLVs), followed by `tlvs`. Returns the
/// reply, empty when the server closed without one.
fn haproxy_tlv_case(handle: &ServerHandle, tlvs: &[u8]) -> String {
    let mut sent = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x14".to_vec();
    sent.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1, 0x00, 0x2a, 0x05, 0x39]);
    sent.extend_from_slice(tlvs);
    let mut client = util::client(handle.local_addr());
    client.write_all(&sent).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    String::from_utf8(read_to_clean_end(&mut client)).unwrap()
}

#[test]
fn tlvs_are_validated_as_haproxy_does() {
    let handle = util::serve(Server::builder().workers(2).proxy_protocol(true), authority);
    // A correct header: its TLV is read.
    let reply = haproxy_tlv_case(&handle, b"\x02\x00\x0512345");
    assert_eq!(reply, "12345 \n");
    // A TLV after the header's end is not the header's: it is the
    // client's first bytes, given to the handler as they are.
    let reply = haproxy_tlv_case(&handle, b"\x02\x00\x0512345\x02\x00\x0554321");
    assert_eq!(reply, "12345 0200053534333231\n");
    // A TLV longer than the header: closed.
    let reply = haproxy_tlv_case(&handle, b"\x02\x00\x0a1234512345");
    assert_eq!(reply, "");
    // TLVs that end before the header does (a byte left over): closed.
    let reply = haproxy_tlv_case(&handle, b"\x02\x00\x041234");
    assert_eq!(reply, "");
    let stats = wait_for_stats(&handle, "both refusals counted", |s| s.rejected.proxy == 2);
    assert_eq!(stats.completed, 2, "{stats:?}");
    let (_, stats) = util::stop(handle);
    util::assert_accounted(&stats);
}

#[test]
fn a_client_that_sends_no_header_holds_nothing_past_the_header_time() {
    // Only the bound matters here: a silent client is closed at
    // PROXY_HEADER_TIME (5 s), well before TIMEOUT (10 s) would fail the
    // read below.
    let handle = serve(Server::builder());
    let mut silent = util::client(handle.local_addr());
    let started = Instant::now();
    let reply = read_to_clean_end(&mut silent);
    assert!(reply.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= frontdesk::PROXY_HEADER_TIME - Duration::from_millis(100),
        "closed after {waited:?}"
    );
    wait_for_stats(&handle, "counted", |s| s.rejected.proxy == 1);
    handle.shutdown().unwrap();
}

#[test]
fn a_peer_that_is_not_a_trusted_proxy_is_closed_at_once() {
    let trusted: IpAddr = "192.0.2.1".parse().unwrap();
    let handle = serve(Server::builder().trusted_proxies([trusted]));
    let mut client = util::client(handle.local_addr());
    client
        .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 4567 80\r\nhello")
        .unwrap();
    assert!(read_to_clean_end(&mut client).is_empty());
    wait_for_stats(&handle, "counted", |s| s.rejected.proxy == 1);
    handle.shutdown().unwrap();
}

/// Binds `builder` to `[::]:0` with `IPV6_V6ONLY` off (IPv4 clients
/// arrive as `::ffff:a.b.c.d`) and spawns [`describe`]; `None`, said on
/// stderr, when this machine has no IPv6.
fn serve_dual_stack(test: &str, builder: ServerBuilder) -> Option<ServerHandle> {
    let builder = builder.workers(2).proxy_protocol(true).only_v6(false);
    match builder.bind("[::]:0") {
        Ok(server) => Some(server.spawn(describe).unwrap()),
        Err(frontdesk::Error::Bind { source, .. })
            if matches!(
                source.kind(),
                io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
            ) || source.raw_os_error() == Some(97) =>
        {
            // 97 is EAFNOSUPPORT on Linux: no IPv6 in this kernel.
            eprintln!("SKIPPED {test}: no IPv6 here ({source})");
            None
        }
        Err(error) => panic!("binding [::]:0 failed: {error:?}"),
    }
}

/// Connects over IPv4 loopback to `handle`'s port and sends a v1 header
/// and `hello`: the reply, empty when the server closed without one.
fn proxied_over_ipv4(handle: &ServerHandle) -> String {
    let port = util::tcp_addr(handle.local_addr()).port();
    let mut client = util::client(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    client
        .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 4567 80\r\nhello")
        .unwrap();
    String::from_utf8(read_to_clean_end(&mut client)).unwrap()
}

// On a dual-stack listener an IPv4 proxy's address is `::ffff:127.0.0.1`:
// it is the IPv4 entry's all the same (issue #16).
#[test]
fn an_ipv4_proxy_on_a_dual_stack_listener_matches_its_ipv4_entry() {
    let test = "an_ipv4_proxy_on_a_dual_stack_listener_matches_its_ipv4_entry";
    let trusted = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Some(handle) = serve_dual_stack(test, Server::builder().trusted_proxies([trusted])) else {
        return;
    };
    let reply = proxied_over_ipv4(&handle);
    assert!(
        reply.starts_with("192.0.2.7:4567 [::ffff:127.0.0.1]:"),
        "{reply:?}"
    );
    let (_, stats) = util::stop(handle);
    assert_eq!(stats.rejected.proxy, 0, "{stats:?}");

    // An address not on the list is still refused.
    let other: IpAddr = "192.0.2.1".parse().unwrap();
    let handle = serve_dual_stack(test, Server::builder().trusted_proxies([other])).unwrap();
    assert_eq!(proxied_over_ipv4(&handle), "");
    wait_for_stats(&handle, "counted", |s| s.rejected.proxy == 1);
    handle.shutdown().unwrap();
}

// The other way round: an entry written as an IPv4-mapped address matches
// the IPv4 proxy, on an IPv4 listener and on a dual-stack one.
#[test]
fn an_ipv4_mapped_entry_matches_an_ipv4_proxy() {
    let trusted: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let handle = serve(Server::builder().trusted_proxies([trusted]));
    let reply = proxied_over_ipv4(&handle);
    assert!(reply.starts_with("192.0.2.7:4567 127.0.0.1:"), "{reply:?}");
    let (_, stats) = util::stop(handle);
    assert_eq!(stats.rejected.proxy, 0, "{stats:?}");

    let test = "an_ipv4_mapped_entry_matches_an_ipv4_proxy";
    let Some(handle) = serve_dual_stack(test, Server::builder().trusted_proxies([trusted])) else {
        return;
    };
    let reply = proxied_over_ipv4(&handle);
    assert!(reply.starts_with("192.0.2.7:4567 "), "{reply:?}");
    handle.shutdown().unwrap();
}

#[test]
fn behind_a_real_haproxy_whoami_names_the_real_client() {
    let Some(tool) = support::tool("haproxy") else {
        eprintln!(
            "SKIPPED behind_a_real_haproxy_whoami_names_the_real_client: \
             haproxy is not installed (Debian package `haproxy`)"
        );
        return;
    };
    let mut server = support::Example::start("commands", &["--proxy-protocol"]);
    for send_proxy in ["send-proxy", "send-proxy-v2"] {
        let haproxy = support::Haproxy::start(&tool, &server.addr.to_string(), send_proxy);
        let mut client = TcpStream::connect(haproxy.addr).unwrap();
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        client.write_all(b"whoami\nping\nquit\n").unwrap();
        let mut lines = BufReader::new(&client).lines();
        let me = client.local_addr().unwrap();
        assert_eq!(
            lines.next().unwrap().unwrap(),
            format!("you are {me}"),
            "{send_proxy}"
        );
        assert_eq!(lines.next().unwrap().unwrap(), "pong");
        assert_eq!(lines.next().unwrap().unwrap(), "bye");
    }
    // A client that reaches the server directly, without a header, is
    // closed without an answer.
    let mut direct = support::Client::connect(server.addr);
    direct.send("whoami\n");
    direct.expect_clean_end();
    server.stop();
}
