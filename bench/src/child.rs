//! Starting a server in a child process and making sure it dies with us.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::Duration;

use crate::servers::{FdOptions, Kind, Protocol};

/// How long a child may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The CPUs servers are pinned to (`BENCH_SERVER_CPUS`), when pinning.
static SERVER_CPUS: OnceLock<String> = OnceLock::new();

/// Pins every server started from now on to `cpus` (such as `"1"`).
pub fn pin_servers(cpus: String) {
    let _ = SERVER_CPUS.set(cpus);
}

/// A server running in a child process; killed and reaped on drop (also
/// when the driver unwinds from an error or a panic). The child also asks
/// the kernel to kill it if the driver dies (`PR_SET_PDEATHSIG`).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `bench serve KIND PROTOCOL ...` and waits for its
    /// `listening on ADDR` line.
    ///
    /// Must be called from the main thread: the death signal is tied to
    /// the thread that forked the child.
    pub fn start(
        kind: Kind,
        protocol: Protocol,
        fd: FdOptions,
    ) -> Result<ServerProcess, Box<dyn Error>> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("serve")
            .arg(kind.name())
            .arg(protocol.name())
            .args(fd.to_args())
            .env("BENCH_PARENT_PID", std::process::id().to_string())
            .env(
                "BENCH_SERVER_CPUS",
                SERVER_CPUS.get().map_or("", String::as_str),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // From here on, `process` kills the child on every way out.
        let mut process = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (tx, rx) = mpsc::channel();
        // Reads one line; ends when the child prints it or dies.
        thread::spawn(move || {
            let mut line = String::new();
            let result = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(result);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line?,
            Err(_) => return Err(format!("{} server did not start", kind.name()).into()),
        };
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line from server: {line:?}"))?;
        process.addr = addr.parse()?;
        Ok(process)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
