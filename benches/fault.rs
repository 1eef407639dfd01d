//! Per-call cost of the fault injection layer while disabled (the cost a production stack
//! pays for keeping it in place), over a bare service, beside staunch's circuit breaker on
//! its success path, in the groups of `support::bench_rows!`. The target: at most 5 ns over
//! the bare service.
//!
//! The "empty" row is an enabled injector whose configuration injects nothing (the `none`
//! preset): the same single atomic load.

mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use staunch::fault::{FaultConfig, FaultLayer};
use support::Bare;
use tower::{Layer, Service};

fn disabled(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let injector = FaultConfig::intermittent()
        .build("bench")
        .expect("valid config");
    injector.disable();
    FaultLayer::new(injector).layer(inner)
}

fn empty(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> + Clone + Send + 'static {
    let injector = FaultConfig::none().build("bench").expect("valid config");
    FaultLayer::new(injector).layer(inner)
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
        "staunch fault injector (disabled)" => disabled,
        "staunch fault injector (none preset)" => empty,
        "staunch circuit breaker (reference)" => breaker,
    });
}

criterion_group!(fault, benches);
criterion_main!(fault);
