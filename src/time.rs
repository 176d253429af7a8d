//! Instants from durations, where too far to hold is never: any
//! `Duration` is a valid limit, and one beyond what an `Instant` can
//! reach (`Duration::MAX`, documented as "no limit") means none.
//!
//! And [`Moment`], a point in time in 8 bytes, for what is kept per
//! connection (the turn mode's timers), under the same rule.

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `wait` after `start`; `None` when that is beyond what an `Instant` can
/// hold, which is to say never.
pub(crate) fn after(start: Instant, wait: Duration) -> Option<Instant> {
    start.checked_add(wait)
}

/// A point in time in 8 bytes, where an `Instant` takes 16; an
/// `Option<Moment>` takes 8 too. Every idle connection of the turn mode
/// keeps six of them (issue #14: its bytes are counted).
///
/// It counts nanoseconds from an origin, the `Instant` at which this
/// process first asked for one, offset by 2^63 so that the points before
/// the origin have one too: it holds every point within 292 years on
/// either side, exactly (an `Instant` counts nanoseconds at best), and
/// orders them as their `Instant`s. Beyond that, the rule of this module:
/// a point further in the future is never (`None`), and one further in
/// the past is the earliest moment, which is as past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Moment(NonZeroU64);

/// The count of the origin itself.
const ORIGIN: u64 = 1 << 63;

impl Moment {
    /// The earliest moment, about 292 years before the origin.
    const EARLIEST: Moment = Moment(NonZeroU64::MIN);
    /// The latest moment, about 292 years after the origin.
    const LATEST: Moment = Moment(NonZeroU64::MAX);

    /// The `Instant` all moments count from.
    fn origin() -> Instant {
        static ORIGIN_INSTANT: OnceLock<Instant> = OnceLock::new();
        *ORIGIN_INSTANT.get_or_init(Instant::now)
    }

    /// The moment of `at`; `None` when it is too far in the future to be
    /// held, which is to say never.
    pub(crate) fn of(at: Instant) -> Option<Moment> {
        let origin = Moment::origin();
        let count = match at.checked_duration_since(origin) {
            Some(later) => ORIGIN.checked_add(nanos(later)?)?,
            // Before the origin: at the earliest, long past either way.
            None => ORIGIN.saturating_sub(nanos(origin.duration_since(at)).unwrap_or(u64::MAX)),
        };
        Some(NonZeroU64::new(count).map_or(Moment::EARLIEST, Moment))
    }

    /// The moment it is now.
    pub(crate) fn now() -> Moment {
        // Only a process that ran for 292 years finds `None`.
        Moment::of(Instant::now()).unwrap_or(Moment::LATEST)
    }

    /// `wait` from now; `None` for never (see [`after`]).
    pub(crate) fn from_now(wait: Duration) -> Option<Moment> {
        Moment::now().after(wait)
    }

    /// `wait` after this moment; `None` when that is beyond the latest
    /// moment, which is to say never, as [`after`].
    pub(crate) fn after(self, wait: Duration) -> Option<Moment> {
        let count = self.0.get().checked_add(nanos(wait)?)?;
        NonZeroU64::new(count).map(Moment)
    }

    /// How long after `earlier` this moment is; zero when it is not after
    /// it (as `Instant::saturating_duration_since`).
    pub(crate) fn saturating_duration_since(self, earlier: Moment) -> Duration {
        Duration::from_nanos(self.0.get().saturating_sub(earlier.0.get()))
    }

    /// The `Instant` of this moment: the one it was made of, if it was made
    /// of one.
    pub(crate) fn instant(self) -> Instant {
        let origin = Moment::origin();
        let count = self.0.get();
        let at = match count.checked_sub(ORIGIN) {
            Some(later) => origin.checked_add(Duration::from_nanos(later)),
            None => origin.checked_sub(Duration::from_nanos(ORIGIN - count)),
        };
        // Every moment made of an `Instant` gives one back. Only a moment
        // no `Instant` gave, on a system whose clock cannot go that far
        // (Windows counts from the boot), does not: past or never alike,
        // the origin is as past, and the latest moment is never reached.
        at.unwrap_or(origin)
    }
}

/// `wait` in nanoseconds; `None` when a `u64` cannot hold it (584 years).
fn nanos(wait: Duration) -> Option<u64> {
    u64::try_from(wait.as_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_far_is_never() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), None);
        assert_eq!(after(now, Duration::ZERO), Some(now));
        assert!(after(now, Duration::from_secs(60 * 60 * 24 * 365)).is_some());
    }

    #[test]
    fn a_moment_is_eight_bytes_even_as_an_option() {
        assert_eq!(std::mem::size_of::<Option<Moment>>(), 8);
    }

    #[test]
    fn moments_give_back_their_instants_and_keep_their_order() {
        let origin = Moment::origin();
        let now = Instant::now();
        let year = Duration::from_secs(60 * 60 * 24 * 365);
        let mut instants = vec![origin, now, now + Duration::from_nanos(1), now + 100 * year];
        // Before the origin, as far as this system's clock goes back.
        instants.extend(origin.checked_sub(Duration::from_nanos(1)));
        instants.extend(origin.checked_sub(Duration::from_secs(3600)));
        instants.dedup();
        instants.sort();
        let moments: Vec<Moment> = instants.iter().map(|&at| Moment::of(at).unwrap()).collect();
        for (moment, at) in moments.iter().zip(&instants) {
            assert_eq!(moment.instant(), *at);
        }
        assert!(moments.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(Moment::of(now).unwrap() <= Moment::now());
    }

    #[test]
    fn too_far_ahead_is_never_too_far_back_is_the_earliest() {
        let now = Moment::now();
        assert_eq!(now.after(Duration::ZERO), Some(now));
        assert_eq!(now.after(Duration::MAX), None);
        assert_eq!(Moment::from_now(Duration::MAX), None);
        assert_eq!(Moment::LATEST.after(Duration::from_nanos(1)), None);
        let year = Duration::from_secs(60 * 60 * 24 * 365);
        assert!(Moment::from_now(200 * year).is_some());
        assert_eq!(Moment::from_now(300 * year), None);
        // An `Instant` that far ahead, where the system holds one.
        if let Some(far) = Instant::now().checked_add(300 * year) {
            assert_eq!(Moment::of(far), None);
        }
        if let Some(long_ago) = Instant::now().checked_sub(300 * year) {
            assert_eq!(Moment::of(long_ago), Some(Moment::EARLIEST));
        }
    }

    #[test]
    fn durations_between_moments_saturate_at_zero() {
        let now = Moment::now();
        let later = now.after(Duration::from_millis(5)).unwrap();
        assert_eq!(
            later.saturating_duration_since(now),
            Duration::from_millis(5)
        );
        assert_eq!(now.saturating_duration_since(later), Duration::ZERO);
        assert_eq!(
            Moment::LATEST.saturating_duration_since(Moment::EARLIEST),
            Duration::from_nanos(u64::MAX - 1)
        );
    }
}
