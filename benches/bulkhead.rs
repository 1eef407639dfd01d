//! Per-call overhead of the layer over a bare service, side by side with peer crates, in the
//! groups of `support::bench_rows!` (`uncontended`, `contended`, `pending`: the permit is held
//! across a pending poll, `alternating`: one task, two bulkheads in turn).
//!
//! Every bulkhead has far more permits than callers, so each case measures the cost of taking
//! and giving back a free permit:
//! - `staunch bulkhead`: fail fast (the default);
//! - `staunch bulkhead, max_wait 10ms`: waiting enabled (the fast path must not touch a timer);
//! - `staunch partitioned bulkhead`: one configured key, no global cap (a key lookup per call);
//! - `staunch Bulkhead::try_acquire` (engine without tower, measured directly);
//! - `tokio Semaphore try_acquire_owned`: the permit wrapped around the call as a service;
//! - `tower ConcurrencyLimit`;
//! - `tower-resilience bulkhead`: rejecting when full (its fail-fast mode).

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use staunch::bulkhead::{Bulkhead, PartitionedBulkhead, PartitionedBulkheadLayer};
use support::Bare;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

const PERMITS: usize = 1024;

/// tokio's semaphore as the thinnest possible bulkhead: `try_acquire_owned` per call, the
/// permit held by the response future.
#[derive(Clone)]
struct SemaphoreService<S> {
    inner: S,
    semaphore: Arc<Semaphore>,
}

struct SemaphoreFuture<F> {
    future: F,
    _permit: OwnedSemaphorePermit,
}

impl<F: Future + Unpin> Future for SemaphoreFuture<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.future).poll(cx)
    }
}

impl<S: Service<u64>> Service<u64> for SemaphoreService<S>
where
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = SemaphoreFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: u64) -> Self::Future {
        let permit = Arc::clone(&self.semaphore)
            .try_acquire_owned()
            .expect("semaphore has free permits");
        SemaphoreFuture {
            future: self.inner.call(req),
            _permit: permit,
        }
    }
}

fn staunch_layer(max_wait: Duration) -> staunch::bulkhead::BulkheadLayer {
    Bulkhead::builder("bench")
        .max_concurrent(PERMITS)
        .max_wait(max_wait)
        .build()
        .expect("valid bulkhead")
        .layer()
}

fn staunch_partitioned(
    inner: Bare,
) -> impl Service<u64, Error = support::BoxError> + Clone + Send + 'static {
    let partitions = PartitionedBulkhead::builder("bench")
        .partition(0u8, PERMITS)
        .build()
        .expect("valid partitioned bulkhead");
    PartitionedBulkheadLayer::new(partitions, |_: &u64| 0u8).layer(inner)
}

fn semaphore(inner: Bare) -> SemaphoreService<Bare> {
    SemaphoreService {
        inner,
        semaphore: Arc::new(Semaphore::new(PERMITS)),
    }
}

fn tower_limit(
    inner: Bare,
) -> impl Service<u64, Error = support::BoxError> + Clone + Send + 'static {
    tower::limit::ConcurrencyLimitLayer::new(PERMITS).layer(inner)
}

fn tower_resilience(
    inner: Bare,
) -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(PERMITS)
        .reject_when_full()
        .build()
        .expect("valid tower-resilience bulkhead")
        .layer(inner)
}

fn engine_direct(c: &mut Criterion) {
    let rt = support::runtime();
    let bulkhead = Bulkhead::builder("bench")
        .max_concurrent(PERMITS)
        .build()
        .expect("valid bulkhead");
    let _ctx = rt.enter();
    let mut group = c.benchmark_group("uncontended");
    group.bench_function(
        BenchmarkId::from_parameter("staunch Bulkhead::try_acquire"),
        |b| b.iter(|| drop(std::hint::black_box(bulkhead.try_acquire()))),
    );
    group.bench_function(
        BenchmarkId::from_parameter("tokio Semaphore::try_acquire"),
        |b| {
            let semaphore = Semaphore::new(PERMITS);
            b.iter(|| drop(std::hint::black_box(semaphore.try_acquire())));
        },
    );
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    bench_rows!(c, &rt, {
        "staunch bulkhead" => |inner| staunch_layer(Duration::ZERO).layer(inner),
        "staunch bulkhead, max_wait 10ms" => |inner| staunch_layer(Duration::from_millis(10)).layer(inner),
        "staunch partitioned bulkhead" => staunch_partitioned,
        "tokio Semaphore try_acquire_owned" => semaphore,
        "tower ConcurrencyLimit" => tower_limit,
        "tower-resilience bulkhead" => tower_resilience,
    });
}

criterion_group!(name = group; config = Criterion::default(); targets = benches, engine_direct);
criterion_main!(group);
