//! Waiting without blocking in a read: I/O that never waits, a wait for one
//! socket or a [`Signal`] (whichever comes first), and the `Signal` itself.
//!
//! Every read and write the library does on a client's socket goes through
//! here. A read is `recv(MSG_DONTWAIT)` (in the `Handler` mode, first a
//! `recv` bounded by a short receive timeout: see below); only when nothing
//! is there does the thread wait, in `poll(2)` on the socket *and* a signal
//! descriptor, so that a shutdown reaches a handler waiting for a silent
//! client at once (a read in that short wait, once it ends),
//! without touching the socket (no `shutdown(SHUT_RD)`, which loses data on
//! some systems and cannot be undone). The `Handler` mode first waits a
//! little in the read itself ([`recv_waiting`], [`BRIEF_WAIT`]): a busy
//! client's next request then costs no `poll(2)`. The socket itself stays
//! in blocking mode: `MSG_DONTWAIT` applies to one call, so a handler that
//! reads the stream directly (or a clone of it) sees the socket it expects
//! (except on Windows, which has no `MSG_DONTWAIT`: see `recv_now`).

use std::io;
#[cfg(not(unix))]
use std::net::TcpStream;
use std::time::Duration;

#[cfg(unix)]
use std::os::unix::net::UnixStream;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fd::AsFd;

#[cfg(windows)]
use crate::net::socket::Socket;

/// What a wait for a client watches besides its socket: the server's
/// stop, and once the server is stopping, the force signal and the drain's
/// quiet time. The pool's shutdown state is one; this layer knows no more
/// of a shutdown than that.
pub(crate) trait Stopping {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    fn is_stopping(&self) -> bool;
    /// Raised when the server starts to stop.
    fn stop_signal(&self) -> &Signal;
    /// Raised at the drain deadline.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    fn force_signal(&self) -> &Signal;
    /// During a drain, how long a client may be quiet before it is taken
    /// to have nothing more to say.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    fn drain_quiet(&self) -> Duration;
}

/// What a socket is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The socket is ready (or has an error or hang-up to report).
    Ready,
    /// The signal was raised.
    Signal,
    /// The timeout passed first.
    TimedOut,
}

/// Reads what has arrived, without waiting: `WouldBlock` when nothing has.
#[cfg(unix)]
pub(crate) fn recv_now(stream: &impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    use rustix::net::RecvFlags;
    retrying(|| rustix::net::recv(stream, &mut *buf, RecvFlags::DONTWAIT).map(|(n, _)| n))
}

/// How long a read may wait in the kernel (a plain blocking `recv`, bounded
/// by the socket's receive timeout) before it goes on waiting in `poll(2)`,
/// where the server's stop can wake it. A client that answers within this
/// time, as a busy one does, costs a read and a write per exchange, as in
/// a thread-per-connection server; the price is that a shutdown reaches a
/// read in this phase up to this late. 50 ms covers a client that talks
/// 20 times a second (a game's tick), and is a quarter of the drain's
/// default quiet time.
#[cfg(unix)]
pub(crate) const BRIEF_WAIT: Duration = Duration::from_millis(50);

/// Reads, waiting in the kernel for input for as long as the socket's
/// receive timeout allows (see [`set_recv_timeout`]): `WouldBlock` when
/// that passed with nothing. Nothing but input, the client's end, an
/// error or a signal handler ends it early: not a shutdown.
///
/// A signal handler that ran meanwhile ends the wait with `Interrupted`
/// (a socket with a receive timeout is never restarted, whatever
/// `SA_RESTART` says), and it is not tried again: each try would wait the
/// whole timeout anew, so signals a little more often than that (a
/// profiler's timer) would keep the thread here for good, where the
/// server's stop cannot reach it.
#[cfg(unix)]
pub(crate) fn recv_waiting(stream: &impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    use rustix::net::RecvFlags;
    rustix::net::recv(stream, &mut *buf, RecvFlags::empty())
        .map(|(n, _)| n)
        .map_err(io::Error::from)
}

/// Sets the socket's receive timeout (`SO_RCVTIMEO`; `None`: none), which
/// bounds [`recv_waiting`] and any blocking read made on it directly.
#[cfg(unix)]
pub(crate) fn set_recv_timeout(stream: &impl AsFd, time: Option<Duration>) -> io::Result<()> {
    use rustix::net::sockopt::{self, Timeout};
    sockopt::set_socket_timeout(stream, Timeout::Recv, time).map_err(io::Error::from)
}

/// Looks at what has arrived without taking it, and without waiting:
/// `WouldBlock` when nothing has.
#[cfg(unix)]
pub(crate) fn peek_now(stream: &impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    use rustix::net::RecvFlags;
    let flags = RecvFlags::DONTWAIT | RecvFlags::PEEK;
    retrying(|| rustix::net::recv(stream, &mut *buf, flags).map(|(n, _)| n))
}

/// Writes what fits in the send buffer, without waiting: `WouldBlock` when
/// nothing does.
#[cfg(unix)]
pub(crate) fn send_now(stream: &impl AsFd, buf: &[u8]) -> io::Result<usize> {
    retrying(|| rustix::net::send(stream, buf, send_flags()))
}

/// Makes `call` again when a signal handler interrupted it.
fn retrying<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(rustix::io::Errno::INTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}

/// Never raise `SIGPIPE` where the system can say so per call. Elsewhere
/// (macOS) Rust's runtime ignores `SIGPIPE` in every program it starts.
#[cfg(unix)]
fn send_flags() -> rustix::net::SendFlags {
    use rustix::net::SendFlags;
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    return SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    #[allow(unreachable_code)]
    SendFlags::DONTWAIT
}

/// Windows has no `MSG_DONTWAIT`: there the acceptor puts every stream in
/// non-blocking mode, and plain reads and writes do not wait.
#[cfg(windows)]
pub(crate) fn recv_now(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let Socket::Tcp(stream) = socket;
    (&*stream).read(buf)
}

/// See `recv_now`.
#[cfg(windows)]
pub(crate) fn peek_now(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    let Socket::Tcp(stream) = socket;
    stream.peek(buf)
}

/// See `recv_now`.
#[cfg(windows)]
pub(crate) fn send_now(socket: &Socket, buf: &[u8]) -> io::Result<usize> {
    use std::io::Write;
    let Socket::Tcp(stream) = socket;
    (&*stream).write(buf)
}

/// Waits until `socket` is ready for `interest`, `signal` is raised, or
/// `timeout` passes (`None`: no limit). One `poll(2)`.
pub(crate) fn wait(
    socket: &impl AsFd,
    interest: Interest,
    signal: Option<&Signal>,
    timeout: Option<Duration>,
) -> io::Result<Woken> {
    let events = match interest {
        Interest::Read => PollFlags::IN,
        Interest::Write => PollFlags::OUT,
    };
    let socket = PollFd::new(socket, events);
    let Some(signal) = signal else {
        return match poll(&mut [socket], timeout)? {
            0 => Ok(Woken::TimedOut),
            _ => Ok(Woken::Ready),
        };
    };
    let mut fds = [socket, PollFd::new(&signal.receiver, PollFlags::IN)];
    if poll(&mut fds, timeout)? == 0 {
        Ok(Woken::TimedOut)
    } else if !fds[1].revents().is_empty() {
        Ok(Woken::Signal)
    } else {
        Ok(Woken::Ready)
    }
}

/// Waits until any of `sockets` is readable (for a listener: a client
/// waits in its backlog) or `signal` is raised. One `poll(2)`, no timeout.
pub(crate) fn wait_readable_any(sockets: &[impl AsFd], signal: &Signal) -> io::Result<Woken> {
    let mut fds: Vec<PollFd<'_>> = sockets
        .iter()
        .map(|socket| PollFd::new(socket, PollFlags::IN))
        .collect();
    fds.push(PollFd::new(&signal.receiver, PollFlags::IN));
    poll(&mut fds, None)?;
    match fds.last().is_some_and(|fd| !fd.revents().is_empty()) {
        true => Ok(Woken::Signal),
        false => Ok(Woken::Ready),
    }
}

fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    // A timeout too long for a `timespec` (centuries) is no timeout.
    let timeout = timeout.and_then(|t| Timespec::try_from(t).ok());
    // After a signal handler ran on this thread, the whole timeout is
    // waited again: that can only make the wait a little longer, where an
    // early "timed out" would report a timeout that did not happen.
    retrying(|| rustix::event::poll(fds, timeout.as_ref()))
}

/// A one-way, level-triggered flag that `poll(2)` can wait for: once
/// raised, its descriptor is readable for good, so every thread waiting on
/// it wakes, and every later wait returns at once.
#[derive(Debug)]
pub(crate) struct Signal {
    /// Readable once `sender` has written or shut down.
    receiver: Endpoint,
    sender: Endpoint,
}

#[cfg(unix)]
pub(crate) type Endpoint = UnixStream;

#[cfg(not(unix))]
pub(crate) type Endpoint = TcpStream;

impl Signal {
    pub(crate) fn new() -> io::Result<Signal> {
        let (receiver, sender) = pair()?;
        receiver.set_nonblocking(true)?;
        sender.set_nonblocking(true)?;
        Ok(Signal { receiver, sender })
    }

    /// Raises the signal for good: its descriptor reads end of stream.
    pub(crate) fn raise(&self) {
        let _ = self.sender.shutdown(std::net::Shutdown::Write);
    }

    /// The descriptor that becomes readable, for a readiness set.
    pub(crate) fn source(&self) -> &Endpoint {
        &self.receiver
    }
}

#[cfg(unix)]
fn pair() -> io::Result<(UnixStream, UnixStream)> {
    UnixStream::pair()
}

/// Windows has no socket pair: a loopback TCP connection does the same job.
#[cfg(not(unix))]
fn pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let sender = TcpStream::connect(listener.local_addr()?)?;
    let (receiver, _) = listener.accept()?;
    Ok((receiver, sender))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn a_raised_signal_wakes_a_wait_and_every_later_one() {
        let (_client, server) = pair();
        let signal = std::sync::Arc::new(Signal::new().unwrap());
        let raiser = {
            let signal = std::sync::Arc::clone(&signal);
            thread::spawn(move || signal.raise())
        };
        // No timeout: only the signal can end this wait.
        let woken = wait(&server, Interest::Read, Some(&signal), None).unwrap();
        assert_eq!(woken, Woken::Signal);
        raiser.join().unwrap();
        let woken = wait(&server, Interest::Read, Some(&signal), None).unwrap();
        assert_eq!(woken, Woken::Signal);
    }

    #[test]
    fn a_wait_reports_readiness_and_timeouts() {
        let (mut client, server) = pair();
        let signal = Signal::new().unwrap();
        let short = Some(Duration::from_millis(10));
        let woken = wait(&server, Interest::Read, Some(&signal), short).unwrap();
        assert_eq!(woken, Woken::TimedOut);
        let mut buf = [0u8; 8];
        let error = recv_now(&server, &mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        std::io::Write::write_all(&mut client, b"hi").unwrap();
        let woken = wait(&server, Interest::Read, Some(&signal), None).unwrap();
        assert_eq!(woken, Woken::Ready);
        assert_eq!(recv_now(&server, &mut buf).unwrap(), 2);
        assert_eq!(
            wait(&server, Interest::Write, None, None).unwrap(),
            Woken::Ready
        );
    }
}
