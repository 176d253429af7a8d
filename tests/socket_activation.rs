//! Socket activation and readiness notification, with the real tools a
//! user runs: `systemd-socket-activate` (Debian package `systemd`) holds the
//! port and passes the listening socket to the example it starts, as
//! systemd does; and a notification socket receives `READY=1` and
//! `STOPPING=1`, as systemd's does for a `Type=notify` service. What must
//! be refused is too: a connection passed for a listener (`Accept=yes`,
//! played by `systemd-socket-activate --accept`), and sockets whose
//! `LISTEN_PID` is not the process's.
//!
//! When `systemd-socket-activate` is not installed, the tests that need it
//! say so on stderr and pass without running (`.ci/run` installs it).

#![cfg(target_os = "linux")]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::thread;

use support::{activator, example_path, socket_activated, Client, ListenPid, Process, PATIENCE};

/// Starts `systemd-socket-activate` listening on a free loopback port for
/// `example`. A free port is found by binding port 0 and closing it; in
/// the moment between, another program may take it, and then the
/// activator fails to listen: try again with another (at most 5 times).
fn activate(tool: &PathBuf, example: &str) -> (Process, SocketAddr) {
    activate_with(tool, &[], example)
}

/// [`activate`], with `options` for the activator before the example.
fn activate_with(tool: &PathBuf, options: &[&str], example: &str) -> (Process, SocketAddr) {
    for _ in 0..5 {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let mut command = Command::new(tool);
        command
            .arg("--listen")
            .arg(addr.to_string())
            .args(options)
            .arg(example_path(example));
        let process = Process::spawn(command);
        if process.stderr_line_with("Listening on").is_some() {
            return (process, addr);
        }
    }
    panic!("systemd-socket-activate could not listen on a free port in 5 tries");
}

#[test]
fn an_example_serves_the_socket_systemd_socket_activate_passes() {
    let Some(tool) = activator() else {
        eprintln!(
            "SKIPPED an_example_serves_the_socket_systemd_socket_activate_passes: \
             systemd-socket-activate is not installed (Debian package `systemd`)"
        );
        return;
    };
    for example in ["commands", "chat"] {
        let (process, addr) = activate(&tool, example);
        // The activator holds the port; the first connection makes it
        // start the example with the socket (LISTEN_FDS=1), which then
        // serves this very connection from the backlog.
        let mut client = Client::connect(addr);
        if example == "commands" {
            client.send("ping\n");
            client.expect("pong");
        } else {
            let greeting = client.line();
            assert!(greeting.starts_with("* you are "), "{greeting}");
        }
        // It serves the passed socket, not its default 127.0.0.1:7878.
        let listening = process
            .stdout
            .recv_timeout(PATIENCE)
            .expect("the example's `listening on` line");
        assert_eq!(listening, format!("listening on {addr}"));
        // A second client, on the same socket.
        let mut second = Client::connect(addr);
        if example == "commands" {
            second.send("quit\n");
            second.expect("bye");
        }
        drop((client, second));
        process.terminate();
    }
}

/// `systemd-socket-activate -l A -l B` passes both sockets (LISTEN_FDS=2,
/// with `--fdname` naming them): the example serves both, one server, and
/// prints a `listening on` line for each, in the order passed.
#[test]
fn an_example_serves_every_socket_passed() {
    let Some(tool) = activator() else {
        eprintln!(
            "SKIPPED an_example_serves_every_socket_passed: \
             systemd-socket-activate is not installed (Debian package `systemd`)"
        );
        return;
    };
    for example in ["commands", "chat"] {
        let mut started = None;
        // Free ports, as `activate_with` finds one (at most 5 tries).
        for _ in 0..5 {
            let free = || {
                TcpListener::bind("127.0.0.1:0")
                    .and_then(|listener| listener.local_addr())
                    .expect("a free port")
            };
            let addrs = [free(), free()];
            let mut command = Command::new(&tool);
            for addr in addrs {
                command.arg("--listen").arg(addr.to_string());
            }
            command
                .arg("--fdname=front:back")
                // The library logs each listener with its name at `info`
                // (the activator passes on only the variables named).
                .arg("--setenv=RUST_LOG=info")
                .arg(example_path(example));
            let process = Process::spawn(command);
            if process.stderr_line_with("Listening on").is_some()
                && process.stderr_line_with("Listening on").is_some()
            {
                started = Some((process, addrs));
                break;
            }
        }
        let (process, addrs) = started.expect("systemd-socket-activate listening on two ports");
        // The first connection, on the second socket, starts the example.
        let mut clients = [Client::connect(addrs[1]), Client::connect(addrs[0])];
        for client in &mut clients {
            if example == "commands" {
                client.send("ping\n");
                client.expect("pong");
            } else {
                let greeting = client.line();
                assert!(greeting.starts_with("* you are "), "{greeting}");
            }
        }
        for addr in addrs {
            let listening = process
                .stdout
                .recv_timeout(PATIENCE)
                .expect("a `listening on` line per passed socket");
            assert_eq!(listening, format!("listening on {addr}"));
        }
        // Named after LISTEN_FDNAMES.
        let named = process.stderr_line_with("listener=back");
        assert!(named.is_some_and(|line| line.contains(&addrs[1].to_string())));
        drop(clients);
        process.terminate();
    }
}

/// A socket that receives what a service is told to notify (`$NOTIFY_SOCKET`),
/// as systemd's does; in a directory of its own, removed when dropped.
struct NotifySocket {
    dir: PathBuf,
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn new(tag: &str) -> NotifySocket {
        let dir =
            std::env::temp_dir().join(format!("frontdesk-notify-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the socket");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
        socket
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        NotifySocket { dir, path, socket }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// A socket unit with `Accept=yes` passes each connection, not the
// listening socket: the server must refuse it before it tells systemd it
// is ready, not fail to accept after (issue #16).
#[test]
fn a_connection_passed_for_a_listener_is_refused_before_ready() {
    let Some(tool) = activator() else {
        eprintln!(
            "SKIPPED a_connection_passed_for_a_listener_is_refused_before_ready: \
             systemd-socket-activate is not installed (Debian package `systemd`)"
        );
        return;
    };
    let notify = NotifySocket::new("accept");
    let setenv = format!("NOTIFY_SOCKET={}", notify.path.display());
    // `--accept`: the activator accepts, and starts the example for each
    // connection with it as descriptor 3 (LISTEN_FDS=1, LISTEN_PID its
    // pid), as systemd does for `Accept=yes`.
    let (process, addr) = activate_with(&tool, &["--accept", "--setenv", &setenv], "commands");
    let mut client = Client::connect(addr);
    // The example's one line, `commands: <error>`, then it exits.
    let error = process
        .stderr_line_with("commands: ")
        .expect("the example's error");
    assert!(
        error.contains("the socket passed by the service manager (descriptor 3) is not listening"),
        "{error}"
    );
    // Nothing was notified: READY=1 would have been sent before any
    // error the server met while serving, so it would be there by now.
    notify.socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    match notify.socket.recv(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(n) => panic!(
            "the service manager was told {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("reading the notification socket: {e}"),
    }
    // The connection went with the example.
    client.expect_closed();
}

/// Starts the `commands` example (asked to bind `127.0.0.1:0` when it has
/// no socket passed) with `listener` as descriptor 3 and `LISTEN_FDS=1`,
/// and returns it with the address it says it listens on.
fn start_with_passed_socket(listener: &TcpListener, pid: ListenPid) -> (Process, SocketAddr) {
    let command = socket_activated(listener, pid, &example_path("commands"), &["127.0.0.1:0"]);
    let process = Process::spawn(command);
    let listening = process.stdout_line();
    let addr = listening
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("{listening:?}"));
    (process, addr)
}

// LISTEN_FDS is for the process LISTEN_PID names, as sd_listen_fds(3)
// has it: a process the variables were not meant for (no LISTEN_PID, an
// empty one, another process's) was not activated, and binds its own
// address (issue #16).
#[test]
fn the_passed_socket_is_taken_only_when_listen_pid_names_this_process() {
    let passed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let passed_addr = passed.local_addr().unwrap();
    for pid in [ListenPid::Missing, ListenPid::Empty, ListenPid::Other] {
        let (process, addr) = start_with_passed_socket(&passed, pid);
        assert_ne!(addr, passed_addr, "LISTEN_PID {pid:?}: took the socket");
        let mut client = Client::connect(addr);
        client.send("ping\n");
        client.expect("pong");
        drop(client);
        process.terminate();
    }
    let (process, addr) = start_with_passed_socket(&passed, ListenPid::Own);
    assert_eq!(addr, passed_addr, "LISTEN_PID naming the process");
    let mut client = Client::connect(addr);
    client.send("ping\n");
    client.expect("pong");
    drop(client);
    process.terminate();
}

#[test]
fn readiness_and_stopping_are_notified() {
    let notify = NotifySocket::new("ready");
    let (path, notifications) = (&notify.path, notify.socket.try_clone().unwrap());

    let mut command = Command::new(example_path("commands"));
    command.arg("127.0.0.1:0").env("NOTIFY_SOCKET", path);
    let process = Process::spawn(command);
    let mut buf = [0u8; 64];
    let n = notifications
        .recv(&mut buf)
        .expect("READY=1 within PATIENCE");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving: a client is answered.
    let listening = process
        .stdout
        .recv_timeout(PATIENCE)
        .expect("listening line");
    let addr: SocketAddr = listening
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("{listening:?}"));
    let mut client = Client::connect(addr);
    client.send("ping\n");
    client.expect("pong");
    drop(client);

    let pid = process.child.id();
    let stopping = thread::spawn(move || {
        let mut buf = [0u8; 64];
        let n = notifications
            .recv(&mut buf)
            .expect("STOPPING=1 within PATIENCE");
        buf[..n].to_vec()
    });
    process.terminate();
    assert_eq!(
        stopping.join().expect("the notification reader"),
        b"STOPPING=1",
        "pid {pid}"
    );
}
