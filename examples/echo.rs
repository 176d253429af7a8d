//! An echo server: every byte a client sends comes back unchanged.
//!
//! ```text
//! cargo run --example echo                      # listens on 127.0.0.1:7878
//! nc 127.0.0.1 7878                             # type; each line comes back
//! cargo run --example echo -- 127.0.0.1:0 --workers 4 --idle-timeout-ms 10000
//! cargo run --example echo -- --help            # the options all examples share
//! ```
//!
//! Bytes are streamed: the server reads what has arrived, writes it back,
//! and reads again, so any amount of binary data goes through with at most
//! 8 KiB held per connection. A client must therefore read while it writes:
//! one that sends megabytes without reading fills the TCP buffers both ways
//! and then waits for itself (the server's write timeout ends that after
//! 30 s). When the client half-closes (`shutdown(Write)`, or Ctrl-D in
//! `nc -N`), the server sends back the rest and closes.
//!
//! When every worker is busy and the queue is full, a new connection is
//! closed at once, without a word.

mod common;

use std::io;
use std::process::ExitCode;

use frontdesk::Connection;

use common::Options;

fn echo(conn: &mut Connection) -> io::Result<()> {
    // Ends when the client half-closes, or when the server shuts down and
    // what the client had sent until then has been written back.
    io::copy(&mut &*conn, &mut &*conn)?;
    Ok(())
}

fn main() -> ExitCode {
    let options = Options::parse(
        "echo: a TCP server that sends every byte back",
        Options::default(),
    );
    common::serve(&options, options.builder(), echo)
}
