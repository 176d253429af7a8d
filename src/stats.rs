//! Counters kept while the server runs, and the `Stats` snapshot read from them.

use std::fmt::Write as _;
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
    /// longer `active` or `queued`, and hold no worker. A close counts
    /// here from the moment the client can see the server's end of
    /// stream (including, for an instant, one that ends at once).
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
    /// Whether accepting is paused (see
    /// [`ServerControl::pause`](crate::ServerControl::pause)).
    pub paused: bool,
    /// The cap on the connections held at once, as the server applies it
    /// now: set on the builder or the control, or the turn mode's
    /// [`TURN_MAX_CONNECTIONS`](crate::TURN_MAX_CONNECTIONS) (once the
    /// server runs in that mode); `None` for no cap.
    pub max_connections: Option<usize>,
    /// The cap on the connections one client address holds now; `None`
    /// for no cap.
    pub max_connections_per_ip: Option<usize>,
}

impl Stats {
    /// The snapshot in the Prometheus text exposition format (version
    /// 0.0.4), for a monitoring system to scrape: every counter and gauge,
    /// each with its `# HELP` and `# TYPE` lines, named `frontdesk_*`.
    ///
    /// | metric | type | from |
    /// |---|---|---|
    /// | `frontdesk_connections_accepted_total` | counter | [`accepted`](Stats::accepted) |
    /// | `frontdesk_connections_rejected_total{reason}` | counter | [`rejected`](Stats::rejected), `reason` one of `overload`, `max_connections`, `shutting_down`, `proxy`, `tls` |
    /// | `frontdesk_connections_completed_total` | counter | [`completed`](Stats::completed) |
    /// | `frontdesk_connections_forced_closed_total` | counter | [`forced_closed`](Stats::forced_closed) |
    /// | `frontdesk_connections_dropped_total` | counter | [`dropped`](Stats::dropped) |
    /// | `frontdesk_handler_errors_total` | counter | [`handler_errors`](Stats::handler_errors) |
    /// | `frontdesk_panics_total` | counter | [`panics`](Stats::panics) |
    /// | `frontdesk_timeouts_total{kind}` | counter | [`timeouts`](Stats::timeouts), `kind` one of `read`, `write`, `idle`, `deadline` |
    /// | `frontdesk_accept_errors_total` | counter | [`accept_errors`](Stats::accept_errors) |
    /// | `frontdesk_linger_cut_total` | counter | [`linger_cut`](Stats::linger_cut) |
    /// | `frontdesk_outbox_full_total` | counter | [`outbox_full`](Stats::outbox_full) |
    /// | `frontdesk_connections_active` | gauge | [`active`](Stats::active) |
    /// | `frontdesk_connections_queued` | gauge | [`queued`](Stats::queued) |
    /// | `frontdesk_connections_parked` | gauge | [`parked`](Stats::parked) |
    /// | `frontdesk_connections_lingering` | gauge | [`lingering`](Stats::lingering) |
    /// | `frontdesk_workers` | gauge | [`workers`](Stats::workers) |
    /// | `frontdesk_workers_busy` | gauge | [`busy_workers`](Stats::busy_workers) |
    /// | `frontdesk_paused` | gauge | [`paused`](Stats::paused): 1 when paused, else 0 |
    /// | `frontdesk_max_connections` | gauge | [`max_connections`](Stats::max_connections), `+Inf` for no cap |
    /// | `frontdesk_max_connections_per_ip` | gauge | [`max_connections_per_ip`](Stats::max_connections_per_ip), `+Inf` for no cap |
    ///
    /// Serve it with the content type
    /// `text/plain; version=0.0.4; charset=utf-8`. The examples'
    /// `--metrics ADDR` does, from a second frontdesk server answering
    /// `GET /metrics` (`examples/common/metrics.rs`). Prometheus adds the
    /// `instance` and `job` labels that tell servers apart.
    ///
    /// # Examples
    ///
    /// ```
    /// use frontdesk::Server;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder().workers(3).bind("127.0.0.1:0")?;
    /// let text = server.control().stats().to_prometheus();
    /// assert!(text.contains("# TYPE frontdesk_workers gauge\nfrontdesk_workers 3\n"));
    /// assert!(text.contains("frontdesk_connections_rejected_total{reason=\"overload\"} 0\n"));
    /// # Ok(()) }
    /// ```
    pub fn to_prometheus(&self) -> String {
        // Every field by name: a new one breaks the build until it has a
        // metric (or a reason not to).
        let Stats {
            accepted,
            active,
            queued,
            busy_workers,
            parked,
            workers,
            rejected,
            completed,
            handler_errors,
            panics,
            timeouts,
            accept_errors,
            forced_closed,
            dropped,
            lingering,
            linger_cut,
            outbox_full,
            paused,
            max_connections: connection_cap,
            max_connections_per_ip: address_cap,
        } = *self;
        let RejectedStats {
            overload,
            max_connections,
            max_connections_per_ip,
            shutting_down,
            proxy,
            tls,
        } = rejected;
        let TimeoutStats {
            read,
            write,
            idle,
            deadline,
        } = timeouts;
        let mut out = Exposition::default();
        out.counter(
            "connections_accepted_total",
            "Connections accepted from the listener, including those then rejected.",
            &[(None, accepted)],
        );
        out.counter(
            "connections_rejected_total",
            "Connections turned away, by reason.",
            &[
                (Some(("reason", "overload")), overload),
                (Some(("reason", "max_connections")), max_connections),
                (
                    Some(("reason", "max_connections_per_ip")),
                    max_connections_per_ip,
                ),
                (Some(("reason", "shutting_down")), shutting_down),
                (Some(("reason", "proxy")), proxy),
                (Some(("reason", "tls")), tls),
            ],
        );
        out.counter(
            "connections_completed_total",
            "Connections whose handler returned, whatever it returned.",
            &[(None, completed)],
        );
        out.counter(
            "connections_forced_closed_total",
            "Active connections ended by force at the shutdown deadline.",
            &[(None, forced_closed)],
        );
        out.counter(
            "connections_dropped_total",
            "Queued connections closed unserved at the shutdown deadline.",
            &[(None, dropped)],
        );
        out.counter(
            "handler_errors_total",
            "Handlers that returned an error.",
            &[(None, handler_errors)],
        );
        out.counter(
            "panics_total",
            "Handlers (and reject handlers) that panicked.",
            &[(None, panics)],
        );
        out.counter(
            "timeouts_total",
            "Timeouts that fired, by kind.",
            &[
                (Some(("kind", "read")), read),
                (Some(("kind", "write")), write),
                (Some(("kind", "idle")), idle),
                (Some(("kind", "deadline")), deadline),
            ],
        );
        out.counter(
            "accept_errors_total",
            "Errors returned by accept, retried or fatal.",
            &[(None, accept_errors)],
        );
        out.counter(
            "linger_cut_total",
            "Gentle closes cut short by the linger time or byte limit.",
            &[(None, linger_cut)],
        );
        out.counter(
            "outbox_full_total",
            "Sends that found a turn-mode connection's outbox full.",
            &[(None, outbox_full)],
        );
        out.gauge(
            "connections_active",
            "Connections a worker is serving now (turn mode: in a turn).",
            active,
        );
        out.gauge(
            "connections_queued",
            "Accepted connections waiting for a worker.",
            queued,
        );
        out.gauge(
            "connections_parked",
            "Turn-mode connections waiting for input without a worker.",
            parked,
        );
        out.gauge(
            "connections_lingering",
            "Connections being closed gently, waiting for the client to close.",
            lingering,
        );
        out.gauge("workers", "Worker threads.", workers);
        out.gauge(
            "workers_busy",
            "Workers running a handler now.",
            busy_workers,
        );
        out.gauge(
            "paused",
            "1 while accepting is paused, else 0.",
            usize::from(paused),
        );
        out.limit(
            "max_connections",
            "The cap on connections held at once; +Inf for none.",
            connection_cap,
        );
        out.limit(
            "max_connections_per_ip",
            "The cap on connections one client address holds; +Inf for none.",
            address_cap,
        );
        out.text
    }
}

/// Text in the Prometheus exposition format, a metric family at a time.
#[derive(Default)]
struct Exposition {
    text: String,
}

/// The connections accepted through each listener, as a counter family
/// in the Prometheus text format, labelled `listener` with each one's
/// name, or its address (see `ServerControl::to_prometheus`).
pub(crate) fn listeners_to_prometheus(accepted: &[(String, u64)]) -> String {
    let mut out = Exposition::default();
    let samples: Vec<_> = accepted
        .iter()
        .map(|(label, count)| (Some(("listener", label.as_str())), *count))
        .collect();
    out.counter(
        "listener_connections_accepted_total",
        "Connections accepted, by listener.",
        &samples,
    );
    out.text
}

/// A label value as the format wants it: `\`, `"` and line breaks
/// escaped (a listener's name is the user's).
fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped.into()
}

impl Exposition {
    /// A counter family: its `HELP` and `TYPE` lines, then a sample per
    /// label (at most one label each).
    fn counter(&mut self, name: &str, help: &str, samples: &[(Option<(&str, &str)>, u64)]) {
        self.head(name, "counter", help);
        for &(label, value) in samples {
            let _ = match label {
                Some((key, label)) => {
                    let label = escape_label(label);
                    writeln!(self.text, "frontdesk_{name}{{{key}=\"{label}\"}} {value}")
                }
                None => writeln!(self.text, "frontdesk_{name} {value}"),
            };
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: usize) {
        self.head(name, "gauge", help);
        let _ = writeln!(self.text, "frontdesk_{name} {value}");
    }

    /// A gauge for a cap: `+Inf`, the format's infinity, when there is
    /// none, so that a ratio of use to cap stays meaningful.
    fn limit(&mut self, name: &str, help: &str, value: Option<usize>) {
        self.head(name, "gauge", help);
        let _ = match value {
            Some(value) => writeln!(self.text, "frontdesk_{name} {value}"),
            None => writeln!(self.text, "frontdesk_{name} +Inf"),
        };
    }

    fn head(&mut self, name: &str, kind: &str, help: &str) {
        // The names, labels and help texts are ours: none has a `\` or a
        // line break, which the format would want escaped.
        debug_assert!(!help.contains(['\\', '\n']));
        let _ = writeln!(self.text, "# HELP frontdesk_{name} {help}");
        let _ = writeln!(self.text, "# TYPE frontdesk_{name} {kind}");
    }
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
            // Not counters: the server's `Shared` fills these in.
            paused: false,
            max_connections: None,
            max_connections_per_ip: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot with a different value in every field.
    fn distinct() -> Stats {
        Stats {
            accepted: 101,
            active: 2,
            queued: 3,
            busy_workers: 4,
            parked: 5,
            workers: 6,
            rejected: RejectedStats {
                overload: 7,
                max_connections: 8,
                max_connections_per_ip: 30,
                shutting_down: 9,
                proxy: 10,
                tls: 11,
            },
            completed: 12,
            handler_errors: 13,
            panics: 14,
            timeouts: TimeoutStats {
                read: 15,
                write: 16,
                idle: 17,
                deadline: 18,
            },
            accept_errors: 19,
            forced_closed: 20,
            dropped: 21,
            lingering: 22,
            linger_cut: 23,
            outbox_full: 24,
            paused: true,
            max_connections: Some(25),
            max_connections_per_ip: Some(26),
        }
    }

    #[test]
    fn every_field_is_a_sample_with_its_value() {
        let text = distinct().to_prometheus();
        for sample in [
            "frontdesk_connections_accepted_total 101",
            "frontdesk_connections_active 2",
            "frontdesk_connections_queued 3",
            "frontdesk_workers_busy 4",
            "frontdesk_connections_parked 5",
            "frontdesk_workers 6",
            "frontdesk_connections_rejected_total{reason=\"overload\"} 7",
            "frontdesk_connections_rejected_total{reason=\"max_connections\"} 8",
            "frontdesk_connections_rejected_total{reason=\"max_connections_per_ip\"} 30",
            "frontdesk_connections_rejected_total{reason=\"shutting_down\"} 9",
            "frontdesk_connections_rejected_total{reason=\"proxy\"} 10",
            "frontdesk_connections_rejected_total{reason=\"tls\"} 11",
            "frontdesk_connections_completed_total 12",
            "frontdesk_handler_errors_total 13",
            "frontdesk_panics_total 14",
            "frontdesk_timeouts_total{kind=\"read\"} 15",
            "frontdesk_timeouts_total{kind=\"write\"} 16",
            "frontdesk_timeouts_total{kind=\"idle\"} 17",
            "frontdesk_timeouts_total{kind=\"deadline\"} 18",
            "frontdesk_accept_errors_total 19",
            "frontdesk_connections_forced_closed_total 20",
            "frontdesk_connections_dropped_total 21",
            "frontdesk_connections_lingering 22",
            "frontdesk_linger_cut_total 23",
            "frontdesk_outbox_full_total 24",
            "frontdesk_paused 1",
            "frontdesk_max_connections 25",
            "frontdesk_max_connections_per_ip 26",
        ] {
            assert!(
                text.lines().any(|line| line == sample),
                "{sample} in\n{text}"
            );
        }
        let samples = text.lines().filter(|line| !line.starts_with('#')).count();
        assert_eq!(samples, 28, "one sample per counter:\n{text}");
    }

    #[test]
    fn each_family_has_help_and_type_before_its_samples() {
        let text = distinct().to_prometheus();
        assert!(text.ends_with('\n'));
        let mut declared: Vec<(String, String)> = Vec::new();
        let mut last_help = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty());
                last_help = Some(name.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(last_help.as_deref(), Some(name), "HELP, then TYPE");
                assert!(!declared.iter().any(|(n, _)| n == name), "{name} twice");
                declared.push((name.to_string(), kind.to_string()));
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let (family, kind) = declared.last().expect("a TYPE first");
                assert_eq!(name, family, "{line}");
                assert!(name.starts_with("frontdesk_"));
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
        assert_eq!(declared.len(), 20);
    }

    #[test]
    fn no_cap_is_infinity_and_not_paused_is_zero() {
        let text = Stats::default().to_prometheus();
        for sample in [
            "frontdesk_paused 0",
            "frontdesk_max_connections +Inf",
            "frontdesk_max_connections_per_ip +Inf",
        ] {
            assert!(
                text.lines().any(|line| line == sample),
                "{sample} in\n{text}"
            );
        }
        let stats = Stats {
            max_connections: Some(usize::MAX),
            ..Stats::default()
        };
        let text = stats.to_prometheus();
        assert!(text.contains(&format!("frontdesk_max_connections {}\n", usize::MAX)));
    }

    #[test]
    fn the_largest_values_are_written_in_full() {
        let stats = Stats {
            accepted: u64::MAX,
            active: usize::MAX,
            ..Stats::default()
        };
        let text = stats.to_prometheus();
        assert!(text.contains(&format!(
            "frontdesk_connections_accepted_total {}\n",
            u64::MAX
        )));
        assert!(text.contains(&format!("frontdesk_connections_active {}\n", usize::MAX)));
    }

    #[test]
    fn listener_names_are_escaped_as_label_values() {
        let text = listeners_to_prometheus(&[
            ("127.0.0.1:7878".to_string(), 3),
            ("a \"quoted\\ name\nhere".to_string(), 0),
        ]);
        assert!(text.contains(
            "frontdesk_listener_connections_accepted_total{listener=\"127.0.0.1:7878\"} 3\n"
        ));
        assert!(text.contains("{listener=\"a \\\"quoted\\\\ name\\nhere\"} 0\n"));
        assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE")).count(), 1);
    }
}
