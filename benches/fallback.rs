//! Per-call overhead of the fallback layer when no fallback is needed (the primary answers),
//! over a bare service, side by side with staunch's circuit breaker on its success path (the
//! fallback's target) and tower-resilience's fallback, in the groups of `support::bench_rows!`.
//!
//! Rows: the staunch fallback with a value answer and rejection/error rules only; the same
//! with a response rule (checked on every response); the same answering with a backup
//! service (each call keeps a clone of its request); tower-resilience's `FallbackLayer::value`
//! (which boxes every call).

mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use staunch::fallback::{Answer, FallbackLayer, FallbackPolicy};
use support::{Bare, BoxError};
use tower::{Layer, Service};

fn staunch_fallback(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let policy = FallbackPolicy::builder("bench")
        .on_any_error()
        .build()
        .expect("valid config");
    FallbackLayer::new(policy, Answer::value(0)).layer(inner)
}

fn staunch_fallback_response_rule(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let policy = FallbackPolicy::builder("bench")
        .on_any_error()
        .on_response(|n: &u64| *n == u64::MAX)
        .build()
        .expect("valid config");
    FallbackLayer::new(policy, Answer::value(0)).layer(inner)
}

fn staunch_fallback_backup(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let policy = FallbackPolicy::builder("bench")
        .on_any_error()
        .build()
        .expect("valid config");
    FallbackLayer::service(policy, support::bare()).layer(inner)
}

fn tower_resilience(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    tower_resilience::fallback::FallbackLayer::<u64, u64, BoxError>::value(0).layer(inner)
}

fn breaker(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = CircuitBreaker::builder("bench")
        .build()
        .expect("valid config");
    CircuitBreakerLayer::new(breaker).layer(inner)
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    bench_rows!(c, &rt, {
        "staunch fallback" => staunch_fallback,
        "staunch fallback, response rule" => staunch_fallback_response_rule,
        "staunch fallback, backup service" => staunch_fallback_backup,
        "tower-resilience fallback" => tower_resilience,
        "staunch circuit breaker (reference)" => breaker,
    });
}

criterion_group!(fallback, benches);
criterion_main!(fallback);
