pub(crate) mod addr;
pub(crate) mod listener;
#[cfg(unix)]
pub(crate) mod notify;
pub(crate) mod options;
pub(crate) mod socket;
