//! A chat relay: each line a client sends goes to every other client.
//!
//! ```text
//! cargo run --example chat                      # listens on 127.0.0.1:7878
//! nc 127.0.0.1 7878                             # in two or more terminals
//! ```
//!
//! A client is named by its address (`unix#ID` on a Unix socket, where
//! clients have none). It is greeted with
//! `* you are 127.0.0.1:50000; others here: 2`, and from then on a line
//! `hello` from it reaches every other client as `127.0.0.1:50000: hello`.
//! Arrivals and departures are announced as `* 127.0.0.1:50000 joined` and
//! `* 127.0.0.1:50000 left`.
//! A line longer than `--max-line` gets `error: line too long` and closes
//! the connection; a line that is not UTF-8 gets `error: invalid utf-8` and
//! is not relayed; a line not finished `--request-timeout-ms` after its
//! first byte closes the connection.
//!
//! # The turn mode only, and no thread per client
//!
//! Unlike `echo` and `commands`, which are written for both of frontdesk's
//! modes, chat runs in the turn mode only: a relay's clients stay
//! connected and mostly listen, which is what that mode is for (with a
//! `Handler`, each listener would hold a worker for as long as it stays).
//! The relay is a [`TurnHandler`]: a client costs a worker only while the
//! server handles a line it sent. In between it waits, parked, in the
//! operating system's readiness set, with its [`Member`] state (its name
//! and any half-received line). So a few workers hold thousands of
//! clients, most of them listening: up to `--max-connections` (default
//! 10,000); one more gets `error: server busy`, as does one more from an
//! address that holds `--max-connections-per-ip` already (no limit by
//! default). For one command line
//! across the examples, chat accepts `--turns` and `--queue`, which change
//! nothing here.
//!
//! # Broadcasting, and a client that does not read
//!
//! The clients are members of a [`Room`]: each joins with its [`Peer`], a
//! handle any thread can send to, and leaves in `close`, however its
//! connection ended. A line is formatted once, as a shared message, and
//! the room sends it to every member but its sender, from a snapshot of
//! the members, with no lock held while it sends; a send never waits:
//! what the client's socket does not take at once waits in its outbox
//! (256 KiB by default), which the server writes out as the client reads.
//! A client that stops reading fills its outbox and is dropped by the
//! server (the default `OutboxFull::Close`), announced as
//! `* 127.0.0.1:50000 left (too slow)`; nobody else waits for it.
//!
//! A newcomer joins the room, is greeted and the others are told, all
//! three behind one lock: every client is either counted in a newcomer's
//! greeting or told it joined, never both, and a client that has its
//! greeting has been announced.
//! (Under concurrent chatter, a line may reach a newcomer just before its
//! greeting: the room takes no lock while it sends.)
//!
//! # Idle timeout: off by default
//!
//! A chat client may only read, for hours. Unlike the other examples, chat
//! turns the idle timeout off by default (`--idle-timeout-ms 0`); pass
//! `--idle-timeout-ms N` to close clients that send nothing for `N` ms.
//!
//! # Shutdown
//!
//! On SIGINT or SIGTERM every client first gets a last turn for what it
//! had sent (so its lines reach the others), then each leaves, and each
//! listener receives what was relayed before it is closed.

mod common;

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::{PoisonError, RwLock};

use frontdesk::{CloseReason, Lines, Next, Rejected, Room, Turn, TurnHandler};

use common::{Help, Limits, Modes, Options};

/// The chat server: one value shared by all workers.
struct Chat {
    /// The connected clients.
    room: Room,
    /// Held to write while a client joins, is greeted and is announced,
    /// and to read while a line is relayed: no line reaches a newcomer
    /// before its greeting, and one that has its greeting hears every
    /// line after it. Relays share it, so they do not wait for each other.
    door: RwLock<()>,
    limits: Limits,
}

/// What the server keeps for one client between its turns.
struct Member {
    name: String,
    lines: Lines,
}

impl TurnHandler for Chat {
    type State = Member;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Member> {
        // A Unix socket's clients have no address of their own: the
        // connection's id tells them apart.
        let name = match turn.peer_addr() {
            frontdesk::Addr::Unix(None) => format!("unix#{}", turn.id()),
            addr => addr.to_string(),
        };
        // In the room, greeted and announced at once, behind the door: a
        // client that joins next is counted in no greeting it has not
        // also been announced to, and is not told of this one twice.
        // (A member the announcement finds closed is leaving, and one
        // with a full outbox is dropped by the server and announced:
        // nothing to do here.)
        {
            let _door = self.door.write().unwrap_or_else(PoisonError::into_inner);
            let others = self.room.join(turn.peer());
            turn.send(format!("* you are {name}; others here: {others}\n"))?;
            self.room
                .broadcast_except(turn.id(), format!("* {name} joined\n"));
        }
        let lines = Lines::new(turn, self.limits.max_line);
        Ok(Member { name, lines })
    }

    fn ready(&self, me: &mut Member, turn: &mut Turn<'_>) -> io::Result<Next> {
        let name = &me.name;
        common::answer_lines(&mut me.lines, turn, self.limits, |line, turn| {
            let _door = self.door.read().unwrap_or_else(PoisonError::into_inner);
            self.room
                .broadcast_except(turn.id(), format!("{name}: {line}\n"));
            Ok(None)
        })
    }

    fn close(&self, me: Member, turn: &mut Turn<'_>, reason: CloseReason) {
        self.room.leave(turn.id());
        let why = match reason {
            CloseReason::OutboxFull => " (too slow)",
            _ => "",
        };
        self.room.broadcast(format!("* {} left{why}\n", me.name));
    }
}

fn main() -> ExitCode {
    let options = Options::parse(
        &Help {
            about: "chat: a TCP chat relay; each line goes to every other client.
Clients that only read stay connected: the idle timeout is off by default.",
            modes: Modes::TurnsOnly,
            lines: true,
            busy: "gets `error: server busy`",
        },
        Options {
            limits: Limits {
                idle_timeout: None,
                ..Options::default().limits
            },
            ..Options::default()
        },
    );
    let builder = options
        .builder()
        .on_reject(|conn: &mut Rejected| conn.write_all(b"error: server busy\n"));
    let chat = Chat {
        room: Room::new(),
        door: RwLock::new(()),
        limits: options.limits,
    };
    common::serve_turns(&options, builder, chat)
}
