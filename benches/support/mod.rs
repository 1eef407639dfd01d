//! Shared harness for the middleware benches: per-call cost of a tower service whose inner
//! service answers at once, measured with 1 task and with 2 tasks on 2 threads sharing one
//! layer (clones of one service), so every bench reports comparable numbers.
//!
//! Calls are driven by polling directly with a no-op waker inside a tokio runtime context, so
//! the figures contain the layer's own cost and not an executor's. Subtract the
//! `bare service_fn` case of the same run to get the overhead a layer adds.
#![allow(dead_code, clippy::disallowed_types, unreachable_pub)]

use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};
use tower::Service;

/// The error type of the bare inner service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A runtime whose context layers that need timers run in.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("benchmark runtime")
}

/// The baseline: a `service_fn` that answers at once.
pub fn bare()
-> impl Service<u64, Response = u64, Error = BoxError, Future = Ready<Result<u64, BoxError>>>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|x: u64| ready(Ok::<u64, BoxError>(x)))
}

/// Polls `svc` ready and calls it once; the response future must finish on its first poll.
#[inline]
pub fn call_now<S, R>(svc: &mut S, req: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => panic!("service failed readiness: {e:?}"),
        Poll::Pending => panic!("service not ready at once"),
    }
    let mut fut = pin!(svc.call(req));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(res)) => res,
        Poll::Ready(Err(e)) => panic!("call failed: {e:?}"),
        Poll::Pending => panic!("response not ready at once"),
    }
}

/// Like [`call_now`], but polls again while readiness or the response is pending: for peers
/// whose response futures can be pending when two threads share them (tower-resilience takes a
/// `tokio::sync::Mutex` inside its futures). A future ready at once costs the same as with
/// [`call_now`].
#[inline]
pub fn call_spin<S, R>(svc: &mut S, req: R) -> S::Response
where
    S: Service<R>,
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

/// Benchmarks one case with a single task: the group should be named `uncontended`.
pub fn uncontended<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    mut svc: S,
) where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let _ctx = rt.enter();
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = i.wrapping_add(1);
            std::hint::black_box(call_now(&mut svc, std::hint::black_box(i)))
        });
    });
}

/// Benchmarks one case with 2 tasks on 2 threads, each calling its own clone of `svc` (clones
/// share the layer's state). Reports wall time per call as each task sees it: the time for
/// both threads to make `iters` calls each, divided by `iters`. The group should be named
/// `contended`.
pub fn contended<S>(
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
        b.iter_custom(|iters| run_two(&handle, &svc, iters, call_now::<S, u64>));
    });
}

/// [`contended`] driven by [`call_spin`], for a peer whose futures can be pending.
pub fn contended_spin<S>(
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
        b.iter_custom(|iters| run_two(&handle, &svc, iters, call_spin::<S, u64>));
    });
}

fn run_two<S>(
    handle: &tokio::runtime::Handle,
    svc: &S,
    iters: u64,
    drive: fn(&mut S, u64) -> S::Response,
) -> Duration
where
    S: Service<u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
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
                    std::hint::black_box(drive(&mut svc, std::hint::black_box(i)));
                }
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("bench thread panicked");
    }
    start.elapsed()
}
