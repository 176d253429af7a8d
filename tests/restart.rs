//! A restart that drops nobody: the mechanism docs/deploy.md recommends,
//! measured under load.
//!
//! The service manager (systemd with a `.socket` unit; here this test, as
//! systemd does it) owns the listening socket and passes it to each
//! instance of the server as descriptor 3 with `LISTEN_FDS=1`. A restart
//! stops the old instance — it stops accepting at once, drains what it
//! accepted, and exits — then starts the new one on the same socket. The
//! socket never stops listening, so clients that connect in between wait
//! in its backlog and are served by the new instance: none is refused,
//! none is reset, none is lost.
//!
//! The load is bounded (a fixed number of short connections, each with
//! read and write timeouts) and stops by itself.

#![cfg(target_os = "linux")]
// kill(2) needs an unsafe block; it says why it is sound.
#![allow(unsafe_code)]

mod support;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::{example_path, socket_activated, ListenPid, EXIT_WITHIN, PATIENCE};

/// Starts the `commands` example on `listener`, passed as descriptor 3
/// the way systemd passes a socket unit's socket, and waits for its
/// `listening on` line.
fn start_instance(listener: &TcpListener) -> Child {
    let mut command = socket_activated(listener, ListenPid::Own, &example_path("commands"), &[]);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("start the commands example");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the listening line");
    assert!(
        first == format!("listening on {}\n", listener.local_addr().unwrap()),
        "{first:?}"
    );
    child
}

/// Stops an instance as systemd does (SIGTERM) and waits for it to exit;
/// returns how long it took.
fn stop_instance(mut child: Child) -> Duration {
    let pid = i32::try_from(child.id()).expect("pid fits in pid_t");
    let started = Instant::now();
    // SAFETY: kill(2) takes plain integers; the child has not been waited
    // for, so the pid is still its own.
    let result = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(result, 0, "kill: {}", io::Error::last_os_error());
    let status = child.wait().expect("wait for the old instance");
    assert!(status.success(), "the old instance exited with {status}");
    started.elapsed()
}

/// What the load saw.
#[derive(Debug, Default)]
struct Outcome {
    served: u64,
    refused: u64,
    reset: u64,
    lost: u64,
    slowest: Duration,
    /// When each conversation began and ended.
    spans: Vec<(Instant, Instant)>,
}

/// One short conversation: connect, `ping`, expect `pong`, `quit`, expect
/// `bye` and a clean end of stream.
fn converse(addr: SocketAddr, outcome: &mut Outcome) {
    let started = Instant::now();
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            outcome.refused += 1;
            return;
        }
        Err(e) => panic!("connect: {e}"),
    };
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.set_write_timeout(Some(PATIENCE)).expect("timeout");
    let result = (|| -> io::Result<bool> {
        stream.write_all(b"ping\nquit\n")?;
        let mut reply = String::new();
        io::Read::read_to_string(&mut stream, &mut reply)?;
        Ok(reply == "pong\nbye\n")
    })();
    match result {
        Ok(true) => outcome.served += 1,
        Ok(false) => outcome.lost += 1,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ) =>
        {
            outcome.reset += 1
        }
        Err(e) => panic!("conversation failed: {e}"),
    }
    outcome.slowest = outcome.slowest.max(started.elapsed());
    outcome.spans.push((started, Instant::now()));
}

#[test]
fn a_restart_on_a_held_socket_refuses_resets_and_loses_nobody() {
    // The service manager's socket: it outlives every instance.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let first = start_instance(&listener);

    // Four clients talk in a loop while the instance is replaced; each
    // stops when told, or after CONVERSATIONS conversations or LOAD_TIME,
    // whichever comes first.
    const CLIENTS: usize = 4;
    const CONVERSATIONS: usize = 200_000;
    const LOAD_TIME: Duration = Duration::from_secs(20);
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let started = Instant::now();
                let mut outcome = Outcome::default();
                for _ in 0..CONVERSATIONS {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_TIME {
                        break;
                    }
                    converse(addr, &mut outcome);
                }
                outcome
            })
        })
        .collect();

    // Let the load run against the first instance, then restart: stop the
    // old one (it drains and exits), start the new one on the same socket.
    // The waits are the scenario (traffic before and after), not
    // synchronisation.
    thread::sleep(Duration::from_millis(300));
    let signalled_at = Instant::now();
    let drained_in = stop_instance(first);
    let restarted_at = Instant::now();
    let second = start_instance(&listener);
    let ready_at = Instant::now();
    let gap = ready_at - restarted_at;
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);

    let mut total = Outcome::default();
    for client in load {
        let outcome = client.join().expect("a load thread");
        total.served += outcome.served;
        total.refused += outcome.refused;
        total.reset += outcome.reset;
        total.lost += outcome.lost;
        total.slowest = total.slowest.max(outcome.slowest);
        total.spans.extend(outcome.spans);
    }
    // The conversations under way while no instance was accepting: the
    // ones the restart could have dropped.
    let across = total
        .spans
        .iter()
        .filter(|(began, ended)| *began < ready_at && *ended > signalled_at)
        .count();
    let after = total
        .spans
        .iter()
        .filter(|(began, _)| *began > ready_at)
        .count();
    total.spans = Vec::new();
    let took = stop_instance(second);
    eprintln!(
        "restart under load: {total:?}; {across} conversations across the restart, {after} \
         after it; old instance exited {drained_in:?} after SIGTERM, new one listening {gap:?} \
         later"
    );
    assert!(
        took <= EXIT_WITHIN,
        "the new instance took {took:?} to stop"
    );
    assert_eq!(
        (total.refused, total.reset, total.lost),
        (0, 0, 0),
        "{total:?}"
    );
    // The load really ran across the restart, and on the new instance.
    assert!(across > 0, "no conversation spanned the restart: {total:?}");
    assert!(after > 0, "no conversation after the restart: {total:?}");
}
