//! Waiting for permits, with paused time: deadlines, the queue cap, FIFO order and resizing.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_bulkhead::{Bulkhead, BulkheadFull, BulkheadFullReason};
use tokio::time::{Instant, sleep};

const MS: Duration = Duration::from_millis(1);

fn bulkhead(max_concurrent: usize, max_wait: Duration, max_queued: usize) -> Bulkhead {
    Bulkhead::builder("dep")
        .max_concurrent(max_concurrent)
        .max_wait(max_wait)
        .max_queued(max_queued)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_the_permit_released_before_its_deadline() {
    let b = bulkhead(1, 100 * MS, 8);
    let held = b.try_acquire().unwrap();
    let start = Instant::now();
    let releaser = tokio::spawn(async move {
        sleep(40 * MS).await;
        drop(held);
    });
    let permit = b.acquire().await.expect("permit within max_wait");
    assert_eq!(
        start.elapsed(),
        40 * MS,
        "admitted the moment the permit came back"
    );
    assert_eq!(b.in_flight(), 1);
    drop(permit);
    releaser.await.unwrap();
    let m = b.metrics();
    assert_eq!(m.waited, 1);
    assert_eq!(m.total_wait, 40 * MS);
    assert_eq!(m.rejections(), 0);
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_rejected_at_max_wait_and_leaves_the_queue() {
    let b = bulkhead(1, 100 * MS, 8);
    let _held = b.try_acquire().unwrap();
    let start = Instant::now();
    let err = b
        .run(async { unreachable!("never runs") })
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), 100 * MS);
    assert_eq!(err.reason(), BulkheadFullReason::WaitTimedOut(100 * MS));
    assert_eq!(err.name(), "dep");
    assert_eq!(err.max_concurrent(), 1);
    let m = b.metrics();
    assert_eq!(m.queued, 0);
    assert_eq!(m.rejected_wait_timed_out, 1);
    assert_eq!(m.total_wait, 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn zero_max_wait_fails_fast() {
    let b = bulkhead(1, Duration::ZERO, 8);
    let _held = b.try_acquire().unwrap();
    let start = Instant::now();
    let err = b.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(err.reason(), BulkheadFullReason::NoPermit);
    assert_eq!(b.metrics().rejected_no_permit, 1);
}

#[tokio::test(start_paused = true)]
async fn the_queue_cap_rejects_at_once() {
    let b = bulkhead(1, Duration::from_secs(10), 2);
    let held = b.try_acquire().unwrap();
    let w1 = tokio::spawn(b.acquire());
    let w2 = tokio::spawn(b.acquire());
    tokio::task::yield_now().await;
    assert_eq!(b.metrics().queued, 2);
    let start = Instant::now();
    let err = b.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(err.reason(), BulkheadFullReason::QueueFull);
    assert_eq!(b.metrics().rejected_queue_full, 1);
    drop(held);
    drop(w1.await.unwrap().unwrap());
    drop(w2.await.unwrap().unwrap());
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_fifo_order_and_newcomers_do_not_overtake() {
    let b = bulkhead(1, Duration::from_secs(10), 16);
    let held = b.try_acquire().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let b = b.clone();
        let order = Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let permit = b.acquire().await.unwrap();
            order.lock().unwrap().push(i);
            sleep(MS).await;
            drop(permit);
        }));
        // Queue them one after the other.
        tokio::task::yield_now().await;
    }
    assert_eq!(b.metrics().queued, 5);
    drop(held);
    // A released permit goes to the head of the queue: the fast path stays closed.
    assert!(b.try_acquire().is_err());
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(b.in_flight(), 0);
    assert!(
        b.try_acquire().is_ok(),
        "fast path open again once the queue is empty"
    );
}

#[tokio::test(start_paused = true)]
async fn growing_the_limit_releases_waiters_at_once() {
    let b = bulkhead(1, Duration::from_secs(10), 16);
    let held = b.try_acquire().unwrap();
    let mut waiters: Vec<_> = (0..3).map(|_| tokio::spawn(b.acquire())).collect();
    tokio::task::yield_now().await;
    assert_eq!(b.metrics().queued, 3);
    let start = Instant::now();
    b.set_max_concurrent(3).unwrap();
    // Two new permits: the first two waiters (FIFO) are admitted without waiting.
    let p1 = (&mut waiters[0]).await.unwrap().unwrap();
    let p2 = (&mut waiters[1]).await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(b.in_flight(), 3);
    assert_eq!(b.metrics().queued, 1);
    tokio::task::yield_now().await;
    assert!(!waiters[2].is_finished());
    drop(held);
    let p3 = (&mut waiters[2]).await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    drop((p1, p2, p3));
    assert_eq!(b.in_flight(), 0);
    assert_eq!(b.max_concurrent(), 3);
}

#[tokio::test(start_paused = true)]
async fn shrinking_the_limit_lets_in_flight_calls_finish_and_admits_nobody_until_below() {
    let b = bulkhead(3, Duration::from_secs(10), 16);
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    let p3 = b.try_acquire().unwrap();
    b.set_max_concurrent(1).unwrap();
    assert_eq!(b.in_flight(), 3, "nothing in flight is dropped");
    let waiter = tokio::spawn(b.acquire());
    tokio::task::yield_now().await;
    drop(p1);
    drop(p2);
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "1 in flight, limit 1: still full");
    assert_eq!(b.in_flight(), 1);
    drop(p3);
    let permit = waiter.await.unwrap().unwrap();
    assert_eq!(b.in_flight(), 1);
    assert!(b.try_acquire().is_err());
    drop(permit);
    assert!(b.set_max_concurrent(0).is_err());
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_waiter_frees_its_place_and_never_loses_a_permit() {
    let b = bulkhead(1, Duration::from_secs(10), 1);
    let held = b.try_acquire().unwrap();
    let first = tokio::spawn(b.acquire());
    tokio::task::yield_now().await;
    assert_eq!(b.metrics().queued, 1);
    first.abort();
    let _ = first.await;
    assert_eq!(b.metrics().queued, 0, "the aborted waiter left the queue");
    // The freed place in the queue is usable.
    let second = tokio::spawn(b.acquire());
    tokio::task::yield_now().await;
    assert_eq!(b.metrics().queued, 1);
    // The permit is granted to `second`, which is dropped before it ever polls it again:
    // the grant must pass back to the bulkhead.
    drop(held);
    second.abort();
    let _ = second.await;
    assert_eq!(b.in_flight(), 0);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn run_releases_the_permit_when_dropped_mid_flight() {
    let b = bulkhead(1, Duration::ZERO, 0);
    let running = tokio::spawn(b.run(sleep(Duration::from_mins(1))));
    tokio::task::yield_now().await;
    assert_eq!(b.in_flight(), 1);
    running.abort();
    let _ = running.await;
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn rejections_are_found_by_rejection_of_inside_a_box() {
    let b = bulkhead(1, Duration::ZERO, 0);
    let _held = b.try_acquire().unwrap();
    let err: Box<dyn std::error::Error + Send + Sync> = Box::new(b.try_acquire().unwrap_err());
    assert!(err.is::<BulkheadFull>());
    assert!(matches!(
        staunch_core::rejection_of(&*err),
        Some(staunch_core::Rejection::BulkheadFull(f)) if f.name() == "dep"
    ));
}
