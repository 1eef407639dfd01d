//! Calls allocate nothing, through each layer and through the whole stack, whether they
//! succeed at once or pend once first (timers armed): counted by an instrumented global
//! allocator.
//!
//! The allocator counts for the whole process, so this file holds a single test (the test
//! harness runs the tests of one file in parallel threads of one process). Even so, the
//! harness's main thread may still be allocating (its bookkeeping of the test it just started)
//! while the test counts: each count is the least of three rounds. An allocation the calls
//! make shows in every round.

use std::alloc::System;
use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use staunch::bulkhead::{Bulkhead, BulkheadLayer};
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use staunch::rate_limit::{KeyedRateLimitLayer, RateLimitLayer, RateLimiter};
use staunch::retry::{RetryLayer, RetryPolicy};
use staunch::timeout::{TimeLimit, TimeoutLayer};
use tower::{Layer, Service, ServiceBuilder};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

use staunch::BoxError;

fn bare() -> impl Service<u64, Response = u64, Error = BoxError> + Clone + Send + 'static {
    tower::service_fn(|x: u64| ready(Ok::<u64, BoxError>(x)))
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder("alloc").build().unwrap()
}

fn bulkhead() -> Bulkhead {
    Bulkhead::builder("alloc")
        .max_concurrent(8)
        .build()
        .unwrap()
}

/// A limiter whose permit is always free: the path every call takes while under the rate.
fn limiter() -> RateLimiter {
    RateLimiter::builder("alloc")
        .per_second(1e9)
        .burst(1_000_000)
        .build()
        .unwrap()
}

/// The same, one limit per key (four keys, so the map is looked up, never grown, after the
/// first round).
fn keyed() -> KeyedRateLimitLayer<u64, fn(&u64) -> u64> {
    let limiter = RateLimiter::builder("alloc-keyed")
        .per_second(1e9)
        .burst(1_000_000)
        .build_keyed()
        .unwrap();
    KeyedRateLimitLayer::new(limiter, |req: &u64| req % 4)
}

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .attempt_timeout(Duration::from_secs(1))
        .max_total_time(Duration::from_secs(3))
        .build()
        .unwrap()
}

/// A service whose futures pend once (waking themselves), then answer: as a network call.
fn bare_pending() -> impl Service<u64, Response = u64, Error = BoxError> + Clone + Send + 'static {
    tower::service_fn(|x: u64| PendOnce {
        value: x,
        pended: false,
    })
}

struct PendOnce {
    value: u64,
    pended: bool,
}

impl Future for PendOnce {
    type Output = Result<u64, BoxError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.pended {
            return Poll::Ready(Ok(self.value));
        }
        self.pended = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The allocations `round` makes, counted three times: the least of the three (see the
/// module docs).
fn least_of_three_rounds(mut round: impl FnMut()) -> usize {
    (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            round();
            region.change().allocations
        })
        .min()
        .unwrap_or(usize::MAX)
}

/// Polls `svc` ready, calls it, and polls the response twice: pending, then ready.
fn call_pending<S: Service<u64, Response = u64>>(svc: &mut S, req: u64) -> u64
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = pin!(svc.call(req));
    assert!(fut.as_mut().poll(&mut cx).is_pending(), "ready at once");
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(res)) => res,
        other => panic!("not ready on the second poll: {other:?}"),
    }
}

/// Allocations made by 1000 calls that pend once, after 500 calls of warm-up (the timer's
/// first driver, its table and heap reach their steady size).
fn allocations_per_1000_pending_calls<S: Service<u64, Response = u64>>(mut svc: S) -> usize
where
    S::Error: std::fmt::Debug,
{
    for i in 0..500 {
        assert_eq!(call_pending(&mut svc, i), i);
    }
    least_of_three_rounds(|| {
        for i in 0..1000 {
            assert_eq!(call_pending(&mut svc, i), i);
        }
    })
}

/// Polls `svc` ready, calls it, and polls the response once: it must be ready.
fn call_now<S: Service<u64, Response = u64>>(svc: &mut S, req: u64) -> u64
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = pin!(svc.call(req));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(res)) => res,
        other => panic!("not ready at once: {other:?}"),
    }
}

/// Allocations made by 1000 calls through `svc`, after 10 calls of warm-up (the first call on
/// a thread sets up its thread-locals).
fn allocations_per_1000_calls<S: Service<u64, Response = u64>>(mut svc: S) -> usize
where
    S::Error: std::fmt::Debug,
{
    for i in 0..10 {
        assert_eq!(call_now(&mut svc, i), i);
    }
    least_of_three_rounds(|| {
        for i in 0..1000 {
            assert_eq!(call_now(&mut svc, i), i);
        }
    })
}

#[test]
fn calls_allocate_nothing_whether_ready_at_once_or_pending_once() {
    // Timers need a runtime context; none is armed on the first path.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _ctx = rt.enter();

    let cases: [(&str, usize); 7] = [
        (
            "rate limiter",
            allocations_per_1000_calls(RateLimitLayer::new(limiter()).layer(bare())),
        ),
        (
            "keyed rate limiter",
            allocations_per_1000_calls(keyed().layer(bare())),
        ),
        (
            "circuit breaker",
            allocations_per_1000_calls(CircuitBreakerLayer::new(breaker()).layer(bare())),
        ),
        (
            "bulkhead",
            allocations_per_1000_calls(BulkheadLayer::new(bulkhead()).layer(bare())),
        ),
        (
            "timeout",
            allocations_per_1000_calls(
                TimeoutLayer::from_limit(TimeLimit::new(Duration::from_secs(1)).unwrap())
                    .ignore_request()
                    .layer(bare()),
            ),
        ),
        (
            "retry",
            allocations_per_1000_calls(RetryLayer::new(policy()).layer(bare())),
        ),
        (
            "all four stacked",
            allocations_per_1000_calls(
                ServiceBuilder::new()
                    .layer(RetryLayer::new(policy()))
                    .layer(CircuitBreakerLayer::new(breaker()))
                    .layer(
                        TimeoutLayer::from_limit(TimeLimit::new(Duration::from_secs(1)).unwrap())
                            .ignore_request(),
                    )
                    .layer(BulkheadLayer::new(bulkhead()))
                    .service(bare()),
            ),
        ),
    ];
    for (layer, allocations) in cases {
        assert_eq!(allocations, 0, "{layer}: allocations in 1000 calls");
    }

    // Calls that pend once: the timeout's timer entry, the retry's timers, the whole stack as
    // the presets build it (one timer per call) and with a retry that times attempts itself.
    let limit = TimeLimit::new(Duration::from_secs(1)).unwrap();
    let cut = RetryPolicy::builder()
        .max_total_time(Duration::from_secs(3))
        .attempts_cut_by(Duration::from_secs(1))
        .build()
        .unwrap();
    let stack = |policy: RetryPolicy| {
        ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .layer(CircuitBreakerLayer::new(breaker()))
            .layer(TimeoutLayer::from_limit(limit.clone()).ignore_request())
            .layer(BulkheadLayer::new(bulkhead()))
            .service(bare_pending())
    };
    let pending: [(&str, usize); 8] = [
        (
            "rate limiter",
            allocations_per_1000_pending_calls(
                RateLimitLayer::new(limiter()).layer(bare_pending()),
            ),
        ),
        (
            "keyed rate limiter",
            allocations_per_1000_pending_calls(keyed().layer(bare_pending())),
        ),
        (
            "circuit breaker",
            allocations_per_1000_pending_calls(
                CircuitBreakerLayer::new(breaker()).layer(bare_pending()),
            ),
        ),
        (
            "bulkhead",
            allocations_per_1000_pending_calls(
                BulkheadLayer::new(bulkhead()).layer(bare_pending()),
            ),
        ),
        (
            "timeout",
            allocations_per_1000_pending_calls(
                TimeoutLayer::from_limit(limit.clone())
                    .ignore_request()
                    .layer(bare_pending()),
            ),
        ),
        (
            "retry",
            allocations_per_1000_pending_calls(RetryLayer::new(policy()).layer(bare_pending())),
        ),
        (
            "all four stacked, one timer",
            allocations_per_1000_pending_calls(stack(cut)),
        ),
        (
            "all four stacked, retry timing attempts too",
            allocations_per_1000_pending_calls(stack(policy())),
        ),
    ];
    for (layer, allocations) in pending {
        assert_eq!(allocations, 0, "{layer}: allocations in 1000 pending calls");
    }
    // Every call let go of its timer entry.
    assert_eq!(limit.waiting(), 0);

    // The counter works: a call that boxes its error allocates.
    let failing = tower::service_fn(|_: u64| ready(Err::<u64, BoxError>("no".into())));
    let mut svc = CircuitBreakerLayer::new(breaker()).layer(failing);
    let region = Region::new(GLOBAL);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut = pin!(svc.call(1));
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Err(_))));
    assert!(region.change().allocations > 0);
}
