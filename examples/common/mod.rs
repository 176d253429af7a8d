//! What the examples share: the command line, the server set-up and signal
//! handling.
//!
//! Every example takes the same arguments, so that a script can start any
//! of them with one command line:
//!
//! ```text
//! cargo run --example NAME -- [ADDR...] [--turns] [--workers N] [--queue N]
//!                              [--max-connections N] [--max-connections-per-ip N]
//!                              [--idle-timeout-ms N] [--request-timeout-ms N]
//!                              [--max-line BYTES] [--proxy-protocol]
//!                              [--tls-cert PEM --tls-key PEM] [--metrics ADDR]
//! ```
//!
//! `--metrics ADDR` serves the server's statistics over HTTP, at
//! `http://ADDR/metrics` in the Prometheus text format, from a second
//! frontdesk server ([`metrics`]).
//!
//! ADDR is `HOST:PORT` or `unix:PATH`; several ADDRs make one server
//! listen on all of them (`commands 127.0.0.1:7878 [::1]:7878 unix:PATH`),
//! one pool of workers and one set of limits, and it prints one
//! `listening on ADDR` line per listener, in the order given. The TLS
//! options need the `tls`
//! feature (`cargo run --features tls --example NAME -- ...`). An example's
//! `--help` lists only the options that change something in it; the others
//! are accepted and ignored: `echo` has no lines (`--request-timeout-ms`,
//! `--max-line`), and `chat` has only the turn mode (`--turns`, `--queue`).
//!
//! # Signals
//!
//! On Unix, SIGINT or SIGTERM shuts the server down gracefully (a second
//! one exits at once), SIGHUP reloads the TLS files, and SIGUSR1 prints
//! the server's counters ([`frontdesk::Stats`]) as one line on stderr:
//!
//! ```text
//! kill -USR1 $(pgrep -x commands)
//! stats: accepted=12 completed=9 rejected=1 dropped=0 active=1 queued=0 parked=1 ...
//! ```
//!
//! SIGUSR2 pauses accepting ([`frontdesk::ServerControl::pause`]: new
//! clients wait in the backlog, open ones are served) and says
//! `accepting paused` on stderr; the next SIGUSR2 resumes
//! (`accepting resumed`).
//!
//! The same line, with the final counters, is logged at `info`
//! (`RUST_LOG=info`) when the server has stopped. The soak
//! (`cargo run --release -p bench -- soak`, docs/reliability.md) reads
//! both.
//!
//! Copy this file along with an example: together they are a complete
//! server.

// Each example uses a different part of this module.
#![allow(dead_code)]

mod metrics;

use std::error::Error;
use std::ffi::OsString;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use frontdesk::{
    Handler, LineError, Lines, Listen, Next, Overload, Server, ServerBuilder, ServerControl,
    ServerHandle, Turn, TurnHandler,
};

/// How long a shutdown lets connections finish before closing them by
/// force. Handlers finish as soon as they have answered what they received
/// (the library's drain), so this only bounds clients that keep sending or
/// do not read their answers. With it the process exits about 2.5 s after
/// SIGINT or SIGTERM at the latest (the deadline, then half a second for
/// the gentle closes), within the 5 s the examples promise.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// The options every example takes.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Where to listen: each `ADDR`, resolved, in the order given (at
    /// least one).
    pub(crate) addrs: Vec<Address>,
    /// `--turns`: serve with the example's `TurnHandler` instead of its
    /// `Handler`.
    pub(crate) turns: bool,
    /// `--workers N`: worker threads, each serving one connection (in the
    /// turn mode, one turn) at a time.
    pub(crate) workers: usize,
    /// `--queue N`: connections that may wait for a worker (the
    /// `Handler` mode only).
    pub(crate) queue: usize,
    /// `--max-connections N`: the most connections held at once; `None`
    /// for the library's default (`workers + queue` in the `Handler` mode,
    /// [`frontdesk::TURN_MAX_CONNECTIONS`] in the turn mode).
    pub(crate) max_connections: Option<usize>,
    /// `--max-connections-per-ip N`: the most connections one client
    /// address holds at once (behind `--proxy-protocol`, the address the
    /// header names); `None` for no cap.
    pub(crate) max_connections_per_ip: Option<usize>,
    /// `--proxy-protocol`: every connection starts with a PROXY protocol
    /// header (v1 or v2) naming the real client.
    pub(crate) proxy_protocol: bool,
    /// `--tls-cert PEM --tls-key PEM`: speak TLS with this certificate
    /// chain and key.
    pub(crate) tls: Option<TlsFiles>,
    /// `--metrics ADDR`: where to serve the statistics over HTTP.
    pub(crate) metrics: Option<Address>,
    /// What each connection's handler needs to know.
    pub(crate) limits: Limits,
}

/// Where a server listens.
#[derive(Debug, Clone)]
pub(crate) enum Address {
    /// `HOST:PORT`, resolved.
    Tcp(Vec<SocketAddr>),
    /// `unix:PATH`.
    Unix(PathBuf),
}

/// The PEM files of `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// The options a handler needs, for each connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `--idle-timeout-ms N`: close a connection silent for this long;
    /// `None` (from `0`) never does.
    pub(crate) idle_timeout: Option<Duration>,
    /// `--request-timeout-ms N`: a line must be complete within this long
    /// of its first byte; `None` (from `0`) for no limit.
    pub(crate) request_timeout: Option<Duration>,
    /// `--max-line BYTES`: the longest line accepted, terminator excluded.
    pub(crate) max_line: usize,
}

impl Default for Options {
    /// The library's defaults, and lines of up to 8 KiB.
    fn default() -> Options {
        Options {
            addrs: Vec::new(), // DEFAULT_ADDR, resolved by `parse`
            turns: false,
            workers: 16,
            queue: 64,
            max_connections: None,
            max_connections_per_ip: None,
            proxy_protocol: false,
            tls: None,
            metrics: None,
            limits: Limits {
                idle_timeout: Some(Duration::from_secs(300)),
                request_timeout: Some(Duration::from_secs(10)),
                max_line: 8192,
            },
        }
    }
}

/// What an example's `--help` says, besides the options' defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Help {
    /// What the example does: the first lines of `--help`.
    pub(crate) about: &'static str,
    /// Whether it has both modes or the turn mode only.
    pub(crate) modes: Modes,
    /// Whether it reads lines, so that `--request-timeout-ms` and
    /// `--max-line` change something.
    pub(crate) lines: bool,
    /// What a client beyond the limits gets, as the help says it after
    /// "one more client", e.g. "gets `error: server busy`".
    pub(crate) busy: &'static str,
}

/// The ways an example can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Modes {
    /// A `Handler` by default, a `TurnHandler` with `--turns`.
    Both,
    /// A `TurnHandler` only; `--turns` and `--queue` are accepted and
    /// change nothing.
    TurnsOnly,
}

impl Options {
    /// Sets up logging (`RUST_LOG`) and parses the command line. Prints the
    /// usage and exits with 0 on `--help`; prints a one-line error and exits
    /// with 2 on a bad argument.
    ///
    /// `help` describes the example in `--help`; `defaults` are the values
    /// of the options not given.
    pub(crate) fn parse(help: &Help, defaults: Options) -> Options {
        env_logger::init();
        let mut args = std::env::args_os();
        let program = program_name(args.next());
        match parse_args(args, defaults.clone()) {
            Ok(Some(options)) => options,
            Ok(None) => {
                // Nothing to do if stdout is closed: exit all the same.
                let _ = io::stdout().write_all(usage(&program, help, &defaults).as_bytes());
                std::process::exit(0);
            }
            Err(message) => {
                eprintln!("{program}: {message} (see --help)");
                std::process::exit(2);
            }
        }
    }

    /// A server builder set up from the options, with what all the examples
    /// do the same way:
    ///
    /// - the Reject overload policy: when the server is full (every worker
    ///   busy and the queue full in the `Handler` mode; `max_connections`
    ///   held in either mode), a new client is turned away at once
    ///   (through the `on_reject` handler, if the example sets one) rather
    ///   than left waiting in the kernel's backlog; so is a client whose
    ///   address holds `max_connections_per_ip` already;
    /// - a drain deadline of [`SHUTDOWN_TIMEOUT`]: on shutdown, handlers
    ///   answer everything their client sent and see end of stream once it
    ///   pauses (the library's drain), and the deadline bounds a client
    ///   that never stops sending.
    pub(crate) fn builder(&self) -> ServerBuilder {
        Server::builder()
            .workers(self.workers)
            .queue(self.queue)
            .max_connections(self.max_connections)
            .max_connections_per_ip(self.max_connections_per_ip)
            .overload(Overload::Reject)
            .idle_timeout(self.limits.idle_timeout)
            .proxy_protocol(self.proxy_protocol)
            .shutdown_timeout(SHUTDOWN_TIMEOUT)
    }
}

/// Answers the complete lines a turn finds, with `answer`, and the errors
/// the line protocols here answer the same way (`chat`'s; `commands`
/// writes the same loop out in full, beside its `Handler`); returns what
/// the turn returns.
///
/// `answer` returns `Some(next)` to end the turn early (`quit`). When no
/// complete line is left, the turn parks, with the request timeout set
/// for the line in progress. An over-long line is answered with
/// `error: line too long` and closes the connection; a line that is not
/// UTF-8 is answered with `error: invalid utf-8`; a client that closed is
/// closed (a half-sent line gets no answer).
pub(crate) fn answer_lines(
    lines: &mut Lines,
    turn: &mut Turn<'_>,
    limits: Limits,
    mut answer: impl FnMut(&str, &mut Turn<'_>) -> io::Result<Option<Next>>,
) -> io::Result<Next> {
    loop {
        match lines.next_line_str() {
            Ok(Some(line)) => {
                if let Some(next) = answer(line, turn)? {
                    return Ok(next);
                }
            }
            // Wait for more without a worker, at most until the line in
            // progress is due.
            Ok(None) => {
                turn.set_deadline(lines.line_deadline(limits.request_timeout));
                return Ok(Next::Park);
            }
            Err(LineError::InvalidUtf8 { .. }) => turn.send("error: invalid utf-8\n")?,
            Err(LineError::TooLong { .. }) => {
                turn.send("error: line too long\n")?;
                return Ok(Next::Close);
            }
            Err(LineError::Closed { .. }) => return Ok(Next::Close),
            Err(error) => return Err(error.into()),
        }
    }
}

/// Binds `builder` to the options' addresses (one server, a listener
/// each), prints `listening on IP:PORT` for each, in order,
/// and serves with `handler`, a [`Handler`] (a worker per connection),
/// until SIGINT or SIGTERM, then shuts down
/// gracefully. Returns the process's exit code, with a one-line error on
/// stderr for a failure: 0 after a shutdown; 2 if the library finds the
/// configuration invalid ([`frontdesk::Error::Config`], e.g. `--workers 0`)
/// or cannot use the TLS files ([`frontdesk::Error::Tls`]),
/// which is a bad argument like those [`Options::parse`] rejects; 1 if the
/// server could not start (a busy port) or failed.
pub(crate) fn serve(options: &Options, builder: ServerBuilder, handler: impl Handler) -> ExitCode {
    exit_code(try_serve(options, builder, |server| server.spawn(handler)))
}

/// [`serve`] for a [`TurnHandler`]: connections wait for input without a
/// worker.
pub(crate) fn serve_turns(
    options: &Options,
    builder: ServerBuilder,
    handler: impl TurnHandler,
) -> ExitCode {
    exit_code(try_serve(options, builder, |server| {
        server.spawn_turns(handler)
    }))
}

fn exit_code(result: Result<(), Box<dyn Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let program = program_name(std::env::args_os().next());
            // A bad option value, or certificate files that cannot be
            // used, are bad arguments.
            if let Some(frontdesk::Error::Config(_) | frontdesk::Error::Tls { .. }) =
                error.downcast_ref()
            {
                eprintln!("{program}: {error} (see --help)");
                return ExitCode::from(2);
            }
            eprintln!("{program}: {}", error_chain(&*error));
            ExitCode::FAILURE
        }
    }
}

fn try_serve(
    options: &Options,
    builder: ServerBuilder,
    start: impl FnOnce(Server) -> frontdesk::Result<ServerHandle>,
) -> Result<(), Box<dyn Error>> {
    // Under socket activation (systemd, or systemd-socket-activate) the
    // service manager holds the port and passes the socket; ADDR is then
    // not bound.
    let (builder, reload) = tls::setup(builder, options.tls.as_ref())?;
    let server = match activated(&builder)? {
        Some(server) => server,
        None => bind(builder, &options.addrs)?,
    };
    let metrics = match &options.metrics {
        Some(addr) => Some(serve_metrics(addr, server.control())?),
        None => None,
    };
    // Watch for signals before announcing the address: whoever reads the
    // line may send a signal at once, and it must stop us gracefully. A
    // signal stops both servers at once, so their drains overlap.
    let mut stoppers = vec![server.control()];
    stoppers.extend(metrics.as_ref().map(ServerHandle::control));
    let signals = signals::watch(stoppers, reload)?;
    // `listening on` tells whoever reads it that the server is up, so it
    // comes once every thread is serving: a supervisor, a script or the
    // soak's first count of threads and descriptors may act on it at once.
    let server = match start(server) {
        Ok(server) => server,
        Err(error) => {
            signals.close();
            return Err(error.into());
        }
    };
    let mut stdout = io::stdout().lock();
    for addr in server.local_addrs() {
        writeln!(stdout, "listening on {addr}")?;
    }
    if let Some(metrics) = &metrics {
        writeln!(stdout, "metrics on {}", metrics.local_addr())?;
    }
    stdout.flush()?;
    drop(stdout);
    let result = server.join();
    signals.close();
    let metrics = metrics.map(ServerHandle::shutdown);
    // The library logs the shutdown reports at `info`; the counters at
    // the end follow them.
    let report = result?;
    log::info!("{}", stats_line(&report.stats));
    metrics.transpose()?;
    Ok(())
}

/// Serves the statistics of the server `of` controls at
/// `http://addr/metrics`, from a server of its own in the background.
fn serve_metrics(addr: &Address, of: ServerControl) -> frontdesk::Result<ServerHandle> {
    bind(metrics::builder(), std::slice::from_ref(addr))?.spawn(metrics::Metrics { of })
}

/// The counters as one line of `name=value` pairs, for SIGUSR1 and the
/// end of a run: `stats: accepted=N completed=N rejected=N dropped=N ...`.
/// `rejected` is the total over every reason.
pub(crate) fn stats_line(stats: &frontdesk::Stats) -> String {
    format!(
        "stats: accepted={} completed={} rejected={} dropped={} active={} queued={} \
         parked={} lingering={} handler_errors={} panics={} timeouts_idle={} \
         timeouts_deadline={} timeouts_read={} timeouts_write={} rejected_overload={} \
         rejected_max_connections={} rejected_proxy={} forced_closed={} linger_cut={} \
         outbox_full={} accept_errors={} paused={}",
        stats.accepted,
        stats.completed,
        stats.rejected.total(),
        stats.dropped,
        stats.active,
        stats.queued,
        stats.parked,
        stats.lingering,
        stats.handler_errors,
        stats.panics,
        stats.timeouts.idle,
        stats.timeouts.deadline,
        stats.timeouts.read,
        stats.timeouts.write,
        stats.rejected.overload,
        stats.rejected.max_connections,
        stats.rejected.proxy,
        stats.forced_closed,
        stats.linger_cut,
        stats.outbox_full,
        stats.accept_errors,
        u8::from(stats.paused),
    )
}

/// One server listening on every address, in order.
fn bind(mut builder: ServerBuilder, addrs: &[Address]) -> frontdesk::Result<Server> {
    for addr in addrs {
        builder = builder.listen(match addr {
            Address::Tcp(addrs) => Listen::tcp(&addrs[..]),
            #[cfg(unix)]
            Address::Unix(path) => Listen::unix(path),
            #[cfg(not(unix))]
            Address::Unix(_) => unreachable!("`parse_args` takes `unix:` on Unix only"),
        });
    }
    builder.build()
}

/// TLS from `--tls-cert` and `--tls-key`, and what reloads the files.
#[cfg(feature = "tls")]
mod tls {
    use frontdesk::{ServerBuilder, TlsConfig};

    use super::{Reload, TlsFiles};

    pub(super) fn setup(
        builder: ServerBuilder,
        files: Option<&TlsFiles>,
    ) -> frontdesk::Result<(ServerBuilder, Option<Reload>)> {
        let Some(files) = files.cloned() else {
            return Ok((builder, None));
        };
        let config = TlsConfig::from_pem_files(&files.cert, &files.key)?;
        let builder = builder.tls(config.clone());
        let reload: Reload = Box::new(move || {
            match config.reload_pem_files(&files.cert, &files.key) {
                Ok(()) => log::info!("reloaded the TLS certificate and key"),
                // The old ones stay in use.
                Err(error) => log::error!("could not reload TLS: {error}"),
            }
        });
        Ok((builder, Some(reload)))
    }
}

/// Without the `tls` feature, `parse_args` refuses the TLS options.
#[cfg(not(feature = "tls"))]
mod tls {
    use frontdesk::ServerBuilder;

    use super::{Reload, TlsFiles};

    pub(super) fn setup(
        builder: ServerBuilder,
        _: Option<&TlsFiles>,
    ) -> frontdesk::Result<(ServerBuilder, Option<Reload>)> {
        Ok((builder, None))
    }
}

/// What SIGHUP does: reload the TLS certificate and key.
type Reload = Box<dyn Fn() + Send>;

#[cfg(unix)]
fn activated(builder: &ServerBuilder) -> frontdesk::Result<Option<Server>> {
    builder.clone().from_socket_activation()
}

#[cfg(not(unix))]
fn activated(_: &ServerBuilder) -> frontdesk::Result<Option<Server>> {
    Ok(None)
}

/// Parses the arguments after the program name: `Ok(None)` for `--help`.
pub(crate) fn parse_args(
    args: impl IntoIterator<Item = OsString>,
    defaults: Options,
) -> Result<Option<Options>, String> {
    let mut options = defaults;
    let mut addrs: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|arg| format!("argument {arg:?} is not valid UTF-8"))?;
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if !arg.starts_with('-') {
            addrs.push(arg);
            continue;
        }
        if arg.starts_with("--tls-") && !cfg!(feature = "tls") {
            let name = shown(arg.split('=').next().unwrap_or(&arg));
            return Err(format!(
                "{name} needs TLS support: build with `--features tls` \
                 (cargo run --features tls --example NAME)"
            ));
        }
        // Flags without a value.
        let flag = match arg.as_str() {
            "--proxy-protocol" => Some(&mut options.proxy_protocol),
            "--turns" => Some(&mut options.turns),
            _ => None,
        };
        if let Some(flag) = flag {
            if *flag {
                return Err(format!("{arg} given twice"));
            }
            *flag = true;
            continue;
        }
        // `--name value` or `--name=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        if !matches!(
            name.as_str(),
            "--workers"
                | "--queue"
                | "--max-connections"
                | "--max-connections-per-ip"
                | "--idle-timeout-ms"
                | "--request-timeout-ms"
                | "--max-line"
                | "--tls-cert"
                | "--tls-key"
                | "--metrics"
        ) {
            return Err(format!("unknown option '{}'", shown(&name)));
        }
        if seen.contains(&name) {
            return Err(format!("{name} given twice"));
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .and_then(|value| value.into_string().ok())
                .ok_or_else(|| format!("{name} needs a value"))?,
        };
        match name.as_str() {
            "--workers" => options.workers = number(&name, &value)?,
            "--queue" => options.queue = number(&name, &value)?,
            "--max-connections" => options.max_connections = Some(number(&name, &value)?),
            "--max-connections-per-ip" => {
                options.max_connections_per_ip = Some(number(&name, &value)?)
            }
            "--idle-timeout-ms" => options.limits.idle_timeout = millis(&name, &value)?,
            "--request-timeout-ms" => options.limits.request_timeout = millis(&name, &value)?,
            "--tls-cert" => tls_cert = Some(PathBuf::from(value)),
            "--tls-key" => tls_key = Some(PathBuf::from(value)),
            "--metrics" => options.metrics = Some(listen_addr(&value)?),
            _ => options.limits.max_line = number(&name, &value)?,
        }
        seen.push(name);
    }
    options.tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err("--tls-cert needs --tls-key".to_string()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".to_string()),
    };
    if addrs.is_empty() {
        addrs.push(DEFAULT_ADDR.to_string());
    }
    options.addrs = addrs
        .iter()
        .map(|addr| listen_addr(addr))
        .collect::<Result<_, _>>()?;
    Ok(Some(options))
}

/// `HOST:PORT`, resolved, or `unix:PATH`.
fn listen_addr(addr: &str) -> Result<Address, String> {
    let shown_addr = shown(addr);
    if let Some(path) = addr.strip_prefix("unix:") {
        if !cfg!(unix) {
            return Err(format!(
                "invalid address '{shown_addr}': Unix sockets need a Unix system"
            ));
        }
        if path.is_empty() {
            return Err(format!(
                "invalid address '{shown_addr}': no path after 'unix:'"
            ));
        }
        return Ok(Address::Unix(PathBuf::from(path)));
    }
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|error| format!("invalid address '{shown_addr}': {error}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "invalid address '{shown_addr}': it resolves to nothing"
        ));
    }
    Ok(Address::Tcp(addrs))
}

/// A number of milliseconds, 0 for none.
fn millis(name: &str, value: &str) -> Result<Option<Duration>, String> {
    Ok(match number(name, value)? {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    })
}

fn number<T: FromStr>(name: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| {
        format!(
            "invalid value '{}' for {name}: expected a whole number",
            shown(value)
        )
    })
}

/// An argument as a message quotes it: control characters (a newline,
/// say) escaped, so that the message stays on one line.
fn shown(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// The `--help` text: what the example is, when to pick which mode, the
/// options that change something in it, and how it runs.
fn usage(program: &str, help: &Help, defaults: &Options) -> String {
    let both = help.modes == Modes::Both;
    let millis = |time: Option<Duration>| match time {
        Some(time) => time.as_millis().to_string(),
        None => "0, off".to_string(),
    };
    let busy = help.busy;
    let turn_max = frontdesk::TURN_MAX_CONNECTIONS;
    let mut out = format!("{}\n\n", help.about);
    if both {
        out.push_str(
            "Two modes, the same protocol (the source has both, side by side):
  the Handler (default): pick it for clients that connect, ask and leave,
    when serving workers + queue of them at once is enough; each holds a
    worker from connect to close, and the code is plain blocking reads
    and writes.
  --turns, the TurnHandler: pick it for many clients that stay connected
    and are mostly quiet; a client holds a worker only while its input is
    answered, so a few workers hold thousands.

",
        );
    } else {
        out.push_str(
            "Turn mode only (a TurnHandler): a relay's clients stay connected and
mostly listen, which is what that mode is for; a client holds a worker
only while its input is answered, so a few workers hold thousands.

",
        );
    }

    let mut flags = vec!["[ADDR...]"];
    if both {
        flags.push("[--turns]");
    }
    flags.push("[--workers N]");
    if both {
        flags.push("[--queue N]");
    }
    flags.extend([
        "[--max-connections N]",
        "[--max-connections-per-ip N]",
        "[--idle-timeout-ms N]",
    ]);
    if help.lines {
        flags.extend(["[--request-timeout-ms N]", "[--max-line BYTES]"]);
    }
    flags.extend([
        "[--proxy-protocol]",
        "[--tls-cert PEM --tls-key PEM]",
        "[--metrics ADDR]",
    ]);
    let head = format!("usage: {program}");
    let mut line = head.clone();
    for flag in flags {
        if line.len() + 1 + flag.len() > 76 {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(head.len());
        }
        line.push(' ');
        line.push_str(flag);
    }
    out.push_str(&line);
    out.push_str("\n\n");

    out.push_str(&format!(
        "  ADDR                  address to listen on, HOST:PORT (default {DEFAULT_ADDR});
                        port 0 lets the system pick a free port; or unix:PATH
                        for a Unix socket (a stale socket file is replaced,
                        and the file is removed on exit). Several ADDRs: one
                        server listens on all of them, with one pool and one
                        set of limits (e.g. 127.0.0.1:7878 [::1]:7878
                        unix:/tmp/NAME.sock)
"
    ));
    if both {
        out.push_str(
            "  --turns               serve with the TurnHandler instead of the Handler
",
        );
        out.push_str(&format!(
            "  --workers N           worker threads: each serves one client from connect
                        to close, or with --turns one client's input at a
                        time (default {workers})
  --queue N             Handler mode only: accepted clients that may wait for
                        a worker; with --turns it is accepted and changes
                        nothing (default {queue})
  --max-connections N   the most clients held at once, served or waiting
                        (default: workers + queue in the Handler mode, which
                        it can lower, not raise; {turn_max} with --turns).
                        One client more {busy}.
",
            workers = defaults.workers,
            queue = defaults.queue,
        ));
    } else {
        out.push_str(&format!(
            "  --workers N           worker threads, each answering one client's input at
                        a time; clients with nothing to say hold none
                        (default {workers})
  --max-connections N   the most clients held at once (default {turn_max}).
                        One client more {busy}.
",
            workers = defaults.workers,
        ));
    }
    out.push_str(&format!(
        "  --max-connections-per-ip N
                        the most clients held at once from one IP address
                        (behind --proxy-protocol, the one its header names;
                        a Unix socket's clients have none, and no limit); at
                        least 1 (default: no limit). One client more from
                        that address {busy}.
  --idle-timeout-ms N   close a connection that sent nothing for N ms; 0 never
                        does (default {idle})
",
        idle = millis(defaults.limits.idle_timeout),
    ));
    if help.lines {
        out.push_str(&format!(
            "  --request-timeout-ms N
                        close a connection whose line is not complete N ms
                        after its first byte; 0 never does (default {request})
  --max-line BYTES      the longest line accepted, in bytes (default {max_line})
",
            request = millis(defaults.limits.request_timeout),
            max_line = defaults.limits.max_line,
        ));
    }
    out.push_str(
        "  --proxy-protocol      every connection starts with a PROXY protocol header
                        (v1 or v2, e.g. HAProxy's send-proxy) naming the real
                        client; a connection without one is closed
  --tls-cert PEM        speak TLS with this certificate chain (PEM; needs the
                        `tls` feature: cargo run --features tls --example ...)
  --tls-key PEM         the certificate's private key (PEM); SIGHUP reloads
                        both files, for connections that begin afterwards
  --metrics ADDR        serve the server's statistics over HTTP at
                        http://ADDR/metrics, in the Prometheus text format,
                        from a second listener (HOST:PORT, or unix:PATH)
  -h, --help            print this help

Under socket activation (LISTEN_FDS, e.g. systemd or
systemd-socket-activate) serves every passed socket instead of ADDR, and
tells systemd READY=1 once serving when NOTIFY_SOCKET is set.

Prints `listening on IP:PORT` (or `listening on unix:PATH`) once
listening, one line per listener in the order given, then
`metrics on ADDR` with --metrics. SIGINT (Ctrl-C) or
SIGTERM shuts down gracefully: stop accepting, answer what clients
already sent, close; a second signal exits at once. SIGUSR1 prints the
counters on stderr; SIGUSR2 pauses accepting (new clients wait, open
ones are served) and the next SIGUSR2 resumes. RUST_LOG=debug logs
each connection on stderr.

Exit status: 0 after a shutdown, 2 for a bad argument or an invalid
configuration, 1 if the server cannot start (a busy port) or fails.
",
    );
    out
}

/// The program's name for messages: the file name without directory or
/// extension (`echo`), as Unix tools print it.
fn program_name(arg0: Option<OsString>) -> String {
    arg0.as_deref()
        .map(Path::new)
        .and_then(Path::file_stem)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "example".to_string())
}

/// An error and its causes on one line: `failed to listen on
/// 127.0.0.1:7878: Address already in use (os error 98)`.
fn error_chain(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(unix)]
mod signals {
    use std::io;
    use std::thread::{self, JoinHandle};

    use frontdesk::ServerControl;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    use signal_hook::iterator::{Handle, Signals};

    use super::Reload;

    /// The thread that turns SIGINT and SIGTERM into a graceful shutdown.
    pub(super) struct Watch {
        handle: Handle,
        thread: JoinHandle<()>,
    }

    /// Starts a thread that stops the servers on the first SIGINT or
    /// SIGTERM and ends the process at once on a second one; SIGUSR1 prints
    /// the main server's counters on stderr; SIGUSR2 pauses the main
    /// server's accepting, and the next one resumes it.
    ///
    /// Signals arrive on a thread of our own, not in a signal handler, so
    /// it may do anything: here, call `ServerControl::stop`, which wakes the
    /// accept loop with a connection and so is not allowed in a handler.
    pub(super) fn watch(stoppers: Vec<ServerControl>, reload: Option<Reload>) -> io::Result<Watch> {
        let mut signals = match reload {
            Some(_) => Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGHUP])?,
            None => Signals::new([SIGINT, SIGTERM, SIGUSR1, SIGUSR2])?,
        };
        let handle = signals.handle();
        let thread = thread::Builder::new()
            .name("signals".to_string())
            .spawn(move || {
                let mut stopping = false;
                for signal in signals.forever() {
                    match (signal, &reload) {
                        (SIGHUP, Some(reload)) => reload(),
                        (SIGUSR1, _) => eprintln!("{}", super::stats_line(&stoppers[0].stats())),
                        // Said once it holds: no client is accepted from
                        // the moment `pause` returns.
                        (SIGUSR2, _) if stoppers[0].is_paused() => {
                            stoppers[0].resume();
                            eprintln!("accepting resumed");
                        }
                        (SIGUSR2, _) => {
                            stoppers[0].pause();
                            eprintln!("accepting paused (SIGUSR2 resumes)");
                        }
                        _ if stopping => {
                            eprintln!("second signal: exiting without waiting for connections");
                            std::process::exit(1);
                        }
                        _ => {
                            log::info!("signal {signal}: shutting down");
                            for stopper in &stoppers {
                                stopper.stop();
                            }
                            stopping = true;
                        }
                    }
                }
            })?;
        Ok(Watch { handle, thread })
    }

    impl Watch {
        /// Stops watching and joins the thread.
        pub(super) fn close(self) {
            self.handle.close();
            let _ = self.thread.join();
        }
    }
}

#[cfg(not(unix))]
mod signals {
    use std::io;

    use frontdesk::ServerControl;

    use super::Reload;

    /// Elsewhere than Unix, Ctrl-C ends the process at once.
    pub(super) struct Watch;

    pub(super) fn watch(_: Vec<ServerControl>, _: Option<Reload>) -> io::Result<Watch> {
        Ok(Watch)
    }

    impl Watch {
        pub(super) fn close(self) {}
    }
}
