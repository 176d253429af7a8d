//! Helpers shared by the behaviour tests in `tests/`.
//!
//! Every test talks to a real server over loopback (`127.0.0.1:0`). The
//! helpers here keep such tests from hanging and from relying on sleeps:
//!
//! - [`serve`] starts a server on [`LOCALHOST`] with a handler;
//! - [`client`] connects with read and write timeouts of [`TIMEOUT`], so a
//!   server that never answers fails the test instead of hanging it;
//! - [`Gate`] holds handlers inside their workers until the test lets them
//!   go, and tells the test which handlers have entered, so a test knows
//!   exactly when N workers are busy;
//! - [`wait_until`] and [`wait_for_stats`] poll a condition (usually on
//!   [`Stats`]) for at most [`TIMEOUT`], for the few things no channel can
//!   report;
//! - [`run_on_thread`] runs a blocking [`Server::run`] where a test can give
//!   up on it;
//! - [`assert_silent`] is the one place where a test waits on purpose: to
//!   show that something does *not* happen within [`QUIET`].
//!
//! Each test binary compiles this module on its own and uses only some of
//! it, hence the `dead_code` allowance. Items are `pub(crate)` because the
//! crate's `unreachable_pub` lint also applies to test binaries.

#![allow(dead_code)]

use std::fmt::{Debug, Display};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use frontdesk::{
    Addr, Connection, Handler, Next, Server, ServerBuilder, ServerHandle, ShutdownReport, Stats,
    Turn,
};

/// The address every test server binds: loopback, with a port from the OS.
pub(crate) const LOCALHOST: &str = "127.0.0.1:0";

/// The longest a test waits for something that should happen.
///
/// Far longer than anything here takes on an idle machine (milliseconds):
/// the tests also run on a loaded 2-core CI machine, in parallel with each
/// other, and a generous bound only costs time when a test is failing
/// anyway. It only has to be finite, so that a bug fails the test instead of
/// hanging it.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test watches for something that must *not* happen (a reply,
/// a handler starting). Short, because every passing run waits this long;
/// long enough that on loopback the thing would have happened by then if the
/// code were wrong.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

/// Binds `builder` to [`LOCALHOST`] and spawns the server with `handler`.
pub(crate) fn serve(builder: ServerBuilder, handler: impl Handler) -> ServerHandle {
    builder
        .bind(LOCALHOST)
        .expect("bind")
        .spawn(handler)
        .expect("spawn")
}

/// The TCP address in `addr`, the [`local_addr`](ServerHandle::local_addr)
/// of a server bound to [`LOCALHOST`] (or another IP address).
///
/// # Panics
///
/// If `addr` is not a TCP address (a Unix socket's).
pub(crate) fn tcp_addr(addr: Addr) -> SocketAddr {
    addr.tcp()
        .unwrap_or_else(|| panic!("expected a TCP address, got {addr}"))
}

/// Connects to `addr` (a `SocketAddr`, or a TCP server's [`Addr`]) with
/// read and write timeouts of [`TIMEOUT`].
pub(crate) fn client(addr: impl ToSocketAddrs + Display) -> TcpStream {
    let stream = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// Connects to `addr` and sends `line` (a newline is added).
pub(crate) fn client_with_request(addr: impl ToSocketAddrs + Display, line: &str) -> TcpStream {
    let mut stream = client(addr);
    send_line(&mut stream, line);
    stream
}

/// Writes `line` and a newline (and flushes: a TLS stream buffers).
pub(crate) fn send_line(stream: &mut impl Write, line: &str) {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|()| stream.flush())
        .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
}

/// Reads one line, without its newline. Reads a byte at a time so that
/// nothing after the line is taken from the stream (a TLS session keeps
/// the rest decrypted).
///
/// # Panics
///
/// If the stream ends or fails (including a read timeout) first.
pub(crate) fn read_line(stream: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed after {:?}, before the end of the line",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "read failed after {:?}: {e} ({:?})",
                String::from_utf8_lossy(&line),
                e.kind()
            ),
        }
    }
    String::from_utf8(line).expect("the server sends text")
}

/// Reads exactly `n` bytes.
///
/// # Panics
///
/// If the connection ends or fails (including a read timeout) first.
pub(crate) fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    stream
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("read {n} bytes from the server: {e}"));
    buf
}

/// Sends `line` and returns the line that comes back.
pub(crate) fn exchange(stream: &mut TcpStream, line: &str) -> String {
    send_line(stream, line);
    read_line(stream)
}

/// Asserts that the server closed the connection without sending anything
/// (more): the next read gives end of file or a reset.
pub(crate) fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!(
            "expected the connection to be closed, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!(
            "expected the connection to be closed, got {e} ({:?})",
            e.kind()
        ),
    }
}

/// Reads until the server's clean end of stream (a read returns 0, the FIN
/// of an orderly close) and returns every byte received before it.
///
/// Unlike [`assert_closed`], a reset does not count as closed: a server
/// that closes a socket with unread input makes the kernel send a reset
/// instead of a FIN, and a reset can destroy data still on its way to the
/// client. The wait is bounded by the stream's read timeout ([`TIMEOUT`]
/// for a [`client`]).
///
/// # Panics
///
/// Naming what happened instead: a reset, no end of stream within the read
/// timeout (the server never closed), or another error. The message shows
/// the bytes received until then.
pub(crate) fn read_to_clean_end(stream: &mut TcpStream) -> Vec<u8> {
    try_read_to_clean_end(stream).unwrap_or_else(|why| panic!("{why}"))
}

/// As [`read_to_clean_end`], but returns what went wrong instead of
/// panicking, for a caller that adds context (which round, which client).
pub(crate) fn try_read_to_clean_end(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "expected a clean end of stream after {} bytes ({:?}), but {}",
                    received.len(),
                    preview(&received),
                    describe_unclean_end(stream, &e)
                ))
            }
        }
    }
}

/// Asserts that the next read gives a clean end of stream: no more data,
/// and a FIN rather than a reset (see [`read_to_clean_end`]).
pub(crate) fn assert_clean_end(stream: &mut TcpStream) {
    let rest = read_to_clean_end(stream);
    assert!(
        rest.is_empty(),
        "expected a clean end of stream, but got {} more bytes first ({:?})",
        rest.len(),
        preview(&rest)
    );
}

/// Whether `error` says the peer reset the connection: the error a read
/// or write gives after an RST (`ECONNRESET`, or `EPIPE` / `ECONNABORTED`
/// depending on the state the socket was in when it arrived).
pub(crate) fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// What a failed read instead of a clean end of stream means, for a panic
/// message.
fn describe_unclean_end(stream: &TcpStream, error: &io::Error) -> String {
    if is_reset(error) {
        format!(
            "the connection was reset ({error}, {:?}): the server closed it \
             hard (RST) instead of with a FIN",
            error.kind()
        )
    } else if matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        format!(
            "no end of stream came within the read timeout ({:?}): the server \
             never closed the connection",
            stream.read_timeout().ok().flatten()
        )
    } else {
        format!("the read failed: {error} ({:?})", error.kind())
    }
}

/// The start of `bytes` as text, for panic messages.
fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 120;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        format!("{shown}...")
    } else {
        shown
    }
}

/// Asserts that nothing arrives on `stream` for [`QUIET`] (no data, no end
/// of file), then restores the read timeout to [`TIMEOUT`].
pub(crate) fn assert_silent(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(QUIET)).unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        Ok(0) => panic!("expected silence, but the connection was closed"),
        Ok(n) => panic!(
            "expected silence, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("expected silence, got {e}"),
    }
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
}

/// Polls `cond` until it holds; panics naming `what` if it does not within
/// [`TIMEOUT`].
///
/// For conditions no channel reports, such as counters in [`Stats`]. The
/// bound is generous because the condition usually holds within
/// milliseconds; it only has to be finite (see [`TIMEOUT`]).
pub(crate) fn wait_until(what: &str, cond: impl Fn() -> bool) {
    wait_for(what, cond, |&held| held);
}

/// Polls `handle`'s stats until `ok` accepts them, and returns the stats it
/// accepted; panics naming `what`, with the last stats seen, if that does not
/// happen within [`TIMEOUT`] (as [`wait_until`]).
pub(crate) fn wait_for_stats(
    handle: &ServerHandle,
    what: &str,
    ok: impl Fn(&Stats) -> bool,
) -> Stats {
    wait_for(what, || handle.stats(), ok)
}

/// Takes a `sample` every few milliseconds until `ok` accepts one, and
/// returns it; panics naming `what`, with the last sample, after
/// [`TIMEOUT`].
fn wait_for<T: Debug>(what: &str, sample: impl Fn() -> T, ok: impl Fn(&T) -> bool) -> T {
    let start = Instant::now();
    loop {
        let last = sample();
        if ok(&last) {
            return last;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out after {TIMEOUT:?} waiting until {what}; last seen: {last:#?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `server` with `handler` on a thread of its own, and returns that
/// thread and a channel that receives what `run` returned.
///
/// `run` blocks the thread that calls it; on another thread, a `run` that
/// never returns fails the test (at a bounded `recv_timeout` on the channel)
/// instead of hanging it.
pub(crate) fn run_on_thread(
    server: Server,
    handler: impl Handler,
) -> (
    thread::JoinHandle<()>,
    Receiver<frontdesk::Result<ShutdownReport>>,
) {
    let (result_tx, result) = crossbeam_channel::bounded(1);
    let runner = thread::spawn(move || {
        let _ = result_tx.send(server.run(handler));
    });
    (runner, result)
}

/// Shuts the server down and returns its report and final stats.
pub(crate) fn stop(handle: ServerHandle) -> (ShutdownReport, Stats) {
    let report = handle.shutdown().expect("the server stops cleanly");
    (report, report.stats)
}

/// Asserts the accounting identity of a stopped server: every accepted
/// connection was completed, rejected or dropped.
pub(crate) fn assert_accounted(stats: &Stats) {
    assert_eq!(
        stats.accepted,
        stats.completed + stats.rejected.total() + stats.dropped,
        "accepted == completed + rejected + dropped: {stats:#?}"
    );
    assert_eq!(stats.active, 0, "{stats:#?}");
    assert_eq!(stats.queued, 0, "{stats:#?}");
}

/// A handler that echoes every byte until the client closes.
pub(crate) fn echo(conn: &mut Connection) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

/// A handler that reads one line, writes it back, and returns.
pub(crate) fn answer_line(conn: &mut Connection) -> io::Result<()> {
    let mut line = String::new();
    BufReader::new(&*conn).read_line(&mut line)?;
    (&*conn).write_all(line.as_bytes())
}

/// For handlers: reads the client's next line (without its `\n`) a byte at
/// a time, so that nothing after it is consumed; `None` at end of file.
pub(crate) fn read_request_line(conn: &mut Connection) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if conn.read(&mut byte)? == 0 {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
        line.push(byte[0]);
    }
}

/// For handlers: reads and discards until the client closes.
pub(crate) fn until_closed(conn: &mut Connection) -> io::Result<()> {
    let mut buf = [0u8; 256];
    while conn.read(&mut buf)? > 0 {}
    Ok(())
}

/// [`until_closed`] for a turn: reads and discards what has arrived;
/// `Next::Park` once nothing more has, `Next::Close` at the client's end
/// of stream.
pub(crate) fn turn_until_closed(turn: &mut Turn<'_>) -> io::Result<Next> {
    let mut buf = [0u8; 256];
    loop {
        match turn.read(&mut buf) {
            Ok(0) => return Ok(Next::Close),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(Next::Park),
            Err(error) => return Err(error),
        }
    }
}

/// Holds handlers inside their workers until the test releases them.
///
/// A handler calls [`pass`](Gate::pass) first thing (or is wrapped by
/// [`guard`](Gate::guard), which does that): the gate reports the
/// connection's id to the test, then waits for a permit. The test learns
/// from [`wait_entered`](Gate::wait_entered) that N handlers are running at
/// once (so N workers are busy), and lets them go with
/// [`release`](Gate::release) (one permit each) or [`open`](Gate::open)
/// (every handler, now and later).
///
/// A handler that gets no permit within [`TIMEOUT`] gives up with an error,
/// so a failing test cannot leave a worker blocked forever.
#[derive(Debug)]
pub(crate) struct Gate {
    entered_tx: Sender<u64>,
    entered: Receiver<u64>,
    permits_tx: Mutex<Option<Sender<()>>>,
    permits: Receiver<()>,
}

impl Gate {
    /// A closed gate.
    pub(crate) fn new() -> Arc<Gate> {
        let (entered_tx, entered) = crossbeam_channel::unbounded();
        let (permits_tx, permits) = crossbeam_channel::unbounded();
        Arc::new(Gate {
            entered_tx,
            entered,
            permits_tx: Mutex::new(Some(permits_tx)),
            permits,
        })
    }

    /// Called by a handler: reports `conn` as entered, then waits for a
    /// permit (or for the gate to open).
    ///
    /// # Errors
    ///
    /// `TimedOut` if the test gives no permit within [`TIMEOUT`].
    pub(crate) fn pass(&self, conn: &Connection) -> io::Result<()> {
        self.entered_tx.send(conn.id()).unwrap();
        match self.permits.recv_timeout(TIMEOUT) {
            // Disconnected: the gate is open.
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Ok(()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the test never released this handler",
            )),
        }
    }

    /// A handler that first [`pass`](Gate::pass)es this gate, then serves
    /// the connection with `then`.
    pub(crate) fn guard(self: &Arc<Gate>, then: impl Handler) -> impl Handler {
        let gate = Arc::clone(self);
        move |conn: &mut Connection| {
            gate.pass(conn)?;
            then.handle(conn)
        }
    }

    /// Waits until `n` more handlers have entered and returns their
    /// connection ids in the order they entered.
    pub(crate) fn wait_entered(&self, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + TIMEOUT;
        (0..n)
            .map(|i| {
                self.entered.recv_deadline(deadline).unwrap_or_else(|_| {
                    panic!("only {i} of {n} handlers entered within {TIMEOUT:?}")
                })
            })
            .collect()
    }

    /// Asserts that no further handler enters within [`QUIET`].
    pub(crate) fn assert_none_enters(&self) {
        if let Ok(id) = self.entered.recv_timeout(QUIET) {
            panic!("expected no handler to start, but connection {id} entered");
        }
    }

    /// Lets `n` waiting (or future) handlers go on.
    pub(crate) fn release(&self, n: usize) {
        if let Some(permits) = &*self.permits_tx.lock().unwrap() {
            for _ in 0..n {
                permits.send(()).unwrap();
            }
        }
    }

    /// Lets every handler go on, now and from now on.
    pub(crate) fn open(&self) {
        self.permits_tx.lock().unwrap().take();
    }
}

/// Sends on a channel when dropped: put one in a handler to learn when the
/// server has dropped its handler (that is, when every worker has ended).
#[derive(Debug)]
pub(crate) struct DropSignal(pub(crate) Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// The thread names of this process that start with `frontdesk-` (Linux:
/// read from `/proc/self/task/*/comm`, where names are cut to 15 bytes, e.g.
/// `frontdesk-worke`).
#[cfg(target_os = "linux")]
pub(crate) fn frontdesk_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        // A thread may end between listing and reading.
        let Ok(comm) = std::fs::read_to_string(task.unwrap().path().join("comm")) else {
            continue;
        };
        let name = comm.trim_end().to_string();
        if name.starts_with("frontdesk-") {
            names.push(name);
        }
    }
    names
}

/// The longest path a Unix socket may have: `sun_path` holds 108 bytes on
/// Linux (104 on the BSDs and macOS), and the last is the terminating NUL.
/// The smaller value is used so the check holds everywhere.
#[cfg(unix)]
const MAX_SOCKET_PATH: usize = 103;

/// The longest file name [`SocketDir::path`] is given.
#[cfg(unix)]
const MAX_NAME: usize = 12;

/// A fresh directory for one test's sockets, removed (with whatever is
/// left in it) when dropped.
///
/// It is `fd-<pid>-<tag>` under `CARGO_TARGET_TMPDIR`, so that parallel
/// tests and concurrent runs of this binary never share a path; when that
/// would make a socket path too long for `sun_path` (a deep target
/// directory), it goes under the system's temporary directory instead.
#[cfg(unix)]
pub(crate) struct SocketDir {
    pub(crate) dir: std::path::PathBuf,
}

#[cfg(unix)]
impl SocketDir {
    pub(crate) fn new(tag: &str) -> SocketDir {
        let name = format!("fd-{}-{tag}", std::process::id());
        let bases = [
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
            std::env::temp_dir(),
        ];
        let dir = bases
            .iter()
            .map(|base| base.join(&name))
            // The directory, a `/` and a name of up to MAX_NAME bytes.
            .find(|dir| dir.as_os_str().len() + 1 + MAX_NAME <= MAX_SOCKET_PATH)
            .unwrap_or_else(|| panic!("no directory short enough for a socket named {name}"));
        // Left over from an earlier run whose process had the same id.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        SocketDir { dir }
    }

    /// A path in the directory; nothing is created.
    pub(crate) fn path(&self, name: &str) -> std::path::PathBuf {
        assert!(name.len() <= MAX_NAME, "socket name {name:?} is too long");
        self.dir.join(name)
    }
}

#[cfg(unix)]
impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
