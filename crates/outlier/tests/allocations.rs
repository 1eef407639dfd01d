//! A call through the balancer allocates nothing: choosing an endpoint, counting it in
//! flight, recording a success or a failure, an ejection and a return, and a refusal for
//! want of endpoints; counted by an instrumented global allocator.
//!
//! The allocator counts for the whole process, so this file holds a single test, and the
//! count is the least of three rounds (the harness's main thread may still be allocating
//! while the first round counts). An allocation the calls make shows in every round.

use std::alloc::System;
use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use staunch_outlier::{Balancer, NoEndpoints};
use tower::{Service, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

fn call<S: Service<u32>>(svc: &mut S, n: u32) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = pin!(svc.call(n));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(res) => res,
        Poll::Pending => panic!("ready at once"),
    }
}

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
fn calls_allocate_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _ctx = rt.enter();
    // Endpoint `i` fails the requests that are multiples of `i + 2`; a zero-sized error
    // boxes without allocating.
    let endpoint = |i: u32| {
        service_fn(move |n: u32| {
            ready(if n.is_multiple_of(i + 2) {
                Err::<u32, Box<dyn std::error::Error + Send + Sync>>(Box::new(Refused))
            } else {
                Ok(n)
            })
        })
    };
    let mut balancer = Balancer::builder("alloc")
        .endpoints((0..3).map(|i| (i, endpoint(i))))
        .consecutive_failures(1)
        .base_ejection_time(std::time::Duration::from_millis(1))
        .max_ejection_time(std::time::Duration::from_millis(1))
        .seed(1)
        .build()
        .unwrap();
    let mut empty = Balancer::builder("empty")
        .endpoint(0, endpoint(0))
        .build()
        .unwrap();
    empty.remove(&0);
    for n in 0..10 {
        let _ = call(&mut balancer, n);
    }
    // Time moves between rounds (outside the count: the runtime's `block_on` allocates),
    // so endpoints are ejected and return within the rounds.
    let mut allocations = 0;
    for _ in 0..30 {
        allocations += least_of_three_rounds(|| {
            for n in 0..10 {
                let _ = call(&mut balancer, n);
                assert!(call(&mut empty, n).unwrap_err().is::<NoEndpoints>());
            }
        });
        rt.block_on(tokio::time::advance(std::time::Duration::from_millis(1)));
    }
    assert_eq!(allocations, 0);
    let m = balancer.metrics();
    assert!(m.ejections >= 20 && m.returns >= 20, "{m:?}");
}
