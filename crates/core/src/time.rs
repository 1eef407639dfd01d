//! Saturating time arithmetic: adding a configured or received duration to an instant.
//!
//! Every duration a staunch builder accepts is usable, `Duration::MAX` included, and so is
//! every duration a server sends (`Retry-After: 18446744073709551615`). `Instant + Duration`
//! panics when the sum is not representable, so no staunch crate writes it: they call
//! [`instant_after`], which caps the wait at [`FAR_FUTURE`] (about 30 years, the same horizon
//! tokio uses for a sleep that never ends). A wait that long is indistinguishable from
//! "never" for a running process, and the instant stays far enough from the clock's end that
//! later arithmetic on it (a timer wheel's rounding, a deadline's `remaining()`) is safe too.

use std::time::{Duration, SystemTime};

/// The longest wait [`instant_after`] schedules: 30 years.
pub const FAR_FUTURE: Duration = Duration::from_hours(24 * 365 * 30);

/// A point on a clock that a duration can be added to without panicking.
///
/// Implemented for [`std::time::Instant`], [`tokio::time::Instant`] and [`SystemTime`].
pub trait Moment: Copy {
    /// `self + duration`, or `None` when the sum is not representable.
    fn checked_add_duration(self, duration: Duration) -> Option<Self>;
}

// The type is disallowed on paths tests must control; implementing the trait for it is not one.
#[allow(clippy::disallowed_types)]
impl Moment for std::time::Instant {
    fn checked_add_duration(self, duration: Duration) -> Option<Self> {
        self.checked_add(duration)
    }
}

impl Moment for tokio::time::Instant {
    fn checked_add_duration(self, duration: Duration) -> Option<Self> {
        self.checked_add(duration)
    }
}

impl Moment for SystemTime {
    fn checked_add_duration(self, duration: Duration) -> Option<Self> {
        self.checked_add(duration)
    }
}

/// `start + wait`, saturating: a wait longer than [`FAR_FUTURE`] is cut to it, and when even
/// that is not representable the latest representable of the two is returned (`start` at
/// worst). Never panics.
///
/// Use it wherever a configured or received duration meets an instant (deadlines, timers,
/// open-state expiries), instead of `start + wait`.
///
/// ```
/// use std::time::Duration;
/// use staunch_core::{FAR_FUTURE, instant_after};
/// use tokio::time::Instant;
///
/// let now = Instant::now();
/// assert_eq!(instant_after(now, Duration::from_secs(2)), now + Duration::from_secs(2));
/// // `now + Duration::MAX` would panic.
/// assert_eq!(instant_after(now, Duration::MAX), now + FAR_FUTURE);
/// ```
pub fn instant_after<M: Moment>(start: M, wait: Duration) -> M {
    start
        .checked_add_duration(wait.min(FAR_FUTURE))
        .or_else(|| start.checked_add_duration(FAR_FUTURE))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_waits_are_exact_and_long_ones_saturate() {
        let now = tokio::time::Instant::now();
        assert_eq!(instant_after(now, Duration::ZERO), now);
        assert_eq!(
            instant_after(now, Duration::from_millis(5)),
            now + Duration::from_millis(5)
        );
        assert_eq!(instant_after(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(instant_after(now, FAR_FUTURE * 2), now + FAR_FUTURE);
        let wall = SystemTime::UNIX_EPOCH;
        assert_eq!(instant_after(wall, Duration::MAX), wall + FAR_FUTURE);
    }
}
