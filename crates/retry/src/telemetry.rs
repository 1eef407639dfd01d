//! Per-call observability of a retried call: the opt-in `staunch.retry` span and, with the
//! `metrics` feature, the `staunch.calls` / `staunch.call.duration` pair.
//!
//! Both are decided when the call starts. With spans off and without the `metrics` feature a
//! call carries an empty value and pays one branch when it finishes.

use std::time::Duration;

use tracing::Span;

use crate::BoxError;
use crate::config::{Limits, Shared};
use staunch_timeout::Elapsed;

/// The span's fields, declared up front (names in `staunch_core::telemetry::span`).
pub(crate) fn span(name: &str) -> Span {
    tracing::info_span!(
        target: "staunch_retry",
        "staunch.retry",
        staunch.dependency = name,
        http.request.resend_count = 0_u32,
        staunch.retry.backoff_ms = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// What a call reports when it ends.
#[derive(Default)]
pub(crate) struct CallTelemetry {
    span: Option<Span>,
    #[cfg(feature = "metrics")]
    meter: Option<(std::sync::Arc<CallMeter>, tokio::time::Instant)>,
}

/// How a call ended, for `staunch.outcome`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallOutcome {
    Success,
    Failure,
    Rejected,
}

impl CallTelemetry {
    /// Starts a call's telemetry: a span when the policy has spans on, a clock when it has
    /// call metrics on (and the `metrics` feature is compiled in).
    #[inline]
    pub(crate) fn start(shared: &Shared, limits: &Limits) -> Self {
        Self {
            span: limits.spans.then(|| span(&shared.name)),
            #[cfg(feature = "metrics")]
            meter: limits.call_metrics.then(|| {
                (
                    std::sync::Arc::clone(&shared.meter),
                    tokio::time::Instant::now(),
                )
            }),
        }
    }

    /// The call's span, to enter while its attempts are polled.
    #[inline]
    pub(crate) fn span(&self) -> Option<&Span> {
        self.span.as_ref()
    }

    /// Whether finishing the call does anything (so its outcome is worth working out).
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        #[cfg(feature = "metrics")]
        if self.meter.is_some() {
            return true;
        }
        self.span.is_some()
    }

    /// A retry is due after `backoff`: `made` attempts were sent so far.
    #[cold]
    pub(crate) fn retrying(&self, made: u32, backoff: Duration) {
        if let Some(span) = &self.span {
            span.record("http.request.resend_count", made);
            span.record(
                "staunch.retry.backoff_ms",
                u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            );
        }
    }

    /// The call ended after `made` attempts.
    pub(crate) fn finish(&mut self, made: u32, outcome: CallOutcome, error: Option<&BoxError>) {
        if let Some(span) = self.span.take() {
            span.record("http.request.resend_count", made.saturating_sub(1));
            match (outcome, error) {
                (CallOutcome::Success, _) => {}
                (_, Some(e)) => {
                    span.record("error.type", error_type(e));
                }
                (_, None) => {
                    span.record("error.type", "_OTHER");
                }
            }
        }
        #[cfg(feature = "metrics")]
        if let Some((meter, started)) = self.meter.take() {
            meter.record(outcome, started.elapsed());
        }
    }
}

/// `error.type` for a retried call's error: a timeout, a rejection, or `_OTHER`.
fn error_type(e: &BoxError) -> &'static str {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
    while let Some(err) = current {
        if err.is::<Elapsed>() {
            return "timeout";
        }
        if let Some(exhausted) = err.downcast_ref::<crate::RetryExhausted>() {
            current = std::error::Error::source(exhausted);
            continue;
        }
        break;
    }
    staunch_core::telemetry::error_type(&**e)
}

/// The policy's `staunch.calls` and `staunch.call.duration` handles, one per outcome,
/// registered when the policy is built.
#[cfg(feature = "metrics")]
pub(crate) struct CallMeter {
    calls: [metrics::Counter; 3],
    duration: [metrics::Histogram; 3],
}

#[cfg(feature = "metrics")]
impl CallMeter {
    pub(crate) fn new(name: &std::sync::Arc<str>) -> Self {
        use staunch_core::telemetry::{label, metric};
        let dependency = metrics::SharedString::from_shared(std::sync::Arc::clone(name));
        let outcomes = ["success", "failure", "rejected"];
        Self {
            calls: outcomes.map(|outcome| {
                metrics::counter!(
                    metric::CALLS,
                    label::LAYER => "retry",
                    label::DEPENDENCY => dependency.clone(),
                    label::OUTCOME => outcome
                )
            }),
            duration: outcomes.map(|outcome| {
                metrics::histogram!(
                    metric::CALL_DURATION,
                    label::LAYER => "retry",
                    label::DEPENDENCY => dependency.clone(),
                    label::OUTCOME => outcome
                )
            }),
        }
    }

    fn record(&self, outcome: CallOutcome, took: Duration) {
        let i = outcome as usize;
        if let (Some(calls), Some(duration)) = (self.calls.get(i), self.duration.get(i)) {
            calls.increment(1);
            duration.record(took.as_secs_f64());
        }
    }
}

#[cfg(feature = "metrics")]
impl std::fmt::Debug for CallMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMeter").finish_non_exhaustive()
    }
}
