//! Every rule that moves a breaker between states, with paused time.

mod support;

use std::time::Duration;

use staunch_circuit_breaker::{CircuitBreaker, Event, HalfOpenTransition, State, TransitionReason};
use staunch_core::{Backoff, Jitter};
use support::{fail, settle, succeed, timed_call, transitions};

const SECOND: Duration = Duration::from_secs(1);

fn reasons(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<TransitionReason> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let Event::StateChanged { reason, .. } = event {
            out.push(reason);
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn count_window_trips_once_minimum_calls_are_seen() {
    let breaker = CircuitBreaker::builder("t")
        .count_window(10)
        .minimum_calls(5)
        .failure_rate_threshold(50.0)
        .build()
        .unwrap();
    fail(&breaker, 4);
    assert_eq!(breaker.state(), State::Closed, "4 calls < minimum_calls");
    let s = breaker.snapshot();
    assert_eq!((s.calls_in_window, s.failures_in_window), (4, 4));
    assert_eq!(s.failure_rate, 100.0);
    // The fifth call is a success, but it brings the window to the minimum at 80 %.
    succeed(&breaker, 1);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn count_window_slides_over_the_last_n_calls() {
    let breaker = CircuitBreaker::builder("t")
        .count_window(10)
        .minimum_calls(10)
        .failure_rate_threshold(50.0)
        .build()
        .unwrap();
    fail(&breaker, 4);
    succeed(&breaker, 10);
    // The first four failures have left the window: 4 of the last 10 failed, not 8.
    fail(&breaker, 4);
    assert_eq!(breaker.state(), State::Closed);
    let s = breaker.snapshot();
    assert_eq!((s.calls_in_window, s.failures_in_window), (10, 4));
    assert_eq!(s.failure_rate, 40.0);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Open, "5 of the last 10 failed");
}

#[tokio::test(start_paused = true)]
async fn rates_below_the_threshold_stay_closed() {
    let breaker = CircuitBreaker::builder("t")
        .count_window(20)
        .minimum_calls(10)
        .failure_rate_threshold(35.0)
        .build()
        .unwrap();
    for _ in 0..50 {
        fail(&breaker, 1);
        succeed(&breaker, 3);
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "never above 30.8 %, below 35 %"
    );
    assert_eq!(breaker.snapshot().failure_rate, 25.0);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_expired_buckets() {
    let breaker = CircuitBreaker::builder("t")
        .time_window(10 * SECOND, 10)
        .minimum_calls(3)
        .failure_rate_threshold(50.0)
        .build()
        .unwrap();
    fail(&breaker, 2);
    tokio::time::advance(11 * SECOND).await;
    fail(&breaker, 1);
    let s = breaker.snapshot();
    assert_eq!((s.calls_in_window, s.failures_in_window), (1, 1));
    assert_eq!(
        breaker.state(),
        State::Closed,
        "the first two failures expired"
    );
    fail(&breaker, 2);
    assert_eq!(breaker.state(), State::Open, "3 failures within the window");
}

#[tokio::test(start_paused = true)]
async fn time_window_buckets_expire_one_by_one() {
    let breaker = CircuitBreaker::builder("t")
        .time_window(10 * SECOND, 10)
        .minimum_calls(4)
        .failure_rate_threshold(50.0)
        .build()
        .unwrap();
    fail(&breaker, 1); // bucket 0
    tokio::time::advance(5 * SECOND).await;
    fail(&breaker, 1); // bucket 5
    succeed(&breaker, 1); // bucket 5
    assert_eq!(breaker.snapshot().calls_in_window, 3);
    // At 10.5 s the window covers buckets 1..=10: bucket 0 has expired, bucket 5 has not.
    tokio::time::advance(Duration::from_millis(5_500)).await;
    let s = breaker.snapshot();
    assert_eq!((s.calls_in_window, s.failures_in_window), (2, 1));
    // At 16 s everything has expired.
    tokio::time::advance(Duration::from_millis(5_500)).await;
    assert_eq!(breaker.snapshot().calls_in_window, 0);
    // Had the old failures still counted, these calls would trip the breaker (4 of 5).
    fail(&breaker, 2);
    succeed(&breaker, 2);
    assert_eq!(breaker.state(), State::Open, "2 of 4 = 50 % trips");
    let breaker2 = CircuitBreaker::builder("t2")
        .time_window(10 * SECOND, 10)
        .minimum_calls(4)
        .failure_rate_threshold(60.0)
        .build()
        .unwrap();
    fail(&breaker2, 3);
    tokio::time::advance(11 * SECOND).await;
    fail(&breaker2, 2);
    succeed(&breaker2, 2);
    assert_eq!(
        breaker2.state(),
        State::Closed,
        "2 of 4 < 60 %: the 3 old failures expired"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_even_when_they_succeed() {
    let breaker = CircuitBreaker::builder("t")
        .count_window(4)
        .minimum_calls(4)
        .failure_rate_threshold(100.0)
        .slow_call_duration(Duration::from_millis(100))
        .slow_call_rate_threshold(50.0)
        .build()
        .unwrap();
    let mut rx = breaker.subscribe();
    timed_call(&breaker, Duration::from_millis(150), true).await;
    timed_call(&breaker, Duration::from_millis(99), true).await;
    timed_call(&breaker, Duration::from_millis(100), true).await;
    assert_eq!(breaker.state(), State::Closed);
    let s = breaker.snapshot();
    assert_eq!((s.slow_calls_in_window, s.failures_in_window), (2, 0));
    assert_eq!(s.successful_calls, 3);
    timed_call(&breaker, Duration::from_millis(1), true).await;
    assert_eq!(breaker.state(), State::Open, "2 of 4 slow = 50 %");
    assert_eq!(reasons(&mut rx), [TransitionReason::SlowCallRate]);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_regardless_of_the_rate() {
    let breaker = CircuitBreaker::builder("t")
        .count_window(100)
        .minimum_calls(100)
        .consecutive_failures(3)
        .build()
        .unwrap();
    let mut rx = breaker.subscribe();
    succeed(&breaker, 30);
    fail(&breaker, 2);
    succeed(&breaker, 1);
    fail(&breaker, 2);
    assert_eq!(breaker.state(), State::Closed, "a success reset the run");
    fail(&breaker, 1);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(reasons(&mut rx), [TransitionReason::ConsecutiveFailures]);
}

fn tripping_on_first_failure() -> staunch_circuit_breaker::CircuitBreakerBuilder {
    CircuitBreaker::builder("t")
        .count_window(1)
        .minimum_calls(1)
        .permitted_calls_in_half_open(1)
}

#[tokio::test(start_paused = true)]
async fn backoff_open_durations_grow_with_each_reopen_and_reset_after_closing() {
    let backoff = Backoff::exponential(SECOND)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let breaker = tripping_on_first_failure()
        .open_backoff(backoff)
        .build()
        .unwrap();
    let retry_after = |b: &CircuitBreaker| b.try_acquire().unwrap_err().retry_after();

    fail(&breaker, 1);
    assert_eq!(retry_after(&breaker), Some(SECOND));
    for wait in [1, 2, 4] {
        tokio::time::advance((wait * SECOND).saturating_sub(Duration::from_millis(1))).await;
        assert!(
            breaker.try_acquire().is_err(),
            "still open just before {wait}s"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        breaker.try_acquire().expect("probe").failure();
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(retry_after(&breaker), Some(2 * wait * SECOND));
    }
    tokio::time::advance(8 * SECOND).await;
    breaker.try_acquire().expect("probe").success();
    assert_eq!(breaker.state(), State::Closed);
    fail(&breaker, 1);
    assert_eq!(
        retry_after(&breaker),
        Some(SECOND),
        "the backoff started over"
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_backoff_open_durations_stay_within_their_bounds() {
    let backoff = Backoff::exponential(SECOND)
        .jitter(Jitter::Equal)
        .max_delay(8 * SECOND)
        .seed(42)
        .build()
        .unwrap();
    let breaker = tripping_on_first_failure()
        .open_backoff(backoff)
        .build()
        .unwrap();
    fail(&breaker, 1);
    let mut waits = Vec::new();
    for ceiling in [1u32, 2, 4, 8, 8] {
        let wait = breaker.try_acquire().unwrap_err().retry_after().unwrap();
        // Equal jitter: half fixed, half random.
        assert!(
            wait >= ceiling * SECOND / 2 && wait <= ceiling * SECOND,
            "{wait:?} for {ceiling}s"
        );
        waits.push(wait);
        tokio::time::advance(wait).await;
        breaker.try_acquire().expect("probe").failure();
    }
    assert!(
        waits.windows(2).any(|w| w[0] != w[1] / 2),
        "jitter moved some wait: {waits:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fixed_open_duration_and_lazy_half_open_on_the_first_call() {
    let breaker = tripping_on_first_failure()
        .open_duration(5 * SECOND)
        .build()
        .unwrap();
    let mut rx = breaker.subscribe();
    fail(&breaker, 1);
    tokio::time::advance(5 * SECOND).await;
    settle().await;
    assert_eq!(
        breaker.state(),
        State::Open,
        "lazy: nothing happens without a call"
    );
    let probe = breaker
        .try_acquire()
        .expect("the first call after the wait probes");
    assert!(probe.is_probe());
    assert_eq!(breaker.state(), State::HalfOpen);
    probe.success();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(
        transitions(&mut rx),
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn automatic_half_open_needs_no_call() {
    let breaker = tripping_on_first_failure()
        .open_duration(5 * SECOND)
        .half_open_transition(HalfOpenTransition::Automatic)
        .build()
        .unwrap();
    fail(&breaker, 1);
    tokio::time::advance(4 * SECOND).await;
    settle().await;
    assert_eq!(breaker.state(), State::Open);
    tokio::time::advance(SECOND).await;
    settle().await;
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn half_open_timeout_reopens_a_breaker_whose_probes_hang() {
    let breaker = tripping_on_first_failure()
        .permitted_calls_in_half_open(2)
        .open_duration(SECOND)
        .max_half_open_duration(10 * SECOND)
        .build()
        .unwrap();
    let mut rx = breaker.subscribe();
    fail(&breaker, 1);
    tokio::time::advance(SECOND).await;
    let hung_a = breaker.try_acquire().expect("probe 1");
    let hung_b = breaker.try_acquire().expect("probe 2");
    assert!(breaker.try_acquire().is_err(), "only 2 probes");
    tokio::time::advance(10 * SECOND).await;
    assert!(breaker.try_acquire().is_err());
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        reasons(&mut rx),
        [
            TransitionReason::FailureRate,
            TransitionReason::OpenDurationElapsed,
            TransitionReason::HalfOpenTimedOut
        ]
    );
    // The hung probes finally answer: too late, from an older state, discarded.
    let before = breaker.snapshot();
    hung_a.success();
    hung_b.failure();
    let after = breaker.snapshot();
    assert_eq!(after.state, State::Open);
    assert_eq!(after.successful_calls, before.successful_calls);
    assert_eq!(after.failed_calls, before.failed_calls);
}

#[tokio::test(start_paused = true)]
async fn automatic_half_open_timeout_fires_without_calls() {
    let breaker = tripping_on_first_failure()
        .open_duration(SECOND)
        .max_half_open_duration(3 * SECOND)
        .half_open_transition(HalfOpenTransition::Automatic)
        .build()
        .unwrap();
    fail(&breaker, 1);
    tokio::time::advance(SECOND).await;
    settle().await;
    let _hung = breaker.try_acquire().expect("probe");
    tokio::time::advance(3 * SECOND).await;
    settle().await;
    assert_eq!(breaker.state(), State::Open);
    // ... and the timer of the re-open brings it back to half-open.
    tokio::time::advance(SECOND).await;
    settle().await;
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn probe_success_rate_decides_between_closed_and_open() {
    for (outcomes, expected) in [
        ([true, true, false], State::Closed),
        ([false, true, false], State::Open),
        ([true, false, false], State::Open),
    ] {
        let breaker = tripping_on_first_failure()
            .permitted_calls_in_half_open(3)
            .failure_rate_threshold(50.0)
            .open_duration(SECOND)
            .build()
            .unwrap();
        fail(&breaker, 1);
        tokio::time::advance(SECOND).await;
        let probes: Vec<_> = (0..3).map(|_| breaker.try_acquire().unwrap()).collect();
        assert!(breaker.try_acquire().is_err());
        for (probe, ok) in probes.into_iter().zip(outcomes) {
            assert_eq!(
                breaker.state(),
                State::HalfOpen,
                "undecided until all report"
            );
            if ok { probe.success() } else { probe.failure() }
        }
        assert_eq!(breaker.state(), expected, "{outcomes:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn results_from_an_older_generation_are_discarded() {
    let breaker = CircuitBreaker::builder("t")
        .count_window(4)
        .minimum_calls(2)
        .build()
        .unwrap();
    let slow_call = breaker.try_acquire().unwrap();
    fail(&breaker, 2);
    assert_eq!(breaker.state(), State::Open);
    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
    slow_call.failure();
    let s = breaker.snapshot();
    assert_eq!(
        s.failures_in_window, 0,
        "the late failure is not in the fresh window"
    );
    assert_eq!(s.failed_calls, 2);
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn manual_states_force_open_disable_metrics_only_reset() {
    let breaker = CircuitBreaker::builder("t")
        .count_window(10)
        .minimum_calls(2)
        .build()
        .unwrap();
    let handle = breaker.clone();

    handle.force_open();
    let open = breaker.try_acquire().unwrap_err();
    assert_eq!((open.name(), open.retry_after()), ("t", None));
    tokio::time::advance(3600 * SECOND).await;
    assert!(
        breaker.try_acquire().is_err(),
        "forced open does not time out"
    );

    handle.disable();
    fail(&breaker, 20);
    assert_eq!(breaker.state(), State::Disabled);
    assert_eq!(breaker.snapshot().failed_calls, 0, "nothing is recorded");

    handle.metrics_only();
    fail(&breaker, 20);
    let s = breaker.snapshot();
    assert_eq!(s.state, State::MetricsOnly, "never trips");
    assert_eq!((s.failures_in_window, s.failure_rate), (10, 100.0));

    handle.reset();
    let s = breaker.snapshot();
    assert_eq!((s.state, s.calls_in_window), (State::Closed, 0));
    fail(&breaker, 2);
    assert_eq!(breaker.state(), State::Open, "normal rules again");
}

#[tokio::test(start_paused = true)]
async fn events_report_transitions_and_rejections() {
    let breaker = tripping_on_first_failure().build().unwrap();
    let mut rx = breaker.subscribe();
    fail(&breaker, 1);
    assert!(breaker.try_acquire().is_err());
    let first = rx.try_recv().unwrap();
    assert!(matches!(
        first,
        Event::StateChanged { ref breaker, from: State::Closed, to: State::Open, reason: TransitionReason::FailureRate }
            if &**breaker == "t"
    ));
    assert!(matches!(
        rx.try_recv().unwrap(),
        Event::Rejected {
            state: State::Open,
            ..
        }
    ));
    assert_eq!(breaker.snapshot().rejected_calls, 1);
    assert_eq!(breaker.snapshot().transitions, 1);
}
