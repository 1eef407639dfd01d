//! Half-open under concurrency: exactly N probes reach the dependency, and probes that are
//! dropped give their slot back exactly once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use staunch_circuit_breaker::{BreakerOpen, CircuitBreaker, CircuitBreakerLayer, State};
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt};

const PROBES: usize = 5;

fn half_open_breaker() -> CircuitBreaker {
    CircuitBreaker::builder("probe")
        .count_window(1)
        .minimum_calls(1)
        .permitted_calls_in_half_open(PROBES as u32)
        .open_duration(Duration::from_millis(1))
        .unbounded_half_open()
        .build()
        .unwrap()
}

async fn trip_and_wait(breaker: &CircuitBreaker) {
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), State::Open);
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// Waits (with real time, bounded generously for a loaded machine) until `cond` holds.
async fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_calls_exactly_n_reach_the_service_and_dropped_probes_return_slots() {
    let breaker = half_open_breaker();
    trip_and_wait(&breaker).await;

    let hits = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(tower::service_fn({
        let (hits, gate) = (hits.clone(), gate.clone());
        move |()| {
            let (hits, gate) = (hits.clone(), gate.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let _pass = gate.acquire().await.unwrap();
                Ok::<(), std::io::Error>(())
            }
        }
    }));

    let rejected = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (svc, rejected, start) = (svc.clone(), rejected.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                if let Err(e) = svc.oneshot(()).await {
                    assert!(e.is::<BreakerOpen>());
                    rejected.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    eventually(|| rejected.load(Ordering::SeqCst) == 100 - PROBES).await;
    eventually(|| hits.load(Ordering::SeqCst) == PROBES).await;
    assert_eq!(breaker.state(), State::HalfOpen);

    // Drop two probes mid-flight: their slots come back, once each.
    let hung: Vec<_> = tasks.into_iter().filter(|t| !t.is_finished()).collect();
    assert_eq!(hung.len(), PROBES);
    let mut hung = hung.into_iter();
    for task in hung.by_ref().take(2) {
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
    let more: Vec<_> = (0..20)
        .map(|_| {
            let (svc, rejected) = (svc.clone(), rejected.clone());
            tokio::spawn(async move {
                if svc.oneshot(()).await.is_err() {
                    rejected.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    eventually(|| rejected.load(Ordering::SeqCst) == 100 - PROBES + 18).await;
    eventually(|| hits.load(Ordering::SeqCst) == PROBES + 2).await;
    // Give any extra (leaked or double-returned) slot a chance to show up.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(hits.load(Ordering::SeqCst), PROBES + 2);

    // Let every probe finish: all succeed, the breaker closes.
    gate.add_permits(1000);
    for task in hung.chain(more) {
        task.await.unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().successful_calls, PROBES as u64);
}

#[tokio::test(start_paused = true)]
async fn dropped_and_reported_permits_return_their_slot_exactly_once() {
    let breaker = half_open_breaker();
    trip_and_wait(&breaker).await;
    let mut probes: Vec<_> = (0..PROBES)
        .map(|_| breaker.try_acquire().unwrap())
        .collect();
    assert!(breaker.try_acquire().is_err());
    // Dropped without a report: ignored, the slot is free again.
    drop(probes.pop());
    let again = breaker.try_acquire().expect("the dropped probe's slot");
    assert!(breaker.try_acquire().is_err(), "only that one slot");
    // Reported then dropped: the report used the slot; dropping returns nothing more.
    let first = probes.remove(0);
    first.success();
    assert!(
        breaker.try_acquire().is_err(),
        "a reported probe keeps its slot"
    );
    // An explicit `Ignored` report also gives the slot back, once.
    probes.remove(0).record(staunch_core::Outcome::Ignored);
    let replacement = breaker.try_acquire().expect("slot of the ignored probe");
    assert!(breaker.try_acquire().is_err());
    for p in probes.into_iter().chain([again, replacement]) {
        p.success();
    }
    assert_eq!(breaker.state(), State::Closed);
}
