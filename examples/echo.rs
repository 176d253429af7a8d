//! An echo server: every byte a client sends comes back unchanged.
//!
//! ```text
//! cargo run --example echo                      # listens on 127.0.0.1:7878
//! nc 127.0.0.1 7878                             # type; each line comes back
//! cargo run --example echo -- --turns           # the same, in the turn mode
//! cargo run --example echo -- 127.0.0.1:0 --workers 4 --queue 8 --idle-timeout-ms 10000
//! cargo run --example echo -- --help            # the options all examples share
//! ```
//!
//! The same echo is written twice below, side by side: [`Echo`] is a
//! [`Handler`] and a [`TurnHandler`], one for each of frontdesk's two
//! modes, and the command line picks one:
//!
//! - the `Handler` (the default): pick it when clients connect, echo and
//!   leave, and serving `--workers` + `--queue` of them at once is enough;
//!   each client holds a worker from connect to close, and the code is a
//!   plain blocking loop of `read` and `write_all`.
//! - the `TurnHandler` (`--turns`): pick it for many clients that stay
//!   connected and are mostly quiet; a client holds a worker only while
//!   the server echoes what it just sent, so a few workers echo for
//!   thousands of clients.
//!
//! Bytes are streamed in both: what has arrived is sent back, so any
//! amount of binary data goes through with at most [`CHUNK`] bytes held
//! per connection by the `Handler` and a bounded outbox by the
//! `TurnHandler`. The server reads only while the client takes its echo,
//! so a client that sends without reading fills the TCP buffers and then
//! waits for itself, and one that stops reading altogether is closed after
//! the write timeout (30 s). When the client half-closes
//! (`shutdown(Write)`, or Ctrl-D in `nc -N`), the server sends back the
//! rest and closes.
//!
//! When the server is full, a new client is closed at once, without a
//! word: in the `Handler` mode when every worker is busy and the queue is
//! full, in both modes at `--max-connections`, and when its address
//! already holds `--max-connections-per-ip` connections.
//!
//! Echo has no lines: it accepts the line options of the other examples
//! (`--request-timeout-ms`, `--max-line`), so that one command line starts
//! any of them, and ignores them.

mod common;

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use frontdesk::{Connection, Handler, Next, Turn, TurnHandler};

use common::{Help, Modes, Options};

/// How much one read takes: the copy buffer, and, in the turn mode, the
/// room the outbox must have before reading. As large as the largest
/// message of the benchmark's echo (docs/performance.md), so that one read
/// and one write move it.
const CHUNK: usize = 16 * 1024;

/// The echo server; one value serves every connection, in either mode.
struct Echo;

/// The `Handler` mode: a worker reads and writes back with blocking calls
/// until the client is done.
impl Handler for Echo {
    fn handle(&self, conn: &mut Connection) -> io::Result<()> {
        let mut buf = [0; CHUNK];
        loop {
            // Waits for the client (up to the idle timeout). Returns 0 when
            // the client half-closed, or when the server is shutting down
            // and what the client sent until then has been read.
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            // Waits for the client to take it (up to the write timeout):
            // a client that does not read is not read from either.
            conn.write_all(&buf[..n])?;
        }
    }
}

/// The turn mode: each turn echoes what has arrived, then the connection
/// waits for more without a worker.
impl TurnHandler for Echo {
    type State = ();

    fn open(&self, _: &mut Turn<'_>) -> io::Result<()> {
        Ok(())
    }

    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        BUF.with_borrow_mut(|buf| {
            // Read only what the outbox can take back: a client that does
            // not read its echo is not read from either (the server gives
            // the connection its next turn once the client has read
            // enough).
            while turn.outbox_room() >= CHUNK {
                match turn.read(buf) {
                    // The client half-closed: what is queued goes out, then
                    // the connection closes.
                    Ok(0) => return Ok(Next::Close),
                    Ok(n) => turn.send(&buf[..n])?,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => return Err(error),
                }
            }
            Ok(Next::Park)
        })
    }
}

thread_local! {
    /// The turn mode's read buffer: one per worker thread, for the turns
    /// it runs. A parked connection holds none, and a turn does not clear
    /// 16 KiB of stack before its first read (2 % of the CPU with 64-byte
    /// messages).
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; CHUNK].into_boxed_slice());
}

fn main() -> ExitCode {
    let options = Options::parse(
        &Help {
            about: "echo: a TCP server that sends every byte back",
            modes: Modes::Both,
            lines: false,
            busy: "is closed at once",
        },
        Options::default(),
    );
    if options.turns {
        common::serve_turns(&options, options.builder(), Echo)
    } else {
        common::serve(&options, options.builder(), Echo)
    }
}
