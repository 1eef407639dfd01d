//! Every duration the builders accept is usable, and every header value a server sends is
//! survivable: `Duration::MAX` settings and `Retry-After: 18446744073709551615` never panic,
//! they wait (at most `staunch_core::FAR_FUTURE`) or give up.

mod support;

use std::time::Duration;

use staunch_retry::{HedgeDelay, HedgeLayer, RetryBudget, RetryLayer, RetryPolicy};
use support::{BoxError, Calls, get, policy, reasons, response};
use tower::{Layer, Service, ServiceExt};

const YEAR: Duration = Duration::from_hours(24 * 365);

/// Fails with `first` once, then answers 200; every answer takes 10 ms (so timers are armed).
fn slow_once_then_ok(
    calls: &Calls,
    first: http::Response<()>,
) -> impl Service<http::Request<String>, Response = http::Response<()>, Error = BoxError, Future: Send>
+ Clone
+ use<> {
    let calls = calls.clone();
    let first = std::sync::Arc::new(std::sync::Mutex::new(Some(first)));
    tower::service_fn(move |_req: http::Request<String>| {
        calls.hit();
        let answer = first.lock().unwrap().take();
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, BoxError>(answer.unwrap_or_else(|| response(200, &[])))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_of_duration_max_is_usable() {
    let r = reasons();
    let calls = Calls::new();
    let policy = policy(&r).attempt_timeout(Duration::MAX).build().unwrap();
    let svc = RetryLayer::new(policy).layer(slow_once_then_ok(&calls, response(503, &[])));
    assert_eq!(svc.oneshot(get()).await.unwrap().status(), 200);
    assert_eq!(calls.times_ms(), [0, 110]);
}

#[tokio::test(start_paused = true)]
async fn a_max_total_time_of_duration_max_is_usable() {
    let r = reasons();
    let calls = Calls::new();
    let policy = policy(&r).max_total_time(Duration::MAX).build().unwrap();
    let svc = RetryLayer::new(policy).layer(slow_once_then_ok(&calls, response(503, &[])));
    assert_eq!(svc.oneshot(get()).await.unwrap().status(), 200);
    assert_eq!(calls.times_ms(), [0, 110]);
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_with_an_uncapped_policy_waits_without_panicking() {
    let r = reasons();
    let calls = Calls::new();
    let policy = policy(&r).max_retry_after(Duration::MAX).build().unwrap();
    let svc = RetryLayer::new(policy).layer(slow_once_then_ok(
        &calls,
        response(503, &[("retry-after", "18446744073709551615")]),
    ));
    let call = tokio::spawn(svc.oneshot(get()));
    tokio::time::sleep(10 * YEAR).await;
    assert!(
        !call.is_finished(),
        "the server asked for a (practically) endless wait"
    );
    assert_eq!(calls.count(), 1);
    // The wait saturates at `FAR_FUTURE`: the retry goes out then, and succeeds.
    let res = call.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_with_a_max_total_time_of_duration_max_does_not_panic() {
    let r = reasons();
    let calls = Calls::new();
    let policy = policy(&r)
        .max_retry_after(Duration::MAX)
        .max_total_time(Duration::MAX)
        .attempt_timeout(Duration::MAX)
        .build()
        .unwrap();
    let svc = RetryLayer::new(policy).layer(slow_once_then_ok(
        &calls,
        response(503, &[("retry-after", "18446744073709551615")]),
    ));
    let res = tokio::time::timeout(YEAR, svc.oneshot(get())).await;
    assert!(res.is_err(), "still waiting a year later");
}

#[tokio::test(start_paused = true)]
async fn a_hedge_delay_of_duration_max_is_usable() {
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let layer = HedgeLayer::new(policy, HedgeDelay::Fixed(Duration::MAX)).unwrap();
    let svc = layer.layer(tower::service_fn(|x: u32| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, BoxError>(x)
    }));
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_percentile_hedge_fallback_beyond_u64_nanoseconds_saturates() {
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    // 18_446_744_074 s is 2^64 ns plus 0.29 s: truncated, it would hedge after 0.29 s.
    let layer = HedgeLayer::new(
        policy,
        HedgeDelay::Percentile {
            percentile: 0.9,
            fallback: Duration::from_secs(18_446_744_074),
            min_samples: 1_000,
        },
    )
    .unwrap();
    let calls = Calls::new();
    let c = calls.clone();
    let svc = layer.layer(tower::service_fn(move |x: u32| {
        c.hit();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, BoxError>(x)
        }
    }));
    assert_eq!(svc.oneshot(1).await.unwrap(), 1);
    assert_eq!(
        calls.count(),
        1,
        "no hedge: the fallback is (practically) never"
    );
}
