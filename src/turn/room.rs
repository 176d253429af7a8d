//! `Room`: a group of turn-mode connections to broadcast to, without a
//! lock held while sending.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use crate::turn::engine::SendError;
use crate::turn::peer::{Message, Peer};

/// A group of connections of the turn mode, by id: a chat room, a game
/// lobby, the subscribers of a feed. Members [`join`](Room::join) with
/// their [`Peer`], [`leave`](Room::leave) in
/// [`TurnHandler::close`](crate::TurnHandler::close), and any thread
/// [`broadcast`](Room::broadcast)s to all of them, or to all but one
/// ([`broadcast_except`](Room::broadcast_except), for "everyone but the
/// sender").
///
/// `Room` is `Send + Sync`: keep it in the handler (or an `Arc`) and use
/// it from every worker and any other thread.
///
/// # No lock while sending
///
/// A broadcast takes the room's lock only to take a snapshot of the
/// members (a shared list, rebuilt only after someone joined or left),
/// then sends to each without it, so joins, leaves and other broadcasts
/// never wait for a broadcast's sends, and a send never runs under the
/// lock. A member that joins during a broadcast may miss it; one that
/// leaves during it may still get it. Sends never wait either
/// ([`Peer::send`]): the message, formatted once, is queued in each
/// member's outbox and shared, not copied.
///
/// # A member whose outbox is full
///
/// Each send to a member follows the server's
/// [`OutboxFull`](crate::OutboxFull) policy, and the [`Delivery`] a
/// broadcast returns names the members it did not reach, by id:
///
/// - under [`OutboxFull::Close`](crate::OutboxFull::Close) (the default),
///   a member whose outbox had no room is closed by the server: its
///   [`close`](crate::TurnHandler::close) runs with
///   [`CloseReason::OutboxFull`](crate::CloseReason::OutboxFull), which
///   is where it leaves the room (and where the others can be told). One
///   client that does not read never holds up the room;
/// - under [`OutboxFull::Report`](crate::OutboxFull::Report), it stays,
///   without this message; [`Delivery::full`] lists it, for the caller to
///   decide (drop it with [`Peer::close`], or resend later).
///
/// Either way it is counted in [`Stats::outbox_full`](crate::Stats::outbox_full).
/// A member whose connection has ended or is ending
/// ([`Peer::is_closed`]) but which has not left yet is listed in
/// [`Delivery::closed`], and stays in the room until it leaves.
///
/// # Examples
///
/// A relay: each line a client sends goes to every other client.
///
/// ```
/// use std::io::{self, BufRead, BufReader, Write};
/// use std::net::TcpStream;
///
/// use frontdesk::{CloseReason, LineError, Lines, Next, Room, Server, Turn, TurnHandler};
///
/// #[derive(Default)]
/// struct Relay {
///     room: Room,
/// }
///
/// impl TurnHandler for Relay {
///     type State = Lines;
///
///     fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
///         let others = self.room.join(turn.peer());
///         turn.send(format!("others here: {others}\n"))?;
///         Ok(Lines::new(turn, 1024))
///     }
///
///     fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
///         loop {
///             match lines.next_line_str() {
///                 Ok(Some(line)) => {
///                     self.room.broadcast_except(turn.id(), format!("{line}\n"));
///                 }
///                 Ok(None) => return Ok(Next::Park),
///                 Err(LineError::Closed { .. }) => return Ok(Next::Close),
///                 Err(error) => return Err(error.into()),
///             }
///         }
///     }
///
///     fn close(&self, _: Lines, turn: &mut Turn<'_>, _: CloseReason) {
///         self.room.leave(turn.id());
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let handle = Server::builder().workers(2).bind("127.0.0.1:0")?.spawn_turns(Relay::default())?;
/// let join = || -> io::Result<(TcpStream, BufReader<TcpStream>)> {
///     let stream = TcpStream::connect(handle.local_addr())?;
///     let mut hears = BufReader::new(stream.try_clone()?);
///     let mut greeting = String::new();
///     hears.read_line(&mut greeting)?; // in the room once greeted
///     Ok((stream, hears))
/// };
/// let (mut ada, mut ada_hears) = join()?;
/// let (_bob, mut bob_hears) = join()?;
/// ada.write_all(b"hello\n")?;
/// let mut line = String::new();
/// bob_hears.read_line(&mut line)?;
/// assert_eq!(line, "hello\n");
/// handle.shutdown()?;
/// let mut rest = String::new();
/// ada_hears.read_line(&mut rest)?; // ada's own line never came back
/// assert_eq!(rest, "");
/// # Ok(()) }
/// ```
pub struct Room {
    members: Mutex<Members>,
}

#[derive(Default)]
struct Members {
    by_id: HashMap<u64, Peer>,
    /// The members as a list the broadcasts share, built at the first
    /// broadcast after a join or a leave.
    snapshot: Option<Arc<[(u64, Peer)]>>,
}

impl Room {
    /// An empty room.
    pub fn new() -> Room {
        Room {
            members: Mutex::new(Members::default()),
        }
    }

    /// Adds a connection to the room, from [`Turn::peer`](crate::Turn::peer);
    /// returns how many *other* members the room has now.
    ///
    /// A member is known by its [`id`](Peer::id): joining again changes
    /// nothing. Call [`leave`](Room::leave) in
    /// [`TurnHandler::close`](crate::TurnHandler::close), which runs once
    /// for every connection however it ends: a `Peer` left in the room
    /// after its connection ended holds no socket, only a little memory,
    /// and every broadcast reports it in [`Delivery::closed`].
    ///
    /// Broadcasts from other threads reach the new member from the
    /// moment this returns, so join before announcing the newcomer to the
    /// others (whoever joins after it then counts it, and whoever joined
    /// before hears of it). Under concurrent broadcasts a message may
    /// reach it before what its own turn sends right after joining.
    pub fn join(&self, peer: Peer) -> usize {
        let mut members = lock(&self.members);
        let id = peer.id();
        if let std::collections::hash_map::Entry::Vacant(slot) = members.by_id.entry(id) {
            slot.insert(peer);
            members.snapshot = None;
        }
        members.by_id.len() - 1
    }

    /// Removes the connection `id` from the room; returns its `Peer`, or
    /// `None` when it was not a member.
    pub fn leave(&self, id: u64) -> Option<Peer> {
        let mut members = lock(&self.members);
        let peer = members.by_id.remove(&id);
        if peer.is_some() {
            members.snapshot = None;
        }
        peer
    }

    /// Whether the connection `id` is a member.
    pub fn contains(&self, id: u64) -> bool {
        lock(&self.members).by_id.contains_key(&id)
    }

    /// The member `id`'s `Peer`, to send it a message of its own.
    pub fn get(&self, id: u64) -> Option<Peer> {
        lock(&self.members).by_id.get(&id).cloned()
    }

    /// How many members the room has.
    pub fn len(&self) -> usize {
        lock(&self.members).by_id.len()
    }

    /// Whether the room has no members.
    pub fn is_empty(&self) -> bool {
        lock(&self.members).by_id.is_empty()
    }

    /// The members now, in no particular order.
    pub fn members(&self) -> Vec<Peer> {
        self.snapshot()
            .iter()
            .map(|(_, peer)| peer.clone())
            .collect()
    }

    /// Sends `message` to every member; never waits. See
    /// [A member whose outbox is full](Room#a-member-whose-outbox-is-full)
    /// for what happens to a member that does not keep up.
    pub fn broadcast(&self, message: impl Into<Message>) -> Delivery {
        self.send_all(None, message.into())
    }

    /// Sends `message` to every member but `sender` (a connection id:
    /// [`Turn::id`](crate::Turn::id)); never waits. `sender` need not be
    /// a member.
    pub fn broadcast_except(&self, sender: u64, message: impl Into<Message>) -> Delivery {
        self.send_all(Some(sender), message.into())
    }

    fn send_all(&self, except: Option<u64>, message: Message) -> Delivery {
        let mut delivery = Delivery::default();
        // The lock is let go here: the sends run without it.
        let members = self.snapshot();
        for (i, (id, peer)) in members.iter().enumerate() {
            // The next member's connection is most likely not in the
            // cache (a room of a thousand is not): asked for now, it is
            // there by the time this send's system call returns.
            if let Some((_, next)) = members.get(i + 1) {
                next.prefetch();
            }
            if Some(*id) == except {
                continue;
            }
            match peer.send(&message) {
                Ok(()) => delivery.sent += 1,
                Err(SendError::Full) => delivery.full.push(*id),
                Err(SendError::Closed) => delivery.closed.push(*id),
            }
        }
        delivery
    }

    /// The members, shared: built once after each change. With their ids
    /// beside them, so that a broadcast finds the one to skip without
    /// touching each member's connection (a cache line each).
    fn snapshot(&self) -> Arc<[(u64, Peer)]> {
        let mut members = lock(&self.members);
        let Members { by_id, snapshot } = &mut *members;
        Arc::clone(
            snapshot.get_or_insert_with(|| {
                by_id.iter().map(|(&id, peer)| (id, peer.clone())).collect()
            }),
        )
    }
}

impl Default for Room {
    fn default() -> Room {
        Room::new()
    }
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("members", &self.len())
            .finish()
    }
}

/// What a [`Room`] broadcast did, member by member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// How many members the message was queued for.
    pub sent: usize,
    /// The members whose outbox had no room for it, by connection id.
    /// Under [`OutboxFull::Close`](crate::OutboxFull::Close) (the
    /// default) each is being closed by the server, and leaves in its
    /// `close`; under [`OutboxFull::Report`](crate::OutboxFull::Report)
    /// each stays, without the message.
    pub full: Vec<u64>,
    /// The members whose connection has ended or is ending
    /// ([`Peer::is_closed`]), by connection id: they have not left the
    /// room yet.
    pub closed: Vec<u64>,
}

impl Delivery {
    /// Whether every member it was meant for got the message.
    pub fn is_complete(&self) -> bool {
        self.full.is_empty() && self.closed.is_empty()
    }
}
