//! Deadlines with paused time: the overall deadline and per-attempt timeouts.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use staunch_retry::{Elapsed, GiveUpReason, RetryLayer};
use support::{
    BoxError, Calls, DropFlag, gave_up, get, is_annotated, policy, reasons, response,
    response_gave_up,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// A service answering `status` to every call, recording call times.
fn always(
    calls: &Calls,
    status: u16,
) -> impl Service<http::Request<String>, Response = http::Response<()>, Error = BoxError, Future: Send>
+ Clone
+ use<> {
    let calls = calls.clone();
    tower::service_fn(move |_req: http::Request<String>| {
        calls.hit();
        async move { Ok::<_, BoxError>(response(status, &[])) }
    })
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_skips_a_wait_that_would_pass_it() {
    let calls = Calls::new();
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(10)
        .backoff(support::constant(400))
        .max_total_time(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = RetryLayer::new(policy).layer(always(&calls, 503));
    let start = Instant::now();
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    // Attempts at 0, 400, 800; the next wait would end at 1200 > 1000: returned at 800.
    assert_eq!(calls.times_ms(), [0, 400, 800]);
    assert_eq!(start.elapsed(), Duration::from_millis(800));
    assert_eq!(*r.lock().unwrap(), [GiveUpReason::Deadline]);
    // The last response says why it came back.
    assert_eq!(response_gave_up(&res), Some((3, GiveUpReason::Deadline)));
}

#[tokio::test(start_paused = true)]
async fn a_first_failure_with_no_time_left_for_its_retry_is_annotated() {
    // The first attempt fails; its 400 ms wait would pass the 300 ms deadline: a retry was
    // due and the deadline refused it.
    let r = reasons();
    let policy = policy(&r)
        .backoff(support::constant(400))
        .max_total_time(Duration::from_millis(300))
        .build()
        .unwrap();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(|_: u32| async {
        Err::<u32, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
    }));
    let err = svc.oneshot(1).await.unwrap_err();
    let (annotation, last) = gave_up(&err);
    assert_eq!(annotation, (1, GiveUpReason::Deadline));
    assert_eq!(
        last.downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind),
        Some(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(
        err.to_string(),
        "gave up after 1 attempt (overall deadline reached)"
    );
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_cuts_a_running_attempt() {
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(5)
        .max_total_time(Duration::from_millis(250))
        .build()
        .unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: u32| {
        let guard = DropFlag(Arc::clone(&flag));
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(guard);
            Ok::<u32, BoxError>(1)
        }
    }));
    let start = Instant::now();
    let err = svc.oneshot(7).await.unwrap_err();
    // The only attempt was cut: no retry was made or refused, so the timeout comes back as
    // it is.
    assert_eq!(
        err.downcast_ref::<Elapsed>(),
        Some(&Elapsed::new(Duration::from_millis(250)))
    );
    assert!(!is_annotated(&err));
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert!(dropped.load(Ordering::SeqCst), "the attempt was cancelled");
    assert_eq!(*r.lock().unwrap(), [GiveUpReason::Deadline]);
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_cutting_a_retry_is_annotated() {
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(10)
        .backoff(support::constant(10))
        .attempt_timeout(Duration::from_millis(100))
        .max_total_time(Duration::from_millis(250))
        .build()
        .unwrap();
    let calls = Calls::new();
    let c = calls.clone();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: u32| {
        c.hit();
        async {
            std::future::pending::<()>().await;
            Ok::<u32, BoxError>(1)
        }
    }));
    let err = svc.oneshot(7).await.unwrap_err();
    // Attempts at 0, 110 and 220 ms; the third is cut by the deadline at 250 ms.
    assert_eq!(calls.times_ms(), [0, 110, 220]);
    let (annotation, last) = gave_up(&err);
    assert_eq!(annotation, (3, GiveUpReason::Deadline));
    assert_eq!(
        last.downcast_ref::<Elapsed>(),
        Some(&Elapsed::new(Duration::from_millis(250)))
    );
    // Found through the chain, as before.
    assert_eq!(
        Elapsed::find(&*err).map(Elapsed::limit),
        Some(Duration::from_millis(250))
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_cancelled_and_retried() {
    let r = reasons();
    let policy = policy(&r)
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let calls = Calls::new();
    let c = calls.clone();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let svc = RetryLayer::new(policy).layer(tower::service_fn(move |x: u32| {
        let n = c.hit();
        let guard = DropFlag(Arc::clone(&flag));
        async move {
            if n == 1 {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            drop(guard);
            Ok::<u32, BoxError>(x * 2)
        }
    }));
    assert_eq!(svc.oneshot(21).await.unwrap(), 42);
    // Timed out at 100 ms, waited the 100 ms backoff, answered at once.
    assert_eq!(calls.times_ms(), [0, 200]);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn every_attempt_timing_out_returns_elapsed() {
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(2)
        .attempt_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(|_: u32| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<u32, BoxError>(0)
    }));
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    let (annotation, last) = gave_up(&err);
    assert_eq!(annotation, (2, GiveUpReason::MaxAttempts));
    assert_eq!(
        last.downcast_ref::<Elapsed>().map(Elapsed::limit),
        Some(Duration::from_millis(50))
    );
    assert_eq!(
        Elapsed::find(&*err).map(Elapsed::limit),
        Some(Duration::from_millis(50))
    );
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(*r.lock().unwrap(), [GiveUpReason::MaxAttempts]);
}

/// Ready for its first call only: afterwards it never becomes ready (a bulkhead that stays
/// full).
#[derive(Clone)]
struct ReadyOnce(Arc<AtomicU32>);

impl Service<u32> for ReadyOnce {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        if self.0.load(Ordering::SeqCst) == 0 {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    }

    fn call(&mut self, _: u32) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )
        .into()))
    }
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_holds_while_the_inner_service_is_not_ready() {
    let r = reasons();
    let policy = policy(&r)
        .max_total_time(Duration::from_secs(1))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(policy).layer(ReadyOnce(Arc::clone(&calls)));
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    // A retry was due when the deadline passed: annotated, with the deadline's timeout as
    // the error (the failed attempt's error was dropped when its wait began).
    let (annotation, last) = gave_up(&err);
    assert_eq!(annotation, (1, GiveUpReason::Deadline));
    assert_eq!(
        last.downcast_ref::<Elapsed>(),
        Some(&Elapsed::new(Duration::from_secs(1)))
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(*r.lock().unwrap(), [GiveUpReason::Deadline]);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_cannot_be_retried_is_still_timed() {
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(1)
        .attempt_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let calls = Calls::new();
    let c = calls.clone();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: u32| {
        c.hit();
        async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<u32, BoxError>(0)
        }
    }));
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    // One attempt, cut at its timeout, returned as it is: nothing was given up.
    assert_eq!(calls.times_ms(), [0]);
    assert_eq!(
        err.downcast_ref::<Elapsed>(),
        Some(&Elapsed::new(Duration::from_millis(50)))
    );
    assert!(!is_annotated(&err));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert!(r.lock().unwrap().is_empty());
}

/// A backoff of a constant 100 ms whose `max_elapsed` is `ms`.
fn ending_after(ms: u64) -> staunch_core::Backoff {
    staunch_core::Backoff::constant(Duration::from_millis(100))
        .jitter(staunch_core::Jitter::None)
        .max_elapsed(Duration::from_millis(ms))
        .build()
        .unwrap()
}

/// An attempt that takes 950 ms and then fails with a reset.
async fn slow_reset() -> Result<u32, BoxError> {
    tokio::time::sleep(Duration::from_millis(950)).await;
    Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_counts_from_the_first_attempt_through_the_layer() {
    // The first attempt takes 950 ms: with 100 ms of backoff the retry would start at
    // 1050 ms, past the backoff's `max_elapsed` of 1 s, so there is none.
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(5)
        .backoff(ending_after(1000))
        .build()
        .unwrap();
    let calls = Calls::new();
    let c = calls.clone();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: u32| {
        c.hit();
        slow_reset()
    }));
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(calls.times_ms(), [0]);
    assert_eq!(gave_up(&err).0, (1, GiveUpReason::BackoffEnded));
    assert_eq!(start.elapsed(), Duration::from_millis(950));
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_counts_from_the_first_attempt_without_tower() {
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(5)
        .backoff(ending_after(1200))
        .build()
        .unwrap();
    let calls = Calls::new();
    let start = Instant::now();
    let err = policy
        .retry(|| {
            calls.hit();
            slow_reset()
        })
        .await
        .unwrap_err();
    // Attempts at 0 and 1050 ms; a third at 2100 ms would pass 1.2 s.
    assert_eq!(calls.times_ms(), [0, 1050]);
    assert_eq!(gave_up(&err).0, (2, GiveUpReason::BackoffEnded));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

/// A GET carrying a `Deadline` `ms` from now.
fn get_within(ms: u64) -> http::Request<String> {
    let mut req = get();
    req.extensions_mut()
        .insert(staunch_timeout::Deadline::after(Duration::from_millis(ms)));
    req
}

#[tokio::test(start_paused = true)]
async fn a_server_hint_past_the_request_deadline_returns_the_response_at_once() {
    // Issue 16, item 7: a 503 with `Retry-After: 1` and 100 ms left. Waiting the second
    // would pass the deadline: the 503 comes back now, saying why it was not retried.
    let r = reasons();
    let policy = policy(&r).max_attempts(3).build().unwrap();
    let calls = Calls::new();
    let c = calls.clone();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: http::Request<String>| {
        c.hit();
        async { Ok::<_, BoxError>(response(503, &[("retry-after", "1")])) }
    }));
    let start = Instant::now();
    let res = svc.oneshot(get_within(100)).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.times_ms(), [0]);
    assert_eq!(response_gave_up(&res), Some((1, GiveUpReason::Deadline)));
    assert_eq!(*r.lock().unwrap(), [GiveUpReason::Deadline]);
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_stop_at_the_request_deadline() {
    // 400 ms waits and 1 s left: attempts at 0, 400 and 800 ms; the next wait would end at
    // 1200 ms, past the deadline, so the third 503 is returned at 800 ms.
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(10)
        .backoff(support::constant(400))
        .build()
        .unwrap();
    let calls = Calls::new();
    let svc = RetryLayer::new(policy).layer(always(&calls, 503));
    let start = Instant::now();
    let res = svc.oneshot(get_within(1000)).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.times_ms(), [0, 400, 800]);
    assert_eq!(start.elapsed(), Duration::from_millis(800));
    assert_eq!(response_gave_up(&res), Some((3, GiveUpReason::Deadline)));
}

#[tokio::test(start_paused = true)]
async fn an_error_past_the_request_deadline_is_the_last_error() {
    let r = reasons();
    let policy = policy(&r).backoff(support::constant(400)).build().unwrap();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(|_: http::Request<String>| async {
        Err::<http::Response<()>, BoxError>(
            std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
        )
    }));
    let err = svc.oneshot(get_within(300)).await.unwrap_err();
    let (annotation, last) = gave_up(&err);
    assert_eq!(annotation, (1, GiveUpReason::Deadline));
    assert!(
        last.is::<std::io::Error>(),
        "the reset, not a timeout: {last}"
    );
    assert!(Elapsed::find(&*err).is_none());
}

#[tokio::test(start_paused = true)]
async fn the_closure_engine_honours_a_deadline_it_is_given() {
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(10)
        .backoff(support::constant(400))
        .build()
        .unwrap();
    let calls = Calls::new();
    let start = Instant::now();
    let res = policy
        .retry(|| {
            calls.hit();
            async { Ok::<_, BoxError>(response(503, &[])) }
        })
        .with_deadline(staunch_timeout::Deadline::after(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(calls.times_ms(), [0, 400, 800]);
    assert_eq!(start.elapsed(), Duration::from_millis(800));
    assert_eq!(response_gave_up(&res), Some((3, GiveUpReason::Deadline)));
}
