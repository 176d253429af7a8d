pub(crate) mod engine;
pub(crate) mod handler;
pub(crate) mod peer;
pub(crate) mod poller;
pub(crate) mod service;
