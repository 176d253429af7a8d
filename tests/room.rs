//! `Room` in the turn mode, with real clients over loopback: who a
//! broadcast reaches, leaving in `close`, a member that does not read
//! under either `OutboxFull` policy, and broadcasts racing joins and
//! leaves.
//!
//! The handler joins every connection and tells the test what it does on
//! a channel; the test broadcasts through the same `Room` from its own
//! thread as well, as a server's other threads would.
#![cfg(unix)]

mod util;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use frontdesk::{
    CloseReason, Delivery, LineError, Lines, Next, OutboxFull, Room, Server, ServerBuilder,
    ServerHandle, Turn, TurnHandler,
};
use socket2::{Domain, Socket, Type};

use util::{client, tcp_addr, LOCALHOST, TIMEOUT};

/// What the handler tells the test.
#[derive(Debug)]
enum Event {
    /// A connection joined: `others` from its first `join`, `again` from a
    /// second one.
    Joined {
        addr: SocketAddr,
        id: u64,
        others: usize,
        again: usize,
    },
    /// A member said a line, which went to the others.
    Said { id: u64, delivery: Delivery },
    /// `close` ran; `left`: it was in the room, and left.
    Closed {
        id: u64,
        reason: CloseReason,
        left: bool,
    },
}

/// Joins each connection to the room and sends each line it says to every
/// other member as `ID: LINE`.
struct Members {
    room: Arc<Room>,
    /// Whether `close` leaves the room, as it should.
    leave_on_close: bool,
    events: Sender<Event>,
}

impl TurnHandler for Members {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        let others = self.room.join(turn.peer());
        let again = self.room.join(turn.peer());
        let addr = tcp_addr(turn.peer_addr());
        let _ = self.events.send(Event::Joined {
            addr,
            id: turn.id(),
            others,
            again,
        });
        turn.send("in\n")?;
        Ok(Lines::new(turn, 1024))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line_str() {
                Ok(Some(line)) => {
                    let delivery = self
                        .room
                        .broadcast_except(turn.id(), format!("{}: {line}\n", turn.id()));
                    let _ = self.events.send(Event::Said {
                        id: turn.id(),
                        delivery,
                    });
                }
                Ok(None) => return Ok(Next::Park),
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn close(&self, _: Lines, turn: &mut Turn<'_>, reason: CloseReason) {
        let left = self.leave_on_close && self.room.leave(turn.id()).is_some();
        let _ = self.events.send(Event::Closed {
            id: turn.id(),
            reason,
            left,
        });
    }
}

/// A server whose handler is [`Members`], and the test's side of it.
struct Lobby {
    handle: ServerHandle,
    room: Arc<Room>,
    events: Receiver<Event>,
}

impl Lobby {
    fn start(builder: ServerBuilder, leave_on_close: bool) -> Lobby {
        let room = Arc::new(Room::new());
        let (events, receiver) = crossbeam_channel::unbounded();
        let handle = builder
            .bind(LOCALHOST)
            .expect("bind")
            .spawn_turns(Members {
                room: Arc::clone(&room),
                leave_on_close,
                events,
            })
            .expect("spawn_turns");
        Lobby {
            handle,
            room,
            events: receiver,
        }
    }

    fn addr(&self) -> SocketAddr {
        tcp_addr(self.handle.local_addr())
    }

    /// Connects a client with `stream`, and waits until it is in the room.
    fn join_with(&self, stream: TcpStream) -> Member {
        let addr = stream.local_addr().unwrap();
        let mut member = Member {
            id: 0,
            reader: BufReader::new(stream),
        };
        member.expect("in");
        match self.events.recv_timeout(TIMEOUT) {
            Ok(Event::Joined {
                addr: joined,
                id,
                others,
                again,
            }) => {
                assert_eq!(joined, addr);
                assert_eq!(others, again, "joining again changes nothing");
                member.id = id;
            }
            other => panic!("expected a join, got {other:?}"),
        }
        member
    }

    fn join(&self) -> Member {
        self.join_with(client(self.addr()))
    }

    fn next_event(&self) -> Event {
        self.events
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|e| panic!("no event within {TIMEOUT:?}: {e}"))
    }

    fn expect_closed(&self, member: u64) -> (CloseReason, bool) {
        match self.next_event() {
            Event::Closed { id, reason, left } if id == member => (reason, left),
            other => panic!("expected {member} to close, got {other:?}"),
        }
    }
}

/// A client in the room.
struct Member {
    id: u64,
    reader: BufReader<TcpStream>,
}

impl Member {
    fn say(&mut self, line: &str) {
        writeln!(self.reader.get_ref(), "{line}").expect("say a line");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("member {} was closed", self.id),
            Ok(_) => line.trim_end_matches('\n').to_string(),
            Err(e) => panic!("member {} read: {e}", self.id),
        }
    }

    fn expect(&mut self, line: &str) {
        assert_eq!(self.line(), line, "member {}", self.id);
    }
}

#[test]
fn a_broadcast_reaches_every_member_but_the_sender() {
    let lobby = Lobby::start(Server::builder().workers(2), true);
    let mut a = lobby.join();
    let mut b = lobby.join();
    let mut c = lobby.join();
    assert_eq!(lobby.room.len(), 3);
    assert!(lobby.room.contains(a.id) && lobby.room.contains(b.id));

    a.say("hi");
    b.expect(&format!("{}: hi", a.id));
    c.expect(&format!("{}: hi", a.id));
    match lobby.next_event() {
        Event::Said { id, delivery } => {
            assert_eq!(id, a.id);
            assert_eq!(delivery.sent, 2);
            assert!(delivery.is_complete(), "{delivery:?}");
        }
        other => panic!("expected a line, got {other:?}"),
    }
    // The next thing `a` hears is `b`'s line: its own did not come back.
    b.say("yo");
    a.expect(&format!("{}: yo", b.id));
    c.expect(&format!("{}: yo", b.id));

    // From any thread: to everyone, or everyone but one.
    let delivery = lobby.room.broadcast("all\n");
    assert_eq!(delivery.sent, 3);
    for member in [&mut a, &mut b, &mut c] {
        member.expect("all");
    }
    lobby.room.broadcast_except(c.id, "not c\n");
    lobby.room.get(c.id).expect("c").send("only c\n").unwrap();
    a.expect("not c");
    b.expect("not c");
    c.expect("only c");
    lobby.handle.shutdown().expect("shutdown");
}

#[test]
fn a_member_leaves_in_close_and_hears_nothing_more() {
    let lobby = Lobby::start(Server::builder().workers(2), true);
    let mut a = lobby.join();
    let mut b = lobby.join();
    let c = lobby.join();
    let c_id = c.id;
    drop(c);
    // Its `close` ran and left the room.
    let (reason, left) = lobby.expect_closed(c_id);
    assert_eq!(reason, CloseReason::Done);
    assert!(left);
    assert_eq!(lobby.room.len(), 2);
    assert!(!lobby.room.contains(c_id));
    assert!(lobby.room.get(c_id).is_none());
    assert!(lobby.room.leave(c_id).is_none());
    let mut ids: Vec<u64> = lobby.room.members().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [a.id.min(b.id), a.id.max(b.id)]);

    let delivery = lobby.room.broadcast("still two\n");
    assert_eq!(delivery.sent, 2);
    assert!(delivery.is_complete(), "{delivery:?}");
    a.expect("still two");
    b.expect("still two");
    lobby.handle.shutdown().expect("shutdown");
    assert!(lobby.room.is_empty(), "every member left at shutdown");
}

#[test]
fn a_member_whose_connection_ended_is_reported_until_it_leaves() {
    let lobby = Lobby::start(Server::builder().workers(2), false);
    let mut a = lobby.join();
    let c = lobby.join();
    let c_id = c.id;
    drop(c);
    let (_, left) = lobby.expect_closed(c_id);
    assert!(!left, "this handler does not leave");
    assert!(lobby.room.contains(c_id));
    // Its `close` has run; the connection may still be sending what
    // `close` left in its outbox, which takes messages until it is done.
    let c_peer = lobby.room.get(c_id).expect("still a member");
    util::wait_until("the connection has ended", || c_peer.is_closed());

    let delivery = lobby.room.broadcast("hello\n");
    assert_eq!(delivery.sent, 1);
    assert_eq!(delivery.closed, [c_id]);
    assert!(delivery.full.is_empty());
    a.expect("hello");
    assert!(lobby.room.leave(c_id).expect("still a member").is_closed());
    assert!(lobby.room.broadcast("again\n").is_complete());
    a.expect("again");
    lobby.handle.shutdown().expect("shutdown");
}

/// A client that reads nothing: its receive buffer is small, so what is
/// sent to it backs up into the server's socket and then its outbox.
fn stalled_client(addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4 * 1024).expect("SO_RCVBUF");
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

const OUTBOX: usize = 16 * 1024;
/// A broadcast's size: a quarter of the outbox.
const MESSAGE: usize = 4 * 1024;
/// Far more than loopback's socket buffers and the outbox take (a few
/// MiB at most), so that the stalled member's outbox fills.
const MAX_MESSAGES: usize = 20_000;

/// Message `i`: `MESSAGE` bytes, its number first, a newline last.
fn message(i: usize) -> String {
    let mut text = format!("{i} ");
    text.extend(std::iter::repeat('x').take(MESSAGE - text.len() - 1));
    text.push('\n');
    text
}

/// Broadcasts numbered messages until one finds `stalled`'s outbox full,
/// while `reader` reads each as it is sent (so its outbox never fills);
/// returns how many were sent in all.
fn broadcast_until_full(lobby: &Lobby, reader: &mut Member, stalled: u64) -> usize {
    for i in 0..MAX_MESSAGES {
        let delivery = lobby.room.broadcast(message(i));
        reader.expect(message(i).trim_end());
        if !delivery.full.is_empty() {
            assert_eq!(delivery.full, [stalled], "{delivery:?}");
            assert_eq!(delivery.sent, 1, "{delivery:?}");
            return i + 1;
        }
        assert!(delivery.is_complete(), "message {i}: {delivery:?}");
    }
    panic!("{MAX_MESSAGES} messages of {MESSAGE} bytes did not fill the outbox");
}

#[test]
fn a_member_that_does_not_read_is_closed_by_default() {
    let lobby = Lobby::start(Server::builder().workers(2).outbox_limit(OUTBOX), true);
    let mut reader = lobby.join();
    let stalled = lobby.join_with(stalled_client(lobby.addr()));
    let sent = broadcast_until_full(&lobby, &mut reader, stalled.id);
    // The server closed it, and its `close` left the room.
    let (reason, left) = lobby.expect_closed(stalled.id);
    assert_eq!(reason, CloseReason::OutboxFull);
    assert!(left);
    assert!(!lobby.room.contains(stalled.id));
    let delivery = lobby.room.broadcast(message(sent));
    assert_eq!(delivery.sent, 1);
    assert!(delivery.is_complete(), "{delivery:?}");
    reader.expect(message(sent).trim_end());
    // Its client goes too: otherwise the shutdown would wait out its
    // drain deadline flushing an outbox nobody reads.
    drop(stalled);
    let report = lobby.handle.shutdown().expect("shutdown");
    assert!(report.stats.outbox_full >= 1, "{:#?}", report.stats);
}

#[test]
fn a_member_that_does_not_read_stays_under_report_without_the_message() {
    let lobby = Lobby::start(
        Server::builder()
            .workers(2)
            .outbox_limit(OUTBOX)
            .outbox_full(OutboxFull::Report),
        true,
    );
    let mut reader = lobby.join();
    let mut stalled = lobby.join_with(stalled_client(lobby.addr()));
    let sent = broadcast_until_full(&lobby, &mut reader, stalled.id);
    assert!(lobby.room.contains(stalled.id));
    assert!(!lobby.room.get(stalled.id).expect("a member").is_closed());
    // It reads now: every message up to the one that did not fit, then
    // the next one, sent once there is room.
    for i in 0..sent - 1 {
        stalled.expect(message(i).trim_end());
    }
    let delivery = lobby.room.broadcast("after\n");
    assert!(delivery.is_complete(), "{delivery:?}");
    stalled.expect("after");
    reader.expect("after");
    lobby.handle.shutdown().expect("shutdown");
}

#[test]
fn broadcasts_racing_joins_and_leaves_lose_nothing_for_the_members_that_stay() {
    const STAYING: usize = 5;
    const BROADCASTERS: usize = 2;
    const MESSAGES: usize = 300;
    const PASSING: usize = 30;
    let lobby = Lobby::start(Server::builder().workers(2), true);
    let mut staying: Vec<Member> = (0..STAYING).map(|_| lobby.join()).collect();
    let start = Instant::now();
    thread::scope(|scope| {
        // Each staying member reads every broadcaster's messages in order.
        let readers: Vec<_> = staying
            .iter_mut()
            .map(|member| {
                scope.spawn(move || {
                    let mut next = [0; BROADCASTERS];
                    while next.iter().any(|&n| n < MESSAGES) {
                        let line = member.line();
                        let (from, i) = line.split_once(' ').expect("`FROM I`");
                        let from: usize = from.parse().unwrap();
                        assert_eq!(i.parse::<usize>().unwrap(), next[from], "from {from}");
                        next[from] += 1;
                    }
                })
            })
            .collect();
        for from in 0..BROADCASTERS {
            let room = &lobby.room;
            scope.spawn(move || {
                for i in 0..MESSAGES {
                    let delivery = room.broadcast(format!("{from} {i}\n"));
                    assert!(delivery.full.is_empty(), "{delivery:?}");
                }
            });
        }
        // Clients come and go meanwhile: each is greeted (so it is in
        // the room), then leaves.
        let addr = lobby.addr();
        scope.spawn(move || {
            for _ in 0..PASSING {
                // A broadcast may reach it just before its greeting: it
                // is in the room before its turn sends that.
                let mut reader = BufReader::new(client(addr));
                let mut line = String::new();
                for _ in 0..=BROADCASTERS * MESSAGES {
                    line.clear();
                    reader.read_line(&mut line).expect("a greeting");
                    if line == "in\n" {
                        break;
                    }
                }
                assert_eq!(line, "in\n");
            }
        });
        for reader in readers {
            reader.join().expect("a staying member's reader");
        }
    });
    // Every passing client joined, then closed and left.
    let (mut joined, mut closed) = (0, 0);
    while closed < PASSING {
        match lobby.next_event() {
            Event::Joined { .. } => joined += 1,
            Event::Closed { left, .. } => {
                assert!(left);
                closed += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(start.elapsed() < 3 * TIMEOUT, "still waiting for closes");
    }
    assert_eq!(joined, PASSING);
    assert_eq!(lobby.room.len(), STAYING);
    lobby.handle.shutdown().expect("shutdown");
}

#[test]
fn a_room_is_send_sync_and_debug() {
    fn is_send_and_sync<T: Send + Sync>() {}
    is_send_and_sync::<Room>();
    is_send_and_sync::<Delivery>();
    let room = Room::default();
    assert_eq!(format!("{room:?}"), "Room { members: 0 }");
    assert!(room.is_empty());
    assert!(room.broadcast("nobody\n").is_complete());
    assert_eq!(room.broadcast("nobody\n").sent, 0);
}
