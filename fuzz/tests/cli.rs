//! Fuzz target: the examples' command line (`examples/common/mod.rs`,
//! included here as it is, so the target parses exactly what the examples
//! parse). Any arguments: no panic, and a refusal is one line, as the
//! examples print it.
//!
//! `cargo test -p frontdesk-fuzz --test cli` replays the corpus;
//! docs/reliability.md has the command that fuzzes it.

#![cfg(unix)]

#[path = "../../examples/common/mod.rs"]
mod common;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use common::{parse_args, Options};

/// Whether parsing `arg` as the address could ask the system's resolver
/// (`HOST:PORT` with a host name): the target skips those, as a lookup
/// is slow and its answer is not the parser's.
fn resolves(arg: &[u8]) -> bool {
    let Ok(arg) = std::str::from_utf8(arg) else {
        return false;
    };
    if arg.starts_with('-') || arg.starts_with("unix:") || arg.parse::<SocketAddr>().is_ok() {
        return false;
    }
    match arg.rsplit_once(':') {
        Some((_, port)) => port.parse::<u16>().is_ok(),
        None => false,
    }
}

fn check(input: &[u8]) {
    // Arguments are separated by NUL, which no argument can hold.
    let args: Vec<&[u8]> = input.split(|&byte| byte == 0).collect();
    if args.iter().any(|arg| resolves(arg)) {
        return;
    }
    let args = args.into_iter().map(|arg| OsString::from_vec(arg.to_vec()));
    match parse_args(args, Options::default()) {
        Ok(Some(options)) => {
            assert!(!options.addrs.is_empty());
            for addr in &options.addrs {
                assert!(!matches!(addr, common::Address::Tcp(addrs) if addrs.is_empty()));
            }
        }
        Ok(None) => {} // --help
        Err(message) => {
            assert!(!message.is_empty());
            assert!(
                !message.contains(['\n', '\r']),
                "the examples print a refusal on one line: {message:?}"
            );
        }
    }
}

#[test]
fn command_line() {
    // Every committed input, then 10000 random ones (about a second in a
    // debug build), with no time limit: one would cut the replay short
    // (bolero's default is one second for both).
    bolero::check!()
        .with_test_time(Duration::MAX)
        .with_iterations(10000)
        .for_each(check);
}
