//! Events and the metrics snapshot.

use std::fmt;
use std::time::Duration;

/// A retry about to wait, passed to [`on_retry`](crate::RetryPolicyBuilder::on_retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retrying {
    /// The attempt that just failed (1 for the first).
    pub attempt: u32,
    /// The wait before the next attempt.
    pub delay: Duration,
    /// Whether the wait came from a server hint (`Retry-After`, gRPC pushback).
    pub server_hint: bool,
}

/// A retryable failure returned without another attempt, passed to
/// [`on_give_up`](crate::RetryPolicyBuilder::on_give_up), carried by
/// [`RetryExhausted`](crate::RetryExhausted), and inserted into the extensions of a retryable
/// response returned after giving up (`res.extensions().get::<GiveUp>()`; see
/// [`RetryClassify::annotate`](crate::RetryClassify::annotate)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GiveUp {
    /// Attempts made.
    pub attempts: u32,
    /// Why no further attempt is made.
    pub reason: GiveUpReason,
}

/// Why a retryable failure was not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// `max_attempts` were made.
    MaxAttempts,
    /// The retry budget is exhausted: the dependency is failing for many requests, and
    /// retrying would add load to it.
    BudgetExhausted,
    /// The overall deadline (`max_total_time`) or the caller's
    /// [`Deadline`](crate::Deadline) has passed or would pass during the wait.
    Deadline,
    /// The backoff's `max_elapsed` ended the schedule.
    BackoffEnded,
    /// The server asked not to retry (negative `grpc-retry-pushback-ms`).
    ServerPushback,
    /// The request could not be copied (a body over the replay cap, a streaming body) or is
    /// not idempotent.
    NotReplayable,
    /// The failure was a circuit-breaker or bulkhead rejection, which means "back off".
    Rejected,
    /// An inner retry layer already gave up on the call ([`RetryExhausted`]): retrying its
    /// verdict would multiply the attempts of the two layers, the storm retries must not make.
    ///
    /// [`RetryExhausted`]: crate::RetryExhausted
    InnerGaveUp,
}

impl GiveUpReason {
    /// A short stable name, used as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::MaxAttempts => "max_attempts",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
            GiveUpReason::Deadline => "deadline",
            GiveUpReason::BackoffEnded => "backoff_ended",
            GiveUpReason::ServerPushback => "server_pushback",
            GiveUpReason::NotReplayable => "not_replayable",
            GiveUpReason::Rejected => "rejected",
            GiveUpReason::InnerGaveUp => "inner_gave_up",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of a retry policy's counters, from [`RetryPolicy::metrics`](crate::RetryPolicy::metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RetryMetrics {
    /// Requests recorded in the budget (every policy sharing it).
    pub requests: u64,
    /// Retries made.
    pub retries: u64,
    /// Hedged attempts sent.
    pub hedges: u64,
    /// Retryable failures returned without another attempt.
    pub gave_up: u64,
    /// Retries (and hedges) refused by the budget.
    pub budget_exhausted: u64,
    /// Retries the budget would allow now (`None`: unlimited).
    pub budget_left: Option<u64>,
}

impl RetryMetrics {
    /// Attempts made: requests plus retries plus hedges.
    pub const fn attempts(&self) -> u64 {
        self.requests + self.retries + self.hedges
    }
}
