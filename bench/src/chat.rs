//! The chat relay: the servers (std, tokio, frontdesk's turn mode; the
//! epoll one is in `epoll.rs`) and the load generator that measures them.
//!
//! Protocol: a client is greeted with `hi` once it is in the room; from
//! then on every line it sends goes, verbatim, to every other client.

use std::collections::HashMap;
use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use frontdesk::{LineError, Lines, Message, Next, Room, Turn, TurnHandler};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use crate::load::Mark;
use crate::servers::{announce, turns_builder, FdOptions, CHAT_GREETING, MAX_LINE};

type BoxResult<T> = Result<T, Box<dyn Error>>;

// ---------------------------------------------------------------------------
// std: a thread per client; the room holds a clone of every stream, and a
// sender writes to all of them under the room's lock.

pub fn run_std() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    announce(listener.local_addr()?)?;
    let room: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
    for (id, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        stream.set_nodelay(true)?;
        let room = Arc::clone(&room);
        let id = id as u64;
        thread::spawn(move || {
            let _ = std_member(id, stream, &room);
            room.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
    }
    Ok(())
}

fn std_member(id: u64, stream: TcpStream, room: &Mutex<HashMap<u64, TcpStream>>) -> io::Result<()> {
    {
        let mut room = room.lock().unwrap_or_else(PoisonError::into_inner);
        let mut writer = stream.try_clone()?;
        writer.write_all(CHAT_GREETING)?;
        room.insert(id, writer);
    }
    for line in BufReader::new(stream).lines() {
        let message = format!("{}\n", line?);
        let room = room.lock().unwrap_or_else(PoisonError::into_inner);
        for (&other, mut writer) in room.iter() {
            if other != id {
                let _ = writer.write_all(message.as_bytes());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// tokio: a task per client reading lines, and a writer task per client fed
// by an unbounded mpsc channel (the pattern of tokio's own chat example).

type TokioRoom = Arc<Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<Arc<[u8]>>>>>;

pub fn run_tokio() -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        announce(listener.local_addr()?)?;
        let room: TokioRoom = Arc::default();
        let mut next_id = 0u64;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            stream.set_nodelay(true)?;
            next_id += 1;
            let id = next_id;
            let room = Arc::clone(&room);
            tokio::spawn(async move {
                let _ = tokio_member(id, stream, &room).await;
                room.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        }
    })
}

async fn tokio_member(id: u64, stream: tokio::net::TcpStream, room: &TokioRoom) -> io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (reader, mut writer) = stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<[u8]>>();
    let _ = tx.send(Arc::from(CHAT_GREETING));
    room.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, tx);
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if writer.write_all(&message).await.is_err() {
                break;
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(reader).lines();
    while let Some(line) = lines.next_line().await? {
        let message: Arc<[u8]> = Arc::from(format!("{line}\n").into_bytes());
        let room = room.lock().unwrap_or_else(PoisonError::into_inner);
        for (&other, tx) in room.iter() {
            if other != id {
                let _ = tx.send(Arc::clone(&message));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// frontdesk, turn mode: `examples/chat.rs` without the names and the
// join/leave announcements: a `Room` of `Peer`s, one shared `Message` per
// line, `Room::broadcast_except` into each other member's outbox.

pub fn run_turns(options: FdOptions) -> Result<(), Box<dyn Error>> {
    let server = turns_builder(options).bind("127.0.0.1:0")?;
    let server = server.spawn_turns(TurnChat { room: Room::new() })?;
    announce(server.local_addr())?;
    server.join()?;
    Ok(())
}

struct TurnChat {
    room: Room,
}

impl TurnHandler for TurnChat {
    type State = Lines;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Lines> {
        self.room.join(turn.peer());
        turn.send(CHAT_GREETING)?;
        Ok(Lines::new(turn, MAX_LINE))
    }

    fn ready(&self, lines: &mut Lines, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match lines.next_line() {
                Ok(Some(line)) => {
                    let message = Message::from([line, b"\n"].concat());
                    self.room.broadcast_except(turn.id(), message);
                }
                Ok(None) => return Ok(Next::Park),
                Err(LineError::TooLong { .. }) => return Ok(Next::Close),
                Err(LineError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn close(&self, _: Lines, turn: &mut Turn<'_>, _: frontdesk::CloseReason) {
        self.room.leave(turn.id());
    }
}

// ---------------------------------------------------------------------------
// The load generator.

/// One chat run's shape.
#[derive(Debug, Clone, Copy)]
pub struct ChatLoad {
    pub clients: usize,
    pub senders: usize,
    /// Lines per second per sender.
    pub rate: u32,
    /// How long the senders send.
    pub duration: Duration,
}

/// Bytes per line, `\n` included.
pub const LINE_LEN: usize = 60;
/// After the last send, how long the generator waits for the last
/// deliveries when none arrives.
const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// And at most, in all.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// How long the hello burst may take before the run fails: generous, as
/// 1,000 clients make 999,000 deliveries, a send each in every relay,
/// which took 5–10 s per server on the project's busy 2-core machine;
/// this tells a stuck relay from a slow one.
const BURST_MAX: Duration = Duration::from_secs(60);
/// In the hello burst, clients write their hellos this many at a time,
/// and read whatever has arrived between two such batches.
const BURST_WRITE_BATCH: usize = 64;
/// A hello is `hello NNNNN ` (the sender's index), `x`s, then `\n`.
const HELLO: &[u8] = b"hello ";
const HELLO_DIGITS: usize = 5;

/// What the generator saw.
#[derive(Debug, Default)]
pub struct ChatWindow {
    /// Lines the senders wrote.
    pub sent: u64,
    /// Lines the receivers got (each line counts once per receiver).
    pub received: u64,
    /// `sent × (clients − 1)`.
    pub expected: u64,
    /// From a line's write to its read, per delivery, in ns.
    pub latencies: Vec<u32>,
    /// From the first send to the end of the drain.
    pub elapsed: Duration,
    /// Time to connect every client and get its greeting.
    pub join: Duration,
    /// The hello burst, after the drain: from the first hello written to
    /// the moment every client had heard the hellos of all the others.
    pub burst: Duration,
    /// Hellos heard in the burst, each checked: `clients × (clients − 1)`.
    pub hellos: u64,
    /// Lines of the senders that arrived during the burst, after the drain
    /// had given up on them (checked, not counted as received).
    pub late: u64,
}

struct Client {
    stream: MioStream,
    partial: Vec<u8>,
}

/// Connects `load.clients` clients, waits until each is in the room, then
/// has the first `load.senders` of them send `load.rate` lines a second
/// for `load.duration`, each line stamped with its send time, and reads
/// every client until every line has arrived everywhere (or nothing
/// arrives for `DRAIN_QUIET`). `mark` brackets the sending and the drain
/// (`Start`, `End`). Then the hello burst (`hello_burst`), bracketed by
/// `BurstStart` and `BurstEnd`: it comes last so that it changes none of
/// the figures before it (the server's buffers, its peak memory).
pub fn chat(addr: SocketAddr, load: ChatLoad, mark: &mut dyn FnMut(Mark)) -> BoxResult<ChatWindow> {
    let base = Instant::now();
    let mut poll = Poll::new()?;
    let mut clients = Vec::with_capacity(load.clients);
    // In batches no larger than std's listen backlog, each greeted before
    // the next, so no SYN is dropped.
    const BATCH: usize = 100;
    while clients.len() < load.clients {
        let first = clients.len();
        let mut batch = Vec::new();
        for _ in first..(first + BATCH).min(load.clients) {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            batch.push(stream);
        }
        for mut stream in batch {
            let mut greeting = [0u8; 3];
            stream.read_exact(&mut greeting)?;
            if greeting != CHAT_GREETING {
                return Err(format!("chat: unexpected greeting {greeting:?}").into());
            }
            stream.set_nonblocking(true)?;
            let mut stream = MioStream::from_std(stream);
            let token = Token(clients.len());
            poll.registry()
                .register(&mut stream, token, Interest::READABLE)?;
            clients.push(Client {
                stream,
                partial: Vec::new(),
            });
        }
    }
    let join = base.elapsed();
    let per_sender = u64::from(load.rate) * load.duration.as_millis() as u64 / 1000;
    let interval = Duration::from_secs(1) / load.rate;
    let stagger = interval / load.senders as u32;
    let mut window = ChatWindow {
        join,
        latencies: Vec::with_capacity(
            (per_sender as usize * load.senders * (load.clients - 1)).min(1 << 24),
        ),
        ..ChatWindow::default()
    };
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut line = [b'x'; LINE_LEN];
    line[LINE_LEN - 1] = b'\n';
    mark(Mark::Start);
    let start = Instant::now();
    // Sender s sends its k-th line at start + k·interval + s·stagger.
    let mut next_seq = vec![0u64; load.senders];
    let due = |s: usize, k: u64| start + interval * k as u32 + stagger * s as u32;
    let mut last_progress = Instant::now();
    let sending_ends = start + interval * per_sender as u32;
    loop {
        let now = Instant::now();
        // Every send that is due.
        for s in 0..load.senders {
            while next_seq[s] < per_sender && due(s, next_seq[s]) <= now {
                let stamp = base.elapsed().as_nanos() as u64;
                let text = format!("{s:04} {:08} {stamp:020} ", next_seq[s]);
                line[..text.len()].copy_from_slice(text.as_bytes());
                match clients[s].stream.write(&line) {
                    Ok(LINE_LEN) => {}
                    Ok(_) => return Err("chat: a sender's line was written in part".into()),
                    Err(e) => return Err(format!("chat: sender {s}: {e}").into()),
                }
                next_seq[s] += 1;
                window.sent += 1;
            }
        }
        let all_sent = next_seq.iter().all(|&k| k == per_sender);
        window.expected = window.sent * (load.clients as u64 - 1);
        if all_sent
            && (window.received >= window.expected
                || now.duration_since(last_progress) > DRAIN_QUIET
                || now > sending_ends + DRAIN_MAX)
        {
            break;
        }
        let next_due = (0..load.senders)
            .filter(|&s| next_seq[s] < per_sender)
            .map(|s| due(s, next_seq[s]))
            .min();
        let wait = match next_due {
            Some(at) => at.saturating_duration_since(now),
            None => Duration::from_millis(50),
        };
        poll.poll(&mut events, Some(wait.min(Duration::from_millis(50))))?;
        for event in events.iter() {
            let index = event.token().0;
            let got = read_lines(
                &mut clients[index],
                index,
                base,
                &mut scratch,
                &mut window,
                None,
            )?;
            if got > 0 {
                last_progress = Instant::now();
            }
        }
    }
    window.elapsed = start.elapsed();
    mark(Mark::End);
    hello_burst(
        &mut poll,
        &mut clients,
        base,
        &mut scratch,
        &mut window,
        mark,
    )?;
    Ok(window)
}

/// The hellos of the burst: who has heard whom.
struct Hellos {
    clients: usize,
    /// Every client's hello, as it must arrive.
    lines: Vec<[u8; LINE_LEN]>,
    /// `heard[r * clients + s]`: client `r` has heard client `s`'s hello.
    heard: Vec<bool>,
    /// Hellos not heard yet, in all.
    missing: u64,
    /// When the last one was heard.
    done: Option<Instant>,
}

impl Hellos {
    fn new(clients: usize) -> Hellos {
        let total = clients * clients.saturating_sub(1);
        Hellos {
            clients,
            lines: (0..clients).map(hello_line).collect(),
            heard: vec![false; clients * clients],
            missing: total as u64,
            done: (total == 0).then(Instant::now),
        }
    }

    /// Client `receiver` got `line`, which starts with `HELLO`: it must
    /// be, byte for byte, the hello of another client it has not heard.
    fn hear(&mut self, receiver: usize, line: &[u8]) -> BoxResult<()> {
        let digits = &line[HELLO.len()..HELLO.len() + HELLO_DIGITS];
        let sender = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&s| s < self.clients && line == self.lines[s]);
        let Some(sender) = sender else {
            return Err(format!(
                "chat: hello burst: client {receiver} got a garbled hello {:?}",
                String::from_utf8_lossy(line)
            )
            .into());
        };
        if sender == receiver {
            return Err(format!("chat: hello burst: client {receiver} got its own hello").into());
        }
        let heard = &mut self.heard[receiver * self.clients + sender];
        if *heard {
            return Err(format!(
                "chat: hello burst: client {receiver} got client {sender}'s hello twice"
            )
            .into());
        }
        *heard = true;
        self.missing -= 1;
        if self.missing == 0 {
            self.done = Some(Instant::now());
        }
        Ok(())
    }

    /// What is missing, for the timeout's error.
    fn describe_missing(&self) -> String {
        let n = self.clients;
        let mut lacking = (0..n).filter_map(|r| {
            let lacks = (0..n)
                .filter(|&s| s != r && !self.heard[r * n + s])
                .collect::<Vec<_>>();
            (!lacks.is_empty()).then_some((r, lacks))
        });
        let first = lacking.next();
        let count = usize::from(first.is_some()) + lacking.count();
        match first {
            Some((r, lacks)) => format!(
                "{} of {} hellos not heard, by {count} of {n} clients (client {r} lacks {}, the first from client {})",
                self.missing,
                n * (n - 1),
                lacks.len(),
                lacks[0]
            ),
            None => "every hello heard".to_string(),
        }
    }
}

/// Client `sender`'s hello: as long as the senders' lines, so the two
/// can be told apart only by their first bytes.
fn hello_line(sender: usize) -> [u8; LINE_LEN] {
    let mut line = [b'x'; LINE_LEN];
    let text = format!("hello {sender:0HELLO_DIGITS$} ");
    line[..text.len()].copy_from_slice(text.as_bytes());
    line[LINE_LEN - 1] = b'\n';
    line
}

/// Issue 14's "1,000 clients joining: ms until all heard every hello":
/// every client writes its hello at once (without blocking, `BURST_WRITE_BATCH`
/// at a time, reading whatever has arrived between two batches, so that
/// no server is held up by a client that does not read), then every
/// client is read until each has heard the hellos of all the others.
/// `window.burst` is the time from the first hello written to the last
/// heard; a hello missing after `BURST_MAX`, garbled, repeated or sent
/// back to its sender fails the run.
fn hello_burst(
    poll: &mut Poll,
    clients: &mut [Client],
    base: Instant,
    scratch: &mut [u8],
    window: &mut ChatWindow,
    mark: &mut dyn FnMut(Mark),
) -> BoxResult<()> {
    let n = clients.len();
    if n >= 10usize.pow(HELLO_DIGITS as u32) {
        return Err(format!("chat: a hello burst numbers at most 99,999 clients, not {n}").into());
    }
    let mut hellos = Hellos::new(n);
    // Bytes of its hello each client has written.
    let mut written = vec![0usize; n];
    let mut unwritten = n;
    let mut events = Events::with_capacity(1024);
    mark(Mark::BurstStart);
    let started = Instant::now();
    let deadline = started + BURST_MAX;
    let mut next = 0;
    while unwritten > 0 || hellos.missing > 0 {
        let now = Instant::now();
        if now > deadline {
            return Err(format!(
                "chat: hello burst: after {} s, {}; {unwritten} clients had not written all of their hello",
                BURST_MAX.as_secs(),
                hellos.describe_missing()
            )
            .into());
        }
        // The next batch of hellos, then a look (without waiting) at what
        // has arrived; once all are written, wait for the rest.
        let batch_end = (next + BURST_WRITE_BATCH).min(n);
        for i in next..batch_end {
            if write_hello(&mut clients[i], i, &hellos.lines[i], &mut written[i])? {
                unwritten -= 1;
            } else {
                // The socket took part of it: finish when it has room.
                poll.registry().reregister(
                    &mut clients[i].stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
            }
        }
        next = batch_end;
        let wait = if next < n {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        poll.poll(&mut events, Some(wait))?;
        for event in events.iter() {
            let i = event.token().0;
            if i < next
                && written[i] < LINE_LEN
                && event.is_writable()
                && write_hello(&mut clients[i], i, &hellos.lines[i], &mut written[i])?
            {
                unwritten -= 1;
                poll.registry()
                    .reregister(&mut clients[i].stream, Token(i), Interest::READABLE)?;
            }
            read_lines(&mut clients[i], i, base, scratch, window, Some(&mut hellos))?;
        }
    }
    let done = hellos.done.unwrap_or(started);
    window.burst = done.saturating_duration_since(started);
    window.hellos = (n * n.saturating_sub(1)) as u64;
    mark(Mark::BurstEnd);
    Ok(())
}

/// Writes what client `index` has not written of its hello `line`;
/// whether it is all written now.
fn write_hello(
    client: &mut Client,
    index: usize,
    line: &[u8; LINE_LEN],
    written: &mut usize,
) -> BoxResult<bool> {
    while *written < LINE_LEN {
        match client.stream.write(&line[*written..]) {
            Ok(0) => {
                return Err(format!("chat: client {index}'s socket took none of its hello").into())
            }
            Ok(k) => *written += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("chat: hello burst: client {index}: {e}").into()),
        }
    }
    Ok(true)
}

/// Reads what client `index` has, and records every complete line: a
/// sender's line in `window`, a hello in `hellos` (during the burst; a
/// hello before it is an error, and a sender's line during it is late).
fn read_lines(
    client: &mut Client,
    index: usize,
    base: Instant,
    scratch: &mut [u8],
    window: &mut ChatWindow,
    mut hellos: Option<&mut Hellos>,
) -> BoxResult<u64> {
    let mut got = 0;
    loop {
        let n = match client.stream.read(scratch) {
            Ok(0) => return Err(format!("chat: the server closed client {index}").into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let now = base.elapsed().as_nanos() as u64;
        client.partial.extend_from_slice(&scratch[..n]);
        let complete = client.partial.len() / LINE_LEN * LINE_LEN;
        for line in client.partial[..complete].chunks_exact(LINE_LEN) {
            if line.starts_with(HELLO) {
                let Some(hellos) = hellos.as_deref_mut() else {
                    return Err(format!("chat: client {index} got a hello before the burst").into());
                };
                hellos.hear(index, line)?;
                got += 1;
                continue;
            }
            let field = |range: std::ops::Range<usize>| -> Option<u64> {
                std::str::from_utf8(&line[range]).ok()?.parse().ok()
            };
            let (Some(sender), Some(stamp), b'\n') = (field(0..4), field(14..34), line[59]) else {
                return Err(format!(
                    "chat: client {index} got a garbled line {:?}",
                    String::from_utf8_lossy(line)
                )
                .into());
            };
            if sender as usize == index {
                return Err(format!("chat: client {index} got its own line back").into());
            }
            got += 1;
            if hellos.is_some() {
                window.late += 1;
                continue;
            }
            window.received += 1;
            let ns = now.saturating_sub(stamp);
            window.latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
        }
        client.partial.drain(..complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hello_is_heard_once_by_every_other_client() {
        let mut hellos = Hellos::new(3);
        assert_eq!(hellos.missing, 6);
        for receiver in 0..3 {
            for sender in (0..3).filter(|&s| s != receiver) {
                assert!(hellos.done.is_none());
                hellos.hear(receiver, &hello_line(sender)).unwrap();
            }
        }
        assert_eq!(hellos.missing, 0);
        assert!(hellos.done.is_some());
        assert_eq!(hellos.describe_missing(), "every hello heard");
    }

    #[test]
    fn a_wrong_hello_is_an_error() {
        let mut hellos = Hellos::new(3);
        let error = |hellos: &mut Hellos, receiver, line: &[u8]| {
            hellos.hear(receiver, line).unwrap_err().to_string()
        };
        assert!(error(&mut hellos, 1, &hello_line(1)).contains("its own hello"));
        // A sender that is not in the room.
        assert!(error(&mut hellos, 1, &hello_line(3)).contains("garbled"));
        let mut bent = hello_line(2);
        bent[30] = b'y';
        assert!(error(&mut hellos, 1, &bent).contains("garbled"));
        let mut bent = hello_line(2);
        bent[6] = b'-';
        assert!(error(&mut hellos, 1, &bent).contains("garbled"));
        hellos.hear(1, &hello_line(2)).unwrap();
        assert!(error(&mut hellos, 1, &hello_line(2)).contains("twice"));
        assert_eq!(hellos.missing, 5);
        assert_eq!(
            hellos.describe_missing(),
            "5 of 6 hellos not heard, by 3 of 3 clients (client 0 lacks 2, the first from client 1)"
        );
    }

    #[test]
    fn a_hello_is_as_long_as_a_senders_line() {
        let line = hello_line(99_999);
        assert_eq!(line.len(), LINE_LEN);
        assert!(line.starts_with(b"hello 99999 x"));
        assert_eq!(line[LINE_LEN - 1], b'\n');
        // Only the hello's first bytes tell it from a sender's line.
        assert!(!line[..4].iter().all(u8::is_ascii_digit));
    }

    #[test]
    fn one_client_has_no_hello_to_hear() {
        let hellos = Hellos::new(1);
        assert_eq!(hellos.missing, 0);
        assert!(hellos.done.is_some());
    }
}
