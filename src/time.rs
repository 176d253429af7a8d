//! Instants from durations, where too far to hold is never: any
//! `Duration` is a valid limit, and one beyond what an `Instant` can
//! reach (`Duration::MAX`, documented as "no limit") means none.

use std::time::{Duration, Instant};

/// `wait` after `start`; `None` when that is beyond what an `Instant` can
/// hold, which is to say never.
pub(crate) fn after(start: Instant, wait: Duration) -> Option<Instant> {
    start.checked_add(wait)
}

/// `wait` from now; `None` for never (see [`after`]).
pub(crate) fn from_now(wait: Duration) -> Option<Instant> {
    after(Instant::now(), wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_far_is_never() {
        assert_eq!(from_now(Duration::MAX), None);
        let now = Instant::now();
        assert_eq!(after(now, Duration::ZERO), Some(now));
        assert!(from_now(Duration::from_secs(60 * 60 * 24 * 365)).is_some());
    }
}
