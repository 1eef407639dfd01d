//! Every duration the builder accepts is usable: `Duration::MAX` open and half-open durations
//! with automatic transitions never panic, neither in the caller's call nor in the background
//! timer task (whose panics tokio would swallow: a panic hook counts them).

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use staunch_circuit_breaker::{CircuitBreaker, HalfOpenTransition, State};

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

const YEAR: Duration = Duration::from_hours(24 * 365);

#[tokio::test(start_paused = true)]
async fn an_open_duration_of_duration_max_with_automatic_half_open_is_usable() {
    count_panics();
    let breaker = CircuitBreaker::builder("max-open")
        .count_window(1)
        .minimum_calls(1)
        .open_duration(Duration::MAX)
        .half_open_transition(HalfOpenTransition::Automatic)
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), State::Open);
    for _ in 0..5 {
        tokio::time::advance(10 * YEAR).await;
        tokio::task::yield_now().await;
        let rejected = breaker.try_acquire().unwrap_err();
        assert!(rejected.retry_after().is_some());
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_max_half_open_duration_of_duration_max_with_automatic_half_open_is_usable() {
    count_panics();
    let breaker = CircuitBreaker::builder("max-half-open")
        .count_window(1)
        .minimum_calls(1)
        .open_duration(Duration::from_secs(1))
        .max_half_open_duration(Duration::MAX)
        .half_open_transition(HalfOpenTransition::Automatic)
        .build()
        .unwrap();
    breaker.try_acquire().unwrap().failure();
    // The background timer moves the breaker to half-open and arms the half-open timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::yield_now().await;
    assert_eq!(breaker.state(), State::HalfOpen);
    tokio::time::advance(20 * YEAR).await;
    tokio::task::yield_now().await;
    let probe = breaker.try_acquire().expect("a probe is admitted");
    probe.success();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the timer task panicked");
}

#[tokio::test(start_paused = true)]
async fn an_open_duration_of_duration_max_rejects_in_the_callers_call_without_panicking() {
    count_panics();
    // The trip happens inside the caller's call (a failure recorded through a permit).
    let breaker = CircuitBreaker::builder("max-open-call")
        .count_window(2)
        .minimum_calls(2)
        .open_duration(Duration::MAX)
        .max_half_open_duration(Duration::MAX)
        .half_open_transition(HalfOpenTransition::Automatic)
        .build()
        .unwrap();
    let outcome = breaker
        .call(async { Err::<(), _>(std::io::Error::other("down")) })
        .await;
    assert!(outcome.is_err());
    let outcome = breaker
        .call(async { Err::<(), _>(std::io::Error::other("down")) })
        .await;
    assert!(outcome.is_err());
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}
