//! `bench soak`: runs the examples (`commands`, `commands
//! --proxy-protocol`, `echo`, `chat`) in one mode under a bounded mix of
//! clients for a set time, samples each server process, and ends with a
//! verdict, a report and a chart. See docs/reliability.md ("Soak").
//!
//! ```text
//! cargo run --release -p bench -- soak --minutes 60            # the Handler mode
//! cargo run --release -p bench -- soak --minutes 60 --turns    # the turn mode
//! cargo run --release -p bench -- soak --seconds 20            # the quick form CI runs
//! ```
//!
//! Every sample (every 10 s; every second in runs under 200 s) reads the
//! server's resident memory, open descriptors and threads from `/proc`,
//! and its counters: SIGUSR1 makes an example print them on stderr
//! (examples/common/mod.rs). When the time is up the clients stop, the
//! servers must give back every descriptor the clients held, and SIGTERM
//! stops them; their final counters (logged at `info`) must satisfy
//! `accepted == completed + rejected + dropped`.
//!
//! The verdict passes when no reply was lost or wrong, no connection was
//! held past the limit that should end it, the identity holds in every
//! server, every server exits cleanly, and (in runs of 10 minutes or
//! more) RSS and descriptors grew less than 5 % after the first 5
//! minutes: the median of the last 5 minutes' samples against that of
//! minutes 5 to 10.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::soak_load::{self, Mix, Tally, Targets};
use crate::{procfs, BoxResult};

/// Growth allowed after the first minutes, in percent.
const GROWTH_LIMIT: f64 = 5.0;

/// Runs shorter than this report growth but do not judge it: the first 5
/// minutes are the warm-up.
const JUDGED_FROM: Duration = Duration::from_secs(600);

/// How long an example may take to start, to answer SIGUSR1, or to exit
/// after SIGTERM (the examples promise 5 s; the rest is slack for a
/// loaded machine).
const PROCESS_PATIENCE: Duration = Duration::from_secs(15);

#[derive(Debug)]
struct SoakOptions {
    duration: Duration,
    turns: bool,
    chart: PathBuf,
    markdown: Option<PathBuf>,
    holders: Option<usize>,
    /// The command line, for the report.
    command: String,
}

fn parse(args: &[String]) -> BoxResult<SoakOptions> {
    let mut duration = None;
    let mut turns = false;
    let mut chart = None;
    let mut markdown = None;
    let mut holders = None;
    let mut args_iter = args.iter();
    while let Some(arg) = args_iter.next() {
        let mut value = || {
            args_iter
                .next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--minutes" => duration = Some(Duration::from_secs(value()?.parse::<u64>()? * 60)),
            "--seconds" => duration = Some(Duration::from_secs(value()?.parse()?)),
            "--turns" => turns = true,
            "--chart" => chart = Some(PathBuf::from(value()?)),
            "--markdown" => markdown = Some(PathBuf::from(value()?)),
            "--holders" => holders = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: cargo run --release -p bench -- soak (--minutes N | --seconds N) [--turns] [--holders N] [--chart PATH] [--markdown PATH]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("soak: unknown argument `{arg}` (try --help)").into()),
        }
    }
    let duration = duration.ok_or("soak needs --minutes N or --seconds N")?;
    if duration < Duration::from_secs(5) {
        return Err("soak: run for at least 5 seconds".into());
    }
    let mode = if turns { "turns" } else { "handler" };
    let chart = chart.unwrap_or_else(|| {
        if duration >= JUDGED_FROM {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/soak-{mode}.svg"))
        } else {
            std::env::temp_dir().join(format!("frontdesk-soak-{mode}.svg"))
        }
    });
    let command = format!("cargo run --release -p bench -- soak {}", args.join(" "));
    Ok(SoakOptions {
        duration,
        turns,
        chart,
        markdown,
        holders,
        command,
    })
}

/// Entry point: `bench soak ...`. Fails (non-zero exit) when the verdict
/// does.
pub fn soak_main(args: &[String]) -> BoxResult<()> {
    let options = parse(args)?;
    procfs::raise_fd_limit()?;
    let examples = build_examples()?;
    let mode = if options.turns { "turns" } else { "handler" };
    // The Handler mode needs a worker per connection held: holders,
    // tricklers, the slow reader and the steady clients come to about 50.
    // The turn mode runs as its docs suggest, a few workers for many
    // connections.
    let mut common: Vec<&str> = vec!["127.0.0.1:0"];
    if options.turns {
        common.extend(["--turns", "--workers", "4"]);
    } else {
        common.extend(["--workers", "80", "--queue", "64"]);
    }
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut args = common.clone();
        args.extend_from_slice(extra);
        args
    };
    // Started from this (the main) thread: the death signal that ties the
    // examples to us follows the thread that forked them.
    let mut servers = vec![
        Example::start(&examples, "commands", "commands", &with(&[]))?,
        Example::start(
            &examples,
            "commands",
            "commands --proxy-protocol",
            &with(&["--proxy-protocol"]),
        )?,
        Example::start(&examples, "echo", "echo", &with(&[]))?,
        Example::start(
            &examples,
            "chat",
            "chat",
            &["127.0.0.1:0", "--workers", "4"],
        )?,
    ];
    let targets = Targets {
        commands: servers[0].addr,
        proxied: servers[1].addr,
        echo: servers[2].addr,
        chat: servers[3].addr,
    };
    let mix = Mix {
        holders: options
            .holders
            .unwrap_or(if options.turns { 400 } else { 40 }),
        members: 10,
    };
    let every = if options.duration < Duration::from_secs(200) {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    eprintln!(
        "soak: {mode} mode for {} s, sampling every {} s; {} holders, {} chat members; servers {}",
        options.duration.as_secs(),
        every.as_secs(),
        mix.holders,
        mix.members,
        servers
            .iter()
            .map(|s| format!("{} (pid {}, {})", s.label, s.pid(), s.addr))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let load_before = loadavg();
    let started = Instant::now();
    let before: Vec<Sample> = servers
        .iter()
        .map(|s| s.sample(Duration::ZERO))
        .collect::<BoxResult<_>>()?;
    let deadline = started + options.duration;
    let load = soak_load::start(targets, mix, deadline)?;
    let mut samples: Vec<Vec<Sample>> = before.iter().map(|s| vec![s.clone()]).collect();
    let mut tick = 1u32;
    loop {
        let at = started + every * tick;
        if at > deadline {
            break;
        }
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let t = started.elapsed();
        let mut line = format!("[{:>5.0} s]", t.as_secs_f64());
        for (server, list) in servers.iter().zip(&mut samples) {
            let sample = server.sample(t)?;
            let _ = write!(
                line,
                "  {} {:.1} MiB {} fds {} thr",
                server.name,
                sample.rss as f64 / 1048576.0,
                sample.fds,
                sample.threads
            );
            list.push(sample);
        }
        let tally = load.tally();
        let _ = write!(
            line,
            "  | answered {} lost {} wrong {}",
            Tally::get(&tally.answered),
            Tally::get(&tally.lost),
            Tally::get(&tally.wrong)
        );
        if tick.is_multiple_of(6)
            || every == Duration::from_secs(10)
            || t + every > options.duration
        {
            eprintln!("{line}");
        }
        tick += 1;
    }
    let tally = load.finish();
    // Every client is gone: each server must give back its descriptors
    // (lingering closes take up to a couple of seconds).
    let settle_started = Instant::now();
    let mut settled: Vec<Sample> = Vec::new();
    for (server, first) in servers.iter().zip(&before) {
        let mut sample = server.sample(started.elapsed())?;
        while sample.fds > first.fds && settle_started.elapsed() < PROCESS_PATIENCE {
            thread::sleep(Duration::from_millis(200));
            sample = server.sample(started.elapsed())?;
        }
        settled.push(sample);
    }
    let load_after = loadavg();
    let mut ends = Vec::new();
    for server in &mut servers {
        ends.push(server.stop());
    }
    let results: Vec<ServerResult> = servers
        .iter()
        .zip(samples)
        .zip(before)
        .zip(settled)
        .zip(ends)
        .map(|((((server, samples), before), settled), end)| {
            ServerResult::new(server, samples, before, settled, end, options.duration)
        })
        .collect();
    let verdict = Verdict::new(&results, &tally, options.duration);
    let report = markdown(
        &options,
        mode,
        &results,
        &tally,
        &verdict,
        (&load_before, &load_after),
    );
    print!("{report}");
    if let Some(path) = &options.markdown {
        fs::write(path, &report)?;
        eprintln!("report written to {}", path.display());
    }
    let svg = crate::chart::soak_svg(
        &format!(
            "frontdesk soak, {} mode: the examples' server processes over {} min",
            if options.turns { "turn" } else { "Handler" },
            trim_minutes(options.duration)
        ),
        &[options.command.clone(), verdict.line.clone()],
        &chart_panels(&results),
    );
    if let Some(dir) = options.chart.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&options.chart, svg)?;
    eprintln!("chart written to {}", options.chart.display());
    eprintln!("{}", verdict.line);
    if verdict.pass {
        Ok(())
    } else {
        Err("the soak failed (see the verdict)".into())
    }
}

fn trim_minutes(d: Duration) -> String {
    let m = d.as_secs_f64() / 60.0;
    if m.fract() == 0.0 {
        format!("{m:.0}")
    } else {
        format!("{m:.2}")
    }
}

/// `cargo build --examples` with this binary's profile and target
/// directory; returns where the example binaries are.
fn build_examples() -> BoxResult<PathBuf> {
    // <target-dir>/<profile>/bench
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().ok_or("bench binary has no directory")?;
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(profile) => profile,
        None => return Err("no profile directory".into()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let status = Command::new(cargo)
        .args(["build", "--examples", "--quiet", "--manifest-path"])
        .arg(manifest)
        .args(["--profile", profile, "--target-dir"])
        .arg(target_dir)
        .stdin(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("cargo build --examples failed: {status}").into());
    }
    Ok(profile_dir.join("examples"))
}

/// A server's counters, from a `stats: name=value ...` line.
type Stats = BTreeMap<String, u64>;

fn parse_stats(line: &str) -> Option<Stats> {
    let (_, rest) = line.split_once("stats: ")?;
    rest.split_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn stat(stats: &Stats, name: &str) -> u64 {
    stats.get(name).copied().unwrap_or(0)
}

/// `accepted - (completed + rejected + dropped)`: zero once nothing is
/// open.
fn unaccounted(stats: &Stats) -> i64 {
    stat(stats, "accepted") as i64
        - (stat(stats, "completed") + stat(stats, "rejected") + stat(stats, "dropped")) as i64
}

/// One example running as a child process.
struct Example {
    /// The example's name, for the chart.
    name: &'static str,
    /// Name and distinguishing options, for the report.
    label: &'static str,
    child: Child,
    addr: SocketAddr,
    stats: Receiver<Stats>,
    /// stderr lines that were not counters (the last 100).
    log: Arc<Mutex<Vec<String>>>,
    panicked: Arc<Mutex<bool>>,
}

impl Example {
    fn start(
        dir: &Path,
        name: &'static str,
        label: &'static str,
        args: &[&str],
    ) -> BoxResult<Example> {
        let mut command = Command::new(dir.join(name));
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_us(&mut command);
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, first) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Anything else on stdout is drained and ignored.
            for _ in lines {}
        });
        let (stats_tx, stats) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let panicked = Arc::new(Mutex::new(false));
        {
            let (log, panicked) = (Arc::clone(&log), Arc::clone(&panicked));
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(stats) = parse_stats(&line) {
                        let _ = stats_tx.send(stats);
                        continue;
                    }
                    if line.contains("panicked") {
                        *panicked.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    }
                    // The last 100 lines: the end is what tells why.
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    if log.len() == 100 {
                        log.remove(0);
                    }
                    log.push(line);
                }
            });
        }
        let mut example = Example {
            name,
            label,
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stats,
            log,
            panicked,
        };
        let line = match first.recv_timeout(PROCESS_PATIENCE) {
            Ok(Some(line)) => line?,
            _ => return Err(format!("{label} did not start").into()),
        };
        example.addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("{label}: unexpected first line {line:?}"))?
            .parse()?;
        Ok(example)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Memory, descriptors and threads from `/proc`, and the counters
    /// (asked for with SIGUSR1).
    ///
    /// A server that died makes this fail, naming it, with the end of
    /// what it printed.
    fn sample(&self, t: Duration) -> BoxResult<Sample> {
        let pid = self.pid();
        // Counters answered to an earlier, timed-out request are stale.
        while self.stats.try_recv().is_ok() {}
        signal(pid, libc::SIGUSR1);
        let stats = self.stats.recv_timeout(PROCESS_PATIENCE).ok();
        let read = || -> std::io::Result<Sample> {
            Ok(Sample {
                t,
                rss: procfs::status_bytes(pid, "VmRSS")?,
                fds: fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
                threads: procfs::status_value(pid, "Threads")?,
                stats: stats.clone(),
            })
        };
        read().map_err(|error| {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let tail = log[log.len().saturating_sub(5)..].join("\n");
            format!(
                "{} (pid {pid}) could not be sampled at {} s, has it died? ({error}); the end of its stderr:\n{tail}",
                self.label,
                t.as_secs()
            )
            .into()
        })
    }

    /// SIGTERM, then the exit status and the final counters.
    fn stop(&mut self) -> End {
        signal(self.pid(), libc::SIGTERM);
        let asked = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if asked.elapsed() < PROCESS_PATIENCE => {
                    thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        let took = asked.elapsed();
        // The stderr reader sees the last line before end of file.
        let mut last = None;
        while let Ok(stats) = self.stats.recv_timeout(Duration::from_secs(2)) {
            last = Some(stats);
        }
        End {
            status,
            took,
            stats: last,
            panicked: *self.panicked.lock().unwrap_or_else(|e| e.into_inner()),
            log: self.log.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the kernel kill the example if the soak dies, however it dies.
#[allow(unsafe_code)]
fn die_with_us(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill takes plain numbers; the pid is our own child's, not
    // yet reaped, so it cannot name another process.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

#[derive(Debug, Clone)]
struct Sample {
    t: Duration,
    rss: u64,
    fds: usize,
    threads: u64,
    stats: Option<Stats>,
}

/// How a server ended.
#[derive(Debug)]
struct End {
    status: Option<ExitStatus>,
    took: Duration,
    stats: Option<Stats>,
    panicked: bool,
    log: Vec<String>,
}

/// Everything known about one server at the end.
struct ServerResult {
    label: &'static str,
    samples: Vec<Sample>,
    before: Sample,
    settled: Sample,
    end: End,
    rss_growth: f64,
    fd_growth: f64,
}

impl ServerResult {
    fn new(
        server: &Example,
        samples: Vec<Sample>,
        before: Sample,
        settled: Sample,
        end: End,
        duration: Duration,
    ) -> ServerResult {
        let growth = |figure: fn(&Sample) -> f64| {
            let (base, last) = windows(&samples, duration);
            let base = median(base.iter().map(|s| figure(s)).collect());
            let last = median(last.iter().map(|s| figure(s)).collect());
            (last / base - 1.0) * 100.0
        };
        ServerResult {
            label: server.label,
            rss_growth: growth(|s| s.rss as f64),
            fd_growth: growth(|s| s.fds as f64),
            samples,
            before,
            settled,
            end,
        }
    }

    fn identity_holds(&self) -> bool {
        self.end.stats.as_ref().is_some_and(|s| unaccounted(s) == 0)
    }

    fn exited_cleanly(&self) -> bool {
        self.end.status.is_some_and(|s| s.success()) && !self.end.panicked
    }

    fn gave_back_fds(&self) -> bool {
        self.settled.fds <= self.before.fds
    }
}

/// The samples of the warm-up's end and of the run's end: the 5 minutes
/// after minute 5 and the last 5 minutes (in shorter runs,
/// proportionally: from a quarter of the run, and the last sixth). Medians
/// over 5 minutes (31 samples) keep the connections that come and go
/// from passing for growth; a leak shows all the same over the hour.
fn windows(samples: &[Sample], duration: Duration) -> (Vec<&Sample>, Vec<&Sample>) {
    let warm = Duration::from_secs(300).min(duration / 4);
    let span = Duration::from_secs(300).min(duration / 6);
    let pick = |from: Duration, to: Duration| -> Vec<&Sample> {
        let inside: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.t >= from && s.t <= to)
            .collect();
        if inside.is_empty() {
            // The nearest sample after `from`, or the last.
            samples
                .iter()
                .find(|s| s.t >= from)
                .or(samples.last())
                .into_iter()
                .collect()
        } else {
            inside
        }
    };
    (
        pick(warm, warm + span),
        pick(duration.saturating_sub(span), duration),
    )
}

fn median(values: Vec<f64>) -> f64 {
    crate::report::median(&values)
}

struct Verdict {
    pass: bool,
    line: String,
    problems: Vec<String>,
}

impl Verdict {
    fn new(results: &[ServerResult], tally: &Tally, duration: Duration) -> Verdict {
        let judged = duration >= JUDGED_FROM;
        let mut problems = Vec::new();
        for r in results {
            if judged && r.rss_growth >= GROWTH_LIMIT {
                problems.push(format!("{}: RSS grew {:.1} %", r.label, r.rss_growth));
            }
            if judged && r.fd_growth >= GROWTH_LIMIT {
                problems.push(format!(
                    "{}: descriptors grew {:.1} %",
                    r.label, r.fd_growth
                ));
            }
            if !r.gave_back_fds() {
                problems.push(format!(
                    "{}: {} descriptors open after the clients left, {} before they came",
                    r.label, r.settled.fds, r.before.fds
                ));
            }
            match &r.end.stats {
                None => problems.push(format!("{}: no final counters", r.label)),
                Some(_) if !r.identity_holds() => problems.push(format!(
                    "{}: accepted != completed + rejected + dropped",
                    r.label
                )),
                Some(_) => {}
            }
            if !r.exited_cleanly() {
                problems.push(format!(
                    "{}: exit {:?}{}",
                    r.label,
                    r.end.status,
                    if r.end.panicked { ", panicked" } else { "" }
                ));
            }
        }
        let counts = [
            ("lost replies", Tally::get(&tally.lost)),
            ("wrong replies", Tally::get(&tally.wrong)),
            ("chat deliveries missing", Tally::get(&tally.chat_missing)),
            ("failed connects", Tally::get(&tally.connect_failed)),
            (
                "connections held too long",
                Tally::get(&tally.held_too_long),
            ),
        ];
        for (what, n) in counts {
            if n > 0 {
                problems.push(format!("{n} {what}"));
            }
        }
        let pass = problems.is_empty();
        let growth =
            |f: fn(&ServerResult) -> f64| results.iter().map(&f).fold(f64::NEG_INFINITY, f64::max);
        let line = format!(
            "verdict: {} — largest growth after warm-up: RSS {:+.1} %, descriptors {:+.1} %{}; lost replies {}; identity {} in {}/{} servers",
            if pass { "PASS" } else { "FAIL" },
            growth(|r| r.rss_growth),
            growth(|r| r.fd_growth),
            if judged { " (limit 5 %)" } else { " (not judged: run under 10 min)" },
            Tally::get(&tally.lost),
            "holds",
            results.iter().filter(|r| r.identity_holds()).count(),
            results.len(),
        );
        Verdict {
            pass,
            line,
            problems,
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn markdown(
    options: &SoakOptions,
    mode: &str,
    results: &[ServerResult],
    tally: &Tally,
    verdict: &Verdict,
    (load_before, load_after): (&str, &str),
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} mode, {} min\n",
        if mode == "turns" { "Turn" } else { "Handler" },
        trim_minutes(options.duration)
    );
    let _ = writeln!(
        out,
        "`{}` · {} CPUs · load average before {load_before}, after {load_after}\n",
        options.command,
        procfs::online_cpus()
    );
    let _ = writeln!(out, "**{}**\n", verdict.line);
    for problem in &verdict.problems {
        let _ = writeln!(out, "- problem: {problem}");
    }
    if !verdict.problems.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "| server | RSS idle → after warm-up → at the end | growth | descriptors idle → after warm-up → at the end → after the clients left | growth | threads | exit |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in results {
        let (base, last) = windows(&r.samples, options.duration);
        let at =
            |list: &[&Sample], f: fn(&Sample) -> f64| median(list.iter().map(|s| f(s)).collect());
        let _ = writeln!(
            out,
            "| {} | {} → {} → {} | {:+.1} % | {} → {:.0} → {:.0} → {} | {:+.1} % | {} → {:.0} | {} in {:.1} s |",
            r.label,
            mib(r.before.rss),
            mib(at(&base, |s| s.rss as f64) as u64),
            mib(at(&last, |s| s.rss as f64) as u64),
            r.rss_growth,
            r.before.fds,
            at(&base, |s| s.fds as f64),
            at(&last, |s| s.fds as f64),
            r.settled.fds,
            r.fd_growth,
            r.before.threads,
            at(&last, |s| s.threads as f64),
            r.end
                .status
                .map_or("killed".to_string(), |s| s.to_string()),
            r.end.took.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "\n\"After warm-up\" and \"at the end\" are the medians of the verdict's two windows (minutes 5 to 10 and the last 5 minutes of an hour).\n"
    );
    let _ = writeln!(
        out,
        "The servers' counters at the end (`accepted = completed + rejected + dropped` must hold):\n"
    );
    let _ = writeln!(
        out,
        "| server | accepted | completed | rejected (overload / max / proxy) | dropped | handler errors | timeouts idle / deadline / write | linger cut | outbox full | panics |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let Some(s) = &r.end.stats else {
            let _ = writeln!(out, "| {} | no final counters | | | | | | | | |", r.label);
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} ({} / {} / {}) | {} | {} | {} / {} / {} | {} | {} | {} |",
            r.label,
            stat(s, "accepted"),
            stat(s, "completed"),
            stat(s, "rejected"),
            stat(s, "rejected_overload"),
            stat(s, "rejected_max_connections"),
            stat(s, "rejected_proxy"),
            stat(s, "dropped"),
            stat(s, "handler_errors"),
            stat(s, "timeouts_idle"),
            stat(s, "timeouts_deadline"),
            stat(s, "timeouts_write"),
            stat(s, "linger_cut"),
            stat(s, "outbox_full"),
            stat(s, "panics"),
        );
    }
    let g = Tally::get;
    let _ = writeln!(out, "\nThe clients:\n");
    let _ = writeln!(
        out,
        "| connections | answers checked | lost | wrong | busy | failed connects | resets sent | oversized: closed cleanly / reset | PROXY garbage closed | stalled lines closed | held too long | chat lines sent / delivered / missing | slow-reader bytes |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} / {} / {} | {} |\n",
        g(&tally.connections),
        g(&tally.answered),
        g(&tally.lost),
        g(&tally.wrong),
        g(&tally.busy),
        g(&tally.connect_failed),
        g(&tally.resets),
        g(&tally.oversize_ok),
        g(&tally.oversize_reset),
        g(&tally.garbage_closed),
        g(&tally.stalls_closed),
        g(&tally.held_too_long),
        g(&tally.chat_sent),
        g(&tally.chat_delivered),
        g(&tally.chat_missing),
        g(&tally.slow_bytes),
    );
    let notes = tally.notes.lock().unwrap_or_else(|e| e.into_inner());
    if !notes.is_empty() {
        let _ = writeln!(out, "Client notes (the first {}):\n", notes.len());
        for note in notes.iter() {
            let _ = writeln!(out, "- {note}");
        }
        out.push('\n');
    }
    for r in results.iter().filter(|r| !r.exited_cleanly()) {
        let _ = writeln!(out, "stderr of {}:\n\n```text", r.label);
        for line in &r.end.log {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "```\n");
    }
    out
}

/// The chart's four panels: RSS, descriptors, threads and connections
/// accepted per second, one line per server.
fn chart_panels(results: &[ServerResult]) -> Vec<crate::chart::Panel> {
    let series = |f: &dyn Fn(&Sample, Option<&Sample>) -> Option<f64>| -> Vec<crate::chart::Line> {
        results
            .iter()
            .map(|r| crate::chart::Line {
                label: r.label.to_string(),
                points: r
                    .samples
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        let previous = i.checked_sub(1).map(|p| &r.samples[p]);
                        Some((s.t.as_secs_f64() / 60.0, f(s, previous)?))
                    })
                    .collect(),
            })
            .collect()
    };
    vec![
        crate::chart::Panel {
            title: "resident memory (MiB)".to_string(),
            lines: series(&|s, _| Some(s.rss as f64 / 1048576.0)),
        },
        crate::chart::Panel {
            title: "open descriptors".to_string(),
            lines: series(&|s, _| Some(s.fds as f64)),
        },
        crate::chart::Panel {
            title: "threads".to_string(),
            lines: series(&|s, _| Some(s.threads as f64)),
        },
        crate::chart::Panel {
            title: "connections accepted per second".to_string(),
            lines: series(&|s, previous| {
                let (now, then) = (s.stats.as_ref()?, previous?.stats.as_ref()?);
                let dt = (s.t - previous?.t).as_secs_f64();
                Some((stat(now, "accepted") as f64 - stat(then, "accepted") as f64) / dt)
            }),
        },
    ]
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stats_line() {
        let stats =
            parse_stats("[2025 INFO commands] stats: accepted=5 completed=3 rejected=1 dropped=1")
                .unwrap();
        assert_eq!(stat(&stats, "accepted"), 5);
        assert_eq!(unaccounted(&stats), 0);
        assert_eq!(parse_stats("listening on 1.2.3.4:5"), None);
        assert_eq!(parse_stats("stats: accepted=x"), None);
    }

    #[test]
    fn windows_follow_the_run() {
        let samples: Vec<Sample> = (0..=360)
            .map(|i| Sample {
                t: Duration::from_secs(i * 10),
                rss: 0,
                fds: 0,
                threads: 0,
                stats: None,
            })
            .collect();
        let (base, last) = windows(&samples, Duration::from_secs(3600));
        assert_eq!(base.first().unwrap().t, Duration::from_secs(300));
        assert_eq!(base.len(), 31);
        assert_eq!(last.last().unwrap().t, Duration::from_secs(3600));
        assert_eq!(last.len(), 31);
    }
}
