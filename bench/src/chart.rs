//! The charts, written as plain SVG: for docs/performance.md, throughput
//! and p99 latency against the number of connections, one line per
//! server; for the soak (docs/reliability.md), each server process's
//! figures over time.

use std::fmt::Write;

use crate::report::median;
use crate::run::{Scenario, ScenarioResult};
use crate::servers::Kind;

const SERIES: [(Kind, &str); 4] = [
    (Kind::Std, "#d62728"),
    (Kind::Tokio, "#1f77b4"),
    (Kind::Frontdesk, "#2ca02c"),
    (Kind::FrontdeskTurns, "#9467bd"),
];

const PANEL_W: f64 = 330.0;
const PANEL_H: f64 = 220.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 95.0;
const GAP_X: f64 = 110.0;
const GAP_Y: f64 = 90.0;

/// One column of the chart: a family of scenarios that differ only in C.
struct Column {
    title: String,
    /// (C, scenario result) sorted by C.
    points: Vec<(usize, usize)>,
}

/// The SVG text, or `None` when the run has no ping-pong or lines results.
pub fn svg(results: &[ScenarioResult], subtitle: &str) -> Option<String> {
    let mut columns: Vec<Column> = Vec::new();
    for (i, result) in results.iter().enumerate() {
        let (title, c) = match result.scenario {
            Scenario::PingPong { c, size } => (
                format!("ping-pong, echo {}", crate::run::size_name(size)),
                c,
            ),
            Scenario::Lines { c } => ("lines, ping → pong".to_string(), c),
            _ => continue,
        };
        match columns.iter_mut().find(|col| col.title == title) {
            Some(col) => col.points.push((c, i)),
            None => columns.push(Column {
                title,
                points: vec![(c, i)],
            }),
        }
    }
    if columns.is_empty() {
        return None;
    }
    for col in &mut columns {
        col.points.sort_unstable();
    }
    let width = LEFT + columns.len() as f64 * (PANEL_W + GAP_X);
    let height = TOP + 2.0 * (PANEL_H + GAP_Y) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">frontdesk (Handler and turn modes, 8 workers) vs std thread-per-connection vs tokio, by concurrent connections (C)</text>"#
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="44" fill="#555">{}</text>"##,
        escape(subtitle)
    );
    // Legend, under the subtitle.
    for (i, (kind, color)) in SERIES.iter().enumerate() {
        let x = LEFT + i as f64 * 160.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="62" x2="{}" y2="62" stroke="{color}" stroke-width="3"/><text x="{}" y="66">{}</text>"#,
            x + 24.0,
            x + 30.0,
            kind.name()
        );
    }
    for (col_index, col) in columns.iter().enumerate() {
        let x0 = LEFT + col_index as f64 * (PANEL_W + GAP_X);
        let throughput = series(results, col, |s| s.rate);
        let p99 = series(results, col, |s| s.p99_us);
        panel(
            &mut out,
            (x0, TOP),
            &format!("{}: throughput (msg/s)", col.title),
            col,
            &throughput,
            false,
        );
        panel(
            &mut out,
            (x0, TOP + PANEL_H + GAP_Y),
            &format!("{}: p99 latency (µs, log)", col.title),
            col,
            &p99,
            true,
        );
    }
    let _ = writeln!(out, "</svg>");
    Some(out)
}

/// Median of `figure` per server and per C: `[server][point]`.
fn series(
    results: &[ScenarioResult],
    col: &Column,
    figure: fn(&crate::run::LoadSample) -> f64,
) -> Vec<Vec<f64>> {
    SERIES
        .iter()
        .map(|(kind, _)| {
            col.points
                .iter()
                .map(|&(_, i)| {
                    let result = &results[i];
                    result.index(*kind).map_or(f64::NAN, |s| {
                        median(&result.load(s).iter().map(figure).collect::<Vec<_>>())
                    })
                })
                .collect()
        })
        .collect()
}

fn panel(
    out: &mut String,
    (x0, y0): (f64, f64),
    title: &str,
    col: &Column,
    values: &[Vec<f64>],
    log: bool,
) {
    let finite = || {
        values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let max = finite().fold(0.0, f64::max);
    let min = finite().fold(f64::INFINITY, f64::min);
    let (lo, hi, ticks) = if log {
        let lo = 10f64.powf(min.max(1.0).log10().floor());
        let hi = 10f64.powf(max.max(10.0).log10().ceil());
        let mut ticks = Vec::new();
        let mut t = lo;
        while t <= hi * 1.001 {
            ticks.push(t);
            t *= 10.0;
        }
        (lo, hi, ticks)
    } else {
        let step = nice_step(max.max(1.0) / 5.0);
        let hi = (max / step).ceil().max(1.0) * step;
        let ticks = (0..=((hi / step).round() as usize))
            .map(|i| i as f64 * step)
            .collect();
        (0.0, hi, ticks)
    };
    let y_of = |v: f64| -> f64 {
        let f = if log {
            (v.log10() - lo.log10()) / (hi.log10() - lo.log10())
        } else {
            (v - lo) / (hi - lo)
        };
        y0 + PANEL_H - f * PANEL_H
    };
    let n = col.points.len();
    let x_of = |i: usize| -> f64 {
        if n == 1 {
            x0 + PANEL_W / 2.0
        } else {
            x0 + 20.0 + i as f64 * (PANEL_W - 40.0) / (n - 1) as f64
        }
    };
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}" font-weight="bold">{}</text>"#,
        y0 - 12.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
    );
    for &t in &ticks {
        let y = y_of(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end" fill="#333">{}</text>"##,
            x0 + PANEL_W,
            x0 - 6.0,
            y + 4.0,
            axis_label(t)
        );
    }
    for (i, (c, _)) in col.points.iter().enumerate() {
        let x = x_of(i);
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{}" text-anchor="middle" fill="#333">C={c}</text>"##,
            y0 + PANEL_H + 18.0
        );
    }
    for ((_, color), line) in SERIES.iter().zip(values) {
        let points: Vec<String> = line
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite() && **v > 0.0)
            .map(|(i, &v)| format!("{:.1},{:.1}", x_of(i), y_of(v)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"/>"#,
            points.join(" ")
        );
        for point in &points {
            let (x, y) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{color}"/>"#);
        }
    }
}

/// One panel of the soak chart: a figure over time, a line per server.
#[derive(Debug)]
pub struct Panel {
    pub title: String,
    pub lines: Vec<Line>,
}

/// One server's figure: (minutes since the start, value) points.
#[derive(Debug)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const SOAK_COLORS: [&str; 6] = [
    "#2ca02c", "#9467bd", "#1f77b4", "#d62728", "#ff7f0e", "#8c564b",
];

/// The soak chart: panels two by two, time (minutes) across, each y axis
/// from zero so that growth shows at its true size.
pub fn soak_svg(title: &str, subtitle: &[String], panels: &[Panel]) -> String {
    let columns = 2;
    let rows = panels.len().div_ceil(columns);
    // Each subtitle line after the first moves the rest down.
    let shift = 16.0 * subtitle.len().saturating_sub(1) as f64;
    let top = TOP + shift;
    let width = LEFT + columns as f64 * (PANEL_W + GAP_X);
    let height = top + rows as f64 * (PANEL_H + GAP_Y) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, line) in subtitle.iter().enumerate() {
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{}" fill="#555">{}</text>"##,
            44.0 + 16.0 * i as f64,
            escape(line)
        );
    }
    if let Some(first) = panels.first() {
        for (i, line) in first.lines.iter().enumerate() {
            let x = LEFT + i as f64 * 190.0;
            let color = SOAK_COLORS[i % SOAK_COLORS.len()];
            let _ = writeln!(
                out,
                r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                62.0 + shift,
                x + 24.0,
                62.0 + shift,
                x + 30.0,
                66.0 + shift,
                escape(&line.label)
            );
        }
    }
    let end = panels
        .iter()
        .flat_map(|p| &p.lines)
        .flat_map(|l| &l.points)
        .map(|p| p.0)
        .fold(0.0, f64::max)
        .max(1.0 / 60.0);
    for (i, panel) in panels.iter().enumerate() {
        let x0 = LEFT + (i % columns) as f64 * (PANEL_W + GAP_X);
        let y0 = top + (i / columns) as f64 * (PANEL_H + GAP_Y);
        time_panel(&mut out, (x0, y0), panel, end);
    }
    let _ = writeln!(out, "</svg>");
    out
}

fn time_panel(out: &mut String, (x0, y0): (f64, f64), panel: &Panel, end: f64) {
    let max = panel
        .lines
        .iter()
        .flat_map(|l| &l.points)
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let step = nice_step(max.max(1.0) / 5.0);
    let hi = (max / step).ceil().max(1.0) * step;
    let y_of = |v: f64| y0 + PANEL_H - v / hi * PANEL_H;
    let x_of = |t: f64| x0 + t / end * PANEL_W;
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}" font-weight="bold">{}</text>"#,
        y0 - 12.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
    );
    let mut t = 0.0;
    while t <= hi * 1.001 {
        let y = y_of(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end" fill="#333">{}</text>"##,
            x0 + PANEL_W,
            x0 - 6.0,
            y + 4.0,
            axis_label(t)
        );
        t += step;
    }
    let time_step = nice_step(end / 6.0);
    let mut t = 0.0;
    while t <= end * 1.001 {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#333">{}</text>"##,
            x_of(t),
            y0 + PANEL_H + 16.0,
            trim(t)
        );
        t += time_step;
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">minutes</text>"##,
        x0 + PANEL_W / 2.0,
        y0 + PANEL_H + 34.0
    );
    for (i, line) in panel.lines.iter().enumerate() {
        let color = SOAK_COLORS[i % SOAK_COLORS.len()];
        let points: Vec<String> = line
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(t, v)| format!("{:.1},{:.1}", x_of(t), y_of(v)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
            points.join(" ")
        );
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * power)
}

fn axis_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(12_000.0), 20_000.0);
        assert_eq!(axis_label(25_000.0), "25k");
        assert_eq!(axis_label(1_500_000.0), "1.5M");
    }
}
