//! A finding of the review of the edge-triggered turn engine that needs
//! TLS (see `turn_review.rs` for the others): a turn handler that parks
//! after the end of stream, rather than closing, is not called again for
//! that end, over TLS as over plain TCP. A client's `close_notify` stays
//! in the session (`peer_has_closed`), and the engine counted it as input
//! waiting for ever.
//!
//! Conventions as in `tls.rs`: servers bind `127.0.0.1:0`, the handler
//! reports on a channel, nothing sleeps to wait for the server; the one
//! deliberate wait is [`QUIET`], to show that a turn does *not* come.
#![cfg(feature = "tls")]

mod tls_util;
mod util;

use std::io::{self, Read};
use std::time::Duration;

use crossbeam_channel::Sender;
use frontdesk::{Next, Server, Turn, TurnHandler};

use tls_util::{connect, init_logging, send_then_close_notify, Certs, PATIENCE};
use util::{assert_accounted, tcp_addr, LOCALHOST, QUIET};

/// Reads what comes; at the end of stream it parks rather than closing
/// (it may still have something to say, from a `Peer`), and tells the
/// test of every turn that reads the end.
struct ParkAfterTheEnd {
    ends: Sender<()>,
}

impl TurnHandler for ParkAfterTheEnd {
    type State = ();

    fn open(&self, _: &mut Turn<'_>) -> io::Result<()> {
        Ok(())
    }

    fn ready(&self, _: &mut (), turn: &mut Turn<'_>) -> io::Result<Next> {
        let mut buf = [0u8; 512];
        loop {
            match turn.read(&mut buf) {
                Ok(0) => {
                    let _ = self.ends.send(());
                    return Ok(Next::Park);
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(Next::Park),
                Err(error) => return Err(error),
            }
        }
    }
}

#[test]
fn a_handler_that_parks_after_a_close_notify_is_not_called_again_for_it() {
    init_logging();
    let certs = Certs::new("review-park-after-end");
    let (ends, ends_rx) = crossbeam_channel::unbounded();
    let handle = Server::builder()
        .workers(1)
        .drain_quiet_time(Duration::from_millis(50))
        // Reaching it is a failure below (`forced`); short, so that a
        // spinning connection does not hold the test long.
        .shutdown_timeout(Duration::from_secs(3))
        .tls(certs.tls_config())
        .bind(LOCALHOST)
        .expect("bind")
        .spawn_turns(ParkAfterTheEnd { ends })
        .expect("spawn_turns");
    let mut client = connect(tcp_addr(handle.local_addr()), &certs.client_config());
    // The TCP stream stays open: the end is TLS's only.
    send_then_close_notify(&mut client, b"hello\n");
    ends_rx
        .recv_timeout(PATIENCE)
        .expect("a turn reads the end");
    let again = ends_rx.recv_timeout(QUIET);
    let report = handle.shutdown().expect("the server stops");
    let mut rest = Vec::new();
    let _ = client.sock.read_to_end(&mut rest);
    assert!(
        again.is_err(),
        "a turn read the end again, {} more after it",
        ends_rx.len()
    );
    assert_eq!(report.forced, 0, "{report:#?}");
    assert_accounted(&report.stats);
}
