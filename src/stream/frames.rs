//! Reading length-prefixed frames with a hard limit on their size, and
//! writing them.
//!
//! Binary protocols (game servers, RPC) often send each message as its
//! length, in 1, 2 or 4 bytes, then that many bytes. Reading one by hand
//! with `read_exact` into a buffer of the announced size lets one client
//! make a worker allocate up to 4 GiB with four bytes. `FrameReader`
//! checks the announced length against its limit as soon as the prefix is
//! in, before it makes any room for the frame, and holds at most the
//! prefix plus `max_frame` bytes, the same way `LineReader` bounds a line.

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::Range;

use crate::stream::lines::is_timeout;

/// The size the buffer starts at when the limit allows more: most frames of
/// a request/response protocol are small, and the buffer is zero-filled, so
/// every byte of it is memory the connection really uses.
const INITIAL_CAPACITY: usize = 1024;

/// The largest frame [`LengthPrefix::write_frame`] assembles on the stack
/// to send in one `write`; a longer one is written as its prefix, then
/// its payload.
const ONE_WRITE: usize = 4096;

/// How a frame's length is written before it: 1, 2 or 4 bytes, unsigned,
/// big endian (network byte order) or little endian.
///
/// The length counts the payload only, not the prefix: the frame `hi`
/// with [`U16Be`](LengthPrefix::U16Be) is the four bytes `00 02 68 69`.
/// An empty payload is a valid frame (a prefix of zero).
///
/// # Examples
///
/// ```
/// use frontdesk::LengthPrefix;
///
/// # fn main() -> std::io::Result<()> {
/// let mut out = Vec::new();
/// LengthPrefix::U16Be.write_frame(&mut out, b"hi")?;
/// LengthPrefix::U32Le.write_frame(&mut out, b"!")?;
/// assert_eq!(out, [0, 2, b'h', b'i', 1, 0, 0, 0, b'!']);
///
/// // 256 bytes do not fit a one-byte length.
/// let error = LengthPrefix::U8.write_frame(&mut out, &[0; 256]).unwrap_err();
/// assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LengthPrefix {
    /// One byte: frames of up to 255 bytes.
    U8,
    /// Two bytes, big endian: frames of up to 65,535 bytes.
    U16Be,
    /// Two bytes, little endian: frames of up to 65,535 bytes.
    U16Le,
    /// Four bytes, big endian: frames of up to 4 GiB − 1.
    U32Be,
    /// Four bytes, little endian: frames of up to 4 GiB − 1.
    U32Le,
}

impl LengthPrefix {
    /// The prefix's size in bytes: 1, 2 or 4.
    pub const fn width(self) -> usize {
        match self {
            LengthPrefix::U8 => 1,
            LengthPrefix::U16Be | LengthPrefix::U16Le => 2,
            LengthPrefix::U32Be | LengthPrefix::U32Le => 4,
        }
    }

    /// The longest payload the prefix can announce: 255, 65,535 or
    /// 4,294,967,295 bytes.
    pub const fn max_len(self) -> u64 {
        match self {
            LengthPrefix::U8 => u8::MAX as u64,
            LengthPrefix::U16Be | LengthPrefix::U16Le => u16::MAX as u64,
            LengthPrefix::U32Be | LengthPrefix::U32Le => u32::MAX as u64,
        }
    }

    /// The length a complete prefix announces; `bytes` holds at least
    /// [`width`](Self::width) bytes.
    fn decode(self, bytes: &[u8]) -> u64 {
        match self {
            LengthPrefix::U8 => u64::from(bytes[0]),
            LengthPrefix::U16Be => u64::from(u16::from_be_bytes([bytes[0], bytes[1]])),
            LengthPrefix::U16Le => u64::from(u16::from_le_bytes([bytes[0], bytes[1]])),
            LengthPrefix::U32Be => {
                u64::from(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
            LengthPrefix::U32Le => {
                u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
        }
    }

    /// The prefix for a payload of `len` bytes: a buffer and how much of
    /// it is the prefix.
    fn encode(self, len: usize) -> io::Result<([u8; 4], usize)> {
        let too_long = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                FrameError::TooLong {
                    len: u64::try_from(len).unwrap_or(u64::MAX),
                    max_frame: usize::try_from(self.max_len()).unwrap_or(usize::MAX),
                },
            )
        };
        let mut out = [0; 4];
        match self {
            LengthPrefix::U8 => out[0] = u8::try_from(len).map_err(|_| too_long())?,
            LengthPrefix::U16Be | LengthPrefix::U16Le => {
                let len = u16::try_from(len).map_err(|_| too_long())?;
                out[..2].copy_from_slice(&match self {
                    LengthPrefix::U16Be => len.to_be_bytes(),
                    _ => len.to_le_bytes(),
                });
            }
            LengthPrefix::U32Be | LengthPrefix::U32Le => {
                let len = u32::try_from(len).map_err(|_| too_long())?;
                out = match self {
                    LengthPrefix::U32Be => len.to_be_bytes(),
                    _ => len.to_le_bytes(),
                };
            }
        }
        Ok((out, self.width()))
    }

    /// Appends `payload` to `out` as one frame: its length, then the
    /// bytes. For several frames in one write, or a frame to send as a
    /// [`Message`](crate::Message) (see
    /// [`Message::frame`](crate::Message::frame)).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`], wrapping a [`FrameError::TooLong`],
    /// when `payload` is longer than the prefix can announce
    /// ([`max_len`](Self::max_len)); `out` is left as it was.
    pub fn append_frame(self, out: &mut Vec<u8>, payload: &[u8]) -> io::Result<()> {
        let (prefix, width) = self.encode(payload.len())?;
        out.reserve(width + payload.len());
        out.extend_from_slice(&prefix[..width]);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// Writes `payload` to `out` as one frame: its length, then the bytes,
    /// with `write_all`. A frame of up to 4 KiB, prefix included, goes in
    /// one `write` (so on a socket it leaves in one segment, not a
    /// segment for its prefix and one for the rest); a longer one in two,
    /// the prefix and the payload, without copying the payload.
    ///
    /// `out` is anything [`Write`]: a [`Connection`](crate::Connection) or
    /// a `&Connection`, a `Vec<u8>`, a `BufWriter`. In the turn mode, send
    /// a [`Message::frame`](crate::Message::frame) instead.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`], wrapping a [`FrameError::TooLong`],
    /// when `payload` is longer than the prefix can announce
    /// ([`max_len`](Self::max_len)); nothing is written then. Otherwise
    /// the errors of `write_all` on `out`.
    pub fn write_frame(self, mut out: impl Write, payload: &[u8]) -> io::Result<()> {
        let (prefix, width) = self.encode(payload.len())?;
        if width + payload.len() <= ONE_WRITE {
            let mut frame = [0; ONE_WRITE];
            frame[..width].copy_from_slice(&prefix[..width]);
            frame[width..width + payload.len()].copy_from_slice(payload);
            out.write_all(&frame[..width + payload.len()])
        } else {
            out.write_all(&prefix[..width])?;
            out.write_all(payload)
        }
    }
}

/// Reads length-prefixed frames of at most `max_frame` bytes from any
/// [`Read`].
///
/// Each frame is its length (a [`LengthPrefix`]: 1, 2 or 4 bytes, big or
/// little endian), then that many bytes of payload. Frames are returned
/// as slices of an internal buffer, without their prefix, so reading a
/// frame neither copies nor allocates.
///
/// Memory use is bounded by the limit, whatever the peer sends: the
/// buffer starts at `min(width + max_frame, 1 KiB)` bytes and grows only
/// as the bytes of a frame arrive, up to the prefix plus the frame being
/// read (at most `width + max_frame`). A prefix that announces more than
/// `max_frame` is refused before any room is made for its frame.
///
/// Reads are made with a buffer-sized `read` call whenever no complete
/// frame is buffered, so bytes that follow a frame (the next requests of a
/// pipelining client) stay in the buffer for the next call and are visible
/// through [`buffered`](FrameReader::buffered). How the input is split
/// into `read` results never changes the frames returned.
///
/// # Over-long frames
///
/// A frame whose prefix announces more than `max_frame` bytes is reported
/// as [`FrameError::TooLong`] as soon as its prefix is in, without waiting
/// for its payload. Its payload is then thrown away, what is buffered at
/// once and the rest as it arrives on the next calls to
/// [`read_frame`](FrameReader::read_frame), so each frame of the input
/// yields exactly one result and a caller may go on reading after
/// `TooLong`. Skipping a frame means reading it, up to 4 GiB with a
/// four-byte prefix: most servers should instead answer with an error and
/// close the connection.
///
/// # Examples
///
/// ```
/// use std::io::Cursor;
///
/// use frontdesk::{FrameError, FrameReader, LengthPrefix};
///
/// # fn main() -> Result<(), FrameError> {
/// // Two frames ("ping", then an empty one), then half of a third.
/// let input = Cursor::new(b"\x00\x04ping\x00\x00\x00\x09hal".to_vec());
/// let mut frames = FrameReader::new(input, LengthPrefix::U16Be, 1024);
///
/// assert_eq!(frames.read_frame()?, b"ping");
/// assert_eq!(frames.read_frame()?, b"");
///
/// // The stream ended in the middle of a frame: its bytes stay buffered.
/// assert!(matches!(frames.read_frame(), Err(FrameError::Closed { partial: 5 })));
/// assert_eq!(frames.buffered(), b"\x00\x09hal");
/// # Ok(()) }
/// ```
///
/// A handler answering each request frame with a reply frame, where a
/// clean close ends the conversation and every other error is passed on
/// as an [`io::Error`]:
///
/// ```
/// use std::io::{self, Read, Write};
///
/// use frontdesk::{FrameError, FrameReader, LengthPrefix};
///
/// const PREFIX: LengthPrefix = LengthPrefix::U16Be;
///
/// fn serve(stream: impl Read, mut out: impl Write) -> io::Result<()> {
///     let mut frames = FrameReader::new(stream, PREFIX, 4096);
///     loop {
///         let request = match frames.read_frame() {
///             Ok(request) => request,
///             Err(FrameError::Closed { partial: 0 }) => return Ok(()),
///             Err(err) => return Err(err.into()),
///         };
///         PREFIX.write_frame(&mut out, &request.to_ascii_uppercase())?;
///     }
/// }
///
/// # fn main() -> io::Result<()> {
/// let mut out = Vec::new();
/// serve(&b"\x00\x02hi\x00\x03you"[..], &mut out)?;
/// assert_eq!(out, b"\x00\x02HI\x00\x03YOU");
///
/// let err = serve(&b"\x00\x05hi"[..], io::sink()).unwrap_err();
/// assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
/// # Ok(()) }
/// ```
pub struct FrameReader<R> {
    inner: R,
    /// Storage; its length is the usable capacity. It is zero-filled when
    /// it grows so that `read` can be given an initialised `&mut [u8]`
    /// without `unsafe`.
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`; `buf[..start]` may still hold
    /// the frame returned last, which is borrowed until the next call.
    start: usize,
    end: usize,
    prefix: LengthPrefix,
    max_frame: usize,
    /// Bytes of an over-long frame still to be thrown away as they arrive.
    skip: u64,
    /// The stream returned 0 bytes. It is not read again: on a socket the
    /// peer's FIN is final, and a second `read` after end of file may
    /// block or fail on other kinds of reader.
    eof: bool,
}

impl<R: Read> FrameReader<R> {
    /// Creates a reader of frames of at most `max_frame` bytes (prefix
    /// excluded) from `inner`, each announced by a `prefix`.
    ///
    /// A `max_frame` of 0 accepts only empty frames; one at or above the
    /// prefix's [`max_len`](LengthPrefix::max_len) accepts any frame it
    /// can announce. The buffer holds at most `width + max_frame` bytes and
    /// starts at `min(width + max_frame, 1 KiB)`.
    pub fn new(inner: R, prefix: LengthPrefix, max_frame: usize) -> Self {
        let initial = prefix
            .width()
            .saturating_add(max_frame)
            .min(INITIAL_CAPACITY);
        FrameReader {
            inner,
            buf: vec![0; initial],
            start: 0,
            end: 0,
            prefix,
            max_frame,
            skip: 0,
            eof: false,
        }
    }

    /// Reads the next frame and returns its payload, without the prefix.
    ///
    /// The frame is borrowed from the reader's buffer and is valid until
    /// the next call on the reader. Reads from the inner reader only when
    /// no complete frame is buffered; a read interrupted by a signal
    /// ([`io::ErrorKind::Interrupted`]) is retried.
    ///
    /// # Errors
    ///
    /// - [`FrameError::Closed`] when the stream has ended and no complete
    ///   frame is left. Bytes of an unfinished last frame (its prefix
    ///   included) stay in [`buffered`](Self::buffered). Every later call
    ///   returns `Closed` again, without reading from the stream.
    /// - [`FrameError::TooLong`] when the prefix announces more than
    ///   `max_frame` bytes; see [Over-long frames](Self#over-long-frames)
    ///   for what happens to its payload.
    /// - [`FrameError::TimedOut`] when a read fails with
    ///   [`TimedOut`](io::ErrorKind::TimedOut) or
    ///   [`WouldBlock`](io::ErrorKind::WouldBlock) (what a socket read
    ///   timeout gives on Unix). Nothing is lost: calling again goes on
    ///   with the same frame.
    /// - [`FrameError::Io`] for any other read error. The buffered bytes
    ///   are kept and calling again reads again, but few errors go away by
    ///   retrying.
    ///
    /// # Panics
    ///
    /// If the inner reader breaks the `Read` contract by reporting more
    /// bytes than the buffer it was given.
    pub fn read_frame(&mut self) -> Result<&[u8], FrameError> {
        let frame = self.next_frame_range()?;
        Ok(&self.buf[frame])
    }

    /// Where the next frame is in the buffer; see `read_frame`. (A range,
    /// not a slice, so that a caller can look at the reader again when no
    /// frame came.)
    pub(crate) fn next_frame_range(&mut self) -> Result<Range<usize>, FrameError> {
        let width = self.prefix.width();
        loop {
            self.drop_skipped();
            // The bytes the frame in progress needs from `start`, prefix
            // included, once its prefix is in.
            let mut need = None;
            if self.skip == 0 && self.end - self.start >= width {
                let len = self.prefix.decode(&self.buf[self.start..]);
                match usize::try_from(len) {
                    Ok(len) if len <= self.max_frame => {
                        let frame = self.start + width..self.start + width + len;
                        if frame.end <= self.end {
                            self.start = frame.end;
                            return Ok(frame);
                        }
                        need = Some(width + len);
                    }
                    _ => {
                        // Refused on its prefix alone: no room is made for
                        // it, and what is here of it already goes.
                        self.start += width;
                        self.skip = len;
                        self.drop_skipped();
                        return Err(FrameError::TooLong {
                            len,
                            max_frame: self.max_frame,
                        });
                    }
                }
            }
            if self.eof {
                return Err(FrameError::Closed {
                    partial: self.end - self.start,
                });
            }
            self.fill(need)?;
        }
    }

    /// Throws away what is buffered of an over-long frame.
    fn drop_skipped(&mut self) {
        let buffered = self.end - self.start;
        let n = usize::try_from(self.skip).map_or(buffered, |skip| skip.min(buffered));
        self.start += n;
        self.skip -= n as u64;
    }

    /// Makes room for at least one more byte and reads once into all the
    /// room there is. `need` is what the frame in progress needs in all,
    /// prefix included, when its prefix is in.
    fn fill(&mut self, need: Option<usize>) -> Result<(), FrameError> {
        // Only an unfinished frame is left when we read (complete ones are
        // returned first), so moving it to the front copies at most
        // `width + max_frame - 1` bytes, and gives `read` the whole buffer.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A full buffer here holds less than the frame in progress
            // needs (or it would be complete), or is empty because it was
            // released (`release_if_empty`). It grows as the frame's
            // bytes arrive, doubling, up to what the frame needs: a client
            // that announces a large frame and sends little of it gets
            // little room.
            let bound = need.unwrap_or_else(|| self.prefix.width().saturating_add(self.max_frame));
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
                Err(e) if is_timeout(&e) => return Err(FrameError::TimedOut(e)),
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }
}

impl<R> FrameReader<R> {
    /// Returns the bytes received but not yet returned as a frame: the
    /// prefix and payload of an unfinished frame, and what follows it.
    ///
    /// After [`FrameError::Closed`] these are the bytes of the unfinished
    /// last frame. When switching from frames to raw bytes, these come
    /// first; [`Read`] on the `FrameReader` takes care of that.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Returns the largest frame accepted, in bytes, prefix excluded.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Returns how frame lengths are read.
    pub fn prefix(&self) -> LengthPrefix {
        self.prefix
    }

    /// Returns a reference to the inner reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Returns a mutable reference to the inner reader.
    ///
    /// Reading from it directly skips the [`buffered`](Self::buffered)
    /// bytes and can split a frame; use it for settings such as a read
    /// timeout.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Returns the inner reader. The [`buffered`](Self::buffered) bytes
    /// are lost; take them first if they matter.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The bytes of a frame found by `next_frame_range`, valid until the
    /// next read.
    pub(crate) fn frame_at(&self, frame: Range<usize>) -> &[u8] {
        &self.buf[frame]
    }

    /// Frees the buffer when it holds nothing, so that a connection
    /// waiting for its next frame costs no buffer; the next read
    /// allocates it again.
    pub(crate) fn release_if_empty(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Reads raw bytes: first the [`buffered`](FrameReader::buffered) ones,
/// then straight from the inner reader.
///
/// This is for protocols that switch from frames to a raw stream (a file
/// after a header frame). Reading this way takes over the framing: if the
/// last frame was reported as [`TooLong`](FrameError::TooLong), the rest
/// of its payload is returned here rather than skipped. Errors of the
/// inner reader, including [`Interrupted`](io::ErrorKind::Interrupted),
/// are returned as they are, as `Read` implementations usually do. After
/// the stream ended, returns `Ok(0)` without reading again.
impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.skip = 0;
        if self.start < self.end {
            let n = out.len().min(self.end - self.start);
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            return Ok(n);
        }
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

/// Shows the state of the reader, not the bytes in its buffer, which can
/// be many and are often private.
impl<R: fmt::Debug> fmt::Debug for FrameReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let FrameReader {
            inner,
            buf,
            start,
            end,
            prefix,
            max_frame,
            skip,
            eof,
        } = self;
        f.debug_struct("FrameReader")
            .field("inner", inner)
            .field("prefix", prefix)
            .field("max_frame", max_frame)
            .field("buffered", &(end - start))
            .field("capacity", &buf.len())
            .field("skip", skip)
            .field("eof", eof)
            .finish()
    }
}

/// Why [`FrameReader`] (or [`Frames`](crate::Frames)) returned no frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream ended and no complete frame is left.
    ///
    /// Returned again by every later call. Convert to [`io::Error`] with
    /// kind [`UnexpectedEof`](io::ErrorKind::UnexpectedEof).
    #[error("{}", closed_message(*.partial))]
    Closed {
        /// The number of bytes of an unfinished frame, its prefix
        /// included, which stay in [`FrameReader::buffered`]. 0 means the
        /// stream ended cleanly between frames (or in an over-long frame,
        /// whose bytes are dropped).
        partial: usize,
    },
    /// A frame's prefix announced more than `max_frame` bytes.
    ///
    /// See [Over-long frames](FrameReader#over-long-frames). Convert to
    /// [`io::Error`] with kind [`InvalidData`](io::ErrorKind::InvalidData).
    /// [`LengthPrefix::write_frame`] reports a payload too long for its
    /// prefix with this too, as [`InvalidInput`](io::ErrorKind::InvalidInput).
    #[error("frame of {len} bytes, longer than {max_frame}")]
    TooLong {
        /// The length the prefix announced.
        len: u64,
        /// The limit.
        max_frame: usize,
    },
    /// A read timed out: it failed with [`TimedOut`](io::ErrorKind::TimedOut)
    /// or [`WouldBlock`](io::ErrorKind::WouldBlock), which is what a socket
    /// read timeout gives on Unix.
    ///
    /// Buffered bytes are kept: calling again goes on with the same frame.
    /// Converts to the inner [`io::Error`].
    #[error("timed out waiting for a frame")]
    TimedOut(#[source] io::Error),
    /// Reading failed for another reason. Converts to the inner
    /// [`io::Error`].
    #[error("failed to read a frame")]
    Io(#[source] io::Error),
}

fn closed_message(partial: usize) -> String {
    if partial == 0 {
        "stream closed".to_owned()
    } else {
        format!("stream closed in the middle of a frame ({partial} bytes)")
    }
}

/// Lets `?` pass a `FrameError` out of a function returning
/// [`io::Result`].
///
/// `Closed` becomes [`UnexpectedEof`](io::ErrorKind::UnexpectedEof),
/// `TooLong` [`InvalidData`](io::ErrorKind::InvalidData), each wrapping
/// the `FrameError`; `TimedOut` and `Io` give back their `io::Error`
/// unchanged.
impl From<FrameError> for io::Error {
    fn from(err: FrameError) -> io::Error {
        match err {
            FrameError::TimedOut(e) | FrameError::Io(e) => e,
            FrameError::Closed { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, err),
            FrameError::TooLong { .. } => io::Error::new(io::ErrorKind::InvalidData, err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io::Cursor;

    use super::*;

    const ALL: [LengthPrefix; 5] = [
        LengthPrefix::U8,
        LengthPrefix::U16Be,
        LengthPrefix::U16Le,
        LengthPrefix::U32Be,
        LengthPrefix::U32Le,
    ];

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

    fn frame(prefix: LengthPrefix, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prefix.append_frame(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn prefixes_are_written_in_their_width_and_order() {
        let payload = [7u8; 0x0102];
        let header = |prefix: LengthPrefix| frame(prefix, &payload)[..prefix.width()].to_vec();
        assert_eq!(header(LengthPrefix::U16Be), [0x01, 0x02]);
        assert_eq!(header(LengthPrefix::U16Le), [0x02, 0x01]);
        assert_eq!(header(LengthPrefix::U32Be), [0, 0, 0x01, 0x02]);
        assert_eq!(header(LengthPrefix::U32Le), [0x02, 0x01, 0, 0]);
        assert_eq!(frame(LengthPrefix::U8, b"ab"), [2, b'a', b'b']);
        for prefix in &ALL[1..] {
            assert_eq!(
                frame(*prefix, &payload).len(),
                prefix.width() + payload.len()
            );
            assert_eq!(prefix.decode(&header(*prefix)), 0x0102);
        }
    }

    #[test]
    fn the_longest_payload_a_prefix_announces_is_written_and_one_more_is_refused() {
        for prefix in [LengthPrefix::U8, LengthPrefix::U16Be, LengthPrefix::U16Le] {
            let max = usize::try_from(prefix.max_len()).unwrap();
            let mut out = Vec::new();
            prefix.append_frame(&mut out, &vec![1; max]).unwrap();
            assert_eq!(out.len(), prefix.width() + max);
            assert_eq!(prefix.decode(&out), prefix.max_len());

            let mut out = vec![9];
            let error = prefix
                .append_frame(&mut out, &vec![1; max + 1])
                .unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(out, [9], "nothing appended");
            let mut sink = Vec::new();
            let error = prefix
                .write_frame(&mut sink, &vec![1; max + 1])
                .unwrap_err();
            assert!(sink.is_empty(), "nothing written");
            assert!(matches!(
                error.get_ref().and_then(|e| e.downcast_ref::<FrameError>()),
                Some(FrameError::TooLong { len, max_frame })
                    if *len == prefix.max_len() + 1 && *max_frame == max
            ));
        }
        assert_eq!(LengthPrefix::U32Be.max_len(), u64::from(u32::MAX));
    }

    /// Counts `write` calls.
    #[derive(Default)]
    struct Writes {
        bytes: Vec<u8>,
        calls: usize,
    }

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_small_frame_is_one_write_and_a_large_one_two() {
        for (len, calls) in [(0, 1), (10, 1), (ONE_WRITE - 4, 1), (ONE_WRITE - 3, 2)] {
            let payload = vec![3; len];
            let mut out = Writes::default();
            LengthPrefix::U32Le.write_frame(&mut out, &payload).unwrap();
            assert_eq!(out.calls, calls, "payload of {len}");
            assert_eq!(out.bytes, frame(LengthPrefix::U32Le, &payload));
        }
    }

    /// Every result until and including the second `Closed`, rendered for
    /// comparison.
    fn all_results(reader: impl Read, prefix: LengthPrefix, max_frame: usize) -> Vec<String> {
        let mut frames = FrameReader::new(reader, prefix, max_frame);
        let mut results = Vec::new();
        let mut closed = 0;
        while closed < 2 {
            let result = match frames.read_frame() {
                Ok(frame) => format!("frame {:?}", String::from_utf8_lossy(frame)),
                Err(FrameError::Closed { partial }) => {
                    closed += 1;
                    format!("closed {partial} {:?}", frames.buffered())
                }
                Err(e) => format!("error {e}"),
            };
            results.push(result);
        }
        results
    }

    #[test]
    fn chunking_does_not_change_the_frames() {
        for prefix in ALL {
            let mut input = Vec::new();
            for payload in [&b"alpha"[..], b"", b"too long!", b"beta", b"12345678"] {
                input.extend(frame(prefix, payload));
            }
            input.extend(&frame(prefix, b"end")[..prefix.width() + 1]);
            let whole = all_results(Chunked::new(&input, usize::MAX), prefix, 8);
            for chunk in [1, 2, 3, 5] {
                assert_eq!(whole, all_results(Chunked::new(&input, chunk), prefix, 8));
            }
            let mut partial = frame(prefix, b"e");
            partial.truncate(prefix.width() + 1);
            partial[prefix.width()] = b'e';
            assert_eq!(
                whole,
                [
                    r#"frame "alpha""#.to_string(),
                    r#"frame """#.to_string(),
                    "error frame of 9 bytes, longer than 8".to_string(),
                    r#"frame "beta""#.to_string(),
                    r#"frame "12345678""#.to_string(),
                    format!(
                        "closed {} {:?}",
                        prefix.width() + 1,
                        &input[input.len() - prefix.width() - 1..]
                    ),
                    format!(
                        "closed {} {:?}",
                        prefix.width() + 1,
                        &input[input.len() - prefix.width() - 1..]
                    ),
                ],
                "{prefix:?}"
            );
        }
    }

    #[test]
    fn bytes_after_a_frame_stay_buffered() {
        let mut reader = Chunked::new(b"\x03GET\x03PUT\x05par", usize::MAX);
        let mut frames = FrameReader::new(&mut reader, LengthPrefix::U8, 64);
        assert_eq!(frames.read_frame().unwrap(), b"GET");
        assert_eq!(frames.buffered(), b"\x03PUT\x05par");
        assert_eq!(frames.read_frame().unwrap(), b"PUT");
        assert_eq!(frames.buffered(), b"\x05par");
        drop(frames);
        assert_eq!(reader.reads, 1);
    }

    #[test]
    fn too_long_on_the_prefix_alone() {
        // The script panics if read a second time, so TooLong must come
        // from the prefix alone, before any payload arrives.
        let mut frames = FrameReader::new(
            Script(vec![data(b"\x00\x00\x10\x00")]),
            LengthPrefix::U32Be,
            4095,
        );
        match frames.read_frame() {
            Err(FrameError::TooLong {
                len: 4096,
                max_frame: 4095,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(frames.buffered(), b"");
        // No room was made for it.
        assert!(frames.capacity() <= INITIAL_CAPACITY);
    }

    #[test]
    fn too_long_frame_is_skipped_as_it_arrives() {
        // Frames of up to 2 bytes: the buffer holds 3, so the 6-byte frame
        // is dropped over several reads.
        let script = vec![
            data(b"\x06ab"),
            data(b"cd"),
            fail(io::ErrorKind::WouldBlock),
            data(b"e"),
            data(b"f\x02o"),
            data(b"k"),
        ];
        let mut frames = FrameReader::new(Script(script), LengthPrefix::U8, 2);
        assert!(matches!(
            frames.read_frame(),
            Err(FrameError::TooLong {
                len: 6,
                max_frame: 2
            })
        ));
        assert!(matches!(frames.read_frame(), Err(FrameError::TimedOut(_))));
        assert_eq!(frames.read_frame().unwrap(), b"ok");
        assert!(frames.capacity() <= 3);
    }

    #[test]
    fn stream_ending_inside_a_too_long_frame_is_closed_with_nothing_buffered() {
        let mut frames = FrameReader::new(&b"\x02ok\x09abcd"[..], LengthPrefix::U8, 4);
        assert_eq!(frames.read_frame().unwrap(), b"ok");
        assert!(matches!(
            frames.read_frame(),
            Err(FrameError::TooLong { .. })
        ));
        assert!(matches!(
            frames.read_frame(),
            Err(FrameError::Closed { partial: 0 })
        ));
        assert_eq!(frames.buffered(), b"");
    }

    #[test]
    fn max_frame_zero_accepts_only_empty_frames() {
        let mut frames = FrameReader::new(
            &b"\x00\x00\x01\x00x\x00\x00\x00"[..],
            LengthPrefix::U16Le,
            0,
        );
        assert_eq!(frames.read_frame().unwrap(), b"");
        assert!(matches!(
            frames.read_frame(),
            Err(FrameError::TooLong {
                len: 1,
                max_frame: 0
            })
        ));
        assert_eq!(frames.read_frame().unwrap(), b"");
        assert!(matches!(
            frames.read_frame(),
            Err(FrameError::Closed { partial: 1 })
        ));
        assert!(frames.capacity() <= 2);
    }

    #[test]
    fn max_frame_usize_max_takes_any_frame_and_grows_only_as_needed() {
        for prefix in ALL {
            let payload = vec![b'z'; 200];
            let input = [frame(prefix, &payload), frame(prefix, b"")].concat();
            let mut frames = FrameReader::new(Chunked::new(&input, 7), prefix, usize::MAX);
            assert!(frames.capacity() <= INITIAL_CAPACITY);
            assert_eq!(frames.read_frame().unwrap(), &payload[..]);
            assert_eq!(frames.read_frame().unwrap(), b"");
            assert!(frames.capacity() <= INITIAL_CAPACITY);
        }
        // A four-byte prefix announcing 4 GiB - 1 is accepted, and costs
        // only what has arrived of it.
        let mut frames = FrameReader::new(
            Script(vec![data(b"\xff\xff\xff\xffabc"), data(b"")]),
            LengthPrefix::U32Be,
            usize::MAX,
        );
        assert!(matches!(
            frames.read_frame(),
            Err(FrameError::Closed { partial: 7 })
        ));
        assert!(frames.capacity() <= INITIAL_CAPACITY);
    }

    /// A stream of frames that each announce `announced` bytes, with
    /// payloads of `a`s, cut off after `len` bytes in all.
    struct Endless {
        announced: u32,
        pos: u64,
        len: u64,
    }

    impl Read for Endless {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let unit = 4 + u64::from(self.announced);
            let prefix = self.announced.to_be_bytes();
            let mut n = 0;
            while n < out.len() && self.pos < self.len {
                let at = self.pos % unit;
                out[n] = if at < 4 { prefix[at as usize] } else { b'a' };
                n += 1;
                self.pos += 1;
            }
            Ok(n)
        }
    }

    #[test]
    fn memory_stays_bounded_whatever_the_prefixes_announce() {
        for max_frame in [0, 1, 100, 8 * 1024, 100_000] {
            let bound = 4 + max_frame;
            for announced in [u32::MAX, 100_001, 8 * 1024 + 1] {
                let mut frames = FrameReader::new(
                    Endless {
                        announced,
                        pos: 0,
                        len: 1 << 20,
                    },
                    LengthPrefix::U32Be,
                    max_frame,
                );
                let mut calls = 0;
                loop {
                    calls += 1;
                    assert!(calls < 1_000_000);
                    match frames.read_frame() {
                        Ok(frame) => assert!(frame.len() <= max_frame),
                        Err(FrameError::TooLong { .. }) => {}
                        Err(FrameError::Closed { .. }) => break,
                        other => panic!("unexpected {other:?}"),
                    }
                    assert!(
                        frames.capacity() <= bound,
                        "{} > {bound}",
                        frames.capacity()
                    );
                }
            }
        }
    }

    #[test]
    fn a_frame_arriving_slowly_gets_room_as_it_arrives() {
        // Announces 1 MiB, sends 10 bytes: the buffer stays small.
        let mut frames = FrameReader::new(
            Script(vec![
                data(b"\x00\x10\x00\x00"),
                data(b"0123456789"),
                fail(io::ErrorKind::WouldBlock),
            ]),
            LengthPrefix::U32Be,
            1 << 20,
        );
        assert!(matches!(frames.read_frame(), Err(FrameError::TimedOut(_))));
        assert!(frames.capacity() <= INITIAL_CAPACITY);
        assert_eq!(frames.buffered().len(), 14);
    }

    #[test]
    fn interrupted_reads_are_retried() {
        let script = vec![
            fail(io::ErrorKind::Interrupted),
            data(b"\x05he"),
            fail(io::ErrorKind::Interrupted),
            data(b"llo"),
        ];
        let mut frames = FrameReader::new(Script(script), LengthPrefix::U8, 16);
        assert_eq!(frames.read_frame().unwrap(), b"hello");
    }

    #[test]
    fn timeout_keeps_the_partial_frame() {
        for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
            let script = vec![
                data(b"\x00"),
                fail(kind),
                data(b"\x05hel"),
                fail(kind),
                data(b"lo"),
            ];
            let mut frames = FrameReader::new(Script(script), LengthPrefix::U16Be, 5);
            match frames.read_frame() {
                Err(FrameError::TimedOut(e)) => assert_eq!(e.kind(), kind),
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(frames.buffered(), b"\x00");
            assert!(matches!(frames.read_frame(), Err(FrameError::TimedOut(_))));
            assert_eq!(frames.buffered(), b"\x00\x05hel");
            assert_eq!(frames.read_frame().unwrap(), b"hello");
        }
    }

    #[test]
    fn other_errors_are_io() {
        let script = vec![
            data(b"\x04pa"),
            fail(io::ErrorKind::ConnectionReset),
            data(b"rt"),
        ];
        let mut frames = FrameReader::new(Script(script), LengthPrefix::U8, 16);
        match frames.read_frame() {
            Err(FrameError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(frames.buffered(), b"\x04pa");
        assert_eq!(frames.read_frame().unwrap(), b"part");
    }

    #[test]
    fn closed_is_repeated_without_reading_again() {
        let mut reader = Chunked::new(b"\x01a\x02b", 10);
        let mut frames = FrameReader::new(&mut reader, LengthPrefix::U8, 16);
        assert_eq!(frames.read_frame().unwrap(), b"a");
        for _ in 0..3 {
            assert!(matches!(
                frames.read_frame(),
                Err(FrameError::Closed { partial: 2 })
            ));
            assert_eq!(frames.buffered(), b"\x02b");
        }
        drop(frames);
        assert_eq!(reader.reads, 2);
    }

    #[test]
    fn converts_to_io_error_kinds() {
        let kind = |err: FrameError| io::Error::from(err).kind();
        assert_eq!(
            kind(FrameError::Closed { partial: 0 }),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            kind(FrameError::TooLong {
                len: 2,
                max_frame: 1
            }),
            io::ErrorKind::InvalidData
        );
        let timed_out = io::Error::new(io::ErrorKind::WouldBlock, "inner");
        assert_eq!(
            kind(FrameError::TimedOut(timed_out)),
            io::ErrorKind::WouldBlock
        );
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "inner");
        let reset = io::Error::from(FrameError::Io(reset));
        assert_eq!(reset.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(reset.to_string(), "inner");

        let too_long = io::Error::from(FrameError::TooLong {
            len: 9,
            max_frame: 7,
        });
        assert_eq!(too_long.to_string(), "frame of 9 bytes, longer than 7");
        assert!(matches!(
            too_long
                .get_ref()
                .and_then(|e| e.downcast_ref::<FrameError>()),
            Some(FrameError::TooLong {
                len: 9,
                max_frame: 7
            })
        ));
    }

    #[test]
    fn messages_are_lower_case_and_do_not_repeat_the_source() {
        let io_error = || io::Error::other("cause");
        let errors = [
            FrameError::Closed { partial: 0 },
            FrameError::Closed { partial: 3 },
            FrameError::TooLong {
                len: 10,
                max_frame: 9,
            },
            FrameError::TimedOut(io_error()),
            FrameError::Io(io_error()),
        ];
        for err in &errors {
            let message = err.to_string();
            assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
            assert!(!message.ends_with('.'), "{message}");
            assert!(!message.contains("cause"), "{message}");
        }
        assert_eq!(
            errors[1].to_string(),
            "stream closed in the middle of a frame (3 bytes)"
        );
        assert!(errors[0].source().is_none());
        assert_eq!(errors[4].source().unwrap().to_string(), "cause");
    }

    #[test]
    fn read_returns_buffered_bytes_first() {
        let mut frames = FrameReader::new(&b"\x03LEN\x05hello\x04next"[..], LengthPrefix::U8, 16);
        assert_eq!(frames.read_frame().unwrap(), b"LEN");
        let mut body = Vec::new();
        (&mut frames).take(6).read_to_end(&mut body).unwrap();
        assert_eq!(body, b"\x05hello");
        assert_eq!(frames.read_frame().unwrap(), b"next");
        let mut rest = Vec::new();
        assert_eq!(frames.read_to_end(&mut rest).unwrap(), 0);
        assert!(matches!(
            frames.read_frame(),
            Err(FrameError::Closed { .. })
        ));
    }

    #[test]
    fn read_after_too_long_takes_over_the_rest_of_its_payload() {
        let mut frames = FrameReader::new(Chunked::new(b"\x05ab", usize::MAX), LengthPrefix::U8, 4);
        assert!(matches!(
            frames.read_frame(),
            Err(FrameError::TooLong { .. })
        ));
        // "ab" was dropped with the prefix; what comes next is raw.
        frames.get_mut().data.extend_from_slice(b"cde\x01z");
        let mut raw = [0; 3];
        frames.read_exact(&mut raw).unwrap();
        assert_eq!(&raw, b"cde");
        assert_eq!(frames.read_frame().unwrap(), b"z");
    }

    #[test]
    fn accessors() {
        let mut frames = FrameReader::new(Cursor::new(b"\x01x\x00".to_vec()), LengthPrefix::U8, 3);
        assert_eq!(frames.max_frame(), 3);
        assert_eq!(frames.prefix(), LengthPrefix::U8);
        assert_eq!(frames.get_ref().position(), 0);
        frames.get_mut().set_position(2);
        assert_eq!(frames.read_frame().unwrap(), b"");
        assert_eq!(frames.into_inner().position(), 3);
    }

    #[test]
    fn debug_shows_state_not_bytes() {
        let mut frames = FrameReader::new(&b"\x06secret\x0bmore secret"[..], LengthPrefix::U8, 32);
        frames.read_frame().unwrap();
        let debug = format!("{frames:?}");
        assert!(debug.contains("buffered: 12"), "{debug}");
        assert!(!debug.contains("115, 101"), "{debug}");
    }

    #[test]
    fn is_send_and_sync() {
        fn is_send_and_sync<T: Send + Sync>() {}
        is_send_and_sync::<FrameReader<std::net::TcpStream>>();
        is_send_and_sync::<FrameError>();
        is_send_and_sync::<LengthPrefix>();
    }
}
