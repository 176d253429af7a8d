//! A chat relay: each line a client sends goes to every other client.
//!
//! ```text
//! cargo run --example chat                      # listens on 127.0.0.1:7878
//! nc 127.0.0.1 7878                             # in two or more terminals
//! ```
//!
//! A client is named by its address. It is greeted with
//! `* you are 127.0.0.1:50000; others here: 2`, and from then on a line
//! `hello` from it reaches every other client as `127.0.0.1:50000: hello`.
//! Arrivals and departures are announced as `* 127.0.0.1:50000 joined` and
//! `* 127.0.0.1:50000 left`.
//! A line longer than `--max-line` gets `error: line too long` and closes
//! the connection; a line that is not UTF-8 gets `error: invalid utf-8` and
//! is not relayed.
//!
//! # Shared state
//!
//! The handler is a struct that owns the [`Room`], shared by every worker.
//! Nothing that waits on a client happens while the room is locked: each
//! client has an outbox (a bounded channel) and a writer thread that sends
//! it; relaying a line only puts it in the other clients' outboxes. A client
//! that stops reading holds up nobody: its outbox fills, and then it is
//! dropped from the room, its connection is closed and its departure
//! announced (`* 127.0.0.1:50000 left (too slow)`). A client that leaves is removed from the room before its
//! handler returns.
//!
//! # A fixed pool serves at most `--workers` clients at once
//!
//! Each connected client holds a worker for as long as it stays, even when
//! it says nothing, so at most `--workers` clients (default 16) can chat at
//! once. That is why this example waits in no queue by default
//! (`--queue 0`): the next client gets `error: server busy` at once instead
//! of waiting in silence for someone to leave. A later version of frontdesk
//! will let idle connections wait without holding a worker. The writer
//! threads add one thread per client.

mod common;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use frontdesk::{Connection, Handler, LineError, LineReader};

use common::{Input, Limits, Options};

/// How many messages may wait for one client. When its outbox is full the
/// client is not keeping up and is dropped. Bounds the memory a client can
/// hold to this many lines.
const OUTBOX: usize = 64;

/// How long the writer thread may wait for a client to make room for one
/// message before it gives up on the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The chat server: one value shared by all workers.
struct Chat {
    room: Room,
    limits: Limits,
}

/// The connected clients, by connection id.
#[derive(Default)]
struct Room {
    members: Mutex<HashMap<u64, Member>>,
}

struct Member {
    name: String,
    outbox: Sender<Arc<str>>,
    /// To close the connection of a client that is dropped.
    stream: Arc<TcpStream>,
}

impl Handler for Chat {
    fn handle(&self, conn: &mut Connection) -> io::Result<()> {
        let id = conn.id();
        let name = conn.peer_addr().to_string();
        // The writer thread writes to its own handle on the socket. The
        // write timeout set here is the socket's: fine, since this handler
        // never writes through `conn`.
        let stream = Arc::new(conn.stream().try_clone()?);
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let (outbox, inbox) = crossbeam_channel::bounded(OUTBOX);
        let writer = thread::Builder::new()
            .name(format!("chat-writer-{id}"))
            .spawn({
                let stream = Arc::clone(&stream);
                move || send_outbox(&stream, inbox)
            })?;
        self.room.join(
            id,
            Member {
                name,
                outbox,
                stream,
            },
        );
        let result = self.relay(conn, id);
        self.room.leave(id);
        // The room held the outbox's only sender: the writer sends what is
        // left in it, then ends.
        let _ = writer.join();
        result
    }
}

impl Chat {
    /// Passes the client's lines to the room until it leaves.
    fn relay(&self, conn: &Connection, id: u64) -> io::Result<()> {
        let input = Input::new(conn);
        let mut lines = LineReader::new(input, self.limits.max_line);
        loop {
            match lines.read_line_str() {
                Ok(line) => self.room.say(id, line),
                Err(LineError::InvalidUtf8 { .. }) => self.room.tell(id, "error: invalid utf-8\n"),
                Err(LineError::TooLong { .. }) => {
                    self.room.tell(id, "error: line too long\n");
                    return Ok(());
                }
                // The client closed, was dropped, or the server is shutting
                // down.
                Err(LineError::Closed { .. }) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// Writes a client's messages until its outbox is closed, or until the
/// client fails to take one within the write timeout.
fn send_outbox(stream: &TcpStream, inbox: Receiver<Arc<str>>) {
    for message in inbox {
        let mut stream = stream;
        if stream.write_all(message.as_bytes()).is_err() {
            // Too slow or gone. Close both ways so that the handler's read
            // ends too and the client leaves the room.
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

impl Room {
    fn members(&self) -> MutexGuard<'_, HashMap<u64, Member>> {
        // Nothing panics while holding the lock, so a poisoned room is
        // still consistent.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(&self, id: u64, member: Member) {
        let mut members = self.members();
        let welcome = format!(
            "* you are {}; others here: {}\n",
            member.name,
            members.len()
        );
        // The outbox is new and empty: this cannot fail.
        let _ = member.outbox.try_send(welcome.into());
        let text = format!("* {} joined\n", member.name);
        broadcast(&mut members, id, text);
        members.insert(id, member);
    }

    fn say(&self, id: u64, line: &str) {
        let mut members = self.members();
        // A client dropped from the room may still have lines in flight.
        if let Some(member) = members.get(&id) {
            let text = format!("{}: {line}\n", member.name);
            broadcast(&mut members, id, text);
        }
    }

    /// Sends `text` to one client only.
    fn tell(&self, id: u64, text: &str) {
        if let Some(member) = self.members().get(&id) {
            // A full outbox means the client is not reading: it will not
            // miss this one.
            let _ = member.outbox.try_send(text.into());
        }
    }

    fn leave(&self, id: u64) {
        let mut members = self.members();
        if let Some(member) = members.remove(&id) {
            let text = format!("* {} left\n", member.name);
            broadcast(&mut members, id, text);
        }
    }
}

/// Puts `text` in the outbox of every member but `from`, without waiting.
/// Members whose outbox is full (or whose writer has given up) are dropped:
/// their connection is closed and their departure announced in turn.
fn broadcast(members: &mut HashMap<u64, Member>, from: u64, text: String) {
    // Each round after the first announces one dropped member, so this
    // ends after at most one round per member.
    let mut announcements = vec![(from, Arc::<str>::from(text))];
    while let Some((from, text)) = announcements.pop() {
        let mut dropped = Vec::new();
        for (&id, member) in members.iter() {
            if id != from && member.outbox.try_send(Arc::clone(&text)).is_err() {
                dropped.push(id);
            }
        }
        for id in dropped {
            let member = members.remove(&id).expect("a member just seen");
            log::debug!("dropping a client that does not keep up: {}", member.name);
            let _ = member.stream.shutdown(Shutdown::Both);
            let text = format!("* {} left (too slow)\n", member.name);
            announcements.push((id, text.into()));
        }
    }
}

fn main() -> ExitCode {
    let options = Options::parse(
        "chat: a TCP chat relay; each line goes to every other client",
        Options {
            queue: 0,
            ..Options::default()
        },
    );
    let builder = options
        .builder()
        .on_reject(|conn: &mut Connection| conn.write_all(b"error: server busy\n"));
    let chat = Chat {
        room: Room::default(),
        limits: options.limits,
    };
    common::serve(&options, builder, chat)
}
