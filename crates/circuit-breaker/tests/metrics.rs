//! The `metrics` feature: counters and gauges labelled with the breaker's name.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use staunch_circuit_breaker::CircuitBreaker;

#[derive(Default, Clone)]
struct Capture {
    values: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
}

impl Capture {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let labels: Vec<_> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.values.lock().unwrap().entry(name).or_default().clone()
    }

    fn counter(&self, name: &str) -> u64 {
        self.values.lock().unwrap()[name].load(Ordering::SeqCst)
    }

    fn gauge(&self, name: &str) -> f64 {
        f64::from_bits(self.values.lock().unwrap()[name].load(Ordering::SeqCst))
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn transitions_rejections_and_window_gauges_are_emitted_with_the_dependency_label() {
    let capture = Capture::default();
    let breaker = metrics::with_local_recorder(&capture, || {
        CircuitBreaker::builder("payment")
            .count_window(4)
            .minimum_calls(4)
            .build()
            .unwrap()
    });
    for _ in 0..2 {
        breaker.try_acquire().unwrap().success();
    }
    breaker.try_acquire().unwrap().failure();
    assert_eq!(
        capture.gauge("staunch.circuit_breaker.window.calls{staunch.dependency=payment}"),
        3.0
    );
    breaker.try_acquire().unwrap().failure();
    assert_eq!(
        capture.gauge("staunch.circuit_breaker.failure_rate{staunch.dependency=payment}"),
        50.0
    );
    assert_eq!(
        capture.gauge("staunch.circuit_breaker.state{staunch.dependency=payment}"),
        1.0,
        "open"
    );
    assert_eq!(
        capture.counter("staunch.circuit_breaker.transitions{staunch.dependency=payment,staunch.circuit_breaker.state=open}"),
        1
    );
    for _ in 0..3 {
        assert!(breaker.try_acquire().is_err());
    }
    assert_eq!(
        capture.counter("staunch.circuit_breaker.rejections{staunch.dependency=payment}"),
        3
    );
    breaker.reset();
    assert_eq!(
        capture.counter(
            "staunch.circuit_breaker.transitions{staunch.dependency=payment,staunch.circuit_breaker.state=closed}"
        ),
        1
    );
    breaker.emit_metrics();
    assert_eq!(
        capture.gauge("staunch.circuit_breaker.state{staunch.dependency=payment}"),
        0.0,
        "closed"
    );
    assert_eq!(
        capture.gauge("staunch.circuit_breaker.window.calls{staunch.dependency=payment}"),
        0.0
    );
}
