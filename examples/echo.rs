//! An echo server: every byte a client sends comes back unchanged.
//!
//! ```text
//! cargo run --example echo                      # listens on 127.0.0.1:7878
//! nc 127.0.0.1 7878                             # type; each line comes back
//! cargo run --example echo -- 127.0.0.1:0 --workers 4 --idle-timeout-ms 10000
//! cargo run --example echo -- --help            # the options all examples share
//! ```
//!
//! Bytes are streamed: each turn reads what has arrived and queues it to
//! be sent back, so any amount of binary data goes through. The server
//! reads only while the client takes its echo: when the connection's
//! outbox is over half full, reading pauses until the client has read
//! enough, so a client that sends without reading fills the TCP buffers
//! and then waits for itself, and one that stops reading altogether is
//! closed after the write timeout (30 s). When the client half-closes
//! (`shutdown(Write)`, or Ctrl-D in `nc -N`), the server sends back the
//! rest and closes.
//!
//! Between its bytes a client costs no worker (see [`TurnHandler`]): the
//! server echoes for thousands of clients with a few workers.

mod common;

use std::io::{self, Read};
use std::process::ExitCode;

use frontdesk::{Next, Turn, TurnHandler};

use common::Options;

/// How much one read takes: the copy buffer, and what must fit in the
/// outbox before reading.
const CHUNK: usize = 64 * 1024;

struct Echo;

impl TurnHandler for Echo {
    type State = ();

    fn open(&self, _: &mut Turn<'_>) -> io::Result<()> {
        Ok(())
    }

    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        let mut buf = vec![0; CHUNK];
        // Read only what the outbox can take back: a client that does not
        // read its echo is not read from either.
        while turn.outbox_room() >= CHUNK {
            match turn.read(&mut buf) {
                // The client half-closed: what is queued goes out, then
                // the connection closes.
                Ok(0) => return Ok(Next::Close),
                Ok(n) => turn.send(&buf[..n])?,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        Ok(Next::Park)
    }
}

fn main() -> ExitCode {
    let options = Options::parse(
        "echo: a TCP server that sends every byte back",
        Options::default(),
    );
    common::serve_turns(&options, options.builder(), Echo)
}
