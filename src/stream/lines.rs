//! Reading `\n`- or `\r\n`-terminated lines with a hard limit on their length.
//!
//! `BufRead::read_line` grows its `String` for as long as the peer sends bytes
//! without a newline, so one client can make a worker allocate without bound.
//! `LineReader` keeps one buffer of at most `max_line + 2` bytes (the longest
//! line plus `\r\n`) and reports an over-long line instead of storing it.

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::str::Utf8Error;

/// The size the buffer starts at when `max_line` allows more. Most protocol
/// lines are short, so a server with a generous limit and many connections
/// should not pay for that limit on every connection up front: the buffer is
/// zero-filled, so every byte of it is memory the connection really uses.
/// 1 KiB still takes dozens of pipelined short commands per `read`.
const INITIAL_CAPACITY: usize = 1024;

/// Reads lines of at most `max_line` bytes from any [`Read`].
///
/// A line ends with `\n` or `\r\n`; neither is part of the returned line. A
/// `\r` anywhere else is an ordinary byte. Lines are returned as slices of an
/// internal buffer, so reading a line neither copies nor allocates.
///
/// Memory use is bounded by the limit, whatever the peer sends: the buffer
/// starts at `min(max_line + 2, 1 KiB)` bytes and grows, only as a line
/// needs it, up to `max_line + 2` bytes (the longest line plus `\r\n`).
///
/// Reads are made with a buffer-sized `read` call whenever no complete line
/// is buffered, so bytes that follow a line (the next lines of a pipelining
/// client, or a body after a header) stay in the buffer for the next call and
/// are visible through [`buffered`](LineReader::buffered). How the input is
/// split into `read` results never changes the lines returned.
///
/// # Over-long lines
///
/// A line is too long when it has more than `max_line` bytes before its
/// terminator. This is reported as [`LineError::TooLong`] as soon as
/// `max_line + 1` bytes of the line are buffered, without waiting for its
/// end. A buffered `\r` at the end is not counted yet, since it may be the
/// start of `\r\n`, so a line of exactly `max_line` bytes followed by `\r\n`
/// is always accepted.
///
/// The bytes of the over-long line are then thrown away, both those already
/// buffered and, on the next call to [`read_line`](LineReader::read_line),
/// the rest of the line up to and including its terminator. So each line of
/// the input yields exactly one result, and a caller may go on reading after
/// `TooLong`. Most servers should instead answer with an error and close the
/// connection: a peer that sends over-long lines may not be speaking the
/// protocol at all, and skipping the rest of its line means reading it.
///
/// # Examples
///
/// ```
/// use std::io::Cursor;
///
/// use frontdesk::{LineError, LineReader};
///
/// # fn main() -> Result<(), LineError> {
/// let input = Cursor::new("HELO example.com\r\nNOOP\nQUIT");
/// let mut lines = LineReader::new(input, 64);
///
/// assert_eq!(lines.read_line()?, b"HELO example.com");
/// assert_eq!(lines.read_line_str()?, "NOOP");
///
/// // The stream ended in the middle of a line: its bytes stay buffered.
/// assert!(matches!(lines.read_line(), Err(LineError::Closed { partial: 4 })));
/// assert_eq!(lines.buffered(), b"QUIT");
/// # Ok(()) }
/// ```
///
/// A handler serving one command per line, where a clean close ends the
/// conversation and every other error is passed on as an [`io::Error`]:
///
/// ```
/// use std::io::{self, Read, Write};
///
/// use frontdesk::{LineError, LineReader};
///
/// fn serve(stream: impl Read, mut out: impl Write) -> io::Result<()> {
///     let mut lines = LineReader::new(stream, 512);
///     loop {
///         let line = match lines.read_line_str() {
///             Ok(line) => line,
///             Err(LineError::Closed { partial: 0 }) => return Ok(()),
///             Err(err) => return Err(err.into()),
///         };
///         writeln!(out, "{}", line.to_uppercase())?;
///     }
/// }
///
/// # fn main() -> io::Result<()> {
/// let mut out = Vec::new();
/// serve(&b"hello\r\nworld\n"[..], &mut out)?;
/// assert_eq!(out, b"HELLO\nWORLD\n");
///
/// let err = serve(&b"hello"[..], io::sink()).unwrap_err();
/// assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
/// # Ok(()) }
/// ```
pub struct LineReader<R> {
    inner: R,
    /// Storage; its length is the usable capacity. It is zero-filled when it
    /// grows so that `read` can be given an initialised `&mut [u8]` without
    /// `unsafe`.
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`; `buf[..start]` may still hold the
    /// line returned last, which is borrowed until the next call.
    start: usize,
    end: usize,
    /// How many bytes from `start` are known to hold no `\n`, so that a line
    /// arriving one byte per `read` is scanned once, not once per byte.
    scanned: usize,
    max_line: usize,
    /// The stream returned 0 bytes. It is not read again: on a socket the
    /// peer's FIN is final, and a second `read` after end of file may block
    /// or fail on other kinds of reader.
    eof: bool,
    /// The line in progress was reported as too long; its remaining bytes up
    /// to and including the next `\n` are to be dropped.
    skipping: bool,
}

impl<R: Read> LineReader<R> {
    /// Creates a reader of lines of at most `max_line` bytes, terminator
    /// excluded, from `inner`.
    ///
    /// A `max_line` of 0 is allowed and accepts only empty lines. The buffer
    /// holds at most `max_line + 2` bytes and starts at
    /// `min(max_line + 2, 1 KiB)`.
    pub fn new(inner: R, max_line: usize) -> Self {
        let mut reader = LineReader::without_buffer(inner, max_line);
        reader.buf = vec![0; max_line.saturating_add(2).min(INITIAL_CAPACITY)];
        reader
    }

    /// A reader as [`new`](LineReader::new) makes, holding no buffer
    /// until its first read (or [`lend`](LineReader::lend)).
    pub(crate) fn without_buffer(inner: R, max_line: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            max_line,
            eof: false,
            skipping: false,
        }
    }

    /// Reads the next line and returns it without its `\n` or `\r\n`.
    ///
    /// The line is borrowed from the reader's buffer and is valid until the
    /// next call on the reader. Reads from the inner reader only when no
    /// complete line is buffered; a read interrupted by a signal
    /// ([`io::ErrorKind::Interrupted`]) is retried.
    ///
    /// # Errors
    ///
    /// - [`LineError::Closed`] when the stream has ended and no complete line
    ///   is left. Bytes of an unfinished last line stay in
    ///   [`buffered`](Self::buffered). Every later call returns `Closed`
    ///   again, without reading from the stream.
    /// - [`LineError::TooLong`] when the line has more than `max_line`
    ///   bytes; see [Over-long lines](Self#over-long-lines) for the exact
    ///   rule and what happens to the line's bytes.
    /// - [`LineError::TimedOut`] when a read fails with
    ///   [`TimedOut`](io::ErrorKind::TimedOut) or
    ///   [`WouldBlock`](io::ErrorKind::WouldBlock) (what a socket read
    ///   timeout gives on Unix). Nothing is lost: calling again goes on with
    ///   the same line.
    /// - [`LineError::Io`] for any other read error. The buffered bytes are
    ///   kept and calling again reads again, but few errors go away by
    ///   retrying.
    ///
    /// # Panics
    ///
    /// If the inner reader breaks the `Read` contract by reporting more bytes
    /// than the buffer it was given.
    pub fn read_line(&mut self) -> Result<&[u8], LineError> {
        let line = self.next_line_range()?;
        Ok(&self.buf[line])
    }

    /// Where the next line is in the buffer; see `read_line`. (A range,
    /// not a slice, so that a caller can look at the reader again when no
    /// line came.)
    pub(crate) fn next_line_range(&mut self) -> Result<Range<usize>, LineError> {
        loop {
            if self.skipping {
                let unread = &self.buf[self.start..self.end];
                match unread.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.start += i + 1;
                        self.skipping = false;
                    }
                    None => self.start = self.end,
                }
            }
            if !self.skipping {
                let from = self.start + self.scanned;
                if let Some(i) = self.buf[from..self.end].iter().position(|&b| b == b'\n') {
                    let newline = from + i;
                    let line_start = self.start;
                    let mut line_end = newline;
                    if line_end > line_start && self.buf[line_end - 1] == b'\r' {
                        line_end -= 1;
                    }
                    self.start = newline + 1;
                    self.scanned = 0;
                    if line_end - line_start > self.max_line {
                        return Err(LineError::TooLong {
                            max_line: self.max_line,
                        });
                    }
                    return Ok(line_start..line_end);
                }
                self.scanned = self.end - self.start;
                let pending_cr = self.start < self.end && self.buf[self.end - 1] == b'\r';
                if self.scanned - usize::from(pending_cr) > self.max_line {
                    self.start = self.end;
                    self.scanned = 0;
                    self.skipping = true;
                    return Err(LineError::TooLong {
                        max_line: self.max_line,
                    });
                }
            }
            if self.eof {
                return Err(LineError::Closed {
                    partial: self.end - self.start,
                });
            }
            self.fill()?;
        }
    }

    /// Reads the next line, like [`read_line`](Self::read_line), and checks
    /// that it is UTF-8.
    ///
    /// # Errors
    ///
    /// The errors of [`read_line`](Self::read_line), and
    /// [`LineError::InvalidUtf8`] when the line is not UTF-8. The invalid
    /// line has been consumed then: the next call reads the line after it.
    ///
    /// # Panics
    ///
    /// As [`read_line`](Self::read_line).
    pub fn read_line_str(&mut self) -> Result<&str, LineError> {
        let line = self.read_line()?;
        std::str::from_utf8(line).map_err(|error| LineError::InvalidUtf8 { error })
    }

    /// Makes room for at least one more byte and reads once into all the
    /// room there is.
    fn fill(&mut self) -> Result<(), LineError> {
        // Only an unfinished line is left when we read (complete ones are
        // returned first), so moving it to the front copies at most
        // `max_line + 1` bytes, and gives `read` the whole buffer.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A full buffer here holds fewer than `max_line + 2` bytes, or
            // the line would have been complete or too long already. An
            // empty one was released (`release_if_empty`) and starts again
            // at the initial size.
            let bound = self.max_line.saturating_add(2);
            let len = self
                .buf
                .len()
                .saturating_mul(2)
                .max(INITIAL_CAPACITY)
                .min(bound);
            debug_assert!(len > self.buf.len());
            // `resize` alone may round the allocation up past `bound`.
            self.buf.reserve_exact(len - self.buf.len());
            self.buf.resize(len, 0);
        }
        let room = self.buf.len() - self.end;
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    assert!(n <= room, "`Read::read` returned more bytes than asked for");
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(LineError::TimedOut(e)),
                Err(e) => return Err(LineError::Io(e)),
            }
        }
    }
}

impl<R> LineReader<R> {
    /// Returns the bytes received but not yet returned as a line.
    ///
    /// After [`LineError::Closed`] these are the bytes of the unfinished
    /// last line. When switching from lines to raw bytes (a body after a
    /// header), these come first; [`Read`] on the `LineReader` takes care of
    /// that.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Returns the maximum length of a line in bytes, terminator excluded.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Returns a reference to the inner reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Returns a mutable reference to the inner reader.
    ///
    /// Reading from it directly skips the [`buffered`](Self::buffered) bytes
    /// and can split a line; use it for settings such as a read timeout.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Returns the inner reader. The [`buffered`](Self::buffered) bytes are
    /// lost; take them first if they matter.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The bytes of a line found by `next_line_range`, valid until the
    /// next read.
    pub(crate) fn line_at(&self, line: Range<usize>) -> &[u8] {
        &self.buf[line]
    }

    /// Gives up the buffer when it holds nothing, so that a connection
    /// waiting for its next line costs no buffer, and returns it (empty
    /// when there was none, or when it holds bytes): the next read
    /// allocates one again, unless given one with
    /// [`lend`](LineReader::lend).
    pub(crate) fn release_if_empty(&mut self) -> Vec<u8> {
        if self.start != self.end || self.skipping {
            return Vec::new();
        }
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// Whether the reader holds a buffer (it gave up none, or read since).
    pub(crate) fn holds_buffer(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Gives a reader that holds no buffer `buf` to read into, its bytes
    /// to be overwritten, instead of allocating and zeroing one.
    pub(crate) fn lend(&mut self, mut buf: Vec<u8>) {
        debug_assert!(!self.holds_buffer());
        buf.truncate(self.max_line.saturating_add(2));
        self.buf = buf;
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Reads raw bytes: first the [`buffered`](LineReader::buffered) ones, then
/// straight from the inner reader.
///
/// This is for protocols that switch from lines to a body of known length,
/// e.g. `lines.by_ref().take(len).read_to_end(&mut body)`. Reading this way
/// takes over the framing: if the last line was reported as
/// [`TooLong`](LineError::TooLong), its remaining bytes are returned here
/// rather than skipped. Errors of the inner reader, including
/// [`Interrupted`](io::ErrorKind::Interrupted), are returned as they are, as
/// `Read` implementations usually do. After the stream ended, returns
/// `Ok(0)` without reading again.
impl<R: Read> Read for LineReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start < self.end {
            let n = out.len().min(self.end - self.start);
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            self.scanned = self.scanned.saturating_sub(n);
            return Ok(n);
        }
        self.skipping = false;
        if self.eof {
            return Ok(0);
        }
        let n = self.inner.read(out)?;
        if n == 0 && !out.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

/// Shows the state of the reader, not the bytes in its buffer, which can be
/// many and are often private.
impl<R: fmt::Debug> fmt::Debug for LineReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let LineReader {
            inner,
            buf,
            start,
            end,
            scanned: _,
            max_line,
            eof,
            skipping,
        } = self;
        f.debug_struct("LineReader")
            .field("inner", inner)
            .field("max_line", max_line)
            .field("buffered", &(end - start))
            .field("capacity", &buf.len())
            .field("eof", eof)
            .field("skipping", skipping)
            .finish()
    }
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    // A socket with `SO_RCVTIMEO` reports an expired timeout as EAGAIN on
    // Unix (`WouldBlock`) and as WSAETIMEDOUT on Windows (`TimedOut`).
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Why [`LineReader`] returned no line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The stream ended and no complete line is left.
    ///
    /// Returned again by every later call. Convert to [`io::Error`] with
    /// kind [`UnexpectedEof`](io::ErrorKind::UnexpectedEof).
    #[error("{}", closed_message(*.partial))]
    Closed {
        /// The number of bytes after the last terminator, which stay in
        /// [`LineReader::buffered`]. 0 means the stream ended cleanly on a
        /// line boundary (or in an over-long line, whose bytes are dropped).
        partial: usize,
    },
    /// A line had more than `max_line` bytes before its terminator.
    ///
    /// See [Over-long lines](LineReader#over-long-lines). Convert to
    /// [`io::Error`] with kind [`InvalidData`](io::ErrorKind::InvalidData).
    #[error("line longer than {max_line} bytes")]
    TooLong {
        /// The reader's limit.
        max_line: usize,
    },
    /// The line was not UTF-8; only [`LineReader::read_line_str`] returns
    /// this.
    ///
    /// The line has been consumed: the next call reads the line after it.
    /// Convert to [`io::Error`] with kind
    /// [`InvalidData`](io::ErrorKind::InvalidData).
    #[error("line is not valid utf-8")]
    InvalidUtf8 {
        /// Where the line stopped being UTF-8.
        #[source]
        error: Utf8Error,
    },
    /// A read timed out: it failed with [`TimedOut`](io::ErrorKind::TimedOut)
    /// or [`WouldBlock`](io::ErrorKind::WouldBlock), which is what a socket
    /// read timeout gives on Unix.
    ///
    /// Buffered bytes are kept: calling again goes on with the same line.
    /// Converts to the inner [`io::Error`].
    #[error("timed out waiting for a line")]
    TimedOut(#[source] io::Error),
    /// Reading failed for another reason. Converts to the inner
    /// [`io::Error`].
    #[error("failed to read a line")]
    Io(#[source] io::Error),
}

fn closed_message(partial: usize) -> String {
    if partial == 0 {
        "stream closed".to_owned()
    } else {
        format!("stream closed in the middle of a line ({partial} bytes)")
    }
}

/// Lets `?` pass a `LineError` out of a function returning
/// [`io::Result`].
///
/// `Closed` becomes [`UnexpectedEof`](io::ErrorKind::UnexpectedEof),
/// `TooLong` and `InvalidUtf8` become [`InvalidData`](io::ErrorKind::InvalidData),
/// each wrapping the `LineError`; `TimedOut` and `Io` give back their
/// `io::Error` unchanged.
impl From<LineError> for io::Error {
    fn from(err: LineError) -> io::Error {
        match err {
            LineError::TimedOut(e) | LineError::Io(e) => e,
            LineError::Closed { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, err),
            LineError::TooLong { .. } | LineError::InvalidUtf8 { .. } => {
                io::Error::new(io::ErrorKind::InvalidData, err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io::Cursor;

    use super::*;

    /// Hands out its input in chunks of a fixed size.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
        reads: usize,
    }

    impl Chunked {
        fn new(data: &[u8], chunk: usize) -> Chunked {
            Chunked {
                data: data.to_vec(),
                pos: 0,
                chunk,
                reads: 0,
            }
        }
    }

    impl Read for Chunked {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let n = self.chunk.min(out.len()).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// Returns each scripted result once, then fails the test if read again.
    struct Script(Vec<io::Result<Vec<u8>>>);

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            assert!(!self.0.is_empty(), "read past the end of the script");
            let bytes = self.0.remove(0)?;
            assert!(
                bytes.len() <= out.len(),
                "script step larger than the buffer"
            );
            out[..bytes.len()].copy_from_slice(&bytes);
            Ok(bytes.len())
        }
    }

    fn data(bytes: &[u8]) -> io::Result<Vec<u8>> {
        Ok(bytes.to_vec())
    }

    fn fail(kind: io::ErrorKind) -> io::Result<Vec<u8>> {
        Err(io::Error::new(kind, "scripted"))
    }

    /// Every result until and including the second `Closed`, rendered for
    /// comparison.
    fn all_results(reader: impl Read, max_line: usize) -> Vec<String> {
        let mut lines = LineReader::new(reader, max_line);
        let mut out = Vec::new();
        let mut closed = 0;
        while closed < 2 {
            let result = match lines.read_line() {
                Ok(line) => format!("line {:?}", String::from_utf8_lossy(line)),
                Err(LineError::Closed { partial }) => {
                    closed += 1;
                    format!("closed {partial} {:?}", lines.buffered())
                }
                Err(err) => format!("error {err}"),
            };
            out.push(result);
        }
        out
    }

    #[test]
    fn accepts_lf_and_crlf() {
        let mut lines = LineReader::new(&b"one\ntwo\r\n\n\r\nthree\r\n"[..], 16);
        assert_eq!(lines.read_line().unwrap(), b"one");
        assert_eq!(lines.read_line().unwrap(), b"two");
        assert_eq!(lines.read_line().unwrap(), b"");
        assert_eq!(lines.read_line().unwrap(), b"");
        assert_eq!(lines.read_line().unwrap(), b"three");
        assert!(matches!(
            lines.read_line(),
            Err(LineError::Closed { partial: 0 })
        ));
    }

    #[test]
    fn lone_cr_is_data_and_only_one_cr_is_stripped() {
        let mut lines = LineReader::new(&b"a\rb\n\rc\r\r\n\r\n"[..], 16);
        assert_eq!(lines.read_line().unwrap(), b"a\rb");
        assert_eq!(lines.read_line().unwrap(), b"\rc\r");
        assert_eq!(lines.read_line().unwrap(), b"");
    }

    #[test]
    fn one_byte_reads_give_the_same_results_as_one_read() {
        let input: &[u8] = b"alpha\r\nbeta\n\n\rgamma\r\r\nthis line is too long\r\ndelta\r\nend\r";
        let whole = all_results(Chunked::new(input, usize::MAX), 8);
        assert_eq!(whole, all_results(Chunked::new(input, 1), 8));
        assert_eq!(whole, all_results(Chunked::new(input, 3), 8));
        assert_eq!(
            whole,
            [
                r#"line "alpha""#,
                r#"line "beta""#,
                r#"line """#,
                r#"line "\rgamma\r""#,
                "error line longer than 8 bytes",
                r#"line "delta""#,
                "closed 4 [101, 110, 100, 13]",
                "closed 4 [101, 110, 100, 13]",
            ]
        );
    }

    #[test]
    fn bytes_after_a_line_stay_buffered() {
        let mut reader = Chunked::new(b"GET\r\nPUT\r\npar", usize::MAX);
        let mut lines = LineReader::new(&mut reader, 64);
        assert_eq!(lines.read_line().unwrap(), b"GET");
        assert_eq!(lines.buffered(), b"PUT\r\npar");
        assert_eq!(lines.read_line().unwrap(), b"PUT");
        assert_eq!(lines.buffered(), b"par");
        drop(lines);
        assert_eq!(reader.reads, 1);
    }

    #[test]
    fn line_of_exactly_max_line_is_accepted_with_either_terminator() {
        for chunk in [1, 2, usize::MAX] {
            let input = Chunked::new(b"abcd\r\nefgh\nijkl\r", chunk);
            let mut lines = LineReader::new(input, 4);
            assert_eq!(lines.read_line().unwrap(), b"abcd");
            assert_eq!(lines.read_line().unwrap(), b"efgh");
            assert!(matches!(
                lines.read_line(),
                Err(LineError::Closed { partial: 5 })
            ));
            assert_eq!(lines.buffered(), b"ijkl\r");
        }
    }

    #[test]
    fn too_long_without_waiting_for_more_input() {
        // The script panics if read a second time, so TooLong must come from
        // the max_line + 1 bytes alone.
        let mut lines = LineReader::new(Script(vec![data(b"abcde")]), 4);
        assert!(matches!(
            lines.read_line(),
            Err(LineError::TooLong { max_line: 4 })
        ));
        assert_eq!(lines.buffered(), b"");
    }

    #[test]
    fn trailing_cr_is_not_counted_until_the_next_byte() {
        let script = vec![data(b"abcd\r"), data(b"\n")];
        let mut lines = LineReader::new(Script(script), 4);
        assert_eq!(lines.read_line().unwrap(), b"abcd");

        let script = vec![data(b"abcd\r"), data(b"x")];
        let mut lines = LineReader::new(Script(script), 4);
        assert!(matches!(lines.read_line(), Err(LineError::TooLong { .. })));

        // "abcd\r" + "\r\n" is the line "abcd\r", one byte over.
        let script = vec![data(b"abcd\r"), data(b"\r")];
        let mut lines = LineReader::new(Script(script), 4);
        assert!(matches!(lines.read_line(), Err(LineError::TooLong { .. })));
    }

    #[test]
    fn too_long_line_is_skipped_up_to_its_terminator() {
        // The buffer holds max_line + 2 = 6 bytes, so each step fits in one read.
        let script = vec![
            data(b"abcdef"),
            data(b"ghij"),
            data(b"kl\r\nok"),
            data(b"\n"),
        ];
        let mut lines = LineReader::new(Script(script), 4);
        assert!(matches!(lines.read_line(), Err(LineError::TooLong { .. })));
        assert_eq!(lines.read_line().unwrap(), b"ok");
    }

    #[test]
    fn too_long_line_with_its_terminator_in_the_buffer_is_dropped_at_once() {
        let mut reader = Chunked::new(b"abcde\nok\n", usize::MAX);
        let mut lines = LineReader::new(&mut reader, 4);
        assert!(matches!(lines.read_line(), Err(LineError::TooLong { .. })));
        assert_eq!(lines.buffered(), b"");
        assert!(!lines.skipping);
        assert_eq!(lines.read_line().unwrap(), b"ok");
    }

    #[test]
    fn stream_ending_inside_a_too_long_line_is_closed_with_nothing_buffered() {
        let mut lines = LineReader::new(&b"ok\nabcdefgh"[..], 4);
        assert_eq!(lines.read_line().unwrap(), b"ok");
        assert!(matches!(lines.read_line(), Err(LineError::TooLong { .. })));
        assert!(matches!(
            lines.read_line(),
            Err(LineError::Closed { partial: 0 })
        ));
        assert_eq!(lines.buffered(), b"");
    }

    #[test]
    fn max_line_zero_accepts_only_empty_lines() {
        let mut lines = LineReader::new(&b"\n\r\nx\n\r\r\n\n"[..], 0);
        assert_eq!(lines.read_line().unwrap(), b"");
        assert_eq!(lines.read_line().unwrap(), b"");
        assert!(matches!(
            lines.read_line(),
            Err(LineError::TooLong { max_line: 0 })
        ));
        assert!(matches!(lines.read_line(), Err(LineError::TooLong { .. })));
        assert_eq!(lines.read_line().unwrap(), b"");
        assert!(matches!(
            lines.read_line(),
            Err(LineError::Closed { partial: 0 })
        ));
        assert!(lines.capacity() <= 2);
    }

    /// An endless stream of `a`s, with no newline, up to `left` bytes.
    struct NoNewline {
        left: usize,
    }

    impl Read for NoNewline {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.left);
            out[..n].fill(b'a');
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn memory_stays_bounded_without_newlines() {
        for max_line in [0, 1, 100, 8 * 1024 - 2, 8 * 1024, 100_000] {
            let bound = max_line + 2;
            let mut lines = LineReader::new(NoNewline { left: 10 << 20 }, max_line);
            assert!(lines.capacity() <= bound.min(INITIAL_CAPACITY));
            let mut too_long = 0;
            loop {
                match lines.read_line() {
                    Err(LineError::TooLong { .. }) => too_long += 1,
                    Err(LineError::Closed { partial: 0 }) => break,
                    other => panic!("unexpected {other:?}"),
                }
                assert!(lines.capacity() <= bound, "{} > {bound}", lines.capacity());
            }
            assert_eq!(too_long, 1);
            assert!(lines.capacity() <= bound, "{} > {bound}", lines.capacity());
        }
    }

    #[test]
    fn buffer_starts_small_and_grows_to_fit_a_long_line() {
        let line = vec![b'x'; 20_000];
        let mut input = line.clone();
        input.extend_from_slice(b"\r\n");
        let mut lines = LineReader::new(Cursor::new(input), 1 << 20);
        assert!(lines.capacity() <= INITIAL_CAPACITY);
        assert_eq!(lines.read_line().unwrap(), &line[..]);
        assert!(lines.capacity() < 64 * 1024);
    }

    #[test]
    fn compacts_instead_of_growing() {
        // Each read fills what room there is; the lines fit in the 6-byte
        // buffer only if the unread tail is moved to the front.
        let mut lines = LineReader::new(Chunked::new(b"ab\ncd\nef\ngh\nijkl\r\n", 5), 4);
        for expected in [&b"ab"[..], b"cd", b"ef", b"gh", b"ijkl"] {
            assert_eq!(lines.read_line().unwrap(), expected);
            assert!(lines.capacity() <= 6);
        }
    }

    #[test]
    fn interrupted_reads_are_retried() {
        let script = vec![
            fail(io::ErrorKind::Interrupted),
            data(b"he"),
            fail(io::ErrorKind::Interrupted),
            data(b"llo\n"),
        ];
        let mut lines = LineReader::new(Script(script), 16);
        assert_eq!(lines.read_line().unwrap(), b"hello");
    }

    #[test]
    fn timeout_keeps_the_partial_line() {
        for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
            let script = vec![
                data(b"hel"),
                fail(kind),
                data(b"lo\r"),
                fail(kind),
                data(b"\n"),
            ];
            let mut lines = LineReader::new(Script(script), 5);
            match lines.read_line() {
                Err(LineError::TimedOut(e)) => assert_eq!(e.kind(), kind),
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(lines.buffered(), b"hel");
            assert!(matches!(lines.read_line(), Err(LineError::TimedOut(_))));
            assert_eq!(lines.read_line().unwrap(), b"hello");
        }
    }

    #[test]
    fn timeout_while_skipping_goes_on_skipping() {
        let script = vec![
            data(b"too lo"),
            fail(io::ErrorKind::WouldBlock),
            data(b"ng"),
            data(b" \r\nok"),
            data(b"\n"),
        ];
        let mut lines = LineReader::new(Script(script), 4);
        assert!(matches!(lines.read_line(), Err(LineError::TooLong { .. })));
        assert!(matches!(lines.read_line(), Err(LineError::TimedOut(_))));
        assert_eq!(lines.read_line().unwrap(), b"ok");
    }

    #[test]
    fn other_errors_are_io() {
        let script = vec![
            data(b"par"),
            fail(io::ErrorKind::ConnectionReset),
            data(b"t\n"),
        ];
        let mut lines = LineReader::new(Script(script), 16);
        match lines.read_line() {
            Err(LineError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(lines.buffered(), b"par");
        assert_eq!(lines.read_line().unwrap(), b"part");
    }

    #[test]
    fn line_before_end_of_stream_is_returned() {
        let mut lines = LineReader::new(Script(vec![data(b"last\r\n"), data(b"")]), 16);
        assert_eq!(lines.read_line().unwrap(), b"last");
        assert!(matches!(
            lines.read_line(),
            Err(LineError::Closed { partial: 0 })
        ));
    }

    #[test]
    fn closed_is_repeated_without_reading_again() {
        let mut reader = Chunked::new(b"a\nbc", 10);
        let mut lines = LineReader::new(&mut reader, 16);
        assert_eq!(lines.read_line().unwrap(), b"a");
        for _ in 0..3 {
            assert!(matches!(
                lines.read_line(),
                Err(LineError::Closed { partial: 2 })
            ));
            assert_eq!(lines.buffered(), b"bc");
        }
        drop(lines);
        assert_eq!(reader.reads, 2);
    }

    #[test]
    fn invalid_utf8_consumes_the_line() {
        let mut lines = LineReader::new(&b"ok\n\xff\xfe\nnext\n"[..], 16);
        assert_eq!(lines.read_line_str().unwrap(), "ok");
        match lines.read_line_str() {
            Err(LineError::InvalidUtf8 { error }) => assert_eq!(error.valid_up_to(), 0),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(lines.read_line_str().unwrap(), "next");
    }

    fn utf8_error() -> Utf8Error {
        // Built at run time: a literal would trip the `invalid_from_utf8` lint.
        let bytes = vec![b'a', 0xff];
        std::str::from_utf8(&bytes).unwrap_err()
    }

    #[test]
    fn converts_to_io_error_kinds() {
        let kind = |err: LineError| io::Error::from(err).kind();
        assert_eq!(
            kind(LineError::Closed { partial: 0 }),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            kind(LineError::TooLong { max_line: 1 }),
            io::ErrorKind::InvalidData
        );
        let error = utf8_error();
        assert_eq!(
            kind(LineError::InvalidUtf8 { error }),
            io::ErrorKind::InvalidData
        );
        let timed_out = io::Error::new(io::ErrorKind::WouldBlock, "inner");
        assert_eq!(
            kind(LineError::TimedOut(timed_out)),
            io::ErrorKind::WouldBlock
        );
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "inner");
        let reset = io::Error::from(LineError::Io(reset));
        assert_eq!(reset.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(reset.to_string(), "inner");

        let too_long = io::Error::from(LineError::TooLong { max_line: 7 });
        assert_eq!(too_long.to_string(), "line longer than 7 bytes");
        assert!(matches!(
            too_long
                .get_ref()
                .and_then(|e| e.downcast_ref::<LineError>()),
            Some(LineError::TooLong { max_line: 7 })
        ));
    }

    #[test]
    fn messages_are_lower_case_and_do_not_repeat_the_source() {
        let error = utf8_error();
        let io_error = || io::Error::other("cause");
        let errors = [
            LineError::Closed { partial: 0 },
            LineError::Closed { partial: 3 },
            LineError::TooLong { max_line: 9 },
            LineError::InvalidUtf8 { error },
            LineError::TimedOut(io_error()),
            LineError::Io(io_error()),
        ];
        for err in &errors {
            let message = err.to_string();
            assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
            assert!(!message.ends_with('.'), "{message}");
            assert!(!message.contains("cause"), "{message}");
        }
        assert_eq!(
            errors[1].to_string(),
            "stream closed in the middle of a line (3 bytes)"
        );
        assert!(errors[0].source().is_none());
        assert!(errors[3].source().is_some());
        assert_eq!(errors[5].source().unwrap().to_string(), "cause");
    }

    #[test]
    fn read_returns_buffered_bytes_first() {
        let mut lines = LineReader::new(&b"LEN 5\r\nhello\nnext\n"[..], 16);
        assert_eq!(lines.read_line().unwrap(), b"LEN 5");
        let mut body = Vec::new();
        (&mut lines).take(6).read_to_end(&mut body).unwrap();
        assert_eq!(body, b"hello\n");
        assert_eq!(lines.read_line().unwrap(), b"next");
        let mut rest = Vec::new();
        assert_eq!(lines.read_to_end(&mut rest).unwrap(), 0);
        assert!(matches!(lines.read_line(), Err(LineError::Closed { .. })));
    }

    #[test]
    fn read_after_partial_scan_does_not_lose_a_newline() {
        let script = vec![data(b"abc"), fail(io::ErrorKind::WouldBlock), data(b"d\n")];
        let mut lines = LineReader::new(Script(script), 16);
        assert!(matches!(lines.read_line(), Err(LineError::TimedOut(_))));
        let mut first = [0; 2];
        lines.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"ab");
        assert_eq!(lines.read_line().unwrap(), b"cd");
    }

    #[test]
    fn accessors() {
        let mut lines = LineReader::new(Cursor::new(b"x\n".to_vec()), 3);
        assert_eq!(lines.max_line(), 3);
        assert_eq!(lines.get_ref().position(), 0);
        lines.get_mut().set_position(1);
        assert_eq!(lines.read_line().unwrap(), b"");
        assert_eq!(lines.into_inner().position(), 2);
    }

    #[test]
    fn debug_shows_state_not_bytes() {
        let mut lines = LineReader::new(&b"secret\nmore secret"[..], 32);
        lines.read_line().unwrap();
        let debug = format!("{lines:?}");
        assert!(debug.contains("buffered: 11"), "{debug}");
        assert!(!debug.contains("115, 101"), "{debug}");
    }

    #[test]
    fn is_send_and_sync() {
        fn is_send_and_sync<T: Send + Sync>() {}
        is_send_and_sync::<LineReader<std::net::TcpStream>>();
        is_send_and_sync::<LineError>();
    }
}
