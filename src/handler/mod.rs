//! The `Handler` mode: a `Handler` serves a connection from accept to
//! close on one worker, with blocking reads and writes on a `Connection`.
//!
//! - Lives here: `Handler` (this file), `Connection`, and the `Service`
//!   that runs handlers on the pool's workers.
//! - May use: `pool/`, `stream/`, `net/`, `config.rs`, `stats.rs` and the
//!   leaves.
//! - Must never use it: everything but `server.rs` and `lib.rs`; the turn
//!   mode (`turn/`) in particular.

pub(crate) mod connection;
pub(crate) mod service;

use std::io;

use crate::handler::connection::Connection;

/// Serves connections; one value is shared by every worker thread.
///
/// Any closure `Fn(&mut Connection) -> io::Result<()>` that is
/// `Send + Sync + 'static` is a handler. Implement the trait on a struct when
/// the handler carries shared state (see the `commands` example).
///
/// The connection is closed when `handle` returns. An `Err` is logged at
/// `debug` level with the peer's address and counted in
/// [`Stats::handler_errors`](crate::Stats::handler_errors); a panic is
/// caught, logged at `error` level and counted in
/// [`Stats::panics`](crate::Stats::panics). Neither stops the server or the
/// worker.
///
/// # Examples
///
/// ```
/// use std::io::{self, Write};
/// use frontdesk::{Connection, Handler};
///
/// struct Greeter {
///     greeting: String,
/// }
///
/// impl Handler for Greeter {
///     fn handle(&self, conn: &mut Connection) -> io::Result<()> {
///         // One write, one packet: `writeln!` on an unbuffered connection
///         // would send each piece of the format separately.
///         let line = format!("{}, {}\n", self.greeting, conn.peer_addr());
///         conn.write_all(line.as_bytes())
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = frontdesk::Server::bind("127.0.0.1:0")?;
/// let handle = server.spawn(Greeter { greeting: "hello".to_string() })?;
/// # handle.shutdown()?;
/// # Ok(()) }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Serves one connection; the connection is closed when this returns.
    ///
    /// # Errors
    ///
    /// Whatever the handler returns is only logged and counted: returning
    /// `Err` is the normal way to give up on a connection, for example with
    /// `?` on a failed read.
    fn handle(&self, conn: &mut Connection) -> io::Result<()>;
}

impl<F> Handler for F
where
    F: Fn(&mut Connection) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, conn: &mut Connection) -> io::Result<()> {
        self(conn)
    }
}
