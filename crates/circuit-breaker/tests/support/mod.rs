//! Helpers shared by the circuit breaker's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use staunch_circuit_breaker::{CircuitBreaker, Event, State};
use tokio::sync::broadcast;

/// Records `n` successes through permits.
pub fn succeed(breaker: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        breaker.try_acquire().expect("call admitted").success();
    }
}

/// Records `n` failures through permits.
pub fn fail(breaker: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        breaker.try_acquire().expect("call admitted").failure();
    }
}

/// Makes one call that takes `took` (paused time) and records `outcome`.
pub async fn timed_call(breaker: &CircuitBreaker, took: Duration, success: bool) {
    let permit = breaker.try_acquire().expect("call admitted");
    tokio::time::advance(took).await;
    if success {
        permit.success();
    } else {
        permit.failure();
    }
}

/// The transitions received so far, as `(from, to)`.
pub fn transitions(rx: &mut broadcast::Receiver<Event>) -> Vec<(State, State)> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let Event::StateChanged { from, to, .. } = event {
            out.push((from, to));
        }
    }
    out
}

/// Lets spawned timer tasks run after a clock advance.
pub async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}
