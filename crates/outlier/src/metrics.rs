//! The `metrics` feature: counters and gauges through the `metrics` facade, labelled
//! `staunch.dependency` (names in [`staunch_core::telemetry`]).
//!
//! Handles are registered when the detector is made, so install the recorder first. Calls are
//! not counted one by one (that would put the recorder on every call's path): only ejections,
//! returns and the gauges they change.

use metrics::{Counter, Gauge, counter, gauge};
use staunch_core::telemetry::{label, metric};

#[derive(Debug)]
pub(crate) struct Handles {
    ejections: Counter,
    failure_rate_ejections: Counter,
    returns: Counter,
    ejected: Gauge,
    endpoints: Gauge,
}

impl Handles {
    pub(crate) fn new(name: &str) -> Self {
        let name = name.to_owned();
        Self {
            ejections: counter!(metric::OUTLIER_EJECTIONS, label::DEPENDENCY => name.clone(), label::REASON => "consecutive_failures"),
            failure_rate_ejections: counter!(metric::OUTLIER_EJECTIONS, label::DEPENDENCY => name.clone(), label::REASON => "failure_rate"),
            returns: counter!(metric::OUTLIER_RETURNS, label::DEPENDENCY => name.clone()),
            ejected: gauge!(metric::OUTLIER_EJECTED, label::DEPENDENCY => name.clone()),
            endpoints: gauge!(metric::OUTLIER_ENDPOINTS, label::DEPENDENCY => name),
        }
    }

    pub(crate) fn ejected(&self, by_failure_rate: bool) {
        if by_failure_rate {
            self.failure_rate_ejections.increment(1);
        } else {
            self.ejections.increment(1);
        }
    }

    pub(crate) fn returned(&self) {
        self.returns.increment(1);
    }

    pub(crate) fn gauges(&self, ejected: usize, endpoints: usize) {
        self.ejected.set(ejected as f64);
        self.endpoints.set(endpoints as f64);
    }
}
