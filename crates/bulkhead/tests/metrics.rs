//! With the `metrics` feature, rejections, waits and limit changes reach the recorder with a
//! `name` label, and `emit_metrics` publishes the gauges.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use staunch_bulkhead::Bulkhead;

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
fn rejections_limit_changes_and_gauges_reach_the_recorder() {
    let capture = Arc::new(Capture::default());
    let recorder = CaptureRecorder(Arc::clone(&capture));
    metrics::with_local_recorder(&recorder, || {
        let b = Bulkhead::builder("payment")
            .max_concurrent(1)
            .build()
            .unwrap();
        let _held = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        assert!(b.try_acquire().is_err());
        b.set_max_concurrent(4).unwrap();
        b.emit_metrics();
    });
    let seen = capture.0.lock().unwrap();
    let get = |k: &str| seen.get(k).copied();
    assert_eq!(
        get("staunch.bulkhead.rejections{staunch.dependency=payment,staunch.reason=no_permit}"),
        Some(2.0),
        "{seen:?}"
    );
    assert_eq!(
        get("staunch.bulkhead.limit{staunch.dependency=payment}"),
        Some(4.0)
    );
    assert_eq!(
        get("staunch.bulkhead.in_flight{staunch.dependency=payment}"),
        Some(1.0)
    );
    assert_eq!(
        get("staunch.bulkhead.queued{staunch.dependency=payment}"),
        Some(0.0)
    );
}
