//! The baseline for memory and CPU: a plain single-threaded event loop over
//! epoll (through the `polling` crate), level-triggered, one thread for
//! the listener and every connection. Each connection keeps only a
//! partial line (if any) and the bytes its socket did not take yet; reads
//! go through one shared 64 KiB buffer.
//!
//! It speaks the `commands` line protocol and the chat relay (each line
//! to every other client, verbatim; `hi` on joining).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

use polling::{Event, Events, PollMode, Poller};

use crate::servers::{command_reply, Protocol, CHAT_GREETING, MAX_LINE};

/// The listener's key; connections use their slot index.
const LISTENER: usize = usize::MAX - 1;
/// A connection whose unsent bytes grow past this is dropped (a client
/// that does not read), as frontdesk's outbox limit does.
const OUT_LIMIT: usize = 256 * 1024;

struct Conn {
    stream: TcpStream,
    /// A line received in part.
    partial: Vec<u8>,
    /// Bytes the socket did not take yet, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Registered for writability (only while `out` has bytes).
    writing: bool,
    /// Close once `out` is flushed (`quit`, line too long).
    closing: bool,
}

struct Loop {
    poller: Poller,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    protocol: Protocol,
}

pub fn run(protocol: Protocol, listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let poller = Poller::new()?;
    // SAFETY: the listener outlives the poller (both live until the
    // process is killed), and is never dropped while registered.
    unsafe {
        poller.add_with_mode(&listener, Event::readable(LISTENER), PollMode::Level)?;
    }
    let mut state = Loop {
        poller,
        conns: Vec::new(),
        free: Vec::new(),
        protocol,
    };
    let mut events = Events::new();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut lines: Vec<u8> = Vec::new();
    loop {
        events.clear();
        state.poller.wait(&mut events, None)?;
        for event in events.iter() {
            if event.key == LISTENER {
                state.accept(&listener)?;
                continue;
            }
            if event.writable {
                state.flush(event.key)?;
            }
            if event.readable {
                state.read(event.key, &mut scratch, &mut lines)?;
            }
        }
    }
}

impl Loop {
    fn accept(&mut self, listener: &TcpListener) -> io::Result<()> {
        // Level-triggered: what is not accepted now is reported again.
        for _ in 0..64 {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Ok(()),
            };
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            let key = match self.free.pop() {
                Some(key) => key,
                None => {
                    self.conns.push(None);
                    self.conns.len() - 1
                }
            };
            // SAFETY: the stream is deleted from the poller in `close`
            // before it is dropped.
            unsafe {
                self.poller
                    .add_with_mode(&stream, Event::readable(key), PollMode::Level)?;
            }
            self.conns[key] = Some(Conn {
                stream,
                partial: Vec::new(),
                out: Vec::new(),
                sent: 0,
                writing: false,
                closing: false,
            });
            if self.protocol == Protocol::Chat {
                self.queue(key, CHAT_GREETING)?;
            }
        }
        Ok(())
    }

    /// Reads what is there (one read: level-triggered, the rest is
    /// reported again) and handles every complete line.
    fn read(&mut self, key: usize, scratch: &mut [u8], lines: &mut Vec<u8>) -> io::Result<()> {
        let Some(conn) = self.conns[key].as_mut() else {
            return Ok(());
        };
        if conn.closing {
            return Ok(());
        }
        let n = match conn.stream.read(scratch) {
            Ok(0) => return self.close(key),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(_) => return self.close(key),
        };
        // The complete lines, each with its `\n`, go to `lines`; the rest
        // stays in `partial`.
        lines.clear();
        let data = &scratch[..n];
        match data.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                lines.extend_from_slice(&conn.partial);
                lines.extend_from_slice(&data[..=last]);
                conn.partial.clear();
                conn.partial.extend_from_slice(&data[last + 1..]);
            }
            None => conn.partial.extend_from_slice(data),
        }
        if conn.partial.len() > MAX_LINE {
            conn.partial = Vec::new();
            conn.closing = true;
            self.queue(key, b"error: line too long\n")?;
            return Ok(());
        }
        if lines.is_empty() {
            return Ok(());
        }
        match self.protocol {
            Protocol::Chat => {
                for line in lines.split_inclusive(|&b| b == b'\n') {
                    self.broadcast(key, line)?;
                }
            }
            _ => {
                let mut reply = Vec::with_capacity(64);
                for line in lines.split_inclusive(|&b| b == b'\n') {
                    let line = &line[..line.len() - 1];
                    if line.len() > MAX_LINE {
                        reply.extend_from_slice(b"error: line too long\n");
                        self.conn(key).closing = true;
                        break;
                    }
                    if !command_reply(line, &mut reply) {
                        self.conn(key).closing = true;
                        break;
                    }
                }
                self.queue(key, &reply)?;
            }
        }
        Ok(())
    }

    fn conn(&mut self, key: usize) -> &mut Conn {
        self.conns[key].as_mut().expect("a live connection")
    }

    /// Sends `line` to every connection but `from`.
    fn broadcast(&mut self, from: usize, line: &[u8]) -> io::Result<()> {
        for key in 0..self.conns.len() {
            if key != from && self.conns[key].as_ref().is_some_and(|c| !c.closing) {
                self.queue(key, line)?;
            }
        }
        Ok(())
    }

    /// Writes `bytes` to `key`: at once if nothing is waiting, else after
    /// what is.
    fn queue(&mut self, key: usize, bytes: &[u8]) -> io::Result<()> {
        let conn = self.conn(key);
        if conn.out.len() - conn.sent + bytes.len() > OUT_LIMIT {
            return self.close(key);
        }
        conn.out.extend_from_slice(bytes);
        if conn.writing {
            return Ok(());
        }
        self.flush(key)
    }

    /// Writes what is waiting until done or the socket is full, and
    /// watches for writability only while something is left.
    fn flush(&mut self, key: usize) -> io::Result<()> {
        let Some(conn) = self.conns[key].as_mut() else {
            return Ok(());
        };
        while conn.sent < conn.out.len() {
            match conn.stream.write(&conn.out[conn.sent..]) {
                Ok(0) => return self.close(key),
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(key),
            }
        }
        let done = conn.sent == conn.out.len();
        if done {
            conn.out.clear();
            conn.sent = 0;
            if conn.out.capacity() > 4096 {
                conn.out = Vec::new();
            }
            if conn.closing {
                return self.close(key);
            }
        }
        if done == conn.writing {
            conn.writing = !done;
            let interest = if done {
                Event::readable(key)
            } else {
                Event::all(key)
            };
            self.poller
                .modify_with_mode(&conn.stream, interest, PollMode::Level)?;
        }
        Ok(())
    }

    fn close(&mut self, key: usize) -> io::Result<()> {
        if let Some(conn) = self.conns[key].take() {
            self.poller.delete(&conn.stream)?;
            self.free.push(key);
        }
        Ok(())
    }
}
