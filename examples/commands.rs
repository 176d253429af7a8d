//! A line protocol, the one from the standard library's tutorial: the
//! client sends commands, one per line, and gets one answer per line.
//!
//! ```text
//! cargo run --example commands                  # listens on 127.0.0.1:7878
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
//! | `quit` | `bye`, and the server closes the connection |
//! | anything else | `unknown: <the trimmed line>` (an empty line: `unknown: `) |
//! | longer than `--max-line` bytes (default 8192) | `error: line too long`, and close |
//! | not UTF-8 | `error: invalid utf-8`; the connection goes on |
//!
//! A client may send several commands without waiting (pipelining): they
//! are answered in order. When every worker is busy and the queue is full,
//! a new client gets `error: server busy` and is closed.

mod common;

use std::io::{self, Write};
use std::process::ExitCode;

use frontdesk::{Connection, LineError, LineReader, Rejected};

use common::{Limits, Options};

fn commands(conn: &mut Connection, limits: Limits) -> io::Result<()> {
    let mut out = &*conn;
    let mut lines = LineReader::new(&*conn, limits.max_line);
    loop {
        match lines.read_line_str() {
            Ok(line) => match line.trim() {
                "ping" => out.write_all(b"pong\n")?,
                "quit" => return out.write_all(b"bye\n"),
                other => out.write_all(format!("unknown: {other}\n").as_bytes())?,
            },
            Err(LineError::InvalidUtf8 { .. }) => out.write_all(b"error: invalid utf-8\n")?,
            Err(LineError::TooLong { .. }) => return out.write_all(b"error: line too long\n"),
            // The client closed, or the server is shutting down and every
            // complete line has been answered; a half-sent line gets none.
            Err(LineError::Closed { .. }) => return Ok(()),
            // Idle timeout or a broken connection.
            Err(error) => return Err(error.into()),
        }
    }
}

fn main() -> ExitCode {
    let options = Options::parse(
        "commands: a line protocol server (ping, quit)",
        Options::default(),
    );
    let limits = options.limits;
    let builder = options
        .builder()
        .on_reject(|conn: &mut Rejected| conn.write_all(b"error: server busy\n"));
    common::serve(&options, builder, move |conn: &mut Connection| {
        commands(conn, limits)
    })
}
