//! A disabled layer's calls allocate nothing, ready at once or pending once: counted by an
//! instrumented global allocator.
//!
//! The allocator counts for the whole process, so this file holds a single test. Even so,
//! the harness's main thread may still be allocating (its bookkeeping of the test it just
//! started) while the test counts: each count is the least of three rounds. An allocation the
//! calls make shows in every round.

use std::alloc::System;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use staunch_fault::{BoxError, FaultConfig, FaultLayer};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Answers at once, or after pending once (waking itself), as a network call.
struct Answer {
    value: u64,
    pend: bool,
}

impl Future for Answer {
    type Output = Result<u64, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.pend {
            self.pend = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(self.value))
    }
}

fn bare(pend: bool) -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    tower::service_fn(move |value: u64| Answer { value, pend })
}

/// Polls `svc` ready, calls it, and polls the response until it answers.
fn call<S: Service<u64, Response = u64>>(svc: &mut S, req: u64) -> u64
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = pin!(svc.call(req));
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(res)) => return res,
            Poll::Ready(Err(e)) => panic!("failed: {e:?}"),
            Poll::Pending => {}
        }
    }
}

/// The allocations `round` makes, counted three times: the least of the three (see the
/// module docs).
fn least_of_three_rounds(mut round: impl FnMut()) -> usize {
    (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            round();
            region.change().allocations
        })
        .min()
        .unwrap_or(usize::MAX)
}

fn allocations_per_1000_calls<S: Service<u64, Response = u64>>(mut svc: S) -> usize
where
    S::Error: std::fmt::Debug,
{
    for i in 0..10 {
        assert_eq!(call(&mut svc, i), i);
    }
    least_of_three_rounds(|| {
        for i in 0..1000 {
            assert_eq!(call(&mut svc, i), i);
        }
    })
}

#[test]
fn a_disabled_or_empty_injector_allocates_nothing_per_call() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _ctx = rt.enter();
    let disabled = FaultConfig::intermittent()
        .with_abort(0.1)
        .build("p")
        .unwrap();
    disabled.disable();
    let empty = FaultConfig::none().build("p").unwrap();
    for pend in [false, true] {
        for injector in [&disabled, &empty] {
            let svc = FaultLayer::new(injector.clone()).layer(bare(pend));
            assert_eq!(allocations_per_1000_calls(svc), 0, "pending: {pend}");
        }
    }
    // The abort error is a cheap value: cloning it allocates nothing.
    let abort = staunch_fault::FaultInjected::abort("p".into());
    let clones = least_of_three_rounds(|| {
        for _ in 0..100 {
            std::hint::black_box(abort.clone());
        }
    });
    assert_eq!(clones, 0);
}
