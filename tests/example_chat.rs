//! End-to-end tests of `examples/chat.rs`: the compiled example, run as a
//! user would, with several clients over loopback.

#![cfg(unix)]

mod support;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use support::{Client, Example};

/// How long a healthy client may wait for a line while a stalled one is
/// being dropped. Sending never waits for a stalled client, so a line takes
/// milliseconds; the bound is room for a loaded CI machine, and far below
/// the 30 s write timeout, so the test fails if the stall is only found by
/// that.
const SLACK: Duration = Duration::from_secs(3);

/// A chat client that has been greeted, so it is in the room.
struct Chatter {
    client: Client,
    /// How the others see it: its address.
    name: String,
}

impl Chatter {
    /// Connects and reads the greeting, which says `others` were there.
    fn join(server: &Example, others: usize) -> Chatter {
        let mut client = server.connect();
        let name = client
            .stream()
            .local_addr()
            .expect("client address")
            .to_string();
        client.expect(&format!("* you are {name}; others here: {others}"));
        Chatter { client, name }
    }

    fn say(&mut self, line: &str) {
        self.client.send(format!("{line}\n"));
    }

    fn expect(&mut self, line: &str) {
        self.client.expect(line);
    }
}

/// Three clients in the room, each told of the ones that came after it.
fn three(server: &Example) -> (Chatter, Chatter, Chatter) {
    let mut a = Chatter::join(server, 0);
    let mut b = Chatter::join(server, 1);
    a.expect(&format!("* {} joined", b.name));
    let c = Chatter::join(server, 2);
    a.expect(&format!("* {} joined", c.name));
    b.expect(&format!("* {} joined", c.name));
    (a, b, c)
}

#[test]
fn lines_go_to_every_other_client_with_arrivals_and_departures() {
    let mut server = Example::start("chat", &[]);
    let (mut a, mut b, mut c) = three(&server);
    a.say("hello");
    b.expect(&format!("{}: hello", a.name));
    c.expect(&format!("{}: hello", a.name));
    b.say("hi there ");
    // The next thing `a` gets is `b`'s line: its own did not come back.
    a.expect(&format!("{}: hi there ", b.name));
    c.expect(&format!("{}: hi there ", b.name));
    let c_name = c.name.clone();
    drop(c);
    a.expect(&format!("* {c_name} left"));
    b.expect(&format!("* {c_name} left"));
    // `c` is gone from the room: nothing is sent to it any more.
    a.say("still here");
    b.expect(&format!("{}: still here", a.name));
    server.stop();
}

#[test]
fn a_burst_reaches_every_listener_in_full_and_in_order() {
    let mut server = Example::start("chat", &[]);
    let (mut a, mut b, mut c) = three(&server);
    // `a` pastes 1000 lines in one write, about 1 MB: more than the socket
    // buffers take at once. Listeners that read keep up, and must get
    // every line, in order, without being dropped.
    let text = "y".repeat(1000);
    let paste: String = (0..1000).map(|i| format!("{i} {text}\n")).collect();
    let mut paster = a.client.stream().try_clone().expect("clone the socket");
    let pasting = thread::spawn(move || paster.write_all(paste.as_bytes()));
    let a_name = a.name.clone();
    thread::scope(|scope| {
        for listener in [&mut b, &mut c] {
            let a_name = &a_name;
            let text = &text;
            scope.spawn(move || {
                for i in 0..1000 {
                    listener.expect(&format!("{a_name}: {i} {text}"));
                }
            });
        }
    });
    pasting
        .join()
        .expect("the pasting thread")
        .expect("paste 1000 lines");
    // Nobody was dropped: everyone is still in the room.
    b.say("all there");
    a.expect(&format!("{}: all there", b.name));
    c.expect(&format!("{}: all there", b.name));
    server.stop();
}

#[test]
fn stalled_client_is_dropped_without_delaying_the_others() {
    let mut server = Example::start("chat", &[]);
    let (mut a, mut b, stalled) = three(&server);
    // `stalled` reads nothing more. `a` talks and `b` reads every line,
    // while the lines pile up for `stalled` (in its socket buffers, then
    // its outbox) until its outbox is full and the server drops it.
    // Meanwhile `b` is never kept waiting for it.
    let text = "x".repeat(8000);
    let dropped = format!("* {} left (too slow)", stalled.name);
    let mut announced = false;
    let mut slowest = Duration::ZERO;
    let mut line = |b: &mut Chatter| {
        let start = Instant::now();
        let line = b.client.line();
        slowest = slowest.max(start.elapsed());
        line
    };
    // Enough for the socket buffers (a few MiB at most on loopback) and
    // the outbox (256 KiB) many times over.
    for i in 0..5000 {
        a.say(&format!("{i} {text}"));
        let mut got = line(&mut b);
        if got == dropped {
            announced = true;
            got = line(&mut b);
        }
        assert_eq!(got, format!("{}: {i} {text}", a.name), "line {i}");
        if announced {
            break;
        }
    }
    assert!(announced, "the stalled client was never dropped");
    assert!(
        slowest <= SLACK,
        "a healthy client waited {slowest:?} for a line"
    );
    a.expect(&dropped);
    // The room goes on without it.
    b.say("bye");
    a.expect(&format!("{}: bye", b.name));
    // Its connection was closed: what it was sent before ends in end of
    // file (or a reset).
    let mut stalled = stalled.client;
    let _ = stalled.read_to_end_or_reset();
    server.stop();
}

#[test]
fn bad_lines_are_answered_to_their_sender_only() {
    let mut server = Example::start("chat", &["--max-line", "16"]);
    let (mut a, mut b, _c) = three(&server);
    a.client.send(b"\xff\xfe\n");
    a.expect("error: invalid utf-8");
    a.say("0123456789abcdef");
    b.expect(&format!("{}: 0123456789abcdef", a.name));
    a.say("0123456789abcdefg");
    a.expect("error: line too long");
    a.client.expect_closed();
    b.expect(&format!("* {} left", a.name));
    server.stop();
}

#[test]
fn many_more_clients_than_workers_chat_at_once() {
    // Two workers, forty clients: idle clients wait without a worker.
    const CLIENTS: usize = 40;
    let mut server = Example::start("chat", &["--workers", "2"]);
    let mut room: Vec<Chatter> = Vec::new();
    for others in 0..CLIENTS {
        let newcomer = Chatter::join(&server, others);
        for member in &mut room {
            member.expect(&format!("* {} joined", newcomer.name));
        }
        room.push(newcomer);
    }
    let (first, rest) = room.split_first_mut().expect("a room");
    first.say("hello, all");
    for member in rest {
        member.expect(&format!("{}: hello, all", first.name));
    }
    server.stop();
}

#[test]
fn sigterm_delivers_lines_sent_before_it_and_exits_0() {
    let mut server = Example::start("chat", &[]);
    let (mut a, mut b, mut c) = three(&server);
    a.say("last words");
    server.stop();
    let said = format!("{}: last words", a.name);
    for listener in [&mut b, &mut c] {
        let rest = listener.client.read_to_end_or_reset();
        let rest = String::from_utf8_lossy(&rest);
        // Departures may come before or after it.
        assert!(rest.lines().any(|line| line == said), "{rest:?}");
    }
    let _ = a.client.read_to_end_or_reset();
}

#[test]
fn max_connections_per_ip_turns_the_next_client_from_an_address_away() {
    let mut server = Example::start("chat", &["--max-connections-per-ip", "3"]);
    let (mut a, mut b, _c) = three(&server);
    let mut fourth = server.connect();
    fourth.expect_busy();
    // The room did not see it come or go.
    a.say("still three");
    b.expect(&format!("{}: still three", a.name));
    server.stop();
}

#[test]
fn max_connections_turns_the_next_client_away() {
    // `--turns` and `--queue` are accepted for one command line across the
    // examples, and change nothing: chat is turn-mode only.
    let mut server = Example::start(
        "chat",
        &[
            "--turns",
            "--workers",
            "1",
            "--queue",
            "0",
            "--max-connections",
            "3",
        ],
    );
    let (mut a, mut b, _c) = three(&server);
    let mut fourth = server.connect();
    fourth.expect_busy();
    // The room did not see it come or go.
    a.say("still three");
    b.expect(&format!("{}: still three", a.name));
    server.stop();
}
