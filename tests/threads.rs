//! No thread is left behind: after every way of stopping a server, no
//! thread named `frontdesk-*` remains in the process.
//!
//! This file holds a single test on purpose: it counts the threads of the
//! whole process, so no other server may run in this test binary at the
//! same time.

mod util;

use frontdesk::{Server, ShutdownReport};
use util::{client, exchange, serve, wait_until, Gate, LOCALHOST, TIMEOUT};

/// Checks that the server's threads are gone.
///
/// `join` returns as soon as a thread has finished running, and the kernel
/// removes it from `/proc/self/task` a moment later, so this polls (for at
/// most `TIMEOUT`); a thread that was never joined and still runs would
/// stay listed. `stuck_workers == 0` shows that every worker was joined.
#[cfg(target_os = "linux")]
fn assert_no_threads_left(how: &str, report: ShutdownReport) {
    assert_eq!(report.stuck_workers, 0, "{how}: {report:?}");
    wait_until(&format!("no frontdesk thread is left after {how}"), || {
        util::frontdesk_threads().is_empty()
    });
}

#[cfg(target_os = "linux")]
#[test]
fn no_frontdesk_thread_remains_after_shutdown() {
    const WORKERS: usize = 3;
    assert_eq!(util::frontdesk_threads(), Vec::<String>::new());

    // `shutdown` with a connection still open, forced at the deadline.
    let gate = Gate::new();
    let handle = serve(
        Server::builder()
            .workers(WORKERS)
            .shutdown_timeout(std::time::Duration::from_millis(100)),
        gate.guard(util::echo),
    );
    // The check below can fail: the threads exist while the server runs.
    // A new thread takes its own name only once it runs (until then it
    // has its parent's), and the kernel cuts names to 15 bytes.
    wait_until("the server's threads are named", || {
        let mut names = util::frontdesk_threads();
        names.sort();
        let mut expected = vec!["frontdesk-worke".to_string(); WORKERS];
        expected.insert(0, "frontdesk-accep".to_string());
        expected.insert(1, "frontdesk-close".to_string());
        names == expected
    });
    let mut stream = client(handle.local_addr());
    gate.wait_entered(1);
    gate.open();
    assert_eq!(exchange(&mut stream, "hello"), "hello");
    let report = handle.shutdown().unwrap();
    assert_eq!(report.forced, 1);
    assert_no_threads_left("shutdown", report);
    drop(stream);

    // Dropping the handle.
    let handle = Server::bind(LOCALHOST).unwrap().spawn(util::echo).unwrap();
    assert_eq!(exchange(&mut client(handle.local_addr()), "x"), "x");
    drop(handle);
    assert_no_threads_left("dropping the handle", ShutdownReport::default());

    // A ServerControl with `join`.
    let handle = Server::bind(LOCALHOST).unwrap().spawn(util::echo).unwrap();
    handle.control().stop();
    let report = handle.join().unwrap();
    assert_no_threads_left("join", report);

    // A ServerControl with `run` (the accept loop runs on the caller's
    // thread; only the workers and the closer are frontdesk threads).
    let server = Server::builder().workers(WORKERS).bind(LOCALHOST).unwrap();
    let addr = server.local_addr();
    let stopper = server.control();
    let (runner, result) = util::run_on_thread(server, util::echo);
    assert_eq!(exchange(&mut client(addr), "y"), "y");
    stopper.stop();
    let report = result.recv_timeout(TIMEOUT).unwrap().unwrap();
    runner.join().unwrap();
    assert_no_threads_left("run", report);
}
