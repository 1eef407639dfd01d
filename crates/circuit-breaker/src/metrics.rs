//! The `metrics` feature: counters and gauges through the `metrics` facade, labelled `name`.
//!
//! Handles are registered when the breaker is built, so install the recorder first. Per-call
//! successes are not emitted one by one (that would put the recorder on the hot path); the
//! window's gauges are updated on every failure evaluation and by
//! [`CircuitBreaker::emit_metrics`](crate::CircuitBreaker::emit_metrics).

use metrics::{Counter, Gauge, counter, gauge};

use crate::breaker::Snapshot;
use crate::state::State;
use crate::window::Counts;

#[derive(Debug)]
pub(crate) struct Handles {
    rejections: Counter,
    transitions: Counter,
    state: Gauge,
    failure_rate: Gauge,
    slow_call_rate: Gauge,
    calls_in_window: Gauge,
}

impl Handles {
    pub(crate) fn new(name: &std::sync::Arc<str>) -> Self {
        let label = metrics::SharedString::from(std::sync::Arc::clone(name));
        Self {
            rejections: counter!("staunch_circuit_breaker_rejections_total", "name" => label.clone()),
            transitions: counter!("staunch_circuit_breaker_transitions_total", "name" => label.clone()),
            state: gauge!("staunch_circuit_breaker_state", "name" => label.clone()),
            failure_rate: gauge!("staunch_circuit_breaker_failure_rate", "name" => label.clone()),
            slow_call_rate: gauge!("staunch_circuit_breaker_slow_call_rate", "name" => label.clone()),
            calls_in_window: gauge!("staunch_circuit_breaker_calls_in_window", "name" => label),
        }
    }

    pub(crate) fn rejection(&self) {
        self.rejections.increment(1);
    }

    /// The state gauge holds the state's code: 0 closed, 1 open, 2 half-open, 3 forced open,
    /// 4 disabled, 5 metrics-only.
    pub(crate) fn transition(&self, to: State) {
        self.transitions.increment(1);
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
