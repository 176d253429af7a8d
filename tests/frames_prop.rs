//! Property test of `FrameReader`'s framing against a reference model:
//! random frames, prefixes, limits and read sizes must give the frames a
//! plain walk over the input predicts, however the input is cut into
//! reads.

use std::io::{self, Read};

mod frames_util;

use frontdesk::{FrameError, FrameReader, LengthPrefix};
use proptest::prelude::*;

use frames_util::{announced, input, model, prefix, Outcome};

/// One step of the scripted reader, used in turn, round and round.
#[derive(Debug, Clone)]
enum Step {
    /// Hand out at most this many bytes.
    Bytes(usize),
    /// Fail with `Interrupted`, which the reader must retry by itself.
    Interrupted,
    /// Fail with a timeout kind, which the reader must report and recover from.
    Timeout(io::ErrorKind),
}

struct Scripted {
    data: Vec<u8>,
    pos: usize,
    steps: Vec<Step>,
    next: usize,
}

impl Read for Scripted {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let step = self.steps[self.next % self.steps.len()].clone();
        self.next += 1;
        match step {
            Step::Bytes(n) => {
                let n = n.min(out.len()).min(self.data.len() - self.pos);
                out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
                self.pos += n;
                Ok(n)
            }
            Step::Interrupted => Err(io::Error::new(io::ErrorKind::Interrupted, "signal")),
            Step::Timeout(kind) => Err(io::Error::new(kind, "timeout")),
        }
    }
}

/// Runs a reader until `Closed`, retrying timeouts, and checks the
/// invariants that hold after every call.
fn run(reader: Scripted, prefix: LengthPrefix, max_frame: usize) -> (Vec<Outcome>, Vec<u8>) {
    let mut frames = FrameReader::new(reader, prefix, max_frame);
    let mut outcomes = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 100_000, "the reader makes no progress");
        let outcome = match frames.read_frame() {
            Ok(frame) => Outcome::Frame(frame.to_vec()),
            Err(FrameError::TooLong {
                len,
                max_frame: limit,
            }) => {
                assert_eq!(limit, max_frame);
                Outcome::TooLong(len)
            }
            Err(FrameError::Closed { partial }) => Outcome::Closed(partial),
            Err(FrameError::TimedOut(e)) => {
                assert!(matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ));
                continue;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        };
        assert!(frames.buffered().len() <= prefix.width().saturating_add(max_frame));
        let closed = matches!(outcome, Outcome::Closed(_));
        outcomes.push(outcome);
        if closed {
            break;
        }
    }
    let buffered = frames.buffered().to_vec();
    match frames.read_frame() {
        Err(FrameError::Closed { partial }) => assert_eq!(partial, buffered.len()),
        other => panic!("expected Closed again, got {other:?}"),
    }
    assert_eq!(frames.buffered(), &buffered[..]);
    (outcomes, buffered)
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => (1..=8usize).prop_map(Step::Bytes),
        1 => Just(Step::Interrupted),
        1 => prop_oneof![Just(io::ErrorKind::WouldBlock), Just(io::ErrorKind::TimedOut)]
            .prop_map(Step::Timeout),
    ];
    // Starting with a read of bytes guarantees the script makes progress.
    ((1..=8usize), prop::collection::vec(step, 0..6)).prop_map(|(first, rest)| {
        let mut steps = vec![Step::Bytes(first)];
        steps.extend(rest);
        steps
    })
}

proptest! {
    #[test]
    fn framing_matches_the_model(
        (prefix, input) in prefix().prop_flat_map(|prefix| (Just(prefix), input(prefix))),
        max_frame in 0..=16usize,
        steps in steps(),
    ) {
        let expected = model(&input, prefix, max_frame);
        let reader = Scripted { data: input.clone(), pos: 0, steps, next: 0 };
        prop_assert_eq!(run(reader, prefix, max_frame), expected.clone());

        let whole = Scripted { data: input, pos: 0, steps: vec![Step::Bytes(usize::MAX)], next: 0 };
        prop_assert_eq!(run(whole, prefix, max_frame), expected);
    }

    #[test]
    fn no_limit_takes_every_frame(
        (prefix, input) in prefix().prop_flat_map(|prefix| (Just(prefix), input(prefix))),
        steps in steps(),
    ) {
        // `usize::MAX` is no limit: nothing is too long.
        let expected = model(&input, prefix, usize::MAX);
        prop_assert!(!expected.0.iter().any(|o| matches!(o, Outcome::TooLong(_))));
        let reader = Scripted { data: input, pos: 0, steps, next: 0 };
        prop_assert_eq!(run(reader, prefix, usize::MAX), expected);
    }
}

#[test]
fn model_examples() {
    use Outcome::*;
    let u8 = LengthPrefix::U8;
    assert_eq!(
        model(b"\x02ab\x00\x03cd", u8, 3),
        (
            vec![Frame(b"ab".to_vec()), Frame(Vec::new()), Closed(3)],
            b"\x03cd".to_vec()
        )
    );
    assert_eq!(
        model(b"\x03abc\x03ab", u8, 2),
        (vec![TooLong(3), TooLong(3), Closed(0)], Vec::new())
    );
    assert_eq!(
        model(b"\x01\x02", LengthPrefix::U16Le, 1000),
        (vec![Closed(2)], b"\x01\x02".to_vec())
    );
    assert_eq!(
        model(b"\x00\x00\x01\x02", LengthPrefix::U32Be, 300),
        (vec![Closed(4)], b"\x00\x00\x01\x02".to_vec())
    );
    assert_eq!(model(b"", u8, 0), (vec![Closed(0)], Vec::new()));
    assert_eq!(
        announced(LengthPrefix::U32Le, b"\x01\x02\x03\x04"),
        0x0403_0201
    );
    assert_eq!(
        announced(LengthPrefix::U32Be, b"\x01\x02\x03\x04"),
        0x0102_0304
    );
}
