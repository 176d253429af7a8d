//! `Peer`: a handle to a connection of the turn mode that any thread may
//! keep, to send to it without waiting or to close it.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::addr::Addr;
use crate::config::CloseReason;
use crate::net::listener::Listener;
use crate::net::socket::PeerCredentials;
use crate::stream::frames::LengthPrefix;
use crate::turn::engine::{Entry, Outgoing, SendError};

/// A handle to a connection in the turn mode, from [`Turn::peer`](crate::Turn::peer):
/// `Send`, `Sync` and cheap to clone, so a chat room or a game lobby keeps
/// one per member and broadcasts with it from any thread.
///
/// [`send`](Peer::send) never waits: it writes what the socket takes at
/// once and queues the rest in the connection's bounded outbox, which the
/// server flushes as the client reads. When the outbox is full, the
/// server's [`OutboxFull`](crate::OutboxFull) policy decides: close that
/// connection (the default: one client that does not read never holds up
/// the others), or only report it. Either way it is counted in
/// [`Stats::outbox_full`](crate::Stats::outbox_full).
///
/// A `Peer` kept after its connection ended fails every send with
/// [`SendError::Closed`]; it holds no socket (the descriptor is closed
/// with the connection), only a little memory until it is dropped, so
/// remove a connection's `Peer` from wherever it is kept in
/// [`TurnHandler::close`](crate::TurnHandler::close), as the chat example
/// does. `Peer`s kept past the server's shutdown also keep its engine
/// (its readiness sets and signals: about ten descriptors) until the last
/// of them is dropped; those the handler keeps go with the handler.
#[derive(Clone)]
pub struct Peer {
    entry: Arc<Entry>,
}

impl Peer {
    pub(crate) fn new(entry: Arc<Entry>) -> Peer {
        Peer { entry }
    }

    /// The connection's id (see [`Turn::id`](crate::Turn::id)).
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// Asks the CPU to bring into its cache what a send to this
    /// connection touches first, without waiting for it (see
    /// `Entry::prefetch`).
    pub(crate) fn prefetch(&self) {
        self.entry.prefetch();
    }

    /// The client's address.
    pub fn peer_addr(&self) -> Addr {
        self.entry.peer_addr.get()
    }

    /// What the connection's TLS handshake settled (see
    /// [`Turn::tls_info`](crate::Turn::tls_info)); kept after the
    /// connection ends.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_info(&self) -> Option<&crate::stream::tls::TlsInfo> {
        self.entry.tls_info()
    }

    /// The credentials of a Unix socket's client (see
    /// [`Turn::peer_credentials`](crate::Turn::peer_credentials)).
    pub fn peer_credentials(&self) -> Option<PeerCredentials> {
        self.entry.credentials()
    }

    /// The listener the connection came through (see
    /// [`Connection::listener`](crate::Connection::listener)).
    pub fn listener(&self) -> &Listener {
        &self.entry.hub.shared.listener(self.entry.listener).info
    }

    /// Queues `bytes` for the client; never waits. Anything byte-like
    /// will do (`&str`, `String`, `Vec<u8>`, ...); pass a [`Message`] (or
    /// an `Arc<[u8]>`) to send the same bytes to many peers without
    /// copying them. An empty outbox takes a message of any size, even one
    /// over the outbox limit.
    ///
    /// What the socket takes at once is written from `bytes.as_ref()`,
    /// and only the rest is made a [`Message`]: a type of your own must
    /// convert into a `Message` of the very bytes its `as_ref` shows.
    /// One whose `Message` has another length, found so, ends the
    /// connection after what was written.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] when the outbox has no room for `bytes` (the
    /// connection is then closed if the policy says so), and
    /// [`SendError::Closed`] when the connection has ended or is ending.
    pub fn send(&self, bytes: impl AsRef<[u8]> + Into<Message>) -> Result<(), SendError> {
        self.entry.send_from_peer(Sending(bytes))
    }

    /// Ends the connection: its handler's [`close`](crate::TurnHandler::close)
    /// runs with [`CloseReason::Closed`] (at once if it is parked, after
    /// its current turn otherwise), what is queued is flushed, and it is
    /// closed gently. Closing it again does nothing.
    pub fn close(&self) {
        self.entry.close(CloseReason::Closed);
    }

    /// Whether the connection has ended or is ending.
    pub fn is_closed(&self) -> bool {
        self.entry.is_closed()
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.entry.id)
            .field("peer_addr", &self.entry.peer_addr)
            .finish()
    }
}

/// Bytes to send, shared: cloning a `Message` does not copy the bytes, so
/// a broadcast makes one and sends clones of it.
///
/// # Examples
///
/// ```
/// use frontdesk::Message;
///
/// let line = Message::from(format!("{}: {}\n", "ada", "hello"));
/// let copy = line.clone(); // the same bytes, not a copy
/// assert_eq!(copy.as_bytes(), b"ada: hello\n");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Message(Arc<[u8]>);

impl Message {
    /// `payload` as one length-prefixed frame: its length, in the form
    /// `prefix` says, then the bytes. For a reply to a
    /// [`Frames`](crate::Frames) request, or a frame to broadcast: built
    /// once, it is sent to every peer without a copy.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when `payload` is longer than the
    /// prefix can announce (see [`LengthPrefix::append_frame`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use frontdesk::{LengthPrefix, Message};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let update = Message::frame(LengthPrefix::U16Be, b"tick")?;
    /// assert_eq!(update.as_bytes(), b"\x00\x04tick");
    /// # Ok(()) }
    /// ```
    pub fn frame(prefix: LengthPrefix, payload: &[u8]) -> io::Result<Message> {
        let mut bytes = Vec::with_capacity(prefix.width() + payload.len());
        prefix.append_frame(&mut bytes, payload)?;
        Ok(Message::from(bytes))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn into_shared(self) -> Arc<[u8]> {
        self.0
    }
}

impl AsRef<[u8]> for Message {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// What [`Peer::send`] and [`Turn::send`](crate::Turn::send) take, as the
/// engine takes it: the caller's bytes, written as they are where the
/// socket takes them at once, made a [`Message`] only for what must wait.
pub(crate) struct Sending<B>(pub(crate) B);

impl<B: AsRef<[u8]> + Into<Message>> Outgoing for Sending<B> {
    fn bytes(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn into_shared(self) -> Arc<[u8]> {
        self.0.into().into_shared()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({:?})", String::from_utf8_lossy(&self.0))
    }
}

impl From<Arc<[u8]>> for Message {
    fn from(bytes: Arc<[u8]>) -> Message {
        Message(bytes)
    }
}

impl From<&Message> for Message {
    fn from(message: &Message) -> Message {
        message.clone()
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Message {
        Message(bytes.into())
    }
}

impl From<&[u8]> for Message {
    fn from(bytes: &[u8]) -> Message {
        Message(bytes.into())
    }
}

impl<const N: usize> From<&[u8; N]> for Message {
    fn from(bytes: &[u8; N]) -> Message {
        Message(bytes[..].into())
    }
}

impl From<String> for Message {
    fn from(text: String) -> Message {
        Message(text.into_bytes().into())
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Message {
        Message(text.as_bytes().into())
    }
}
