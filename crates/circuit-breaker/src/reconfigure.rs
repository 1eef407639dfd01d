//! Carrying a breaker's state into a breaker with new settings (a configuration reload).
//!
//! A breaker's settings are fixed when it is built (the hot path reads them without a lock),
//! so new thresholds mean a new breaker. Built from nothing, that breaker would start closed
//! with an empty window: during an incident, a reload would send full traffic to a dependency
//! known to be down. [`CircuitBreaker::reconfigured`] builds the new breaker where the old
//! one stands instead.

use std::sync::atomic::Ordering;

use crate::breaker::CircuitBreaker;
use crate::config::CircuitBreakerConfig;
use crate::core::Core;
use crate::lane::WARMING;
use crate::state::{State, Word};
use crate::window::Window;

impl CircuitBreaker {
    /// A new breaker with `config`'s settings that starts where this one stands: use it to
    /// change thresholds at run time without closing an open breaker.
    ///
    /// What the new breaker takes over:
    ///
    /// | this breaker is | the new one is |
    /// |---|---|
    /// | closed or metrics-only | the same, with this window's calls (count windows of the same size; otherwise an empty window) and failures in a row; the new thresholds judge the next call recorded |
    /// | open | open until the same instant (the new `open_duration` applies from its next trip) |
    /// | half-open | open with no time left: the next call starts new probes (probes in flight report to this breaker) |
    /// | forced open, disabled | the same |
    ///
    /// Its counters (calls, rejections, transitions) and [`last_trip`](crate::Snapshot::last_trip)
    /// continue this breaker's. What does not carry over: a time window's calls (its buckets
    /// are tied to this breaker's clock), the growth of an open-duration backoff, the
    /// results of calls still in flight on this breaker (they report to it), and event
    /// subscriptions ([`subscribe`](Self::subscribe) to the new breaker). An automatic
    /// half-open transition that was pending happens on the new breaker's first call.
    ///
    /// ```
    /// # fn main() -> Result<(), staunch_core::ConfigError> {
    /// use staunch_circuit_breaker::{CircuitBreaker, State};
    ///
    /// let breaker = CircuitBreaker::builder("ledger").minimum_calls(2).build()?;
    /// breaker.try_acquire().unwrap().failure();
    /// breaker.try_acquire().unwrap().failure();
    /// assert_eq!(breaker.state(), State::Open);
    ///
    /// let looser = CircuitBreaker::builder("ledger")
    ///     .minimum_calls(2)
    ///     .failure_rate_threshold(90.0)
    ///     .build_config()?;
    /// let reloaded = breaker.reconfigured(looser);
    /// assert_eq!(reloaded.state(), State::Open);
    /// assert_eq!(reloaded.snapshot().failure_rate_threshold, 90.0);
    /// # Ok(()) }
    /// ```
    pub fn reconfigured(&self, config: CircuitBreakerConfig) -> CircuitBreaker {
        let fresh = CircuitBreaker::from_config(config);
        // Both cores are reached through a lane (whose reference to its core is weak), so
        // this module needs nothing of `CircuitBreaker`'s private fields: each breaker holds
        // its core, so both upgrades succeed.
        if let (Some(old), Some(new)) = (self.lane().core.upgrade(), fresh.lane().core.upgrade()) {
            carry(&old, &new);
        }
        fresh
    }
}

/// Copies `old`'s state into `new`, a breaker nobody else holds yet.
fn carry(old: &Core, new: &Core) {
    let from = old.lock();
    let mut to = new.lock();
    let word = old.word();
    let lane_successes: u64 = old
        .lanes
        .iter()
        .map(|l| l.successes.load(Ordering::Relaxed))
        .sum();
    let rejections: u64 = old
        .lanes
        .iter()
        .map(|l| l.rejections.load(Ordering::Relaxed))
        .sum();

    // Counters since the old breaker was built: the new lanes start at zero, so the old
    // lanes' successes join the successes counted outside them.
    new.lanes[0].rejections.store(rejections, Ordering::Relaxed);
    to.failed_calls = from.failed_calls;
    to.slow_calls = from.slow_calls;
    to.other_successes = from.other_successes.saturating_add(lane_successes);
    to.transitions = from.transitions;
    to.last_trip = from.last_trip;

    let state = match word.state() {
        State::HalfOpen => State::Open,
        state => state,
    };
    let carried = Word::new(word.generation(), state);
    match state {
        State::Closed | State::MetricsOnly => {
            if let (
                Window::Count {
                    size: old_size,
                    events: old_events,
                    base: old_base,
                    recorded: old_recorded,
                    failures: old_failures,
                    slow: old_slow,
                },
                Window::Count {
                    size,
                    events,
                    base,
                    recorded,
                    failures,
                    slow,
                },
            ) = (&from.window, &mut to.window)
                && old_size == size
            {
                events.clone_from(old_events);
                *recorded = *old_recorded;
                *failures = *old_failures;
                *slow = *old_slow;
                // Positions count the lanes' successes since the window's reset; the new
                // lanes start at zero, so the base moves back by the old lanes' total.
                *base = old_base.wrapping_sub(lane_successes);
            }
            let counts = new.counts(&mut to, carried);
            let warming = if counts.calls < u64::from(new.config.minimum_calls) {
                WARMING
            } else {
                0
            };
            new.hot
                .consecutive
                .store(old.consecutive_failures() | warming, Ordering::Relaxed);
        }
        State::Open => {
            // `open_until` counts from each breaker's own time origin.
            let left = old
                .hot
                .open_until
                .load(Ordering::Relaxed)
                .saturating_sub(old.now_nanos());
            let until = if word.state() == State::HalfOpen {
                new.now_nanos()
            } else {
                new.now_nanos().saturating_add(left)
            };
            new.hot.open_until.store(until, Ordering::Relaxed);
        }
        _ => {}
    }
    new.hot.state.store(carried.0, Ordering::Release);
    tracing::debug!(
        breaker = %new.name,
        state = %state,
        "circuit breaker reconfigured, state carried over"
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{CircuitBreaker, State};

    fn builder() -> crate::CircuitBreakerBuilder {
        CircuitBreaker::builder("carried")
            .count_window(10)
            .minimum_calls(4)
            .open_duration(Duration::from_secs(10))
    }

    #[test]
    fn a_closed_window_carries_its_calls_to_new_thresholds() {
        let breaker = builder().failure_rate_threshold(90.0).build().unwrap();
        for _ in 0..3 {
            breaker.try_acquire().unwrap().success();
        }
        breaker.try_acquire().unwrap().failure();
        breaker.try_acquire().unwrap().failure();
        let before = breaker.snapshot();
        assert_eq!(before.state, State::Closed);

        let tighter = breaker.reconfigured(
            builder()
                .failure_rate_threshold(50.0)
                .build_config()
                .unwrap(),
        );
        let after = tighter.snapshot();
        assert_eq!(after.calls_in_window, 5);
        assert_eq!(after.failures_in_window, 2);
        assert_eq!(after.consecutive_failures, 2);
        assert_eq!(after.successful_calls, before.successful_calls);
        assert_eq!(after.failed_calls, before.failed_calls);
        // 3 of 6 = 50 %: the next failure trips the new thresholds.
        tighter.try_acquire().unwrap().failure();
        assert_eq!(tighter.state(), State::Open);
        assert_eq!(
            breaker.state(),
            State::Closed,
            "the old breaker is untouched"
        );
    }

    #[test]
    fn positions_keep_sliding_after_the_carry() {
        let breaker = builder().build().unwrap();
        for _ in 0..50 {
            breaker.try_acquire().unwrap().success();
        }
        breaker.try_acquire().unwrap().failure();
        let carried = breaker.reconfigured(builder().build_config().unwrap());
        assert_eq!(carried.snapshot().calls_in_window, 10);
        assert_eq!(carried.snapshot().failures_in_window, 1);
        // Ten more successes push the failure out of the window of ten.
        for _ in 0..10 {
            carried.try_acquire().unwrap().success();
        }
        assert_eq!(carried.snapshot().failures_in_window, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_stays_open_for_the_time_it_had_left() {
        let breaker = builder().build().unwrap();
        for _ in 0..4 {
            breaker.try_acquire().unwrap().failure();
        }
        assert_eq!(breaker.state(), State::Open);
        tokio::time::advance(Duration::from_secs(4)).await;

        let carried = breaker.reconfigured(
            builder()
                .failure_rate_threshold(80.0)
                .build_config()
                .unwrap(),
        );
        assert_eq!(carried.state(), State::Open);
        let open = carried.try_acquire().unwrap_err();
        assert_eq!(open.retry_after(), Some(Duration::from_secs(6)));
        assert!(carried.snapshot().last_trip.is_some());
        tokio::time::advance(Duration::from_secs(6)).await;
        let probe = carried.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert_eq!(carried.state(), State::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_restarts_its_probes_and_manual_states_stay() {
        let breaker = builder().build().unwrap();
        for _ in 0..4 {
            breaker.try_acquire().unwrap().failure();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let _probe = breaker.try_acquire().unwrap();
        assert_eq!(breaker.state(), State::HalfOpen);
        let carried = breaker.reconfigured(builder().build_config().unwrap());
        assert_eq!(carried.state(), State::Open);
        assert!(carried.try_acquire().unwrap().is_probe());

        for (set, state) in [
            (
                CircuitBreaker::force_open as fn(&CircuitBreaker),
                State::ForcedOpen,
            ),
            (CircuitBreaker::disable, State::Disabled),
            (CircuitBreaker::metrics_only, State::MetricsOnly),
        ] {
            let breaker = builder().build().unwrap();
            set(&breaker);
            let carried = breaker.reconfigured(builder().build_config().unwrap());
            assert_eq!(carried.state(), state);
        }
    }
}
