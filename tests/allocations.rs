//! Calls that succeed at once allocate nothing, through each layer and through the whole
//! stack: counted by an instrumented global allocator.
//!
//! The allocator counts for the whole process, so this file holds a single test (the test
//! harness runs the tests of one file in parallel threads of one process).

use std::alloc::System;
use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use staunch::bulkhead::{Bulkhead, BulkheadLayer};
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
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

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .attempt_timeout(Duration::from_secs(1))
        .max_total_time(Duration::from_secs(3))
        .build()
        .unwrap()
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
    let region = Region::new(GLOBAL);
    for i in 0..1000 {
        assert_eq!(call_now(&mut svc, i), i);
    }
    region.change().allocations
}

#[test]
fn calls_that_succeed_at_once_allocate_nothing() {
    // Timers need a runtime context; none is armed on this path.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _ctx = rt.enter();

    let cases: [(&str, usize); 5] = [
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
