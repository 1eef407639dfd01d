//! The `metrics` feature: counters emitted through the `metrics` facade with a `staunch.dependency` label.
#![cfg(feature = "metrics")]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use staunch_retry::{RetryLayer, RetryPolicy};
use support::{BoxError, policy, reasons};
use tower::{Layer, ServiceExt};

/// Every counter increment as (name, labels, value).
type Log = Arc<Mutex<Vec<(String, Vec<(String, String)>, u64)>>>;

/// Records every counter increment.
#[derive(Default)]
struct Capture(Log);

struct Handle {
    key: Key,
    log: Log,
    total: AtomicU64,
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.total.fetch_add(value, Ordering::Relaxed);
        let labels = self
            .key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        self.log
            .lock()
            .unwrap()
            .push((self.key.name().to_owned(), labels, value));
    }

    fn absolute(&self, _: u64) {}
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle {
            key: key.clone(),
            log: Arc::clone(&self.0),
            total: AtomicU64::new(0),
        }))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn retries_and_give_ups_are_counted_with_the_policy_name() {
    let capture = Capture::default();
    let log = Arc::clone(&capture.0);
    metrics::with_local_recorder(&capture, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let r = reasons();
            let policy = policy(&r)
                .name("payment")
                .call_metrics(true)
                .build()
                .unwrap();
            let svc = RetryLayer::new(policy).layer(tower::service_fn(|_: u32| async {
                Err::<u32, BoxError>(
                    std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
                )
            }));
            svc.oneshot(1).await.unwrap_err();
        });
    });
    let log = log.lock().unwrap();
    let name = |n: &str| {
        log.iter()
            .filter(|(k, labels, _)| {
                k == n && labels.contains(&("staunch.dependency".to_owned(), "payment".to_owned()))
            })
            .map(|(_, _, v)| v)
            .sum::<u64>()
    };
    assert_eq!(name("staunch.retry.retries"), 2);
    assert_eq!(name("staunch.retry.gave_up"), 1);
    // The call itself, counted once by outcome after its attempts.
    let calls = |outcome: &str| {
        log.iter()
            .filter(|(k, labels, _)| {
                k == "staunch.calls"
                    && labels.contains(&("staunch.layer".to_owned(), "retry".to_owned()))
                    && labels.contains(&("staunch.dependency".to_owned(), "payment".to_owned()))
                    && labels.contains(&("staunch.outcome".to_owned(), outcome.to_owned()))
            })
            .map(|(_, _, v)| v)
            .sum::<u64>()
    };
    assert_eq!(calls("failure"), 1);
    assert_eq!(calls("success"), 0);
    assert!(log.iter().any(|(k, labels, _)| k == "staunch.retry.gave_up"
        && labels.contains(&("staunch.reason".to_owned(), "max_attempts".to_owned()))));
}

/// `staunch.calls` by outcome for calls answered `status` every time, with call metrics on
/// or off.
fn calls_answered(status: u16, call_metrics: bool) -> Vec<(String, u64)> {
    let capture = Capture::default();
    let log = Arc::clone(&capture.0);
    metrics::with_local_recorder(&capture, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let policy = RetryPolicy::builder()
                .name("answers")
                .max_attempts(2)
                .call_metrics(call_metrics)
                .build()
                .unwrap();
            let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: u32| async move {
                Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
            }));
            let answer = svc.oneshot(1).await.unwrap();
            assert_eq!(answer.status().as_u16(), status);
        });
    });
    let log = log.lock().unwrap();
    log.iter()
        .filter(|(k, labels, _)| {
            k == "staunch.calls"
                && labels.contains(&("staunch.dependency".to_owned(), "answers".to_owned()))
        })
        .map(|(_, labels, v)| {
            let outcome = labels
                .iter()
                .find(|(k, _)| k == "staunch.outcome")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            (outcome, *v)
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

#[test]
fn a_response_still_wanted_retried_when_the_attempts_ran_out_is_a_failed_call() {
    assert_eq!(calls_answered(503, true), [("failure".to_owned(), 1)]);
    assert_eq!(calls_answered(200, true), [("success".to_owned(), 1)]);
    // A 404 is the caller's business, not retried: the call succeeded.
    assert_eq!(calls_answered(404, true), [("success".to_owned(), 1)]);
}

#[test]
fn without_call_metrics_no_call_is_counted() {
    assert!(calls_answered(200, false).is_empty());
    assert!(calls_answered(503, false).is_empty());
}
