//! Stable names of every metric, metric label and span field that staunch emits.
//!
//! The names follow OpenTelemetry's conventions: dotted lower-case names, units as metadata
//! (not in the name), counters without a `_total` suffix (exporters add it: Prometheus renders
//! `staunch.calls` as `staunch_calls_total`), and attribute names in the `staunch.` namespace
//! except where OpenTelemetry already names the thing (`http.request.resend_count`,
//! `error.type`). The full table, with types, units and labels, is in the `staunch` facade's
//! `telemetry` documentation and its README; this module is the single place the names are
//! spelled, so every layer uses the same ones.
//!
//! With the `metrics` feature, [`describe_metrics`] registers each metric's unit and
//! description with the installed `metrics` recorder; every staunch layer calls it when it
//! is built, so install the recorder first.

/// Metric names.
pub mod metric {
    /// Counter: calls through a layer, by `staunch.layer`, `staunch.dependency` and
    /// `staunch.outcome`.
    pub const CALLS: &str = "staunch.calls";
    /// Histogram (seconds): a call's duration through a layer, by `staunch.layer`,
    /// `staunch.dependency` and `staunch.outcome`.
    pub const CALL_DURATION: &str = "staunch.call.duration";

    /// Gauge: the breaker's state code (0 closed, 1 open, 2 half-open, 3 forced open,
    /// 4 disabled, 5 metrics-only).
    pub const BREAKER_STATE: &str = "staunch.circuit_breaker.state";
    /// Counter: state transitions, by the state entered (`staunch.circuit_breaker.state`).
    pub const BREAKER_TRANSITIONS: &str = "staunch.circuit_breaker.transitions";
    /// Counter: calls the breaker refused.
    pub const BREAKER_REJECTIONS: &str = "staunch.circuit_breaker.rejections";
    /// Gauge (percent): failure rate over the sliding window.
    pub const BREAKER_FAILURE_RATE: &str = "staunch.circuit_breaker.failure_rate";
    /// Gauge (percent): slow-call rate over the sliding window.
    pub const BREAKER_SLOW_CALL_RATE: &str = "staunch.circuit_breaker.slow_call_rate";
    /// Gauge: calls in the sliding window.
    pub const BREAKER_WINDOW_CALLS: &str = "staunch.circuit_breaker.window.calls";

    /// Gauge: calls holding a bulkhead permit.
    pub const BULKHEAD_IN_FLIGHT: &str = "staunch.bulkhead.in_flight";
    /// Gauge: callers waiting for a bulkhead permit.
    pub const BULKHEAD_QUEUED: &str = "staunch.bulkhead.queued";
    /// Gauge: the bulkhead's concurrency limit.
    pub const BULKHEAD_LIMIT: &str = "staunch.bulkhead.limit";
    /// Counter: calls the bulkhead refused, by `staunch.reason`.
    pub const BULKHEAD_REJECTIONS: &str = "staunch.bulkhead.rejections";
    /// Histogram (seconds): how long a caller waited for a permit.
    pub const BULKHEAD_WAIT_DURATION: &str = "staunch.bulkhead.wait.duration";

    /// Counter: attempts sent again (retries), after the first.
    pub const RETRY_RETRIES: &str = "staunch.retry.retries";
    /// Counter: calls the policy stopped retrying while they still failed, by `staunch.reason`.
    pub const RETRY_GAVE_UP: &str = "staunch.retry.gave_up";
    /// Counter: hedged attempts sent.
    pub const RETRY_HEDGES: &str = "staunch.retry.hedges";
    /// Gauge: retries the retry budget can still afford.
    pub const RETRY_BUDGET_BALANCE: &str = "staunch.retry.budget.balance";

    /// Counter: calls cut off at their timeout.
    pub const TIMEOUT_ELAPSED: &str = "staunch.timeout.elapsed";
    /// Counter: calls not started because the caller's deadline had already passed.
    pub const TIMEOUT_REFUSED: &str = "staunch.timeout.refused";

    /// Counter: calls the rate limiter refused.
    pub const RATE_LIMIT_REJECTIONS: &str = "staunch.rate_limit.rejections";
    /// Counter: calls the rate limiter delayed.
    pub const RATE_LIMIT_DELAYED: &str = "staunch.rate_limit.delayed";
    /// Counter: slow-down hints received from the server.
    pub const RATE_LIMIT_HINTS: &str = "staunch.rate_limit.hints";

    /// Gauge: 1 while the fault injector injects, else 0.
    pub const FAULT_ACTIVE: &str = "staunch.fault.active";
    /// Counter: faults injected, by `staunch.fault.kind`.
    pub const FAULT_INJECTED: &str = "staunch.fault.injected";

    /// Counter: calls answered by the fallback, by `staunch.reason`.
    pub const FALLBACK_USED: &str = "staunch.fallback.used";
    /// Counter: fallbacks that failed themselves, by `staunch.reason`.
    pub const FALLBACK_FAILED: &str = "staunch.fallback.failed";

    /// Counter: endpoints ejected, by `staunch.reason`.
    pub const OUTLIER_EJECTIONS: &str = "staunch.outlier.ejections";
    /// Counter: ejected endpoints returned to the pool.
    pub const OUTLIER_RETURNS: &str = "staunch.outlier.returns";
    /// Gauge: endpoints ejected now.
    pub const OUTLIER_EJECTED: &str = "staunch.outlier.ejected";
    /// Gauge: endpoints in the pool.
    pub const OUTLIER_ENDPOINTS: &str = "staunch.outlier.endpoints";

    /// Counter: idempotent responses not stored because the key's lease was lost.
    pub const IDEMPOTENCY_LEASES_LOST: &str = "staunch.idempotency.leases_lost";

    /// Counter: saga lifecycle events, by `staunch.saga.name` and `staunch.saga.status`.
    pub const SAGAS: &str = "staunch.saga.sagas";
    /// Counter: sagas purged from the log.
    pub const SAGA_PURGED: &str = "staunch.saga.purged";
    /// Gauge: sagas running in this process, by `staunch.saga.name`.
    pub const SAGA_IN_FLIGHT: &str = "staunch.saga.in_flight";
    /// Histogram (seconds): a step attempt's duration, by `staunch.saga.name`,
    /// `staunch.saga.step` and `staunch.outcome`.
    pub const SAGA_STEP_DURATION: &str = "staunch.saga.step.duration";
    /// Counter: failed step attempts, by `staunch.saga.name` and `staunch.saga.step`.
    pub const SAGA_STEP_FAILURES: &str = "staunch.saga.step.failures";
}

/// Metric label keys.
pub mod label {
    /// The layer that emitted the value: `circuit_breaker`, `bulkhead`, `retry`, `timeout`, ...
    pub const LAYER: &str = "staunch.layer";
    /// The name the user gave the layer (one per dependency, so the set is bounded).
    pub const DEPENDENCY: &str = "staunch.dependency";
    /// A call's outcome: `success`, `failure`, `rejected`, `timeout`.
    pub const OUTCOME: &str = "staunch.outcome";
    /// Why a layer refused, gave up or answered: a short fixed word per layer.
    pub const REASON: &str = "staunch.reason";
    /// A breaker state's stable name (`closed`, `open`, `half_open`, ...).
    pub const BREAKER_STATE: &str = "staunch.circuit_breaker.state";
    /// The kind of fault injected (`latency`, `error`, `abort`).
    pub const FAULT_KIND: &str = "staunch.fault.kind";
    /// A saga definition's name.
    pub const SAGA_NAME: &str = "staunch.saga.name";
    /// A saga step's name.
    pub const SAGA_STEP: &str = "staunch.saga.step";
    /// A saga lifecycle status (`started`, `completed`, `compensated`, ...).
    pub const SAGA_STATUS: &str = "staunch.saga.status";
}

/// Span names and span fields (attributes), for the layers' opt-in spans.
pub mod span {
    /// The circuit breaker's span.
    pub const BREAKER: &str = "staunch.circuit_breaker";
    /// The bulkhead's span.
    pub const BULKHEAD: &str = "staunch.bulkhead";
    /// The retry policy's span.
    pub const RETRY: &str = "staunch.retry";
    /// The timeout's span.
    pub const TIMEOUT: &str = "staunch.timeout";

    /// Field: the layer's name (the dependency).
    pub const DEPENDENCY: &str = "staunch.dependency";
    /// Field: the breaker's state when the call arrived.
    pub const BREAKER_STATE: &str = "staunch.circuit_breaker.state";
    /// Field: whether the breaker refused the call.
    pub const BREAKER_REFUSED: &str = "staunch.circuit_breaker.refused";
    /// Field: milliseconds waited for a bulkhead permit.
    pub const BULKHEAD_WAIT_MS: &str = "staunch.bulkhead.wait_ms";
    /// Field: whether the bulkhead refused the call.
    pub const BULKHEAD_REFUSED: &str = "staunch.bulkhead.refused";
    /// Field: attempts sent again after the first (OpenTelemetry's HTTP name).
    pub const RESEND_COUNT: &str = "http.request.resend_count";
    /// Field: the last backoff slept before a retry, in milliseconds.
    pub const RETRY_BACKOFF_MS: &str = "staunch.retry.backoff_ms";
    /// Field: hedged attempts sent.
    pub const HEDGES: &str = "staunch.retry.hedges";
    /// Field: the timeout's limit in milliseconds.
    pub const TIMEOUT_MS: &str = "staunch.timeout.limit_ms";
    /// Field: whether the call was cut off at its timeout.
    pub const TIMEOUT_ELAPSED: &str = "staunch.timeout.elapsed";
    /// Field: the error's kind when the call failed (OpenTelemetry's name).
    pub const ERROR_TYPE: &str = "error.type";
}

/// The `error.type` value for a failed call's error: the kind of staunch rejection found in
/// its source chain ([`Rejection::as_str`](crate::Rejection::as_str)), else `_OTHER`
/// (OpenTelemetry's value for an error of no known kind). Layers that know more (a timeout)
/// say so themselves.
pub fn error_type(err: &(dyn std::error::Error + 'static)) -> &'static str {
    crate::rejection_of(err).map_or("_OTHER", |r| r.as_str())
}

/// Registers the unit and description of every metric in [`metric`] with the installed
/// `metrics` recorder. Cheap, and safe to call more than once.
#[cfg(feature = "metrics")]
pub fn describe_metrics() {
    // Every name in the module is described here.
    #[allow(clippy::wildcard_imports)]
    use metric::*;
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

    describe_counter!(
        CALLS,
        Unit::Count,
        "Calls through a staunch layer, by outcome."
    );
    describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "Duration of calls through a staunch layer, by outcome."
    );
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics-only."
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        Unit::Count,
        "Circuit breaker state transitions."
    );
    describe_counter!(
        BREAKER_REJECTIONS,
        Unit::Count,
        "Calls the circuit breaker refused."
    );
    describe_gauge!(
        BREAKER_FAILURE_RATE,
        Unit::Percent,
        "Failure rate over the breaker's sliding window."
    );
    describe_gauge!(
        BREAKER_SLOW_CALL_RATE,
        Unit::Percent,
        "Slow-call rate over the breaker's sliding window."
    );
    describe_gauge!(
        BREAKER_WINDOW_CALLS,
        Unit::Count,
        "Calls in the breaker's sliding window."
    );
    describe_gauge!(
        BULKHEAD_IN_FLIGHT,
        Unit::Count,
        "Calls holding a bulkhead permit."
    );
    describe_gauge!(
        BULKHEAD_QUEUED,
        Unit::Count,
        "Callers waiting for a bulkhead permit."
    );
    describe_gauge!(
        BULKHEAD_LIMIT,
        Unit::Count,
        "The bulkhead's concurrency limit."
    );
    describe_counter!(
        BULKHEAD_REJECTIONS,
        Unit::Count,
        "Calls the bulkhead refused."
    );
    describe_histogram!(
        BULKHEAD_WAIT_DURATION,
        Unit::Seconds,
        "Time callers waited for a bulkhead permit."
    );
    describe_counter!(
        RETRY_RETRIES,
        Unit::Count,
        "Attempts sent again by a retry policy."
    );
    describe_counter!(
        RETRY_GAVE_UP,
        Unit::Count,
        "Failing calls a retry policy stopped retrying."
    );
    describe_counter!(RETRY_HEDGES, Unit::Count, "Hedged attempts sent.");
    describe_gauge!(
        RETRY_BUDGET_BALANCE,
        Unit::Count,
        "Retries the retry budget can still afford."
    );
    describe_counter!(
        TIMEOUT_ELAPSED,
        Unit::Count,
        "Calls cut off at their timeout."
    );
    describe_counter!(
        TIMEOUT_REFUSED,
        Unit::Count,
        "Calls not started because the caller's deadline had passed."
    );
    describe_counter!(
        RATE_LIMIT_REJECTIONS,
        Unit::Count,
        "Calls the rate limiter refused."
    );
    describe_counter!(
        RATE_LIMIT_DELAYED,
        Unit::Count,
        "Calls the rate limiter delayed."
    );
    describe_counter!(
        RATE_LIMIT_HINTS,
        Unit::Count,
        "Slow-down hints received from servers."
    );
    describe_gauge!(FAULT_ACTIVE, "1 while the fault injector injects, else 0.");
    describe_counter!(FAULT_INJECTED, Unit::Count, "Faults injected.");
    describe_counter!(
        FALLBACK_USED,
        Unit::Count,
        "Calls answered by the fallback."
    );
    describe_counter!(
        FALLBACK_FAILED,
        Unit::Count,
        "Fallbacks that failed themselves."
    );
    describe_counter!(
        OUTLIER_EJECTIONS,
        Unit::Count,
        "Endpoints ejected from the pool."
    );
    describe_counter!(
        OUTLIER_RETURNS,
        Unit::Count,
        "Ejected endpoints returned to the pool."
    );
    describe_gauge!(OUTLIER_EJECTED, Unit::Count, "Endpoints ejected now.");
    describe_gauge!(OUTLIER_ENDPOINTS, Unit::Count, "Endpoints in the pool.");
    describe_counter!(
        IDEMPOTENCY_LEASES_LOST,
        Unit::Count,
        "Idempotent responses not stored because the key's lease was lost."
    );
    describe_counter!(SAGAS, Unit::Count, "Saga lifecycle events, by status.");
    describe_counter!(SAGA_PURGED, Unit::Count, "Sagas purged from the log.");
    describe_gauge!(
        SAGA_IN_FLIGHT,
        Unit::Count,
        "Sagas running in this process."
    );
    describe_histogram!(
        SAGA_STEP_DURATION,
        Unit::Seconds,
        "Duration of saga step attempts."
    );
    describe_counter!(
        SAGA_STEP_FAILURES,
        Unit::Count,
        "Failed saga step attempts."
    );
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::sync::Mutex;

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    #[allow(clippy::wildcard_imports)]
    use super::metric::*;

    #[derive(Default)]
    struct Described(Mutex<Vec<(String, Option<Unit>)>>);

    impl Described {
        fn push(&self, name: KeyName, unit: Option<Unit>) {
            self.0
                .lock()
                .unwrap()
                .push((name.as_str().to_owned(), unit));
        }
    }

    impl Recorder for Described {
        fn describe_counter(&self, name: KeyName, unit: Option<Unit>, _: SharedString) {
            self.push(name, unit);
        }
        fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, _: SharedString) {
            self.push(name, unit);
        }
        fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, _: SharedString) {
            self.push(name, unit);
        }
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn every_metric_is_described_once_with_its_unit() {
        let all = [
            CALLS,
            CALL_DURATION,
            BREAKER_STATE,
            BREAKER_TRANSITIONS,
            BREAKER_REJECTIONS,
            BREAKER_FAILURE_RATE,
            BREAKER_SLOW_CALL_RATE,
            BREAKER_WINDOW_CALLS,
            BULKHEAD_IN_FLIGHT,
            BULKHEAD_QUEUED,
            BULKHEAD_LIMIT,
            BULKHEAD_REJECTIONS,
            BULKHEAD_WAIT_DURATION,
            RETRY_RETRIES,
            RETRY_GAVE_UP,
            RETRY_HEDGES,
            RETRY_BUDGET_BALANCE,
            TIMEOUT_ELAPSED,
            TIMEOUT_REFUSED,
            RATE_LIMIT_REJECTIONS,
            RATE_LIMIT_DELAYED,
            RATE_LIMIT_HINTS,
            FAULT_ACTIVE,
            FAULT_INJECTED,
            FALLBACK_USED,
            FALLBACK_FAILED,
            OUTLIER_EJECTIONS,
            OUTLIER_RETURNS,
            OUTLIER_EJECTED,
            OUTLIER_ENDPOINTS,
            IDEMPOTENCY_LEASES_LOST,
            SAGAS,
            SAGA_PURGED,
            SAGA_IN_FLIGHT,
            SAGA_STEP_DURATION,
            SAGA_STEP_FAILURES,
        ];
        let described = Described::default();
        metrics::with_local_recorder(&described, super::describe_metrics);
        let got = described.0.into_inner().unwrap();
        assert_eq!(got.len(), all.len());
        for name in all {
            assert!(
                name.starts_with("staunch.") && !name.ends_with("_total"),
                "{name}"
            );
            let (_, unit) = got.iter().find(|(n, _)| n == name).expect(name);
            let unitless = [BREAKER_STATE, FAULT_ACTIVE];
            assert_eq!(unit.is_none(), unitless.contains(&name), "{name}");
            if name.ends_with(".duration") {
                assert_eq!(*unit, Some(Unit::Seconds), "{name}");
            }
        }
    }
}
