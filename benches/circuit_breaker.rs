//! Per-call overhead of the layer over a bare `service_fn`, side by side with peer crates.
//! Groups: `uncontended` (1 task) and `contended` (2 tasks on 2 threads sharing one layer).
//!
//! Every case is a closed breaker whose calls succeed, built once outside the timed loop.
//! Peers: tower-resilience's circuit breaker (a tower layer), failsafe and recloser (future
//! wrappers, put behind a `service_fn` exactly like the bare baseline).

mod support;

use std::future::ready;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::futures::CircuitBreaker as _;
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use support::BoxError;
use tower::{Layer, Service};

fn staunch_default()
-> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = CircuitBreaker::builder("bench")
        .build()
        .expect("valid config");
    CircuitBreakerLayer::new(breaker).layer(support::bare())
}

/// With a slow-call threshold: the clock is read at the start and the end of each call.
fn staunch_slow_calls()
-> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = CircuitBreaker::builder("bench")
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .expect("valid config");
    CircuitBreakerLayer::new(breaker).layer(support::bare())
}

/// A time-based window: the clock is read once per call to find the bucket.
fn staunch_time_window()
-> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = CircuitBreaker::builder("bench")
        .time_window(Duration::from_secs(10), 10)
        .build()
        .expect("valid config");
    CircuitBreakerLayer::new(breaker).layer(support::bare())
}

fn tower_resilience()
-> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("valid config");
    layer.layer(support::bare())
}

fn failsafe()
-> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = failsafe::Config::new().build();
    tower::service_fn(move |x: u64| breaker.call(ready(Ok::<u64, BoxError>(x))))
}

fn recloser()
-> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let breaker = recloser::AsyncRecloser::from(recloser::Recloser::default());
    tower::service_fn(move |x: u64| breaker.call(ready(Ok::<u64, BoxError>(x))))
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();

    let mut group = c.benchmark_group("uncontended");
    support::uncontended(&mut group, &rt, "bare service_fn", support::bare());
    support::uncontended(&mut group, &rt, "staunch", staunch_default());
    support::uncontended(
        &mut group,
        &rt,
        "staunch (slow-call timing)",
        staunch_slow_calls(),
    );
    support::uncontended(
        &mut group,
        &rt,
        "staunch (time window)",
        staunch_time_window(),
    );
    support::uncontended(&mut group, &rt, "tower-resilience", tower_resilience());
    support::uncontended(&mut group, &rt, "failsafe", failsafe());
    support::uncontended(&mut group, &rt, "recloser", recloser());
    group.finish();

    let mut group = c.benchmark_group("contended");
    support::contended(&mut group, &rt, "bare service_fn", support::bare());
    support::contended(&mut group, &rt, "staunch", staunch_default());
    support::contended(
        &mut group,
        &rt,
        "staunch (slow-call timing)",
        staunch_slow_calls(),
    );
    support::contended(
        &mut group,
        &rt,
        "staunch (time window)",
        staunch_time_window(),
    );
    support::contended_spin(&mut group, &rt, "tower-resilience", tower_resilience());
    support::contended(&mut group, &rt, "failsafe", failsafe());
    support::contended(&mut group, &rt, "recloser", recloser());
    group.finish();
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
