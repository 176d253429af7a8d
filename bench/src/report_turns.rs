//! The tables of the turn mode (issue 7): busy line clients, the chat
//! relay, idle connections, trickling clients, and the targets.

use std::fmt::Write;

use crate::report::{bytes, median, min_max, percentile, ratio_cell, short, spread, thousands};
use crate::run::{IdleSample, Sample, Scenario, ScenarioResult, CHAT_RATE, CHAT_SENDERS};
use crate::servers::Kind;

const TURNS: Kind = Kind::FrontdeskTurns;

pub fn markdown(out: &mut String, results: &[ScenarioResult]) {
    if !results.iter().any(|r| r.index(TURNS).is_some()) {
        return;
    }
    let _ = writeln!(
        out,
        "### Turn mode\n\nfrontdesk-turns = frontdesk's turn mode (`TurnHandler`, `workers(8)`); epoll = a single-threaded level-triggered epoll loop; frontdesk = the Handler mode. Ratios are per round, against the baseline measured in the same round: median (each round).\n"
    );
    busy_table(out, results);
    chat_table(out, results);
    idle_table(out, results);
    trickle_table(out, results);
    targets(out, results);
}

fn load_of(sample: &Sample, figure: fn(&crate::run::LoadSample) -> f64) -> f64 {
    match sample {
        Sample::Load(s) => figure(s),
        _ => f64::NAN,
    }
}

fn busy_table(out: &mut String, results: &[ScenarioResult]) {
    let lines: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| matches!(r.scenario, Scenario::Lines { .. }) && r.index(TURNS).is_some())
        .collect();
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "#### Busy line clients\n\nC clients each send `ping` and wait for `pong`, as fast as they can. msg/s and server CPU µs per request: median (min–max).\n"
    );
    let _ = writeln!(
        out,
        "| scenario | tokio msg/s | frontdesk-turns msg/s | epoll msg/s | frontdesk (Handler) msg/s | turns/tokio msg/s | tokio µs/req | turns µs/req | epoll µs/req | turns/tokio CPU | turns: clients never answered (max) | load generator CPU % (turns run) |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for result in lines {
        let fig = |kind: Kind, f: fn(&crate::run::LoadSample) -> f64| -> Vec<f64> {
            result
                .index(kind)
                .map(|s| result.load(s).iter().map(f).collect())
                .unwrap_or_default()
        };
        let starved = fig(TURNS, |s| s.starved as f64)
            .into_iter()
            .fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            result.scenario,
            spread(&fig(Kind::Tokio, |s| s.rate), thousands),
            spread(&fig(TURNS, |s| s.rate), thousands),
            spread(&fig(Kind::Epoll, |s| s.rate), thousands),
            spread(&fig(Kind::Frontdesk, |s| s.rate), thousands),
            ratio_cell(&result.ratios_of(TURNS, Kind::Tokio, |s| load_of(s, |l| l.rate))),
            spread(&fig(Kind::Tokio, |s| s.cpu_per_req_us), short),
            spread(&fig(TURNS, |s| s.cpu_per_req_us), short),
            spread(&fig(Kind::Epoll, |s| s.cpu_per_req_us), short),
            ratio_cell(&result.ratios_of(TURNS, Kind::Tokio, |s| load_of(s, |l| l.cpu_per_req_us))),
            thousands(starved),
            median(&fig(TURNS, |s| s.client_cpu_pct)),
        );
    }
    let _ = writeln!(out);
}

fn chat_of(sample: &Sample, figure: fn(&crate::run::ChatSample) -> f64) -> f64 {
    match sample {
        Sample::Chat(s) => figure(s),
        _ => f64::NAN,
    }
}

fn chat_table(out: &mut String, results: &[ScenarioResult]) {
    for result in results {
        let Scenario::Chat { n } = result.scenario else {
            continue;
        };
        let _ = writeln!(
            out,
            "#### Chat relay\n\n{n} clients, {CHAT_SENDERS} of them sending {CHAT_RATE} lines/s each (60-byte lines stamped with their send time), every line relayed to the {} others. Delivery = lines received ÷ lines sent × {}. Fan-out latency: a sender's write to a receiver's read, over every delivery. CPU per delivery: server CPU (utime + stime) over the sending and the drain ÷ deliveries made. Peak RSS: the server's VmHWM at the end. Median (min–max) over the rounds; ratios per round.\n",
            n - 1,
            n - 1
        );
        let _ = writeln!(
            out,
            "| server | delivery | fan-out p50 ms | fan-out p99 ms | CPU µs/delivery | ÷ epoll | peak RSS | ÷ tokio | server CPU % | load generator CPU % |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for (s, spec) in result.servers.iter().enumerate() {
            if let Some(reason) = result.skipped(s) {
                let _ = writeln!(out, "| {} | not run: {reason} |||||||||", spec.label());
                continue;
            }
            let samples = result.chat(s);
            let get = |f: fn(&crate::run::ChatSample) -> f64| -> Vec<f64> {
                samples.iter().map(f).collect()
            };
            let pct = |v: f64| format!("{:.2}%", v * 100.0);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |",
                spec.label(),
                spread(&get(|c| c.delivery()), pct),
                spread(&get(|c| c.p50_us / 1000.0), short),
                spread(&get(|c| c.p99_us / 1000.0), short),
                spread(&get(|c| c.cpu_per_delivery_us), short),
                ratio_cell(
                    &result.ratios_of(spec.kind, Kind::Epoll, |x| chat_of(x, |c| c
                        .cpu_per_delivery_us))
                ),
                spread(&get(|c| c.hwm as f64 / 1024.0), |v| format!(
                    "{} KiB",
                    thousands(v)
                )),
                ratio_cell(
                    &result.ratios_of(spec.kind, Kind::Tokio, |x| chat_of(x, |c| c.hwm as f64))
                ),
                median(&get(|c| c.server_cpu_pct)),
                median(&get(|c| c.client_cpu_pct)),
            );
        }
        let _ = writeln!(out);
        burst_table(out, result, n);
    }
}

/// Issue 14's "1,000 clients joining: ms until all heard every hello",
/// measured after the senders' drain.
fn burst_table(out: &mut String, result: &ScenarioResult, n: usize) {
    let _ = writeln!(
        out,
        "Hello burst, after the drain: every one of the {n} clients writes one 60-byte `hello` line at once (the load generator writes them 64 at a time without blocking, reading what has arrived in between), and every client is read until it has heard the {} others' hellos, each checked ({} deliveries). Time from the first hello written to the last heard; server CPU over the burst ÷ hellos delivered; peak RSS = VmHWM after the burst (the table above reads it before). Median (min–max) over the rounds; ratios per round.\n",
        n - 1,
        thousands((n * (n - 1)) as f64)
    );
    let _ = writeln!(
        out,
        "| server | hello burst, ms until all heard every hello | ÷ epoll | ÷ tokio | CPU µs/hello | peak RSS after the burst |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|");
    for (s, spec) in result.servers.iter().enumerate() {
        if let Some(reason) = result.skipped(s) {
            let _ = writeln!(out, "| {} | not run: {reason} |||||", spec.label());
            continue;
        }
        let samples = result.chat(s);
        let get =
            |f: fn(&crate::run::ChatSample) -> f64| -> Vec<f64> { samples.iter().map(f).collect() };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            spec.label(),
            spread(&get(|c| c.burst_ms), short),
            ratio_cell(&result.ratios_of(spec.kind, Kind::Epoll, |x| chat_of(x, |c| c.burst_ms))),
            ratio_cell(&result.ratios_of(spec.kind, Kind::Tokio, |x| chat_of(x, |c| c.burst_ms))),
            spread(&get(|c| c.burst_cpu_per_hello_us), short),
            spread(&get(|c| c.hwm_burst as f64 / 1024.0), |v| format!(
                "{} KiB",
                thousands(v)
            )),
        );
    }
    let _ = writeln!(out);
}

/// The median time a fresh client waited, in ms, in one idle run.
fn probe_median(sample: &IdleSample) -> f64 {
    let times: Vec<f64> = sample
        .probes
        .iter()
        .map(|(d, _)| d.as_secs_f64() * 1000.0)
        .collect();
    median(&times)
}

fn idle_of(sample: &Sample, figure: fn(&IdleSample) -> f64) -> f64 {
    match sample {
        Sample::Idle(s) => figure(s),
        _ => f64::NAN,
    }
}

fn idle_table(out: &mut String, results: &[ScenarioResult]) {
    let idle: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| matches!(r.scenario, Scenario::Idle { .. }) && r.index(TURNS).is_some())
        .collect();
    if idle.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "#### Idle connections held\n\nN clients connect and each does one `ping`; *held* = answered `pong` and still connected (rejected clients are not counted; the minimum over the rounds). Then 10 fresh clients each connect and `ping`: time to `pong`, median of each round's median (min–max over every fresh client). Memory per held connection = (VmHWM, or RssAnon, with all held − the same measured after start and one served client, before the N) ÷ held.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | server | held | fresh client ms | ÷ epoll | VmHWM per held | RssAnon per held |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|");
    for result in idle {
        for (s, spec) in result.servers.iter().enumerate() {
            if let Some(reason) = result.skipped(s) {
                let _ = writeln!(
                    out,
                    "| {} | {} | not run: {reason} |||||",
                    result.scenario,
                    spec.label()
                );
                continue;
            }
            let samples = result.idle(s);
            let held: Vec<f64> = samples.iter().map(|x| x.served as f64).collect();
            let medians: Vec<f64> = samples.iter().map(probe_median).collect();
            let all: Vec<f64> = samples
                .iter()
                .flat_map(|x| x.probes.iter().map(|(d, _)| d.as_secs_f64() * 1000.0))
                .collect();
            let (lo, hi) = min_max(&all);
            let per: Vec<f64> = samples
                .iter()
                .map(|x| x.bytes_per_served().unwrap_or(f64::NAN))
                .collect();
            let anon: Vec<f64> = samples
                .iter()
                .map(|x| x.anon_per_served().unwrap_or(f64::NAN))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} ({}–{}) | {} | {} | {} |",
                result.scenario,
                spec.label(),
                thousands(held.iter().copied().fold(f64::INFINITY, f64::min)),
                short(median(&medians)),
                short(lo),
                short(hi),
                ratio_cell(&result.ratios_of(spec.kind, Kind::Epoll, |x| idle_of(x, probe_median))),
                spread(&per, bytes),
                spread(&anon, bytes),
            );
        }
    }
    let _ = writeln!(out);
}

fn trickle_table(out: &mut String, results: &[ScenarioResult]) {
    for result in results {
        let Scenario::Trickle { n } = result.scenario else {
            continue;
        };
        let _ = writeln!(
            out,
            "#### Trickling clients\n\nFresh clients (connect, `ping`, `pong`) timed first with no other client, then while {n} clients each send one byte of a line they never finish every 300 ms. Times pooled over the rounds, in ms; delay = with − without (p50: median of the per-round differences, with their range).\n"
        );
        let _ = writeln!(
            out,
            "| server | without p50 / p99 | with {n} tricklers p50 / p99 | delay p50 | delay p99 | tricklers held (min) |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|");
        for (s, spec) in result.servers.iter().enumerate() {
            let samples = result.trickle(s);
            if samples.is_empty() {
                continue;
            }
            let quiet: Vec<f64> = samples.iter().flat_map(|x| x.quiet.clone()).collect();
            let with: Vec<f64> = samples.iter().flat_map(|x| x.trickling.clone()).collect();
            let deltas: Vec<f64> = samples
                .iter()
                .map(|x| median(&x.trickling) - median(&x.quiet))
                .collect();
            let held = samples.iter().map(|x| x.held).min().unwrap_or(0);
            let _ = writeln!(
                out,
                "| {} | {} / {} | {} / {} | {} | {:+.3} | {held} of {n} |",
                spec.label(),
                short(median(&quiet)),
                short(percentile(&quiet, 0.99)),
                short(median(&with)),
                short(percentile(&with, 0.99)),
                spread(&deltas, |v| format!("{v:+.3}")),
                percentile(&with, 0.99) - percentile(&quiet, 0.99),
            );
        }
        let _ = writeln!(out);
    }
}

fn targets(out: &mut String, results: &[ScenarioResult]) {
    let mut rows: Vec<(String, String, bool)> = Vec::new();
    for result in results {
        let Some(t) = result.index(TURNS) else {
            continue;
        };
        match result.scenario {
            Scenario::Idle { n } => {
                let samples = result.idle(t);
                let held = samples.iter().map(|x| x.served).min().unwrap_or(0);
                if n >= 10_000 {
                    rows.push((
                        format!("{n} idle clients held by 8 workers"),
                        format!("{held} held (min over rounds)"),
                        held >= n,
                    ));
                }
                let r = result.ratios_of(TURNS, Kind::Epoll, |x| idle_of(x, probe_median));
                let (_, hi) = min_max(&r);
                rows.push((
                    format!("idle N={n}: fresh client answered within 1.5× epoll's time"),
                    format!("{:.2}× (rounds up to {hi:.2}×)", median(&r)),
                    median(&r) <= 1.5,
                ));
                let per: Vec<f64> = samples
                    .iter()
                    .map(|x| x.bytes_per_served().unwrap_or(f64::NAN))
                    .collect();
                let (_, hi) = min_max(&per);
                rows.push((
                    format!("idle N={n}: ≤ 0.5 KiB per idle connection (VmHWM)"),
                    format!("{} (max {})", bytes(median(&per)), bytes(hi)),
                    median(&per) <= 512.0,
                ));
            }
            Scenario::Chat { .. } => {
                let samples = result.chat(t);
                let worst = samples.iter().map(|c| c.delivery()).fold(1.0, f64::min);
                rows.push((
                    "chat: 100% delivery".into(),
                    format!("{:.3}% (min over rounds)", worst * 100.0),
                    worst >= 1.0,
                ));
                let cpu = result.ratios_of(TURNS, Kind::Epoll, |x| {
                    chat_of(x, |c| c.cpu_per_delivery_us)
                });
                rows.push((
                    "chat: CPU per delivery ≤ 1.1× epoll".into(),
                    format!("{:.2}× ({})", median(&cpu), list(&cpu)),
                    median(&cpu) <= 1.1,
                ));
                let p99 = result.ratios_of(TURNS, Kind::Tokio, |x| chat_of(x, |c| c.p99_us));
                rows.push((
                    "chat: fan-out p99 ≤ tokio's".into(),
                    format!("{:.2}× ({})", median(&p99), list(&p99)),
                    median(&p99) <= 1.0,
                ));
                let rss = result.ratios_of(TURNS, Kind::Tokio, |x| chat_of(x, |c| c.hwm as f64));
                rows.push((
                    "chat: peak RSS ≤ tokio's".into(),
                    format!("{:.2}× ({})", median(&rss), list(&rss)),
                    median(&rss) <= 1.0,
                ));
                let epoll = result.ratios_of(TURNS, Kind::Epoll, |x| chat_of(x, |c| c.burst_ms));
                let tokio = result.ratios_of(TURNS, Kind::Tokio, |x| chat_of(x, |c| c.burst_ms));
                let ms: Vec<f64> = samples.iter().map(|c| c.burst_ms).collect();
                rows.push((
                    "chat: hello burst, all heard every hello within 2× epoll's time (issue 14)"
                        .into(),
                    format!(
                        "{} ms; {:.2}× epoll ({}), {:.2}× tokio ({})",
                        short(median(&ms)),
                        median(&epoll),
                        list(&epoll),
                        median(&tokio),
                        list(&tokio)
                    ),
                    median(&epoll) <= 2.0,
                ));
            }
            Scenario::Lines { c: 64 } => {
                let starved = result.load(t).iter().map(|x| x.starved).max().unwrap_or(0);
                rows.push((
                    "64 busy line clients on 8 workers: every client answered".into(),
                    format!("{starved} never answered (max over rounds)"),
                    starved == 0,
                ));
                let rate = result.ratios_of(TURNS, Kind::Tokio, |x| load_of(x, |l| l.rate));
                rows.push((
                    "64 busy line clients: msg/s ≥ 1.0× tokio".into(),
                    format!("{:.2}× ({})", median(&rate), list(&rate)),
                    median(&rate) >= 1.0,
                ));
                let cpu =
                    result.ratios_of(TURNS, Kind::Tokio, |x| load_of(x, |l| l.cpu_per_req_us));
                rows.push((
                    "64 busy line clients: CPU per request ≤ 1.1× tokio".into(),
                    format!("{:.2}× ({})", median(&cpu), list(&cpu)),
                    median(&cpu) <= 1.1,
                ));
            }
            Scenario::Trickle { n } => {
                let samples = result.trickle(t);
                let deltas: Vec<f64> = samples
                    .iter()
                    .map(|x| median(&x.trickling) - median(&x.quiet))
                    .collect();
                let quiet: Vec<f64> = samples.iter().flat_map(|x| x.quiet.clone()).collect();
                let with: Vec<f64> = samples.iter().flat_map(|x| x.trickling.clone()).collect();
                let p99 = percentile(&with, 0.99) - percentile(&quiet, 0.99);
                let (_, hi) = min_max(&deltas);
                rows.push((
                    format!("{n} trickling clients delay a fresh client by ≤ 1 ms"),
                    format!(
                        "p50 {:+.3} ms (rounds up to {hi:+.3}), p99 {p99:+.3} ms",
                        median(&deltas)
                    ),
                    hi <= 1.0 && p99 <= 1.0,
                ));
            }
            _ => {}
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "#### Targets (issue 7; the hello burst: issue 14)\n");
    let _ = writeln!(out, "| target | measured | met |");
    let _ = writeln!(out, "|---|--:|:-:|");
    for (target, measured, met) in rows {
        let met = if met { "yes" } else { "**no**" };
        let _ = writeln!(out, "| {target} | {measured} | {met} |");
    }
    let _ = writeln!(out);
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
