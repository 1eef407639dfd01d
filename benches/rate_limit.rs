//! Per-call overhead of the rate limiter on its permit-free path (a rate no bench reaches),
//! over a bare service, side by side with `governor` (behind a `service_fn`), tower's
//! `RateLimit`, and staunch's circuit breaker (its success path is the limiter's target), in
//! the groups of `support::bench_rows!`.
//!
//! tower's `RateLimit` is not `Clone` (each service has its own bucket), so it has its own
//! groups, `tower uncontended` and `tower pending`, with the bare service beside it.

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use staunch::rate_limit::{RateLimitLayer, RateLimiter};
use support::Bare;
use tower::{Layer, Service};

/// Far more permits than any bench takes: every call finds one free.
const RATE: u32 = 1_000_000_000;

fn staunch_limiter(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let limiter = RateLimiter::builder("bench")
        .rate(RATE, Duration::from_secs(1))
        .build()
        .expect("valid config");
    RateLimitLayer::new(limiter).layer(inner)
}

fn governor(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let quota = governor::Quota::per_second(NonZeroU32::new(RATE).expect("non-zero"));
    let limiter = Arc::new(governor::RateLimiter::direct(quota));
    tower::service_fn(move |x: u64| {
        let admitted = limiter.check().is_ok();
        let answer = inner.answer(x);
        async move {
            if admitted {
                answer.await
            } else {
                Err("rate limited".into())
            }
        }
    })
}

fn breaker(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = CircuitBreaker::builder("bench")
        .build()
        .expect("valid config");
    CircuitBreakerLayer::new(breaker).layer(inner)
}

fn tower_rate_limit(inner: Bare) -> tower::limit::RateLimit<Bare> {
    tower::limit::RateLimitLayer::new(u64::from(RATE), Duration::from_secs(1)).layer(inner)
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    bench_rows!(c, &rt, {
        "staunch rate limiter" => staunch_limiter,
        "governor" => governor,
        "staunch circuit breaker (reference)" => breaker,
    });
    let _ctx = rt.enter();
    let mut group = c.benchmark_group("tower uncontended");
    support::uncontended(&mut group, &rt, "bare service", support::bare());
    support::uncontended(
        &mut group,
        &rt,
        "tower RateLimit",
        tower_rate_limit(support::bare()),
    );
    group.finish();
    let mut group = c.benchmark_group("tower pending");
    support::uncontended(&mut group, &rt, "bare service", support::bare_pending());
    support::uncontended(
        &mut group,
        &rt,
        "tower RateLimit",
        tower_rate_limit(support::bare_pending()),
    );
    group.finish();
}

criterion_group!(rate_limit, benches);
criterion_main!(rate_limit);
