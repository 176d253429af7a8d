//! `Lines`: the lines of a turn-mode connection, read across its turns.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
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
    lines: Unwaited<TurnReader>,
}

/// The lines of a reader that never waits, its `WouldBlock` being "no
/// complete line yet": the part of [`Lines`] that knows no connection
/// (nor its outbox), so that a test or a fuzz target can drive it with
/// any reader (`src/fuzzing.rs`).
pub(crate) struct Unwaited<R> {
    reader: LineReader<R>,
    /// When the line in progress was first seen unfinished.
    partial_since: Option<Instant>,
}

thread_local! {
    /// A buffer given up by the `Lines` of a connection that parked with
    /// nothing buffered, for the next that reads on this thread: a
    /// parked connection holds no buffer, yet a busy one does not pay an
    /// allocation, and the zeroing of 1 KiB, for each line (0.7 % of the
    /// CPU at 8 clients sending `ping`).
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The largest buffer kept as the spare: a few times the 1 KiB a reader
/// starts at, so that a worker thread keeps at most that much after a
/// line that was long.
const SPARE_MAX: usize = 4096;

/// Keeps `buf` as this thread's spare, if it is worth keeping.
fn keep_spare(buf: Vec<u8>) {
    if !buf.is_empty() && buf.capacity() <= SPARE_MAX {
        SPARE.with(|spare| spare.set(buf));
    }
}

/// This thread's spare, if it holds at most `most` bytes (a reader keeps
/// no more than its `max_line + 2`); else none, and a larger spare stays
/// for a reader with a longer limit.
fn take_spare(most: usize) -> Vec<u8> {
    SPARE.with(|cell| {
        let spare = cell.take();
        if spare.capacity() <= most {
            return spare;
        }
        cell.set(spare);
        Vec::new()
    })
}

impl<R: Read> Unwaited<R> {
    /// Lines of at most `max_line` bytes from `inner`, with no buffer
    /// held until bytes arrive.
    pub(crate) fn new(inner: R, max_line: usize) -> Unwaited<R> {
        Unwaited {
            reader: LineReader::without_buffer(inner, max_line),
            partial_since: None,
        }
    }

    /// Where the next complete line is (see [`Unwaited::line_at`]), or
    /// `None` when the reader has nothing more now; the buffer is given
    /// up then if it holds nothing.
    pub(crate) fn next_line_range(&mut self) -> Result<Option<Range<usize>>, LineError> {
        if !self.reader.holds_buffer() {
            self.reader
                .lend(take_spare(self.reader.max_line().saturating_add(2)));
        }
        match self.reader.next_line_range() {
            Ok(line) => {
                self.partial_since = None;
                Ok(Some(line))
            }
            Err(LineError::TimedOut(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                if self.reader.buffered().is_empty() {
                    self.partial_since = None;
                    keep_spare(self.reader.release_if_empty());
                } else {
                    self.partial_since.get_or_insert_with(Instant::now);
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

impl<R> Unwaited<R> {
    /// The bytes of a line `next_line_range` found, until the next call.
    pub(crate) fn line_at(&self, line: Range<usize>) -> &[u8] {
        self.reader.line_at(line)
    }

    /// The bytes received but not yet returned as a line.
    pub(crate) fn buffered(&self) -> &[u8] {
        self.reader.buffered()
    }

    /// The reader the lines come from.
    pub(crate) fn get_ref(&self) -> &R {
        self.reader.get_ref()
    }

    /// When the line now buffered unfinished was first seen, if one is.
    pub(crate) fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }

    /// The longest line, terminator excluded.
    pub(crate) fn max_line(&self) -> usize {
        self.reader.max_line()
    }
}

impl Lines {
    /// Lines of at most `max_line` bytes (terminator excluded) from the
    /// turn's connection.
    pub fn new(turn: &Turn<'_>, max_line: usize) -> Lines {
        Lines {
            lines: Unwaited::new(turn.reader(), max_line),
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
        if self.lines.get_ref().entry.is_backed_up() {
            // The client is not reading its replies: no more requests
            // until it has read enough. The connection gets a turn for
            // what is kept here once its outbox is empty.
            self.hold_input();
            return Ok(None);
        }
        match self.lines.next_line_range()? {
            Some(line) => {
                // Bytes after this line may hold the next: should the
                // handler park before asking, they still get a turn.
                self.hold_input();
                Ok(Some(self.lines.line_at(line)))
            }
            None => {
                // Only part of a line is kept, if any: the socket says
                // when the rest arrives.
                self.lines.get_ref().entry.hold_input(false);
                Ok(None)
            }
        }
    }

    /// Tells the engine whether bytes the handler has not asked for are
    /// kept here.
    fn hold_input(&self) {
        let kept = !self.lines.buffered().is_empty();
        self.lines.get_ref().entry.hold_input(kept);
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
        self.lines.partial_since()
    }

    /// The deadline for the line in progress, `timeout` after it began, or
    /// `None` when no line is in progress or `timeout` is `None` or too
    /// long to ever pass (`Duration::MAX`); pass it to
    /// [`Turn::set_deadline`] before parking.
    pub fn line_deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        time::after(self.lines.partial_since()?, timeout?)
    }

    /// The bytes received but not yet returned as a line.
    pub fn buffered(&self) -> &[u8] {
        self.lines.buffered()
    }
}

impl<R> fmt::Debug for Unwaited<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unwaited")
            .field("max_line", &self.max_line())
            .field("buffered", &self.buffered().len())
            .field("partial_since", &self.partial_since)
            .finish()
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lines")
            .field("max_line", &self.lines.max_line())
            .field("buffered", &self.lines.buffered().len())
            .field("partial_since", &self.lines.partial_since)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A reader that gives its chunks one per read (as much as fits), an
    /// empty one being a read that would block, then would block.
    struct Chunks(VecDeque<&'static [u8]>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let chunk = match self.0.pop_front() {
                Some(chunk) if !chunk.is_empty() => chunk,
                _ => return Err(io::ErrorKind::WouldBlock.into()),
            };
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(&chunk[n..]);
            }
            Ok(n)
        }
    }

    fn lines(max_line: usize, chunks: &[&'static [u8]]) -> Unwaited<Chunks> {
        Unwaited::new(Chunks(chunks.iter().copied().collect()), max_line)
    }

    fn next(lines: &mut Unwaited<Chunks>) -> Result<Option<Vec<u8>>, LineError> {
        let line = lines.next_line_range()?;
        Ok(line.map(|line| lines.line_at(line).to_vec()))
    }

    /// The buffer one connection gave up, its bytes still in it, serves
    /// the next on the same thread: that one reads only its own bytes,
    /// within its own limit.
    #[test]
    fn a_spare_buffer_carries_nothing_over() {
        let mut second = lines(3, &[b"ab", b"", b"\nabcd\nc\n"]);
        let mut first = lines(3, &[b"xyz\nyy\n"]);
        assert_eq!(next(&mut first).unwrap().unwrap(), b"xyz");
        assert_eq!(next(&mut first).unwrap().unwrap(), b"yy");
        assert_eq!(next(&mut first).unwrap(), None);
        assert!(!first.reader.holds_buffer(), "given up when empty");
        let spare = SPARE.with(Cell::take);
        assert_eq!(spare.len(), 5, "kept as the spare");
        assert!(spare.contains(&b'y'), "its bytes and all: {spare:?}");
        SPARE.with(|cell| cell.set(spare));

        assert_eq!(next(&mut second).unwrap(), None, "half a line");
        assert_eq!(second.buffered(), b"ab");
        assert_eq!(next(&mut second).unwrap().unwrap(), b"ab");
        assert!(matches!(next(&mut second), Err(LineError::TooLong { .. })));
        assert_eq!(next(&mut second).unwrap().unwrap(), b"c");
        assert_eq!(next(&mut second).unwrap(), None);
    }

    /// A spare from a reader with a longer limit is not lent to one with
    /// a shorter: that one would keep, with a partial line (or parked
    /// after a line), a buffer beyond its `max_line + 2` bytes.
    #[test]
    fn a_spare_larger_than_a_readers_limit_is_not_lent() {
        static LONG: [u8; 3001] = {
            let mut line = [b'x'; 3001];
            line[3000] = b'\n';
            line
        };
        let mut second = lines(3, &[b"ab"]);
        let mut first = lines(4000, &[&LONG]);
        assert_eq!(next(&mut first).unwrap().unwrap().len(), 3000);
        assert_eq!(next(&mut first).unwrap(), None);
        let spare = SPARE.with(Cell::take);
        assert!(spare.capacity() > 1024, "kept as the spare");
        SPARE.with(|cell| cell.set(spare));

        assert_eq!(next(&mut second).unwrap(), None, "half a line");
        assert_eq!(second.buffered(), b"ab");
        let capacity = second.reader.capacity();
        assert!(capacity <= 5, "holds {capacity} bytes for lines of 3");
    }
}
