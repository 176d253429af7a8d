//! `Lines`: the lines of a turn-mode connection, read across its turns.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::stream::lines::{LineError, LineReader};
use crate::time;
use crate::turn::engine::TurnReader;
use crate::turn::handler::Turn;

/// Lines of a connection in the turn mode, read across turns: a line that
/// arrives in pieces over several turns is put together in its buffer
/// while the connection is parked, and no buffer is held while nothing
/// is buffered.
///
/// It is a [`LineReader`] over the connection that never waits: the same
/// limits, errors and no-copy lines, except that "nothing more has
/// arrived" is `Ok(None)`, the cue to return [`Next::Park`](crate::Next::Park).
///
/// # Back-pressure
///
/// `Lines` yields no line while the connection's outbox is over half its
/// limit ([`outbox_limit`](crate::ServerBuilder::outbox_limit)): a client
/// that sends requests without reading the replies gets no more answers
/// until it has read enough. So the obvious loop is right for any client:
///
/// ```text
/// while let Some(line) = lines.next_line_str()? {
///     turn.send(reply(line))?; // fits: the outbox is at most half full
/// }
/// Ok(Next::Park)
/// ```
///
/// A reply of up to half the outbox limit always fits after a line, and
/// one of any size when the outbox is empty. The lines kept meanwhile get
/// their turn as soon as the outbox is empty, with no new input needed;
/// so do lines left here by a handler that parks before asking for them
/// (one that waits for [`outbox_room`](crate::Turn::outbox_room), say).
pub struct Lines {
    reader: LineReader<TurnReader>,
    /// When the line in progress was first seen unfinished.
    partial_since: Option<Instant>,
}

impl Lines {
    /// Lines of at most `max_line` bytes (terminator excluded) from the
    /// turn's connection.
    pub fn new(turn: &Turn<'_>, max_line: usize) -> Lines {
        let mut reader = LineReader::new(turn.reader(), max_line);
        reader.release_if_empty();
        Lines {
            reader,
            partial_since: None,
        }
    }

    /// The next complete line, without its `\n` or `\r\n`, or `None` when
    /// no complete line has arrived yet, or while the outbox is over half
    /// full (see [Back-pressure](Lines#back-pressure)).
    ///
    /// # Errors
    ///
    /// As [`LineReader::read_line`]: [`LineError::Closed`] once the client
    /// has closed and no complete line is left, [`LineError::TooLong`] for
    /// a line over the limit, [`LineError::Io`] when the connection broke.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        if self.reader.get_ref().entry.is_backed_up() {
            // The client is not reading its replies: no more requests
            // until it has read enough. The connection gets a turn for
            // what is kept here once its outbox is empty.
            self.hold_input();
            return Ok(None);
        }
        match self.reader.next_line_range() {
            Ok(line) => {
                self.partial_since = None;
                // Bytes after this line may hold the next: should the
                // handler park before asking, they still get a turn.
                self.hold_input();
                Ok(Some(self.reader.line_at(line)))
            }
            Err(LineError::TimedOut(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                // Only part of a line is kept: the socket says when the
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
            Err(error) => Err(error),
        }
    }

    /// Tells the engine whether bytes the handler has not asked for are
    /// kept here.
    fn hold_input(&self) {
        let kept = !self.reader.buffered().is_empty();
        self.reader.get_ref().entry.hold_input(kept);
    }

    /// [`next_line`](Lines::next_line), checked to be UTF-8.
    ///
    /// # Errors
    ///
    /// As [`next_line`](Lines::next_line), and [`LineError::InvalidUtf8`]
    /// (the line is consumed).
    pub fn next_line_str(&mut self) -> Result<Option<&str>, LineError> {
        match self.next_line()? {
            Some(line) => std::str::from_utf8(line)
                .map(Some)
                .map_err(|error| LineError::InvalidUtf8 { error }),
            None => Ok(None),
        }
    }

    /// When the line now buffered unfinished was first seen, if one is:
    /// for a deadline per request, "a line must be complete within N of
    /// its first byte".
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// The deadline for the line in progress, `timeout` after it began, or
    /// `None` when no line is in progress or `timeout` is `None` or too
    /// long to ever pass (`Duration::MAX`); pass it to
    /// [`Turn::set_deadline`] before parking.
    pub fn line_deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        time::after(self.partial_since?, timeout?)
    }

    /// The bytes received but not yet returned as a line.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffered()
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lines")
            .field("max_line", &self.reader.max_line())
            .field("buffered", &self.reader.buffered().len())
            .field("partial_since", &self.partial_since)
            .finish()
    }
}
