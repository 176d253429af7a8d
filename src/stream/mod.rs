pub(crate) mod lines;
pub(crate) mod proxy;
#[cfg(feature = "tls")]
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod wait;
