//! The gentle close: how every connection ends, whoever ends it.
//!
//! Closing a socket that still has unread input makes the kernel send a
//! reset instead of a FIN, and a reset can destroy data the client has not
//! read yet: the last reply, a "line too long" or "busy" error. So a
//! connection ends in three steps, as nginx's lingering close does:
//!
//! 1. `shutdown(SHUT_WR)`: the client reads everything we wrote, then end
//!    of stream;
//! 2. read and discard what the client still sends, until its end of
//!    stream, for at most [`Linger::time`] and [`Linger::bytes`];
//! 3. close.
//!
//! Step 2 usually finds the client's end of stream at once, or nothing at
//! all to read. When the client is still sending, or has not closed yet,
//! the socket goes to the closer thread (`frontdesk-closer`), which waits
//! for all such sockets in one `poll(2)`: a lingering client never holds a
//! worker or the acceptor. A close cut short by the bounds is counted in
//! [`Stats::linger_cut`](crate::Stats::linger_cut).

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::config::Linger;
use crate::error::{Error, Result};
use crate::shutdown::Shared;
use crate::stats::Counters;
use crate::wait::{self, Signal};

/// Hands connections to be closed gently to the closer thread; cheap to
/// clone, one per thread that ends connections.
#[derive(Debug, Clone)]
pub(crate) struct Closer {
    inbox: Sender<Message>,
    doorbell: Arc<Signal>,
    linger: Linger,
    shared: Arc<Shared>,
}

/// The closer thread, to be finished and joined at the end of a shutdown.
#[derive(Debug)]
pub(crate) struct CloserThread {
    thread: JoinHandle<()>,
    closer: Closer,
}

#[derive(Debug)]
enum Message {
    Linger(Lingering),
    /// The server is shutting down: close whatever still lingers at this
    /// instant, and stop once nothing does.
    Finish(Instant),
}

#[derive(Debug)]
struct Lingering {
    stream: Arc<TcpStream>,
    until: Instant,
    /// Bytes that may still be discarded.
    budget: usize,
}

impl Closer {
    /// Starts the closer thread; `doorbell` is made beforehand, when the
    /// server is bound, so that starting needs no new descriptor.
    pub(crate) fn start(
        shared: Arc<Shared>,
        linger: Linger,
        doorbell: Signal,
    ) -> Result<(Closer, CloserThread)> {
        let (inbox, messages) = crossbeam_channel::unbounded();
        let closer = Closer {
            inbox,
            doorbell: Arc::new(doorbell),
            linger,
            shared,
        };
        let name = "frontdesk-closer".to_string();
        let thread = {
            let doorbell = Arc::clone(&closer.doorbell);
            let shared = Arc::clone(&closer.shared);
            thread::Builder::new()
                .name(name.clone())
                .spawn(move || run(&messages, &doorbell, &shared.counters))
                .map_err(|source| Error::Spawn { name, source })?
        };
        let closer_thread = CloserThread {
            thread,
            closer: closer.clone(),
        };
        Ok((closer, closer_thread))
    }

    /// Ends `stream` gently: shuts down the write side, discards what the
    /// client already sent, and closes at once if its end of stream is
    /// there; otherwise the closer thread waits for it. Never waits.
    ///
    /// `stream` may be shared (a worker's shutdown slot may still hold it
    /// for a moment); the socket is closed when the last reference goes.
    pub(crate) fn close(&self, stream: Arc<TcpStream>) {
        let _ = stream.shutdown(Shutdown::Write);
        let budget = match discard(&stream, self.linger.bytes) {
            Drained::Ended => return,
            Drained::OverBudget => return self.cut(),
            Drained::Pending(budget) => budget,
        };
        if self.linger.time.is_zero() {
            return self.cut();
        }
        let lingering = Lingering {
            stream,
            until: Instant::now() + self.linger.time,
            budget,
        };
        match self.inbox.send(Message::Linger(lingering)) {
            Ok(()) => self.doorbell.ring(),
            // The closer has finished: only a worker that outlived the
            // shutdown gets here. Closing at once is all that is left.
            Err(_) => self.cut(),
        }
    }

    fn cut(&self) {
        Counters::bump(&self.shared.counters.linger_cut);
    }
}

impl CloserThread {
    /// Closes whatever still lingers at `deadline`, and waits for the
    /// thread to end, which is at `deadline` at the latest.
    pub(crate) fn finish(self, deadline: Instant) {
        let CloserThread { thread, closer } = self;
        if closer.inbox.send(Message::Finish(deadline)).is_ok() {
            closer.doorbell.ring();
        }
        if thread.join().is_err() {
            log::error!("the closer thread panicked");
        }
    }
}

enum Drained {
    /// The client's end of stream (or an error): nothing to wait for.
    Ended,
    /// More than the budget arrived.
    OverBudget,
    /// Nothing more to read now; this much budget is left.
    Pending(usize),
}

/// Reads and discards what has arrived, without waiting.
fn discard(stream: &TcpStream, mut budget: usize) -> Drained {
    let mut sink = [0u8; 4096];
    loop {
        match wait::recv_now(stream, &mut sink) {
            Ok(0) => return Drained::Ended,
            Ok(n) if n > budget => return Drained::OverBudget,
            Ok(n) => budget -= n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return Drained::Pending(budget)
            }
            Err(_) => return Drained::Ended,
        }
    }
}

/// The closer thread's loop: wait for any lingering socket to have input
/// (or its end of stream), a new one to arrive, or the nearest deadline.
fn run(messages: &Receiver<Message>, doorbell: &Signal, counters: &Counters) {
    let mut lingering: Vec<Lingering> = Vec::new();
    let mut finish: Option<Instant> = None;
    let mut ready = Vec::new();
    loop {
        // Cleared before the inbox is read: a message sent after this
        // rings again, so none is left waiting while we sleep.
        doorbell.clear();
        loop {
            match messages.try_recv() {
                Ok(Message::Linger(l)) => lingering.push(l),
                Ok(Message::Finish(at)) => finish = Some(at),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    finish.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        let now = Instant::now();
        let before = lingering.len();
        lingering.retain(|l| now < l.until && finish.map_or(true, |at| now < at));
        for _ in lingering.len()..before {
            Counters::bump(&counters.linger_cut);
        }
        counters.lingering.store(lingering.len(), Ordering::Relaxed);
        if finish.is_some() && lingering.is_empty() {
            return;
        }
        let next = lingering
            .iter()
            .map(|l| l.until)
            .chain(finish)
            .min()
            .map(|at| at.saturating_duration_since(now));
        let streams: Vec<&TcpStream> = lingering.iter().map(|l| &*l.stream).collect();
        if let Err(error) = wait::wait_any_readable(&streams, doorbell, next, &mut ready) {
            // Not expected (poll(2) fails only for lack of memory): close
            // everything rather than spin.
            log::error!(
                "the closer could not wait, closing every lingering connection: error={error}"
            );
            for _ in lingering.drain(..) {
                Counters::bump(&counters.linger_cut);
            }
            continue;
        }
        drop(streams);
        // Highest index first, so `swap_remove` leaves the others in place.
        for &index in ready.iter().rev() {
            let l = &mut lingering[index];
            match discard(&l.stream, l.budget) {
                Drained::Ended => {
                    lingering.swap_remove(index);
                }
                Drained::OverBudget => {
                    lingering.swap_remove(index);
                    Counters::bump(&counters.linger_cut);
                }
                Drained::Pending(budget) => l.budget = budget,
            }
        }
    }
}
