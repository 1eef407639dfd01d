//! The `metrics` feature: counters and gauges through the `metrics` facade, labelled `name`.
//!
//! Handles are registered when the detector is made, so install the recorder first. Calls are
//! not counted one by one (that would put the recorder on every call's path): only ejections,
//! returns and the gauges they change.

use metrics::{Counter, Gauge, counter, gauge};

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
        let label = name.to_owned();
        Self {
            ejections: counter!("staunch_outlier_ejections_total", "name" => label.clone(), "reason" => "consecutive_failures"),
            failure_rate_ejections: counter!("staunch_outlier_ejections_total", "name" => label.clone(), "reason" => "failure_rate"),
            returns: counter!("staunch_outlier_returns_total", "name" => label.clone()),
            ejected: gauge!("staunch_outlier_ejected_endpoints", "name" => label.clone()),
            endpoints: gauge!("staunch_outlier_endpoints", "name" => label),
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
