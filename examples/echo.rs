//! An echo server: every byte a client sends comes back unchanged.
//!
//! ```text
//! cargo run --example echo
//! nc 127.0.0.1 7878
//! ```

use std::io::{self, Read, Write};
use std::time::Duration;

use frontdesk::{Connection, Server};

fn echo(conn: &mut Connection) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        conn.write_all(&buf[..n])?;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let server = Server::builder()
        .workers(8)
        .idle_timeout(Duration::from_secs(60))
        .bind("127.0.0.1:7878")?;
    println!("listening on {}", server.local_addr());
    server.run(echo)?;
    Ok(())
}
