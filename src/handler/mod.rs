//! The `Handler` trait: the code a user writes to serve one connection,
//! and the guard every call of user code on a connection runs under.

pub(crate) mod connection;

use std::any::Any;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::AtomicU64;

use crate::handler::connection::Connection;
use crate::net::addr::Addr;
use crate::stats::Counters;

/// Serves connections; one value is shared by every worker thread.
///
/// Any closure `Fn(&mut Connection) -> io::Result<()>` that is
/// `Send + Sync + 'static` is a handler. Implement the trait on a struct when
/// the handler carries shared state (see the `chat` example).
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

/// Runs user code for one connection (`what` names it in the log): an
/// `Err` is logged at `debug` and counted in `errors` when given, a panic
/// is caught, logged at `error` and counted in `panics`. Nothing it does
/// can stop the calling thread. Returns the value when there was one.
pub(crate) fn run_guarded<T>(
    what: &str,
    peer: &Addr,
    id: u64,
    counters: &Counters,
    errors: Option<&AtomicU64>,
    call: impl FnOnce() -> io::Result<T>,
) -> Option<T> {
    match panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => {
            log::trace!("{what} returned: peer={peer} id={id}");
            Some(value)
        }
        Ok(Err(error)) => {
            if let Some(errors) = errors {
                Counters::bump(errors);
            }
            log::debug!("{what} failed: peer={peer} id={id} error={error}");
            None
        }
        Err(payload) => {
            Counters::bump(&counters.panics);
            log::error!(
                "{what} panicked: peer={peer} id={id} panic={}",
                panic_message(&*payload)
            );
            None
        }
    }
}

/// The message of a panic, when it has one (as `panic!` with a string does).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "<not a string>"
    }
}
