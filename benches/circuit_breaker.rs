//! Per-call overhead of the layer over a bare service, side by side with peer crates, in the
//! groups of `support::bench_rows!`: `uncontended`, `contended`, `pending` (the inner future
//! pends once) and `alternating` (one task, two breakers in turn).
//!
//! Every case is a closed breaker whose calls succeed, built once outside the timed loop.
//! Peers: tower-resilience's circuit breaker (a tower layer), failsafe and recloser (future
//! wrappers, put behind a `service_fn` around the bare future).

mod support;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::futures::CircuitBreaker as _;
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use support::Bare;
use tower::{Layer, Service};

fn staunch_default(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = CircuitBreaker::builder("bench")
        .build()
        .expect("valid config");
    CircuitBreakerLayer::new(breaker).layer(inner)
}

/// With a slow-call threshold: the clock is read at the start and the end of each call.
fn staunch_slow_calls(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = CircuitBreaker::builder("bench")
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .expect("valid config");
    CircuitBreakerLayer::new(breaker).layer(inner)
}

/// A time-based window: the clock is read once per call to find the bucket.
fn staunch_time_window(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = CircuitBreaker::builder("bench")
        .time_window(Duration::from_secs(10), 10)
        .build()
        .expect("valid config");
    CircuitBreakerLayer::new(breaker).layer(inner)
}

fn tower_resilience(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("valid config");
    layer.layer(inner)
}

fn failsafe(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = failsafe::Config::new().build();
    tower::service_fn(move |x: u64| breaker.call(inner.answer(x)))
}

fn recloser(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = recloser::AsyncRecloser::from(recloser::Recloser::default());
    tower::service_fn(move |x: u64| breaker.call(inner.answer(x)))
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    bench_rows!(c, &rt, {
        "staunch" => staunch_default,
        "staunch (slow-call timing)" => staunch_slow_calls,
        "staunch (time window)" => staunch_time_window,
        "tower-resilience" => tower_resilience,
        "failsafe" => failsafe,
        "recloser" => recloser,
    });
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
