//! The soak's clients: a bounded mix of well-behaved and hostile ones,
//! each kind on a thread of its own, until a deadline.
//!
//! Every client checks what it gets. A *lost reply* is a request whose
//! answer never came on a connection the client did not break on
//! purpose: the connection ended (end of stream or reset) or stayed
//! silent for [`PATIENCE`] while an answer was owed. Deliberately broken
//! connections (resets, oversized lines, PROXY garbage, stalled lines)
//! owe nothing; for those the soak only checks that the server ends them
//! the way the examples promise.
//!
//! Every loop here ends at the deadline, and every wait is bounded by a
//! socket timeout; pacing sleeps keep the load to a fixed, modest rate
//! (the soak measures whether anything grows, not how fast it goes).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a client waits for an answer it is owed, or for a close it
/// expects. Answers take microseconds; this is generous because two soaks
/// and other work may share a 2-core machine, and only has to be finite.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The longest line the examples take by default (`--max-line`).
const MAX_LINE: usize = 8192;

/// The examples' default `--request-timeout-ms`: a stalled line is closed
/// this long after its first byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The header timeout of the PROXY protocol (the library's
/// `PROXY_HEADER_TIME`).
const PROXY_HEADER_TIME: Duration = Duration::from_secs(5);

const BUSY: &[u8] = b"error: server busy\n";

/// Where the clients go.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    pub commands: SocketAddr,
    /// The `commands` example with `--proxy-protocol`.
    pub proxied: SocketAddr,
    pub echo: SocketAddr,
    pub chat: SocketAddr,
}

/// How many clients of each kind.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Connections held open, each asking `ping` now and then.
    pub holders: usize,
    /// Stable chat members, each reading every line.
    pub members: usize,
}

/// What the clients counted, shared by every client thread.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests answered as expected (lines, echoes, `whoami`).
    pub answered: AtomicU64,
    /// Requests whose answer never came on a connection not broken on
    /// purpose.
    pub lost: AtomicU64,
    /// Answers that came but were wrong.
    pub wrong: AtomicU64,
    /// Connects that failed.
    pub connect_failed: AtomicU64,
    /// Connections turned away with `error: server busy`.
    pub busy: AtomicU64,
    /// Connections opened (all kinds).
    pub connections: AtomicU64,
    /// Connections the clients reset on purpose (SO_LINGER 0).
    pub resets: AtomicU64,
    /// Oversized lines answered with `error: line too long` or a clean
    /// close; and those that saw a reset instead (allowed, counted).
    pub oversize_ok: AtomicU64,
    pub oversize_reset: AtomicU64,
    /// PROXY garbage closed by the server (end of stream or reset).
    pub garbage_closed: AtomicU64,
    /// Stalled lines closed by the server's request timeout.
    pub stalls_closed: AtomicU64,
    /// Connections the server held past the limit that should end them
    /// (a stalled line, PROXY garbage, an oversized line).
    pub held_too_long: AtomicU64,
    /// Chat lines sent by the stable members, delivered to the others,
    /// and missing at the end.
    pub chat_sent: AtomicU64,
    pub chat_delivered: AtomicU64,
    pub chat_missing: AtomicU64,
    /// Bytes moved by the slow readers' answers.
    pub slow_bytes: AtomicU64,
    /// The first problems seen, for the report.
    pub notes: Mutex<Vec<String>>,
}

impl Tally {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn one(counter: &AtomicU64) {
        Tally::add(counter, 1);
    }

    /// Keeps the first 20 problems, with when they happened.
    fn note(&self, started: Instant, what: String) {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if notes.len() < 20 {
            notes.push(format!("{:.0} s: {what}", started.elapsed().as_secs_f64()));
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The running clients.
pub struct Load {
    threads: Vec<(&'static str, JoinHandle<()>)>,
    chat: Option<ChatRoom>,
    tally: Arc<Tally>,
    started: Instant,
}

/// Starts every kind of client; they stop by themselves at `deadline`.
pub fn start(targets: Targets, mix: Mix, deadline: Instant) -> io::Result<Load> {
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let ctx = Ctx {
        tally: Arc::clone(&tally),
        deadline,
        started,
    };
    let mut threads = Vec::new();
    let mut spawn = |name: &'static str, seed: u64, body: fn(Ctx, Targets, Rng)| {
        let ctx = ctx.clone();
        thread::Builder::new()
            .name(format!("soak-{name}"))
            .spawn(move || body(ctx, targets, Rng::new(seed)))
            .map(|handle| threads.push((name, handle)))
    };
    spawn("pinger", 1, pinger)?;
    spawn("pinger", 2, pinger)?;
    spawn("whoami", 3, whoami)?;
    spawn("echo", 4, echo)?;
    spawn("churn", 5, churn)?;
    spawn("churn", 6, churn)?;
    spawn("trickler", 7, trickler)?;
    spawn("trickler", 8, trickler)?;
    spawn("trickler", 9, trickler)?;
    spawn("slow-reader", 10, slow_reader)?;
    spawn("reset", 11, resetter)?;
    spawn("oversize", 12, oversize)?;
    spawn("proxy-garbage", 13, proxy_garbage)?;
    spawn("chat-churn", 14, chat_churn)?;
    {
        let ctx = ctx.clone();
        let holders = mix.holders;
        threads.push((
            "holders",
            thread::Builder::new()
                .name("soak-holders".to_string())
                .spawn(move || hold(ctx, targets.commands, holders, Rng::new(15)))?,
        ));
    }
    let chat = ChatRoom::start(ctx, targets.chat, mix.members)?;
    Ok(Load {
        threads,
        chat: Some(chat),
        tally,
        started,
    })
}

impl Load {
    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// Waits for every client to stop (they stop at the deadline; each
    /// wait inside is bounded), then for the chat lines in flight.
    pub fn finish(mut self) -> Arc<Tally> {
        for (name, thread) in self.threads.drain(..) {
            if thread.join().is_err() {
                self.tally
                    .note(self.started, format!("the {name} client thread panicked"));
            }
        }
        if let Some(chat) = self.chat.take() {
            chat.finish();
        }
        self.tally
    }
}

#[derive(Clone)]
struct Ctx {
    tally: Arc<Tally>,
    deadline: Instant,
    started: Instant,
}

impl Ctx {
    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    fn note(&self, what: String) {
        self.tally.note(self.started, what);
    }

    /// A connection with the soak's timeouts, or `None` (counted) when the
    /// connect fails.
    fn connect(&self, addr: SocketAddr, who: &str) -> Option<TcpStream> {
        let stream = TcpStream::connect_timeout(&addr, PATIENCE).and_then(|stream| {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(PATIENCE))?;
            stream.set_write_timeout(Some(PATIENCE))?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                Tally::one(&self.tally.connections);
                Some(stream)
            }
            Err(error) => {
                Tally::one(&self.tally.connect_failed);
                self.note(format!("{who}: connect failed: {error}"));
                // Do not spin on a refused port.
                thread::sleep(Duration::from_millis(100));
                None
            }
        }
    }

    /// Counts `owed` answers lost on a connection that ended with `end`.
    fn lost(&self, who: &str, owed: u64, end: &End) {
        Tally::add(&self.tally.lost, owed);
        self.note(format!("{who}: {owed} answer(s) lost: {end:?}"));
    }

    fn wrong(&self, who: &str, got: &[u8], expected: &[u8]) {
        Tally::one(&self.tally.wrong);
        self.note(format!(
            "{who}: expected {:?}, got {:?}",
            String::from_utf8_lossy(&expected[..expected.len().min(60)]),
            String::from_utf8_lossy(&got[..got.len().min(60)])
        ));
    }
}

/// How a read that wanted more ended.
#[derive(Debug)]
enum End {
    /// End of stream.
    Eof,
    /// The connection was reset.
    Reset,
    /// Nothing for [`PATIENCE`].
    Silent,
    /// Anything else; the kind shows in the notes (through `Debug`).
    Other(#[allow(dead_code)] io::ErrorKind),
}

impl From<io::Error> for End {
    fn from(error: io::Error) -> End {
        match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => End::Reset,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::Silent,
            kind => End::Other(kind),
        }
    }
}

/// A connection read line by line.
struct LineConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl LineConn {
    fn new(stream: TcpStream) -> LineConn {
        LineConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next line, `\n` included.
    fn line(&mut self) -> Result<Vec<u8>, End> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.drain(..=at).collect());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(End::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Everything until the end of the stream, and how it ended.
    fn rest(&mut self) -> (Vec<u8>, End) {
        let mut chunk = [0u8; 16 * 1024];
        let mut got = std::mem::take(&mut self.buf);
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return (got, End::Eof),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (got, error.into()),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.stream.write_all(bytes).map_err(End::from)
    }
}

/// Sends `requests` pipelined (one write) and checks each answer. Returns
/// false when the connection is no longer usable.
fn exchange(ctx: &Ctx, who: &str, conn: &mut LineConn, requests: &[u8], answers: &[&[u8]]) -> bool {
    if let Err(end) = conn.send(requests) {
        ctx.lost(who, answers.len() as u64, &end);
        return false;
    }
    for (i, expected) in answers.iter().enumerate() {
        match conn.line() {
            Ok(line) if line == *expected => Tally::one(&ctx.tally.answered),
            // Turned away before the first answer: not a lost one.
            Ok(line) if i == 0 && line == BUSY => {
                Tally::one(&ctx.tally.busy);
                return false;
            }
            Ok(line) => {
                ctx.wrong(who, &line, expected);
                return false;
            }
            Err(end) => {
                ctx.lost(who, (answers.len() - i) as u64, &end);
                return false;
            }
        }
    }
    true
}

/// A small xorshift generator: the mix is varied, and the same each run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn pause(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

/// Resets the connection on purpose: SO_LINGER 0, then close.
#[allow(unsafe_code)]
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a valid `linger` of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// Steady clients of `commands`: pipelined `ping`s in batches of 1 to 8
/// on a connection that lasts 500 batches.
fn pinger(ctx: Ctx, targets: Targets, mut rng: Rng) {
    while ctx.running() {
        let Some(stream) = ctx.connect(targets.commands, "pinger") else {
            continue;
        };
        let mut conn = LineConn::new(stream);
        for _ in 0..500 {
            if !ctx.running() {
                break;
            }
            let n = rng.range(1, 8) as usize;
            let requests = b"ping\n".repeat(n);
            if !exchange(
                &ctx,
                "pinger",
                &mut conn,
                &requests,
                &vec![&b"pong\n"[..]; n],
            ) {
                break;
            }
            pause(5);
        }
    }
}

/// `whoami` through the PROXY protocol: a valid v1 header, then the
/// server must name the client the header names.
fn whoami(ctx: Ctx, targets: Targets, mut rng: Rng) {
    while ctx.running() {
        let Some(stream) = ctx.connect(targets.proxied, "whoami") else {
            continue;
        };
        let port = rng.range(1024, 65535);
        let header = format!("PROXY TCP4 203.0.113.7 192.0.2.1 {port} 7878\r\n");
        let expected = format!("you are 203.0.113.7:{port}\n");
        let mut conn = LineConn::new(stream);
        if conn.send(header.as_bytes()).is_err() {
            ctx.lost("whoami", 1, &End::Reset);
            continue;
        }
        for _ in 0..50 {
            if !ctx.running()
                || !exchange(
                    &ctx,
                    "whoami",
                    &mut conn,
                    b"whoami\nping\n",
                    &[expected.as_bytes(), b"pong\n"],
                )
            {
                break;
            }
            pause(10);
        }
    }
}

/// Binary echoes of 1 byte to 64 KiB, each read back whole.
fn echo(ctx: Ctx, targets: Targets, mut rng: Rng) {
    while ctx.running() {
        let Some(mut stream) = ctx.connect(targets.echo, "echo") else {
            continue;
        };
        'conn: for _ in 0..200 {
            if !ctx.running() {
                break;
            }
            let size = rng.range(1, 64 * 1024) as usize;
            let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
            // Write from a second thread: a large echo does not fit the
            // socket buffers both ways while nobody reads.
            let writer = stream.try_clone().and_then(|mut w| {
                let data = data.clone();
                thread::Builder::new().spawn(move || w.write_all(&data))
            });
            let Ok(writer) = writer else {
                ctx.lost("echo", 1, &End::Reset);
                break;
            };
            let mut back = vec![0u8; size];
            let mut got = 0;
            while got < size {
                match stream.read(&mut back[got..]) {
                    Ok(0) => {
                        ctx.lost("echo", 1, &End::Eof);
                        let _ = writer.join();
                        break 'conn;
                    }
                    Ok(n) => got += n,
                    Err(error) => {
                        ctx.lost("echo", 1, &End::from(error));
                        let _ = writer.join();
                        break 'conn;
                    }
                }
            }
            let _ = writer.join();
            if back != data {
                ctx.wrong("echo", &back, &data);
                break;
            }
            Tally::one(&ctx.tally.answered);
            pause(20);
        }
    }
}

/// Connect, one command, close: `ping` then a close by the client, or
/// `quit` and the server's close; every fifth goes to `echo`.
fn churn(ctx: Ctx, targets: Targets, mut rng: Rng) {
    let mut round = 0u64;
    while ctx.running() {
        round += 1;
        if round.is_multiple_of(5) {
            let Some(stream) = ctx.connect(targets.echo, "churn") else {
                continue;
            };
            let mut conn = LineConn::new(stream);
            exchange(&ctx, "churn echo", &mut conn, b"hello\n", &[b"hello\n"]);
        } else {
            let Some(stream) = ctx.connect(targets.commands, "churn") else {
                continue;
            };
            let mut conn = LineConn::new(stream);
            if rng.range(0, 1) == 0 {
                exchange(&ctx, "churn", &mut conn, b"ping\n", &[b"pong\n"]);
            } else if exchange(&ctx, "churn quit", &mut conn, b"quit\n", &[b"bye\n"]) {
                match conn.rest() {
                    (rest, End::Eof) if rest.is_empty() => {}
                    (rest, end) => ctx.note(format!(
                        "churn quit: expected a clean close, got {end:?} after {} bytes",
                        rest.len()
                    )),
                }
            }
        }
        pause(30);
    }
}

/// `ping\n` one byte at a time (300 ms apart, the line whole within the
/// request timeout) three times on a connection; every fourth connection
/// instead stalls mid-line and must be closed by the server's request
/// timeout.
fn trickler(ctx: Ctx, targets: Targets, _: Rng) {
    let mut round = 0u64;
    while ctx.running() {
        round += 1;
        let Some(stream) = ctx.connect(targets.commands, "trickler") else {
            continue;
        };
        let mut conn = LineConn::new(stream);
        if round.is_multiple_of(4) {
            stall(&ctx, conn);
            continue;
        }
        'lines: for _ in 0..3 {
            for &byte in b"ping\n" {
                if !ctx.running() {
                    break 'lines;
                }
                if let Err(end) = conn.send(&[byte]) {
                    ctx.lost("trickler", 1, &end);
                    break 'lines;
                }
                pause(300);
            }
            match conn.line() {
                Ok(line) if line == b"pong\n" => Tally::one(&ctx.tally.answered),
                Ok(line) if line == BUSY => {
                    Tally::one(&ctx.tally.busy);
                    break;
                }
                Ok(line) => {
                    ctx.wrong("trickler", &line, b"pong\n");
                    break;
                }
                Err(end) => {
                    ctx.lost("trickler", 1, &end);
                    break;
                }
            }
        }
    }
}

/// Half a line, then nothing: the server must close within the request
/// timeout (plus slack for a loaded machine), with nothing to say.
fn stall(ctx: &Ctx, mut conn: LineConn) {
    let sent = Instant::now();
    if conn.send(b"pin").is_err() {
        return;
    }
    let (rest, end) = conn.rest();
    match end {
        End::Eof | End::Reset if rest.is_empty() || rest == BUSY => {
            Tally::one(&ctx.tally.stalls_closed);
        }
        End::Silent => {
            Tally::one(&ctx.tally.held_too_long);
            ctx.note(format!(
                "stalled line still open {:.0} s after its first byte (request timeout {} s)",
                sent.elapsed().as_secs_f64(),
                REQUEST_TIMEOUT.as_secs()
            ));
        }
        end => ctx.note(format!(
            "stalled line: unexpected end {end:?} after {:?}",
            String::from_utf8_lossy(&rest)
        )),
    }
}

/// Pipelines 96 lines of 4000 bytes (each answered with `unknown: ` and
/// the line) while reading the answers 4 KiB every 20 ms: the server's
/// writes wait on the client, its outbox or socket fills, and reading
/// must pause without losing a line.
fn slow_reader(ctx: Ctx, targets: Targets, _: Rng) {
    const LINES: usize = 96;
    while ctx.running() {
        let Some(stream) = ctx.connect(targets.commands, "slow reader") else {
            continue;
        };
        let lines: Vec<Vec<u8>> = (0..LINES)
            .map(|i| {
                let mut line = format!("{i:04}").into_bytes();
                line.resize(4000, b'a' + (i % 26) as u8);
                line
            })
            .collect();
        let requests: Vec<u8> = lines
            .iter()
            .flat_map(|line| line.iter().copied().chain([b'\n']))
            .collect();
        let writer = stream
            .try_clone()
            .and_then(|mut w| thread::Builder::new().spawn(move || w.write_all(&requests)));
        let Ok(writer) = writer else {
            continue;
        };
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut stream = stream;
        let expected_len: usize = lines.iter().map(|l| l.len() + 10).sum();
        let mut end = None;
        while got.len() < expected_len {
            match stream.read(&mut chunk) {
                Ok(0) => {
                    end = Some(End::Eof);
                    break;
                }
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(error) => {
                    end = Some(End::from(error));
                    break;
                }
            }
            pause(20);
        }
        let _ = writer.join();
        Tally::add(&ctx.tally.slow_bytes, got.len() as u64);
        if got.starts_with(BUSY) {
            Tally::one(&ctx.tally.busy);
            continue;
        }
        let answers: Vec<&[u8]> = got.split_inclusive(|&b| b == b'\n').collect();
        let mut complete = 0;
        for (answer, line) in answers.iter().zip(&lines) {
            if answer.len() != line.len() + 10
                || &answer[..9] != b"unknown: "
                || answer[9..answer.len() - 1] != line[..]
            {
                break;
            }
            complete += 1;
        }
        Tally::add(&ctx.tally.answered, complete as u64);
        if complete < LINES {
            match end {
                Some(end) => ctx.lost("slow reader", (LINES - complete) as u64, &end),
                None => ctx.wrong("slow reader", answers[complete], b"unknown: ..."),
            }
        }
    }
}

/// Requests, then a reset (SO_LINGER 0) before or while the answers come:
/// to `commands`, `echo` and `chat` in turn.
fn resetter(ctx: Ctx, targets: Targets, mut rng: Rng) {
    let mut round = 0u64;
    while ctx.running() {
        round += 1;
        let addr = match round % 3 {
            0 => targets.commands,
            1 => targets.echo,
            _ => targets.chat,
        };
        let Some(mut stream) = ctx.connect(addr, "reset") else {
            continue;
        };
        let n = rng.range(0, 200) as usize;
        let mut requests = b"ping\n".repeat(n);
        requests.extend_from_slice(b"half a li");
        let _ = stream.write_all(&requests);
        if rng.range(0, 1) == 0 {
            let mut some = [0u8; 64];
            let _ = stream.read(&mut some);
        }
        reset(stream);
        Tally::one(&ctx.tally.resets);
        pause(50);
    }
}

/// A line beyond `--max-line` to `commands` (after a `ping` that must be
/// answered) and to `chat`: `error: line too long` then a close, or just
/// a close.
fn oversize(ctx: Ctx, targets: Targets, mut rng: Rng) {
    let mut round = 0u64;
    while ctx.running() {
        round += 1;
        let chat = round.is_multiple_of(2);
        let addr = if chat { targets.chat } else { targets.commands };
        let Some(stream) = ctx.connect(addr, "oversize") else {
            continue;
        };
        let mut conn = LineConn::new(stream);
        if chat {
            // The greeting first: the line is then surely the member's.
            match conn.line() {
                Ok(line) if line.starts_with(b"* you are") => {}
                Ok(line) => {
                    ctx.wrong("oversize chat", &line, b"* you are ...");
                    continue;
                }
                Err(end) => {
                    ctx.lost("oversize chat greeting", 1, &end);
                    continue;
                }
            }
        } else if !exchange(&ctx, "oversize", &mut conn, b"ping\n", &[b"pong\n"]) {
            continue;
        }
        let size = MAX_LINE + 1 + rng.range(0, 4 * MAX_LINE as u64) as usize;
        let mut line = vec![b'x'; size];
        line.push(b'\n');
        let sent = Instant::now();
        // The server may close before it has read it all: a failed write
        // is one of the allowed ends.
        let _ = conn.stream.write_all(&line);
        let (rest, end) = conn.rest();
        // A chat member may first get lines others sent.
        let rest = if chat {
            rest.split_inclusive(|&b| b == b'\n')
                .filter(|l| l.starts_with(b"error"))
                .flatten()
                .copied()
                .collect()
        } else {
            rest
        };
        let said_ok = rest.is_empty() || rest == b"error: line too long\n";
        match end {
            End::Eof if said_ok => Tally::one(&ctx.tally.oversize_ok),
            End::Reset if said_ok => Tally::one(&ctx.tally.oversize_reset),
            End::Silent => {
                Tally::one(&ctx.tally.held_too_long);
                ctx.note(format!(
                    "oversized line: connection still open after {:.0} s",
                    sent.elapsed().as_secs_f64()
                ));
            }
            end => ctx.note(format!(
                "oversized line: got {:?}, then {end:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(60)])
            )),
        }
        pause(100);
    }
}

/// Headers that are not PROXY headers, to the server that requires one:
/// each must be closed without an answer.
fn proxy_garbage(ctx: Ctx, targets: Targets, mut rng: Rng) {
    let mut round = 0u64;
    while ctx.running() {
        round += 1;
        let Some(mut stream) = ctx.connect(targets.proxied, "proxy garbage") else {
            continue;
        };
        let garbage: Vec<u8> = match round % 6 {
            0 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            1 => b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n".to_vec(),
            2 => b"PROXY UNKNOWN-and-more-garbage-here\r\n".to_vec(),
            // The v2 signature, then a version/command byte and a length
            // that do not fit.
            3 => {
                let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
                v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
                v2.extend((0..40).map(|_| rng.next() as u8));
                v2
            }
            4 => (0..rng.range(1, 300)).map(|_| rng.next() as u8).collect(),
            _ => b"ping\n".to_vec(),
        };
        let sent = Instant::now();
        let _ = stream.write_all(&garbage);
        let mut conn = LineConn::new(stream);
        let (rest, end) = conn.rest();
        match end {
            End::Eof | End::Reset if rest.is_empty() => Tally::one(&ctx.tally.garbage_closed),
            End::Silent => {
                Tally::one(&ctx.tally.held_too_long);
                ctx.note(format!(
                    "PROXY garbage: still open after {:.0} s (header time {} s)",
                    sent.elapsed().as_secs_f64(),
                    PROXY_HEADER_TIME.as_secs()
                ));
            }
            end => ctx.note(format!(
                "PROXY garbage: got {:?} then {end:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(60)])
            )),
        }
        pause(100);
    }
}

/// Connections held open for 1 to 6 minutes each, asking `ping` every
/// 20 to 120 s (under the examples' 5-minute idle timeout), then closed
/// and replaced.
fn hold(ctx: Ctx, addr: SocketAddr, n: usize, mut rng: Rng) {
    struct Holder {
        conn: Option<LineConn>,
        next_ping: Instant,
        close_at: Instant,
    }
    let mut holders: Vec<Holder> = (0..n)
        .map(|_| Holder {
            conn: None,
            next_ping: Instant::now(),
            close_at: Instant::now(),
        })
        .collect();
    while ctx.running() {
        let now = Instant::now();
        for holder in &mut holders {
            if !ctx.running() {
                break;
            }
            if holder.conn.is_some() && now >= holder.close_at {
                holder.conn = None;
            }
            if holder.conn.is_none() {
                let Some(stream) = ctx.connect(addr, "holder") else {
                    break;
                };
                holder.conn = Some(LineConn::new(stream));
                holder.close_at = now + Duration::from_secs(rng.range(60, 360));
                holder.next_ping = now + Duration::from_secs(rng.range(1, 20));
            } else if now >= holder.next_ping {
                let conn = holder.conn.as_mut().expect("held");
                if !exchange(&ctx, "holder", conn, b"ping\n", &[b"pong\n"]) {
                    holder.conn = None;
                }
                holder.next_ping = now + Duration::from_secs(rng.range(20, 120));
            }
        }
        pause(100);
    }
}

/// Join the chat, read the greeting, say one line, leave (half the time
/// by a reset).
fn chat_churn(ctx: Ctx, targets: Targets, mut rng: Rng) {
    while ctx.running() {
        let Some(stream) = ctx.connect(targets.chat, "chat churn") else {
            continue;
        };
        let mut conn = LineConn::new(stream);
        match conn.line() {
            Ok(line) if line.starts_with(b"* you are") => Tally::one(&ctx.tally.answered),
            Ok(line) if line == BUSY => Tally::one(&ctx.tally.busy),
            Ok(line) => ctx.wrong("chat churn", &line, b"* you are ..."),
            Err(end) => ctx.lost("chat churn greeting", 1, &end),
        }
        let _ = conn.send(b"c passing through\n");
        if rng.range(0, 1) == 0 {
            reset(conn.stream);
        } else {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        pause(100);
    }
}

/// Stable chat members: each sends a numbered line now and then, and
/// reads everything; every line one sends must reach every other.
struct ChatRoom {
    readers: Vec<JoinHandle<()>>,
    sender: JoinHandle<()>,
    /// Lines sent by each member.
    sent: Arc<Vec<AtomicU64>>,
    /// `received[reader][sender]`: lines received, in order.
    received: Arc<Vec<Vec<AtomicU64>>>,
    stop: Arc<AtomicBool>,
    ctx: Ctx,
}

impl ChatRoom {
    fn start(ctx: Ctx, addr: SocketAddr, members: usize) -> io::Result<ChatRoom> {
        let sent: Arc<Vec<AtomicU64>> = Arc::new((0..members).map(|_| AtomicU64::new(0)).collect());
        let received: Arc<Vec<Vec<AtomicU64>>> = Arc::new(
            (0..members)
                .map(|_| (0..members).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        for me in 0..members {
            let stream = TcpStream::connect_timeout(&addr, PATIENCE)?;
            stream.set_nodelay(true)?;
            // Readers wake up now and then to see whether to stop.
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            stream.set_write_timeout(Some(PATIENCE))?;
            Tally::one(&ctx.tally.connections);
            let mut conn = LineConn::new(stream.try_clone()?);
            // In the room once greeted: lines sent before would miss us.
            match conn.line() {
                Ok(line) if line.starts_with(b"* you are") => {}
                other => {
                    return Err(io::Error::other(format!(
                        "chat member {me}: no greeting: {other:?}"
                    )))
                }
            }
            writers.push(stream);
            let (ctx, received, stop) = (ctx.clone(), Arc::clone(&received), Arc::clone(&stop));
            readers.push(
                thread::Builder::new()
                    .name(format!("soak-member-{me}"))
                    .spawn(move || read_chat(ctx, conn, &received[me], &stop))?,
            );
        }
        let sender = {
            let (ctx, sent) = (ctx.clone(), Arc::clone(&sent));
            thread::Builder::new()
                .name("soak-chat-sender".to_string())
                .spawn(move || {
                    let mut rng = Rng::new(16);
                    while ctx.running() {
                        let who = rng.range(0, writers.len() as u64 - 1) as usize;
                        let seq = sent[who].load(Ordering::Relaxed);
                        match writers[who].write_all(format!("s{who} {seq}\n").as_bytes()) {
                            Ok(()) => {
                                sent[who].fetch_add(1, Ordering::Relaxed);
                                Tally::one(&ctx.tally.chat_sent);
                            }
                            Err(error) => {
                                ctx.note(format!("chat member {who}: send failed: {error}"));
                                break;
                            }
                        }
                        pause(100);
                    }
                })?
        };
        Ok(ChatRoom {
            readers,
            sender,
            sent,
            received,
            stop,
            ctx,
        })
    }

    /// Waits (at most [`PATIENCE`]) for every line sent to reach every
    /// other member, then counts what is missing.
    fn finish(self) {
        let _ = self.sender.join();
        let members = self.sent.len();
        let missing = || -> u64 {
            let mut missing = 0;
            for reader in 0..members {
                for sender in (0..members).filter(|&s| s != reader) {
                    let sent = self.sent[sender].load(Ordering::Relaxed);
                    let got = self.received[reader][sender].load(Ordering::Relaxed);
                    missing += sent.saturating_sub(got);
                }
            }
            missing
        };
        let waited = Instant::now();
        while missing() > 0 && waited.elapsed() < PATIENCE {
            pause(50);
        }
        let missing = missing();
        self.stop.store(true, Ordering::Relaxed);
        for reader in self.readers {
            let _ = reader.join();
        }
        let delivered: u64 = self
            .received
            .iter()
            .flatten()
            .map(|r| r.load(Ordering::Relaxed))
            .sum();
        Tally::add(&self.ctx.tally.chat_delivered, delivered);
        Tally::add(&self.ctx.tally.chat_missing, missing);
        if missing > 0 {
            self.ctx
                .note(format!("chat: {missing} deliveries missing at the end"));
        }
    }
}

/// One stable member's reader: checks that each sender's numbered lines
/// arrive in order, none skipped.
fn read_chat(ctx: Ctx, mut conn: LineConn, received: &[AtomicU64], stop: &AtomicBool) {
    let mut next = vec![0u64; received.len()];
    while !stop.load(Ordering::Relaxed) {
        let line = match conn.line() {
            Ok(line) => line,
            Err(End::Silent) => continue,
            Err(end) => {
                ctx.note(format!("stable chat member closed by the server: {end:?}"));
                return;
            }
        };
        let text = String::from_utf8_lossy(&line);
        // `ADDR: s<who> <seq>`; announcements start with `* `, and the
        // churning members say `c ...`.
        let Some((_, said)) = text.trim_end().split_once(": s") else {
            continue;
        };
        let Some((who, seq)) = said.split_once(' ') else {
            continue;
        };
        let (Ok(who), Ok(seq)) = (who.parse::<usize>(), seq.parse::<u64>()) else {
            continue;
        };
        let (Some(count), Some(expected)) = (received.get(who), next.get_mut(who)) else {
            continue;
        };
        if seq != *expected {
            ctx.note(format!(
                "chat: line {seq} of member {who} arrived when {expected} was due"
            ));
            Tally::one(&ctx.tally.wrong);
        }
        *expected = seq + 1;
        count.fetch_add(1, Ordering::Relaxed);
    }
}
