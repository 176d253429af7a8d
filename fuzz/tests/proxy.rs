//! Fuzz target: the PROXY protocol header (v1 and v2), read from a real
//! socket as a server requiring the protocol reads it (`src/stream/proxy.rs`
//! around the `ppp` crate). Any bytes: no panic, and never a byte taken
//! beyond the header, whether it parses or not.
//!
//! `cargo test -p frontdesk-fuzz --test proxy` replays the corpus;
//! docs/reliability.md has the command that fuzzes it.

#![cfg(unix)]

use std::time::Duration;

use frontdesk::fuzzing::{read_proxy_header, MAX_INPUT};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// How many bytes the header at the start of `input` has, by the
/// specification alone: a v1 header up to its first `\r\n` (107 bytes at
/// most), a v2 header its 16 fixed bytes and the length they give; for
/// anything else, the 16 bytes a reader may take before it can tell.
fn header_len(input: &[u8]) -> usize {
    if input.starts_with(V2_SIGNATURE) && input.len() >= 16 {
        return 16 + usize::from(u16::from_be_bytes([input[14], input[15]]));
    }
    if input.starts_with(b"PROXY ") {
        if let Some(end) = input.windows(2).position(|pair| pair == b"\r\n") {
            return end + 2;
        }
        return 107;
    }
    16
}

fn check(input: &[u8]) {
    let input = &input[..input.len().min(MAX_INPUT)];
    let (result, rest) = read_proxy_header(input);
    assert!(
        input.ends_with(&rest),
        "the bytes left are the input's tail"
    );
    let taken = input.len() - rest.len();
    let limit = header_len(input);
    assert!(
        taken <= limit,
        "took {taken} bytes, beyond the header's {limit}: {result:?}"
    );
    if let Ok(header) = result {
        assert_eq!(taken, limit, "a header read is taken whole");
        // What a v1 header names is what it says.
        if input.starts_with(b"PROXY ") {
            assert_eq!(header.tlvs().count(), 0);
        }
        if header.client().is_none() {
            assert!(header.destination().is_none());
        }
    }
}

#[test]
fn proxy_header() {
    // Every committed input, then 5000 random ones (about a second in a
    // debug build), with no time limit: one would cut the replay short
    // (bolero's default is one second for both).
    bolero::check!()
        .with_test_time(Duration::MAX)
        .with_iterations(5000)
        .for_each(check);
}
