//! The servers under test, each run in its own child process
//! (`bench serve KIND PROTOCOL [options]`), and the protocol code they share.
//!
//! Every server binds `127.0.0.1:0`, starts its threads, prints `listening on
//! ADDR` on stdout and serves until the driver kills it. Each sets
//! `TCP_NODELAY` on every accepted stream.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use frontdesk::{
    Addr, Connection, Handler, LineError, LineReader, Lines, Next, Overload, Rejected, Server,
    Turn, TurnHandler,
};

/// Size of the echo servers' read buffer, the same in every server (and in
/// frontdesk's `echo` example, in both modes).
const ECHO_BUF: usize = 16 * 1024;

/// Longest line the frontdesk `commands` handler accepts, as in the example.
pub const MAX_LINE: usize = 8192;

/// How long a line may take to arrive in the `commands` handlers, from its
/// first byte (the example's `--request-timeout-ms` default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the turn-mode server may hold: above the largest idle
/// scenario (10,000) plus its fresh clients, below the open-file limit.
pub const TURN_MAX_CONNECTIONS: usize = 16_000;

/// What every chat server sends a client once it is in the room, so the
/// load generator knows when everyone is in.
pub const CHAT_GREETING: &[u8] = b"hi\n";

/// Which implementation serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `TcpListener::incoming` + `thread::spawn` per connection.
    Std,
    /// tokio multi-thread runtime, one task per connection.
    Tokio,
    /// frontdesk's fixed worker pool, the `Handler` mode (a worker per
    /// connection): the examples' `Handler`s.
    Frontdesk,
    /// frontdesk's turn mode: the examples' `TurnHandler`s, idle
    /// connections parked in the readiness set, `workers` threads running
    /// turns.
    FrontdeskTurns,
    /// A single-threaded level-triggered epoll loop (`polling`): the
    /// baseline for memory and CPU.
    Epoll,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Std => "std",
            Kind::Tokio => "tokio",
            Kind::Frontdesk => "frontdesk",
            Kind::FrontdeskTurns => "frontdesk-turns",
            Kind::Epoll => "epoll",
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "std" => Ok(Kind::Std),
            "tokio" => Ok(Kind::Tokio),
            "frontdesk" => Ok(Kind::Frontdesk),
            "frontdesk-turns" => Ok(Kind::FrontdeskTurns),
            "epoll" => Ok(Kind::Epoll),
            _ => Err(format!("unknown server kind `{s}`")),
        }
    }
}

/// What the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Every byte comes back.
    Echo,
    /// The `commands` line protocol: `ping` → `pong`, `quit` → `bye` and
    /// close, anything else → `unknown: <line>`.
    Lines,
    /// A chat relay: `hi` once the client is in the room, then every line
    /// a client sends goes, verbatim, to every other client.
    Chat,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Echo => "echo",
            Protocol::Lines => "lines",
            Protocol::Chat => "chat",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "echo" => Ok(Protocol::Echo),
            "lines" => Ok(Protocol::Lines),
            "chat" => Ok(Protocol::Chat),
            _ => Err(format!("unknown protocol `{s}`")),
        }
    }
}

/// frontdesk's configuration for one run; ignored by the other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdOptions {
    pub workers: usize,
    pub queue: usize,
    /// `Overload::Reject` with a busy reply instead of `Overload::Block`.
    pub reject: bool,
    /// `None` keeps frontdesk's default idle timeout.
    pub idle_timeout_ms: Option<u64>,
}

impl FdOptions {
    pub fn to_args(self) -> Vec<String> {
        let mut args = vec![
            "--workers".to_string(),
            self.workers.to_string(),
            "--queue".to_string(),
            self.queue.to_string(),
        ];
        if self.reject {
            args.push("--reject".to_string());
        }
        if let Some(ms) = self.idle_timeout_ms {
            args.push("--idle-timeout-ms".to_string());
            args.push(ms.to_string());
        }
        args
    }
}

impl fmt::Display for FdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "workers={} queue={}", self.workers, self.queue)?;
        f.write_str(if self.reject { " Reject" } else { " Block" })?;
        if let Some(ms) = self.idle_timeout_ms {
            write!(f, " idle_timeout={ms}ms")?;
        }
        Ok(())
    }
}

/// Entry point of a server child: `serve KIND PROTOCOL [--workers N]
/// [--queue N] [--reject] [--idle-timeout-ms N]`.
pub fn serve_main(args: &[String]) -> Result<(), Box<dyn Error>> {
    die_with_parent();
    match std::env::var("BENCH_SERVER_CPUS") {
        Ok(cpus) if !cpus.is_empty() => crate::procfs::pin_to_cpus(&cpus)?,
        _ => {}
    }
    let [kind, protocol, rest @ ..] = args else {
        return Err("usage: bench serve KIND PROTOCOL [options]".into());
    };
    let kind: Kind = kind.parse()?;
    let protocol: Protocol = protocol.parse()?;
    let mut options = FdOptions {
        workers: 64,
        queue: 64,
        reject: false,
        idle_timeout_ms: None,
    };
    let mut rest = rest.iter();
    while let Some(flag) = rest.next() {
        let mut value = || -> Result<u64, Box<dyn Error>> {
            let v = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
            Ok(v.parse()?)
        };
        match flag.as_str() {
            "--workers" => options.workers = value()? as usize,
            "--queue" => options.queue = value()? as usize,
            "--idle-timeout-ms" => options.idle_timeout_ms = Some(value()?),
            "--reject" => options.reject = true,
            _ => return Err(format!("unknown option `{flag}`").into()),
        }
    }
    match (kind, protocol) {
        (Kind::Std, Protocol::Chat) => crate::chat::run_std()?,
        (Kind::Tokio, Protocol::Chat) => crate::chat::run_tokio()?,
        (Kind::FrontdeskTurns, Protocol::Chat) => crate::chat::run_turns(options)?,
        (Kind::Std, _) => run_std(protocol)?,
        (Kind::Tokio, _) => run_tokio(protocol)?,
        (Kind::Frontdesk, Protocol::Chat) => {
            return Err("the chat relay is not written for the Handler mode".into())
        }
        (Kind::Frontdesk, _) => run_frontdesk(protocol, options)?,
        (Kind::FrontdeskTurns, _) => run_turns(protocol, options)?,
        (Kind::Epoll, _) => {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            announce(listener.local_addr()?)?;
            if protocol == Protocol::Echo {
                return Err("the epoll server speaks lines and chat only".into());
            }
            crate::epoll::run(protocol, listener)?
        }
    }
    Ok(())
}

/// Makes the kernel kill this child when the driver dies, however it dies,
/// so that no server outlives a benchmark run.
#[allow(unsafe_code)]
fn die_with_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches
    // no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // The parent may have died before the prctl: then we were re-parented.
    if let Ok(parent) = std::env::var("BENCH_PARENT_PID") {
        // SAFETY: getppid has no preconditions.
        let now = unsafe { libc::getppid() };
        if parent.parse::<i32>().ok() != Some(now) {
            std::process::exit(1);
        }
    }
}

/// Prints `listening on ADDR`: a `SocketAddr`, or a frontdesk server's
/// `Addr` (which prints the same for TCP).
pub fn announce(addr: impl fmt::Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// The reply to one line of the `commands` protocol, appended to `out`;
/// false when the connection should be closed after it.
pub fn command_reply(line: &[u8], out: &mut Vec<u8>) -> bool {
    let line = line.trim_ascii();
    match std::str::from_utf8(line) {
        Ok("ping") => out.extend_from_slice(b"pong\n"),
        Ok("quit") => {
            out.extend_from_slice(b"bye\n");
            return false;
        }
        Ok(other) => {
            out.extend_from_slice(b"unknown: ");
            out.extend_from_slice(other.as_bytes());
            out.push(b'\n');
        }
        Err(_) => out.extend_from_slice(b"error: invalid utf-8\n"),
    }
    true
}

// ---------------------------------------------------------------------------
// a. std: what a newcomer writes after the book's web-server chapter.

fn run_std(protocol: Protocol) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    announce(listener.local_addr()?)?;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(_) => continue,
        };
        stream.set_nodelay(true)?;
        thread::spawn(move || {
            let _ = match protocol {
                Protocol::Echo => std_echo(stream),
                _ => std_lines(stream),
            };
        });
    }
    Ok(())
}

fn std_echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; ECHO_BUF];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn std_lines(stream: TcpStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reply = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line?;
        reply.clear();
        let more = command_reply(line.as_bytes(), &mut reply);
        writer.write_all(&reply)?;
        if !more {
            break;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// b. tokio: multi-thread runtime (one worker per core), a task per connection.

fn run_tokio(protocol: Protocol) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        announce(listener.local_addr()?)?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => continue,
            };
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = match protocol {
                    Protocol::Echo => tokio_echo(stream).await,
                    _ => tokio_lines(stream).await,
                };
            });
        }
    })
}

async fn tokio_echo(mut stream: tokio::net::TcpStream) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; ECHO_BUF];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn tokio_lines(mut stream: tokio::net::TcpStream) -> io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (reader, mut writer) = stream.split();
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let mut reply = Vec::new();
    while let Some(line) = lines.next_line().await? {
        reply.clear();
        let more = command_reply(line.as_bytes(), &mut reply);
        writer.write_all(&reply).await?;
        if !more {
            break;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// c. frontdesk: the `echo` and `commands` examples' handlers, both modes.
//
// The code below is examples/echo.rs and examples/commands.rs without
// their command lines: each server is one struct that is both a `Handler`
// and a `TurnHandler`, and the run picks the mode. The builder is the
// examples' (`Overload::Reject` with the busy reply when `reject` is set,
// the idle timeout at the library's 5 minutes, a 10 s request timeout per
// line).

fn run_frontdesk(protocol: Protocol, options: FdOptions) -> Result<(), Box<dyn Error>> {
    let mut builder = Server::builder()
        .workers(options.workers)
        .queue(options.queue)
        .nodelay(true);
    if options.reject {
        builder = builder.overload(Overload::Reject);
        if protocol == Protocol::Lines {
            builder =
                builder.on_reject(|conn: &mut Rejected| conn.write_all(b"error: server busy\n"));
        }
    }
    if let Some(ms) = options.idle_timeout_ms {
        builder = builder.idle_timeout(Duration::from_millis(ms));
    }
    let server = builder.bind("127.0.0.1:0")?;
    // `spawn` returns once every thread runs: the address is announced to
    // a server that is up.
    let server = match protocol {
        Protocol::Echo => server.spawn(Echo)?,
        _ => server.spawn(Commands)?,
    };
    announce(server.local_addr())?;
    server.join()?;
    Ok(())
}

/// The turn-mode server's builder, shared by the examples' handlers and
/// the chat relay: `workers` threads, every connection parked between
/// turns, `TURN_MAX_CONNECTIONS` at most (then the busy reply), every
/// other option at its default (idle timeout 5 min, outbox 256 KiB).
pub fn turns_builder(options: FdOptions) -> frontdesk::ServerBuilder {
    Server::builder()
        .workers(options.workers)
        .nodelay(true)
        .max_connections(TURN_MAX_CONNECTIONS)
        .overload(Overload::Reject)
        .on_reject(|conn: &mut Rejected| conn.write_all(b"error: server busy\n"))
}

fn run_turns(protocol: Protocol, options: FdOptions) -> Result<(), Box<dyn Error>> {
    let server = turns_builder(options).bind("127.0.0.1:0")?;
    let server = match protocol {
        Protocol::Echo => server.spawn_turns(Echo)?,
        _ => server.spawn_turns(Commands)?,
    };
    announce(server.local_addr())?;
    server.join()?;
    Ok(())
}

/// The `echo` example.
struct Echo;

impl Handler for Echo {
    fn handle(&self, conn: &mut Connection) -> io::Result<()> {
        let mut buf = [0; ECHO_BUF];
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n])?;
        }
    }
}

thread_local! {
    static ECHO_TURN_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; ECHO_BUF].into_boxed_slice());
}

impl TurnHandler for Echo {
    type State = ();

    fn open(&self, _: &mut Turn<'_>) -> io::Result<()> {
        Ok(())
    }

    /// As the example: a read buffer per worker thread, not per turn.
    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        ECHO_TURN_BUF.with_borrow_mut(|buf| {
            while turn.outbox_room() >= ECHO_BUF {
                match turn.read(buf) {
                    Ok(0) => return Ok(Next::Close),
                    Ok(n) => turn.send(&buf[..n])?,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => return Err(error),
                }
            }
            Ok(Next::Park)
        })
    }
}

/// The `commands` example.
struct Commands;

/// What the server says to one line, and whether it closes after it.
struct Answer {
    text: Cow<'static, str>,
    close: bool,
}

/// The `commands` protocol, as the example has it (`whoami` included).
fn answer(line: &str, client: impl FnOnce() -> Addr) -> Answer {
    let (text, close) = match line.trim() {
        "ping" => ("pong\n".into(), false),
        "whoami" => (format!("you are {}\n", client()).into(), false),
        "quit" => ("bye\n".into(), true),
        other => (format!("unknown: {other}\n").into(), false),
    };
    Answer { text, close }
}

impl Handler for Commands {
    fn handle(&self, conn: &mut Connection) -> io::Result<()> {
        let conn: &Connection = conn;
        let mut out = conn;
        let mut lines = LineReader::new(LineTimer::new(conn, Some(REQUEST_TIMEOUT)), MAX_LINE);
        loop {
            lines.get_ref().next_line(lines.buffered());
            match lines.read_line_str() {
                Ok(line) => {
                    conn.set_deadline(None);
                    let answer = answer(line, || conn.peer_addr());
                    out.write_all(answer.text.as_bytes())?;
                    if answer.close {
                        return Ok(());
                    }
                }
                Err(LineError::InvalidUtf8 { .. }) => out.write_all(b"error: invalid utf-8\n")?,
                Err(LineError::TooLong { .. }) => return out.write_all(b"error: line too long\n"),
                Err(LineError::Closed { .. }) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

impl TurnHandler for Commands {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        Ok(Lines::new(turn, MAX_LINE))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line_str() {
                Ok(Some(line)) => {
                    let answer = answer(line, || turn.peer_addr());
                    turn.send(&*answer.text)?;
                    if answer.close {
                        return Ok(Next::Close);
                    }
                }
                Ok(None) => {
                    turn.set_deadline(lines.line_deadline(Some(REQUEST_TIMEOUT)));
                    return Ok(Next::Park);
                }
                Err(LineError::InvalidUtf8 { .. }) => turn.send("error: invalid utf-8\n")?,
                Err(LineError::TooLong { .. }) => {
                    turn.send("error: line too long\n")?;
                    return Ok(Next::Close);
                }
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// The `commands` example's request timeout in the `Handler` mode: each
/// line is due `timeout` after its first byte arrives.
struct LineTimer<'c> {
    conn: &'c Connection,
    timeout: Option<Duration>,
}

impl<'c> LineTimer<'c> {
    fn new(conn: &'c Connection, timeout: Option<Duration>) -> LineTimer<'c> {
        LineTimer { conn, timeout }
    }

    fn next_line(&self, buffered: &[u8]) {
        let due = if buffered.is_empty() {
            None
        } else {
            self.due()
        };
        self.conn.set_deadline(due);
    }

    fn due(&self) -> Option<Instant> {
        Instant::now().checked_add(self.timeout?)
    }
}

impl Read for LineTimer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut conn = self.conn;
        let n = conn.read(buf)?;
        if n > 0 && conn.deadline().is_none() {
            conn.set_deadline(self.due());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_protocol() {
        let mut out = Vec::new();
        assert!(command_reply(b" ping\r", &mut out));
        assert!(command_reply(b"", &mut out));
        assert!(command_reply(b"\xff", &mut out));
        assert!(!command_reply(b"quit", &mut out));
        assert_eq!(
            out,
            b"pong\nunknown: \nerror: invalid utf-8\nbye\n".as_slice()
        );
    }
}
