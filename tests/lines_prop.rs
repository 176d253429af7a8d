//! Property test of `LineReader`'s framing against a reference model: random
//! lines, terminators and read sizes must give the lines a plain split on
//! `\n` predicts, however the input is cut into reads.

use std::io::{self, Read};

use frontdesk::{LineError, LineReader};
use proptest::prelude::*;

/// What one call to `read_line` gave, in a form that can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Line(Vec<u8>),
    TooLong,
    Closed(usize),
}

/// The specification, written as simply as possible: split on `\n`, drop one
/// `\r` before it, and judge each line by its length. A final unterminated
/// line is too long only if it is over the limit even without a last `\r`
/// (which could still have become `\r\n`). Returns the outcomes up to and
/// including `Closed`, and what `buffered()` holds then.
fn model(input: &[u8], max_line: usize) -> (Vec<Outcome>, Vec<u8>) {
    let mut segments: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = segments.pop().expect("split yields at least one segment");
    let mut outcomes: Vec<Outcome> = segments
        .into_iter()
        .map(|segment| {
            let line = segment.strip_suffix(b"\r").unwrap_or(segment);
            if line.len() > max_line {
                Outcome::TooLong
            } else {
                Outcome::Line(line.to_vec())
            }
        })
        .collect();
    let counted = tail.strip_suffix(b"\r").unwrap_or(tail);
    if counted.len() > max_line {
        outcomes.push(Outcome::TooLong);
        outcomes.push(Outcome::Closed(0));
        (outcomes, Vec::new())
    } else {
        outcomes.push(Outcome::Closed(tail.len()));
        (outcomes, tail.to_vec())
    }
}

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

/// Runs a reader until `Closed`, retrying timeouts, and checks the invariants
/// that hold after every call.
fn run(reader: Scripted, max_line: usize) -> (Vec<Outcome>, Vec<u8>) {
    let mut lines = LineReader::new(reader, max_line);
    let mut outcomes = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 100_000, "the reader makes no progress");
        let outcome = match lines.read_line() {
            Ok(line) => Outcome::Line(line.to_vec()),
            Err(LineError::TooLong { max_line: limit }) => {
                assert_eq!(limit, max_line);
                Outcome::TooLong
            }
            Err(LineError::Closed { partial }) => Outcome::Closed(partial),
            Err(LineError::TimedOut(e)) => {
                assert!(matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ));
                continue;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        };
        assert!(lines.buffered().len() <= max_line + 2);
        let closed = matches!(outcome, Outcome::Closed(_));
        outcomes.push(outcome);
        if closed {
            break;
        }
    }
    let buffered = lines.buffered().to_vec();
    match lines.read_line() {
        Err(LineError::Closed { partial }) => assert_eq!(partial, buffered.len()),
        other => panic!("expected Closed again, got {other:?}"),
    }
    assert_eq!(lines.buffered(), &buffered[..]);
    (outcomes, buffered)
}

/// Bytes other than `\n`, with many `\r`s so that `\r\n` splits and lone
/// `\r`s are common.
fn line_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        1 => Just(b'\r'),
        4 => any::<u8>().prop_map(|b| if b == b'\n' { b'x' } else { b }),
    ]
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    let line = (prop::collection::vec(line_byte(), 0..=20), any::<bool>());
    (
        prop::collection::vec(line, 0..8),
        prop::collection::vec(line_byte(), 0..=20),
    )
        .prop_map(|(lines, tail)| {
            let mut input = Vec::new();
            for (line, crlf) in lines {
                input.extend_from_slice(&line);
                input.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            input.extend_from_slice(&tail);
            input
        })
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
        input in input(),
        max_line in 0..=16usize,
        steps in steps(),
    ) {
        let expected = model(&input, max_line);
        let reader = Scripted { data: input.clone(), pos: 0, steps, next: 0 };
        prop_assert_eq!(run(reader, max_line), expected.clone());

        let whole = Scripted { data: input, pos: 0, steps: vec![Step::Bytes(usize::MAX)], next: 0 };
        prop_assert_eq!(run(whole, max_line), expected);
    }
}

#[test]
fn model_examples() {
    use Outcome::*;
    assert_eq!(
        model(b"ab\r\ncd\nx\r", 2),
        (
            vec![Line(b"ab".to_vec()), Line(b"cd".to_vec()), Closed(2)],
            b"x\r".to_vec()
        )
    );
    assert_eq!(
        model(b"abc\nabc\r", 2),
        (vec![TooLong, TooLong, Closed(0)], Vec::new())
    );
    assert_eq!(model(b"", 0), (vec![Closed(0)], Vec::new()));
}
