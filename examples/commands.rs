//! A line protocol, the one from the standard library's tutorial: the
//! client sends commands, one per line, and gets one answer per line.
//!
//! ```text
//! cargo run --example commands                  # listens on 127.0.0.1:7878
//! cargo run --example commands -- --turns       # the same, in the turn mode
//! nc 127.0.0.1 7878
//! ping
//! pong
//! hello
//! unknown: hello
//! quit
//! bye
//! ```
//!
//! Each line (ending in `\n` or `\r\n`) is trimmed of white space, then:
//!
//! | line | answer |
//! |---|---|
//! | `ping` | `pong` |
//! | `whoami` | `you are IP:PORT`: the client's address as the server sees it (behind a proxy with `--proxy-protocol`, the real client's) |
//! | `quit` | `bye`, and the server closes the connection |
//! | anything else | `unknown: <the trimmed line>` (an empty line: `unknown: `) |
//! | longer than `--max-line` bytes (default 8192) | `error: line too long`, and close |
//! | not UTF-8 | `error: invalid utf-8`; the connection goes on |
//!
//! A client may send several commands without waiting (pipelining): they
//! are answered in order. A line must be complete within
//! `--request-timeout-ms` (default 10 s) of its first byte, or the
//! connection is closed: a client that trickles a byte now and then cannot
//! hold a connection open for ever.
//!
//! # Two modes, side by side
//!
//! [`Commands`] serves this protocol twice, once for each of frontdesk's
//! modes; [`answer`] is the protocol itself, shared by both. The command
//! line picks one:
//!
//! - the [`Handler`] (the default): pick it when clients connect, ask and
//!   leave, and serving `--workers` + `--queue` of them at once is enough;
//!   each client holds a worker from connect to close, and the code reads
//!   lines with a blocking [`LineReader`]. When every worker is busy and
//!   the queue is full, a new client gets `error: server busy` at once.
//! - the [`TurnHandler`] (`--turns`): pick it for many clients that stay
//!   connected and are mostly quiet; a client holds a worker only while
//!   its lines are answered, and between them waits, with its
//!   half-received line in [`Lines`], in the operating system's readiness
//!   set, so a fresh client is answered at once however many idle or
//!   trickling ones there are.
//!
//! In both modes a client beyond `--max-connections` (default: `workers +
//! queue` in the `Handler` mode, 10,000 in the turn mode) gets
//! `error: server busy` and is closed, and so does a client whose address
//! already holds `--max-connections-per-ip` connections (no limit by
//! default; behind `--proxy-protocol`, the address the header names).

mod common;

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use frontdesk::{
    Addr, Connection, Handler, LineError, LineReader, Lines, Next, Rejected, Turn, TurnHandler,
};

use common::{Help, Limits, Modes, Options};

/// The commands server; one value serves every connection, in either mode.
struct Commands {
    limits: Limits,
}

/// What the server says to one line.
struct Answer {
    text: Cow<'static, str>,
    /// Whether the connection ends after it (`quit`).
    close: bool,
}

/// The protocol, the same in both modes: the answer to one line. `client`
/// gives the client's address, for `whoami`.
fn answer(line: &str, client: impl FnOnce() -> Addr) -> Answer {
    let (text, close) = match line.trim() {
        "ping" => ("pong\n".into(), false),
        "whoami" => (format!("you are {}\n", client()).into(), false),
        "quit" => ("bye\n".into(), true),
        other => (format!("unknown: {other}\n").into(), false),
    };
    Answer { text, close }
}

/// The `Handler` mode: a worker reads the client's lines with blocking
/// calls and writes each answer, until the client is done.
impl Handler for Commands {
    fn handle(&self, conn: &mut Connection) -> io::Result<()> {
        let conn: &Connection = conn;
        let mut out = conn;
        let mut lines = LineReader::new(
            LineTimer::new(conn, self.limits.request_timeout),
            self.limits.max_line,
        );
        loop {
            lines.get_ref().next_line(lines.buffered());
            match lines.read_line_str() {
                Ok(line) => {
                    // The answer is bounded by the write timeout, as in the
                    // turn mode, not by the line's deadline.
                    conn.set_deadline(None);
                    let answer = answer(line, || conn.peer_addr());
                    out.write_all(answer.text.as_bytes())?;
                    if answer.close {
                        return Ok(());
                    }
                }
                Err(LineError::InvalidUtf8 { .. }) => out.write_all(b"error: invalid utf-8\n")?,
                Err(LineError::TooLong { .. }) => return out.write_all(b"error: line too long\n"),
                // The client closed (a half-sent line gets no answer), or
                // the server is shutting down and every complete line it
                // had sent has been answered.
                Err(LineError::Closed { .. }) => return Ok(()),
                // The idle timeout, the line's deadline, or a broken
                // connection: the connection is closed.
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// The turn mode: each turn answers the complete lines that have arrived,
/// then the connection waits for more without a worker.
impl TurnHandler for Commands {
    /// A connection's half-received line waits here between turns.
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        Ok(Lines::new(turn, self.limits.max_line))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line_str() {
                Ok(Some(line)) => {
                    let answer = answer(line, || turn.peer_addr());
                    turn.send(&*answer.text)?;
                    if answer.close {
                        return Ok(Next::Close);
                    }
                }
                // No complete line left: wait for more without a worker,
                // at most until the line in progress is due.
                Ok(None) => {
                    turn.set_deadline(lines.line_deadline(self.limits.request_timeout));
                    return Ok(Next::Park);
                }
                Err(LineError::InvalidUtf8 { .. }) => turn.send("error: invalid utf-8\n")?,
                Err(LineError::TooLong { .. }) => {
                    turn.send("error: line too long\n")?;
                    return Ok(Next::Close);
                }
                // The client closed (a half-sent line gets no answer): the
                // answers still in the outbox go out, then the connection
                // closes.
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// The `Handler` mode's request timeout: what the [`LineReader`] reads
/// through, so that each line is due `timeout` after its first byte
/// arrives ([`Connection::set_deadline`]).
///
/// The turn mode has this built in: [`Lines::line_deadline`].
struct LineTimer<'c> {
    conn: &'c Connection,
    timeout: Option<Duration>,
}

impl<'c> LineTimer<'c> {
    fn new(conn: &'c Connection, timeout: Option<Duration>) -> LineTimer<'c> {
        LineTimer { conn, timeout }
    }

    /// Sets the deadline for the next line, given the bytes already
    /// `buffered` after the last one: a line begun in the same packet is
    /// due from now; otherwise none is due until its first byte arrives,
    /// and only the idle timeout bounds the wait.
    fn next_line(&self, buffered: &[u8]) {
        let due = if buffered.is_empty() {
            None
        } else {
            self.due()
        };
        self.conn.set_deadline(due);
    }

    fn due(&self) -> Option<Instant> {
        Instant::now().checked_add(self.timeout?)
    }
}

impl Read for LineTimer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut conn = self.conn;
        let n = conn.read(buf)?;
        // The first bytes of a line: from now on it has `timeout`.
        if n > 0 && conn.deadline().is_none() {
            conn.set_deadline(self.due());
        }
        Ok(n)
    }
}

fn main() -> ExitCode {
    let options = Options::parse(
        &Help {
            about: "commands: a line protocol server (ping, whoami, quit)",
            modes: Modes::Both,
            lines: true,
            busy: "gets `error: server busy`",
        },
        Options::default(),
    );
    let builder = options
        .builder()
        .on_reject(|conn: &mut Rejected| conn.write_all(b"error: server busy\n"));
    let commands = Commands {
        limits: options.limits,
    };
    if options.turns {
        common::serve_turns(&options, builder, commands)
    } else {
        common::serve(&options, builder, commands)
    }
}
