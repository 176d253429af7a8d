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
//! client has an outbox (a bounded channel of [`OUTBOX`] lines) and a
//! writer thread that sends it. Relaying a line locks the room only to copy
//! the list of the other clients' outboxes, then puts the line in each.
//!
//! # Back-pressure, and when a client is too slow
//!
//! A client may paste a thousand lines at once; its handler reads them as
//! fast as the network brings them, far faster than the others' writer
//! threads send them. When a listener's outbox is full, the sender's
//! handler waits for it to make room, so a burst is relayed at the pace of
//! the listeners (the sender's own lines wait in its socket, and then in
//! its client), and nobody's outbox grows without bound.
//!
//! A listener that stops reading must not hold everybody up, though: the
//! sender waits at most [`STALL`] (1 s) for all the full outboxes of one
//! line together, and a listener whose outbox stayed full that long is
//! dropped: its connection is closed and its departure announced
//! (`* 127.0.0.1:50000 left (too slow)`). So a stalled client delays the
//! others by at most about a second, once. A client that leaves is removed
//! from the room before its handler returns.
//!
//! # Idle timeout: off by default
//!
//! A chat client may only read, for hours. Unlike the other examples, chat
//! turns the idle timeout off by default (`--idle-timeout-ms 0`); pass
//! `--idle-timeout-ms N` to close clients that send nothing for `N` ms.
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
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, TrySendError};
use frontdesk::{Connection, Handler, LineError, LineReader, Rejected, Timeout};

use common::{Limits, Options};

/// How often a handler waiting for its client looks whether the server is
/// shutting down.
const POLL: Duration = Duration::from_millis(100);

/// How many lines may wait for one client. A listener may fall this far
/// behind without slowing anyone; beyond it, senders wait for it. Bounds
/// the memory one client can hold to this many lines.
const OUTBOX: usize = 64;

/// How long a sender waits for full outboxes to take one line. A listener
/// whose outbox stayed full this long is not reading, and is dropped.
const STALL: Duration = Duration::from_secs(1);

/// How long the writer thread may wait for its client to take one line.
/// While others talk, a client that stops reading is dropped after
/// [`STALL`]; this bounds the writer when nobody is talking.
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

/// The outboxes a line goes to, copied out of the room so that the sender
/// can wait for them without holding the room's lock.
type Recipients = Vec<(u64, Sender<Arc<str>>)>;

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
        // Once the room and any sender still delivering a line have let go
        // of the outbox (within STALL), the writer sends what is left in it,
        // then ends.
        let _ = writer.join();
        result
    }
}

impl Chat {
    /// Passes the client's lines to the room until it leaves. While the
    /// room waits for slow listeners, this client's lines wait unread.
    fn relay(&self, conn: &Connection, id: u64) -> io::Result<()> {
        let mut lines = LineReader::new(conn, self.limits.max_line);
        loop {
            match lines.read_line_str() {
                Ok(line) => self.room.say(id, line),
                Err(LineError::InvalidUtf8 { .. }) => self.room.tell(id, "error: invalid utf-8\n"),
                Err(LineError::TooLong { .. }) => {
                    self.room.tell(id, "error: line too long\n");
                    return Ok(());
                }
                // Nothing arrived for POLL: leave only once the server is
                // shutting down, so lines other clients sent before the
                // shutdown still reach this one.
                Err(LineError::TimedOut(error)) if Timeout::of(&error) == Some(Timeout::Read) => {
                    if conn.is_shutting_down() {
                        return Ok(());
                    }
                }
                // The client closed, or was dropped.
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
        // The outbox is new and empty, and nobody else can reach it before
        // it is in the room: this cannot fail, and comes first.
        let _ = member.outbox.try_send(welcome.into());
        let to = recipients(&members, id);
        let text = format!("* {} joined\n", member.name);
        members.insert(id, member);
        drop(members);
        self.deliver(to, text);
    }

    fn say(&self, id: u64, line: &str) {
        let members = self.members();
        // A client dropped from the room may still have lines in flight.
        let Some(member) = members.get(&id) else {
            return;
        };
        let text = format!("{}: {line}\n", member.name);
        let to = recipients(&members, id);
        drop(members);
        self.deliver(to, text);
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
        let Some(member) = members.remove(&id) else {
            return; // dropped already
        };
        let to = recipients(&members, id);
        drop(members);
        self.deliver(to, format!("* {} left\n", member.name));
    }

    /// Puts `text` in the outboxes of `to`, waiting up to [`STALL`] for
    /// full ones, with the room unlocked. The members that could not take
    /// it are dropped: their connection is closed and their departure
    /// announced in turn.
    fn deliver(&self, to: Recipients, text: String) {
        // Each announcement after the first is of a member that was
        // removed, so this ends after at most one round per member.
        let mut announcements = vec![(to, Arc::<str>::from(text))];
        while let Some((to, text)) = announcements.pop() {
            for id in put(&to, &text) {
                let mut members = self.members();
                // It may have left, or been dropped by another sender,
                // while we waited.
                let Some(member) = members.remove(&id) else {
                    continue;
                };
                log::debug!("dropping a client that does not keep up: {}", member.name);
                let _ = member.stream.shutdown(Shutdown::Both);
                let text = format!("* {} left (too slow)\n", member.name);
                announcements.push((recipients(&members, id), text.into()));
            }
        }
    }
}

/// The outboxes of every member but `from`.
fn recipients(members: &HashMap<u64, Member>, from: u64) -> Recipients {
    members
        .iter()
        .filter(|(&id, _)| id != from)
        .map(|(&id, member)| (id, member.outbox.clone()))
        .collect()
}

/// Puts `text` in each outbox of `to`. Full outboxes are waited for all
/// at once, for at most [`STALL`] in all, so a line is delayed by at most
/// that however many listeners have stalled. Returns the members whose
/// outbox stayed full that long, or whose writer has given up.
fn put(to: &[(u64, Sender<Arc<str>>)], text: &Arc<str>) -> Vec<u64> {
    let mut failed = Vec::new();
    let mut full = Vec::new();
    for (id, outbox) in to {
        match outbox.try_send(Arc::clone(text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => full.push((*id, outbox)),
            Err(TrySendError::Disconnected(_)) => failed.push(*id),
        }
    }
    let deadline = Instant::now() + STALL;
    while !full.is_empty() {
        let mut select = Select::new();
        for &(_, outbox) in &full {
            select.send(outbox);
        }
        // Whichever outbox makes room first takes the line.
        let Ok(operation) = select.select_deadline(deadline) else {
            break; // the ones left have been full since the deadline was set
        };
        let (id, outbox) = full.swap_remove(operation.index());
        if operation.send(outbox, Arc::clone(text)).is_err() {
            failed.push(id);
        }
    }
    failed.extend(full.iter().map(|&(id, _)| id));
    failed
}

fn main() -> ExitCode {
    let options = Options::parse(
        "chat: a TCP chat relay; each line goes to every other client.
Clients that only read stay connected: the idle timeout is off by default.",
        Options {
            queue: 0,
            limits: Limits {
                idle_timeout: None,
                ..Options::default().limits
            },
            ..Options::default()
        },
    );
    // Chat's handlers look at the shutdown flag each time a POLL passes
    // without input (POLL is shorter than the drain's quiet time, so the
    // read timeout fires first): a listener must not leave before the
    // lines its peers sent just before the signal have reached it.
    let builder = options
        .builder()
        .read_timeout(POLL)
        .on_reject(|conn: &mut Rejected| conn.write_all(b"error: server busy\n"));
    let chat = Chat {
        room: Room::default(),
        limits: options.limits,
    };
    common::serve(&options, builder, chat)
}
