//! The `metrics` feature: counters and gauges through the `metrics` facade, labelled
//! `staunch.dependency` (names in [`staunch_core::telemetry`]).
//!
//! Handles are registered when the breaker is built, so install the recorder first. Per-call
//! successes are not emitted one by one (that would put the recorder on the hot path); the
//! window's gauges are updated on every failure evaluation and by
//! [`CircuitBreaker::emit_metrics`](crate::CircuitBreaker::emit_metrics).

use metrics::{Counter, Gauge, counter, gauge};
use staunch_core::telemetry::{label, metric};

use crate::breaker::Snapshot;
use crate::state::State;
use crate::window::Counts;

#[derive(Debug)]
pub(crate) struct Handles {
    rejections: Counter,
    /// One per state entered, indexed by the state's code.
    transitions: [Counter; 6],
    state: Gauge,
    failure_rate: Gauge,
    slow_call_rate: Gauge,
    calls_in_window: Gauge,
}

impl Handles {
    pub(crate) fn new(name: &std::sync::Arc<str>) -> Self {
        let label = metrics::SharedString::from(std::sync::Arc::clone(name));
        staunch_core::telemetry::describe_metrics();
        Self {
            rejections: counter!(metric::BREAKER_REJECTIONS, label::DEPENDENCY => label.clone()),
            state: gauge!(metric::BREAKER_STATE, label::DEPENDENCY => label.clone()),
            failure_rate: gauge!(metric::BREAKER_FAILURE_RATE, label::DEPENDENCY => label.clone()),
            slow_call_rate: gauge!(metric::BREAKER_SLOW_CALL_RATE, label::DEPENDENCY => label.clone()),
            calls_in_window: gauge!(metric::BREAKER_WINDOW_CALLS, label::DEPENDENCY => label.clone()),
            transitions: State::ALL.map(|to| {
                counter!(
                    metric::BREAKER_TRANSITIONS,
                    label::DEPENDENCY => label.clone(),
                    label::BREAKER_STATE => to.as_str()
                )
            }),
        }
    }

    pub(crate) fn rejection(&self) {
        self.rejections.increment(1);
    }

    /// The state gauge holds the state's code: 0 closed, 1 open, 2 half-open, 3 forced open,
    /// 4 disabled, 5 metrics-only.
    pub(crate) fn transition(&self, to: State) {
        if let Some(counter) = usize::try_from(to.code())
            .ok()
            .and_then(|i| self.transitions.get(i))
        {
            counter.increment(1);
        }
        self.state.set(to.code() as f64);
    }

    pub(crate) fn window(&self, counts: &Counts) {
        let calls = counts.calls.max(1) as f64;
        self.failure_rate
            .set(counts.failures as f64 * 100.0 / calls);
        self.slow_call_rate.set(counts.slow as f64 * 100.0 / calls);
        self.calls_in_window.set(counts.calls as f64);
    }

    pub(crate) fn snapshot(&self, s: &Snapshot) {
        self.state.set(s.state.code() as f64);
        self.failure_rate.set(s.failure_rate);
        self.slow_call_rate.set(s.slow_call_rate);
        self.calls_in_window.set(s.calls_in_window as f64);
    }
}
