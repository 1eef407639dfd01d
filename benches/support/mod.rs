//! Shared harness for the middleware benches: per-call cost of a tower service over a bare
//! inner service, measured on the paths real calls take, so every bench reports comparable
//! numbers. Each bench lists its cases once with [`bench_rows!`], which runs every case in four
//! criterion groups:
//!
//! - `uncontended`: 1 task, the inner future is ready at once;
//! - `contended`: 2 tasks on 2 threads sharing one layer (clones of one service), ready at once;
//! - `pending`: 1 task, the inner future pends once before it answers, as every network call
//!   does (timers get armed, permits are held across a poll);
//! - `alternating`: 1 task calling two independent instances of the case in turn (two
//!   dependencies, as a saga step sequence or a fan-out does), the inner future pending once.
//!
//! Calls are driven by polling directly with a no-op waker inside a tokio runtime context, so
//! the figures contain the layer's own cost and not an executor's. Subtract the `bare service`
//! row of the same group to get the overhead a layer adds.
#![allow(dead_code, clippy::disallowed_types, unreachable_pub)]

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};
use tower::Service;

/// The error type of the bare inner service (and of every staunch layer).
pub use staunch::BoxError;

/// A runtime whose context layers that need timers run in.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("benchmark runtime")
}

/// The baseline inner service: answers its request, at once or after pending once.
#[derive(Debug, Clone, Copy)]
pub struct Bare {
    pending: bool,
}

/// The bare service whose future is ready at once.
pub fn bare() -> Bare {
    Bare { pending: false }
}

/// The bare service whose future pends once (waking itself) before it answers.
pub fn bare_pending() -> Bare {
    Bare { pending: true }
}

impl Bare {
    /// The future a call makes: for peers that wrap futures rather than services.
    pub fn answer(self, x: u64) -> BareFuture {
        BareFuture {
            value: x,
            pending: self.pending,
        }
    }
}

impl Service<u64> for Bare {
    type Response = u64;
    type Error = BoxError;
    type Future = BareFuture;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, x: u64) -> BareFuture {
        self.answer(x)
    }
}

/// The future of [`Bare`].
#[derive(Debug)]
pub struct BareFuture {
    value: u64,
    pending: bool,
}

impl Future for BareFuture {
    type Output = Result<u64, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.pending {
            self.pending = false;
            cx.waker().wake_by_ref();
            Poll::Pending
        } else {
            Poll::Ready(Ok(self.value))
        }
    }
}

/// Runs every case of a bench in the four groups (see the module docs). Each case is
/// `"row name" => constructor`, where the constructor takes the inner [`Bare`] service and
/// returns the service to measure; it is called once per group (twice for `alternating`).
#[macro_export]
macro_rules! bench_rows {
    ($c:expr, $rt:expr, { $($name:expr => $make:expr),* $(,)? }) => {{
        let rt: &tokio::runtime::Runtime = $rt;
        let _ctx = rt.enter();
        let mut group = $c.benchmark_group("uncontended");
        support::uncontended(&mut group, rt, "bare service", support::bare());
        $( support::uncontended(&mut group, rt, $name, ($make)(support::bare())); )*
        group.finish();
        let mut group = $c.benchmark_group("contended");
        support::contended(&mut group, rt, "bare service", support::bare());
        $( support::contended(&mut group, rt, $name, ($make)(support::bare())); )*
        group.finish();
        let mut group = $c.benchmark_group("pending");
        support::uncontended(&mut group, rt, "bare service", support::bare_pending());
        $( support::uncontended(&mut group, rt, $name, ($make)(support::bare_pending())); )*
        group.finish();
        let mut group = $c.benchmark_group("alternating");
        support::alternating(
            &mut group, rt, "bare service", support::bare_pending(), support::bare_pending(),
        );
        $(
            support::alternating(
                &mut group,
                rt,
                $name,
                ($make)(support::bare_pending()),
                ($make)(support::bare_pending()),
            );
        )*
        group.finish();
    }};
}

/// Polls `svc` ready, calls it and polls the response until it is ready (the no-op waker
/// means a pending future is simply polled again). Peers whose readiness can pend when two
/// threads share them (tower-resilience takes a `tokio::sync::Mutex`) are polled again too.
#[inline]
pub fn call<S, R>(svc: &mut S, req: R) -> S::Response
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
            Poll::Pending => {}
        }
    }
}

/// Benchmarks one case with a single task.
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
            std::hint::black_box(call(&mut svc, std::hint::black_box(i)))
        });
    });
}

/// Benchmarks one task calling `a` and `b` in turn; reports the time per call.
pub fn alternating<A, B>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    mut a: A,
    mut b: B,
) where
    A: Service<u64>,
    A::Error: std::fmt::Debug,
    B: Service<u64>,
    B::Error: std::fmt::Debug,
{
    let _ctx = rt.enter();
    group.bench_function(BenchmarkId::from_parameter(name), |bencher| {
        bencher.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                if i % 2 == 0 {
                    std::hint::black_box(call(&mut a, std::hint::black_box(i)));
                } else {
                    std::hint::black_box(call(&mut b, std::hint::black_box(i)));
                }
            }
            start.elapsed()
        });
    });
}

/// Benchmarks one case with 2 tasks on 2 threads, each calling its own clone of `svc` (clones
/// share the layer's state). Each thread times its own loop of `iters` calls after both have
/// reached the start line; the figure is the mean of the two, i.e. wall time per call as each
/// task sees it.
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
        b.iter_custom(|iters| run_two(&handle, &svc, iters));
    });
}

fn run_two<S>(handle: &tokio::runtime::Handle, svc: &S, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let start_line = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let mut svc = svc.clone();
            let start_line = Arc::clone(&start_line);
            let handle = handle.clone();
            std::thread::spawn(move || {
                let _ctx = handle.enter();
                start_line.wait();
                let start = Instant::now();
                for i in 0..iters {
                    std::hint::black_box(call(&mut svc, std::hint::black_box(i)));
                }
                start.elapsed()
            })
        })
        .collect();
    let total: Duration = threads
        .into_iter()
        .map(|t| t.join().expect("bench thread panicked"))
        .sum();
    total / 2
}
