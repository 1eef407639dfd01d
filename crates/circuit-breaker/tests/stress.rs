//! Many threads calling one breaker at once: nothing recorded is lost or counted twice.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use staunch_circuit_breaker::{CircuitBreaker, State};

const THREADS: usize = 6;
const CALLS: usize = 60_000;

/// Runs `THREADS` threads of `CALLS` calls; every `fail_every`-th call of a thread fails.
/// Returns the (successes, failures) recorded.
fn hammer(breaker: &CircuitBreaker, fail_every: usize) -> (u64, u64) {
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (breaker, start) = (breaker.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let (mut ok, mut failed) = (0u64, 0u64);
                for i in 0..CALLS {
                    let permit = breaker.try_acquire().expect("a closed breaker admits");
                    if (i + t) % fail_every == fail_every - 1 {
                        permit.failure();
                        failed += 1;
                    } else {
                        permit.success();
                        ok += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[test]
fn concurrent_calls_on_a_count_window_are_all_counted() {
    let breaker = CircuitBreaker::builder("stress")
        .count_window(100)
        .minimum_calls(20)
        .failure_rate_threshold(100.0)
        .build()
        .unwrap();
    let (ok, failed) = hammer(&breaker, 10);
    let s = breaker.snapshot();
    assert_eq!(s.state, State::Closed);
    assert_eq!(s.successful_calls, ok);
    assert_eq!(s.failed_calls, failed);
    assert_eq!(ok + failed, (THREADS * CALLS) as u64);
    assert_eq!(s.calls_in_window, 100);
    assert!(s.failures_in_window <= 100);
    assert_eq!(s.rejected_calls, 0);
}

#[test]
fn concurrent_calls_on_a_time_window_are_all_counted() {
    // 100 ms buckets: lanes rotate buckets several times while threads share them, and the
    // 12.8 s window is far longer than the test, so nothing expires.
    let breaker = CircuitBreaker::builder("stress")
        .time_window(Duration::from_millis(12_800), 128)
        .minimum_calls(20)
        .failure_rate_threshold(100.0)
        .build()
        .unwrap();
    let (ok, failed) = hammer(&breaker, 7);
    let s = breaker.snapshot();
    assert_eq!(s.state, State::Closed);
    assert_eq!((s.successful_calls, s.failed_calls), (ok, failed));
    assert_eq!(s.calls_in_window, ok + failed);
    assert_eq!(s.failures_in_window, failed);
}

#[test]
fn concurrent_failures_trip_once_and_then_every_call_is_rejected_or_discarded() {
    let breaker = CircuitBreaker::builder("stress")
        .count_window(50)
        .minimum_calls(50)
        .failure_rate_threshold(50.0)
        .open_duration(Duration::from_hours(1))
        .build()
        .unwrap();
    let mut rx = breaker.subscribe();
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (breaker, start) = (breaker.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut rejected = 0u64;
                for _ in 0..10_000 {
                    match breaker.try_acquire() {
                        Ok(permit) => permit.failure(),
                        Err(_) => rejected += 1,
                    }
                }
                rejected
            })
        })
        .collect();
    let rejected: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let s = breaker.snapshot();
    assert_eq!(s.state, State::Open);
    assert_eq!(s.transitions, 1, "tripped exactly once");
    assert_eq!(s.rejected_calls, rejected);
    // Failures admitted before the trip but reported after it were discarded.
    assert!(
        s.failed_calls >= 50 && s.failed_calls + rejected <= (THREADS * 10_000) as u64,
        "{s:?} rejected {rejected}"
    );
    // Rejections were published too, far more than the channel holds: the receiver lagged.
    assert!(matches!(
        rx.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))
    ));
}
