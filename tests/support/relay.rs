//! A relay that injects faults between a test's client and the server
//! under test (issue 16, item 2).
//!
//! The relay listens on `127.0.0.1:0`; for each client that connects it
//! opens a connection of its own to the server and copies bytes both ways,
//! each way on a thread (a *pump*). A [`Plan`] says what goes wrong on the
//! way, separately for each [`Dir`]ection:
//!
//! - **segments**: every write is cut into segments of at most N bytes
//!   (1 for the worst case), each written on its own to a `TCP_NODELAY`
//!   socket, so that they travel as separate TCP segments and the reader
//!   sees a line, a request or a TLS record arrive in pieces;
//! - **delay**: a pause before each segment, drawn from a range by a
//!   generator seeded from the plan;
//! - **stall**: after N bytes, stop reading from the sending side, for a
//!   time, or for good (until [`Relay::resume`] or the relay is dropped),
//!   so the sender's writes back up (the server's, when the stalled
//!   direction is [`Dir::Down`]);
//! - **reset**: after N bytes, reset the receiving side (`SO_LINGER` 0,
//!   then close: the kernel sends an RST instead of a FIN);
//! - **half-close**: after N bytes, `shutdown(Write)` towards the receiving
//!   side, which then reads end of stream; what the sender sends after
//!   that is read and thrown away.
//!
//! Apart from the faults the relay is transparent: an end of stream from
//! one side is passed on as a half-close, a reset as a reset, and a side
//! that can no longer be written to has its sender reset, as a direct
//! connection would.
//!
//! How the receiving side of a cut sees the rest of the connection:
//! after a reset towards the server ([`Dir::Up`]), the relay closes the
//! client's side cleanly once what the server had sent before the reset has
//! been passed on (the client sees a clean end); after a reset towards the
//! client ([`Dir::Down`]), the relay half-closes the server's side and
//! throws away what the server still sends, until it closes.
//!
//! Nothing here sleeps to wait for something: the pauses are the faults
//! themselves. Every blocking call of the relay ends when it is dropped
//! (its sockets are shut down, its stalls woken), and its sockets have
//! read and write timeouts of [`PATIENCE`], so a failing test cannot leave
//! it hanging. Everything random comes from the plan's seed; the relay
//! prints its plan if it is dropped while the test panics, and
//! [`Seed`] prints the seed, so a failure can be replayed
//! (`FRONTDESK_FAULT_SEED`).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::PATIENCE;

/// The environment variable that overrides every test's seed, to replay a
/// failure or to explore other plans.
pub(crate) const SEED_VARIABLE: &str = "FRONTDESK_FAULT_SEED";

/// A test's seed: the test's own fixed value, or [`SEED_VARIABLE`]'s.
/// Prints itself, with the command line that replays it, if it is dropped
/// while the test panics; hold it for the whole test.
#[derive(Debug)]
pub(crate) struct Seed(u64);

impl Seed {
    /// The seed of a test whose fixed seed is `default`, unless
    /// [`SEED_VARIABLE`] is set (decimal, or hexadecimal after `0x`).
    pub(crate) fn new(default: u64) -> Seed {
        let Ok(text) = std::env::var(SEED_VARIABLE) else {
            return Seed(default);
        };
        let text = text.trim();
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => text.parse(),
        };
        Seed(parsed.unwrap_or_else(|_| panic!("{SEED_VARIABLE}={text:?} is not a number")))
    }

    pub(crate) fn value(&self) -> u64 {
        self.0
    }

    /// A generator for the test's own choices (cut points, requests),
    /// separate from the relay's for each `stream`.
    pub(crate) fn rng(&self, stream: u64) -> Rng {
        Rng::new(self.0 ^ stream.wrapping_mul(0xa076_1d64_78bd_642f))
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "fault-injection seed: {seed:#x} (replay with {SEED_VARIABLE}={seed:#x})",
                seed = self.0
            );
        }
    }
}

/// A small deterministic generator (SplitMix64): the same seed gives the
/// same numbers, on every platform.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "Rng::between({low}, {high})");
        low + self.next_u64() % (high - low).saturating_add(1).max(1)
    }

    /// A duration in `low..=high`, to the nanosecond.
    fn duration(&mut self, low: Duration, high: Duration) -> Duration {
        let span = u64::try_from((high - low).as_nanos()).unwrap_or(u64::MAX);
        low + Duration::from_nanos(self.between(0, span))
    }
}

/// A direction through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Dir {
    /// From the client to the server: requests.
    Up,
    /// From the server to the client: replies.
    Down,
}

/// How a direction is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Cut {
    /// `SO_LINGER` 0 and close: the receiver's kernel gets an RST.
    Reset,
    /// `shutdown(Write)`: the receiver reads end of stream.
    HalfClose,
}

/// The faults of one direction; none by default.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    segment: Option<usize>,
    delay: Option<(Duration, Duration)>,
    stall: Option<(u64, Option<Duration>)>,
    cut: Option<(u64, Cut)>,
}

impl Faults {
    /// No fault: bytes are passed on as they are read.
    pub(crate) fn none() -> Faults {
        Faults::default()
    }

    /// Writes at most `bytes` at a time (at least 1), each write on its own
    /// to a `TCP_NODELAY` socket.
    pub(crate) fn segments(mut self, bytes: usize) -> Faults {
        self.segment = Some(bytes.max(1));
        self
    }

    /// Pauses before each segment for a time in `low..=high`, drawn from
    /// the plan's generator.
    pub(crate) fn delay(mut self, low: Duration, high: Duration) -> Faults {
        assert!(low <= high, "delay({low:?}, {high:?})");
        self.delay = Some((low, high));
        self
    }

    /// Once `bytes` have been passed on, stops reading from the sender for
    /// `time`, or with `None` for good: until [`Relay::resume`], or the
    /// relay is dropped.
    pub(crate) fn stall_after(mut self, bytes: u64, time: Option<Duration>) -> Faults {
        self.stall = Some((bytes, time));
        self
    }

    /// Once `bytes` have been passed on, resets the receiver.
    pub(crate) fn reset_after(mut self, bytes: u64) -> Faults {
        self.cut = Some((bytes, Cut::Reset));
        self
    }

    /// Once `bytes` have been passed on, half-closes towards the receiver
    /// and throws away what the sender sends after that.
    pub(crate) fn half_close_after(mut self, bytes: u64) -> Faults {
        self.cut = Some((bytes, Cut::HalfClose));
        self
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Faults {
            segment,
            delay,
            stall,
            cut,
        } = self;
        let mut parts = Vec::new();
        if let Some(bytes) = segment {
            parts.push(format!("segments of {bytes} B"));
        }
        if let Some((low, high)) = delay {
            parts.push(format!("delay {low:?}..={high:?}"));
        }
        if let Some((at, time)) = stall {
            match time {
                Some(time) => parts.push(format!("stall {time:?} after {at} B")),
                None => parts.push(format!("stall for ever after {at} B")),
            }
        }
        if let Some((at, how)) = cut {
            parts.push(format!("{how:?} after {at} B"));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// What goes wrong in a relay: the faults of each direction, and the seed
/// of the delays.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    seed: u64,
    up: Faults,
    down: Faults,
    server_receive_buffer: Option<usize>,
}

impl Plan {
    /// A plan without faults, whose delays are drawn from `seed`.
    pub(crate) fn new(seed: &Seed) -> Plan {
        Plan {
            seed: seed.value(),
            up: Faults::none(),
            down: Faults::none(),
            server_receive_buffer: None,
        }
    }

    /// The faults from the client to the server.
    pub(crate) fn up(mut self, faults: Faults) -> Plan {
        self.up = faults;
        self
    }

    /// The faults from the server to the client.
    pub(crate) fn down(mut self, faults: Faults) -> Plan {
        self.down = faults;
        self
    }

    /// Sets the relay's receive buffer towards the server (`SO_RCVBUF`,
    /// before connecting, so that it also bounds the TCP window): small,
    /// so that a [`Dir::Down`] stall backs the server's writes up after
    /// little data.
    pub(crate) fn server_receive_buffer(mut self, bytes: usize) -> Plan {
        self.server_receive_buffer = Some(bytes);
        self
    }

    fn faults(&self, dir: Dir) -> &Faults {
        match dir {
            Dir::Up => &self.up,
            Dir::Down => &self.down,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {:#x}; up (client to server): {}; down (server to client): {}",
            self.seed, self.up, self.down
        )?;
        if let Some(bytes) = self.server_receive_buffer {
            write!(f, "; receive buffer towards the server {bytes} B")?;
        }
        Ok(())
    }
}

/// How a pump's sender ended, as the relay saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// A read returned 0: the sender closed or half-closed (or the relay
    /// shut the socket's reading down, after a cut the other way).
    Eof,
    /// A read failed: a reset, or the relay's read timeout.
    ReadFailed(io::ErrorKind),
    /// Writing to the receiver failed: it reset the connection.
    WriteFailed(io::ErrorKind),
    /// The relay was dropped.
    Stopped,
    /// The pump had run for [`PUMP_LIFETIME`]: a test that keeps a
    /// connection that long has failed already.
    Expired,
}

/// The longest a pump runs: far beyond any test's connection, and finite,
/// so that no loop of the relay runs unbounded.
const PUMP_LIFETIME: Duration = Duration::from_secs(3 * PATIENCE.as_secs());

/// Something a relay did, in the order each pump did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Connection `conn` (0 for the first client) stopped reading in `dir`
    /// after `at` bytes.
    Stalled { conn: usize, dir: Dir, at: u64 },
    /// Connection `conn` was cut in `dir`, `how`, after `at` bytes.
    Cut {
        conn: usize,
        dir: Dir,
        at: u64,
        how: Cut,
    },
    /// Direction `dir` of connection `conn` ended after `at` bytes passed
    /// on (not counting what was thrown away after a cut).
    Ended {
        conn: usize,
        dir: Dir,
        at: u64,
        how: Ending,
    },
}

/// A relay between clients and a server, injecting the faults of its
/// [`Plan`] into every connection through it. Dropping it ends every
/// connection (their sockets are shut down) and joins its threads.
pub(crate) struct Relay {
    /// Where clients connect.
    pub(crate) addr: SocketAddr,
    plan: Plan,
    inner: Arc<Inner>,
    acceptor: Option<JoinHandle<()>>,
    events: Receiver<Event>,
}

/// What the relay's threads share.
struct Inner {
    stopping: AtomicBool,
    /// Dropped by [`Relay::drop`], which wakes every stall.
    stop: Mutex<Option<Sender<()>>>,
    stopped: Receiver<()>,
    /// Dropped by [`Relay::resume`], which ends every stall for good.
    resume: Mutex<Option<Sender<()>>>,
    resumed: Receiver<()>,
    /// Every socket the relay opened or accepted, to shut them down when
    /// it is dropped. Weak, so that a socket closes as soon as its pumps
    /// let go of it (a reset must not wait for the relay to be dropped).
    sockets: Mutex<Vec<Weak<TcpStream>>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
    events: Sender<Event>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Relay {
    /// Starts a relay on `127.0.0.1:0` to `server`, with `plan` for every
    /// connection.
    pub(crate) fn start(server: SocketAddr, plan: Plan) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let (resume, resumed) = crossbeam_channel::bounded(0);
        let (events_tx, events) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            stopping: AtomicBool::new(false),
            stop: Mutex::new(Some(stop)),
            stopped,
            resume: Mutex::new(Some(resume)),
            resumed,
            sockets: Mutex::new(Vec::new()),
            pumps: Mutex::new(Vec::new()),
            events: events_tx,
        });
        let acceptor = {
            let inner = Arc::clone(&inner);
            let plan = plan.clone();
            thread::Builder::new()
                .name("relay-acceptor".to_string())
                .spawn(move || accept(&listener, server, &plan, &inner))
                .expect("spawn the relay's acceptor")
        };
        Relay {
            addr,
            plan,
            inner,
            acceptor: Some(acceptor),
            events,
        }
    }

    /// The plan, for messages.
    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Waits up to [`PATIENCE`] for an event that `wanted` accepts, and
    /// returns it with the time it was received; panics naming `what`
    /// otherwise. Events before it are skipped.
    pub(crate) fn wait_for(&self, what: &str, wanted: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.events.recv_deadline(deadline) {
                Ok(event) if wanted(&event) => return event,
                Ok(_) => {}
                Err(error) => panic!(
                    "the relay never reported {what} ({error}); plan: {}",
                    self.plan
                ),
            }
        }
    }

    /// Ends every stall for good of every connection, now and later: the
    /// relay reads again, and the sides that backed up go on.
    pub(crate) fn resume(&self) {
        lock(&self.inner.resume).take();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("fault plan of the failed test: {}", self.plan);
        }
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        lock(&inner.stop).take();
        // Wake the acceptor; it sees `stopping` and returns. (Should the
        // connection fail, the acceptor is left blocked rather than waited
        // for for ever.)
        let woken = TcpStream::connect_timeout(&self.addr, PATIENCE).is_ok();
        if let Some(acceptor) = self.acceptor.take().filter(|_| woken) {
            let _ = acceptor.join();
        }
        // No pump starts any more: wake every one of them.
        for socket in lock(&inner.sockets).iter().filter_map(Weak::upgrade) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let pumps = std::mem::take(&mut *lock(&inner.pumps));
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

/// The acceptor: for each client, a connection to the server and a pump
/// each way.
fn accept(listener: &TcpListener, server: SocketAddr, plan: &Plan, inner: &Arc<Inner>) {
    for (conn, client) in listener.incoming().enumerate() {
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let upstream = match connect(server, plan.server_receive_buffer) {
            Ok(upstream) => upstream,
            Err(error) => {
                eprintln!("relay: cannot connect to {server}: {error}");
                continue;
            }
        };
        // A client gone already (the wake-up of a relay being dropped,
        // say) is skipped.
        let (Ok(client), Ok(upstream)) = (prepare(client), prepare(upstream)) else {
            continue;
        };
        let (client, upstream) = (Arc::new(client), Arc::new(upstream));
        lock(&inner.sockets).extend([Arc::downgrade(&client), Arc::downgrade(&upstream)]);
        for (dir, src, dst) in [
            (Dir::Up, &client, &upstream),
            (Dir::Down, &upstream, &client),
        ] {
            let pump = Pump {
                conn,
                dir,
                src: Arc::clone(src),
                dst: Some(Arc::clone(dst)),
                faults: plan.faults(dir).clone(),
                // A stream of its own for each direction of each
                // connection.
                rng: Rng::new(
                    plan.seed
                        ^ ((conn as u64) << 1 | (dir == Dir::Down) as u64)
                            .wrapping_mul(0xe703_7ed1_a0b4_28db),
                ),
                inner: Arc::clone(inner),
            };
            let handle = thread::Builder::new()
                .name(format!("relay-{conn}-{dir:?}"))
                .spawn(move || pump.run())
                .expect("spawn a relay pump");
            lock(&inner.pumps).push(handle);
        }
    }
}

/// Connects to the server, with a receive buffer of `receive` bytes if
/// given (set before connecting, so that it bounds the window too).
fn connect(server: SocketAddr, receive: Option<usize>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(bytes) = receive {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.connect(&server.into())?;
    Ok(socket.into())
}

/// Every relay socket: segments go out as written, and no call waits
/// longer than [`PATIENCE`].
fn prepare(stream: TcpStream) -> io::Result<TcpStream> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    Ok(stream)
}

/// Resets `socket` once the last handle to it is dropped (`SO_LINGER` 0),
/// and ends its reads at once (`shutdown(Read)`), so that the pump reading
/// from it lets go of it.
fn abort(socket: &TcpStream) {
    let _ = SockRef::from(socket).set_linger(Some(Duration::ZERO));
    let _ = socket.shutdown(Shutdown::Read);
}

/// One direction of one connection.
struct Pump {
    conn: usize,
    dir: Dir,
    src: Arc<TcpStream>,
    /// `None` once let go of, after a reset.
    dst: Option<Arc<TcpStream>>,
    faults: Faults,
    rng: Rng,
    inner: Arc<Inner>,
}

impl Pump {
    fn run(mut self) {
        let mut moved: u64 = 0;
        let mut stalled = false;
        let mut buf = vec![0u8; 16 * 1024];
        let started = Instant::now();
        let ending = loop {
            if started.elapsed() > PUMP_LIFETIME {
                break Ending::Expired;
            }
            if let Some((at, how)) = self.faults.cut {
                if moved == at {
                    self.cut(at, how);
                    return;
                }
            }
            if let Some((at, time)) = self.faults.stall {
                if !stalled && moved == at {
                    stalled = true;
                    self.event(Event::Stalled {
                        conn: self.conn,
                        dir: self.dir,
                        at,
                    });
                    let stopped = match time {
                        Some(time) => {
                            self.inner.stopped.recv_timeout(time) != Err(RecvTimeoutError::Timeout)
                        }
                        None => {
                            // Nothing is sent on either: each wakes the
                            // stall when its sender is dropped.
                            crossbeam_channel::select! {
                                recv(self.inner.stopped) -> _ => true,
                                recv(self.inner.resumed) -> _ => false,
                            }
                        }
                    };
                    if stopped {
                        break Ending::Stopped;
                    }
                }
            }
            // Read no further than the next fault, so that it comes after
            // exactly the bytes the plan says.
            let mut room = buf.len() as u64;
            if let Some((at, _)) = self.faults.cut {
                room = room.min(at - moved);
            }
            if let Some((at, _)) = self.faults.stall.filter(|_| !stalled) {
                if at > moved {
                    room = room.min(at - moved);
                }
            }
            let n = match (&*self.src).read(&mut buf[..room as usize]) {
                Ok(0) => break Ending::Eof,
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => break Ending::ReadFailed(error.kind()),
            };
            if let Err(error) = self.forward(&buf[..n]) {
                break Ending::WriteFailed(error.kind());
            }
            moved += n as u64;
        };
        self.event(Event::Ended {
            conn: self.conn,
            dir: self.dir,
            at: moved,
            how: ending,
        });
        let dst = self.dst.as_deref().expect("not let go of before a cut");
        match ending {
            // Passed on as a half-close.
            Ending::Eof => {
                let _ = dst.shutdown(Shutdown::Write);
            }
            // The sender reset: so is the receiver.
            Ending::ReadFailed(_) | Ending::Expired => abort(dst),
            // The receiver reset: so is the sender.
            Ending::WriteFailed(_) => abort(&self.src),
            Ending::Stopped => {}
        }
    }

    /// Writes `bytes` to the receiver, in segments and with pauses as the
    /// faults say.
    fn forward(&mut self, bytes: &[u8]) -> io::Result<()> {
        let dst = self.dst.as_deref().expect("not let go of before a cut");
        let segment = self.faults.segment.unwrap_or(bytes.len()).max(1);
        for piece in bytes.chunks(segment) {
            if let Some((low, high)) = self.faults.delay {
                // The fault itself, not a wait for something.
                thread::sleep(self.rng.duration(low, high));
            }
            (&*dst).write_all(piece)?;
        }
        Ok(())
    }

    /// Cuts this direction after `at` bytes, then reads and throws away
    /// what the sender still sends, until it stops.
    fn cut(&mut self, at: u64, how: Cut) {
        let dst = self.dst.take().expect("cut once");
        match how {
            Cut::HalfClose => {
                let _ = dst.shutdown(Shutdown::Write);
            }
            Cut::Reset => {
                // The RST goes out when the other pump lets go of the
                // socket too, which `abort` makes it do at once.
                abort(&dst);
            }
        }
        drop(dst);
        self.event(Event::Cut {
            conn: self.conn,
            dir: self.dir,
            at,
            how,
        });
        let mut buf = [0u8; 16 * 1024];
        let started = Instant::now();
        // Bounded by the read timeout per read, and in all by PATIENCE.
        while started.elapsed() < PATIENCE {
            match (&*self.src).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn event(&self, event: Event) {
        let _ = self.inner.events.send(event);
    }
}
