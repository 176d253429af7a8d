//! Compares frontdesk (both modes) with the servers its users would
//! otherwise write: a thread-per-connection std server, a tokio server and
//! a single-threaded epoll loop. See
//! docs/performance.md for the method and the results.
//!
//! ```text
//! cargo run --release -p bench              # full run, about 12 minutes
//! cargo run --release -p bench -- --quick   # about 2.5 minutes
//! ```
//!
//! `cargo run --release -p bench -- soak --minutes N [--turns]` is the
//! soak instead: the examples under a mix of clients for N minutes (see
//! `soak.rs` and docs/reliability.md).
//!
//! Options: `--rounds N` (default 3), `--only TEXT` (scenarios whose name
//! contains TEXT), `--no-pin` (let the OS place the load generator and the
//! servers), `--chart PATH` (default docs/performance.svg for a full run, a
//! file in the temporary directory for `--quick`), `--markdown PATH` (also
//! write the tables there).
//!
//! Each server runs in a child process (`bench serve KIND PROTOCOL ...`)
//! started fresh for every measured run, so that its CPU time and peak
//! memory can be read from `/proc/PID`. The load generator is pinned to CPU
//! 0 and the servers to the other CPUs, so that they never compete for a
//! core and every run sees the same placement. Everything runs on
//! 127.0.0.1.

mod chart;
mod chat;
mod child;
mod epoll;
mod load;
mod procfs;
mod report;
mod report_turns;
mod run;
mod servers;
mod soak;
mod soak_load;

use std::error::Error;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::load::{Mark, Timing};
use crate::run::{
    Sample, Scenario, ScenarioResult, FD_ALL, FD_BLOCK_IDLE, FD_MAIN, FD_REJECT, FD_TURNS,
};

type BoxResult<T> = Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => servers::serve_main(&args[1..]),
        Some("load") => load_main(&args[1..]),
        Some("soak") => soak::soak_main(&args[1..]),
        _ => drive(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Options {
    quick: bool,
    rounds: usize,
    pin: bool,
    only: Option<String>,
    chart: Option<PathBuf>,
    markdown: Option<PathBuf>,
}

fn parse(args: &[String]) -> BoxResult<Options> {
    let mut options = Options {
        quick: false,
        rounds: 3,
        pin: true,
        only: None,
        chart: None,
        markdown: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--rounds" => options.rounds = value()?.parse()?,
            "--no-pin" => options.pin = false,
            "--only" => options.only = Some(value()?),
            "--chart" => options.chart = Some(value()?.into()),
            "--markdown" => options.markdown = Some(value()?.into()),
            "-h" | "--help" => {
                println!(
                    "usage: cargo run --release -p bench -- [--quick] [--rounds N] [--only TEXT] [--no-pin] [--chart PATH] [--markdown PATH]"
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument `{arg}` (try --help)").into()),
        }
    }
    if options.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    Ok(options)
}

/// Connections the idle scenario holds, where the open-file limit allows.
const IDLE_SIZES: [usize; 2] = [1_000, 10_000];

fn scenarios() -> Vec<Scenario> {
    let mut list = Vec::new();
    for size in [64, 16 * 1024] {
        for c in [1, 8, 64] {
            list.push(Scenario::PingPong { c, size });
        }
    }
    for c in [1, 8, 64] {
        list.push(Scenario::Lines { c });
    }
    list.push(Scenario::Churn { c: 8 });
    for n in IDLE_SIZES {
        list.push(Scenario::Idle { n });
    }
    list.push(Scenario::PoolFull);
    list.push(Scenario::Chat { n: 1_000 });
    list.push(Scenario::Trickle { n: 200 });
    list
}

fn drive(args: &[String]) -> BoxResult<()> {
    let options = parse(args)?;
    let fd_limit = procfs::raise_fd_limit()?;
    let cpus = procfs::online_cpus();
    let placement = if options.pin && cpus >= 2 {
        // Children inherit this; each server then moves itself to the
        // other CPUs.
        procfs::pin_to_cpus("0")?;
        let others: Vec<String> = (1..cpus).map(|c| c.to_string()).collect();
        child::pin_servers(others.join(","));
        format!(
            "load generator pinned to CPU 0, servers to CPU {}",
            others.join(",")
        )
    } else {
        "load generator and servers placed by the OS (not pinned)".to_string()
    };
    let timing = if options.quick {
        Timing {
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(400),
            chat: Duration::from_secs(2),
        }
    } else {
        Timing {
            warmup: Duration::from_millis(300),
            measure: Duration::from_millis(2000),
            chat: Duration::from_secs(5),
        }
    };
    let mut list = scenarios();
    if let Some(only) = &options.only {
        list.retain(|s| s.to_string().contains(only.as_str()));
    }
    let runs: usize = list.iter().map(|s| s.servers().len()).sum::<usize>() * options.rounds;
    let load_before = loadavg();
    let busy_before = procfs::machine_busy()?;
    let ours_before = procfs::own_and_children_cpu()?;
    let started = Instant::now();
    let mut results = Vec::new();
    let mut done = 0;
    for scenario in list {
        let servers = scenario.servers();
        let mut result = ScenarioResult {
            scenario,
            servers: servers.clone(),
            rounds: Vec::new(),
        };
        for round in 1..=options.rounds {
            let mut samples = Vec::new();
            for spec in &servers {
                done += 1;
                let sample = match run::skip_reason(*spec, scenario, fd_limit) {
                    Some(reason) => Sample::Skipped(reason),
                    None => run::run_once(*spec, scenario, timing)
                        .map_err(|e| format!("{scenario}, {}: {e}", spec.label()))?,
                };
                eprintln!(
                    "[{done:>3}/{runs}] {:>6.1}s  {scenario:<24} round {round}  {:<10} {}",
                    started.elapsed().as_secs_f64(),
                    spec.kind.name(),
                    summary(&sample)
                );
                samples.push(sample);
            }
            result.rounds.push(samples);
        }
        results.push(result);
    }
    let elapsed = started.elapsed();
    let load_after = loadavg();
    let busy = procfs::machine_busy()?.saturating_sub(busy_before);
    let ours = procfs::own_and_children_cpu()?.saturating_sub(ours_before);
    let capacity = elapsed.as_secs_f64() * cpus as f64;
    let others_pct = busy.saturating_sub(ours).as_secs_f64() * 100.0 / capacity;
    let ours_pct = ours.as_secs_f64() * 100.0 / capacity;

    let command = if options.quick {
        "cargo run --release -p bench -- --quick"
    } else {
        "cargo run --release -p bench"
    };
    let mut out = String::new();
    out.push_str(&format!(
        "## Results\n\n`{command}`: {} rounds, servers alternated in each scenario (A B C A B C …), a fresh server process per run; warm-up {} ms, measured window {} ms; whole run {:.0} s. {placement}.\n\n",
        options.rounds,
        timing.warmup.as_millis(),
        timing.measure.as_millis(),
        elapsed.as_secs_f64()
    ));
    out.push_str(&format!(
        "Machine: {cpus} CPUs, {}, Linux {}, open-file limit {fd_limit}. Load average (1, 5, 15 min) before the run: {load_before}; after: {load_after} (this includes the benchmark's own threads). CPU used during the run by the benchmark: {ours_pct:.0}% of the machine; by other processes: {others_pct:.0}%.\n\n",
        cpu_model(),
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    ));
    out.push_str(&format!(
        "frontdesk = the examples' `Handler`s: {FD_MAIN} (load scenarios; at C = 64 also {FD_ALL}); {FD_REJECT} with the busy reply (idle); {FD_BLOCK_IDLE} (pool full). frontdesk-turns = the examples' `TurnHandler`s: workers={}. tokio: multi-thread runtime with its default worker count (one per CPU it may use). Load generator: one thread, a mio event loop.\n\n",
        FD_TURNS.workers
    ));
    out.push_str(&report::markdown(&results));
    print!("{out}");
    if let Some(path) = &options.markdown {
        fs::write(path, &out)?;
        eprintln!("tables written to {}", path.display());
    }
    let chart_path = options.chart.clone().unwrap_or_else(|| {
        if options.quick {
            std::env::temp_dir().join("frontdesk-bench-quick.svg")
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/performance.svg")
        }
    });
    let subtitle = format!(
        "{command} · medians of {} rounds · {cpus} CPUs ({}) · {placement}",
        options.rounds,
        cpu_model()
    );
    if let Some(svg) = chart::svg(&results, &subtitle) {
        if let Some(dir) = chart_path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&chart_path, svg)?;
        eprintln!("chart written to {}", chart_path.display());
    }
    Ok(())
}

/// `bench load echo|lines|churn ADDR C [SIZE] [MS]`, or `bench load chat
/// ADDR CLIENTS [SENDERS] [MS]`: drives a server that is already running
/// (for profiling it), then prints what it measured; with
/// `BENCH_SERVER_PID` set, also the server's CPU over the measured window,
/// and with `BENCH_PERF_CONTROL`, the FIFO of a `perf record` to enable
/// over that window only.
fn load_main(args: &[String]) -> BoxResult<()> {
    let usage =
        "usage: bench load echo|lines|churn ADDR C [SIZE] [MS], or bench load chat ADDR CLIENTS [SENDERS] [MS]";
    let [kind, addr, c, rest @ ..] = args else {
        return Err(usage.into());
    };
    let addr = addr.parse()?;
    let c: usize = c.parse()?;
    let number = |i: usize, default: u64| -> BoxResult<u64> {
        Ok(rest
            .get(i)
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let timing = Timing {
        warmup: Duration::ZERO,
        measure: Duration::from_millis(number(1, 5000)?),
        chat: Duration::ZERO,
    };
    // With `BENCH_SERVER_PID`, the server's CPU time over the measured
    // window alone (not the connecting, nor the hello burst): what an A/B
    // comparison of two builds needs, without a profiler attached.
    let server: Option<u32> = std::env::var("BENCH_SERVER_PID")
        .ok()
        .map(|pid| pid.parse())
        .transpose()?;
    // With `BENCH_PERF_CONTROL` naming the control FIFO of a `perf record
    // --control fifo:PATH -D -1`, the profile covers the same window.
    let mut perf_control = std::env::var_os("BENCH_PERF_CONTROL")
        .map(|path| fs::OpenOptions::new().write(true).open(path))
        .transpose()?;
    let mut window_cpu = (None, None);
    let mut mark = |mark| {
        let (command, cpu): (&[u8], _) = match mark {
            Mark::Start => (b"enable\n", &mut window_cpu.0),
            Mark::End => (b"disable\n", &mut window_cpu.1),
            Mark::BurstStart | Mark::BurstEnd => return,
        };
        if let Some(control) = &mut perf_control {
            use std::io::Write;
            let _ = control.write_all(command);
        }
        if let Some(pid) = server {
            *cpu = procfs::cpu_time(pid).ok();
        }
    };
    if kind == "chat" {
        let load = chat::ChatLoad {
            clients: c,
            senders: number(0, run::CHAT_SENDERS as u64)? as usize,
            rate: run::CHAT_RATE,
            duration: timing.measure,
        };
        let window = chat::chat(addr, load, &mut mark)?;
        let percentile = run::quantiles_us(window.latencies);
        let quantile_ms = |q: f64| percentile(q) / 1000.0;
        println!(
            "{} of {} deliveries in {:.2} s (p50 {:.2} ms, p99 {:.2} ms), then the hello burst in {:.0} ms",
            window.received,
            window.expected,
            window.elapsed.as_secs_f64(),
            quantile_ms(0.5),
            quantile_ms(0.99),
            window.burst.as_secs_f64() * 1000.0
        );
        print_server_cpu(window_cpu, window.received);
        return Ok(());
    }
    let window = match kind.as_str() {
        "echo" => {
            let size = number(0, 64)? as usize;
            load::ping_pong(addr, c, load::Exchange::Echo { size }, timing, &mut mark)?
        }
        "lines" => load::ping_pong(addr, c, load::Exchange::Line, timing, &mut mark)?,
        "churn" => load::churn(addr, c, timing, &mut mark)?,
        _ => return Err(usage.into()),
    };
    println!(
        "{} exchanges in {:.2} s: {:.0}/s, {} failed connections",
        window.completed,
        window.elapsed.as_secs_f64(),
        window.completed as f64 / window.elapsed.as_secs_f64(),
        window.errors
    );
    print_server_cpu(window_cpu, window.completed);
    Ok(())
}

/// The server's CPU per exchange or delivery over the measured window,
/// when `bench load` was given its pid.
fn print_server_cpu(window: (Option<Duration>, Option<Duration>), served: u64) {
    if let (Some(start), Some(end)) = window {
        let micros = end.saturating_sub(start).as_secs_f64() * 1e6;
        println!(
            "server CPU: {:.0} ms, {:.3} µs each",
            micros / 1000.0,
            micros / served.max(1) as f64
        );
    }
}

fn summary(sample: &Sample) -> String {
    match sample {
        Sample::Load(s) => format!(
            "{:>9.0}/s  p99 {:>8.1} µs  cpu {:>6.2} µs/req  server {:>3.0}%  loadgen {:>3.0}%{}",
            s.rate,
            s.p99_us,
            s.cpu_per_req_us,
            s.server_cpu_pct,
            s.client_cpu_pct,
            if s.starved > 0 {
                format!("  {} clients never answered", s.starved)
            } else {
                String::new()
            }
        ),
        Sample::Skipped(reason) => format!("not run: {reason}"),
        Sample::Chat(s) => format!(
            "sent {} in {:.1} s (join {:.0} ms)  delivered {}/{} ({:.4})  fan-out p50 {:.0} µs p99 {:.0} µs  cpu {:.2} µs/delivery  server {:.0}%  loadgen {:.0}%  VmHWM {} → {} KiB  hello burst {:.0} ms ({} hellos, cpu {:.2} µs/hello, VmHWM → {} KiB{})",
            s.sent,
            s.elapsed.as_secs_f64(),
            s.join.as_secs_f64() * 1000.0,
            s.received,
            s.expected,
            s.delivery(),
            s.p50_us,
            s.p99_us,
            s.cpu_per_delivery_us,
            s.server_cpu_pct,
            s.client_cpu_pct,
            s.hwm_start / 1024,
            s.hwm / 1024,
            s.burst_ms,
            s.hellos,
            s.burst_cpu_per_hello_us,
            s.hwm_burst / 1024,
            if s.late > 0 {
                format!(", {} senders' lines arrived late, during it", s.late)
            } else {
                String::new()
            }
        ),
        Sample::Trickle(s) => format!(
            "fresh client p50 {:.3} → {:.3} ms, p99 {:.3} → {:.3} ms; tricklers held {}, {} bytes",
            report::median(&s.quiet),
            report::median(&s.trickling),
            report::percentile(&s.quiet, 0.99),
            report::percentile(&s.trickling, 0.99),
            s.held,
            s.bytes
        ),
        Sample::Idle(s) => format!(
            "served {} busy {}  open {:.0} ms  VmHWM {} → {} KiB  first probe {:.1} ms",
            s.served,
            s.busy,
            s.open.as_secs_f64() * 1000.0,
            s.hwm_before / 1024,
            s.hwm_after / 1024,
            s.probes
                .first()
                .map_or(f64::NAN, |p| p.0.as_secs_f64() * 1000.0)
        ),
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}
