//! Events a breaker publishes to its subscribers.

use std::sync::Arc;

use crate::state::State;

/// Something a breaker did; receive them with
/// [`CircuitBreaker::subscribe`](crate::CircuitBreaker::subscribe).
///
/// Transitions are always published. Rejections are published only once someone has
/// subscribed, so an open breaker under load does not pay for events nobody reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The breaker moved from one state to another.
    StateChanged {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state it left.
        from: State,
        /// The state it entered.
        to: State,
        /// Why.
        reason: TransitionReason,
    },
    /// The breaker refused a call.
    Rejected {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state that refused it (open, forced open, or half-open with every probe taken).
        state: State,
    },
}

/// Why a breaker changed state; carried in events and logs (serialized as
/// [`as_str`](Self::as_str)'s names with the `serde` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum TransitionReason {
    /// The failure rate over the window reached the threshold.
    FailureRate,
    /// The slow-call rate over the window reached the threshold.
    SlowCallRate,
    /// The configured number of failures in a row was reached.
    ConsecutiveFailures,
    /// The open duration passed.
    OpenDurationElapsed,
    /// Enough half-open probes succeeded.
    ProbesSucceeded,
    /// Too many half-open probes failed (or were slow).
    ProbesFailed,
    /// The half-open probes did not finish within `max_half_open_duration`.
    HalfOpenTimedOut,
    /// A manual command through the handle.
    Manual,
}

impl TransitionReason {
    /// A stable lower-case name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransitionReason::FailureRate => "failure_rate",
            TransitionReason::SlowCallRate => "slow_call_rate",
            TransitionReason::ConsecutiveFailures => "consecutive_failures",
            TransitionReason::OpenDurationElapsed => "open_duration_elapsed",
            TransitionReason::ProbesSucceeded => "probes_succeeded",
            TransitionReason::ProbesFailed => "probes_failed",
            TransitionReason::HalfOpenTimedOut => "half_open_timed_out",
            TransitionReason::Manual => "manual",
        }
    }
}
