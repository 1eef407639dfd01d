//! Per-call cost of the full stack on the success path: retry, circuit breaker, per-attempt
//! timeout and bulkhead over a bare service, side by side with the same stack from
//! tower-resilience and with tower's own layers where they exist (tower has no circuit breaker:
//! retry, timeout, concurrency limit), in the groups of `support::bench_rows!` (`uncontended`,
//! `contended`, `pending`: the inner future pends once, so timers are armed, `alternating`).

mod support;

use std::future::{Ready, ready};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use staunch::bulkhead::{Bulkhead, BulkheadLayer};
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use staunch::retry::{RetryLayer, RetryPolicy};
use staunch::timeout::{TimeLimit, TimeoutLayer};
use support::{Bare, BoxError};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const PERMITS: usize = 1024;
const LIMIT: Duration = Duration::from_secs(1);

/// The staunch stack, in the order the presets use: retry outside the breaker, the
/// per-attempt timeout inside it, the bulkhead innermost; as in the presets, the retry knows
/// the attempt limit inside it (`attempts_cut_by`), so a call that pends arms one timer.
/// Default settings otherwise.
fn staunch_stack(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = BoxError> + Clone + Send + 'static {
    ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryPolicy::builder()
                .max_total_time(Duration::from_secs(3))
                .attempts_cut_by(LIMIT)
                .build()
                .expect("valid policy"),
        ))
        .layer(CircuitBreakerLayer::new(
            CircuitBreaker::builder("bench")
                .build()
                .expect("valid breaker"),
        ))
        .layer(
            TimeoutLayer::from_limit(TimeLimit::new(LIMIT).expect("valid limit")).ignore_request(),
        )
        .layer(BulkheadLayer::new(
            Bulkhead::builder("bench")
                .max_concurrent(PERMITS)
                .build()
                .expect("valid bulkhead"),
        ))
        .service(inner)
}

/// The same stack under [`TypedErrorsLayer`](staunch::TypedErrorsLayer), as the HTTP preset builds it:
/// errors typed as `staunch::Error<E>`.
fn staunch_typed(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    ServiceBuilder::new()
        .layer(staunch::TypedErrorsLayer::<std::io::Error>::new())
        .service(staunch_stack(inner))
}

/// A tower retry policy that retries errors up to twice: only its success path runs here.
#[derive(Clone)]
struct TowerRetryErrors(usize);

impl tower::retry::Policy<u64, u64, BoxError> for TowerRetryErrors {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, BoxError>) -> Option<Ready<()>> {
        if result.is_err() && self.0 > 0 {
            self.0 -= 1;
            Some(ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// tower's own layers: retry, timeout, concurrency limit (no circuit breaker in tower).
fn tower_stack(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(TowerRetryErrors(2)))
        .layer(tower::timeout::TimeoutLayer::new(LIMIT))
        .layer(tower::limit::ConcurrencyLimitLayer::new(PERMITS))
        .service(inner)
        .map_err(Into::<BoxError>::into)
}

/// tower-resilience's retry, circuit breaker, time limiter and bulkhead, in the same order.
fn tower_resilience_stack(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    let bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(PERMITS)
        .reject_when_full()
        .build()
        .expect("valid bulkhead")
        .layer(inner)
        .map_err(|e| -> BoxError { Box::new(e) });
    let limited = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(LIMIT)
        .build()
        .layer(bulkhead)
        .map_err(|e| -> BoxError { Box::new(e) });
    let breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker")
        .layer(limited)
        .map_err(|e| -> BoxError { Box::new(e) });
    tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build()
        .layer(breaker)
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    bench_rows!(c, &rt, {
        "staunch stack" => staunch_stack,
        "staunch stack (typed errors)" => staunch_typed,
        "tower stack (no breaker)" => tower_stack,
        "tower-resilience stack" => tower_resilience_stack,
    });
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
