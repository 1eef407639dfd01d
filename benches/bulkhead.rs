//! Per-call overhead of the layer over a bare `service_fn`, side by side with peer crates.
//! Groups: `uncontended` (1 task) and `contended` (2 tasks on 2 threads sharing one layer).
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

fn staunch_partitioned() -> impl Service<u64, Error = support::BoxError> + Clone + Send + 'static {
    let partitions = PartitionedBulkhead::builder("bench")
        .partition(0u8, PERMITS)
        .build()
        .expect("valid partitioned bulkhead");
    PartitionedBulkheadLayer::new(partitions, |_: &u64| 0u8).layer(support::bare())
}

fn semaphore() -> SemaphoreService<
    impl Service<u64, Future: Unpin, Error = support::BoxError> + Clone + Send + 'static,
> {
    SemaphoreService {
        inner: support::bare(),
        semaphore: Arc::new(Semaphore::new(PERMITS)),
    }
}

fn tower_limit() -> impl Service<u64, Error = support::BoxError> + Clone + Send + 'static {
    tower::limit::ConcurrencyLimitLayer::new(PERMITS).layer(support::bare())
}

fn tower_resilience() -> impl Service<u64, Error: std::fmt::Debug> + Clone + Send + 'static {
    tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(PERMITS)
        .reject_when_full()
        .build()
        .expect("valid tower-resilience bulkhead")
        .layer(support::bare())
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

    let mut group = c.benchmark_group("uncontended");
    support::uncontended(&mut group, &rt, "bare service_fn", support::bare());
    {
        let _ctx = rt.enter();
        support::uncontended(
            &mut group,
            &rt,
            "staunch bulkhead",
            staunch_layer(Duration::ZERO).layer(support::bare()),
        );
        support::uncontended(
            &mut group,
            &rt,
            "staunch bulkhead, max_wait 10ms",
            staunch_layer(Duration::from_millis(10)).layer(support::bare()),
        );
        support::uncontended(
            &mut group,
            &rt,
            "staunch partitioned bulkhead",
            staunch_partitioned(),
        );
        support::uncontended(
            &mut group,
            &rt,
            "tokio Semaphore try_acquire_owned",
            semaphore(),
        );
        support::uncontended(&mut group, &rt, "tower ConcurrencyLimit", tower_limit());
        support::uncontended(
            &mut group,
            &rt,
            "tower-resilience bulkhead",
            tower_resilience(),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("contended");
    support::contended(&mut group, &rt, "bare service_fn", support::bare());
    {
        let _ctx = rt.enter();
        support::contended(
            &mut group,
            &rt,
            "staunch bulkhead",
            staunch_layer(Duration::ZERO).layer(support::bare()),
        );
        support::contended(
            &mut group,
            &rt,
            "staunch bulkhead, max_wait 10ms",
            staunch_layer(Duration::from_millis(10)).layer(support::bare()),
        );
        support::contended(
            &mut group,
            &rt,
            "staunch partitioned bulkhead",
            staunch_partitioned(),
        );
        support::contended(
            &mut group,
            &rt,
            "tokio Semaphore try_acquire_owned",
            semaphore(),
        );
        support::contended(&mut group, &rt, "tower ConcurrencyLimit", tower_limit());
        support::contended(
            &mut group,
            &rt,
            "tower-resilience bulkhead",
            tower_resilience(),
        );
    }
    group.finish();
}

criterion_group!(name = group; config = Criterion::default(); targets = benches, engine_direct);
criterion_main!(group);
