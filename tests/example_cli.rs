//! End-to-end tests of the command line shared by the examples
//! (`examples/common/mod.rs`): help, bad arguments, a busy port, the
//! `listening on` line, exit on a signal, and SIGUSR2's pause.

#![cfg(unix)]

mod support;

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use support::{run, Example, PATIENCE};

const EXAMPLES: [&str; 3] = ["echo", "commands", "chat"];

/// The exit status for a bad argument, as `--help` says.
const BAD_ARGUMENT: i32 = 2;

/// The exit status when the server cannot start, as `--help` says.
const CANNOT_START: i32 = 1;

/// Runs `name` with `args`, a bad argument, and checks that it fails at
/// once as [`fails_with`] says, with exit status 2.
fn fails(name: &str, args: &[&str], expected: &str) {
    fails_with(BAD_ARGUMENT, name, args, expected);
}

/// Runs `name` with `args`, which must make it fail at once, and checks
/// the failure: exit status `code` (not a crash on a signal), exactly one
/// line on stderr that contains `expected`, no panic, nothing on stdout.
fn fails_with(code: i32, name: &str, args: &[&str], expected: &str) {
    let (status, stdout, stderr) = run(name, args);
    let context = format!("{name} {args:?}: status {status}, stderr {stderr:?}");
    assert_eq!(status.code(), Some(code), "{context}");
    assert_eq!(stderr.lines().count(), 1, "{context}");
    assert!(stderr.ends_with('\n'), "{context}");
    assert!(stderr.contains(expected), "{context}");
    assert!(!stderr.contains("panicked"), "{context}");
    assert!(stdout.is_empty(), "{context}: stdout {stdout:?}");
}

#[test]
fn help_prints_usage_and_exits_0() {
    for name in EXAMPLES {
        for flag in ["--help", "-h"] {
            let (status, stdout, stderr) = run(name, &["127.0.0.1:0", flag]);
            assert!(status.success(), "{name} {flag}: {status}");
            assert!(
                stdout.contains(&format!("usage: {name} [ADDR...] ")),
                "{stdout}"
            );
            assert!(stdout.contains("default 127.0.0.1:7878"), "{stdout}");
            assert!(stderr.is_empty(), "{stderr}");
        }
    }
}

/// The options `--help` lists, each at the start of its line, from `ADDR`
/// on.
fn listed_options(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("  ADDR"))
        .filter_map(|line| line.strip_prefix("  --"))
        .map(|rest| format!("--{}", rest.split_whitespace().next().unwrap_or_default()))
        .collect()
}

#[test]
fn help_lists_the_options_that_change_something_in_the_example() {
    let all = [
        "--turns",
        "--workers",
        "--queue",
        "--max-connections",
        "--max-connections-per-ip",
        "--idle-timeout-ms",
        "--request-timeout-ms",
        "--max-line",
        "--proxy-protocol",
        "--tls-cert",
        "--tls-key",
        "--metrics",
    ];
    // echo has no lines; chat has no Handler mode, so neither `--turns`
    // nor a queue. They accept those options all the same (below).
    for (name, not_here) in [
        ("echo", &["--request-timeout-ms", "--max-line"][..]),
        ("commands", &[][..]),
        ("chat", &["--turns", "--queue"][..]),
    ] {
        let (_, stdout, _) = run(name, &["--help"]);
        let expected: Vec<&str> = all
            .iter()
            .copied()
            .filter(|o| !not_here.contains(o))
            .collect();
        assert_eq!(listed_options(&stdout), expected, "{name}:\n{stdout}");
        for option in not_here {
            assert!(
                !stdout.contains(option),
                "{name} mentions {option}:\n{stdout}"
            );
        }
    }
}

#[test]
fn help_says_when_to_pick_which_mode() {
    for name in ["echo", "commands"] {
        let (_, stdout, _) = run(name, &["--help"]);
        assert!(
            stdout.contains("the Handler (default): pick it for"),
            "{stdout}"
        );
        assert!(
            stdout.contains("--turns, the TurnHandler: pick it for"),
            "{stdout}"
        );
        assert!(
            stdout.contains("Handler mode only: accepted clients"),
            "{stdout}"
        );
    }
    let (_, stdout, _) = run("chat", &["--help"]);
    assert!(
        stdout.contains("Turn mode only (a TurnHandler)"),
        "{stdout}"
    );
}

#[test]
fn help_names_the_max_connections_defaults() {
    for name in ["echo", "commands"] {
        let (_, stdout, _) = run(name, &["--help"]);
        assert!(
            stdout.contains("(default: workers + queue in the Handler mode"),
            "{stdout}"
        );
        assert!(stdout.contains("10000 with --turns"), "{stdout}");
    }
    let (_, stdout, _) = run("chat", &["--help"]);
    assert!(stdout.contains("held at once (default 10000)"), "{stdout}");
}

#[test]
fn one_command_line_starts_every_example_in_either_mode() {
    // Every option of every example, so that a script can pass the same
    // ones to any of them; those an example has no use for change nothing.
    let options = [
        "--workers",
        "2",
        "--queue",
        "1",
        "--max-connections",
        "50",
        "--max-connections-per-ip",
        "10",
        "--idle-timeout-ms",
        "60000",
        "--request-timeout-ms",
        "60000",
        "--max-line",
        "100",
    ];
    for name in EXAMPLES {
        for turns in [false, true] {
            let mut args = options.to_vec();
            if turns {
                args.push("--turns");
            }
            let mut server = Example::start(name, &args);
            let mut client = server.connect();
            if name == "echo" {
                client.send("a line far longer than one hundred bytes, which echo does not care about, since it has no lines at all\n");
                client.expect("a line far longer than one hundred bytes, which echo does not care about, since it has no lines at all");
            } else if name == "commands" {
                client.send("ping\n");
                client.expect("pong");
            } else {
                let me = client.stream().local_addr().expect("address");
                client.expect(&format!("* you are {me}; others here: 0"));
            }
            server.stop();
        }
    }
}

#[test]
fn a_line_has_ten_seconds_by_default() {
    for name in ["commands", "chat"] {
        let (_, stdout, _) = run(name, &["--help"]);
        assert!(
            stdout.contains("after its first byte; 0 never does (default 10000)"),
            "{stdout}"
        );
    }
}

#[test]
fn chat_has_no_idle_timeout_by_default() {
    let (_, stdout, _) = run("chat", &["--help"]);
    assert!(stdout.contains("does (default 0, off)"), "{stdout}");
    let (_, stdout, _) = run("commands", &["--help"]);
    assert!(stdout.contains("does (default 300000)"), "{stdout}");
}

#[test]
fn invalid_configuration_exits_2_like_a_bad_argument() {
    // These parse, and the library's `bind` refuses them with
    // `Error::Config`.
    fails(
        "commands",
        &["127.0.0.1:0", "--workers", "0"],
        "invalid configuration: `workers` must be at least 1",
    );
    fails("echo", &["127.0.0.1:0", "--workers", "5000"], "`workers`");
    fails("chat", &["127.0.0.1:0", "--queue", "2000000"], "`queue`");
    for turns in [&[][..], &["--turns"][..]] {
        let mut args = vec!["127.0.0.1:0", "--max-connections", "0"];
        args.extend(turns);
        fails("echo", &args, "`max_connections` must be at least 1");
        let mut args = vec!["127.0.0.1:0", "--max-connections-per-ip", "0"];
        args.extend(turns);
        fails(
            "commands",
            &args,
            "invalid configuration: `max_connections_per_ip` must be at least 1",
        );
    }
}

#[test]
fn non_numeric_values_are_errors() {
    for flag in [
        "--workers",
        "--queue",
        "--max-connections",
        "--max-connections-per-ip",
        "--idle-timeout-ms",
        "--request-timeout-ms",
        "--max-line",
    ] {
        fails("echo", &["127.0.0.1:0", flag, "abc"], flag);
        fails("echo", &["127.0.0.1:0", flag, "-1"], flag);
        fails("echo", &["127.0.0.1:0", &format!("{flag}=1.5")], flag);
    }
}

#[test]
fn missing_value_is_an_error() {
    fails("chat", &["127.0.0.1:0", "--queue"], "--queue needs a value");
    fails("echo", &["--metrics"], "--metrics needs a value");
}

#[test]
fn a_bad_metrics_address_is_an_error() {
    for addr in ["nonsense", "127.0.0.1", "unix:"] {
        fails(
            "commands",
            &["127.0.0.1:0", "--metrics", addr],
            &format!("invalid address '{addr}'"),
        );
    }
    fails(
        "echo",
        &["--metrics=127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        "--metrics given twice",
    );
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    for name in EXAMPLES {
        fails_with(
            CANNOT_START,
            name,
            &["127.0.0.1:0", "--metrics", &addr],
            &format!("failed to listen on {addr}"),
        );
    }
}

#[test]
fn unknown_option_is_an_error() {
    fails(
        "commands",
        &["127.0.0.1:0", "--bogus"],
        "unknown option '--bogus'",
    );
    fails("commands", &["-w", "4"], "unknown option '-w'");
}

#[test]
fn repeated_option_or_bad_second_address_is_an_error() {
    fails(
        "echo",
        &["--workers", "2", "--workers=3"],
        "--workers given twice",
    );
    fails("commands", &["--turns", "--turns"], "--turns given twice");
    // Several addresses are several listeners; each must be valid.
    fails(
        "echo",
        &["127.0.0.1:0", "127.0.0.1"],
        "invalid address '127.0.0.1'",
    );
}

#[test]
fn unparsable_address_is_an_error() {
    for addr in ["nonsense", "127.0.0.1", "127.0.0.1:99999", "1.2.3:4x"] {
        fails("echo", &[addr], &format!("invalid address '{addr}'"));
    }
}

/// Found by the command-line fuzz target (`fuzz/tests/cli.rs`): an
/// argument's control characters (a newline, say) are shown escaped, so
/// the refusal stays on one line.
#[test]
fn control_characters_in_arguments_are_escaped() {
    fails("echo", &["\n"], "invalid address '\\n'");
    fails("echo", &["--bo\ngus"], "unknown option '--bo\\ngus'");
    fails(
        "echo",
        &["--workers", "4\r"],
        "invalid value '4\\r' for --workers",
    );
    fails(
        "echo",
        &["127.0.0.1:0", "un\x1bix:x"],
        "invalid address 'un\\u{1b}ix:x'",
    );
}

#[test]
fn busy_port_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    for name in EXAMPLES {
        fails_with(
            CANNOT_START,
            name,
            &[&addr],
            &format!("failed to listen on {addr}"),
        );
    }
}

#[test]
fn listening_line_names_the_real_port_and_sigterm_exits_0() {
    for name in EXAMPLES {
        let mut server = Example::start(name, &["--workers", "2", "--queue=1", "--turns"]);
        assert!(server.addr.ip().is_loopback());
        assert_ne!(server.addr.port(), 0);
        // `stop` also checks that nothing more was printed on stdout.
        server.stop();
    }
}

/// The names of the process's threads, from `/proc/PID/task`.
#[cfg(target_os = "linux")]
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the example's threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn listening_line_comes_once_every_thread_is_started() {
    // Whoever reads `listening on` (a script, a supervisor, the soak's
    // first sample of descriptors and threads) takes the server as up:
    // its workers, closer and, in the turn mode, poller must already
    // exist. Read at once, with no wait, since the line is the signal.
    for name in EXAMPLES {
        for turns in [false, true] {
            let mut args = vec!["--workers", "3"];
            if turns {
                args.push("--turns");
            }
            let mut server = Example::start(name, &args);
            let names = thread_names(server.pid());
            // A thread names itself once it runs, and shows its parent's
            // name until then: count them all. Besides the workers: the
            // main thread, the signal watcher, the acceptor, the closer
            // and, in the turn mode (the chat server has no other), the
            // poller.
            let poller = turns || name == "chat";
            let expected = 3 + 4 + usize::from(poller);
            assert_eq!(names.len(), expected, "{name} {args:?}: threads {names:?}");
            server.stop();
        }
    }
}

#[test]
fn sigint_exits_0() {
    for name in EXAMPLES {
        let mut server = Example::start(name, &[]);
        server.stop_with(libc::SIGINT);
    }
}

#[test]
fn idle_timeout_0_means_never() {
    // Parsed, accepted and the server runs; that the connection stays
    // open is the library's `idle_timeout(None)`.
    let mut server = Example::start("commands", &["--idle-timeout-ms", "0"]);
    let mut client = server.connect();
    client.send("ping\n");
    client.expect("pong");
    server.stop();
}

#[test]
fn max_connections_per_ip_has_no_limit_by_default_and_takes_usize_max() {
    for name in EXAMPLES {
        let (_, stdout, _) = run(name, &["--help"]);
        assert!(stdout.contains("least 1 (default: no limit)"), "{stdout}");
    }
    // The largest value is no limit in practice: both clients are served.
    let max = usize::MAX.to_string();
    for turns in [&[][..], &["--turns"][..]] {
        let mut args = vec!["--max-connections-per-ip", &max];
        args.extend(turns);
        let mut server = Example::start("commands", &args);
        let mut clients = [server.connect(), server.connect()];
        for client in &mut clients {
            client.send("ping\n");
            client.expect("pong");
        }
        server.stop();
    }
    // One more than that is not a number it takes.
    fails(
        "commands",
        &["--max-connections-per-ip", "18446744073709551616"],
        "invalid value '18446744073709551616' for --max-connections-per-ip",
    );
}

/// Waits until the example has said `text` on stderr (the signals thread
/// says it once the pause or resume holds), at most [`PATIENCE`].
fn wait_for_stderr(server: &Example, text: &str, times: usize) {
    let start = Instant::now();
    while server.stderr().matches(text).count() < times {
        assert!(
            start.elapsed() < PATIENCE,
            "never said {text:?}; stderr:\n{}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigusr2_pauses_accepting_and_the_next_one_resumes() {
    for turns in [&[][..], &["--turns"][..]] {
        let mut server = Example::start("commands", turns);
        let mut open = server.connect();
        open.send("ping\n");
        open.expect("pong");

        server.signal(libc::SIGUSR2);
        wait_for_stderr(&server, "accepting paused", 1);
        // Connected (the kernel completes the handshake), not accepted:
        // nothing answers within a short bounded wait, in which a served
        // client gets its answer many times over on loopback.
        let mut waiting = server.connect();
        waiting.send("ping\n");
        thread::sleep(Duration::from_millis(300));
        assert!(
            waiting.nothing_arrived(),
            "{turns:?}: answered while paused"
        );
        // The client connected before the pause is served as before.
        open.send("ping\n");
        open.expect("pong");

        server.signal(libc::SIGUSR2);
        wait_for_stderr(&server, "accepting resumed", 1);
        waiting.expect("pong");
        server.signal(libc::SIGUSR1);
        wait_for_stderr(&server, "paused=0", 1);
        drop((open, waiting));
        server.stop();
    }
}

/// Several ADDRs: one server with a listener each, one `listening on`
/// line per listener in the order given, every listener served.
#[test]
fn several_addresses_make_one_server_with_a_listener_each() {
    let dir = std::env::temp_dir().join(format!("fd-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // [::1] only where the machine has IPv6 loopback.
    let v6 = match TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(error) => {
            eprintln!(
                "SKIPPED the [::1] part of several_addresses...: cannot bind [::1] ({error})"
            );
            false
        }
    };
    for (name, turns) in [
        ("commands", false),
        ("commands", true),
        ("echo", false),
        ("chat", true),
    ] {
        let path = dir.join(format!("{name}-{turns}.sock"));
        let unix = format!("unix:{}", path.display());
        // `Example::start` puts 127.0.0.1:0 first.
        let mut args = vec![unix.as_str()];
        if v6 {
            args.push("[::1]:0");
        }
        if turns {
            args.push("--turns");
        }
        let mut server = Example::start(name, &args);
        assert_eq!(server.next_stdout_line(), format!("listening on {unix}"));
        let mut tcp = vec![server.addr];
        if v6 {
            let line = server.next_stdout_line();
            let addr = line
                .strip_prefix("listening on ")
                .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok())
                .unwrap_or_else(|| {
                    panic!("{name}: expected `listening on [::1]:PORT`, got {line:?}")
                });
            assert!(addr.is_ipv6(), "{addr}");
            tcp.push(addr);
        }
        let mut unix_client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        unix_client.set_read_timeout(Some(PATIENCE)).unwrap();
        match name {
            "chat" => {
                let mut clients: Vec<support::Client> = tcp
                    .iter()
                    .map(|addr| support::Client::connect(*addr))
                    .collect();
                for client in &mut clients {
                    assert!(!client.line().is_empty(), "{name}: a greeting");
                }
            }
            _ => {
                let (request, reply) = match name {
                    "echo" => ("hello\n", "hello"),
                    _ => ("ping\n", "pong"),
                };
                for addr in &tcp {
                    let mut client = support::Client::connect(*addr);
                    client.send(request);
                    client.expect(reply);
                }
                use std::io::{BufRead, BufReader, Write};
                unix_client.write_all(request.as_bytes()).unwrap();
                let mut line = String::new();
                BufReader::new(&unix_client).read_line(&mut line).unwrap();
                assert_eq!(line.trim_end(), reply, "{name} over the Unix socket");
            }
        }
        drop(unix_client);
        server.stop();
        assert!(!path.exists(), "{name}: the socket file is removed on exit");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
