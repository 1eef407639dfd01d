//! The tower layer: reservation in `poll_ready`, rejection from `call`, clones and drops.

mod support;

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use staunch_bulkhead::{BoxError, Bulkhead, BulkheadFull, BulkheadFullReason};
use support::Gauge;
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

fn slow_dependency(
    gauge: Gauge,
) -> impl Service<u64, Response = u64, Error = std::io::Error, Future: Send> + Clone {
    service_fn(move |ms: u64| {
        let gauge = gauge.clone();
        async move {
            let _inside = gauge.enter();
            if ms == u64::MAX {
                return Err(std::io::Error::other("dependency failed"));
            }
            sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_is_ready_and_rejects_from_call_without_calling_inner() {
    let gauge = Gauge::default();
    let b = Bulkhead::builder("dep").max_concurrent(1).build().unwrap();
    let svc = b.layer().layer(slow_dependency(gauge.clone()));
    let busy = tokio::spawn(svc.clone().oneshot(1000));
    tokio::task::yield_now().await;
    assert_eq!(gauge.current(), 1);

    let mut second = svc.clone();
    // Readiness never fails because of the bulkhead.
    poll_fn(|cx| second.poll_ready(cx)).await.unwrap();
    let err = second.call(5).await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().expect("a BulkheadFull");
    assert_eq!(full.reason(), BulkheadFullReason::NoPermit);
    assert_eq!(gauge.entered(), 1, "the inner service was not called");
    // The same handle keeps working once a permit is free.
    busy.await.unwrap().unwrap();
    assert_eq!(second.ready().await.unwrap().call(2).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_waits_at_most_max_wait() {
    let gauge = Gauge::default();
    let b = Bulkhead::builder("dep")
        .max_concurrent(1)
        .max_wait(50 * MS)
        .build()
        .unwrap();
    let svc = b.layer().layer(slow_dependency(gauge.clone()));
    let _busy = tokio::spawn(svc.clone().oneshot(1000));
    tokio::task::yield_now().await;

    let mut waiting = svc.clone();
    let start = Instant::now();
    let mut polls = 0;
    poll_fn(|cx| {
        polls += 1;
        waiting.poll_ready(cx)
    })
    .await
    .unwrap();
    assert_eq!(
        start.elapsed(),
        50 * MS,
        "pending until max_wait, then ready"
    );
    assert!(polls >= 2);
    let err = waiting.call(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().reason(),
        BulkheadFullReason::WaitTimedOut(50 * MS)
    );

    // A waiter that gets the permit in time runs.
    let b2 = Bulkhead::builder("dep2")
        .max_concurrent(1)
        .max_wait(50 * MS)
        .build()
        .unwrap();
    let svc2 = b2.layer().layer(slow_dependency(gauge.clone()));
    let busy = tokio::spawn(svc2.clone().oneshot(30));
    tokio::task::yield_now().await;
    let start = Instant::now();
    assert_eq!(svc2.oneshot(1).await.unwrap(), 1);
    assert_eq!(start.elapsed(), 31 * MS);
    busy.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_clone_never_inherits_a_reserved_permit() {
    let b = Bulkhead::builder("dep").max_concurrent(2).build().unwrap();
    let mut readied = b.layer().layer(slow_dependency(Gauge::default()));
    poll_fn(|cx| readied.poll_ready(cx)).await.unwrap();
    assert_eq!(b.in_flight(), 1, "poll_ready reserved a permit");
    let mut clone = readied.clone();
    assert_eq!(b.in_flight(), 1, "cloning did not take or copy the permit");
    poll_fn(|cx| clone.poll_ready(cx)).await.unwrap();
    assert_eq!(b.in_flight(), 2, "the clone reserved its own");
    drop(clone);
    assert_eq!(
        b.in_flight(),
        1,
        "dropping a readied service releases its permit"
    );
    drop(readied);
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_permit_lives_in_the_response_future() {
    let gauge = Gauge::default();
    let b = Bulkhead::builder("dep").max_concurrent(1).build().unwrap();
    let mut svc = b.layer().layer(slow_dependency(gauge.clone()));
    let fut = svc.ready().await.unwrap().call(1000);
    assert_eq!(b.in_flight(), 1);
    let task = tokio::spawn(fut);
    sleep(10 * MS).await;
    assert_eq!(gauge.current(), 1);
    task.abort();
    let _ = task.await;
    assert_eq!(gauge.current(), 0);
    assert_eq!(b.in_flight(), 0, "cancelling the call released the permit");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_boxed() {
    let b = Bulkhead::builder("dep").max_concurrent(1).build().unwrap();
    let svc = b.layer().layer(slow_dependency(Gauge::default()));
    let err: BoxError = svc.oneshot(u64::MAX).await.unwrap_err();
    assert!(!err.is::<BulkheadFull>());
    assert_eq!(err.to_string(), "dependency failed");
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_service_that_is_waiting_gives_up_its_place() {
    let b = Bulkhead::builder("dep")
        .max_concurrent(1)
        .max_wait(Duration::from_secs(5))
        .max_queued(1)
        .build()
        .unwrap();
    let svc = b.layer().layer(slow_dependency(Gauge::default()));
    let _held = b.try_acquire().unwrap();
    let mut waiting = svc.clone();
    assert!(matches!(
        poll_fn(|cx| Poll::Ready(waiting.poll_ready(cx))).await,
        Poll::Pending
    ));
    assert_eq!(b.metrics().queued, 1);
    drop(waiting);
    assert_eq!(b.metrics().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn polling_readiness_again_takes_a_permit_freed_since_the_rejection() {
    let b = Bulkhead::builder("dep").max_concurrent(1).build().unwrap();
    let mut svc = b.layer().layer(slow_dependency(Gauge::default()));
    let held = b.try_acquire().unwrap();
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    assert_eq!(b.in_flight(), 1, "the verdict so far: rejected");
    drop(held);
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    assert_eq!(b.in_flight(), 1, "the handle took the freed permit");
    assert_eq!(svc.call(3).await.unwrap(), 3);
    assert_eq!(b.in_flight(), 0);
}
