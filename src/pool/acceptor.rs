//! The accept loop: takes connections from the listeners and hands them
//! to the pool, or to the reject handler when the pool is full. One
//! thread waits on every listener at once (one `poll(2)`), and takes
//! from each ready one in turn, a bounded burst at a time.
//!
//! # Accept errors
//!
//! | error | what the loop does |
//! |---|---|
//! | `ECONNABORTED`, `ECONNRESET`, `EPROTO`, `EPERM`, `EINTR`, and the network errors `accept(2)` may pass on (`ENETDOWN`, `ENETUNREACH`, `EHOSTDOWN`, `EHOSTUNREACH`, `ENOPROTOOPT`, `EOPNOTSUPP`) | the failed connection is lost; accept again at once |
//! | `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` | out of a resource that frees itself as connections close: wait 5 ms, doubling up to 1 s while the error lasts, back to 5 ms after a success; one warning per episode |
//! | anything else (for example `EBADF`, `EINVAL`) | the listener is broken: the server shuts down and `run` / `join` return [`Error::Accept`] naming it |

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Select, TrySendError};

use crate::addr::Addr;
use crate::config::{Config, Overload};
use crate::error::{Error, Result};
use crate::net::listener::ListenSocket;
use crate::net::options;
use crate::net::socket::Socket;
use crate::pool::closer::{ClientEnd, Closer};
use crate::pool::queue::{Accepted, Job, Queue};
use crate::pool::shutdown::Shared;
use crate::reject::RejectReason;
use crate::stats::Counters;
use crate::stream::wait;
use crate::time;

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Rejections are logged at most this often, so an overload does not also
/// flood the log.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Where the listener came from, which decides what the server may change
/// on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Bound by the server: its options are ours to set.
    Bound,
    /// Adopted (`from_listener`): the socket may be shared with its owner,
    /// a clone, or another process. Only its blocking mode is changed while
    /// the server runs, and put back afterwards.
    Adopted { was_nonblocking: bool },
}

/// One listening socket of the acceptor, and what it learnt about it.
struct Listening {
    /// In non-blocking mode (see `Server::new`).
    socket: ListenSocket,
    origin: Origin,
    /// Whether accepted streams inherit the listener's `TCP_NODELAY`:
    /// learnt from the first one, or `false` at once when the listener is
    /// not ours to change or could not take it.
    inherits: Option<bool>,
}

/// The most connections taken from one listener before the others get
/// their turn: with several listeners, a busy one cannot starve the rest
/// (each ready listener gets up to this many per round), and with one,
/// a round costs no more system calls than a plain accept loop.
const ACCEPT_BURST: usize = 16;

pub(crate) struct Acceptor<'a, T> {
    /// In the order they were added: a connection's listener is its index
    /// here, as in `Shared::listeners`.
    listeners: Vec<Listening>,
    queue: Queue<T>,
    config: &'a Config,
    shared: Arc<Shared>,
    closer: Closer,
    last_id: u64,
    /// The back-off after resource errors (`EMFILE`, ...): one for the
    /// server, since the resource is the process's, whichever listener
    /// ran into it.
    backoff: Option<Duration>,
    reject_log: RateLimit,
}

impl<'a, T> Acceptor<'a, T> {
    /// Each listener must be in non-blocking mode already, so that the
    /// loop waits in `poll(2)` where the stop signal can reach it.
    pub(crate) fn new(
        listeners: Vec<(ListenSocket, Origin)>,
        queue: Queue<T>,
        config: &'a Config,
        shared: Arc<Shared>,
        closer: Closer,
    ) -> Acceptor<'a, T> {
        let listeners = listeners
            .into_iter()
            .map(|(socket, origin)| {
                let inherits = match (&socket, origin) {
                    (ListenSocket::Tcp(_), Origin::Adopted { .. }) => Some(false),
                    (ListenSocket::Tcp(tcp), Origin::Bound) => {
                        match options::prepare_listener(tcp, config.stream.nodelay) {
                            Ok(()) => None,
                            Err(error) => {
                                log::debug!(
                                    "could not set stream options on the listener: error={error}"
                                );
                                Some(false)
                            }
                        }
                    }
                    // A Unix socket has no TCP options.
                    #[cfg(unix)]
                    (ListenSocket::Unix(_), _) => Some(true),
                };
                Listening {
                    socket,
                    origin,
                    inherits,
                }
            })
            .collect();
        Acceptor {
            listeners,
            queue,
            config,
            shared,
            closer,
            last_id: 0,
            backoff: None,
            reject_log: RateLimit::new(REJECT_LOG_INTERVAL),
        }
    }

    /// Accepts until the server is stopped or `accept` fails fatally.
    /// Consumes the acceptor, so the listeners are closed and the queue's
    /// sender dropped when this returns.
    pub(crate) fn run(mut self) -> Result<()> {
        let result = self.accept_until_stopped();
        for listening in &self.listeners {
            if listening.origin
                == (Origin::Adopted {
                    was_nonblocking: false,
                })
            {
                // Whoever else holds this socket (a `try_clone`, a parent
                // process) finds it in the mode they left it in.
                if let Err(error) = listening.socket.set_nonblocking(false) {
                    log::warn!("could not put the listener back in blocking mode: error={error}");
                }
            }
        }
        result
    }

    /// Rounds over the listeners: each gets up to `ACCEPT_BURST` accepts
    /// in turn, and when every one has said `WouldBlock` the loop waits
    /// in one `poll(2)` on all of them and the stop signal.
    fn accept_until_stopped(&mut self) -> Result<()> {
        'rounds: while !self.shared.is_stopping() {
            let mut more = false;
            for index in 0..self.listeners.len() {
                for taken in 1..=ACCEPT_BURST {
                    let socket = &self.listeners[index].socket;
                    let Some(accepted) = self.shared.unless_paused(|| socket.accept()) else {
                        // Paused: new clients wait in the backlogs, the
                        // listeners stay open, and this thread waits for
                        // the resume or the stop.
                        self.shared.wait_resumed();
                        continue 'rounds;
                    };
                    match accepted {
                        Ok((stream, peer)) => {
                            if self.backoff.take().is_some() {
                                log::info!("accepting again after resource errors");
                            }
                            self.dispatch(stream, peer, index);
                            if self.shared.is_stopping() {
                                return Ok(());
                            }
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => {
                            self.accept_failed(error, index)?;
                            // Accept there again in the next round, after
                            // the others had theirs.
                            more = true;
                            break;
                        }
                    }
                    if taken == ACCEPT_BURST {
                        // A full burst: there may be more waiting. (After
                        // a shorter one, the listener said `WouldBlock`:
                        // asking again before the wait would only hear it
                        // again.)
                        more = true;
                    }
                }
            }
            if !more {
                self.wait_for_clients()?;
            }
        }
        Ok(())
    }

    /// Waits until a client is waiting in any listener's backlog or the
    /// server stops.
    fn wait_for_clients(&self) -> Result<()> {
        let stop = self.shared.stop_signal();
        let sockets: Vec<&ListenSocket> = self.listeners.iter().map(|l| &l.socket).collect();
        match wait::wait_readable_any(&sockets, stop) {
            Ok(_) => Ok(()),
            Err(error) => {
                log::error!("waiting for connections failed, stopping the server: error={error}");
                Err(Error::Accept {
                    listener: None,
                    source: error,
                })
            }
        }
    }

    fn accept_failed(&mut self, error: io::Error, index: usize) -> Result<()> {
        Counters::bump(&self.shared.counters.accept_errors);
        let listener = &self.shared.listener(index).info;
        match classify(&error) {
            AcceptError::Retry => {
                log::debug!("accept failed, retrying: listener={listener} error={error}");
                Ok(())
            }
            AcceptError::Backoff => {
                let delay = match self.backoff {
                    None => {
                        log::warn!(
                            "accept failed, backing off until resources free up: \
                             listener={listener} error={error}"
                        );
                        FIRST_BACKOFF
                    }
                    Some(delay) => (delay * 2).min(MAX_BACKOFF),
                };
                self.backoff = Some(delay);
                // Sleeps, but wakes at once when the server is stopped.
                let _ = self.shared.stopped().recv_timeout(delay);
                Ok(())
            }
            AcceptError::Fatal => {
                log::error!(
                    "accept failed, stopping the server: listener={listener} error={error}"
                );
                Err(Error::Accept {
                    listener: Some(listener.local_addr().clone()),
                    source: error,
                })
            }
        }
    }

    fn dispatch(&mut self, stream: Socket, peer: Addr, listener: usize) {
        self.last_id += 1;
        if let Some(tcp) = stream.tcp() {
            self.prepare(tcp, &peer, listener);
        }
        let counters = &self.shared.counters;
        Counters::bump(&counters.accepted);
        self.shared.count_accepted(listener);
        let mut job = Accepted {
            stream,
            peer,
            id: self.last_id,
            listener,
            ip_slot: None,
        };
        // Read for each connection: the control may change it.
        if let Some(max) = self.shared.max_connections() {
            if counters.open.load(Ordering::Relaxed) >= max {
                return self.reject(job, RejectReason::MaxConnections);
            }
        }
        if self.shared.caps_per_ip_on_accept(listener) {
            // Taken here, before the connection is queued, so before its
            // TLS handshake and its handler; given back when it closes,
            // or when it is turned away below.
            match self.shared.ip_slot(&job.peer) {
                Ok(slot) => job.ip_slot = slot,
                Err(reason) => return self.reject(job, reason),
            }
        }
        // Counted before the send so that the worker's decrement can never
        // come first.
        counters.open.fetch_add(1, Ordering::Relaxed);
        if let Err((job, reason)) = self.hand_over(job) {
            counters.open.fetch_sub(1, Ordering::Relaxed);
            self.reject(job, reason);
        }
    }

    /// Sets the options `stream` did not inherit from the listener.
    ///
    /// Linux copies `TCP_NODELAY` from the listener to accepted sockets,
    /// which saves a system call per connection. The first stream shows
    /// whether this system does; until then, and where it does not, every
    /// stream gets it set.
    fn prepare(&mut self, stream: &std::net::TcpStream, peer: &Addr, listener: usize) {
        let mut options = self.config.stream;
        let listening = &mut self.listeners[listener];
        if listening.inherits.is_none() {
            let inherits = options::has_nodelay(stream, options.nodelay);
            log::debug!("accepted streams inherit the listener's options: {inherits}");
            listening.inherits = Some(inherits);
        }
        if listening.inherits == Some(true) {
            options.nodelay = false;
        }
        // The BSDs and macOS pass the listener's O_NONBLOCK on to accepted
        // sockets; a handler that uses `Connection::stream` directly
        // expects a blocking one, as on Linux. Windows has no
        // `MSG_DONTWAIT`, so there every stream is non-blocking instead.
        #[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
        let _ = stream.set_nonblocking(false);
        #[cfg(windows)]
        let _ = stream.set_nonblocking(true);
        if let Err(error) = options::configure(stream, options) {
            // Usually the client is already gone; its handler will find out.
            log::debug!("could not set socket options: peer={peer} error={error}");
        }
    }

    /// Puts the job in the queue as the overload policy says, or gives it
    /// back with the reason it could not be queued.
    fn hand_over(&self, job: Accepted) -> std::result::Result<(), (Accepted, RejectReason)> {
        if !self.pool_has_room() {
            let wait = match self.config.overload {
                Overload::Reject => return Err((job, RejectReason::Overload)),
                Overload::Block => None,
                Overload::Wait(wait) => Some(wait),
            };
            if let Err(reason) = self.wait_for_room(wait) {
                return Err((job, reason));
            }
        }
        match self.queue.try_send(Job::Accepted(job)) {
            Ok(()) => Ok(()),
            // Not expected: the channel holds as many as the pool admits.
            Err(TrySendError::Full(job)) => Err((job.into_accepted(), RejectReason::Overload)),
            Err(TrySendError::Disconnected(job)) => {
                Err((job.into_accepted(), RejectReason::ShuttingDown))
            }
        }
    }

    /// Whether a worker or a queue slot is free for the connection being
    /// handed over, by the count of open connections (served and queued,
    /// this one included). In the `Handler` mode the channel holds
    /// `workers + queue` jobs and this count, not the channel, is the
    /// limit: a worker that has just finished a connection is free though
    /// it has not taken the next job yet. The turn mode's channel is
    /// unbounded (`max_connections` bounds its connections).
    fn pool_has_room(&self) -> bool {
        if self.queue.capacity().is_none() {
            return true;
        }
        let open = self.shared.counters.open.load(Ordering::SeqCst);
        open <= self.config.workers + self.config.queue
    }

    /// Waits until the pool has room, at most `wait` (`None`: for as long
    /// as it takes), or the server stops. Each connection that ends puts a
    /// token in `room_freed` (see `Shared::connection_ended`): the count
    /// is taken again after each, and a token left from before the count
    /// costs one more look, never a missed one.
    fn wait_for_room(&self, wait: Option<Duration>) -> std::result::Result<(), RejectReason> {
        let deadline = wait.and_then(|wait| time::after(Instant::now(), wait));
        loop {
            if self.pool_has_room() {
                return Ok(());
            }
            if self.shared.is_stopping() {
                return Err(RejectReason::ShuttingDown);
            }
            let mut select = Select::new();
            let room = select.recv(self.shared.room_freed());
            let stop = select.recv(self.shared.stopped());
            // No deadline: `Block`, or `Wait(d)` with a `d` past the
            // clock's range (no limit either).
            let operation = match deadline {
                None => select.select(),
                Some(deadline) => match select.select_deadline(deadline) {
                    Ok(operation) => operation,
                    Err(_) => return Err(RejectReason::Overload),
                },
            };
            if operation.index() == room {
                let _ = operation.recv(self.shared.room_freed());
            } else {
                debug_assert_eq!(operation.index(), stop);
                let _ = operation.recv(self.shared.stopped());
                return Err(RejectReason::ShuttingDown);
            }
        }
    }

    fn reject(&mut self, job: Accepted, reason: RejectReason) {
        let Accepted {
            stream,
            peer,
            id,
            listener,
            ip_slot,
        } = job;
        // Its place in the address's count, if it took one before the
        // queue turned it away.
        drop(ip_slot);
        let counters = &self.shared.counters;
        counters.rejected(reason);
        if let Some(suppressed) = self.reject_log.ready() {
            log::warn!(
                "rejecting connection: peer={peer} reason={reason:?} (and {suppressed} more since the last warning)"
            );
        }
        let socket = Arc::new(stream);
        self.shared.say_no(&socket, (&peer, id), listener, reason);
        self.closer.close(socket, ClientEnd::NotSeen);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptError {
    /// Only the connection being accepted failed.
    Retry,
    /// The process or system is out of a resource that comes back as
    /// connections close.
    Backoff,
    /// The listener itself is broken.
    Fatal,
}

fn classify(error: &io::Error) -> AcceptError {
    use io::ErrorKind::*;
    match error.kind() {
        Interrupted | WouldBlock | TimedOut | ConnectionAborted | ConnectionReset
        | PermissionDenied => return AcceptError::Retry,
        OutOfMemory => return AcceptError::Backoff,
        _ => {}
    }
    match error.raw_os_error() {
        Some(code) => classify_os_error(code),
        None => AcceptError::Fatal,
    }
}

#[cfg(unix)]
fn classify_os_error(code: i32) -> AcceptError {
    match code {
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => AcceptError::Backoff,
        libc::EPROTO
        | libc::EPERM
        | libc::ENETDOWN
        | libc::ENETUNREACH
        | libc::EHOSTDOWN
        | libc::EHOSTUNREACH
        | libc::ENOPROTOOPT
        | libc::EOPNOTSUPP => AcceptError::Retry,
        _ => AcceptError::Fatal,
    }
}

#[cfg(windows)]
fn classify_os_error(code: i32) -> AcceptError {
    // WSAEMFILE, WSAENOBUFS
    match code {
        10024 | 10055 => AcceptError::Backoff,
        _ => AcceptError::Fatal,
    }
}

#[cfg(not(any(unix, windows)))]
fn classify_os_error(_: i32) -> AcceptError {
    AcceptError::Fatal
}

/// Lets an event through at most once per interval and counts the ones
/// held back.
#[derive(Debug)]
struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(number held back since the last one)` if this event may pass.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_errors_are_retried() {
        for kind in [io::ErrorKind::ConnectionAborted, io::ErrorKind::Interrupted] {
            assert_eq!(classify(&io::Error::from(kind)), AcceptError::Retry);
        }
    }

    #[cfg(unix)]
    #[test]
    fn resource_errors_back_off() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(code)),
                AcceptError::Backoff
            );
        }
        assert_eq!(
            classify(&io::Error::from_raw_os_error(libc::EPROTO)),
            AcceptError::Retry
        );
    }

    #[cfg(unix)]
    #[test]
    fn broken_listener_is_fatal() {
        for code in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK] {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(code)),
                AcceptError::Fatal
            );
        }
    }

    #[test]
    fn rate_limit_counts_what_it_holds_back() {
        let mut limit = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.ready(), Some(0));
        assert_eq!(limit.ready(), None);
        assert_eq!(limit.ready(), None);
        limit.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(limit.ready(), Some(2));
    }
}
