//! With the `metrics` feature, every injected fault reaches the recorder as
//! `staunch.fault.injected{name, kind}`, and switches as `staunch.fault.active{name}`.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use staunch_fault::FaultInjector;

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
fn every_kind_of_fault_reaches_the_recorder() {
    let capture = Arc::new(Capture::default());
    let recorder = CaptureRecorder(Arc::clone(&capture));
    let metrics = metrics::with_local_recorder(&recorder, || {
        let injector = FaultInjector::builder("payment")
            .latency(0.5, Duration::from_millis(1), Duration::from_millis(2))
            .error(0.3, 503)
            .abort(0.2)
            .seed(9)
            .build()
            .unwrap();
        for _ in 0..1000 {
            let _ = injector.decide();
        }
        let metrics = injector.metrics();
        injector.disable();
        metrics
    });
    let seen = capture.0.lock().unwrap();
    let get = |k: &str| seen.get(k).copied();
    for (kind, count) in [
        ("latency", metrics.delayed),
        ("error", metrics.errors),
        ("abort", metrics.aborts),
    ] {
        assert!(count > 0);
        assert_eq!(
            get(&format!(
                "staunch.fault.injected{{staunch.dependency=payment,staunch.fault.kind={kind}}}"
            )),
            Some(count as f64),
            "{seen:?}"
        );
    }
    assert_eq!(
        get("staunch.fault.active{staunch.dependency=payment}"),
        Some(0.0)
    );
}
