//! What `tests/frames_prop.rs` and `tests/frames.rs` share: the reference
//! model of length-prefixed framing and the inputs to check it on.

#![allow(dead_code)]

use frontdesk::LengthPrefix;
use proptest::prelude::*;

/// What one call to `read_frame` gave, in a form that can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A frame's payload.
    Frame(Vec<u8>),
    /// A frame announcing this many bytes, over the limit.
    TooLong(u64),
    /// The end of the stream, with this many bytes of an unfinished frame.
    Closed(usize),
}

pub(crate) const PREFIXES: [LengthPrefix; 5] = [
    LengthPrefix::U8,
    LengthPrefix::U16Be,
    LengthPrefix::U16Le,
    LengthPrefix::U32Be,
    LengthPrefix::U32Le,
];

/// The length a prefix announces, decoded the long way round.
pub(crate) fn announced(prefix: LengthPrefix, bytes: &[u8]) -> u64 {
    let bytes = &bytes[..prefix.width()];
    let big_endian = matches!(prefix, LengthPrefix::U16Be | LengthPrefix::U32Be);
    let mut len = 0u64;
    for i in 0..bytes.len() {
        let byte = if big_endian {
            bytes[i]
        } else {
            bytes[bytes.len() - 1 - i]
        };
        len = len << 8 | u64::from(byte);
    }
    len
}

/// The specification, written as simply as possible: walk the input,
/// take a prefix, then judge the frame by the length it announces; an
/// over-long frame's payload is dropped, as far as the input has it. An
/// unfinished last frame stays buffered (its prefix included) unless it
/// is over-long. Returns the outcomes up to and including `Closed`, and
/// what `buffered()` holds then.
pub(crate) fn model(
    input: &[u8],
    prefix: LengthPrefix,
    max_frame: usize,
) -> (Vec<Outcome>, Vec<u8>) {
    let width = prefix.width();
    let mut outcomes = Vec::new();
    let mut rest = input;
    loop {
        if rest.len() < width {
            outcomes.push(Outcome::Closed(rest.len()));
            return (outcomes, rest.to_vec());
        }
        let len = announced(prefix, rest);
        let payload = &rest[width..];
        if len > max_frame as u64 {
            outcomes.push(Outcome::TooLong(len));
            if len > payload.len() as u64 {
                outcomes.push(Outcome::Closed(0));
                return (outcomes, Vec::new());
            }
            rest = &payload[len as usize..];
        } else if payload.len() as u64 >= len {
            outcomes.push(Outcome::Frame(payload[..len as usize].to_vec()));
            rest = &payload[len as usize..];
        } else {
            outcomes.push(Outcome::Closed(rest.len()));
            return (outcomes, rest.to_vec());
        }
    }
}

pub(crate) fn prefix() -> impl Strategy<Value = LengthPrefix> {
    prop::sample::select(PREFIXES.to_vec())
}

/// Frames of up to 24 bytes, then an unfinished one: cut anywhere in its
/// prefix or payload, and announcing a length that is either small or
/// anything the prefix can say (up to 4 GiB − 1).
pub(crate) fn input(prefix: LengthPrefix) -> impl Strategy<Value = Vec<u8>> {
    let payload = prop::collection::vec(any::<u8>(), 0..=24);
    let announced = prop_oneof![
        3 => 0..=24u64,
        1 => 0..=prefix.max_len(),
    ];
    (
        prop::collection::vec(payload, 0..8),
        announced,
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 24),
    )
        .prop_map(move |(frames, announced, cut, filler)| {
            let mut input = Vec::new();
            for payload in frames {
                prefix.write_frame(&mut input, &payload).unwrap();
            }
            // The unfinished frame: its prefix, then less than it announces.
            let len = u32::try_from(announced).unwrap().to_be_bytes();
            let mut unfinished = match prefix {
                LengthPrefix::U8 => vec![len[3]],
                LengthPrefix::U16Be => len[2..].to_vec(),
                LengthPrefix::U16Le => vec![len[3], len[2]],
                LengthPrefix::U32Be => len.to_vec(),
                LengthPrefix::U32Le => len.iter().rev().copied().collect(),
            };
            unfinished.extend(&filler[..announced.min(24) as usize]);
            // Any cut strictly short of the whole frame, so it stays
            // unfinished (and none at all: `keep` may be 0).
            let whole = prefix.width() as u64 + announced;
            let most = if whole > unfinished.len() as u64 {
                unfinished.len()
            } else {
                unfinished.len() - 1
            };
            input.extend(&unfinished[..cut.index(most + 1)]);
            input
        })
}
