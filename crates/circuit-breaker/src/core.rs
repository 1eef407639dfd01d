//! The breaker's shared core: the slow path (failures, probes) and every state transition.
//!
//! Transitions happen under one mutex and publish a new state [`Word`] with a bumped
//! generation; everything a new state needs (open deadline, probe counter, emptied window) is
//! written before the word is stored with `Release`, so a call that reads the word with
//! `Acquire` sees it. The hot path never takes the mutex: only failures, slow calls, probe
//! results, and the first call after an open duration do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use staunch_core::{BackoffSchedule, Outcome, instant_after};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::{CircuitBreakerConfig, HalfOpenTransition, OpenDuration};
use crate::events::{Event, TransitionReason};
use crate::lane::{Hot, Lane, TimeBucket, WARMING};
use crate::state::{State, Word};
use crate::window::{Counts, TimeGeometry, Window};

/// State only the slow path touches.
#[derive(Debug)]
pub(crate) struct SlowPath {
    pub(crate) window: Window,
    schedule: Option<BackoffSchedule>,
    last_open: Duration,
    probe_results: u64,
    probe_failures: u64,
    probe_slow: u64,
    pub(crate) failed_calls: u64,
    pub(crate) slow_calls: u64,
    /// Successes not counted in the lanes: slow ones and probes.
    pub(crate) other_successes: u64,
    pub(crate) transitions: u64,
    /// Why and when the breaker last opened, for snapshots.
    pub(crate) last_trip: Option<crate::breaker::Trip>,
}

#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) name: Arc<str>,
    pub(crate) config: CircuitBreakerConfig,
    pub(crate) hot: Arc<CachePadded<Hot>>,
    pub(crate) lanes: Box<[Arc<CachePadded<Lane>>]>,
    pub(crate) base: Instant,
    slow: Mutex<SlowPath>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) subscribed: AtomicBool,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::Handles,
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Core {
    pub(crate) fn new(config: CircuitBreakerConfig, lane_count: usize) -> Arc<Core> {
        let base = Instant::now();
        let hot = Arc::new(CachePadded::new(Hot {
            state: Word::new(0, State::Closed).0.into(),
            consecutive: WARMING.into(),
            open_until: 0.into(),
            probes: 0.into(),
            half_open_until: 0.into(),
        }));
        let window = Window::new(config.window);
        let time = window.geometry();
        let buckets = time.map_or(0, |g| g.buckets as usize);
        let slow_nanos = config.slow_call_duration.map(nanos);
        let schedule = match &config.open_duration {
            OpenDuration::Fixed(_) => None,
            OpenDuration::Backoff(b) => Some(b.schedule()),
        };
        let (events, _) = broadcast::channel(config.event_capacity);
        Arc::new_cyclic(|weak: &Weak<Core>| {
            let lanes = (0..lane_count)
                .map(|_| {
                    Arc::new(CachePadded::new(Lane {
                        core: weak.clone(),
                        hot: Arc::clone(&hot),
                        successes: 0.into(),
                        rejections: 0.into(),
                        buckets: (0..buckets).map(|_| TimeBucket::default()).collect(),
                        time,
                        slow_nanos,
                        plain: slow_nanos.is_none() && time.is_none(),
                        base,
                    }))
                })
                .collect();
            Core {
                name: Arc::clone(&config.name),
                #[cfg(feature = "metrics")]
                metrics: crate::metrics::Handles::new(&config.name),
                config,
                hot,
                lanes,
                base,
                slow: Mutex::new(SlowPath {
                    window,
                    schedule,
                    last_open: Duration::ZERO,
                    probe_results: 0,
                    probe_failures: 0,
                    probe_slow: 0,
                    failed_calls: 0,
                    slow_calls: 0,
                    other_successes: 0,
                    transitions: 0,
                    last_trip: None,
                }),
                events,
                subscribed: AtomicBool::new(false),
            }
        })
    }

    pub(crate) fn now_nanos(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    /// Failures in a row right now.
    pub(crate) fn consecutive_failures(&self) -> u64 {
        self.hot.consecutive.load(Ordering::Relaxed) & !WARMING
    }

    pub(crate) fn word(&self) -> Word {
        Word(self.hot.state.load(Ordering::Acquire))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SlowPath> {
        // A panic while holding the lock cannot leave the counters inconsistent in a way
        // that matters more than stopping the breaker: keep going with what is there.
        self.slow
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lanes' successes the window should see: the total (count windows) or those in the
    /// window's span for this generation (time windows).
    fn lane_successes(&self, word: Word, now: u64) -> u64 {
        match self.lanes[0].time {
            None => self
                .lanes
                .iter()
                .map(|l| l.successes.load(Ordering::Relaxed))
                .sum(),
            Some(geometry) => {
                let (oldest, newest) = geometry.span(geometry.epoch(now));
                self.lanes
                    .iter()
                    .flat_map(|l| l.buckets.iter())
                    .map(|b| b.read(word.generation(), oldest, newest))
                    .sum()
            }
        }
    }

    /// The window's content right now, for snapshots.
    pub(crate) fn counts(&self, slow: &mut SlowPath, word: Word) -> Counts {
        let now = self.now_nanos();
        let epoch = slow.window.geometry().map_or(0, |g| g.epoch(now));
        let lanes = self.lane_successes(word, now);
        slow.window.counts(lanes, word.generation(), epoch)
    }

    /// A closed-state (or metrics-only) call that failed and/or was slow.
    pub(crate) fn on_event(&self, word: Word, failure: bool, is_slow: bool) {
        let mut slow = self.lock();
        if self.word() != word {
            return;
        }
        slow.failed_calls += u64::from(failure);
        slow.slow_calls += u64::from(is_slow);
        slow.other_successes += u64::from(!failure);
        let consecutive = if failure {
            (self.hot.consecutive.fetch_add(1, Ordering::Relaxed) & !WARMING) + 1
        } else {
            self.hot.consecutive.fetch_and(WARMING, Ordering::Relaxed);
            0
        };
        let now = self.now_nanos();
        let epoch = slow.window.geometry().map_or(0, |g| g.epoch(now));
        let lanes = self.lane_successes(word, now);
        slow.window
            .record(failure, is_slow, lanes, word.generation(), epoch);
        let counts = slow.window.counts(lanes, word.generation(), epoch);
        self.track_warming(counts);
        #[cfg(feature = "metrics")]
        self.metrics.window(&counts);
        if word.state() != State::Closed {
            return;
        }
        let reason = if self
            .config
            .consecutive_failures
            .is_some_and(|k| consecutive >= u64::from(k))
        {
            Some(TransitionReason::ConsecutiveFailures)
        } else {
            self.rate_exceeded(counts)
        };
        if let Some(reason) = reason {
            self.open(&mut slow, word, now, reason, counts, consecutive);
        }
    }

    /// A success while the window was below `minimum_calls`: it may be the call that brings
    /// the window to the minimum with the failure rate already over the threshold.
    pub(crate) fn on_warming_success(&self, word: Word) {
        let mut slow = self.lock();
        if self.word() != word {
            return;
        }
        let counts = self.counts(&mut slow, word);
        self.track_warming(counts);
        if word.state() == State::Closed
            && let Some(reason) = self.rate_exceeded(counts)
        {
            let now = self.now_nanos();
            self.open(&mut slow, word, now, reason, counts, 0);
        }
    }

    /// A time-window success that its lane's bucket did not take, because another thread was
    /// rotating the bucket and did not finish within a bounded spin: recorded in the locked
    /// window as a call that neither failed nor was slow, so that it is counted once, in the
    /// epoch it ended in (the lane's `successes` total has it already). Evaluated like
    /// [`on_warming_success`](Self::on_warming_success), which it replaces for this call.
    pub(crate) fn on_uncounted_success(&self, word: Word) {
        let mut slow = self.lock();
        if self.word() != word {
            return;
        }
        let now = self.now_nanos();
        let epoch = slow.window.geometry().map_or(0, |g| g.epoch(now));
        let lanes = self.lane_successes(word, now);
        slow.window
            .record(false, false, lanes, word.generation(), epoch);
        let counts = slow.window.counts(lanes, word.generation(), epoch);
        self.track_warming(counts);
        if word.state() == State::Closed
            && let Some(reason) = self.rate_exceeded(counts)
        {
            self.open(&mut slow, word, now, reason, counts, 0);
        }
    }

    /// Successes skip the window's evaluation unless the window is below `minimum_calls`.
    fn track_warming(&self, counts: Counts) {
        if counts.calls < u64::from(self.config.minimum_calls) {
            self.hot.consecutive.fetch_or(WARMING, Ordering::Relaxed);
        } else {
            self.hot.consecutive.fetch_and(!WARMING, Ordering::Relaxed);
        }
    }

    fn rate_exceeded(&self, c: Counts) -> Option<TransitionReason> {
        if c.calls < u64::from(self.config.minimum_calls) || c.calls == 0 {
            return None;
        }
        let calls = c.calls as f64;
        if c.failures as f64 * 100.0 >= self.config.failure_rate_threshold * calls {
            return Some(TransitionReason::FailureRate);
        }
        if self.config.slow_call_duration.is_some()
            && c.slow as f64 * 100.0 >= self.config.slow_call_rate_threshold * calls
        {
            return Some(TransitionReason::SlowCallRate);
        }
        None
    }

    /// A half-open probe finished.
    pub(crate) fn on_probe(&self, word: Word, outcome: Outcome, is_slow: bool) {
        let mut slow = self.lock();
        if self.word() != word {
            return;
        }
        match outcome {
            Outcome::Ignored => {
                // The probe told us nothing: give its slot to another call.
                self.hot.probes.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            Outcome::Failure => {
                slow.failed_calls += 1;
                slow.probe_failures += 1;
            }
            Outcome::Success => slow.other_successes += 1,
        }
        slow.slow_calls += u64::from(is_slow);
        slow.probe_slow += u64::from(is_slow);
        slow.probe_results += 1;
        if slow.probe_results < u64::from(self.config.permitted_calls_in_half_open) {
            return;
        }
        let counts = Counts {
            calls: slow.probe_results,
            failures: slow.probe_failures,
            slow: slow.probe_slow,
        };
        let now = self.now_nanos();
        if self.rate_exceeded_ungated(counts) {
            self.open(
                &mut slow,
                word,
                now,
                TransitionReason::ProbesFailed,
                counts,
                0,
            );
        } else {
            self.close(&mut slow, word, TransitionReason::ProbesSucceeded);
        }
    }

    fn rate_exceeded_ungated(&self, c: Counts) -> bool {
        let calls = c.calls as f64;
        c.failures as f64 * 100.0 >= self.config.failure_rate_threshold * calls
            || (self.config.slow_call_duration.is_some()
                && c.slow as f64 * 100.0 >= self.config.slow_call_rate_threshold * calls)
    }

    /// Trips (or re-opens) the breaker; the caller holds the lock and checked `from`.
    /// `counts` (the window's, or the probes') and `consecutive` failures are what tripped it,
    /// kept for snapshots: the window itself is emptied when the breaker closes again.
    fn open(
        &self,
        slow: &mut SlowPath,
        from: Word,
        now: u64,
        reason: TransitionReason,
        counts: Counts,
        consecutive: u64,
    ) {
        let wait = match (&self.config.open_duration, slow.schedule.as_mut()) {
            (OpenDuration::Backoff(backoff), Some(schedule)) => {
                // A schedule that ran out (`max_elapsed`) keeps its last wait.
                schedule
                    .next_delay()
                    .unwrap_or(if slow.last_open.is_zero() {
                        backoff.max_delay().unwrap_or(Duration::from_secs(10))
                    } else {
                        slow.last_open
                    })
            }
            (OpenDuration::Fixed(d), _) => *d,
            (OpenDuration::Backoff(_), None) => slow.last_open,
        };
        slow.last_open = wait;
        slow.last_trip = Some(crate::breaker::Trip::new(reason, counts, consecutive, wait));
        let to = from.next(State::Open);
        self.hot
            .open_until
            .store(now.saturating_add(nanos(wait)), Ordering::Relaxed);
        self.publish(slow, from, to, reason);
        if self.config.half_open_transition == HalfOpenTransition::Automatic {
            self.schedule(wait, to, Timer::HalfOpen);
        }
    }

    /// Closes the breaker with an empty window; the caller holds the lock and checked `from`.
    fn close(&self, slow: &mut SlowPath, from: Word, reason: TransitionReason) {
        self.enter_recording(slow, from, State::Closed, reason);
    }

    /// Moves to a state that records into a fresh window (closed or metrics-only).
    pub(crate) fn enter_recording(
        &self,
        slow: &mut SlowPath,
        from: Word,
        state: State,
        reason: TransitionReason,
    ) {
        let to = from.next(state);
        let lanes = self
            .lanes
            .iter()
            .map(|l| l.successes.load(Ordering::Relaxed))
            .sum();
        slow.window.reset(lanes);
        if let Some(schedule) = slow.schedule.as_mut() {
            schedule.reset();
        }
        slow.last_open = Duration::ZERO;
        self.hot.consecutive.store(WARMING, Ordering::Relaxed);
        self.publish(slow, from, to, reason);
    }

    /// An open breaker whose wait is over lets probes through.
    pub(crate) fn to_half_open(&self, from: Word) {
        let mut slow = self.lock();
        if self.word() != from || from.state() != State::Open {
            return;
        }
        let now = self.now_nanos();
        if now < self.hot.open_until.load(Ordering::Relaxed) {
            return;
        }
        let to = from.next(State::HalfOpen);
        slow.probe_results = 0;
        slow.probe_failures = 0;
        slow.probe_slow = 0;
        self.hot
            .probes
            .store(probe_tag(to) << 32, Ordering::Relaxed);
        if let Some(max) = self.config.max_half_open_duration {
            self.hot
                .half_open_until
                .store(now.saturating_add(nanos(max)), Ordering::Relaxed);
        }
        self.publish(&mut slow, from, to, TransitionReason::OpenDurationElapsed);
        if let Some(max) = self.config.max_half_open_duration
            && self.config.half_open_transition == HalfOpenTransition::Automatic
        {
            self.schedule(max, to, Timer::HalfOpenTimeout);
        }
    }

    /// A half-open breaker whose probes did not finish in time opens again.
    pub(crate) fn half_open_timed_out(&self, from: Word) {
        let mut slow = self.lock();
        if self.word() != from || from.state() != State::HalfOpen {
            return;
        }
        let now = self.now_nanos();
        if now < self.hot.half_open_until.load(Ordering::Relaxed) {
            return;
        }
        let counts = Counts {
            calls: slow.probe_results,
            failures: slow.probe_failures,
            slow: slow.probe_slow,
        };
        self.open(
            &mut slow,
            from,
            now,
            TransitionReason::HalfOpenTimedOut,
            counts,
            0,
        );
    }

    /// A manual command: moves to `state` from whatever the breaker is in.
    pub(crate) fn set_manual(&self, state: State) {
        let mut slow = self.lock();
        let from = self.word();
        match state {
            State::Closed | State::MetricsOnly => {
                self.enter_recording(&mut slow, from, state, TransitionReason::Manual);
            }
            _ => {
                let to = from.next(state);
                self.publish(&mut slow, from, to, TransitionReason::Manual);
            }
        }
    }

    /// Stores the new word and tells everyone; the caller holds the lock.
    fn publish(&self, slow: &mut SlowPath, from: Word, to: Word, reason: TransitionReason) {
        slow.transitions += 1;
        self.hot.state.store(to.0, Ordering::Release);
        tracing::debug!(
            breaker = %self.name,
            from = %from.state(),
            to = %to.state(),
            reason = reason.as_str(),
            "circuit breaker changed state"
        );
        #[cfg(feature = "metrics")]
        self.metrics.transition(to.state());
        // No receiver is not an error: events are for whoever listens.
        let _ = self.events.send(Event::StateChanged {
            breaker: Arc::clone(&self.name),
            from: from.state(),
            to: to.state(),
            reason,
        });
    }

    fn schedule(&self, after: Duration, word: Word, timer: Timer) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let core = self.lanes[0].core.clone();
        // The deadline is fixed now, not when the task first runs.
        let deadline = instant_after(Instant::now(), after);
        runtime.spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if let Some(core) = core.upgrade() {
                match timer {
                    Timer::HalfOpen => core.to_half_open(word),
                    Timer::HalfOpenTimeout => core.half_open_timed_out(word),
                }
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    HalfOpen,
    HalfOpenTimeout,
}

/// The tag of a half-open generation in the probe counter's upper half.
pub(crate) fn probe_tag(word: Word) -> u64 {
    word.generation() & 0xFFFF_FFFF
}

/// Reads a time window's epoch for a lane.
pub(crate) fn lane_epoch(geometry: TimeGeometry, lane: &Lane, now: Instant) -> u64 {
    geometry.epoch(nanos(now.saturating_duration_since(lane.base)))
}
