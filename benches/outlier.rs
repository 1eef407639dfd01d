//! Per-call cost of balancing over three in-process endpoints, staunch's `Balancer`
//! (power of two choices on calls in flight, every outcome recorded by the outlier
//! detector) beside tower's `balance::p2c::Balance` over the same endpoints (a
//! `ServiceList` of `PendingRequests`, no outlier detection), on the ready-at-once
//! (`uncontended`) and pending-once (`pending`) paths of `support`.
//!
//! tower's `Balance` is one handle (not `Clone`), so the `contended` and `alternating`
//! groups of `support::bench_rows!` do not apply to it; staunch's balancer is measured in
//! `contended` on its own (two threads sharing its endpoints and detector).
//!
//! Rows: the bare service (one endpoint, no balancing); `staunch Balancer` over 3 endpoints;
//! `tower p2c Balance` over 3 endpoints.

mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use staunch::outlier::Balancer;
use support::Bare;
use tower::Service;
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};

const ENDPOINTS: usize = 3;

fn staunch_balancer(
    inner: Bare,
) -> impl Service<u64, Response = u64, Error = support::BoxError> + Clone + Send + 'static {
    Balancer::builder("bench")
        .endpoints((0..ENDPOINTS).map(|i| (i, inner)))
        .seed(1)
        .build()
        .expect("valid balancer")
}

fn tower_p2c(inner: Bare) -> impl Service<u64, Response = u64, Error = support::BoxError> {
    let endpoints = (0..ENDPOINTS)
        .map(|_| PendingRequests::new(inner, CompleteOnResponse::default()))
        .collect::<Vec<_>>();
    Balance::new(ServiceList::new(endpoints))
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    let _ctx = rt.enter();
    for (group, inner) in [
        ("uncontended", support::bare as fn() -> Bare),
        ("pending", support::bare_pending),
    ] {
        let mut g = c.benchmark_group(group);
        support::uncontended(&mut g, &rt, "bare service", inner());
        support::uncontended(
            &mut g,
            &rt,
            "staunch Balancer (3 endpoints)",
            staunch_balancer(inner()),
        );
        support::uncontended(
            &mut g,
            &rt,
            "tower p2c Balance (3 endpoints)",
            tower_p2c(inner()),
        );
        g.finish();
    }
    let mut g = c.benchmark_group("contended");
    support::contended(&mut g, &rt, "bare service", support::bare());
    support::contended(
        &mut g,
        &rt,
        "staunch Balancer (3 endpoints)",
        staunch_balancer(support::bare()),
    );
    g.finish();
}

criterion_group!(outlier, benches);
criterion_main!(outlier);
