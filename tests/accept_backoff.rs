//! Accept back-off under `EMFILE`: when the process runs out of file
//! descriptors, the accept loop neither dies nor spins, and it recovers by
//! itself once descriptors are free again.
//!
//! Lowering `RLIMIT_NOFILE` would break every other test running in the
//! same process, so the test re-runs this test binary as a child process
//! (with `CHILD_ENV` set) that does the real work, and checks that it
//! succeeded.
#![cfg(target_os = "linux")]
// setrlimit and getrusage have no safe wrapper in std; each unsafe block
// says why it is sound.
#![allow(unsafe_code)]

mod util;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use frontdesk::{Connection, Server};
use util::{client, read_exactly, until_closed, wait_for_stats, LOCALHOST, TIMEOUT};

/// Set (to `1`) in the child process.
const CHILD_ENV: &str = "FRONTDESK_EMFILE_CHILD";
/// The line the child prints when every check passed.
const CHILD_OK: &str = "emfile child: ok";
/// How long the parent lets the child run: its own waits add up to far
/// less, so this only ends a child that hangs.
const CHILD_TIME_LIMIT: Duration = Duration::from_secs(60);
/// The longest the acceptor sleeps at a time when backing off
/// (`MAX_BACKOFF` in `src/acceptor.rs`).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
// Clients and the child's waits give up after `TIMEOUT`; a server that
// backs off must still answer well within it.
const _: () = assert!(TIMEOUT.as_secs() >= 5 * MAX_BACKOFF.as_secs());
const CLIENTS: usize = 5;

#[test]
fn accept_backs_off_under_emfile_without_spinning() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
    } else {
        parent("accept_backs_off_under_emfile_without_spinning");
    }
}

/// Runs `test_name` of this binary in a child process and checks that it
/// passed, killing it if it outlives `CHILD_TIME_LIMIT`.
fn parent(test_name: &str) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let begin = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if begin.elapsed() > CHILD_TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Polling the child: std has no wait with a timeout.
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let output = format!("--- child stdout\n{stdout}\n--- child stderr\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("child hung; killed it\n{output}"));
    assert!(status.success(), "child failed: {status}\n{output}");
    assert!(
        stdout.contains(CHILD_OK),
        "child did not run the test\n{output}"
    );
    println!("{}", stdout.lines().find(|l| l.contains(CHILD_OK)).unwrap());
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Answers `pong` to the client's `ping` and keeps the connection (and its
/// descriptor) until the client closes it.
fn pong(conn: &mut Connection) -> io::Result<()> {
    let mut ping = [0u8; 5];
    conn.read_exact(&mut ping)?;
    conn.write_all(b"pong\n")?;
    until_closed(conn)
}

fn child() {
    let server = Server::builder().workers(CLIENTS).bind(LOCALHOST).unwrap();
    // Every client connects (the kernel completes the handshake into the
    // backlog) and sends its ping before descriptors run out: a client
    // socket needs one too.
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut client = client(server.local_addr());
            client.write_all(b"ping\n").unwrap();
            client
        })
        .collect();

    // From here on the process can open exactly one more descriptor: the
    // first accepted connection takes it, and the next accept fails with
    // EMFILE.
    let original = lower_fd_limit_to_one_more();
    let handle = server.spawn(pong).expect("spawn");
    // Declared after the handle so that it is dropped first: if a check
    // fails, the handle's shutdown needs a descriptor to wake the acceptor.
    let limit = RestoreFdLimit(original);

    expect_pong(&mut clients[0]);
    let stats = wait_for_stats(&handle, "an accept error is counted", |s| {
        s.accept_errors >= 1
    });
    assert_eq!(stats.accepted, 1, "{stats:?}");

    // The acceptor keeps failing; measure what that costs. The sleep shows
    // that nothing (no spinning) happens in the window.
    let (cpu_before, errors_before, begin) =
        (cpu_time(), handle.stats().accept_errors, Instant::now());
    thread::sleep(Duration::from_secs(1));
    let (cpu, errors, wall) = (
        cpu_time() - cpu_before,
        handle.stats().accept_errors - errors_before,
        begin.elapsed(),
    );
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    // A spinning accept loop burns a whole core (share ~1.0) and fails
    // accept millions of times; backing off 5 ms, 10 ms, ... up to 1 s
    // fails fewer than ten times a second.
    assert!(
        share < 0.3,
        "the acceptor spins: {cpu:?} of CPU in {wall:?}"
    );
    assert!(errors < 30, "{errors} accept errors in {wall:?}");
    assert_eq!(handle.stats().accepted, 1);

    // Freeing the descriptor lets the next connection in, with no help.
    drop(clients.remove(0));
    expect_pong(&mut clients[0]);
    // So does raising the limit again: the rest come in at once.
    drop(limit);
    for client in &mut clients[1..] {
        expect_pong(client);
    }
    drop(clients);

    let stats = wait_for_stats(&handle, "every client is done", |s| {
        s.completed == CLIENTS as u64
    });
    assert_eq!(stats.accepted, CLIENTS as u64, "{stats:?}");
    let report = handle.shutdown().expect("shutdown");
    assert_eq!((report.forced, report.stuck_workers), (0, 0), "{report:?}");
    println!(
        "{CHILD_OK}: cpu={:.1}% accept_errors={} in {wall:?} (total {})",
        share * 100.0,
        errors,
        stats.accept_errors
    );
}

fn expect_pong(client: &mut TcpStream) {
    assert_eq!(read_exactly(client, 5), b"pong\n");
}

/// Sets the soft `RLIMIT_NOFILE` so that exactly one more descriptor can
/// be opened (the kernel always hands out the lowest free number), and
/// returns the limit as it was.
fn lower_fd_limit_to_one_more() -> libc::rlimit {
    let lowest_free = File::open("/dev/null").expect("open /dev/null").as_raw_fd();
    let original = get_fd_limit();
    let lowered = libc::rlimit {
        rlim_cur: lowest_free as libc::rlim_t + 1,
        rlim_max: original.rlim_max,
    };
    set_fd_limit(&lowered);
    original
}

struct RestoreFdLimit(libc::rlimit);

impl Drop for RestoreFdLimit {
    fn drop(&mut self) {
        set_fd_limit(&self.0);
    }
}

fn get_fd_limit() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` that outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    limit
}

fn set_fd_limit(limit: &libc::rlimit) {
    // SAFETY: `limit` points to a valid `rlimit` for the whole call, which
    // only reads it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// User plus system CPU time used so far by every thread of this process.
fn cpu_time() -> Duration {
    // SAFETY: `rusage` is plain old data for which all zeroes is a valid
    // value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` that outlives the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}
