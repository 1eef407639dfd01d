//! With the `metrics` feature, fallbacks and the fallback's own failures reach the recorder
//! with `name` and `reason` (or `cause`) labels, counting the same as `FallbackPolicy::metrics`.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use staunch_core::{BoxError, BreakerOpen};
use staunch_fallback::{Answer, FallbackMetrics, FallbackPolicy};

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
fn fallbacks_are_counted_by_name_and_reason() {
    let capture = Arc::new(Capture::default());
    let recorder = CaptureRecorder(Arc::clone(&capture));
    let policy = FallbackPolicy::<u32>::builder("payment")
        .on_error(|e| {
            assert!(!e.to_string().contains("boom"), "rule panicked");
            true
        })
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let answer = Answer::value(0);
            let open =
                || async { Err::<u32, BoxError>(Box::new(BreakerOpen::new("p".into(), None))) };
            for _ in 0..3 {
                policy.call(open(), &answer).await.unwrap();
            }
            let io = || async { Err::<u32, _>(std::io::Error::other("reset")) };
            policy.call(io(), &answer).await.unwrap();
            let boom = async { Err::<u32, _>(std::io::Error::other("boom")) };
            policy.call(boom, &answer).await.unwrap_err();
            policy
                .call_or_else(io(), |_, _| async {
                    Err::<u32, _>(std::io::Error::other("backup"))
                })
                .await
                .unwrap_err();
            policy
                .call(async { Ok::<u32, BoxError>(1) }, &answer)
                .await
                .unwrap();
        });
    });
    let seen = capture.0.lock().unwrap().clone();
    let get = |key: &str| seen.get(key).copied().unwrap_or(0.0);
    assert_eq!(
        get("staunch.fallback.used{staunch.dependency=payment,staunch.reason=breaker_open}"),
        3.0
    );
    assert_eq!(
        get("staunch.fallback.used{staunch.dependency=payment,staunch.reason=error}"),
        2.0
    );
    assert_eq!(
        get("staunch.fallback.failed{staunch.dependency=payment,staunch.reason=panicked}"),
        1.0
    );
    assert_eq!(
        get("staunch.fallback.failed{staunch.dependency=payment,staunch.reason=backup_error}"),
        1.0
    );
    assert_eq!(seen.len(), 4, "{seen:?}");
    let m = policy.metrics();
    assert_eq!(
        (
            m.rejections,
            m.errors,
            m.statuses,
            m.responses,
            m.panicked,
            m.failed
        ),
        (3, 2, 0, 0, 1, 1)
    );
    assert_eq!(m.total(), 5);
    assert_ne!(m, FallbackMetrics::default());
}
