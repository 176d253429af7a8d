//! `Frames`: the length-prefixed frames of a turn-mode connection, read
//! across its turns.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::stream::frames::{FrameError, FrameReader, LengthPrefix};
use crate::time;
use crate::turn::engine::TurnReader;
use crate::turn::handler::Turn;

/// Length-prefixed frames of a connection in the turn mode, read across
/// turns: a frame that arrives in pieces over several turns is put
/// together in its buffer while the connection is parked, and no buffer
/// is held while nothing is buffered.
///
/// It is a [`FrameReader`] over the connection that never waits: the same
/// prefixes, limit, errors and no-copy frames, except that "nothing more
/// has arrived" is `Ok(None)`, the cue to return
/// [`Next::Park`](crate::Next::Park). Replies go out with
/// [`Message::frame`](crate::Message::frame).
///
/// # Back-pressure
///
/// As [`Lines`](crate::Lines): `Frames` yields no frame while the
/// connection's outbox is over half its limit
/// ([`outbox_limit`](crate::ServerBuilder::outbox_limit)), so the obvious
/// loop is right for any client:
///
/// ```text
/// while let Some(request) = frames.next_frame()? {
///     turn.send(Message::frame(PREFIX, &reply(request))?)?; // fits
/// }
/// Ok(Next::Park)
/// ```
///
/// A reply of up to half the outbox limit always fits after a frame, and
/// one of any size when the outbox is empty. The frames kept meanwhile get
/// their turn as soon as the outbox is empty, with no new input needed.
///
/// # Examples
///
/// A game server's request/response loop: each request is a frame of an
/// opcode and its arguments, each reply a frame.
///
/// ```
/// use std::io::{self, Read, Write};
/// use std::net::TcpStream;
///
/// use frontdesk::{FrameError, Frames, LengthPrefix, Message, Next, Server, Turn, TurnHandler};
///
/// const PREFIX: LengthPrefix = LengthPrefix::U16Be;
///
/// struct Game;
///
/// impl TurnHandler for Game {
///     type State = Frames;
///
///     fn open(&self, turn: &mut Turn<'_>) -> io::Result<Frames> {
///         Ok(Frames::new(turn, PREFIX, 1024))
///     }
///
///     fn ready(&self, frames: &mut Frames, turn: &mut Turn<'_>) -> io::Result<Next> {
///         loop {
///             let reply: &[u8] = match frames.next_frame() {
///                 Ok(Some([1])) => b"\x01pong",        // ping
///                 Ok(Some([2, ..])) => b"\x02moved",   // move, with its arguments
///                 Ok(Some(_)) => b"\xffunknown",
///                 Ok(None) => return Ok(Next::Park),
///                 Err(FrameError::Closed { .. }) => return Ok(Next::Close),
///                 Err(error) => return Err(error.into()),
///             };
///             turn.send(Message::frame(PREFIX, reply)?)?;
///         }
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let handle = Server::builder().workers(2).bind("127.0.0.1:0")?.spawn_turns(Game)?;
/// let mut client = TcpStream::connect(handle.local_addr())?;
/// client.write_all(b"\x00\x01\x01\x00\x03\x02")?; // a ping, and a move in two pieces
/// let mut reply = [0; 7];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"\x00\x05\x01pong");
/// client.write_all(b"\x05\x07")?;
/// let mut reply = [0; 8];
/// client.read_exact(&mut reply)?;
/// assert_eq!(&reply, b"\x00\x06\x02moved");
/// handle.shutdown()?;
/// # Ok(()) }
/// ```
pub struct Frames {
    reader: FrameReader<TurnReader>,
    /// When the frame in progress was first seen unfinished.
    partial_since: Option<Instant>,
}

impl Frames {
    /// Frames of at most `max_frame` bytes (prefix excluded), each
    /// announced by a `prefix`, from the turn's connection.
    pub fn new(turn: &Turn<'_>, prefix: LengthPrefix, max_frame: usize) -> Frames {
        let mut reader = FrameReader::new(turn.reader(), prefix, max_frame);
        reader.release_if_empty();
        Frames {
            reader,
            partial_since: None,
        }
    }

    /// The next complete frame's payload, without its prefix, or `None`
    /// when no complete frame has arrived yet, or while the outbox is over
    /// half full (see [Back-pressure](Frames#back-pressure)).
    ///
    /// # Errors
    ///
    /// As [`FrameReader::read_frame`]: [`FrameError::Closed`] once the
    /// client has closed and no complete frame is left,
    /// [`FrameError::TooLong`] for a prefix over the limit (its payload is
    /// skipped as it arrives, should the handler go on),
    /// [`FrameError::Io`] when the connection broke.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if self.reader.get_ref().entry.is_backed_up() {
            // The client is not reading its replies: no more requests
            // until it has read enough. The connection gets a turn for
            // what is kept here once its outbox is empty.
            self.hold_input();
            return Ok(None);
        }
        match self.reader.next_frame_range() {
            Ok(frame) => {
                self.partial_since = None;
                // Bytes after this frame may hold the next: should the
                // handler park before asking, they still get a turn.
                self.hold_input();
                Ok(Some(self.reader.frame_at(frame)))
            }
            Err(FrameError::TimedOut(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                // Only part of a frame is kept: the socket says when the
                // rest arrives.
                self.reader.get_ref().entry.hold_input(false);
                if self.reader.buffered().is_empty() {
                    self.partial_since = None;
                    self.reader.release_if_empty();
                } else {
                    self.partial_since.get_or_insert_with(Instant::now);
                }
                Ok(None)
            }
            Err(error) => {
                if matches!(error, FrameError::TooLong { .. }) {
                    self.partial_since = None;
                    self.hold_input();
                }
                Err(error)
            }
        }
    }

    /// Tells the engine whether bytes the handler has not asked for are
    /// kept here.
    fn hold_input(&self) {
        let kept = !self.reader.buffered().is_empty();
        self.reader.get_ref().entry.hold_input(kept);
    }

    /// When the frame now buffered unfinished was first seen, if one is:
    /// for a deadline per request, "a frame must be complete within N of
    /// its first byte".
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// The deadline for the frame in progress, `timeout` after it began,
    /// or `None` when no frame is in progress or `timeout` is `None` or
    /// too long to ever pass (`Duration::MAX`); pass it to
    /// [`Turn::set_deadline`] before parking.
    pub fn frame_deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        time::after(self.partial_since?, timeout?)
    }

    /// The bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffered()
    }
}

impl fmt::Debug for Frames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frames")
            .field("prefix", &self.reader.prefix())
            .field("max_frame", &self.reader.max_frame())
            .field("buffered", &self.reader.buffered().len())
            .field("partial_since", &self.partial_since)
            .finish()
    }
}
