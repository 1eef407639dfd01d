//! The error a timed-out call returns.

use std::fmt;
use std::time::Duration;

/// The call did not finish within its time limit and was cancelled.
///
/// Carries the limit that was in effect (the configured timeout, a per-request override, or
/// what was left of a propagated deadline), so logs say how long the caller was willing to
/// wait. A cheap value: no allocation, no backtrace. It converts into `tower::BoxError`; test
/// for it with `err.is::<Elapsed>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    limit: Duration,
}

impl Elapsed {
    /// A timeout after `limit`.
    pub const fn new(limit: Duration) -> Self {
        Self { limit }
    }

    /// The limit that was in effect for the call.
    pub const fn limit(&self) -> Duration {
        self.limit
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call timed out after {:?}", self.limit)
    }
}

impl std::error::Error for Elapsed {}
