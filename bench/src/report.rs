//! The Markdown tables printed at the end of a run.

use std::fmt::Write;
use std::time::Duration;

use crate::run::{IdleSample, LoadSample, Scenario, ScenarioResult};
use crate::servers::Kind;

/// The median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// The `q` quantile of `values` (nearest rank; NaN when empty).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i]
}

pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "–".to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// A figure with about three significant digits.
pub fn short(value: f64) -> String {
    if !value.is_finite() {
        "–".to_string()
    } else if value >= 1000.0 {
        thousands(value)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// `median (min–max)` of one figure over the rounds.
pub fn spread(values: &[f64], format: fn(f64) -> String) -> String {
    let (lo, hi) = min_max(values);
    if values.len() < 2 {
        return format(median(values));
    }
    format!("{} ({}–{})", format(median(values)), format(lo), format(hi))
}

/// `median (r1, r2, r3)` of per-round ratios.
pub fn ratio_cell(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return "–".to_string();
    }
    let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    format!("**{:.2}** ({})", median(ratios), rounds.join(", "))
}

/// The servers of the load tables: the two peers, then frontdesk's two
/// modes (the first server of each kind: the examples as `--workers 8`
/// runs them).
const PEERS: [Kind; 4] = [
    Kind::Std,
    Kind::Tokio,
    Kind::Frontdesk,
    Kind::FrontdeskTurns,
];

fn figures(result: &ScenarioResult, kind: Kind, figure: fn(&LoadSample) -> f64) -> Vec<f64> {
    result
        .index(kind)
        .map(|s| result.load(s).iter().map(figure).collect())
        .unwrap_or_default()
}

/// The ratio cells of frontdesk's two modes against the two peers:
/// Handler ÷ std, Handler ÷ tokio, turns ÷ std, turns ÷ tokio.
fn mode_ratios(result: &ScenarioResult, figure: fn(&LoadSample) -> f64) -> [String; 4] {
    let cell = |a, b| ratio_cell(&result.load_ratios(a, b, figure));
    [
        cell(Kind::Frontdesk, Kind::Std),
        cell(Kind::Frontdesk, Kind::Tokio),
        cell(Kind::FrontdeskTurns, Kind::Std),
        cell(Kind::FrontdeskTurns, Kind::Tokio),
    ]
}

/// Clients of `kind` never answered in the run (median over the rounds),
/// as a note for its cell, when there were any.
fn starved_note(result: &ScenarioResult, kind: Kind) -> String {
    let starved = median(&figures(result, kind, |s| s.starved as f64));
    if starved > 0.0 {
        format!("; **{} clients never answered**", thousands(starved))
    } else {
        String::new()
    }
}

/// Every table, as Markdown.
pub fn markdown(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    let load: Vec<&ScenarioResult> = results.iter().filter(|r| r.scenario.is_load()).collect();
    if !load.is_empty() {
        throughput_table(&mut out, &load);
        latency_table(&mut out, &load);
        cpu_table(&mut out, &load);
    }
    let idle: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| matches!(r.scenario, Scenario::Idle { .. } | Scenario::PoolFull))
        .collect();
    if !idle.is_empty() {
        idle_table(&mut out, &idle);
    }
    targets_table(&mut out, results);
    crate::report_turns::markdown(&mut out, results);
    out
}

fn throughput_table(out: &mut String, results: &[&ScenarioResult]) {
    let _ = writeln!(
        out,
        "### Throughput\n\nMedian over the rounds (min–max). Handler = frontdesk's `Handler` mode, turns = its turn mode, each running the examples' handlers on 8 workers. Ratios: median of the per-round ratios (each round in parentheses). Higher is better.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | unit | std | tokio | Handler | turns | Handler ÷ std | Handler ÷ tokio | turns ÷ std | turns ÷ tokio |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for result in results {
        let cells: Vec<String> = PEERS
            .iter()
            .map(|&kind| {
                format!(
                    "{}{}",
                    spread(&figures(result, kind, |s| s.rate), thousands),
                    starved_note(result, kind)
                )
            })
            .collect();
        let [hs, ht, ts, tt] = mode_ratios(result, |s| s.rate);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {hs} | {ht} | {ts} | {tt} |",
            result.scenario,
            result.scenario.unit(),
            cells[0],
            cells[1],
            cells[2],
            cells[3],
        );
    }
    let _ = writeln!(out);
    // Servers run beside the four above, in another configuration.
    for result in results {
        for (s, spec) in result.servers.iter().enumerate() {
            if result.index(spec.kind) == Some(s) {
                continue;
            }
            let samples = result.load(s);
            let rates: Vec<f64> = samples.iter().map(|x| x.rate).collect();
            let cpu: Vec<f64> = samples.iter().map(|x| x.cpu_per_req_us).collect();
            let starved: Vec<f64> = samples.iter().map(|x| x.starved as f64).collect();
            let p99: Vec<f64> = samples.iter().map(|x| x.p99_us).collect();
            let std = result.index(Kind::Std);
            let tokio = result.index(Kind::Tokio);
            let ratio = |peer: Option<usize>, figure: fn(&LoadSample) -> f64| {
                peer.map_or("–".to_string(), |peer| {
                    ratio_cell(&result.load_ratios_at(s, peer, figure))
                })
            };
            let _ = writeln!(
                out,
                "Also run: {}, {}: {} {} (median; min–max {}; ÷ std {}, ÷ tokio {}), p99 {} µs among the answered clients, {} µs CPU per exchange (÷ std {}); clients never answered during the run: {} (median).\n",
                result.scenario,
                spec.label(),
                thousands(median(&rates)),
                result.scenario.unit(),
                {
                    let (lo, hi) = min_max(&rates);
                    format!("{}–{}", thousands(lo), thousands(hi))
                },
                ratio(std, |x| x.rate),
                ratio(tokio, |x| x.rate),
                short(median(&p99)),
                short(median(&cpu)),
                ratio(std, |x| x.cpu_per_req_us),
                thousands(median(&starved)),
            );
        }
    }
}

fn latency_table(out: &mut String, results: &[&ScenarioResult]) {
    let _ = writeln!(
        out,
        "### Latency\n\nOne exchange (churn: connect to close), in µs: p50 / p99 / p99.9, each the median over the rounds (among the answered clients).\n"
    );
    let _ = writeln!(out, "| scenario | std | tokio | Handler | turns |");
    let _ = writeln!(out, "|---|--:|--:|--:|--:|");
    for result in results {
        let cells: Vec<String> = PEERS
            .iter()
            .map(|&kind| {
                format!(
                    "{} / {} / {}",
                    short(median(&figures(result, kind, |s| s.p50_us))),
                    short(median(&figures(result, kind, |s| s.p99_us))),
                    short(median(&figures(result, kind, |s| s.p999_us))),
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            result.scenario, cells[0], cells[1], cells[2], cells[3]
        );
    }
    let _ = writeln!(out);
}

fn cpu_table(out: &mut String, results: &[&ScenarioResult]) {
    let _ = writeln!(
        out,
        "### CPU\n\nServer CPU time (user + system, from `/proc/PID/stat`) per exchange (churn: per connection) in µs, median (min–max); lower is better. Then CPU use in % of one core, server / load generator, and the server's context switches per exchange (medians).\n"
    );
    let _ = writeln!(
        out,
        "| scenario | std µs | tokio µs | Handler µs | turns µs | Handler ÷ std | Handler ÷ tokio | turns ÷ std | turns ÷ tokio | CPU % std | CPU % tokio | CPU % Handler | CPU % turns | switches std / tokio / Handler / turns |"
    );
    let _ = writeln!(
        out,
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for result in results {
        let cpu: Vec<String> = PEERS
            .iter()
            .map(|&kind| spread(&figures(result, kind, |s| s.cpu_per_req_us), short))
            .collect();
        let usage: Vec<String> = PEERS
            .iter()
            .map(|&kind| {
                format!(
                    "{:.0} / {:.0}",
                    median(&figures(result, kind, |s| s.server_cpu_pct)),
                    median(&figures(result, kind, |s| s.client_cpu_pct)),
                )
            })
            .collect();
        let switches: Vec<String> = PEERS
            .iter()
            .map(|&kind| {
                short(median(&figures(result, kind, |s| {
                    s.ctx_per_req.unwrap_or(f64::NAN)
                })))
            })
            .collect();
        let [hs, ht, ts, tt] = mode_ratios(result, |s| s.cpu_per_req_us);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {hs} | {ht} | {ts} | {tt} | {} | {} | {} | {} | {} |",
            result.scenario,
            cpu[0],
            cpu[1],
            cpu[2],
            cpu[3],
            usage[0],
            usage[1],
            usage[2],
            usage[3],
            switches.join(" / "),
        );
    }
    let errors: u64 = results
        .iter()
        .flat_map(|r| (0..r.servers.len()).flat_map(|s| r.load(s)))
        .map(|s| s.errors)
        .sum();
    let _ = writeln!(
        out,
        "\nFailed connections over all load runs: {errors} (every byte received was checked; a wrong byte stops the run).\n"
    );
}

fn idle_table(out: &mut String, results: &[&ScenarioResult]) {
    let _ = writeln!(
        out,
        "### Idle connections\n\nN clients connect, each does one `ping` and then stays silent; then fresh clients connect and `ping`. Medians over the rounds. *served* = answered `pong` and held by the server, *busy* = got `error: server busy` and was closed. Memory is the growth of the server's peak RSS (VmHWM) divided by the connections it serves, and the same for its anonymous memory (RssAnon: heap and thread stacks, without pages of mapped files).\n"
    );
    let _ = writeln!(
        out,
        "| scenario | server | served / busy | open all | fresh client: reply, time p50 (max) | VmHWM before → held | VmHWM per served connection | RssAnon per served connection |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|");
    for result in results {
        for (s, spec) in result.servers.iter().enumerate() {
            if let Some(reason) = result.skipped(s) {
                let _ = writeln!(
                    out,
                    "| {} | {} | not run: {reason} | | | | | |",
                    result.scenario,
                    spec.label()
                );
                continue;
            }
            let samples = result.idle(s);
            if samples.is_empty() {
                continue;
            }
            let get = |f: fn(&IdleSample) -> f64| -> f64 {
                median(&samples.iter().map(f).collect::<Vec<_>>())
            };
            let probes: Vec<f64> = samples
                .iter()
                .flat_map(|s| s.probes.iter().map(|(d, _)| ms(*d)))
                .collect();
            let pong = samples
                .iter()
                .flat_map(|s| &s.probes)
                .filter(|p| p.1)
                .count();
            let total = samples.iter().map(|s| s.probes.len()).sum::<usize>();
            let reply = if pong == total {
                "pong"
            } else if pong == 0 {
                "busy"
            } else {
                "mixed"
            };
            let per = get(|s| s.bytes_per_served().unwrap_or(f64::NAN));
            let anon = get(|s| s.anon_per_served().unwrap_or(f64::NAN));
            let _ = writeln!(
                out,
                "| {} | {} | {} / {} | {} ms | {reply}, {} ms ({} ms) | {} → {} KiB | {} | {} |",
                result.scenario,
                spec.label(),
                thousands(get(|s| s.served as f64)),
                thousands(get(|s| s.busy as f64)),
                short(get(|s| ms(s.open))),
                short(median(&probes)),
                short(min_max(&probes).1),
                thousands(get(|s| s.hwm_before as f64 / 1024.0)),
                thousands(get(|s| s.hwm_after as f64 / 1024.0)),
                bytes(per),
                bytes(anon),
            );
        }
    }
    let _ = writeln!(out);
}

pub fn bytes(value: f64) -> String {
    if !value.is_finite() {
        "–".to_string()
    } else if value >= 1024.0 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{value:.0} B")
    }
}

/// The targets of issue 15 for the examples' `Handler` mode at
/// `--workers 8` (and, where it ran, with a worker per client), and those
/// of issue 4 for the idle scenarios.
fn targets_table(out: &mut String, results: &[ScenarioResult]) {
    let mut rows: Vec<(String, String, String, bool)> = Vec::new();
    let cell = |ratios: &[f64]| {
        let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        format!("{:.2}× ({})", median(ratios), rounds.join(", "))
    };
    for result in results {
        let scenario = result.scenario;
        let rate = |peer| result.ratios(peer, |s| s.rate);
        if scenario.is_load() {
            if let Scenario::Churn { .. } = scenario {
                let r = rate(Kind::Std);
                rows.push((
                    "conn/s ≥ 1.3× std".into(),
                    scenario.to_string(),
                    cell(&r),
                    median(&r) >= 1.3,
                ));
                let r = rate(Kind::Tokio);
                rows.push((
                    "conn/s ≥ 1.0× tokio".into(),
                    scenario.to_string(),
                    cell(&r),
                    median(&r) >= 1.0,
                ));
            }
            if let Scenario::PingPong { c: 1, .. } | Scenario::Lines { c: 1 } = scenario {
                let r = rate(Kind::Tokio);
                rows.push((
                    "1 client: msg/s ≥ 1.0× tokio".into(),
                    scenario.to_string(),
                    cell(&r),
                    median(&r) >= 1.0,
                ));
            }
            // CPU per message (per connection in churn) against std, for
            // every `Handler`-mode server of the scenario.
            let Some(std) = result.index(Kind::Std) else {
                continue;
            };
            for (s, spec) in result.servers.iter().enumerate() {
                if spec.kind != Kind::Frontdesk {
                    continue;
                }
                let r = result.load_ratios_at(s, std, |x| x.cpu_per_req_us);
                let starved = median(
                    &result
                        .load(s)
                        .iter()
                        .map(|x| x.starved as f64)
                        .collect::<Vec<_>>(),
                );
                let label = if starved > 0.0 {
                    format!(
                        "{scenario}, {} ({} clients never answered)",
                        spec.label(),
                        thousands(starved)
                    )
                } else {
                    format!("{scenario}, {}", spec.label())
                };
                rows.push((
                    "CPU per message ≤ std's".into(),
                    label,
                    cell(&r),
                    median(&r) <= 1.0,
                ));
            }
            continue;
        }
        if let Scenario::Idle { .. } | Scenario::PoolFull = scenario {
            let Some(fd) = result.index(Kind::Frontdesk) else {
                continue;
            };
            let samples = result.idle(fd);
            let label = result.servers[fd].label();
            if let Scenario::Idle { .. } = scenario {
                let per = median(
                    &samples
                        .iter()
                        .map(|s| s.bytes_per_served().unwrap_or(f64::NAN))
                        .collect::<Vec<_>>(),
                );
                rows.push((
                    "memory per held connection < 2 KiB (issue 4)".into(),
                    format!("{scenario}, {label}"),
                    bytes(per),
                    per < 2048.0,
                ));
            }
            let worst = samples
                .iter()
                .flat_map(|s| s.probes.iter().map(|(d, _)| ms(*d)))
                .fold(0.0, f64::max);
            rows.push((
                "fresh client answered within 100 ms, pool held by idle clients (issue 4)".into(),
                format!("{scenario}, {label}"),
                format!("max {} ms", short(worst)),
                worst <= 100.0,
            ));
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Targets (issue 15): the examples' `Handler` mode\n\nMedians of the per-round frontdesk ÷ peer ratios from this run, each round in parentheses.\n"
    );
    let _ = writeln!(out, "| target | scenario | measured | met |");
    let _ = writeln!(out, "|---|---|--:|:-:|");
    for (target, scenario, measured, met) in rows {
        let met = if met { "yes" } else { "**no**" };
        let _ = writeln!(out, "| {target} | {scenario} | {measured} | {met} |");
    }
    let _ = writeln!(out);
}
