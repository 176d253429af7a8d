//! Length-prefixed frames over real sockets, in both modes: a `FrameReader`
//! over a `Connection` in the `Handler` mode, `Frames` across turns in the
//! turn mode, each answering with `LengthPrefix::write_frame` or
//! `Message::frame`. The frames and errors must be the ones the reference
//! model (`tests/frames_util`) predicts, however the client cuts its
//! bytes into writes; in the turn mode each write is read in a turn of its
//! own, so a frame really is put together across turns.

mod frames_util;
mod util;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use frontdesk::{
    CloseReason, Connection, FrameError, FrameReader, Frames, LengthPrefix, Message, Next, Server,
    ServerHandle, Timeout, Turn, TurnHandler,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use frames_util::{input, model, prefix, Outcome, PREFIXES};
use util::{client, tcp_addr, LOCALHOST, TIMEOUT};

/// How the servers here answer: every reply is a frame with this prefix,
/// a tag byte, then the tag's body.
const REPLY: LengthPrefix = LengthPrefix::U32Be;

/// The tags of the replies.
const FRAME: u8 = b'F'; // a frame's payload
const TOO_LONG: u8 = b'T'; // `TooLong`: the announced length, 8 bytes big endian
const CLOSED: u8 = b'C'; // `Closed`: `partial`, 8 bytes big endian
const SETTLED: u8 = b'S'; // turn mode: a turn ended with no frame left

/// The `max_frame` a client asks for with the byte `255`.
const NO_LIMIT: u8 = 255;

/// A client's first two bytes: which prefix (an index into `PREFIXES`)
/// and `max_frame` (`NO_LIMIT` for `usize::MAX`).
fn setup(head: [u8; 2]) -> (LengthPrefix, usize) {
    let max_frame = match head[1] {
        NO_LIMIT => usize::MAX,
        n => usize::from(n),
    };
    (PREFIXES[usize::from(head[0])], max_frame)
}

fn reply(tag: u8, body: &[u8]) -> Vec<u8> {
    [&[tag][..], body].concat()
}

fn number(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// The `Handler` mode: frames from a `FrameReader` over the connection,
/// each answered as it comes, until the client closes.
fn serve_frames(conn: &mut Connection) -> io::Result<()> {
    let mut head = [0; 2];
    (&*conn).read_exact(&mut head)?;
    let (prefix, max_frame) = setup(head);
    let mut out = &*conn;
    let mut frames = FrameReader::new(&*conn, prefix, max_frame);
    loop {
        match frames.read_frame() {
            Ok(frame) => REPLY.write_frame(&mut out, &reply(FRAME, frame))?,
            Err(FrameError::TooLong { len, .. }) => {
                REPLY.write_frame(&mut out, &reply(TOO_LONG, &number(len)))?
            }
            Err(FrameError::Closed { partial }) => {
                return REPLY.write_frame(&mut out, &reply(CLOSED, &number(partial as u64)));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The turn mode: the client's two setup bytes, then its frames.
enum State {
    Setup(Vec<u8>),
    Frames(Frames),
}

/// The same protocol as [`serve_frames`], a turn at a time; each turn
/// ends with a [`SETTLED`] reply, which tells the client that what it
/// sent has been read.
struct TurnFrames;

fn message(tag: u8, body: &[u8]) -> Message {
    Message::frame(REPLY, &reply(tag, body)).expect("a reply fits a 4-byte prefix")
}

impl TurnHandler for TurnFrames {
    type State = State;

    fn open(&self, _: &mut Turn<'_>) -> io::Result<State> {
        Ok(State::Setup(Vec::new()))
    }

    fn ready(&self, state: &mut State, turn: &mut Turn<'_>) -> io::Result<Next> {
        if let State::Setup(head) = state {
            let mut byte = [0; 1];
            while head.len() < 2 {
                match turn.read(&mut byte) {
                    Ok(0) => return Ok(Next::Close),
                    Ok(_) => head.push(byte[0]),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Next::Park)
                    }
                    Err(error) => return Err(error),
                }
            }
            let (prefix, max_frame) = setup([head[0], head[1]]);
            *state = State::Frames(Frames::new(turn, prefix, max_frame));
        }
        let State::Frames(frames) = state else {
            unreachable!("set up above")
        };
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => turn.send(message(FRAME, frame))?,
                Ok(None) => {
                    let buffered = frames.buffered().len() as u64;
                    turn.send(message(SETTLED, &number(buffered)))?;
                    return Ok(Next::Park);
                }
                Err(FrameError::TooLong { len, .. }) => {
                    turn.send(message(TOO_LONG, &number(len)))?
                }
                Err(FrameError::Closed { partial }) => {
                    turn.send(message(CLOSED, &number(partial as u64)))?;
                    return Ok(Next::Close);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// A client of either server, reading the replies with a `FrameReader`.
struct FrameClient {
    stream: TcpStream,
    replies: FrameReader<TcpStream>,
}

impl FrameClient {
    fn connect(handle: &ServerHandle, prefix: LengthPrefix, max_frame: u8) -> FrameClient {
        let stream = client(tcp_addr(handle.local_addr()));
        // Each write leaves at once, as a segment of its own.
        stream.set_nodelay(true).unwrap();
        let replies = FrameReader::new(stream.try_clone().unwrap(), REPLY, 1 << 16);
        let mut client = FrameClient { stream, replies };
        let index = PREFIXES.iter().position(|p| *p == prefix).unwrap();
        client.write(&[index as u8, max_frame]);
        client
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// The next reply: its tag and body.
    fn reply(&mut self) -> (u8, Vec<u8>) {
        let frame = self
            .replies
            .read_frame()
            .unwrap_or_else(|e| panic!("a reply from the server: {e}"));
        let (tag, body) = frame.split_first().expect("a tag");
        (*tag, body.to_vec())
    }

    /// Reads replies up to the next [`SETTLED`] (or [`CLOSED`]), adding
    /// what they say to `outcomes`; returns whether it was `CLOSED`.
    fn replies_until_settled(&mut self, outcomes: &mut Vec<Outcome>) -> bool {
        loop {
            let (tag, body) = self.reply();
            let n = || u64::from_be_bytes(body[..].try_into().expect("8 bytes"));
            match tag {
                FRAME => outcomes.push(Outcome::Frame(body)),
                TOO_LONG => outcomes.push(Outcome::TooLong(n())),
                CLOSED => {
                    outcomes.push(Outcome::Closed(n() as usize));
                    return true;
                }
                SETTLED => return false,
                other => panic!("unexpected reply tag {other}"),
            }
        }
    }

    /// After `CLOSED`: the server's clean end of stream.
    fn expect_end(mut self) {
        match self.replies.read_frame() {
            Err(FrameError::Closed { partial: 0 }) => {}
            other => panic!("expected the end of stream, got {other:?}"),
        }
    }
}

/// One case: the input, the limit, and how the client cuts the input into
/// writes (sizes used in turn, round and round).
#[derive(Debug, Clone)]
struct Case {
    prefix: LengthPrefix,
    input: Vec<u8>,
    max_frame: u8,
    writes: Vec<usize>,
}

impl Case {
    fn max_frame(&self) -> usize {
        setup([0, self.max_frame]).1
    }

    fn chunks(&self) -> Vec<&[u8]> {
        let mut chunks = Vec::new();
        let mut rest = &self.input[..];
        for size in self.writes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, after) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk);
            rest = after;
        }
        chunks
    }
}

fn cases() -> impl Strategy<Value = Case> {
    (
        prefix().prop_flat_map(|prefix| (Just(prefix), input(prefix))),
        prop_oneof![4 => 0..=16u8, 1 => Just(NO_LIMIT)],
        prop::collection::vec(1..=8usize, 1..6),
    )
        .prop_map(|((prefix, input), max_frame, writes)| Case {
            prefix,
            input,
            max_frame,
            writes,
        })
}

/// Runs `check` on a few dozen cases, each on a connection of its own.
/// Fewer than the scripted property test runs (`tests/frames_prop.rs`):
/// each case here is a connection and, in the turn mode, a round trip
/// per write.
fn run_cases(check: impl Fn(&Case) -> Result<(), TestCaseError>) {
    let config = Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(error) = runner.run(&cases(), |case| check(&case)) {
        panic!("{error}");
    }
}

#[test]
fn handler_mode_reads_the_frames_the_model_predicts() {
    let handle = util::serve(Server::builder().workers(2), serve_frames);
    run_cases(|case| {
        let mut client = FrameClient::connect(&handle, case.prefix, case.max_frame);
        for chunk in case.chunks() {
            client.write(chunk);
        }
        client.stream.shutdown(Shutdown::Write).unwrap();
        let mut outcomes = Vec::new();
        let closed = client.replies_until_settled(&mut outcomes);
        assert!(closed, "a `SETTLED` reply, which only turns send");
        client.expect_end();
        prop_assert_eq!(
            outcomes,
            model(&case.input, case.prefix, case.max_frame()).0
        );
        Ok(())
    });
    let report = handle.shutdown().expect("shutdown");
    assert_eq!(report.stats.handler_errors, 0, "{:#?}", report.stats);
}

#[test]
fn turn_mode_puts_frames_together_across_turns() {
    let handle = Server::builder()
        .workers(2)
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(TurnFrames)
        .expect("spawn_turns");
    run_cases(|case| {
        let mut client = FrameClient::connect(&handle, case.prefix, case.max_frame);
        let mut outcomes = Vec::new();
        // Each write is answered with `SETTLED` once a turn has read it,
        // so the next write comes in a later turn.
        prop_assert!(!client.replies_until_settled(&mut outcomes));
        for chunk in case.chunks() {
            client.write(chunk);
            prop_assert!(!client.replies_until_settled(&mut outcomes));
        }
        client.stream.shutdown(Shutdown::Write).unwrap();
        while !client.replies_until_settled(&mut outcomes) {}
        client.expect_end();
        prop_assert_eq!(
            outcomes,
            model(&case.input, case.prefix, case.max_frame()).0
        );
        Ok(())
    });
    let report = handle.shutdown().expect("shutdown");
    assert_eq!(report.stats.handler_errors, 0, "{:#?}", report.stats);
}

// ---------------------------------------------------------------------------
// Back-pressure and deadlines in the turn mode
// ---------------------------------------------------------------------------

/// What [`BigFirst`] tells the test after each turn.
#[derive(Debug)]
struct Parked {
    answered: usize,
    /// Bytes kept in `Frames`.
    buffered: usize,
    /// The outbox held more than half its limit.
    backed_up: bool,
}

/// Larger than loopback's socket buffers take at once, so most of it
/// waits in the outbox.
const BIG: usize = 4 << 20;
const OUTBOX: usize = 256 * 1024;

/// Answers the frame `big` with [`BIG`] bytes and any other frame with
/// itself, in the obvious loop, which never finds the outbox full.
struct BigFirst {
    events: Sender<Parked>,
}

impl TurnHandler for BigFirst {
    type State = Frames;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Frames> {
        Ok(Frames::new(turn, LengthPrefix::U8, 255))
    }

    fn ready(&self, frames: &mut Frames, turn: &mut Turn<'_>) -> io::Result<Next> {
        let mut answered = 0;
        let next = loop {
            match frames.next_frame() {
                Ok(Some(b"big")) => turn.send(Message::frame(REPLY, &vec![b'.'; BIG])?)?,
                Ok(Some(frame)) => turn.send(Message::frame(REPLY, frame)?)?,
                Ok(None) => break Next::Park,
                Err(FrameError::Closed { .. }) => break Next::Close,
                Err(error) => return Err(error.into()),
            }
            answered += 1;
        };
        let _ = self.events.send(Parked {
            answered,
            buffered: frames.buffered().len(),
            backed_up: turn.outbox_len() > OUTBOX / 2,
        });
        Ok(next)
    }
}

#[test]
fn frames_kept_while_the_outbox_is_backed_up_are_served_when_it_drains() {
    let (events, parked) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(1)
        .outbox_limit(OUTBOX)
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(BigFirst { events })
        .expect("spawn_turns");
    let mut stream = client(tcp_addr(handle.local_addr()));
    // One write: the big request, then ten small ones.
    let mut requests = Vec::new();
    LengthPrefix::U8.write_frame(&mut requests, b"big").unwrap();
    let small: Vec<String> = (0..10).map(|i| format!("small {i}")).collect();
    for request in &small {
        LengthPrefix::U8
            .write_frame(&mut requests, request.as_bytes())
            .unwrap();
    }
    stream.write_all(&requests).unwrap();
    // The first turn answers `big`; the outbox is then over half full, so
    // the small requests stay in `Frames` and the connection parks.
    // (A turn may come before the requests, right after `open`: it
    // answers nothing.)
    let first = loop {
        let turn = parked.recv_timeout(TIMEOUT).expect("a turn");
        if turn.answered > 0 || turn.buffered > 0 {
            break turn;
        }
    };
    assert_eq!(first.answered, 1, "{first:?}");
    assert!(first.backed_up, "{first:?}");
    assert_eq!(first.buffered, requests.len() - 4, "{first:?}");
    // The client reads: the outbox drains, and the kept requests get a
    // turn without any new input.
    let mut replies = FrameReader::new(&stream, REPLY, BIG);
    let big = replies.read_frame().expect("the big reply");
    assert!(big.len() == BIG && big.iter().all(|&b| b == b'.'));
    for request in &small {
        assert_eq!(replies.read_frame().expect("a reply"), request.as_bytes());
    }
    stream.shutdown(Shutdown::Write).unwrap();
    assert!(matches!(
        replies.read_frame(),
        Err(FrameError::Closed { partial: 0 })
    ));
    let report = handle.shutdown().expect("shutdown");
    assert_eq!(report.stats.handler_errors, 0, "{:#?}", report.stats);
    assert_eq!(report.stats.outbox_full, 0, "{:#?}", report.stats);
}

/// Answers each frame with itself; a frame must be complete within
/// `timeout` of its first byte. Reports how each connection closed.
struct Deadline {
    timeout: Option<Duration>,
    /// The bytes kept in `Frames` at each park.
    parked: Sender<usize>,
    closed: Sender<CloseReason>,
}

impl TurnHandler for Deadline {
    type State = Frames;

    fn open(&self, turn: &mut Turn<'_>) -> io::Result<Frames> {
        Ok(Frames::new(turn, LengthPrefix::U16Le, 1024))
    }

    fn ready(&self, frames: &mut Frames, turn: &mut Turn<'_>) -> io::Result<Next> {
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => turn.send(Message::frame(LengthPrefix::U16Le, frame)?)?,
                Ok(None) => {
                    turn.set_deadline(frames.frame_deadline(self.timeout));
                    let _ = self.parked.send(frames.buffered().len());
                    return Ok(Next::Park);
                }
                Err(FrameError::Closed { .. }) => return Ok(Next::Close),
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn close(&self, _: Frames, _: &mut Turn<'_>, reason: CloseReason) {
        let _ = self.closed.send(reason);
    }
}

struct DeadlineServer {
    handle: ServerHandle,
    parked: Receiver<usize>,
    reasons: Receiver<CloseReason>,
}

fn serve_deadline(timeout: Option<Duration>) -> DeadlineServer {
    let (closed, reasons) = crossbeam_channel::unbounded();
    let (parks, parked) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(1)
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(Deadline {
            timeout,
            parked: parks,
            closed,
        })
        .expect("spawn_turns");
    DeadlineServer {
        handle,
        parked,
        reasons,
    }
}

impl DeadlineServer {
    /// Waits for a turn that parks with `buffered` bytes kept. (A turn may
    /// come before the bytes the test sent, right after `open`: it parks
    /// with less.)
    fn expect_parked_with(&self, buffered: usize) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.parked.recv_deadline(deadline) {
                Ok(kept) if kept == buffered => return,
                Ok(kept) => assert!(kept < buffered, "{kept} bytes kept"),
                Err(_) => panic!("no turn parked with {buffered} bytes within {TIMEOUT:?}"),
            }
        }
    }
}

#[test]
fn a_zero_frame_timeout_closes_a_connection_with_half_a_frame() {
    let server = serve_deadline(Some(Duration::ZERO));
    let mut stream = client(tcp_addr(server.handle.local_addr()));
    // A whole frame is answered: no frame is in progress after it.
    stream.write_all(b"\x02\x00ok").unwrap();
    let mut reply = [0; 4];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"\x02\x00ok");
    server.expect_parked_with(0);
    // Half a frame: its deadline is now, and it is closed.
    stream.write_all(b"\x05\x00hal").unwrap();
    server.expect_parked_with(5);
    assert_eq!(
        server.reasons.recv_timeout(TIMEOUT),
        Ok(CloseReason::TimedOut(Timeout::Deadline))
    );
    util::assert_closed(&mut stream);
    server.handle.shutdown().expect("shutdown");
}

#[test]
fn an_endless_frame_timeout_is_no_deadline() {
    for timeout in [None, Some(Duration::MAX)] {
        let server = serve_deadline(timeout);
        let mut stream = client(tcp_addr(server.handle.local_addr()));
        stream.write_all(b"\x05\x00hal").unwrap();
        // The half frame is parked with no deadline: the rest of it, and
        // a frame after it, are answered.
        server.expect_parked_with(5);
        stream.write_all(b"f!\x01\x00x").unwrap();
        let mut reply = [0; 10];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"\x05\x00half!\x01\x00x", "{timeout:?}");
        stream.shutdown(Shutdown::Write).unwrap();
        assert_eq!(server.reasons.recv_timeout(TIMEOUT), Ok(CloseReason::Done));
        server.handle.shutdown().expect("shutdown");
    }
}
