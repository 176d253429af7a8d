//! Counters kept while the server runs, and the `Stats` snapshot read from them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::Timeout;
use crate::reject::RejectReason;

/// A snapshot of a server's counters, from [`ServerHandle::stats`](crate::ServerHandle::stats).
///
/// Counters are read one by one without a lock, so a snapshot taken while
/// connections come and go may be off by the connections in flight. Once the
/// server has stopped, every accepted connection is accounted for:
///
/// `accepted == completed + rejected.total() + dropped`
///
/// (plus one per stuck worker, see
/// [`ShutdownReport::stuck_workers`](crate::ShutdownReport::stuck_workers)),
/// and while it runs, `accepted` also counts the `active` and `queued` ones
/// (give or take the one the acceptor is handing over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted from the listener, including those then rejected.
    pub accepted: u64,
    /// Connections a worker is serving now (in the turn mode: in a turn).
    pub active: usize,
    /// Accepted connections waiting in the queue for a worker (including
    /// one the acceptor is handing over while the queue is full).
    pub queued: usize,
    /// Workers running a handler now (equal to `active`).
    pub busy_workers: usize,
    /// Connections of the turn mode waiting for input in the readiness
    /// set, without a worker (not counted in `active` or `queued`).
    pub parked: usize,
    /// The number of worker threads.
    pub workers: usize,
    /// Connections turned away, by reason.
    pub rejected: RejectedStats,
    /// Connections whose handler returned, whatever it returned.
    pub completed: u64,
    /// Handlers that returned `Err` (a subset of `completed`).
    pub handler_errors: u64,
    /// Handlers that panicked (a subset of `completed`), and runs of the
    /// [`on_reject`](crate::ServerBuilder::on_reject) handler that panicked
    /// (a subset of `rejected`).
    pub panics: u64,
    /// Timeouts that fired, by kind.
    pub timeouts: TimeoutStats,
    /// Errors returned by `accept`, whether retried or fatal.
    pub accept_errors: u64,
    /// Active connections whose reads and writes were ended by force
    /// because the drain deadline passed during shutdown (a subset of
    /// `completed`, once their handlers return).
    pub forced_closed: u64,
    /// Queued connections closed unserved because the drain deadline passed
    /// during shutdown.
    pub dropped: u64,
    /// Connections being closed gently now: their end of stream was sent,
    /// and the server waits for the client's (see
    /// [`linger_time`](crate::ServerBuilder::linger_time)). They are no
    /// longer `active` or `queued`, and hold no worker.
    pub lingering: usize,
    /// Gentle closes cut short: the client sent more than
    /// [`linger_bytes`](crate::ServerBuilder::linger_bytes) or did not
    /// close within [`linger_time`](crate::ServerBuilder::linger_time), so
    /// the socket was closed with input unread and the client may have
    /// seen a reset.
    pub linger_cut: u64,
    /// Sends to a full outbox (turn mode; see
    /// [`OutboxFull`](crate::OutboxFull)).
    pub outbox_full: u64,
}

/// Rejected connections by reason; part of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RejectedStats {
    /// Every worker was busy and the queue was full (see [`Overload`](crate::Overload)).
    pub overload: u64,
    /// The `max_connections` cap was reached.
    pub max_connections: u64,
    /// The client's address already held as many connections as
    /// [`max_connections_per_ip`](crate::ServerBuilder::max_connections_per_ip)
    /// allows.
    pub max_connections_per_ip: u64,
    /// The connection was accepted while the server was shutting down and
    /// could not be queued.
    pub shutting_down: u64,
    /// The connection had no valid PROXY protocol header, or came from an
    /// address not among the trusted proxies (see
    /// [`proxy_protocol`](crate::ServerBuilder::proxy_protocol)).
    pub proxy: u64,
    /// The TLS handshake failed or did not finish within
    /// `ServerBuilder::tls_handshake_timeout` (a client that does not
    /// speak TLS, a certificate it refused, a client that said nothing);
    /// only with the `tls` feature.
    pub tls: u64,
}

impl RejectedStats {
    /// All rejected connections, whatever the reason.
    pub fn total(&self) -> u64 {
        self.overload
            + self.max_connections
            + self.max_connections_per_ip
            + self.shutting_down
            + self.proxy
            + self.tls
    }
}

/// Timeouts by kind; part of [`Stats`]. See [`Timeout`](crate::Timeout).
///
/// `read` and `write` count operations (a connection can time out many
/// times and go on); `idle` and `deadline` count connections, since either
/// ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TimeoutStats {
    /// Reads that hit the read timeout.
    pub read: u64,
    /// Writes that hit the write timeout.
    pub write: u64,
    /// Connections closed because the client sent nothing for the idle timeout.
    pub idle: u64,
    /// Connections closed because their deadline passed.
    pub deadline: u64,
}

/// The live counters behind [`Stats`].
///
/// Every counter is a relaxed atomic: each is updated by one or a few
/// threads at a time and nothing else is ordered by them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    /// Connections handed to the pool and not yet finished: queued + active.
    pub(crate) open: AtomicUsize,
    pub(crate) busy: AtomicUsize,
    pub(crate) rejected_overload: AtomicU64,
    pub(crate) rejected_max_connections: AtomicU64,
    pub(crate) rejected_max_connections_per_ip: AtomicU64,
    pub(crate) rejected_shutting_down: AtomicU64,
    pub(crate) rejected_proxy: AtomicU64,
    pub(crate) rejected_tls: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) handler_errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) read_timeouts: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
    pub(crate) idle_timeouts: AtomicU64,
    pub(crate) deadline_timeouts: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) forced_closed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) lingering: AtomicUsize,
    pub(crate) linger_cut: AtomicU64,
    pub(crate) parked: AtomicUsize,
    /// Turn-mode connections ending, whose outbox is being flushed.
    pub(crate) flushing: AtomicUsize,
    pub(crate) outbox_full: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of one kind of timeout.
    pub(crate) fn timed_out(&self, timeout: Timeout) -> &AtomicU64 {
        match timeout {
            Timeout::Read => &self.read_timeouts,
            Timeout::Write => &self.write_timeouts,
            Timeout::Idle => &self.idle_timeouts,
            Timeout::Deadline => &self.deadline_timeouts,
        }
    }

    pub(crate) fn rejected(&self, reason: RejectReason) {
        Counters::bump(match reason {
            RejectReason::Overload => &self.rejected_overload,
            RejectReason::MaxConnections => &self.rejected_max_connections,
            RejectReason::MaxConnectionsPerIp => &self.rejected_max_connections_per_ip,
            RejectReason::ShuttingDown => &self.rejected_shutting_down,
        });
    }

    pub(crate) fn snapshot(&self, workers: usize) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let open = self.open.load(Ordering::Relaxed);
        let busy = self.busy.load(Ordering::Relaxed);
        let parked = self.parked.load(Ordering::Relaxed);
        let flushing = self.flushing.load(Ordering::Relaxed);
        Stats {
            accepted: get(&self.accepted),
            active: busy,
            queued: open.saturating_sub(busy + parked + flushing),
            busy_workers: busy,
            parked,
            workers,
            rejected: RejectedStats {
                overload: get(&self.rejected_overload),
                max_connections: get(&self.rejected_max_connections),
                max_connections_per_ip: get(&self.rejected_max_connections_per_ip),
                shutting_down: get(&self.rejected_shutting_down),
                proxy: get(&self.rejected_proxy),
                tls: get(&self.rejected_tls),
            },
            completed: get(&self.completed),
            handler_errors: get(&self.handler_errors),
            panics: get(&self.panics),
            timeouts: TimeoutStats {
                read: get(&self.read_timeouts),
                write: get(&self.write_timeouts),
                idle: get(&self.idle_timeouts),
                deadline: get(&self.deadline_timeouts),
            },
            accept_errors: get(&self.accept_errors),
            forced_closed: get(&self.forced_closed),
            dropped: get(&self.dropped),
            lingering: self.lingering.load(Ordering::Relaxed),
            linger_cut: get(&self.linger_cut),
            outbox_full: get(&self.outbox_full),
        }
    }
}
