//! Per-call overhead of staunch's retry layer over a bare service when the first attempt
//! succeeds, side by side with tower's `Retry` (with a no-op policy, and with tower's own retry
//! budget like staunch's default) and tower-resilience's retry, in the groups of
//! `support::bench_rows!` (`uncontended`, `contended`, `pending`: the attempt pends once, so
//! the retry timers are armed, `alternating`).
//! Timeouts are benched in `benches/timeout.rs`.

mod support;

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use staunch::retry::{RetryBudget, RetryLayer, RetryPolicy};
use support::{Bare, BoxError};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service};

/// A tower policy that retries errors up to twice: only its success path runs here.
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

/// tower's `Retry` with tower's own retry budget, the like-for-like peer of staunch's default
/// (which always keeps a budget): the policy holds an `Arc<TpsBudget>`, deposits for each
/// request that succeeds and withdraws before a retry.
#[derive(Clone)]
struct TowerRetryBudget {
    budget: Arc<TpsBudget>,
    left: usize,
}

impl tower::retry::Policy<u64, u64, BoxError> for TowerRetryBudget {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, BoxError>) -> Option<Ready<()>> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) if self.left > 0 && self.budget.withdraw() => {
                self.left -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn staunch_default(
    inner: Bare,
) -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    // The defaults: 3 attempts, jittered exponential backoff, a 20% budget.
    RetryLayer::new(RetryPolicy::builder().build().expect("valid policy")).layer(inner)
}

fn staunch_timeouts(
    inner: Bare,
) -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    // With a per-attempt timeout and an overall deadline: no timer is armed when the
    // attempt is ready at once.
    let policy = RetryPolicy::builder()
        .attempt_timeout(Duration::from_secs(1))
        .max_total_time(Duration::from_secs(3))
        .build()
        .expect("valid policy");
    RetryLayer::new(policy).layer(inner)
}

fn staunch_unlimited(
    inner: Bare,
) -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .build()
        .expect("valid policy");
    RetryLayer::new(policy).layer(inner)
}

fn tower_retry(inner: Bare) -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    tower::retry::RetryLayer::new(TowerRetryErrors(2)).layer(inner)
}

fn tower_retry_budget(
    inner: Bare,
) -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    tower::retry::RetryLayer::new(TowerRetryBudget { budget, left: 2 }).layer(inner)
}

fn tower_resilience(
    inner: Bare,
) -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build()
        .layer(inner)
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    bench_rows!(c, &rt, {
        "staunch retry" => staunch_default,
        "staunch retry (timeouts)" => staunch_timeouts,
        "staunch retry (no budget)" => staunch_unlimited,
        "tower retry" => tower_retry,
        "tower retry (TpsBudget)" => tower_retry_budget,
        "tower-resilience retry" => tower_resilience,
    });
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
