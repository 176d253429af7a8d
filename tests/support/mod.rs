//! Helpers for the end-to-end tests of the examples (`tests/example_*.rs`):
//! build the example binaries once, run one as a user would, talk to it
//! over loopback, signal it and check how it exits.
//!
//! Nothing here sleeps to wait for something: a server is ready when it has
//! printed its `listening on` line, a reply is there when a read returns
//! it, and a process has exited when its stderr reaches end of file. Every
//! wait has a generous bound ([`PATIENCE`]) so that a bug fails a test
//! instead of hanging it.
//!
//! [`relay`] puts faults between a client and a server (1-byte segments,
//! delays, resets, half-closes, stalls), and [`fds`] reads a process's
//! descriptors from `/proc`, for `tests/faults.rs`.
//!
//! Each test binary compiles this module on its own and uses only some of
//! it, hence the `dead_code` allowance.

#![allow(dead_code)]

#[cfg(target_os = "linux")]
pub(crate) mod fds;
pub(crate) mod relay;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

/// The longest the tests wait for anything that should happen: a reply, a
/// server to start or to exit. Everything here takes milliseconds on an idle
/// machine; the bound is far above that because the tests also run on a
/// loaded 2-core CI machine, and only has to be finite so that a bug fails
/// the test instead of hanging it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// How soon after SIGINT or SIGTERM an example must have exited (the
/// issue's requirement).
pub(crate) const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// The path of the compiled example `name`, building all examples the
/// first time it is called in this test binary.
///
/// Integration tests cannot depend on examples, so this runs
/// `cargo build --examples` with the profile, target and target directory
/// this test binary was built with (all read from its own path), and finds
/// the binaries beside it, in `<target-dir>/[<triple>/]<profile>/examples`.
/// Cargo has released its build lock by the time tests run, so the nested
/// build does not wait for the outer one; when `cargo test` has already
/// built the examples it finds nothing to do.
pub(crate) fn example_path(name: &str) -> PathBuf {
    static EXAMPLES: OnceLock<PathBuf> = OnceLock::new();
    EXAMPLES
        .get_or_init(build_examples)
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn build_examples() -> PathBuf {
    // <target-dir>/[<triple>/]<profile>/deps/<this test>-<hash>
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <profile>/deps");
    // `CARGO_TARGET_TMPDIR` is <target-dir>/tmp, however the target
    // directory was chosen (default, CARGO_TARGET_DIR, --target-dir).
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target directory");
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev",
        Some(profile) => profile,
        None => panic!("no profile in {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--examples", "--quiet", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .args(["--profile", profile, "--target-dir"])
        .arg(target_dir);
    // Cargo runs a test with the variables of the package under test
    // (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`...), which the cargo that
    // built it did not have. Passed on to the nested build, they reach the
    // build scripts, and ring's watches `CARGO_MANIFEST_DIR`: ring, and
    // everything above it, would be built again by this build, and again
    // by the next outer one, a minute or more each time on a small machine.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            command.env_remove(name);
        }
    }
    if cfg!(feature = "tls") {
        // The examples are built with the features of this test run.
        command.args(["--features", "tls"]);
    }
    let triple_dir = profile_dir.parent().expect("profile directory's parent");
    if triple_dir != target_dir {
        // Cross-compiled: <target-dir>/<triple>/<profile>.
        command
            .arg("--target")
            .arg(triple_dir.file_name().expect("triple"));
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build --examples");
    assert!(
        output.status.success(),
        "cargo build --examples failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    profile_dir.join("examples")
}

/// Which of its two handlers an example serves with: `echo` and
/// `commands` have a `Handler` (the default) and a `TurnHandler`
/// (`--turns`), written for the same protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The `Handler`: a worker per client, from connect to close.
    Handler,
    /// The `TurnHandler`: a worker per turn, idle clients parked.
    Turns,
}

impl Mode {
    /// Starts example `name` in this mode, with `args`; see
    /// [`Example::start`].
    pub(crate) fn start(self, name: &str, args: &[&str]) -> Example {
        let mut args = args.to_vec();
        if self == Mode::Turns {
            args.push("--turns");
        }
        Example::start(name, &args)
    }
}

/// Runs each case of a table of tests in both modes. Each case is a
/// function of the test file that takes a [`Mode`]; the macro makes it two
/// tests, `handler::CASE` and `turns::CASE`, so that one table checks both
/// of an example's handlers against the same protocol.
///
/// ```ignore
/// fn answers_ping(mode: Mode) { ... }
/// in_both_modes![answers_ping, ...];
/// ```
#[allow(unused_macros)]
macro_rules! in_both_modes {
    ($($case:ident),+ $(,)?) => {
        /// The cases, served by the example's `Handler` (the default).
        mod handler {
            $(
                #[test]
                fn $case() {
                    super::$case($crate::support::Mode::Handler);
                }
            )+
        }

        /// The same cases, served by its `TurnHandler` (`--turns`).
        mod turns {
            $(
                #[test]
                fn $case() {
                    super::$case($crate::support::Mode::Turns);
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use in_both_modes;

/// A running example, killed when dropped if it has not exited.
pub(crate) struct Example {
    child: Child,
    /// The address from its `listening on` line.
    pub(crate) addr: SocketAddr,
    /// Lines printed to stdout after `listening on` (there should be none
    /// but those a test asks for, see [`Example::next_stdout_line`]).
    stdout: Receiver<String>,
    /// Everything printed to stderr so far.
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Disconnected when stderr reaches end of file, that is when the
    /// process has exited.
    stderr_closed: Receiver<()>,
    status: Option<ExitStatus>,
}

impl Example {
    /// Starts example `name` on `127.0.0.1:0` with `args`, and waits for
    /// its `listening on` line.
    pub(crate) fn start(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(example_path(name))
            .arg("127.0.0.1:0")
            .args(args)
            // Connection logs help when a test fails; they are only shown
            // then.
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start example {name}: {e}"));
        let stdout = lines_of(child.stdout.take().expect("piped stdout"));
        let (stderr, stderr_closed) = collect(child.stderr.take().expect("piped stderr"));
        let mut example = Example {
            child,
            addr: "0.0.0.0:0".parse().expect("an address"),
            stdout,
            stderr,
            stderr_closed,
            status: None,
        };
        let first = match example.stdout.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(error) => {
                // If it exited, let its last words arrive.
                let _ = example.stderr_closed.recv_timeout(Duration::from_secs(1));
                panic!(
                    "{name} printed no `listening on` line ({error}); stderr:\n{}",
                    example.stderr()
                )
            }
        };
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("{name}: unexpected first line {first:?}"));
        example.addr = addr;
        example
    }

    /// The process's id (for `/proc/PID`).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the example prints on stdout after its `listening
    /// on` line (`metrics on ADDR`, with `--metrics`); panics if none
    /// comes within [`PATIENCE`].
    pub(crate) fn next_stdout_line(&self) -> String {
        self.stdout.recv_timeout(PATIENCE).unwrap_or_else(|e| {
            panic!("no more output on stdout ({e}); stderr:\n{}", self.stderr())
        })
    }

    /// Connects a client.
    pub(crate) fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub(crate) fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: kill(2) takes plain integers. The process has not been
        // waited for (`status` is only set by `wait`), so the pid is still
        // this child's.
        #[allow(unsafe_code)]
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Waits up to `limit` for the process to exit and returns its status
    /// and how long it took. Panics (and so kills it) if it does not exit.
    pub(crate) fn wait(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        match self.stderr_closed.recv_timeout(limit) {
            Err(RecvTimeoutError::Disconnected) => {}
            Ok(()) => unreachable!("nothing is sent on this channel"),
            Err(RecvTimeoutError::Timeout) => panic!(
                "the example did not exit within {limit:?}; stderr:\n{}",
                self.stderr()
            ),
        }
        // stderr is closed: the process has exited, so this returns at once.
        let status = self.child.wait().expect("wait for the example");
        self.status = Some(status);
        (status, start.elapsed())
    }

    /// Sends `signal`, checks that the process exits with status 0 within
    /// [`EXIT_WITHIN`], prints nothing more on stdout and no panic on
    /// stderr. Returns how long it took to exit.
    pub(crate) fn stop_with(&mut self, signal: i32) -> Duration {
        self.signal(signal);
        let (status, took) = self.wait(PATIENCE);
        let stderr = self.stderr();
        assert!(
            status.success(),
            "exit status {status} after signal {signal}; stderr:\n{stderr}"
        );
        assert!(
            took <= EXIT_WITHIN,
            "took {took:?} to exit after signal {signal}; stderr:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
        let more = until_closed(&self.stdout);
        assert!(more.is_empty(), "more output on stdout: {more:?}");
        took
    }

    /// Stops the example with SIGTERM; see [`stop_with`](Example::stop_with).
    pub(crate) fn stop(&mut self) -> Duration {
        self.stop_with(libc::SIGTERM)
    }

    /// What the process has printed to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends each line of `stdout` on the returned channel, from a thread that
/// ends at end of file.
pub(crate) fn lines_of(stdout: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// The lines still to come from [`lines_of`] until end of file, which
/// comes soon once the process has exited.
fn until_closed(lines: &Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut rest = Vec::new();
    loop {
        match lines.recv_deadline(deadline) {
            Ok(line) => rest.push(line),
            Err(RecvTimeoutError::Disconnected) => return rest,
            Err(RecvTimeoutError::Timeout) => panic!("stdout still open {PATIENCE:?} after exit"),
        }
    }
}

/// Collects `stderr` into a buffer from a thread; the returned receiver is
/// disconnected at end of file.
fn collect(mut stderr: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, Receiver<()>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let (closed, stderr_closed) = crossbeam_channel::bounded::<()>(0);
    let collected = Arc::clone(&buffer);
    thread::spawn(move || {
        let _closed = closed;
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut chunk) {
            collected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&chunk[..n]);
        }
    });
    (buffer, stderr_closed)
}

/// Runs example `name` with exactly `args` (no address is added) to the
/// end, for arguments that make it exit at once. Returns its status,
/// stdout and stderr.
pub(crate) fn run(name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(example_path(name))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start example {name}: {e}"));
    let stdout = lines_of(child.stdout.take().expect("piped stdout"));
    let (stderr, stderr_closed) = collect(child.stderr.take().expect("piped stderr"));
    let exited = stderr_closed.recv_timeout(PATIENCE);
    if exited != Err(RecvTimeoutError::Disconnected) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{name} {args:?} did not exit within {PATIENCE:?}");
    }
    let status = child.wait().expect("wait for the example");
    let stdout = until_closed(&stdout);
    let stderr =
        String::from_utf8_lossy(&stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    (status, stdout.join("\n"), stderr)
}

/// A client connection with read and write timeouts of [`PATIENCE`], so a
/// server that never answers fails the test instead of hanging it.
pub(crate) struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub(crate) fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::new(stream)
    }

    /// A client on a connected `stream`: timeouts of [`PATIENCE`], and
    /// each `send` out at once, as its own segment.
    fn new(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(PATIENCE))
            .expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// The socket, for writing from another thread (`try_clone`) or
    /// shutting down.
    pub(crate) fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub(crate) fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.reader
            .get_mut()
            .write_all(bytes.as_ref())
            .expect("send to the example");
    }

    /// Sends `bytes`, or returns the error (for a server that may have
    /// closed the connection already).
    pub(crate) fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes.as_ref())
    }

    /// Reads one line without its `\n`: `None` at end of file, or the error.
    pub(crate) fn try_line(&mut self) -> io::Result<Option<String>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line.ends_with('\n') {
            line.pop();
        }
        Ok(Some(line))
    }

    /// Reads one line and returns it without its `\n`.
    pub(crate) fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("connection closed, expected a line"),
            Ok(_) => {}
            Err(e) => panic!("reading a line: {e} (got {line:?} so far)"),
        }
        assert!(line.ends_with('\n'), "unterminated line {line:?}");
        line.pop();
        line
    }

    /// Reads one line and checks it.
    pub(crate) fn expect(&mut self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    /// Checks that the server closes the connection with nothing more to
    /// say. A reset counts as closed: a server that closes a socket with
    /// unread input (the rest of an over-long line) makes the kernel send
    /// one, after the data already sent.
    pub(crate) fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close: {e}"),
        }
        assert!(
            rest.is_empty(),
            "expected the connection to close, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Connects to a server that was full until the server serves this
    /// client, as `served` (a request and its answer) shows.
    ///
    /// A client that has just seen the server end its connection has not
    /// necessarily been counted as gone yet: the server counts a
    /// connection out just after it has ended it. A client arriving in that
    /// instant is still turned away (a busy reply or a closed connection);
    /// it tries again, at most [`PATIENCE`] long.
    pub(crate) fn connect_served(addr: SocketAddr, served: impl Fn(&mut Client) -> bool) -> Client {
        let start = Instant::now();
        loop {
            let mut client = Client::connect(addr);
            if served(&mut client) {
                return client;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "never served within {PATIENCE:?}"
            );
        }
    }

    /// Whether nothing from the server has arrived yet, neither a reply nor
    /// an end of stream; does not wait.
    pub(crate) fn nothing_arrived(&mut self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let stream = self.reader.get_ref();
        stream.set_nonblocking(true).expect("non-blocking");
        let result = stream.peek(&mut [0u8; 1]);
        stream.set_nonblocking(false).expect("blocking again");
        matches!(result, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads until end of file or a reset and returns everything read.
    pub(crate) fn read_to_end_or_reset(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        match self.reader.read_to_end(&mut all) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connection to close: {e}"),
        }
        all
    }

    /// Reads until end of file and returns everything.
    pub(crate) fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        self.reader
            .read_to_end(&mut all)
            .expect("read until the server closes");
        all
    }

    pub(crate) fn reader(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }
}

/// How a stream that the server ended looked to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum End {
    /// A read returned 0: the server closed (or shut down writing) after
    /// everything it wrote had been delivered.
    Clean,
    /// A read failed with `ConnectionReset`: the server's kernel sent a
    /// reset, as it does when a socket is closed with unread input. A reset
    /// throws away what the server had written and the client had not
    /// received yet, so it may hide lost data.
    Reset,
}

impl Client {
    /// Connects with kernel buffers of about `send` and `receive` bytes,
    /// set before connecting so that they also shape the TCP window, and
    /// otherwise like [`Client::connect`]. Small buffers make a client that
    /// stops reading back up with less data.
    pub(crate) fn connect_with_buffers(addr: SocketAddr, send: usize, receive: usize) -> Client {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .expect("client socket");
        socket.set_send_buffer_size(send).expect("SO_SNDBUF");
        socket.set_recv_buffer_size(receive).expect("SO_RCVBUF");
        socket
            .connect(&addr.into())
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::new(TcpStream::from(socket))
    }

    /// Reads until the stream ends, handing each chunk read to `chunk`, and
    /// tells a clean end (a read returns 0) from a reset. Panics on any
    /// other error, including a read that waited [`PATIENCE`] for nothing.
    pub(crate) fn read_until_end(&mut self, mut chunk: impl FnMut(&[u8])) -> End {
        loop {
            let len = match self.reader.fill_buf() {
                Ok([]) => return End::Clean,
                Ok(bytes) => {
                    chunk(bytes);
                    bytes.len()
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return End::Reset,
                Err(e) => panic!("reading until the server closes: {e}"),
            };
            self.reader.consume(len);
        }
    }

    /// Reads until a clean end of stream and returns everything read.
    ///
    /// Unlike [`read_to_end_or_reset`](Client::read_to_end_or_reset), a
    /// reset fails: a server that closes gently never sends one, and a
    /// reset can destroy replies on their way to the client.
    pub(crate) fn read_to_clean_end(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        match self.read_until_end(|bytes| all.extend_from_slice(bytes)) {
            End::Clean => all,
            End::Reset => panic!(
                "the connection was reset instead of ending cleanly, after {} bytes: {:?}",
                all.len(),
                String::from_utf8_lossy(&all[..all.len().min(200)])
            ),
        }
    }

    /// Checks that the server turned this client away with the `commands`
    /// and `chat` examples' busy reply, then ended the connection cleanly.
    pub(crate) fn expect_busy(&mut self) {
        self.expect("error: server busy");
        self.expect_clean_end();
    }

    /// Checks that the server closes the connection with nothing more to
    /// say, and cleanly: unlike [`expect_closed`](Client::expect_closed), a
    /// reset fails.
    pub(crate) fn expect_clean_end(&mut self) {
        let rest = self.read_to_clean_end();
        assert!(
            rest.is_empty(),
            "expected the connection to end, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// A tool the end-to-end tests run (`haproxy`, `openssl`,
/// `systemd-socket-activate`), from `PATH` or `/usr/sbin` (where Debian
/// puts daemons, often outside a user's `PATH`), if installed.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `systemd-socket-activate`, if installed.
pub(crate) fn activator() -> Option<PathBuf> {
    tool("systemd-socket-activate")
}

/// What `LISTEN_PID` says to a process started by [`socket_activated`].
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy)]
pub(crate) enum ListenPid {
    /// The process's own pid, as systemd sets it.
    Own,
    /// Another process's pid (this test's).
    Other,
    /// Set, but empty.
    Empty,
    /// Not set.
    Missing,
}

/// A command that runs `program` with `args` the way systemd starts a
/// socket-activated service: `socket` as descriptor 3, `LISTEN_FDS=1`,
/// and `LISTEN_PID` as `pid` says.
///
/// systemd sets `LISTEN_PID` in the child, once its pid is known; here a
/// shell does (`$$`), then `exec`s the program in its place, so the pid
/// is the program's.
#[cfg(target_os = "linux")]
pub(crate) fn socket_activated(
    socket: &impl std::os::fd::AsRawFd,
    pid: ListenPid,
    program: &Path,
    args: &[&str],
) -> Command {
    use std::os::unix::process::CommandExt;

    let set_pid = match pid {
        ListenPid::Own => "export LISTEN_PID=$$".to_string(),
        ListenPid::Other => format!("export LISTEN_PID={}", std::process::id()),
        ListenPid::Empty => "export LISTEN_PID=".to_string(),
        ListenPid::Missing => "unset LISTEN_PID".to_string(),
    };
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("{set_pid}; exec \"$0\" \"$@\""))
        .arg(program)
        .args(args)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    let fd = socket.as_raw_fd();
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; dup2(2) and fcntl(2) are. It
    // makes the socket descriptor 3 (clearing close-on-exec on the copy,
    // as dup2 does), which is what LISTEN_FDS=1 promises the child.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) == -1 {
                return Err(io::Error::last_os_error());
            }
            if fd == 3 {
                // Already there: only clear close-on-exec.
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags == -1 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command
}

/// A started process whose stdout and stderr are read line by line on
/// threads; each channel disconnects at end of file. Killed when dropped,
/// so a failed test leaves no server running.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) stdout: Receiver<String>,
    pub(crate) stderr: Receiver<String>,
}

impl Process {
    pub(crate) fn spawn(mut command: Command) -> Process {
        let mut child = command
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
        let stdout = lines_of(child.stdout.take().expect("piped stdout"));
        let stderr = lines_of(child.stderr.take().expect("piped stderr"));
        Process {
            child,
            stdout,
            stderr,
        }
    }

    /// The next line of stdout, within [`PATIENCE`].
    pub(crate) fn stdout_line(&self) -> String {
        self.stdout.recv_timeout(PATIENCE).unwrap_or_else(|e| {
            let stderr: Vec<String> = self.stderr.try_iter().collect();
            panic!("no line on stdout ({e}); stderr:\n{}", stderr.join("\n"))
        })
    }

    /// Waits for a line of stderr that contains `text`; `None` if the
    /// process closed stderr (exited) first.
    pub(crate) fn stderr_line_with(&self, text: &str) -> Option<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.stderr.recv_deadline(deadline) {
                Ok(line) if line.contains(text) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(e) => panic!("no stderr line with {text:?} within {PATIENCE:?}: {e}"),
            }
        }
    }

    /// Sends SIGTERM and checks that the process exits with 0 within
    /// [`EXIT_WITHIN`], with no panic.
    pub(crate) fn terminate(mut self) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in pid_t");
        // SAFETY: kill(2) takes plain integers; the child has not been
        // waited for, so the pid is still its own.
        #[allow(unsafe_code)]
        let result = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(result, 0, "kill: {}", io::Error::last_os_error());
        let signalled = Instant::now();
        // stderr closes when the process exits.
        let mut said = Vec::new();
        let deadline = signalled + PATIENCE;
        while let Ok(line) = self.stderr.recv_deadline(deadline) {
            said.push(line);
        }
        let took = signalled.elapsed();
        let status = self.child.wait().expect("wait");
        let said = said.join("\n");
        assert!(status.success(), "exit status {status}; stderr:\n{said}");
        assert!(
            took <= EXIT_WITHIN,
            "took {took:?} to exit; stderr:\n{said}"
        );
        assert!(!said.contains("panicked"), "a panic:\n{said}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy in the foreground, forwarding a loopback port to `backend`
/// (`IP:PORT`, or a Unix socket's absolute path) with `send_proxy`
/// (`send-proxy` or `send-proxy-v2`); stopped on drop.
pub(crate) struct Haproxy {
    child: Child,
    /// Where HAProxy listens for clients.
    pub(crate) addr: SocketAddr,
    config: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy on a free loopback port. A free port is found by
    /// binding port 0 and closing it; another program may take it in the
    /// moment between, and then HAProxy fails to start: try again (at most
    /// 5 times).
    pub(crate) fn start(tool: &Path, backend: &str, send_proxy: &str) -> Haproxy {
        for attempt in 0..5 {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .unwrap();
            let config = std::env::temp_dir().join(format!(
                "frontdesk-haproxy-{}-{send_proxy}-{attempt}.cfg",
                std::process::id()
            ));
            std::fs::write(
                &config,
                format!(
                    "global\n    log stderr format raw local0 info\n\
                     defaults\n    mode tcp\n    log global\n    timeout connect 5s\n    \
                     timeout client 30s\n    timeout server 30s\n\
                     frontend front\n    bind {addr}\n    default_backend back\n\
                     backend back\n    server app {backend} {send_proxy}\n"
                ),
            )
            .unwrap();
            let mut child = Command::new(tool)
                // Master-worker mode in the foreground: the master says
                // "Loading success." once its listeners are bound, and a
                // failure to bind ends it instead.
                .arg("-W")
                .arg("-db")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start haproxy");
            let stderr = child.stderr.take().expect("piped stderr");
            let (said, ready) = started(stderr);
            if ready {
                return Haproxy {
                    child,
                    addr,
                    config,
                };
            }
            // Not started: the master has no worker to leave behind.
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("haproxy did not start (attempt {attempt}): {said}");
        }
        panic!("haproxy did not start in 5 tries");
    }
}

/// Reads HAProxy's start-up output until it says "Loading success." (it
/// listens by then) or ends (it failed); returns what it said and whether
/// it started.
fn started(stderr: impl Read + Send + 'static) -> (String, bool) {
    let lines = lines_of(stderr);
    let mut said = String::new();
    let deadline = Instant::now() + PATIENCE;
    while let Ok(line) = lines.recv_deadline(deadline) {
        let ready = line.contains("Loading success.");
        said.push_str(&line);
        said.push('\n');
        if ready {
            return (said, true);
        }
    }
    (said, false)
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its worker too.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) takes plain integers; the child has not been
            // waited for, so the pid is still its own.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
