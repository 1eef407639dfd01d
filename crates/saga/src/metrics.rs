//! Counters behind [`SagaMetrics`], and their export through the `metrics` crate.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[cfg(feature = "metrics")]
use staunch_core::telemetry::{label, metric};

/// A snapshot of an engine's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SagaMetrics {
    /// Sagas started by this engine.
    pub started: u64,
    /// Sagas resumed by recovery or an operator.
    pub resumed: u64,
    /// Sagas that completed.
    pub completed: u64,
    /// Sagas that were compensated.
    pub compensated: u64,
    /// Times a saga became stuck.
    pub stuck: u64,
    /// Sagas an operator resolved.
    pub resolved: u64,
    /// Sagas that ended cancelled (compensated after an operator cancelled them).
    pub cancelled: u64,
    /// Times a saga was paused at a step boundary.
    pub paused: u64,
    /// Sagas quarantined by recovery.
    pub quarantined: u64,
    /// Sagas this engine stopped driving because another instance took their lease over.
    pub leases_lost: u64,
    /// Sagas deleted by [`purge`](crate::SagaEngine::purge) or the retention policy.
    pub purged: u64,
    /// Action and compensation attempts run.
    pub step_attempts: u64,
    /// Attempts that failed (any kind).
    pub step_failures: u64,
    /// Total time spent in attempts.
    pub step_time: Duration,
    /// Sagas whose runner is running now.
    pub in_flight: u64,
}

impl SagaMetrics {
    /// Mean attempt latency, zero before the first attempt.
    pub fn mean_step_latency(&self) -> Duration {
        if self.step_attempts == 0 {
            Duration::ZERO
        } else {
            self.step_time / u32::try_from(self.step_attempts).unwrap_or(u32::MAX)
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    started: AtomicU64,
    resumed: AtomicU64,
    completed: AtomicU64,
    compensated: AtomicU64,
    stuck: AtomicU64,
    resolved: AtomicU64,
    cancelled: AtomicU64,
    paused: AtomicU64,
    quarantined: AtomicU64,
    leases_lost: AtomicU64,
    purged: AtomicU64,
    step_attempts: AtomicU64,
    step_failures: AtomicU64,
    step_nanos: AtomicU64,
    in_flight: AtomicI64,
}

/// A counted saga event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Started,
    Resumed,
    Completed,
    Compensated,
    Stuck,
    Resolved,
    Cancelled,
    Paused,
    Quarantined,
    LeaseLost,
}

impl Counters {
    pub(crate) fn count(&self, what: Count, definition: &str) {
        let (counter, status) = match what {
            Count::Started => (&self.started, "started"),
            Count::Resumed => (&self.resumed, "resumed"),
            Count::Completed => (&self.completed, "completed"),
            Count::Compensated => (&self.compensated, "compensated"),
            Count::Stuck => (&self.stuck, "stuck"),
            Count::Resolved => (&self.resolved, "resolved"),
            Count::Cancelled => (&self.cancelled, "cancelled"),
            Count::Paused => (&self.paused, "paused"),
            Count::Quarantined => (&self.quarantined, "quarantined"),
            Count::LeaseLost => (&self.leases_lost, "lease_lost"),
        };
        counter.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!(
            metric::SAGAS,
            label::SAGA_NAME => definition.to_owned(),
            label::SAGA_STATUS => status
        )
        .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = (definition, status);
    }

    /// Counts `n` sagas purged (all definitions: a purge does not read their names).
    pub(crate) fn purged(&self, n: u64) {
        self.purged.fetch_add(n, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!(metric::SAGA_PURGED).increment(n);
    }

    pub(crate) fn attempt(&self, definition: &str, step: &str, elapsed: Duration, failed: bool) {
        self.step_attempts.fetch_add(1, Relaxed);
        self.step_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
        if failed {
            self.step_failures.fetch_add(1, Relaxed);
        }
        #[cfg(feature = "metrics")]
        {
            metrics::histogram!(
                metric::SAGA_STEP_DURATION,
                label::SAGA_NAME => definition.to_owned(),
                label::SAGA_STEP => step.to_owned(),
                label::OUTCOME => if failed { "failure" } else { "success" }
            )
            .record(elapsed.as_secs_f64());
            if failed {
                metrics::counter!(
                    metric::SAGA_STEP_FAILURES,
                    label::SAGA_NAME => definition.to_owned(),
                    label::SAGA_STEP => step.to_owned()
                )
                .increment(1);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (definition, step);
    }

    pub(crate) fn in_flight(&self, definition: &str, delta: i64) {
        self.in_flight.fetch_add(delta, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::gauge!(metric::SAGA_IN_FLIGHT, label::SAGA_NAME => definition.to_owned())
            .increment(delta as f64);
        #[cfg(not(feature = "metrics"))]
        let _ = definition;
    }

    pub(crate) fn snapshot(&self) -> SagaMetrics {
        SagaMetrics {
            started: self.started.load(Relaxed),
            resumed: self.resumed.load(Relaxed),
            completed: self.completed.load(Relaxed),
            compensated: self.compensated.load(Relaxed),
            stuck: self.stuck.load(Relaxed),
            resolved: self.resolved.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            paused: self.paused.load(Relaxed),
            quarantined: self.quarantined.load(Relaxed),
            leases_lost: self.leases_lost.load(Relaxed),
            purged: self.purged.load(Relaxed),
            step_attempts: self.step_attempts.load(Relaxed),
            step_failures: self.step_failures.load(Relaxed),
            step_time: Duration::from_nanos(self.step_nanos.load(Relaxed)),
            in_flight: u64::try_from(self.in_flight.load(Relaxed)).unwrap_or(0),
        }
    }
}
