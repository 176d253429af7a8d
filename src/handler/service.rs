//! The worker's side of the `Handler` mode: a worker serves a connection
//! from accept to close.

use std::convert::Infallible;
use std::sync::Arc;

use crate::handler::connection::Connection;
use crate::handler::Handler;
use crate::pool::guard::run_guarded;
use crate::pool::queue::Parking;
use crate::pool::workers::{Admitted, Service, Waited, Worker};
use crate::stats::Counters;

/// Serves whole connections with a [`Handler`].
pub(crate) struct WholeConnections {
    pub(crate) handler: Arc<dyn Handler>,
    /// Where idle workers sleep; the queue's sends wake them.
    pub(crate) parking: Arc<Parking>,
}

impl Service for WholeConnections {
    /// The mode queues nothing of its own: a connection is one job.
    type Job = Infallible;

    fn accepted(&self, mut conn: Admitted, worker: &Worker<Self>) {
        let shared = &worker.shared;
        let counters = &shared.counters;
        let (peer, id) = (conn.peer.clone(), conn.id);
        // Held until the connection is closed, below (or until this
        // worker unwinds, should the closing code panic).
        let ip_slot = conn.ip_slot.take();
        let stream = Arc::clone(conn.transport.socket());
        worker.serving(&stream);
        log::debug!("serving connection: peer={peer} id={id}");
        let mut conn = Connection::new(conn, Arc::clone(shared), worker.limits());
        run_guarded(
            "handler",
            &peer,
            id,
            counters,
            Some(&counters.handler_errors),
            || self.handler.handle(&mut conn),
        );
        log::debug!("connection closed: peer={peer} id={id}");
        let socket = conn.finish();
        let client = conn.client_end();
        drop(conn);
        worker.serving_done();
        drop(stream);
        // Counted out before the close, whose end of stream tells the
        // client the connection is over: a client that saw it may connect
        // again at once and must find this worker free in the acceptor's
        // count (`queue(0)`, `max_connections`) and its address's place
        // given back. The address's place goes first, so that whoever
        // sees the connection completed may connect again from there.
        drop(ip_slot);
        Counters::bump(&counters.completed);
        shared.connection_ended();
        worker.closer.close(socket, client);
    }

    /// Sleeps in `parking` until a send wakes it (see `pool/queue.rs`).
    fn wait(&self, worker: &Worker<Self>) -> Waited<Infallible> {
        if let Some(waited) = worker.begin_wait() {
            return waited;
        }
        self.parking.sleep();
        worker.idle().end_wait();
        Waited::Woken
    }

    fn run(&self, job: Infallible, _: &Worker<Self>) {
        match job {}
    }

    fn drop_job(&self, job: Infallible, _: bool) {
        match job {}
    }
}
