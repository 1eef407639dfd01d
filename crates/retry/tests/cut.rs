//! `attempts_cut_by`: a retry inside of which a time limit cuts every attempt arms no timer of
//! its own while that limit comes first, and still ends the call exactly at its overall
//! deadline when the deadline comes first (paused time).

mod support;

use std::time::Duration;

use staunch_retry::{Elapsed, GiveUpReason, RetryLayer, RetryPolicy};
use staunch_timeout::{TimeLimit, TimeoutLayer, TimeoutOverride};
use support::{BoxError, Calls, gave_up, get};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// A service that never answers: every attempt is cut by a limit.
fn hangs(
    calls: &Calls,
) -> impl Service<http::Request<String>, Response = (), Error = BoxError, Future: Send> + Clone + use<>
{
    let calls = calls.clone();
    tower::service_fn(move |_req: http::Request<String>| {
        calls.hit();
        std::future::pending::<Result<(), BoxError>>()
    })
}

fn policy(total_ms: u64, cut_ms: u64) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(5)
        .backoff(support::constant(10))
        .max_total_time(Duration::from_millis(total_ms))
        .attempts_cut_by(Duration::from_millis(cut_ms))
        .build()
        .unwrap()
}

fn limit(ms: u64) -> TimeLimit {
    TimeLimit::builder()
        .limit(Duration::from_millis(ms))
        .name("attempt")
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_attempt_the_inner_limit_cuts_first_arms_no_retry_timer() {
    let calls = Calls::new();
    let attempt = limit(60);
    let mut svc = RetryLayer::new(policy(1000, 60))
        .layer(TimeoutLayer::from_limit(attempt.clone()).layer(hangs(&calls)));
    let mut call = Box::pin(svc.ready().await.unwrap().call(get()));
    // First poll: the attempt pends; only the inner limit's timer is armed.
    assert!(futures::poll!(call.as_mut()).is_pending());
    assert_eq!(attempt.waiting(), 1);
    let state = format!("{call:?}");
    assert!(state.contains("CutInside"), "{state}");
    drop(call);
    assert_eq!(attempt.waiting(), 0, "a dropped call leaves no timer entry");
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_still_fires_exactly_when_it_comes_first() {
    let calls = Calls::new();
    let svc = RetryLayer::new(policy(100, 60)).layer(
        TimeoutLayer::new(Duration::from_millis(60))
            .unwrap()
            .layer(hangs(&calls)),
    );
    let start = Instant::now();
    let err = svc.oneshot(get()).await.unwrap_err();
    // Attempt 1 is cut by the inner limit at 60 ms; attempt 2 starts at 70 ms, and its
    // inner limit (130 ms) would pass the deadline: the retry times it, and ends it at 100 ms.
    assert_eq!(calls.times_ms(), [0, 70]);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let ((attempts, reason), last) = gave_up(&err);
    assert_eq!((attempts, reason), (2, GiveUpReason::Deadline));
    let elapsed = last
        .downcast_ref::<Elapsed>()
        .expect("the overall deadline");
    assert_eq!(elapsed.limit(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_longer_override_than_the_budget_left_is_read_and_the_deadline_fires() {
    let calls = Calls::new();
    let svc = RetryLayer::new(policy(100, 60)).layer(
        TimeoutLayer::new(Duration::from_millis(60))
            .unwrap()
            .layer(hangs(&calls)),
    );
    let mut request = get();
    request
        .extensions_mut()
        .insert(TimeoutOverride(Duration::from_secs(10)));
    let start = Instant::now();
    let err = svc.oneshot(request).await.unwrap_err();
    // The inner limit is 10 s for this request: the retry ends the first attempt at 100 ms.
    assert_eq!(calls.times_ms(), [0]);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let elapsed = err.downcast_ref::<Elapsed>().expect("the overall deadline");
    assert_eq!(elapsed.limit(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn results_match_a_retry_that_times_every_attempt_itself() {
    // The same calls with and without `attempts_cut_by`: same attempts, same times.
    for cut in [false, true] {
        let calls = Calls::new();
        let mut builder = RetryPolicy::builder()
            .max_attempts(3)
            .backoff(support::constant(5))
            .max_total_time(Duration::from_millis(200));
        if cut {
            builder = builder.attempts_cut_by(Duration::from_millis(50));
        }
        let svc = RetryLayer::new(builder.build().unwrap()).layer(
            TimeoutLayer::new(Duration::from_millis(50))
                .unwrap()
                .layer(hangs(&calls)),
        );
        let start = Instant::now();
        let err = svc.oneshot(get()).await.unwrap_err();
        assert_eq!(calls.times_ms(), [0, 55, 110], "cut: {cut}");
        assert_eq!(start.elapsed(), Duration::from_millis(160), "cut: {cut}");
        assert!(
            err.to_string().contains("gave up after 3 attempts"),
            "{err}"
        );
    }
}

#[test]
fn a_zero_cut_is_a_config_error() {
    let err = RetryPolicy::builder()
        .attempts_cut_by(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "attempts_cut_by");
}
