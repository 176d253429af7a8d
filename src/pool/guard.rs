//! The guard every call of user code runs under (a handler, a turn, the
//! reject hook): its errors are logged and counted, its panics caught, so
//! that nothing it does stops the thread that called it.

use std::any::Any;
use std::fmt::Display;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::AtomicU64;

use crate::stats::Counters;

/// Runs user code for one connection (`what` names it in the log): an
/// `Err` is logged at `debug` and counted in `errors` when given, a panic
/// is caught, logged at `error` and counted in `panics`. Nothing it does
/// can stop the calling thread. Returns the value when there was one.
pub(crate) fn run_guarded<T>(
    what: &str,
    peer: &dyn Display,
    id: u64,
    counters: &Counters,
    errors: Option<&AtomicU64>,
    call: impl FnOnce() -> io::Result<T>,
) -> Option<T> {
    match panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => {
            log::trace!("{what} returned: peer={peer} id={id}");
            Some(value)
        }
        Ok(Err(error)) => {
            if let Some(errors) = errors {
                Counters::bump(errors);
            }
            log::debug!("{what} failed: peer={peer} id={id} error={error}");
            None
        }
        Err(payload) => {
            Counters::bump(&counters.panics);
            log::error!(
                "{what} panicked: peer={peer} id={id} panic={}",
                panic_message(&*payload)
            );
            None
        }
    }
}

/// The message of a panic, when it has one (as `panic!` with a string does).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "<not a string>"
    }
}
