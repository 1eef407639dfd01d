//! Per-call overhead of the layer over a bare `service_fn`, side by side with peer crates.
//! Groups: `uncontended` (1 task) and `contended` (2 tasks on 2 threads sharing one layer).
//!
//! Every case is a closed breaker whose calls succeed, built once outside the timed loop.
//! Peers: tower-resilience's circuit breaker (a tower layer), failsafe and recloser (future
//! wrappers, put behind a `service_fn` exactly like the bare baseline).

mod support;

use std::future::{Future, ready};
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
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

/// Like `support::call_now`, but polls again while the response is pending: tower-resilience
/// takes a `tokio::sync::Mutex` inside its response future, which is pending while the other
/// thread holds it. A future ready at once costs the same as with `call_now`.
#[inline]
fn call_spin<S>(svc: &mut S, req: u64) -> S::Response
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => break,
            Poll::Ready(Err(e)) => panic!("service failed readiness: {e:?}"),
            Poll::Pending => std::hint::spin_loop(),
        }
    }
    let mut fut = pin!(svc.call(req));
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(res)) => return res,
            Poll::Ready(Err(e)) => panic!("call failed: {e:?}"),
            Poll::Pending => std::hint::spin_loop(),
        }
    }
}

/// `support::contended` with [`call_spin`], for the peer whose futures can be pending.
fn contended_spin<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
) where
    S: Service<u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let handle = rt.handle().clone();
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter_custom(|iters| {
            let start_line = Arc::new(Barrier::new(3));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let mut svc = svc.clone();
                    let start_line = Arc::clone(&start_line);
                    let handle = handle.clone();
                    std::thread::spawn(move || {
                        let _ctx = handle.enter();
                        start_line.wait();
                        for i in 0..iters {
                            std::hint::black_box(call_spin(&mut svc, std::hint::black_box(i)));
                        }
                    })
                })
                .collect();
            start_line.wait();
            // Wall time of the two threads, as in the shared harness.
            #[allow(clippy::disallowed_types)]
            let start = std::time::Instant::now();
            for t in threads {
                t.join().expect("bench thread panicked");
            }
            start.elapsed()
        });
    });
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
    contended_spin(&mut group, &rt, "tower-resilience", tower_resilience());
    support::contended(&mut group, &rt, "failsafe", failsafe());
    support::contended(&mut group, &rt, "recloser", recloser());
    group.finish();
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
