//! With the `metrics` feature, a named limit counts its timeouts through the `metrics` facade.
#![cfg(feature = "metrics")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use staunch_timeout::TimeLimit;

#[derive(Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

/// Keeps every counter registered, with its labels.
#[derive(Default)]
struct Counters(Mutex<Vec<(String, Arc<Count>)>>);

impl Counters {
    fn total(&self, key: &str) -> u64 {
        let counters = self.0.lock().unwrap();
        counters
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, c)| c.0.load(Ordering::SeqCst))
            .sum()
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let count = Arc::new(Count::default());
        self.0.lock().unwrap().push((name, Arc::clone(&count)));
        Counter::from_arc(count)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn named_timeouts_are_counted_with_their_name() {
    let recorder = Counters::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let limit = TimeLimit::builder()
                .limit(Duration::from_millis(5))
                .name("search")
                .build()
                .unwrap();
            for _ in 0..3 {
                assert!(limit.run(std::future::pending::<()>()).await.is_err());
            }
            assert_eq!(limit.run(async { 1 }).await, Ok(1));
        });
    });
    assert_eq!(
        recorder.total("staunch.timeout.elapsed{staunch.dependency=search}"),
        3
    );
}
