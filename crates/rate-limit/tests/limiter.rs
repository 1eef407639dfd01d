//! The engine's promises, under paused tokio time.

use std::time::Duration;

use futures::FutureExt;
use staunch_rate_limit::{RateHint, RateLimiter};
use tokio::time::{Instant, advance};

fn limiter(count: u32, per_ms: u64, burst: u32, max_wait_ms: u64) -> RateLimiter {
    RateLimiter::builder("dep")
        .rate(count, Duration::from_millis(per_ms))
        .burst(burst)
        .max_wait(Duration::from_millis(max_wait_ms))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_full_bucket_admits_the_burst_then_one_per_interval_and_says_when() {
    let l = limiter(10, 1000, 3, 0);
    for _ in 0..3 {
        l.try_acquire().unwrap();
    }
    let refused = l.try_acquire().unwrap_err();
    assert_eq!(refused.name(), "dep");
    assert_eq!(refused.retry_after(), Duration::from_millis(100));
    advance(Duration::from_millis(99)).await;
    assert_eq!(
        l.try_acquire().unwrap_err().retry_after(),
        Duration::from_millis(1)
    );
    advance(Duration::from_millis(1)).await;
    l.try_acquire().unwrap();
    assert!(l.try_acquire().is_err());
    assert_eq!(l.metrics().rejected, 3);
}

#[tokio::test(start_paused = true)]
async fn the_default_burst_is_the_rate_count() {
    let l = RateLimiter::builder("dep")
        .rate(5, Duration::from_secs(1))
        .build()
        .unwrap();
    for _ in 0..5 {
        l.try_acquire().unwrap();
    }
    assert!(l.try_acquire().is_err());
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_bucket() {
    let a = limiter(1, 1000, 1, 0);
    let b = a.clone();
    a.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
}

#[tokio::test(start_paused = true)]
async fn waiting_callers_are_served_in_order_one_interval_apart() {
    let l = limiter(1, 10, 1, 35);
    let start = Instant::now();
    l.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let waits: Vec<_> = (0..3).map(|_| l.acquire()).collect();
    let mut done = Vec::new();
    for w in waits {
        w.await.unwrap();
        done.push(start.elapsed());
    }
    assert_eq!(
        done,
        [10, 20, 30].map(Duration::from_millis).to_vec(),
        "slots 10 ms apart"
    );
    assert_eq!(l.metrics().delayed, 3);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_would_wait_too_long_is_refused_at_once() {
    let l = limiter(1, 100, 1, 50);
    l.try_acquire().unwrap();
    let start = Instant::now();
    let refused = l.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");
    assert_eq!(refused.retry_after(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_dropped_before_its_slot_gives_the_slot_back() {
    let l = limiter(1, 10, 1, 100);
    l.try_acquire().unwrap();
    let mut first = Box::pin(l.acquire());
    assert!((&mut first).now_or_never().is_none());
    let second = l.acquire();
    drop(first); // gives back the slot at 10 ms
    let start = Instant::now();
    // Never polled, and dropped: gives back the slot at 20 ms.
    drop(second);
    l.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    // Nothing was lost either: the next slot is 10 ms further.
    assert_eq!(l.wait_time(), Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_hint_stops_calls_until_it_has_passed() {
    let l = limiter(100, 1000, 10, 0);
    l.observe(RateHint::RetryAfter(Duration::from_secs(2)));
    let refused = l.try_acquire().unwrap_err();
    assert_eq!(refused.retry_after(), Duration::from_secs(2));
    advance(Duration::from_secs(2)).await;
    l.try_acquire().unwrap();
    // The bucket starts empty after the hint: one per interval.
    assert!(l.try_acquire().is_err());
    advance(Duration::from_millis(10)).await;
    l.try_acquire().unwrap();
    assert_eq!(l.metrics().hints, 1);
}

#[tokio::test(start_paused = true)]
async fn a_quota_hint_spreads_the_calls_left_over_the_window_then_ends() {
    let l = limiter(1000, 1000, 100, 0);
    l.observe(RateHint::Remaining {
        remaining: 2,
        window: Duration::from_secs(1),
    });
    l.try_acquire().unwrap();
    assert_eq!(
        l.try_acquire().unwrap_err().retry_after(),
        Duration::from_millis(500)
    );
    advance(Duration::from_millis(500)).await;
    l.try_acquire().unwrap();
    advance(Duration::from_millis(500)).await;
    // The window is over: the configured burst is back.
    for _ in 0..50 {
        l.try_acquire().unwrap();
    }
    // A hint faster than the configured rate changes nothing.
    let l = limiter(1, 1000, 1, 0);
    l.observe(RateHint::Remaining {
        remaining: 1000,
        window: Duration::from_secs(1),
    });
    l.try_acquire().unwrap();
    assert_eq!(
        l.try_acquire().unwrap_err().retry_after(),
        Duration::from_secs(1)
    );
}

#[tokio::test(start_paused = true)]
async fn huge_hints_and_waits_never_panic() {
    let l = RateLimiter::builder("dep")
        .rate(1, Duration::from_hours(24 * 365 * 30))
        .burst(2)
        .max_wait(Duration::MAX)
        .build()
        .unwrap();
    l.try_acquire().unwrap();
    l.observe(RateHint::RetryAfter(Duration::MAX));
    l.observe(RateHint::Remaining {
        remaining: 1,
        window: Duration::MAX,
    });
    l.observe(RateHint::Remaining {
        remaining: 0,
        window: Duration::MAX,
    });
    assert!(l.try_acquire().is_err());
    advance(Duration::from_hours(24 * 365)).await;
    assert!(l.try_acquire().is_err(), "a year later, still blocked");
    let waiting = l.acquire();
    drop(waiting);
    let _ = l.wait_time();
}

#[test]
fn a_limiter_is_send_sync_and_unpin() {
    fn check<T: Send + Sync + Unpin + Clone + 'static>() {}
    check::<RateLimiter>();
    check::<staunch_rate_limit::KeyedRateLimiter<String>>();
    fn send<T: Send>() {}
    send::<staunch_rate_limit::Acquire>();
}
