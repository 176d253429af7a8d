//! Fuzz target: lines, as `LineReader` (the `Handler` mode) and the turn
//! mode's `Lines` read them (the core `Lines` runs on, over a reader that
//! says `WouldBlock` between chunks, as a parked connection's socket does).
//! The same bytes in any chunking, with interrupted and timed-out reads
//! between, give the lines and errors a plain split on `\n` predicts, and
//! no read is ever offered more than `max_line + 2` bytes of buffer.
//!
//! `cargo test -p frontdesk-fuzz --test lines` replays the corpus;
//! docs/reliability.md has the command that fuzzes it.

#![cfg(unix)]

use std::io::{self, Read};
use std::time::Duration;

use frontdesk::fuzzing::TurnLines;
use frontdesk::{LineError, LineReader};

/// What one call gave, in a form that can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Line(Vec<u8>),
    TooLong,
    Closed(usize),
}

/// The specification: split on `\n`, drop one `\r` before it, judge each
/// line by its length; a last unterminated line is too long only if it is
/// over the limit without a last `\r`. The outcomes up to `Closed`, and
/// what stays buffered then.
fn model(input: &[u8], max_line: usize) -> (Vec<Outcome>, Vec<u8>) {
    let mut segments: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = segments.pop().expect("split yields at least one segment");
    let mut outcomes: Vec<Outcome> = segments
        .into_iter()
        .map(|segment| {
            let line = segment.strip_suffix(b"\r").unwrap_or(segment);
            match line.len() > max_line {
                true => Outcome::TooLong,
                false => Outcome::Line(line.to_vec()),
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
#[derive(Debug, Clone, Copy)]
enum Step {
    Bytes(usize),
    Interrupted,
    /// `WouldBlock` for the turn mode's reader; for `LineReader`, a read
    /// timeout (it reports both as `TimedOut` and goes on after).
    Wait,
    TimedOut,
}

struct Scripted<'a> {
    data: &'a [u8],
    steps: &'a [Step],
    next: usize,
    /// The largest buffer a `read` was given.
    widest: usize,
}

impl Read for Scripted<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.widest = self.widest.max(out.len());
        let step = self.steps[self.next % self.steps.len()];
        self.next += 1;
        match step {
            Step::Bytes(n) => {
                let n = n.min(out.len()).min(self.data.len());
                out[..n].copy_from_slice(&self.data[..n]);
                self.data = &self.data[n..];
                Ok(n)
            }
            Step::Interrupted => Err(io::ErrorKind::Interrupted.into()),
            Step::Wait => Err(io::ErrorKind::WouldBlock.into()),
            Step::TimedOut => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

/// Every step may fail or give nothing new; this many calls per byte and
/// step are plenty for any correct reader.
fn call_budget(data: &[u8], steps: &[Step]) -> usize {
    (data.len() + 4) * (steps.len() + 2) * 4
}

fn line_reader(data: &[u8], steps: &[Step], max_line: usize) -> (Vec<Outcome>, Vec<u8>, usize) {
    let mut reader = LineReader::new(
        Scripted {
            data,
            steps,
            next: 0,
            widest: 0,
        },
        max_line,
    );
    let mut outcomes = Vec::new();
    for _ in 0..call_budget(data, steps) {
        match reader.read_line() {
            Ok(line) => outcomes.push(Outcome::Line(line.to_vec())),
            Err(LineError::TooLong { max_line: m }) => {
                assert_eq!(m, max_line);
                outcomes.push(Outcome::TooLong);
            }
            Err(LineError::Closed { partial }) => {
                outcomes.push(Outcome::Closed(partial));
                // Closed is repeated, without reading again.
                let calls = reader.get_ref().next;
                assert!(matches!(reader.read_line(), Err(LineError::Closed { .. })));
                assert_eq!(reader.get_ref().next, calls);
                let widest = reader.get_ref().widest;
                return (outcomes, reader.buffered().to_vec(), widest);
            }
            Err(LineError::TimedOut(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    panic!("LineReader did not reach the end: {outcomes:?}");
}

fn turn_lines(data: &[u8], steps: &[Step], max_line: usize) -> (Vec<Outcome>, Vec<u8>) {
    let mut reader = Scripted {
        data,
        steps,
        next: 0,
        widest: 0,
    };
    let mut widest = 0;
    let mut outcomes = Vec::new();
    // `TurnLines` takes its reader by value; the script is shared through
    // a reference so its widest read can be checked after.
    let mut lines = TurnLines::new(&mut reader, max_line);
    for _ in 0..call_budget(data, steps) {
        match lines.next_line() {
            Ok(Some(line)) => outcomes.push(Outcome::Line(line.to_vec())),
            Ok(None) => {}
            Err(LineError::TooLong { .. }) => outcomes.push(Outcome::TooLong),
            Err(LineError::Closed { partial }) => {
                outcomes.push(Outcome::Closed(partial));
                let buffered = lines.buffered().to_vec();
                drop(lines);
                widest = widest.max(reader.widest);
                assert!(
                    widest <= max_line.saturating_add(2),
                    "read of {widest} bytes"
                );
                return (outcomes, buffered);
            }
            Err(LineError::TimedOut(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    panic!("Lines did not reach the end: {outcomes:?}");
}

fn check(input: &[u8]) {
    let Some((&limit, input)) = input.split_first() else {
        return;
    };
    // 0 to 1016 (across the 1 KiB the buffer starts at), or no limit.
    let max_line = match limit {
        255 => usize::MAX,
        n => usize::from(n) * 4,
    };
    // Then up to 8 steps, ended by a 0xFF byte, then the data.
    let (plan, data) = match input.iter().take(9).position(|&b| b == 0xFF) {
        Some(end) => (&input[..end], &input[end + 1..]),
        None => (&input[..0], input),
    };
    let mut steps: Vec<Step> = plan
        .iter()
        .map(|&b| match b {
            0 => Step::Interrupted,
            1 => Step::Wait,
            2 => Step::TimedOut,
            n => Step::Bytes(usize::from(n - 2)),
        })
        .collect();
    if !steps.iter().any(|step| matches!(step, Step::Bytes(_))) {
        steps.push(Step::Bytes(usize::MAX));
    }
    let (expected, tail) = model(data, max_line);

    let whole = [Step::Bytes(usize::MAX)];
    let (outcomes, buffered, widest) = line_reader(data, &whole, max_line);
    assert_eq!(outcomes, expected, "LineReader, one read");
    assert_eq!(buffered, tail);
    assert!(
        widest <= max_line.saturating_add(2),
        "read of {widest} bytes"
    );

    let (outcomes, buffered, widest) = line_reader(data, &steps, max_line);
    assert_eq!(outcomes, expected, "LineReader, {steps:?}");
    assert_eq!(buffered, tail);
    assert!(
        widest <= max_line.saturating_add(2),
        "read of {widest} bytes"
    );

    let (outcomes, buffered) = turn_lines(data, &steps, max_line);
    assert_eq!(outcomes, expected, "Lines, {steps:?}");
    assert_eq!(buffered, tail);
}

#[test]
fn lines() {
    // Every committed input, then 10000 random ones (about a second in a
    // debug build), with no time limit: one would cut the replay short
    // (bolero's default is one second for both).
    bolero::check!()
        .with_test_time(Duration::MAX)
        .with_iterations(10000)
        .for_each(check);
}
