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
//! Between lines a client costs no worker: the handler is a
//! [`TurnHandler`], so idle and trickling clients wait in the operating
//! system's readiness set, and a fresh client is answered at once however
//! many of them there are. When the server holds as many clients as it
//! may (`max_connections`, 10,000 here), a new client gets
//! `error: server busy` and is closed.

mod common;

use std::io::{self, Write};
use std::process::ExitCode;

use frontdesk::{Lines, Next, Rejected, Turn, TurnHandler};

use common::{Limits, Options};

struct Commands {
    limits: Limits,
}

impl TurnHandler for Commands {
    /// A connection's half-received line waits here between turns.
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        Ok(Lines::new(turn, self.limits.max_line))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        common::answer_lines(lines, turn, self.limits, |line, turn| {
            match line.trim() {
                "ping" => turn.send("pong\n")?,
                "whoami" => turn.send(format!("you are {}\n", turn.peer_addr()))?,
                "quit" => {
                    turn.send("bye\n")?;
                    return Ok(Some(Next::Close));
                }
                other => turn.send(format!("unknown: {other}\n"))?,
            }
            Ok(None)
        })
    }
}

fn main() -> ExitCode {
    let options = Options::parse(
        "commands: a line protocol server (ping, quit)",
        Options::default(),
    );
    let builder = options
        .builder()
        .on_reject(|conn: &mut Rejected| conn.write_all(b"error: server busy\n"));
    let commands = Commands {
        limits: options.limits,
    };
    common::serve_turns(&options, builder, commands)
}
