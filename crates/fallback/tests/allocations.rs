//! A call the primary answers allocates nothing through the fallback layer, with a value
//! answer, with status and response rules, and with the `answered` variant; counted by an
//! instrumented global allocator.
//!
//! The allocator counts for the whole process, so this file holds a single test. Even so,
//! the harness's main thread may still be allocating (its bookkeeping of the test it just
//! started) while the test counts: the count is the least of three rounds. An allocation the
//! calls make shows in every round.

use std::alloc::System;
use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use staunch_core::BoxError;
use staunch_fallback::{Answer, FallbackLayer, FallbackPolicy};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn call<S: Service<u32>>(svc: &mut S, n: u32) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = pin!(svc.call(n));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(res) => res.unwrap(),
        Poll::Pending => panic!("ready at once"),
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

#[test]
fn the_primary_path_allocates_nothing() {
    let bare = || service_fn(|n: u32| ready(Ok::<u32, BoxError>(n)));
    let plain = FallbackPolicy::<u32>::builder("alloc")
        .on_any_error()
        .build()
        .unwrap();
    let ruled = FallbackPolicy::<u32>::builder("alloc")
        .status_of(|n| *n as u16)
        .on_status(500..=599)
        .on_response(|n| *n == 1000)
        .build()
        .unwrap();
    let mut a = FallbackLayer::new(plain.clone(), Answer::value(0)).layer(bare());
    let mut b = FallbackLayer::new(ruled.clone(), Answer::value(0)).layer(bare());
    let mut c = FallbackLayer::new(plain, Answer::value(0))
        .answered()
        .layer(bare());
    let mut d = FallbackLayer::service(ruled, bare()).layer(bare());
    // Warm up (lazy statics in the runtime pieces, if any).
    call(&mut a, 1);
    let allocations = least_of_three_rounds(|| {
        for n in 0..100 {
            assert_eq!(call(&mut a, n), n);
            assert_eq!(call(&mut b, n), n);
            assert_eq!(call(&mut c, n).into_inner(), n);
            assert_eq!(call(&mut d, n), n);
        }
    });
    assert_eq!(allocations, 0);
    // A fallback may allocate (a boxed backup call); it still answers.
    assert_eq!(call(&mut d, 503), 503);
}
