//! The `metrics` feature: counters, the in-flight gauge and the step histogram are emitted
//! with the definition's name as the `staunch.saga.name` label.
#![cfg(feature = "metrics")]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use staunch_saga::{MemoryStore, SagaEngine};
use support::{Script, calls, linear, trail};

/// Records counter and gauge values by `name{label=value,...}`, and histogram sample counts.
#[derive(Default)]
struct Capture {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Capture {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(self.values.lock().unwrap().entry(name).or_default())
    }

    fn get(&self, name: &str) -> u64 {
        self.values
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |v| v.load(Ordering::SeqCst))
    }
}

struct Samples(Arc<AtomicU64>);

impl metrics::HistogramFn for Samples {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
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
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Samples(self.slot(key))))
    }
}

#[test]
fn saga_metrics_are_emitted_with_the_definition_name() {
    let capture = Capture::default();
    metrics::with_local_recorder(&capture, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let c = calls();
            let ok = linear("orders", &[Script::Ok, Script::Ok], &c);
            let bad = linear("orders-bad", &[Script::Ok, Script::Fail], &c);
            let engine = SagaEngine::new(MemoryStore::new());
            for i in 0..3 {
                let h = engine.start(&ok, format!("o{i}"), trail()).await.unwrap();
                h.outcome().await.unwrap();
            }
            engine
                .start(&bad, "b", trail())
                .await
                .unwrap()
                .outcome()
                .await
                .unwrap();
            tokio::task::yield_now().await;
        });
    });
    assert_eq!(
        capture.get("staunch.saga.sagas{staunch.saga.name=orders,staunch.saga.status=started}"),
        3
    );
    assert_eq!(
        capture.get("staunch.saga.sagas{staunch.saga.name=orders,staunch.saga.status=completed}"),
        3
    );
    assert_eq!(
        capture.get(
            "staunch.saga.sagas{staunch.saga.name=orders-bad,staunch.saga.status=compensated}"
        ),
        1
    );
    assert_eq!(
        capture.get("staunch.saga.step.duration{staunch.saga.name=orders,staunch.saga.step=s1,staunch.outcome=success}"),
        3
    );
    assert_eq!(
        capture
            .get("staunch.saga.step.failures{staunch.saga.name=orders-bad,staunch.saga.step=s1}"),
        1
    );
    // The in-flight gauge went up and back down to zero (stored as f64 bits).
    assert!(
        capture
            .values
            .lock()
            .unwrap()
            .contains_key("staunch.saga.in_flight{staunch.saga.name=orders}")
    );
    assert_eq!(
        f64::from_bits(capture.get("staunch.saga.in_flight{staunch.saga.name=orders}")),
        0.0
    );
}
