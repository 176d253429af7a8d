//! What the examples share: the command line, the server set-up and signal
//! handling.
//!
//! Every example takes the same arguments:
//!
//! ```text
//! cargo run --example NAME -- [ADDR] [--workers N] [--queue N] [--idle-timeout-ms N]
//!                              [--request-timeout-ms N] [--max-line BYTES] [--proxy-protocol]
//!                              [--tls-cert PEM --tls-key PEM]
//! ```
//!
//! ADDR is `HOST:PORT` or `unix:PATH`; the TLS options need the `tls`
//! feature (`cargo run --features tls --example NAME -- ...`).
//!
//! Copy this file along with an example: together they are a complete
//! server.

// Each example uses a different part of this module.
#![allow(dead_code)]

use std::error::Error;
use std::ffi::OsString;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use frontdesk::{
    Handler, LineError, Lines, Next, Overload, Server, ServerBuilder, Turn, TurnHandler,
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
    /// Where to listen: `ADDR`, resolved.
    pub(crate) addr: Listen,
    /// `--workers N`: worker threads, each serving one turn at a time.
    pub(crate) workers: usize,
    /// `--queue N`: connections that may wait for a worker (the
    /// `Handler` mode only).
    pub(crate) queue: usize,
    /// `--proxy-protocol`: every connection starts with a PROXY protocol
    /// header (v1 or v2) naming the real client.
    pub(crate) proxy_protocol: bool,
    /// `--tls-cert PEM --tls-key PEM`: speak TLS with this certificate
    /// chain and key.
    pub(crate) tls: Option<TlsFiles>,
    /// What each connection's handler needs to know.
    pub(crate) limits: Limits,
}

/// Where a server listens.
#[derive(Debug, Clone)]
pub(crate) enum Listen {
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
            addr: Listen::Tcp(Vec::new()), // DEFAULT_ADDR, resolved by `parse`
            workers: 16,
            queue: 64,
            proxy_protocol: false,
            tls: None,
            limits: Limits {
                idle_timeout: Some(Duration::from_secs(300)),
                request_timeout: Some(Duration::from_secs(10)),
                max_line: 8192,
            },
        }
    }
}

impl Options {
    /// Sets up logging (`RUST_LOG`) and parses the command line. Prints the
    /// usage and exits with 0 on `--help`; prints a one-line error and exits
    /// with 2 on a bad argument.
    ///
    /// `about` describes the example in `--help`; `defaults` are the values
    /// of the options not given.
    pub(crate) fn parse(about: &str, defaults: Options) -> Options {
        env_logger::init();
        let mut args = std::env::args_os();
        let program = program_name(args.next());
        match parse_args(args, defaults.clone()) {
            Ok(Some(options)) => options,
            Ok(None) => {
                // Nothing to do if stdout is closed: exit all the same.
                let _ = io::stdout().write_all(usage(&program, about, &defaults).as_bytes());
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
    /// - the Reject overload policy: when the server is full (in the turn
    ///   mode, at `max_connections`), a new client is turned away at once
    ///   (through the `on_reject` handler, if the example sets one) rather
    ///   than left waiting in the kernel's backlog;
    /// - a drain deadline of [`SHUTDOWN_TIMEOUT`]: on shutdown, handlers
    ///   answer everything their client sent and see end of stream once it
    ///   pauses (the library's drain), and the deadline bounds a client
    ///   that never stops sending.
    pub(crate) fn builder(&self) -> ServerBuilder {
        Server::builder()
            .workers(self.workers)
            .queue(self.queue)
            .overload(Overload::Reject)
            .idle_timeout(self.limits.idle_timeout)
            .proxy_protocol(self.proxy_protocol)
            .shutdown_timeout(SHUTDOWN_TIMEOUT)
    }
}

/// Answers the complete lines a turn finds, with `answer`, and the errors
/// every line protocol here answers the same way; returns what the turn
/// returns.
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

/// Binds `builder` to the options' address, prints `listening on IP:PORT`,
/// and serves with `handler` until SIGINT or SIGTERM, then shuts down
/// gracefully. Returns the process's exit code, with a one-line error on
/// stderr for a failure: 0 after a shutdown; 2 if the library finds the
/// configuration invalid ([`frontdesk::Error::Config`], e.g. `--workers 0`)
/// or cannot use the TLS files ([`frontdesk::Error::Tls`]),
/// which is a bad argument like those [`Options::parse`] rejects; 1 if the
/// server could not start (a busy port) or failed.
pub(crate) fn serve(options: &Options, builder: ServerBuilder, handler: impl Handler) -> ExitCode {
    exit_code(try_serve(options, builder, |server| server.run(handler)))
}

/// [`serve`] for a [`TurnHandler`]: connections wait for input without a
/// worker.
pub(crate) fn serve_turns(
    options: &Options,
    builder: ServerBuilder,
    handler: impl TurnHandler,
) -> ExitCode {
    exit_code(try_serve(options, builder, |server| {
        server.run_turns(handler)
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
    run: impl FnOnce(Server) -> frontdesk::Result<frontdesk::ShutdownReport>,
) -> Result<(), Box<dyn Error>> {
    // Under socket activation (systemd, or systemd-socket-activate) the
    // service manager holds the port and passes the socket; ADDR is then
    // not bound.
    let (builder, reload) = tls::setup(builder, options.tls.as_ref())?;
    let server = match activated(&builder)? {
        Some(server) => server,
        None => bind(builder, &options.addr)?,
    };
    // Watch for signals before announcing the address: whoever reads the
    // line may send a signal at once, and it must stop us gracefully.
    let signals = signals::watch(server.control(), reload)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    let result = run(server);
    signals.close();
    // The library logs the shutdown report at `info`.
    result?;
    Ok(())
}

fn bind(builder: ServerBuilder, addr: &Listen) -> frontdesk::Result<Server> {
    match addr {
        Listen::Tcp(addrs) => builder.bind(&addrs[..]),
        #[cfg(unix)]
        Listen::Unix(path) => builder.bind_unix(path),
        #[cfg(not(unix))]
        Listen::Unix(_) => unreachable!("`parse_args` takes `unix:` on Unix only"),
    }
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
fn parse_args(
    args: impl IntoIterator<Item = OsString>,
    defaults: Options,
) -> Result<Option<Options>, String> {
    let mut options = defaults;
    let mut addr: Option<String> = None;
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
            if let Some(first) = &addr {
                return Err(format!(
                    "unexpected argument '{arg}' (the address is already '{first}')"
                ));
            }
            addr = Some(arg);
            continue;
        }
        if arg.starts_with("--tls-") && !cfg!(feature = "tls") {
            let name = arg.split('=').next().unwrap_or(&arg);
            return Err(format!(
                "{name} needs TLS support: build with `--features tls` \
                 (cargo run --features tls --example NAME)"
            ));
        }
        if arg == "--proxy-protocol" {
            if options.proxy_protocol {
                return Err("--proxy-protocol given twice".to_string());
            }
            options.proxy_protocol = true;
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
                | "--idle-timeout-ms"
                | "--request-timeout-ms"
                | "--max-line"
                | "--tls-cert"
                | "--tls-key"
        ) {
            return Err(format!("unknown option '{name}'"));
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
            "--idle-timeout-ms" => options.limits.idle_timeout = millis(&name, &value)?,
            "--request-timeout-ms" => options.limits.request_timeout = millis(&name, &value)?,
            "--tls-cert" => tls_cert = Some(PathBuf::from(value)),
            "--tls-key" => tls_key = Some(PathBuf::from(value)),
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
    let addr = addr.unwrap_or_else(|| DEFAULT_ADDR.to_string());
    options.addr = listen_addr(&addr)?;
    Ok(Some(options))
}

/// `HOST:PORT`, resolved, or `unix:PATH`.
fn listen_addr(addr: &str) -> Result<Listen, String> {
    if let Some(path) = addr.strip_prefix("unix:") {
        if !cfg!(unix) {
            return Err(format!(
                "invalid address '{addr}': Unix sockets need a Unix system"
            ));
        }
        if path.is_empty() {
            return Err(format!("invalid address '{addr}': no path after 'unix:'"));
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|error| format!("invalid address '{addr}': {error}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("invalid address '{addr}': it resolves to nothing"));
    }
    Ok(Listen::Tcp(addrs))
}

/// A number of milliseconds, 0 for none.
fn millis(name: &str, value: &str) -> Result<Option<Duration>, String> {
    Ok(match number(name, value)? {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    })
}

fn number<T: FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("invalid value '{value}' for {name}: expected a whole number"))
}

fn usage(program: &str, about: &str, defaults: &Options) -> String {
    let millis = |time: Option<Duration>| match time {
        Some(time) => time.as_millis().to_string(),
        None => "0, off".to_string(),
    };
    let idle = millis(defaults.limits.idle_timeout);
    let request = millis(defaults.limits.request_timeout);
    format!(
        "{about}

usage: {program} [ADDR] [--workers N] [--queue N] [--idle-timeout-ms N]
       [--request-timeout-ms N] [--max-line BYTES] [--proxy-protocol]
       [--tls-cert PEM --tls-key PEM]

  ADDR                  address to listen on, HOST:PORT (default {DEFAULT_ADDR});
                        port 0 lets the system pick a free port; or unix:PATH
                        for a Unix socket (a stale socket file is replaced,
                        and the file is removed on exit)
  --workers N           worker threads; each serves one client's turn at a time,
                        while idle clients wait without one (default {workers})
  --queue N             accepted connections that may wait for a worker, for
                        servers that give a worker to each connection; these
                        examples hold up to 10,000 clients and ignore it
                        (default {queue})
  --idle-timeout-ms N   close a connection that sent nothing for N ms; 0 never
                        does (default {idle})
  --request-timeout-ms N
                        close a connection whose line is not complete N ms
                        after its first byte; 0 never does (default {request})
  --max-line BYTES      the longest line accepted, in bytes (default {max_line})
  --proxy-protocol      every connection starts with a PROXY protocol header
                        (v1 or v2, e.g. HAProxy's send-proxy) naming the real
                        client; a connection without one is closed
  --tls-cert PEM        speak TLS with this certificate chain (PEM; needs the
                        `tls` feature: cargo run --features tls --example ...)
  --tls-key PEM         the certificate's private key (PEM); SIGHUP reloads
                        both files, for connections that begin afterwards
  -h, --help            print this help

Under socket activation (LISTEN_FDS, e.g. systemd or
systemd-socket-activate) serves the passed socket instead of ADDR, and
tells systemd READY=1 once serving when NOTIFY_SOCKET is set.

Prints `listening on IP:PORT` (or `listening on unix:PATH`) once listening. SIGINT (Ctrl-C) or SIGTERM
shuts down gracefully: stop accepting, answer what clients already sent,
close; a second signal exits at once. RUST_LOG=debug logs each connection
on stderr.

Exit status: 0 after a shutdown, 2 for a bad argument or an invalid
configuration, 1 if the server cannot start (a busy port) or fails.
",
        workers = defaults.workers,
        queue = defaults.queue,
        max_line = defaults.limits.max_line,
    )
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
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::{Handle, Signals};

    use super::Reload;

    /// The thread that turns SIGINT and SIGTERM into a graceful shutdown.
    pub(super) struct Watch {
        handle: Handle,
        thread: JoinHandle<()>,
    }

    /// Starts a thread that stops the server on the first SIGINT or SIGTERM
    /// and ends the process at once on a second one.
    ///
    /// Signals arrive on a thread of our own, not in a signal handler, so
    /// it may do anything: here, call `ServerControl::stop`, which wakes the
    /// accept loop with a connection and so is not allowed in a handler.
    pub(super) fn watch(stopper: ServerControl, reload: Option<Reload>) -> io::Result<Watch> {
        let mut signals = match reload {
            Some(_) => Signals::new([SIGINT, SIGTERM, SIGHUP])?,
            None => Signals::new([SIGINT, SIGTERM])?,
        };
        let handle = signals.handle();
        let thread = thread::Builder::new()
            .name("signals".to_string())
            .spawn(move || {
                let mut stopping = false;
                for signal in signals.forever() {
                    match (signal, &reload) {
                        (SIGHUP, Some(reload)) => reload(),
                        _ if stopping => {
                            eprintln!("second signal: exiting without waiting for connections");
                            std::process::exit(1);
                        }
                        _ => {
                            log::info!("signal {signal}: shutting down");
                            stopper.stop();
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

    pub(super) fn watch(_: ServerControl, _: Option<Reload>) -> io::Result<Watch> {
        Ok(Watch)
    }

    impl Watch {
        pub(super) fn close(self) {}
    }
}
