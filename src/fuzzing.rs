//! Entry points for the fuzz targets (`fuzz/`, docs/reliability.md): the
//! crate's inner parsers and loops, reachable from outside with any bytes.
//!
//! Built only with the `fuzzing` feature and hidden from the docs: this is
//! no part of the API, and may change in any release. Each entry point
//! runs the library's own code, not a copy: the PROXY header is read from
//! a real socket (one end of a Unix socket pair), the TLS session runs
//! over one too, and the turn mode's line reader is the very core that
//! [`Lines`](crate::Lines) uses.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::addr::Addr;
use crate::stream::lines::LineError;
use crate::stream::proxy::{self, ProxyHeader};
use crate::stream::wait::{Signal, Stopping};
use crate::turn::lines::Unwaited;

/// The most bytes [`read_proxy_header`] and [`tls_session`] write into a
/// socket pair at once: well under a Unix socket's buffer (about 200 KiB
/// on Linux), so that writing never waits for the side under test.
pub const MAX_INPUT: usize = 80 * 1024;

/// A server that never stops: what the header reader and the TLS
/// handshake are given.
struct NeverStops {
    signal: Signal,
}

impl Stopping for NeverStops {
    fn is_stopping(&self) -> bool {
        false
    }

    fn stop_signal(&self) -> &Signal {
        &self.signal
    }

    fn force_signal(&self) -> &Signal {
        &self.signal
    }

    fn drain_quiet(&self) -> Duration {
        Duration::MAX
    }
}

fn never_stops() -> NeverStops {
    NeverStops {
        signal: Signal::new().expect("a socket pair for the stop signal"),
    }
}

/// Reads a PROXY header, as a server requiring the protocol does, from a
/// socket that received `input` and then end of stream; returns what the
/// reader said and the bytes it left in the socket (the client's, after
/// the header).
///
/// # Panics
///
/// When `input` is longer than [`MAX_INPUT`], or a socket pair cannot be
/// made.
pub fn read_proxy_header(input: &[u8]) -> (io::Result<ProxyHeader>, Vec<u8>) {
    assert!(input.len() <= MAX_INPUT, "at most MAX_INPUT bytes");
    let (mut client, server) = UnixStream::pair().expect("a socket pair");
    client
        .write_all(input)
        .expect("the socket buffer takes MAX_INPUT");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let socket = crate::net::socket::Socket::Unix(server);
    let result = proxy::read_header(&socket, &Addr::Unix(None), &never_stops());
    let mut rest = Vec::new();
    let crate::net::socket::Socket::Unix(mut server) = socket else {
        unreachable!("made as a Unix socket above")
    };
    server.read_to_end(&mut rest).expect("reading what is left");
    (result, rest)
}

/// The turn mode's line reader, as [`Lines`](crate::Lines) has it, over
/// any reader: a read that fails with [`io::ErrorKind::WouldBlock`] is
/// "nothing more now" (`Ok(None)`), and the buffer is freed whenever it
/// holds nothing, as between a parked connection's turns.
#[derive(Debug)]
pub struct TurnLines<R> {
    lines: Unwaited<R>,
}

impl<R: Read> TurnLines<R> {
    /// Lines of at most `max_line` bytes, terminator excluded.
    pub fn new(inner: R, max_line: usize) -> TurnLines<R> {
        TurnLines {
            lines: Unwaited::new(inner, max_line),
        }
    }

    /// The next complete line, `None` when `inner` would block.
    ///
    /// # Errors
    ///
    /// As [`Lines::next_line`](crate::Lines::next_line).
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        let line: Option<Range<usize>> = self.lines.next_line_range()?;
        Ok(line.map(|line| self.lines.line_at(line)))
    }

    /// The bytes received but not yet returned as a line.
    pub fn buffered(&self) -> &[u8] {
        self.lines.buffered()
    }
}

#[cfg(feature = "tls")]
pub use self::tls::{tls_session, TlsOp};

#[cfg(feature = "tls")]
mod tls {
    use std::io::{self, Read, Write};
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    use rustls::ClientConnection;

    use crate::net::socket::Socket;
    use crate::stream::tls::{Session, TlsConfig};

    use super::MAX_INPUT;

    /// One step of a [`tls_session`].
    #[derive(Debug, Clone)]
    pub enum TlsOp {
        /// Bytes written as they are into the server's socket, records or
        /// not.
        Raw(Vec<u8>),
        /// Application data the real client encrypts and sends (ignored
        /// without one, or before its handshake is done).
        Plain(Vec<u8>),
        /// The real client's `close_notify`.
        CloseNotify,
        /// The server reads into a buffer of this size (at least 1).
        ServerRead(usize),
        /// The server writes these bytes.
        ServerWrite(Vec<u8>),
    }

    /// Steps the server's loop is allowed per byte written to it, and
    /// besides: more means it spins without progress.
    const STEPS_PER_BYTE: usize = 4;
    const STEPS: usize = 10_000;

    /// Runs a server's TLS session over a socket pair: `client`, when
    /// given, first completes a real handshake with the server; then
    /// `ops` play in order; then the client's side shuts down its writes
    /// and the server reads until it sees the end or an error.
    ///
    /// Returns how the server ended: `Ok(())` for a clean end of stream
    /// (`close_notify`, or the end after a completed handshake), an error
    /// otherwise.
    ///
    /// # Panics
    ///
    /// When the server's loop makes no progress (more steps than the
    /// bytes given allow), or the ops write more than [`MAX_INPUT`]
    /// bytes; both are bugs the fuzz target is looking for, or a misuse.
    pub fn tls_session(
        config: &TlsConfig,
        client: Option<Arc<rustls::ClientConfig>>,
        ops: &[TlsOp],
    ) -> io::Result<()> {
        let written: usize = ops
            .iter()
            .map(|op| match op {
                TlsOp::Raw(bytes) | TlsOp::Plain(bytes) => bytes.len(),
                _ => 0,
            })
            .sum();
        assert!(written <= MAX_INPUT, "at most MAX_INPUT bytes");
        let budget = STEPS + STEPS_PER_BYTE * written;
        let (mut peer, server) = UnixStream::pair().expect("a socket pair");
        peer.set_nonblocking(true).expect("non-blocking");
        let socket = Socket::Unix(server);
        let session = Session::start(config)?;
        let mut steps = 0;
        let mut step = || {
            steps += 1;
            assert!(steps <= budget, "the server's TLS loop makes no progress");
        };
        let mut client = match client {
            Some(client_config) => {
                let name = "localhost".try_into().expect("a DNS name");
                let mut client =
                    ClientConnection::new(client_config, name).map_err(io::Error::other)?;
                let mut done = false;
                while client.is_handshaking() || !done {
                    step();
                    while client.wants_write() {
                        client.write_tls(&mut peer)?;
                    }
                    done = session.advance(&socket)?;
                    exchange(&mut client, &mut peer)?;
                }
                Some(client)
            }
            None => None,
        };
        let mut handshaken = client.is_some();
        for op in ops {
            step();
            match op {
                TlsOp::Raw(bytes) => peer.write_all(bytes)?,
                TlsOp::Plain(bytes) => {
                    if let Some(client) = client.as_mut() {
                        client.writer().write_all(bytes)?;
                        while client.wants_write() {
                            client.write_tls(&mut peer)?;
                        }
                    }
                }
                TlsOp::CloseNotify => {
                    if let Some(client) = client.as_mut() {
                        client.send_close_notify();
                        while client.wants_write() {
                            client.write_tls(&mut peer)?;
                        }
                    }
                }
                TlsOp::ServerRead(size) => {
                    if handshaken {
                        let mut buf = vec![0; (*size).max(1)];
                        match session.recv_now(&socket, &mut buf) {
                            Ok(n) => assert!(n <= buf.len()),
                            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                            Err(error) => return Err(error),
                        }
                    }
                }
                TlsOp::ServerWrite(bytes) => {
                    if handshaken {
                        match session.send_now(&socket, bytes) {
                            Ok(n) => assert!(n <= bytes.len()),
                            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                            Err(error) => return Err(error),
                        }
                    }
                }
            }
            if !handshaken {
                handshaken = session.advance(&socket)?;
            }
            match client.as_mut() {
                Some(client) => exchange(client, &mut peer)?,
                None => drain(&mut peer)?,
            }
        }
        peer.shutdown(Shutdown::Write)?;
        // The end: the server must see it, as an error or a clean close,
        // within the steps the bytes allow.
        while !handshaken {
            step();
            handshaken = session.advance(&socket)?;
            drain(&mut peer)?;
        }
        let mut buf = [0u8; 4096];
        loop {
            step();
            match session.recv_now(&socket, &mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    panic!("WouldBlock after the end of stream: {error}")
                }
                Err(error) => return Err(error),
            }
            drain(&mut peer)?;
        }
    }

    /// Feeds what the server sent to the real client.
    fn exchange(client: &mut ClientConnection, peer: &mut UnixStream) -> io::Result<()> {
        loop {
            match client.read_tls(peer) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    client
                        .process_new_packets()
                        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                    // Plaintext the server sent: read and dropped.
                    let mut plain = [0u8; 4096];
                    while let Ok(n) = client.reader().read(&mut plain) {
                        if n == 0 {
                            break;
                        }
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    }

    /// Drops what the server sent, so that its writes never wait.
    fn drain(peer: &mut UnixStream) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            match peer.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    }
}
