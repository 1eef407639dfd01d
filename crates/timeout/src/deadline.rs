//! The deadline a request carries, and the per-request override of a time limit.

use std::time::Duration;

use staunch_core::instant_after;
use tokio::time::Instant;

/// The moment by which a request must be answered: an absolute point in time carried in the
/// request's extensions.
///
/// A [`DeadlineLayer`](crate::DeadlineLayer) sets it on incoming requests (from a header, from
/// `grpc-timeout`, or from a configured budget), the handler copies it onto the requests it
/// makes downstream, a [`Timeout`](crate::Timeout) never waits past it, and a
/// [`PropagateDeadlineLayer`](crate::PropagateDeadlineLayer) tells the next service how much
/// of it is left. Deadlines only ever get earlier: combining two keeps the earliest.
///
/// It is measured on the `tokio` clock, so tests with paused time control it.
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let deadline = Deadline::after(Duration::from_secs(2));
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(deadline);
/// assert_eq!(Deadline::of(&request), Some(deadline));
/// assert_eq!(deadline.remaining(), Duration::from_secs(2));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Self { at: instant }
    }

    /// A deadline `budget` from now. A budget too large to represent is capped at
    /// [`staunch_core::FAR_FUTURE`] (30 years), which no call waits for.
    pub fn after(budget: Duration) -> Self {
        Self::at(instant_after(Instant::now(), budget))
    }

    /// The deadline `request` carries in its extensions, if any.
    pub fn of<B>(request: &http::Request<B>) -> Option<Self> {
        request.extensions().get::<Self>().copied()
    }

    /// The point in time this deadline stands for.
    pub const fn instant(&self) -> Instant {
        self.at
    }

    /// The time left until the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.at <= Instant::now()
    }

    /// The earlier of this deadline and `other`.
    #[must_use]
    pub fn earliest(self, other: Option<Self>) -> Self {
        match other {
            Some(other) if other.at < self.at => other,
            _ => self,
        }
    }
}

/// A per-request replacement for the configured time limit of a [`Timeout`](crate::Timeout),
/// carried in the request's extensions.
///
/// It replaces the configured limit (it may be longer or shorter); a [`Deadline`] on the same
/// request still applies, and the earlier of the two wins.
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::TimeoutOverride;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(TimeoutOverride(Duration::from_millis(200)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeoutOverride(pub Duration);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn earliest_keeps_the_earlier_deadline() {
        let soon = Deadline::after(Duration::from_secs(1));
        let late = Deadline::after(Duration::from_secs(5));
        assert_eq!(soon.earliest(Some(late)), soon);
        assert_eq!(late.earliest(Some(soon)), soon);
        assert_eq!(late.earliest(None), late);
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_saturates_at_zero_after_expiry() {
        let deadline = Deadline::after(Duration::from_millis(100));
        assert!(!deadline.is_expired());
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(deadline.is_expired());
        assert_eq!(deadline.remaining(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_budget_does_not_overflow() {
        let deadline = Deadline::after(Duration::MAX);
        assert!(deadline.remaining() > Duration::from_hours(24 * 365));
    }
}
