//! Per-call overhead of staunch's retry layer over a bare `service_fn` when the first attempt
//! succeeds at once, side by side with tower's `Retry` (with a no-op policy, and with tower's
//! own retry budget like staunch's default) and tower-resilience's retry.
//! Groups: `uncontended` (1 task) and `contended` (2 tasks on 2 threads sharing one layer).
//! Timeouts are benched in `benches/timeout.rs`.

mod support;

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use staunch::retry::{RetryBudget, RetryLayer, RetryPolicy};
use support::BoxError;
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

fn staunch_default() -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    // The defaults: 3 attempts, jittered exponential backoff, a 20% budget.
    RetryLayer::new(RetryPolicy::builder().build().expect("valid policy")).layer(support::bare())
}

fn staunch_timeouts() -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    // With a per-attempt timeout and an overall deadline: no timer is armed when the
    // attempt is ready at once.
    let policy = RetryPolicy::builder()
        .attempt_timeout(Duration::from_secs(1))
        .max_total_time(Duration::from_secs(3))
        .build()
        .expect("valid policy");
    RetryLayer::new(policy).layer(support::bare())
}

fn staunch_unlimited() -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .build()
        .expect("valid policy");
    RetryLayer::new(policy).layer(support::bare())
}

fn tower_retry() -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    tower::retry::RetryLayer::new(TowerRetryErrors(2)).layer(support::bare())
}

fn tower_retry_budget() -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    tower::retry::RetryLayer::new(TowerRetryBudget { budget, left: 2 }).layer(support::bare())
}

fn tower_resilience() -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build()
        .layer(support::bare())
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();

    let mut group = c.benchmark_group("uncontended");
    support::uncontended(&mut group, &rt, "bare service_fn", support::bare());
    support::uncontended(&mut group, &rt, "staunch retry", staunch_default());
    support::uncontended(
        &mut group,
        &rt,
        "staunch retry (timeouts)",
        staunch_timeouts(),
    );
    support::uncontended(
        &mut group,
        &rt,
        "staunch retry (no budget)",
        staunch_unlimited(),
    );
    support::uncontended(&mut group, &rt, "tower retry", tower_retry());
    support::uncontended(
        &mut group,
        &rt,
        "tower retry (TpsBudget)",
        tower_retry_budget(),
    );
    support::uncontended(
        &mut group,
        &rt,
        "tower-resilience retry",
        tower_resilience(),
    );
    group.finish();

    let mut group = c.benchmark_group("contended");
    support::contended(&mut group, &rt, "bare service_fn", support::bare());
    support::contended(&mut group, &rt, "staunch retry", staunch_default());
    support::contended(
        &mut group,
        &rt,
        "staunch retry (timeouts)",
        staunch_timeouts(),
    );
    support::contended(
        &mut group,
        &rt,
        "staunch retry (no budget)",
        staunch_unlimited(),
    );
    support::contended(&mut group, &rt, "tower retry", tower_retry());
    support::contended(
        &mut group,
        &rt,
        "tower retry (TpsBudget)",
        tower_retry_budget(),
    );
    support::contended(
        &mut group,
        &rt,
        "tower-resilience retry",
        tower_resilience(),
    );
    group.finish();
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
