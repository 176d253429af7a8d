//! What the reject hook sees of a connection turned away: its address, why,
//! and a socket it can write a short reply to without ever waiting.

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use crate::addr::Addr;
use crate::net::socket::Socket;
use crate::stream::wait;

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Every worker was busy and the queue was full (see
    /// [`Overload`](crate::Overload)).
    Overload,
    /// The [`max_connections`](crate::ServerBuilder::max_connections) cap
    /// was reached.
    MaxConnections,
    /// The client's address already holds as many connections as
    /// [`max_connections_per_ip`](crate::ServerBuilder::max_connections_per_ip)
    /// allows.
    MaxConnectionsPerIp,
    /// The connection was accepted while the server was shutting down.
    ShuttingDown,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::Overload => "every worker is busy",
            RejectReason::MaxConnections => "too many connections",
            RejectReason::MaxConnectionsPerIp => "too many connections from this address",
            RejectReason::ShuttingDown => "the server is shutting down",
        })
    }
}

/// A connection the server turns away, as the
/// [`on_reject`](crate::ServerBuilder::on_reject) handler sees it.
///
/// It is [`Write`], and a write never waits: it sends what fits in the
/// socket's buffer at once (a fresh connection has room for a short
/// reply) and fails with [`io::ErrorKind::WouldBlock`] otherwise. There is
/// no `Read`: the handler runs on the acceptor thread (or on a worker, see
/// [`on_reject`](crate::ServerBuilder::on_reject)), and waiting for a
/// client there would stall every new connection. After the handler
/// returns, the connection is closed gently, so the reply reaches the
/// client even when it had sent something.
pub struct Rejected {
    stream: Arc<Socket>,
    peer_addr: Addr,
    id: u64,
    reason: RejectReason,
}

impl Rejected {
    pub(crate) fn new(
        stream: Arc<Socket>,
        peer_addr: Addr,
        id: u64,
        reason: RejectReason,
    ) -> Rejected {
        Rejected {
            stream,
            peer_addr,
            id,
            reason,
        }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> Addr {
        self.peer_addr.clone()
    }

    /// The connection's id (see [`Connection::id`](crate::Connection::id)).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Why the connection is turned away.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }
}

impl Write for Rejected {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        wait::send_now(&self.stream, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("peer_addr", &self.peer_addr)
            .field("id", &self.id)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Runs for every connection turned away, before it is closed: on the
/// acceptor thread, or for a connection turned away once its PROXY header
/// is read, on a worker; see
/// [`ServerBuilder::on_reject`](crate::ServerBuilder::on_reject).
///
/// Any closure `Fn(&mut Rejected) -> io::Result<()>` that is
/// `Send + Sync + 'static` is one. It must return quickly: the acceptor
/// accepts nobody while it runs (nor does a worker serve anyone). Its socket never makes it wait, but its
/// own code can, and nothing can interrupt that.
pub trait RejectHandler: Send + Sync + 'static {
    /// Says goodbye to one rejected connection.
    ///
    /// # Errors
    ///
    /// An error is only logged, at `debug`.
    fn reject(&self, conn: &mut Rejected) -> io::Result<()>;
}

impl<F> RejectHandler for F
where
    F: Fn(&mut Rejected) -> io::Result<()> + Send + Sync + 'static,
{
    fn reject(&self, conn: &mut Rejected) -> io::Result<()> {
        self(conn)
    }
}
