pub(crate) mod acceptor;
pub(crate) mod closer;
pub(crate) mod shutdown;
pub(crate) mod workers;
