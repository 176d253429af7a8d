//! The load generator: one thread running an event loop (mio) over all its
//! connections, so that it needs far less CPU than the servers it drives
//! and adds no thread switches of its own. Every byte received is checked.

use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

/// A run fails when no exchange completes for this long.
const STALL: Duration = Duration::from_secs(5);
/// How long a blocking client (idle scenario) waits for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many latencies are kept per window (16 MiB).
const MAX_SAMPLES: usize = 4 << 20;
/// Churn gives up when more than this many connections in a row fail.
const MAX_CONSECUTIVE_ERRORS: u64 = 1000;

pub const PING: &[u8] = b"ping\n";
pub const PONG: &[u8] = b"pong\n";
pub const BUSY: &[u8] = b"error: server busy\n";
const CHURN_REQUEST: &[u8] = b"ping\nquit\n";
const CHURN_REPLY: &[u8] = b"pong\nbye\n";

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// What one exchange of a ping-pong run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// `size` bytes to the echo server, the same bytes back.
    Echo { size: usize },
    /// `ping\n` to the commands server, `pong\n` back.
    Line,
}

/// When the measured window starts and ends.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
    /// How long the chat senders send, and the tricklers trickle.
    pub chat: Duration,
}

/// Called at the start and the end of the measured window, so the driver
/// can read the server's counters at the same moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Start,
    End,
    /// The chat's hello burst, after `End`: its first hello is written
    /// right after this mark, and this one follows its last hello heard.
    BurstStart,
    BurstEnd,
}

/// What the load generator saw in the measured window.
#[derive(Debug, Default)]
pub struct Window {
    /// Exchanges (or connections, for churn) completed in the window.
    pub completed: u64,
    pub elapsed: Duration,
    /// Latency of each completed exchange, in nanoseconds.
    pub latencies: Vec<u32>,
    /// Connections that failed (churn only; a ping-pong error ends the run).
    pub errors: u64,
    /// Connections that never got a reply, in the warm-up or the window
    /// (ping-pong: more clients than the server serves at once).
    pub starved: usize,
}

/// The bytes of every message: message `k` of connection `c` is
/// `pattern[o..o + size]` with `o = (7k + c) mod 251`, so consecutive
/// messages differ and a reply from the wrong message or connection is
/// caught, without building a buffer per message.
struct Payload {
    exchange: Exchange,
    pattern: Vec<u8>,
}

const PATTERN_OFFSETS: usize = 251;

impl Payload {
    fn new(exchange: Exchange) -> Payload {
        let len = match exchange {
            Exchange::Echo { size } => size + PATTERN_OFFSETS,
            Exchange::Line => 0,
        };
        let pattern = (0..len)
            .map(|i| (i.wrapping_mul(131) ^ (i >> 8)) as u8)
            .collect();
        Payload { exchange, pattern }
    }

    fn request(&self, offset: usize) -> &[u8] {
        match self.exchange {
            Exchange::Echo { size } => &self.pattern[offset..offset + size],
            Exchange::Line => PING,
        }
    }

    fn reply(&self, offset: usize) -> &[u8] {
        match self.exchange {
            Exchange::Echo { .. } => self.request(offset),
            Exchange::Line => PONG,
        }
    }
}

struct Peer {
    stream: MioStream,
    index: usize,
    seq: usize,
    offset: usize,
    sent: usize,
    received: usize,
    started: Instant,
}

impl Peer {
    fn next_message(&mut self, now: Instant) {
        self.seq += 1;
        self.offset = (self.seq * 7 + self.index) % PATTERN_OFFSETS;
        self.sent = 0;
        self.received = 0;
        self.started = now;
    }

    /// Writes what is left of the current request, until done or the
    /// socket is full.
    fn flush(&mut self, payload: &Payload) -> io::Result<()> {
        let request = payload.request(self.offset);
        while self.sent < request.len() {
            match self.stream.write(&request[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Keeps latencies and counts completions inside the window.
struct Recorder {
    in_window: bool,
    completed: u64,
    latencies: Vec<u32>,
    last_progress: Instant,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            in_window: false,
            completed: 0,
            latencies: Vec::with_capacity(1 << 16),
            last_progress: Instant::now(),
        }
    }

    fn done(&mut self, started: Instant, now: Instant) {
        self.last_progress = now;
        if self.in_window {
            self.completed += 1;
            if self.latencies.len() < MAX_SAMPLES {
                let ns = now.duration_since(started).as_nanos();
                self.latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
            }
        }
    }
}

/// Drives the clock of a run: warm-up, then the window, with `mark` called
/// at its edges. `step` runs one poll round and returns an error to stop.
fn drive(
    timing: Timing,
    recorder: &mut Recorder,
    mark: &mut dyn FnMut(Mark),
    mut step: impl FnMut(&mut Recorder, Duration) -> BoxResult<()>,
) -> BoxResult<Duration> {
    let start = Instant::now();
    let window_at = start + timing.warmup;
    let end_at = window_at + timing.measure;
    let mut window_start = start;
    loop {
        let now = Instant::now();
        if !recorder.in_window && now >= window_at {
            mark(Mark::Start);
            window_start = Instant::now();
            recorder.in_window = true;
        }
        if now >= end_at {
            break;
        }
        if now.duration_since(recorder.last_progress) > STALL {
            return Err(format!("no reply for {STALL:?}").into());
        }
        let until = if recorder.in_window {
            end_at
        } else {
            window_at
        };
        step(recorder, (until - now).min(Duration::from_millis(50)))?;
    }
    let elapsed = window_start.elapsed();
    mark(Mark::End);
    Ok(elapsed)
}

/// `conns` connections each send a request and wait for the whole reply,
/// then send the next, until the window ends.
pub fn ping_pong(
    addr: SocketAddr,
    conns: usize,
    exchange: Exchange,
    timing: Timing,
    mark: &mut dyn FnMut(Mark),
) -> BoxResult<Window> {
    let payload = Payload::new(exchange);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut peers = Vec::with_capacity(conns);
    for index in 0..conns {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut stream = MioStream::from_std(stream);
        poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        peers.push(Peer {
            stream,
            index,
            seq: 0,
            offset: 0,
            sent: 0,
            received: 0,
            started: Instant::now(),
        });
    }
    let mut recorder = Recorder::new();
    let now = Instant::now();
    for peer in &mut peers {
        peer.next_message(now);
        peer.flush(&payload)?;
    }
    let mut scratch = vec![0u8; 64 * 1024];
    let elapsed = drive(timing, &mut recorder, mark, |recorder, wait| {
        poll.poll(&mut events, Some(wait))?;
        for event in events.iter() {
            let peer = &mut peers[event.token().0];
            if event.is_writable() {
                peer.flush(&payload)?;
            }
            if event.is_readable() {
                read_replies(peer, &payload, &mut scratch, recorder)?;
            }
        }
        Ok(())
    })?;
    Ok(Window {
        completed: recorder.completed,
        elapsed,
        latencies: recorder.latencies,
        errors: 0,
        starved: peers.iter().filter(|peer| peer.seq == 1).count(),
    })
}

/// Reads until the socket is empty, checking every byte against the reply
/// expected; each completed reply starts the next request.
fn read_replies(
    peer: &mut Peer,
    payload: &Payload,
    scratch: &mut [u8],
    recorder: &mut Recorder,
) -> BoxResult<()> {
    loop {
        let n = match peer.stream.read(scratch) {
            Ok(0) => return Err("the server closed a connection".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let mut data = &scratch[..n];
        while !data.is_empty() {
            let expected = payload.reply(peer.offset);
            let take = data.len().min(expected.len() - peer.received);
            if take == 0 || data[..take] != expected[peer.received..peer.received + take] {
                return Err(format!(
                    "wrong reply on connection {}: message {} byte {}",
                    peer.index, peer.seq, peer.received
                )
                .into());
            }
            peer.received += take;
            data = &data[take..];
            if peer.received == expected.len() {
                let now = Instant::now();
                recorder.done(peer.started, now);
                peer.next_message(now);
                peer.flush(payload)?;
            }
        }
    }
}

/// A churn client's connection: `ping\nquit\n`, expect `pong\nbye\n` and
/// the server's close.
struct Churner {
    stream: MioStream,
    connected: bool,
    sent: usize,
    received: usize,
    started: Instant,
}

impl Churner {
    fn connect(addr: SocketAddr, poll: &Poll, token: Token) -> io::Result<Churner> {
        let mut stream = MioStream::connect(addr)?;
        poll.registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Churner {
            stream,
            connected: false,
            sent: 0,
            received: 0,
            started: Instant::now(),
        })
    }
}

/// What became of a churn connection after an event.
enum Progress {
    Pending,
    Done,
}

/// `conns` clients each connect, send one request, read the reply and the
/// close, and start over, until the window ends. The server closes first
/// (`quit`), so no client port is left in TIME_WAIT.
pub fn churn(
    addr: SocketAddr,
    conns: usize,
    timing: Timing,
    mark: &mut dyn FnMut(Mark),
) -> BoxResult<Window> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut slots = Vec::with_capacity(conns);
    for index in 0..conns {
        slots.push(Churner::connect(addr, &poll, Token(index))?);
    }
    let mut recorder = Recorder::new();
    let mut errors = 0u64;
    let mut consecutive_errors = 0u64;
    let mut scratch = [0u8; 64];
    let elapsed = drive(timing, &mut recorder, mark, |recorder, wait| {
        poll.poll(&mut events, Some(wait))?;
        for event in events.iter() {
            let index = event.token().0;
            let slot = &mut slots[index];
            match churn_step(slot, event.is_writable(), &mut scratch) {
                Ok(Progress::Pending) => continue,
                Ok(Progress::Done) => {
                    consecutive_errors = 0;
                    recorder.done(slot.started, Instant::now());
                }
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    return Err(error.into());
                }
                Err(_) => {
                    errors += 1;
                    consecutive_errors += 1;
                    if consecutive_errors > MAX_CONSECUTIVE_ERRORS {
                        return Err("churn: every connection fails".into());
                    }
                }
            }
            *slot = Churner::connect(addr, &poll, Token(index))?;
        }
        Ok(())
    })?;
    Ok(Window {
        completed: recorder.completed,
        elapsed,
        latencies: recorder.latencies,
        errors,
        starved: 0,
    })
}

fn churn_step(slot: &mut Churner, writable: bool, scratch: &mut [u8]) -> io::Result<Progress> {
    if !slot.connected {
        if !writable {
            return Ok(Progress::Pending);
        }
        if let Some(error) = slot.stream.take_error()? {
            return Err(error);
        }
        match slot.stream.peer_addr() {
            Ok(_) => slot.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(Progress::Pending),
            Err(e) => return Err(e),
        }
    }
    while slot.sent < CHURN_REQUEST.len() {
        match slot.stream.write(&CHURN_REQUEST[slot.sent..]) {
            Ok(n) => slot.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Pending),
            Err(e) => return Err(e),
        }
    }
    loop {
        match slot.stream.read(scratch) {
            Ok(0) if slot.received == CHURN_REPLY.len() => return Ok(Progress::Done),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                let end = slot.received + n;
                if end > CHURN_REPLY.len() || scratch[..n] != CHURN_REPLY[slot.received..end] {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "churn: wrong reply",
                    ));
                }
                slot.received = end;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Pending),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Connections held open by the idle scenario.
#[derive(Debug)]
pub struct Held {
    pub streams: Vec<TcpStream>,
    /// Connections that were answered `pong` and so are being served.
    pub served: usize,
    /// Connections that got the busy reply (and were closed by the server).
    pub busy: usize,
}

/// Opens `n` connections that each do one `ping` exchange and then stay
/// silent. Opened in batches no larger than std's listen backlog, each
/// batch answered before the next, so no SYN is ever dropped.
pub fn hold_idle(addr: SocketAddr, n: usize, deadline: Instant) -> BoxResult<Held> {
    const BATCH: usize = 100;
    let mut held = Held {
        streams: Vec::with_capacity(n),
        served: 0,
        busy: 0,
    };
    while held.streams.len() < n {
        if Instant::now() > deadline {
            return Err(format!(
                "idle: only {} connections opened in time",
                held.streams.len()
            )
            .into());
        }
        let first = held.streams.len();
        for _ in first..(first + BATCH).min(n) {
            let mut stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
            stream.write_all(PING)?;
            held.streams.push(stream);
        }
        for stream in &mut held.streams[first..] {
            match read_line(stream)?.as_slice() {
                PONG => held.served += 1,
                BUSY => held.busy += 1,
                other => {
                    return Err(format!(
                        "idle: unexpected reply {:?}",
                        String::from_utf8_lossy(other)
                    )
                    .into())
                }
            }
        }
    }
    Ok(held)
}

/// A fresh client: connect, `ping`, wait for the reply. Returns how long
/// that took and whether the reply was `pong` (rather than the busy reply).
pub fn probe(addr: SocketAddr) -> BoxResult<(Duration, bool)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.write_all(PING)?;
    let reply = read_line(&mut stream)?;
    let took = started.elapsed();
    match reply.as_slice() {
        PONG => Ok((took, true)),
        BUSY => Ok((took, false)),
        other => Err(format!(
            "probe: unexpected reply {:?}",
            String::from_utf8_lossy(other)
        )
        .into()),
    }
}

/// Reads one `\n`-terminated reply of at most 64 bytes.
fn read_line(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(32);
    let mut byte = [0u8; 64];
    while line.last() != Some(&b'\n') {
        let n = stream.read(&mut byte)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        line.extend_from_slice(&byte[..n]);
        if line.len() > 64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply too long"));
        }
    }
    Ok(line)
}

/// Clients that each send one byte of a line they never finish, every
/// `every`, on a thread of their own, for a bounded time.
pub struct Trickle {
    thread: std::thread::JoinHandle<io::Result<(usize, u64)>>,
}

impl Trickle {
    /// Connects `n` clients (in batches no larger than std's listen
    /// backlog), then trickles until `duration` has passed.
    pub fn start(
        addr: SocketAddr,
        n: usize,
        every: Duration,
        duration: Duration,
    ) -> BoxResult<Trickle> {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
            stream.set_nodelay(true)?;
            streams.push(stream);
            if streams.len() % 100 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let thread = std::thread::spawn(move || -> io::Result<(usize, u64)> {
            let start = Instant::now();
            let end = start + duration;
            let step = every / n.max(1) as u32;
            let mut bytes = 0u64;
            let mut open = vec![true; n];
            'rounds: for round in 0u32.. {
                for (i, stream) in streams.iter_mut().enumerate() {
                    let at = start + every * round + step * i as u32;
                    if at >= end {
                        break 'rounds;
                    }
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if open[i] {
                        match stream.write(b"x") {
                            Ok(1) => bytes += 1,
                            _ => open[i] = false,
                        }
                    }
                }
            }
            // Still held: the server has neither closed nor answered it.
            let mut held = 0;
            let mut buf = [0u8; 64];
            for (i, stream) in streams.iter_mut().enumerate() {
                stream.set_nonblocking(true)?;
                match stream.read(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && open[i] => held += 1,
                    _ => {}
                }
            }
            Ok((held, bytes))
        });
        Ok(Trickle { thread })
    }

    /// Waits for the trickling to end: tricklers still held, bytes sent.
    pub fn finish(self) -> BoxResult<(usize, u64)> {
        Ok(self
            .thread
            .join()
            .map_err(|_| "the trickle thread panicked")??)
    }
}
