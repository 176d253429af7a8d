//! Socket activation and readiness notification, with the real tools a
//! user runs: `systemd-socket-activate` (Debian package `systemd`) holds the
//! port and passes the listening socket to the example it starts, as
//! systemd does; and a notification socket receives `READY=1` and
//! `STOPPING=1`, as systemd's does for a `Type=notify` service.
//!
//! When `systemd-socket-activate` is not installed, the test that needs it
//! says so on stderr and passes without running (`.ci/run` installs it).

#![cfg(target_os = "linux")]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::thread;

use support::{activator, example_path, Client, Process, PATIENCE};

/// Starts `systemd-socket-activate` listening on a free loopback port for
/// `example`. A free port is found by binding port 0 and closing it; in
/// the moment between, another program may take it, and then the
/// activator fails to listen: try again with another (at most 5 times).
fn activate(tool: &PathBuf, example: &str) -> (Process, SocketAddr) {
    for _ in 0..5 {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let mut command = Command::new(tool);
        command
            .arg("--listen")
            .arg(addr.to_string())
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

#[test]
fn readiness_and_stopping_are_notified() {
    let dir = std::env::temp_dir().join(format!("frontdesk-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the socket");
    let path = dir.join("notify");
    let _ = std::fs::remove_file(&path);
    let notifications = UnixDatagram::bind(&path).expect("bind the notification socket");
    notifications
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");

    let mut command = Command::new(example_path("commands"));
    command.arg("127.0.0.1:0").env("NOTIFY_SOCKET", &path);
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
    let _ = std::fs::remove_dir_all(&dir);
}
