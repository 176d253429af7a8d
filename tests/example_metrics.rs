//! End-to-end tests of the examples' `--metrics ADDR`: the server's
//! statistics over HTTP, in the Prometheus text format, from a second
//! frontdesk server. A real HTTP client, `curl` (Debian's package `curl`,
//! which `.ci/run` installs when missing), asks for them, and a parser of
//! the exposition format written here checks every line; malformed and
//! oversized requests go over a raw socket.
//!
//! The tests that need `curl` say SKIPPED on stderr and pass when it is
//! not installed.

#![cfg(unix)]

mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{Client, Example, PATIENCE};

/// Every metric the examples serve, with its type.
const METRICS: [(&str, &str); 21] = [
    ("frontdesk_connections_accepted_total", "counter"),
    ("frontdesk_connections_rejected_total", "counter"),
    ("frontdesk_connections_completed_total", "counter"),
    ("frontdesk_connections_forced_closed_total", "counter"),
    ("frontdesk_connections_dropped_total", "counter"),
    ("frontdesk_handler_errors_total", "counter"),
    ("frontdesk_panics_total", "counter"),
    ("frontdesk_timeouts_total", "counter"),
    ("frontdesk_accept_errors_total", "counter"),
    ("frontdesk_linger_cut_total", "counter"),
    ("frontdesk_outbox_full_total", "counter"),
    ("frontdesk_connections_active", "gauge"),
    ("frontdesk_connections_queued", "gauge"),
    ("frontdesk_connections_parked", "gauge"),
    ("frontdesk_connections_lingering", "gauge"),
    ("frontdesk_workers", "gauge"),
    ("frontdesk_workers_busy", "gauge"),
    ("frontdesk_paused", "gauge"),
    ("frontdesk_max_connections", "gauge"),
    ("frontdesk_max_connections_per_ip", "gauge"),
    ("frontdesk_listener_connections_accepted_total", "counter"),
];

/// The gauges of a cap, which are `+Inf` when there is none.
const CAPS: [&str; 2] = [
    "frontdesk_max_connections",
    "frontdesk_max_connections_per_ip",
];

// ---------------------------------------------------------------------------
// A parser of the Prometheus text exposition format (version 0.0.4)
// ---------------------------------------------------------------------------

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// What a scrape holds: the samples, and each metric's type and help.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
    help: HashMap<String, String>,
}

impl Exposition {
    /// The value of the sample `name` with `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .find(|sample| {
                sample.name == name
                    && sample.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| sample.labels.iter().any(|(l, w)| l == k && w == v))
            })
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
            .value
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn valid_metric_name(name: &str) -> bool {
    name.starts_with(is_name_start) && name.chars().all(is_name_char)
}

fn valid_label_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A sample value: a float, `NaN`, `+Inf` or `-Inf`.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        // Rust also takes `inf` and `nan`, which the format does not.
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            Err(format!("invalid value {text:?}"))
        }
        _ => text.parse().map_err(|_| format!("invalid value {text:?}")),
    }
}

/// A sample's labels: `(name, value)`, in their order.
type Labels = Vec<(String, String)>;

/// `{name="value",...}` at the start of `text`; returns the labels and
/// the rest of the line.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = text.strip_prefix('{').expect("called at a `{`");
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let end = rest.find('=').ok_or("a label without `=`")?;
        let name = rest[..end].trim();
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        if labels.iter().any(|(l, _)| l == name) {
            return Err(format!("label {name} twice"));
        }
        rest = rest[end + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let close = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("invalid escape {other:?} in a label value")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".to_string()),
            }
        };
        labels.push((name.to_string(), value));
        rest = rest[close + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by `,`".to_string());
        }
    }
}

/// Parses a scrape, checking what a monitoring system relies on: valid
/// names, labels and values; every sample's metric has one `# HELP` and
/// one `# TYPE`, both before its first sample; no sample twice; a final
/// line break.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("no line break at the end".to_string());
    }
    let mut exposition = Exposition::default();
    let mut seen = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", number + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // a plain comment
            }
            let name = words.next().unwrap_or_default();
            let rest = words.next().unwrap_or_default();
            if !valid_metric_name(name) {
                return Err(at(format!("invalid metric name {name:?}")));
            }
            if exposition.samples.iter().any(|s| s.name == name) {
                return Err(at(format!("{keyword} after samples of {name}")));
            }
            let map = if keyword == "HELP" {
                if rest.replace("\\\\", "").replace("\\n", "").contains('\\') {
                    return Err(at("an invalid escape in a help text".to_string()));
                }
                &mut exposition.help
            } else {
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                    return Err(at(format!("unknown type {rest:?}")));
                }
                &mut exposition.types
            };
            if map.insert(name.to_string(), rest.to_string()).is_some() {
                return Err(at(format!("{keyword} twice for {name}")));
            }
            continue;
        }
        let end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
        let name = &line[..end];
        if !valid_metric_name(name) {
            return Err(at(format!("invalid metric name {name:?}")));
        }
        let (labels, rest) = if line[end..].starts_with('{') {
            parse_labels(&line[end..]).map_err(at)?
        } else {
            (Vec::new(), &line[end..])
        };
        if !rest.starts_with([' ', '\t']) {
            return Err(at("no space before the value".to_string()));
        }
        let mut fields = rest.split_whitespace();
        let value =
            parse_value(fields.next().ok_or_else(|| at("no value".to_string()))?).map_err(at)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| at(format!("invalid timestamp {timestamp:?}")))?;
        }
        if fields.next().is_some() {
            return Err(at("more after the timestamp".to_string()));
        }
        if !exposition.types.contains_key(name) || !exposition.help.contains_key(name) {
            return Err(at(format!("{name} has no TYPE or HELP before it")));
        }
        let mut key = labels.clone();
        key.sort();
        if !seen.insert((name.to_string(), format!("{key:?}"))) {
            return Err(at("the same sample twice".to_string()));
        }
        exposition.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(exposition)
}

#[test]
fn the_parser_accepts_the_format_and_refuses_what_is_not() {
    let good = "# A comment\n\
                # HELP a_total Things, \\\\ and \\n escaped.\n\
                # TYPE a_total counter\n\
                a_total{x=\"1\",y=\"q\\\"\\n\"} 3\n\
                a_total{x=\"2\",} 4 1700000000000\n\
                \n\
                # HELP b A gauge.\n\
                # TYPE b gauge\n\
                b -Inf\n";
    let parsed = parse_exposition(good).expect("valid");
    assert_eq!(parsed.value("a_total", &[("x", "1"), ("y", "q\"\n")]), 3.0);
    assert_eq!(parsed.value("b", &[]), f64::NEG_INFINITY);
    for (bad, why) in [
        ("# HELP a x\n# TYPE a gauge\na 1", "line break"),
        ("a 1\n", "no TYPE or HELP"),
        ("# TYPE a gauge\na 1\n", "no TYPE or HELP"),
        ("# HELP a x\na 1\n", "no TYPE or HELP"),
        ("# HELP a x\n# TYPE a gauge\na one\n", "invalid value"),
        ("# HELP a x\n# TYPE a gauge\na inf\n", "invalid value"),
        ("# HELP a x\n# TYPE a gauge\na{x=1} 1\n", "without quotes"),
        (
            "# HELP a x\n# TYPE a gauge\na{x=\"1\" y=\"2\"} 1\n",
            "separated",
        ),
        (
            "# HELP a x\n# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",
            "twice",
        ),
        ("# HELP a x\n# TYPE a gauge\na 1\na 2\n", "twice"),
        (
            "# HELP a x\n# TYPE a gauge\na 1\n# TYPE a counter\n",
            "after samples",
        ),
        ("# HELP a x\n# TYPE a gauge\n# TYPE a gauge\n", "twice"),
        ("# HELP a x\n# TYPE a metre\n", "unknown type"),
        ("# HELP 1a x\n", "invalid metric name"),
        (
            "# HELP a x\n# TYPE a gauge\na\n",
            "no space before the value",
        ),
        ("# HELP a x\n# TYPE a gauge\na 1 2 3\n", "more after"),
    ] {
        match parse_exposition(bad) {
            Ok(parsed) => panic!("accepted {bad:?}: {parsed:?}"),
            Err(error) => assert!(error.contains(why), "{bad:?}: {error}"),
        }
    }
}

/// Checks a scrape of an example's metrics: the format, every metric of
/// [`METRICS`] with its type and nothing else, counters named `_total`,
/// and every value a non-negative whole number (or, for a cap, `+Inf`).
fn check_scrape(body: &str) -> Exposition {
    let exposition = parse_exposition(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let expected: HashMap<String, String> = METRICS
        .iter()
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect();
    assert_eq!(exposition.types, expected, "{body}");
    for sample in &exposition.samples {
        let no_cap = CAPS.contains(&sample.name.as_str()) && sample.value == f64::INFINITY;
        assert!(
            no_cap || (sample.value >= 0.0 && sample.value.fract() == 0.0),
            "{sample:?}"
        );
    }
    for (name, kind) in METRICS {
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
        assert!(exposition.samples.iter().any(|s| s.name == name), "{name}");
    }
    for reason in [
        "overload",
        "max_connections",
        "shutting_down",
        "proxy",
        "tls",
    ] {
        exposition.value(
            "frontdesk_connections_rejected_total",
            &[("reason", reason)],
        );
    }
    for kind in ["read", "write", "idle", "deadline"] {
        exposition.value("frontdesk_timeouts_total", &[("kind", kind)]);
    }
    exposition
}

// ---------------------------------------------------------------------------
// The examples, asked with curl
// ---------------------------------------------------------------------------

fn curl_or_skip(test: &str) -> Option<PathBuf> {
    let curl = support::tool("curl");
    if curl.is_none() {
        eprintln!("SKIPPED {test}: curl not found; install Debian's curl (package `curl`)");
    }
    curl
}

/// What curl got: the status, the headers (names in lower case), the body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Runs `curl` with `args` and `url`, headers included in its output.
fn curl(curl: &Path, args: &[&str], url: &str) -> Response {
    let output = Command::new(curl)
        .args(["--silent", "--show-error", "--include", "--max-time", "20"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8(output.stdout).expect("a UTF-8 response");
    assert!(
        output.status.success(),
        "curl {args:?} {url}: {}; {}; {text}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    parse_response(&text)
}

fn parse_response(text: &str) -> Response {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of the headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("`name: value`");
            (name.to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Starts `name` with `--metrics 127.0.0.1:0` and `args`; returns it and
/// the address of its metrics from its `metrics on ADDR` line.
fn start_with_metrics(name: &str, args: &[&str]) -> (Example, String) {
    let mut all = vec!["--metrics", "127.0.0.1:0"];
    all.extend(args);
    let example = Example::start(name, &all);
    let line = example.next_stdout_line();
    let addr = line
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("expected `metrics on ADDR`, got {line:?}"))
        .to_string();
    (example, addr)
}

/// Scrapes until `ok` holds, for a change the server makes just after a
/// client sees its answer (a connection parks, a handler's return is
/// counted), which nothing else reports; at most [`PATIENCE`].
fn scrape_until(curl_path: &Path, url: &str, ok: impl Fn(&Exposition) -> bool) -> Exposition {
    let start = Instant::now();
    loop {
        let response = curl(curl_path, &[], url);
        let exposition = check_scrape(&response.body);
        if ok(&exposition) {
            return exposition;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the metrics did not change as expected:\n{}",
            response.body
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_handler_mode_serves_its_stats_to_curl() {
    let Some(curl_path) = curl_or_skip("the_handler_mode_serves_its_stats_to_curl") else {
        return;
    };
    let (mut server, metrics) = start_with_metrics("commands", &["--workers", "3"]);
    let url = format!("http://{metrics}/metrics");

    let response = curl(&curl_path, &[], &url);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        response.headers["content-length"],
        response.body.len().to_string()
    );
    let idle = check_scrape(&response.body);
    assert_eq!(idle.value("frontdesk_workers", &[]), 3.0);
    assert_eq!(idle.value("frontdesk_connections_accepted_total", &[]), 0.0);
    assert_eq!(idle.value("frontdesk_connections_active", &[]), 0.0);
    assert_eq!(idle.value("frontdesk_paused", &[]), 0.0);

    // A client being served holds a worker: it is active.
    let mut client = server.connect();
    client.send("ping\n");
    client.expect("pong");
    let busy = check_scrape(&curl(&curl_path, &[], &url).body);
    assert_eq!(busy.value("frontdesk_connections_accepted_total", &[]), 1.0);
    assert_eq!(busy.value("frontdesk_connections_active", &[]), 1.0);
    assert_eq!(busy.value("frontdesk_workers_busy", &[]), 1.0);
    client.send("quit\n");
    client.expect("bye");
    client.expect_clean_end();
    let done = scrape_until(&curl_path, &url, |e| {
        e.value("frontdesk_connections_completed_total", &[]) == 1.0
    });
    assert_eq!(done.value("frontdesk_connections_active", &[]), 0.0);
    assert_eq!(done.value("frontdesk_handler_errors_total", &[]), 0.0);
    server.stop();
}

#[test]
fn the_turn_mode_serves_its_stats_to_curl() {
    let Some(curl_path) = curl_or_skip("the_turn_mode_serves_its_stats_to_curl") else {
        return;
    };
    let (mut server, metrics) = start_with_metrics("chat", &["--workers", "2"]);
    let url = format!("http://{metrics}/metrics");
    let mut client = server.connect();
    client.line(); // the greeting: in the room
                   // A quiet member waits without a worker: parked.
    let parked = scrape_until(&curl_path, &url, |e| {
        e.value("frontdesk_connections_parked", &[]) == 1.0
    });
    assert_eq!(
        parked.value("frontdesk_connections_accepted_total", &[]),
        1.0
    );
    assert_eq!(parked.value("frontdesk_workers", &[]), 2.0);
    // The turn mode's cap when none is set: TURN_MAX_CONNECTIONS.
    assert_eq!(parked.value("frontdesk_max_connections", &[]), 10_000.0);
    assert_eq!(
        parked.value("frontdesk_max_connections_per_ip", &[]),
        f64::INFINITY
    );
    server.stop();
}

/// With two listeners, the connections accepted through each are counted
/// apart, labelled with each listener's address.
#[test]
fn each_listener_has_its_accepted_count() {
    let Some(curl_path) = curl_or_skip("each_listener_has_its_accepted_count") else {
        return;
    };
    let server = Example::start("commands", &["127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let second = server.next_stdout_line();
    let second: SocketAddr = second
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("expected a second `listening on ADDR`, got {second:?}"));
    let metrics = server.next_stdout_line();
    let metrics = metrics
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("expected `metrics on ADDR`, got {metrics:?}"))
        .to_string();
    let url = format!("http://{metrics}/metrics");
    let mut client = Client::connect(second);
    client.send("ping\n");
    client.expect("pong");
    let scraped = check_scrape(&curl(&curl_path, &[], &url).body);
    let count = |addr: SocketAddr| {
        scraped.value(
            "frontdesk_listener_connections_accepted_total",
            &[("listener", &addr.to_string())],
        )
    };
    assert_eq!(count(server.addr), 0.0);
    assert_eq!(count(second), 1.0);
    assert_eq!(
        scraped.value("frontdesk_connections_accepted_total", &[]),
        1.0
    );
    drop(client);
    let mut server = server;
    server.stop();
}

#[test]
fn head_other_paths_and_other_methods() {
    let Some(curl_path) = curl_or_skip("head_other_paths_and_other_methods") else {
        return;
    };
    let (mut server, metrics) = start_with_metrics("echo", &[]);
    let head = curl(
        &curl_path,
        &["--head"],
        &format!("http://{metrics}/metrics"),
    );
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");
    let length: usize = head.headers["content-length"].parse().unwrap();
    assert!(length > 0);
    let query = curl(&curl_path, &[], &format!("http://{metrics}/metrics?x=1"));
    assert_eq!(query.status, 200);
    check_scrape(&query.body);
    for path in ["/", "/metric", "/metrics/", "/other"] {
        let response = curl(&curl_path, &[], &format!("http://{metrics}{path}"));
        assert_eq!(response.status, 404, "{path}: {response:?}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        let response = curl(
            &curl_path,
            &["--request", method],
            &format!("http://{metrics}/metrics"),
        );
        assert_eq!(response.status, 405, "{method}: {response:?}");
        assert_eq!(response.headers["allow"], "GET, HEAD");
    }
    server.stop();
}

#[test]
fn a_unix_socket_serves_them_too() {
    let Some(curl_path) = curl_or_skip("a_unix_socket_serves_them_too") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("frontdesk-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("metrics.sock");
    let unix = format!("unix:{}", path.display());
    let mut server = Example::start("commands", &["--metrics", &unix]);
    assert_eq!(server.next_stdout_line(), format!("metrics on {unix}"));
    let response = curl(
        &curl_path,
        &["--unix-socket", path.to_str().unwrap()],
        "http://localhost/metrics",
    );
    assert_eq!(response.status, 200);
    check_scrape(&response.body);
    server.stop();
    assert!(!path.exists(), "the socket file is removed");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Requests no HTTP client sends, over a raw socket
// ---------------------------------------------------------------------------

/// Sends `request` and returns the whole answer, up to the server's end
/// of stream (each answer closes the connection).
fn raw(metrics: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(metrics).expect("connect to the metrics");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    // The server may answer, and close, before it has read all of it.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the answer, then a clean end");
    String::from_utf8(answer).expect("a UTF-8 answer")
}

fn status_of(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

#[test]
fn garbage_and_oversized_requests_get_an_error_and_the_server_goes_on() {
    let (mut server, metrics) = start_with_metrics("commands", &[]);
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(2000));
    let many_headers = format!(
        "GET /metrics HTTP/1.1\r\n{}\r\n",
        "X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(200)
    );
    let long_header = format!(
        "GET /metrics HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "y".repeat(2000)
    );
    let cases: [(&[u8], &str); 12] = [
        (b"garbage\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"GET /metrics HTTP/2.0\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (b"GET metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (
            b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (b"\xff\xfe\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (
            b"GET /metrics HTTP/1.1\r\nHost: x",
            "HTTP/1.1 400 Bad Request",
        ),
        (long_target.as_bytes(), "HTTP/1.1 414 URI Too Long"),
        (
            many_headers.as_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
        (
            long_header.as_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
    ];
    for (request, status) in cases {
        let mut stream = TcpStream::connect(&metrics).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = stream.write_all(request);
        // A request cut short ends with the client's end of stream.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("an answer, then a clean end");
        assert_eq!(
            status_of(&answer),
            status,
            "{:?}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    }
    // A client that says nothing and leaves gets nothing.
    assert_eq!(raw(&metrics, b""), "");
    // HTTP/1.0 is served, and the server still answers.
    let answer = raw(&metrics, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status_of(&answer), "HTTP/1.1 200 OK");
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    check_scrape(body);
    server.stop();
}
