//! End-to-end tests of the command line shared by the examples
//! (`examples/common/mod.rs`): help, bad arguments, a busy port, the
//! `listening on` line and exit on a signal.

#![cfg(unix)]

mod support;

use std::net::TcpListener;

use support::{run, Example};

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
                stdout.contains(&format!(
                    "usage: {name} [ADDR] [--workers N] [--queue N] [--idle-timeout-ms N]\n       [--request-timeout-ms N] [--max-line BYTES] [--proxy-protocol]"
                )),
                "{stdout}"
            );
            assert!(stdout.contains("default 127.0.0.1:7878"), "{stdout}");
            assert!(stderr.is_empty(), "{stderr}");
        }
    }
}

#[test]
fn a_line_has_ten_seconds_by_default() {
    for name in EXAMPLES {
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
}

#[test]
fn non_numeric_values_are_errors() {
    for flag in [
        "--workers",
        "--queue",
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
fn repeated_option_or_second_address_is_an_error() {
    fails(
        "echo",
        &["--workers", "2", "--workers=3"],
        "--workers given twice",
    );
    fails(
        "echo",
        &["127.0.0.1:0", "127.0.0.1:1"],
        "unexpected argument '127.0.0.1:1'",
    );
}

#[test]
fn unparsable_address_is_an_error() {
    for addr in ["nonsense", "127.0.0.1", "127.0.0.1:99999", "1.2.3:4x"] {
        fails("echo", &[addr], &format!("invalid address '{addr}'"));
    }
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
        let mut server = Example::start(name, &["--workers", "2", "--queue=1"]);
        assert!(server.addr.ip().is_loopback());
        assert_ne!(server.addr.port(), 0);
        // `stop` also checks that nothing more was printed on stdout.
        server.stop();
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
