//! A process's open descriptors and TCP sockets, read from `/proc` (Linux
//! only), to show that a server leaks none: an example's from
//! `/proc/PID/fd`, or, for a server running in the test's own process, its
//! sockets alone (those on its port), which other tests running at the
//! same time cannot change.

use std::collections::HashSet;
use std::fs;

/// Which process: the test's own, or another's by pid.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pid {
    /// `/proc/self`.
    Own,
    /// `/proc/PID`.
    Of(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Own => "/proc/self".to_string(),
            Pid::Of(pid) => format!("/proc/{pid}"),
        }
    }
}

/// The kind of each open descriptor of `pid`, sorted: what its link in
/// `/proc/PID/fd` points to, without the inode (`socket`, `pipe`,
/// `anon_inode:[eventpoll]`, `/dev/null`), so that two listings compare
/// equal when the same kinds of descriptors are open, whichever sockets
/// they are.
pub(crate) fn descriptor_kinds(pid: Pid) -> Vec<String> {
    let dir = format!("{}/fd", pid.dir());
    let mut kinds: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {dir}: {e}"))
        .filter_map(|entry| {
            // A descriptor closed while listing is simply gone.
            let target = fs::read_link(entry.ok()?.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            Some(match target.split_once(":[") {
                Some((kind @ ("socket" | "pipe"), _)) => kind.to_string(),
                _ => target,
            })
        })
        .collect();
    kinds.sort();
    kinds
}

/// A TCP socket a process holds open, from `/proc/PID/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpSocket {
    pub(crate) local_port: u16,
    pub(crate) remote_port: u16,
    /// The kernel's state number: 1 established, 8 close-wait, 10 listen...
    pub(crate) state: u8,
    /// Bytes written and not yet acknowledged by the peer: what waits in
    /// the send buffer when the peer does not read.
    pub(crate) send_queue: u64,
}

impl TcpSocket {
    pub(crate) fn is_listening(&self) -> bool {
        self.state == 0x0A
    }
}

/// The TCP sockets `pid` has a descriptor of.
pub(crate) fn tcp_sockets(pid: Pid) -> Vec<TcpSocket> {
    let dir = pid.dir();
    let inodes: HashSet<u64> = fs::read_dir(format!("{dir}/fd"))
        .unwrap_or_else(|e| panic!("list {dir}/fd: {e}"))
        .filter_map(|entry| {
            let target = fs::read_link(entry.ok()?.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut sockets = Vec::new();
    for table in ["tcp", "tcp6"] {
        // tcp6 is missing without IPv6.
        let Ok(text) = fs::read_to_string(format!("{dir}/net/{table}")) else {
            continue;
        };
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when
        // retrnsmt uid timeout inode ...
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(queues), Some(inode)) = (
                fields.get(1),
                fields.get(2),
                fields.get(3),
                fields.get(4),
                fields.get(9),
            ) else {
                continue;
            };
            let Ok(inode) = inode.parse::<u64>() else {
                continue;
            };
            if !inodes.contains(&inode) {
                continue;
            }
            let port = |addr: &str| {
                addr.rsplit_once(':')
                    .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
                    .unwrap_or(0)
            };
            sockets.push(TcpSocket {
                local_port: port(local),
                remote_port: port(remote),
                state: u8::from_str_radix(state, 16).unwrap_or(0),
                // tx_queue:rx_queue, in hexadecimal.
                send_queue: queues
                    .split_once(':')
                    .and_then(|(tx, _)| u64::from_str_radix(tx, 16).ok())
                    .unwrap_or(0),
            });
        }
    }
    sockets
}
