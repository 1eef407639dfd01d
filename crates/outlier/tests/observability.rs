//! With the `metrics` feature, ejections and returns are counted through the `metrics`
//! crate, the same as `Detector::metrics` (the tracing events are checked in `events.rs`).

#![cfg(feature = "metrics")]

use std::time::Duration;

use staunch_core::Outcome::Failure;
use staunch_outlier::{Detector, Settings};
use tokio::time::Instant;

/// Ejects "b", holds "c" back by the cap, and returns "b".
fn story() -> Detector<&'static str> {
    let settings = Settings::new(2, Duration::from_secs(5), 50).unwrap();
    let mut d = Detector::with_keys("catalog", settings, ["a", "b", "c"]);
    let now = Instant::now();
    for _ in 0..2 {
        d.record(1, Failure, now);
        d.record(2, Failure, now);
    }
    d.tick(now + Duration::from_secs(5));
    d
}

#[cfg(feature = "metrics")]
mod metrics_feature {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };

    /// Records the last value of every metric by `name{labels}`.
    #[derive(Default)]
    struct Capture(Mutex<HashMap<String, f64>>);

    struct Handle(Arc<Capture>, String);

    impl CounterFn for Handle {
        fn increment(&self, value: u64) {
            *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value as f64;
        }
        fn absolute(&self, value: u64) {
            self.0
                .0
                .lock()
                .unwrap()
                .insert(self.1.clone(), value as f64);
        }
    }

    impl GaugeFn for Handle {
        fn increment(&self, value: f64) {
            *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
        }
        fn decrement(&self, value: f64) {
            *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() -= value;
        }
        fn set(&self, value: f64) {
            self.0.0.lock().unwrap().insert(self.1.clone(), value);
        }
    }

    impl HistogramFn for Handle {
        fn record(&self, value: f64) {
            self.0.0.lock().unwrap().insert(self.1.clone(), value);
        }
    }

    struct CaptureRecorder(Arc<Capture>);

    impl CaptureRecorder {
        fn handle(&self, key: &Key) -> Arc<Handle> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            Arc::new(Handle(
                Arc::clone(&self.0),
                format!("{}{{{}}}", key.name(), labels.join(",")),
            ))
        }
    }

    impl Recorder for CaptureRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.handle(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.handle(key))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.handle(key))
        }
    }

    #[test]
    fn ejections_returns_and_the_ejected_gauge_reach_the_recorder() {
        let capture = Arc::new(Capture::default());
        let recorder = CaptureRecorder(Arc::clone(&capture));
        let detector = metrics::with_local_recorder(&recorder, super::story);
        let seen = capture.0.lock().unwrap().clone();
        let get = |key: &str| seen.get(key).copied().unwrap_or(-1.0);
        assert_eq!(
            get(
                "staunch.outlier.ejections{staunch.dependency=catalog,staunch.reason=consecutive_failures}"
            ),
            1.0
        );
        assert_eq!(
            get("staunch.outlier.returns{staunch.dependency=catalog}"),
            1.0
        );
        assert_eq!(
            get("staunch.outlier.ejected{staunch.dependency=catalog}"),
            0.0
        );
        assert_eq!(
            get("staunch.outlier.endpoints{staunch.dependency=catalog}"),
            3.0
        );
        let m = detector.metrics();
        assert_eq!(
            (m.ejections, m.returns, m.held_by_cap, m.ejected),
            (1, 1, 1, 0)
        );
    }
}
