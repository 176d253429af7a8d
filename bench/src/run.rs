//! The scenarios, and one measured run of one server in one scenario.

use std::error::Error;
use std::fmt;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use crate::chat::{self, ChatLoad};
use crate::child::ServerProcess;
use crate::load::{self, Exchange, Mark, Timing, Window};
use crate::procfs;
use crate::servers::{FdOptions, Kind, Protocol};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// frontdesk's `Handler` mode in the load scenarios: the examples'
/// `Handler`s as `--workers 8` runs them (queue 64, `Overload::Reject`
/// with the busy reply, idle timeout 5 min, write timeout 30 s). With
/// more clients than workers (C = 64), 8 are served and the other 56 wait
/// in the queue for the whole run: see `FD_ALL`.
pub const FD_MAIN: FdOptions = FdOptions {
    workers: 8,
    queue: 64,
    reject: true,
    idle_timeout_ms: None,
};

/// The same with a worker for every client of the largest C (64), run
/// beside `FD_MAIN` at C = 64: what the `Handler` mode needs to serve 64
/// busy clients at once.
pub const FD_ALL: FdOptions = FdOptions {
    workers: 64,
    queue: 64,
    reject: true,
    idle_timeout_ms: None,
};

/// frontdesk for the idle scenario: the same pool, no queue, and the busy
/// reply for whoever comes when every worker is held (the `commands`
/// example's setup).
pub const FD_REJECT: FdOptions = FdOptions {
    workers: 64,
    queue: 0,
    reject: true,
    idle_timeout_ms: None,
};

/// frontdesk with its pool held by idle clients, Block policy: a new
/// client is served when an idle one times out.
pub const FD_BLOCK_IDLE: FdOptions = FdOptions {
    workers: 64,
    queue: 0,
    reject: false,
    idle_timeout_ms: Some(100),
};

/// frontdesk's turn mode: the examples' `TurnHandler`s (and the chat
/// relay) on 8 workers, at most `TURN_MAX_CONNECTIONS` connections, then
/// the busy reply. Only `workers` is read.
pub const FD_TURNS: FdOptions = FdOptions {
    workers: 8,
    queue: 0,
    reject: true,
    idle_timeout_ms: None,
};

/// The chat relay's shape: 10 senders among `n` clients, 10 lines/s each.
pub const CHAT_SENDERS: usize = 10;
pub const CHAT_RATE: u32 = 10;

/// Trickling clients send one byte every this long.
pub const TRICKLE_EVERY: Duration = Duration::from_millis(300);
/// Fresh clients timed with and without the tricklers, per run.
const TRICKLE_PROBES: usize = 100;

/// One server as a scenario runs it.
#[derive(Debug, Clone, Copy)]
pub struct ServerSpec {
    pub kind: Kind,
    pub fd: FdOptions,
}

impl ServerSpec {
    pub const fn new(kind: Kind, fd: FdOptions) -> ServerSpec {
        ServerSpec { kind, fd }
    }

    pub fn label(&self) -> String {
        match self.kind {
            Kind::Frontdesk => format!("frontdesk ({})", self.fd),
            Kind::FrontdeskTurns => format!("frontdesk-turns (workers={})", self.fd.workers),
            kind => kind.name().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `c` connections each echo `size` bytes at a time.
    PingPong { c: usize, size: usize },
    /// `c` connections each do `ping` → `pong`.
    Lines { c: usize },
    /// `c` clients each connect, do one `ping`, close, and start over.
    Churn { c: usize },
    /// `n` connections held idle, then fresh clients.
    Idle { n: usize },
    /// Every worker held by an idle client, then one fresh client.
    PoolFull,
    /// A chat relay with `n` clients, `CHAT_SENDERS` of them sending.
    Chat { n: usize },
    /// Fresh clients timed without, then with, `n` clients trickling a
    /// byte of an unfinished line every `TRICKLE_EVERY`.
    Trickle { n: usize },
}

impl Scenario {
    pub fn servers(self) -> Vec<ServerSpec> {
        let mut servers = match self {
            // Both modes of the examples beside the peers.
            Scenario::PingPong { .. } | Scenario::Lines { .. } | Scenario::Churn { .. } => vec![
                ServerSpec::new(Kind::Std, FD_MAIN),
                ServerSpec::new(Kind::Tokio, FD_MAIN),
                ServerSpec::new(Kind::Frontdesk, FD_MAIN),
                ServerSpec::new(Kind::FrontdeskTurns, FD_TURNS),
            ],
            Scenario::Idle { .. } => vec![
                ServerSpec::new(Kind::Std, FD_REJECT),
                ServerSpec::new(Kind::Tokio, FD_REJECT),
                ServerSpec::new(Kind::Frontdesk, FD_REJECT),
                ServerSpec::new(Kind::FrontdeskTurns, FD_TURNS),
            ],
            Scenario::PoolFull => vec![ServerSpec::new(Kind::Frontdesk, FD_BLOCK_IDLE)],
            Scenario::Chat { .. } | Scenario::Trickle { .. } => vec![
                ServerSpec::new(Kind::Std, FD_TURNS),
                ServerSpec::new(Kind::Tokio, FD_TURNS),
                ServerSpec::new(Kind::Epoll, FD_TURNS),
                ServerSpec::new(Kind::FrontdeskTurns, FD_TURNS),
            ],
        };
        // The single-threaded baseline wherever it speaks the protocol.
        if let Scenario::Lines { .. } | Scenario::Idle { .. } = self {
            servers.push(ServerSpec::new(Kind::Epoll, FD_TURNS));
        }
        match self {
            // More clients than the examples' 8 workers: the `Handler`
            // mode with a worker for each too.
            Scenario::PingPong { c: 64, .. } | Scenario::Lines { c: 64 } => {
                servers.push(ServerSpec::new(Kind::Frontdesk, FD_ALL));
            }
            // A pool as large as the crowd of idle clients.
            Scenario::Idle { n } if n <= frontdesk::MAX_WORKERS => {
                servers.push(ServerSpec::new(
                    Kind::Frontdesk,
                    FdOptions {
                        workers: n,
                        ..FD_REJECT
                    },
                ));
            }
            _ => {}
        }
        servers
    }

    fn protocol(self) -> Protocol {
        match self {
            Scenario::PingPong { .. } => Protocol::Echo,
            Scenario::Chat { .. } => Protocol::Chat,
            _ => Protocol::Lines,
        }
    }

    pub fn is_load(self) -> bool {
        matches!(
            self,
            Scenario::PingPong { .. } | Scenario::Lines { .. } | Scenario::Churn { .. }
        )
    }

    /// What one unit of throughput is.
    pub fn unit(self) -> &'static str {
        match self {
            Scenario::Churn { .. } => "conn/s",
            _ => "msg/s",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Scenario::PingPong { c, size } => write!(f, "ping-pong C={c} S={}", size_name(size)),
            Scenario::Lines { c } => write!(f, "lines C={c}"),
            Scenario::Churn { c } => write!(f, "churn C={c}"),
            Scenario::Idle { n } => write!(f, "idle N={n}"),
            Scenario::PoolFull => write!(f, "pool full"),
            Scenario::Chat { n } => write!(f, "chat N={n}"),
            Scenario::Trickle { n } => write!(f, "trickle N={n}"),
        }
    }
}

pub fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The figures of one load run (ping-pong, lines or churn).
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadSample {
    /// Exchanges (or connections) per second.
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Server CPU time (user + system) per exchange, in microseconds.
    pub cpu_per_req_us: f64,
    /// Server and load-generator CPU use, in % of one core.
    pub server_cpu_pct: f64,
    pub client_cpu_pct: f64,
    /// Server context switches per exchange (live threads only; `None`
    /// for churn, where the std server's threads come and go).
    pub ctx_per_req: Option<f64>,
    pub errors: u64,
    /// Clients that never got a reply.
    pub starved: usize,
}

/// The figures of one idle run.
#[derive(Debug, Clone, Default)]
pub struct IdleSample {
    /// Connections being served (answered `pong`) while held.
    pub served: usize,
    /// Connections that got the busy reply instead.
    pub busy: usize,
    /// Time to open and answer all held connections.
    pub open: Duration,
    /// Fresh clients: time to their reply, and whether it was `pong`.
    pub probes: Vec<(Duration, bool)>,
    /// VmHWM before the idle connections and with them held.
    pub hwm_before: u64,
    pub hwm_after: u64,
    /// Growth of the server's private anonymous memory (RssAnon: heap and
    /// thread stacks, no mapped files) while the connections are held.
    pub anon_growth: u64,
}

impl IdleSample {
    /// Peak memory (VmHWM) added per connection the server is serving.
    pub fn bytes_per_served(&self) -> Option<f64> {
        (self.served > 0)
            .then(|| self.hwm_after.saturating_sub(self.hwm_before) as f64 / self.served as f64)
    }

    /// Anonymous memory (RssAnon) added per connection the server is serving.
    pub fn anon_per_served(&self) -> Option<f64> {
        (self.served > 0).then(|| self.anon_growth as f64 / self.served as f64)
    }
}

/// The figures of one chat run.
#[derive(Debug, Clone, Default)]
pub struct ChatSample {
    pub sent: u64,
    pub received: u64,
    pub expected: u64,
    /// Fan-out latency (a sender's write to a receiver's read), in µs.
    pub p50_us: f64,
    pub p99_us: f64,
    /// Server CPU time per delivery actually made, in µs.
    pub cpu_per_delivery_us: f64,
    /// Server and load-generator CPU use over the sending and the drain,
    /// in % of one core.
    pub server_cpu_pct: f64,
    pub client_cpu_pct: f64,
    /// The server's peak RSS (VmHWM) at the end, and just after it started.
    pub hwm: u64,
    pub hwm_start: u64,
    pub join: Duration,
    pub elapsed: Duration,
    /// The hello burst (after the drain): every client sends one line at
    /// once; ms from the first hello written to the last heard, with every
    /// client having heard all the others'.
    pub burst_ms: f64,
    /// Server CPU time over the burst per hello delivered, in µs.
    pub burst_cpu_per_hello_us: f64,
    /// Hellos delivered (and checked) in the burst.
    pub hellos: u64,
    /// The server's peak RSS (VmHWM) after the burst (`hwm` is read
    /// before it).
    pub hwm_burst: u64,
    /// Senders' lines that arrived during the burst, after the drain.
    pub late: u64,
}

impl ChatSample {
    pub fn delivery(&self) -> f64 {
        self.received as f64 / self.expected.max(1) as f64
    }
}

/// The figures of one trickle run.
#[derive(Debug, Clone, Default)]
pub struct TrickleSample {
    /// Fresh clients' time to `pong`, in ms: with no tricklers, then with.
    pub quiet: Vec<f64>,
    pub trickling: Vec<f64>,
    /// Tricklers still connected at the end (of `n`).
    pub held: usize,
    /// Bytes trickled in all.
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub enum Sample {
    Load(LoadSample),
    Idle(IdleSample),
    Chat(ChatSample),
    Trickle(TrickleSample),
    /// Not run, and why.
    Skipped(String),
}

/// Why `spec` cannot run `scenario` on this machine, if it cannot.
pub fn skip_reason(spec: ServerSpec, scenario: Scenario, fd_limit: u64) -> Option<String> {
    let (Scenario::Idle { n } | Scenario::Chat { n } | Scenario::Trickle { n }) = scenario else {
        return None;
    };
    // `try_clone` gives the std server two descriptors per connection.
    let per_connection = if spec.kind == Kind::Std { 2 } else { 1 };
    let needed = per_connection * n as u64 + 64;
    (needed > fd_limit).then(|| {
        format!(
            "needs {needed} open files ({per_connection} per connection), the limit is {fd_limit}"
        )
    })
}

/// Runs `spec` in `scenario` once, in a fresh server process.
pub fn run_once(spec: ServerSpec, scenario: Scenario, timing: Timing) -> BoxResult<Sample> {
    let server = ServerProcess::start(spec.kind, scenario.protocol(), spec.fd)?;
    match scenario {
        Scenario::PingPong { c, size } => load_run(&server, scenario, |addr, mark| {
            load::ping_pong(addr, c, Exchange::Echo { size }, timing, mark)
        }),
        Scenario::Lines { c } => load_run(&server, scenario, |addr, mark| {
            load::ping_pong(addr, c, Exchange::Line, timing, mark)
        }),
        Scenario::Churn { c } => load_run(&server, scenario, |addr, mark| {
            load::churn(addr, c, timing, mark)
        }),
        Scenario::Idle { n } => idle_run(&server, n, 10),
        Scenario::PoolFull => idle_run(&server, spec.fd.workers, 1),
        Scenario::Chat { n } => chat_run(&server, n, timing.chat),
        Scenario::Trickle { n } => trickle_run(&server, n, timing.chat),
    }
}

fn chat_run(server: &ServerProcess, n: usize, duration: Duration) -> BoxResult<Sample> {
    let pid = server.pid();
    let hwm_start = procfs::status_bytes(pid, "VmHWM")?;
    let mut start = None;
    let mut end = None;
    // Read at the end of the drain, before the hello burst, so that the
    // peak is the relay's under the senders' load alone, as before the
    // burst was added.
    let mut hwm = None;
    let mut burst_start = None;
    let mut burst_end = None;
    let load = ChatLoad {
        clients: n,
        senders: CHAT_SENDERS,
        rate: CHAT_RATE,
        duration,
    };
    let window = chat::chat(server.addr(), load, &mut |mark| {
        let snap = snapshot(pid);
        match mark {
            Mark::Start => start = Some(snap),
            Mark::End => {
                end = Some(snap);
                hwm = Some(procfs::status_bytes(pid, "VmHWM"));
            }
            Mark::BurstStart => burst_start = Some(snap),
            Mark::BurstEnd => burst_end = Some(snap),
        }
    })?;
    let start = start.ok_or("window never started")??;
    let end = end.ok_or("window never ended")??;
    let hwm = hwm.ok_or("window never ended")??;
    let burst_start = burst_start.ok_or("hello burst never started")??;
    let burst_end = burst_end.ok_or("hello burst never ended")??;
    let secs = window.elapsed.as_secs_f64();
    let (server_cpu, client_cpu) = cpu_seconds(&start, &end);
    let (burst_cpu, _) = cpu_seconds(&burst_start, &burst_end);
    let percentile = quantiles_us(window.latencies);
    Ok(Sample::Chat(ChatSample {
        sent: window.sent,
        received: window.received,
        expected: window.expected,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        cpu_per_delivery_us: server_cpu * 1e6 / window.received.max(1) as f64,
        server_cpu_pct: server_cpu * 100.0 / secs,
        client_cpu_pct: client_cpu * 100.0 / secs,
        hwm,
        hwm_start,
        join: window.join,
        elapsed: window.elapsed,
        burst_ms: window.burst.as_secs_f64() * 1000.0,
        burst_cpu_per_hello_us: burst_cpu * 1e6 / window.hellos.max(1) as f64,
        hellos: window.hellos,
        hwm_burst: procfs::status_bytes(pid, "VmHWM")?,
        late: window.late,
    }))
}

fn trickle_run(server: &ServerProcess, n: usize, duration: Duration) -> BoxResult<Sample> {
    load::probe(server.addr())?;
    let pong = |(took, pong): (Duration, bool)| -> BoxResult<f64> {
        if !pong {
            return Err("trickle: a fresh client got the busy reply".into());
        }
        Ok(took.as_secs_f64() * 1000.0)
    };
    let mut sample = TrickleSample::default();
    let spacing = duration / (TRICKLE_PROBES as u32 + 4);
    for _ in 0..TRICKLE_PROBES {
        sample.quiet.push(pong(load::probe(server.addr())?)?);
        thread::sleep(spacing);
    }
    let trickle = load::Trickle::start(server.addr(), n, TRICKLE_EVERY, duration)?;
    // Every trickler has sent its first byte or two.
    thread::sleep(TRICKLE_EVERY * 2);
    let probes_until = Instant::now() + duration.saturating_sub(TRICKLE_EVERY * 3);
    let spacing = duration / (TRICKLE_PROBES as u32 + 4);
    for _ in 0..TRICKLE_PROBES {
        if Instant::now() > probes_until {
            break;
        }
        sample.trickling.push(pong(load::probe(server.addr())?)?);
        thread::sleep(spacing);
    }
    let (held, bytes) = trickle.finish()?;
    sample.held = held;
    sample.bytes = bytes;
    Ok(Sample::Trickle(sample))
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    server_cpu: Duration,
    client_cpu: Duration,
    ctx: u64,
}

/// The server's and the load generator's CPU time between two snapshots,
/// in seconds.
fn cpu_seconds(start: &Snapshot, end: &Snapshot) -> (f64, f64) {
    (
        (end.server_cpu - start.server_cpu).as_secs_f64(),
        (end.client_cpu - start.client_cpu).as_secs_f64(),
    )
}

/// The latency at a quantile of `latencies` (nanoseconds), in
/// microseconds; NaN when there are none.
pub fn quantiles_us(mut latencies: Vec<u32>) -> impl Fn(f64) -> f64 {
    latencies.sort_unstable();
    move |q| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        f64::from(latencies[i]) / 1000.0
    }
}

fn snapshot(pid: u32) -> io::Result<Snapshot> {
    Ok(Snapshot {
        server_cpu: procfs::cpu_time(pid)?,
        client_cpu: procfs::cpu_time(std::process::id())?,
        ctx: procfs::context_switches(pid)?,
    })
}

fn load_run(
    server: &ServerProcess,
    scenario: Scenario,
    generate: impl FnOnce(std::net::SocketAddr, &mut dyn FnMut(Mark)) -> BoxResult<Window>,
) -> BoxResult<Sample> {
    let pid = server.pid();
    let mut start = None;
    let mut end = None;
    let window = generate(server.addr(), &mut |mark| {
        let snap = snapshot(pid);
        match mark {
            Mark::Start => start = Some(snap),
            Mark::End => end = Some(snap),
            // Only the chat has a hello burst.
            Mark::BurstStart | Mark::BurstEnd => {}
        }
    })?;
    let start = start.ok_or("window never started")??;
    let end = end.ok_or("window never ended")??;
    let secs = window.elapsed.as_secs_f64();
    let requests = window.completed.max(1) as f64;
    let (server_cpu, client_cpu) = cpu_seconds(&start, &end);
    let percentile = quantiles_us(window.latencies);
    Ok(Sample::Load(LoadSample {
        rate: window.completed as f64 / secs,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        cpu_per_req_us: server_cpu * 1e6 / requests,
        server_cpu_pct: server_cpu * 100.0 / secs,
        client_cpu_pct: client_cpu * 100.0 / secs,
        ctx_per_req: match scenario {
            Scenario::Churn { .. } => None,
            _ => Some(end.ctx.saturating_sub(start.ctx) as f64 / requests),
        },
        errors: window.errors,
        starved: window.starved,
    }))
}

fn idle_run(server: &ServerProcess, n: usize, probes: usize) -> BoxResult<Sample> {
    let pid = server.pid();
    // A server prints its address once its threads run; serving one client
    // also brings in what the first connection allocates, before the
    // baseline.
    load::probe(server.addr())?;
    thread::sleep(Duration::from_millis(20));
    let hwm_before = procfs::status_bytes(pid, "VmHWM")?;
    let anon_before = procfs::status_bytes(pid, "RssAnon")?;
    let started = Instant::now();
    let held = load::hold_idle(server.addr(), n, started + Duration::from_secs(60))?;
    let open = started.elapsed();
    // Let the server settle (threads parked, tasks suspended) before
    // reading its memory.
    thread::sleep(Duration::from_millis(50));
    let hwm_after = procfs::status_bytes(pid, "VmHWM")?;
    let anon_after = procfs::status_bytes(pid, "RssAnon")?;
    let mut sample = IdleSample {
        served: held.served,
        busy: held.busy,
        open,
        probes: Vec::with_capacity(probes),
        hwm_before,
        hwm_after,
        anon_growth: anon_after.saturating_sub(anon_before),
    };
    for _ in 0..probes {
        sample.probes.push(load::probe(server.addr())?);
    }
    drop(held);
    Ok(Sample::Idle(sample))
}

/// Every sample of one scenario: `rounds[r][s]` is server `s` in round `r`.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub servers: Vec<ServerSpec>,
    pub rounds: Vec<Vec<Sample>>,
}

impl ScenarioResult {
    /// The load samples of server `s`, one per round.
    pub fn load(&self, s: usize) -> Vec<LoadSample> {
        self.samples(s, |sample| match sample {
            Sample::Load(sample) => Some(*sample),
            _ => None,
        })
    }

    /// The idle samples of server `s`, one per round.
    pub fn idle(&self, s: usize) -> Vec<IdleSample> {
        self.samples(s, |sample| match sample {
            Sample::Idle(sample) => Some(sample.clone()),
            _ => None,
        })
    }

    /// Why server `s` was skipped, if it was skipped in every round.
    pub fn skipped(&self, s: usize) -> Option<&str> {
        let mut reasons = self.rounds.iter().map(|round| match &round[s] {
            Sample::Skipped(reason) => Some(reason.as_str()),
            _ => None,
        });
        let first = reasons.next()??;
        reasons.all(|r| r.is_some()).then_some(first)
    }

    /// What `pick` takes from server `s`'s sample in each round where it
    /// has one.
    fn samples<T>(&self, s: usize, pick: impl Fn(&Sample) -> Option<T>) -> Vec<T> {
        self.rounds
            .iter()
            .filter_map(|round| pick(&round[s]))
            .collect()
    }

    /// The index of the server of this kind.
    pub fn index(&self, kind: Kind) -> Option<usize> {
        self.servers.iter().position(|spec| spec.kind == kind)
    }

    /// The chat samples of server `s`, one per round.
    pub fn chat(&self, s: usize) -> Vec<ChatSample> {
        self.samples(s, |sample| match sample {
            Sample::Chat(sample) => Some(sample.clone()),
            _ => None,
        })
    }

    /// The trickle samples of server `s`, one per round.
    pub fn trickle(&self, s: usize) -> Vec<TrickleSample> {
        self.samples(s, |sample| match sample {
            Sample::Trickle(sample) => Some(sample.clone()),
            _ => None,
        })
    }

    /// `figure(a) / figure(b)` in each round where both ran, for any
    /// kind of sample.
    pub fn ratios_of(&self, a: Kind, b: Kind, figure: impl Fn(&Sample) -> f64) -> Vec<f64> {
        let (Some(a), Some(b)) = (self.index(a), self.index(b)) else {
            return Vec::new();
        };
        self.rounds
            .iter()
            .map(|round| figure(&round[a]) / figure(&round[b]))
            .filter(|r| !r.is_nan())
            .collect()
    }

    /// `figure(frontdesk) / figure(peer)` in each round, frontdesk being
    /// the first `Handler`-mode server of the scenario.
    pub fn ratios(&self, peer: Kind, figure: impl Fn(&LoadSample) -> f64) -> Vec<f64> {
        self.load_ratios(Kind::Frontdesk, peer, figure)
    }

    /// `figure(a) / figure(b)` of two load servers, the first of each
    /// kind, in each round.
    pub fn load_ratios(&self, a: Kind, b: Kind, figure: impl Fn(&LoadSample) -> f64) -> Vec<f64> {
        match (self.index(a), self.index(b)) {
            (Some(a), Some(b)) => self.load_ratios_at(a, b, figure),
            _ => Vec::new(),
        }
    }

    /// `figure(a) / figure(b)` of servers `a` and `b` (indices), in each
    /// round.
    pub fn load_ratios_at(
        &self,
        a: usize,
        b: usize,
        figure: impl Fn(&LoadSample) -> f64,
    ) -> Vec<f64> {
        self.load(a)
            .iter()
            .zip(self.load(b))
            .map(|(a, b)| figure(a) / figure(&b))
            .collect()
    }
}
