//! Helpers shared by the retry tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_core::{Backoff, Jitter};
use staunch_retry::{GiveUp, GiveUpReason, RetryBudget, RetryExhausted, RetryPolicyBuilder};
use tokio::time::Instant;

pub type BoxError = staunch_retry::BoxError;

/// A backoff without jitter, so paused-time tests can assert exact spacing.
pub fn constant(ms: u64) -> Backoff {
    Backoff::constant(Duration::from_millis(ms))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

/// A policy builder with an unlimited budget and a constant 100 ms backoff, recording every
/// give-up reason into `reasons`.
pub fn policy(reasons: &Arc<Mutex<Vec<GiveUpReason>>>) -> RetryPolicyBuilder {
    let reasons = Arc::clone(reasons);
    staunch_retry::RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .backoff(constant(100))
        .on_give_up(move |g| reasons.lock().unwrap().push(g.reason))
}

pub fn reasons() -> Arc<Mutex<Vec<GiveUpReason>>> {
    Arc::new(Mutex::new(Vec::new()))
}

/// Records the (paused) time of every call, relative to `start`.
#[derive(Clone)]
pub struct Calls {
    start: Instant,
    at: Arc<Mutex<Vec<Duration>>>,
}

impl Calls {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            at: Arc::default(),
        }
    }

    pub fn hit(&self) -> usize {
        let mut at = self.at.lock().unwrap();
        at.push(self.start.elapsed());
        at.len()
    }

    pub fn count(&self) -> usize {
        self.at.lock().unwrap().len()
    }

    pub fn times_ms(&self) -> Vec<u128> {
        self.at
            .lock()
            .unwrap()
            .iter()
            .map(Duration::as_millis)
            .collect()
    }
}

/// Sets a flag when dropped: proves an attempt's future was cancelled.
pub struct DropFlag(pub Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub fn response(status: u16, headers: &[(&str, &str)]) -> http::Response<()> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

pub fn get() -> http::Request<String> {
    http::Request::get("http://127.0.0.1/x")
        .body(String::new())
        .unwrap()
}

/// The annotation on an error the retry layer gave up on, as `(attempts, reason)`, and the
/// original error it wraps; panics when the error is not annotated.
pub fn gave_up(err: &BoxError) -> ((u32, GiveUpReason), &(dyn std::error::Error + 'static)) {
    let annotated = err
        .downcast_ref::<RetryExhausted>()
        .unwrap_or_else(|| panic!("expected a RetryExhausted, got {err:?}"));
    let source = std::error::Error::source(annotated).expect("the original error");
    // `last()` and `source()` are the same error.
    assert!(std::ptr::addr_eq(source, annotated.last()));
    ((annotated.attempts(), annotated.reason()), source)
}

/// Whether an error or anything in its source chain is an annotation.
pub fn is_annotated(err: &BoxError) -> bool {
    RetryExhausted::find(&**err).is_some()
}

/// The annotation in a response's extensions, as `(attempts, reason)`.
pub fn response_gave_up<B>(res: &http::Response<B>) -> Option<(u32, GiveUpReason)> {
    res.extensions()
        .get::<GiveUp>()
        .map(|g| (g.attempts, g.reason))
}
