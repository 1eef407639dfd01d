//! The circuit breaker engine's public face: admit or reject calls, manual control, metrics.
// The hot path is a handful of instructions around three atomic operations; measured, it
// ran 2-3x slower when these small functions stayed calls (and moved permits through memory).
#![allow(clippy::inline_always)]

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use crossbeam_utils::CachePadded;
use staunch_core::{AnyError, BreakerOpen, Classify};
use tokio::sync::broadcast;

use crate::config::{CircuitBreakerBuilder, CircuitBreakerConfig};
use crate::core::{Core, probe_tag};
use crate::events::{Event, TransitionReason};
use crate::future::CallFuture;
use crate::lane::{Lane, lane_count, thread_index};
use crate::permit::{Kind, Permit};
use crate::state::{State, Word};
use crate::window::Counts;

/// A circuit breaker: lets calls through while the dependency is healthy, rejects them at
/// once while it is not, and probes carefully to find out when it has recovered.
///
/// Cloning is cheap and every clone is the same breaker: keep one as a handle (for manual
/// control and metrics) after giving another to a
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), staunch_core::ConfigError> {
/// use staunch_circuit_breaker::{CircuitBreaker, CircuitBreakerError, State};
///
/// let breaker = CircuitBreaker::builder("inventory").build()?;
/// let stock: Result<u32, CircuitBreakerError<std::io::Error>> =
///     breaker.call(async { Ok(42) }).await;
/// assert_eq!(stock.unwrap(), 42);
///
/// breaker.force_open();
/// let rejected = breaker.call(async { Ok::<_, std::io::Error>(1) }).await;
/// assert!(rejected.unwrap_err().is_open());
/// assert_eq!(breaker.state(), State::ForcedOpen);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    core: Arc<Core>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.core.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A cheap picture of a breaker: its state, its window, and its counters since it was built.
///
/// With the `serde` feature it serializes for a status page (`serde_json::to_value`): the
/// state as `"closed"`, `"open"`, ... and [`last_trip`](Self::last_trip) saying why an open
/// breaker is open (its window is emptied when it opens, so `failure_rate` reads 0 then).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Snapshot {
    /// The current state.
    pub state: State,
    /// Failed calls in the window, as a percentage of the calls in it (0 when empty, and
    /// while the breaker is not closed: see [`last_trip`](Self::last_trip)).
    pub failure_rate: f64,
    /// Slow calls in the window, as a percentage of the calls in it (0 when empty).
    pub slow_call_rate: f64,
    /// Calls in the window (closed and metrics-only states; probes are not in the window).
    pub calls_in_window: u64,
    /// Failed calls in the window.
    pub failures_in_window: u64,
    /// Slow calls in the window.
    pub slow_calls_in_window: u64,
    /// Failures in a row, now (0 after a success, and after the breaker opened).
    pub consecutive_failures: u64,
    /// Successful calls recorded, ever (probes included; discarded results are not).
    pub successful_calls: u64,
    /// Failed calls recorded, ever.
    pub failed_calls: u64,
    /// Slow calls recorded, ever.
    pub slow_calls: u64,
    /// Calls rejected, ever.
    pub rejected_calls: u64,
    /// State changes, ever.
    pub transitions: u64,
    /// The failure rate (percent) at which the breaker trips: its configured threshold.
    pub failure_rate_threshold: f64,
    /// The slow-call rate (percent) at which it trips, when slow calls are measured.
    pub slow_call_rate_threshold: Option<f64>,
    /// The failures in a row at which it trips, when configured.
    pub consecutive_failures_threshold: Option<u32>,
    /// Why and when the breaker last opened (by itself; a forced open is not a trip), kept
    /// after it closes again. `None` if it never tripped.
    pub last_trip: Option<Trip>,
}

/// Why and when a breaker opened: the figures that tripped it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Trip {
    /// What tripped it: the failure rate, the slow-call rate, failures in a row, failed
    /// half-open probes, or probes that did not finish in time.
    pub reason: TransitionReason,
    /// The failure rate (percent) over the window (or over the probes) when it opened.
    pub failure_rate: f64,
    /// The slow-call rate (percent) over the window (or over the probes) when it opened.
    pub slow_call_rate: f64,
    /// Calls in the window (or probes finished) when it opened.
    pub calls: u64,
    /// Failed calls among them.
    pub failures: u64,
    /// Slow calls among them.
    pub slow_calls: u64,
    /// Failures in a row when it opened.
    pub consecutive_failures: u64,
    /// When it opened, by the wall clock (serialized as milliseconds since the Unix epoch,
    /// `opened_at_ms`).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "opened_at_ms", serialize_with = "serde_time::unix_millis")
    )]
    pub opened_at: SystemTime,
    /// How long it stays open before probing (serialized as milliseconds, `open_for_ms`).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "open_for_ms", serialize_with = "serde_time::millis")
    )]
    pub open_for: Duration,
}

impl Trip {
    pub(crate) fn new(
        reason: TransitionReason,
        counts: Counts,
        consecutive_failures: u64,
        open_for: Duration,
    ) -> Self {
        Trip {
            reason,
            failure_rate: percent(counts.failures, counts.calls),
            slow_call_rate: percent(counts.slow, counts.calls),
            calls: counts.calls,
            failures: counts.failures,
            slow_calls: counts.slow,
            consecutive_failures,
            opened_at: SystemTime::now(),
            open_for,
        }
    }
}

/// `n` as a percentage of `of` (0 when `of` is 0).
fn percent(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 * 100.0 / of as f64
    }
}

#[cfg(feature = "serde")]
mod serde_time {
    use std::time::{Duration, SystemTime};

    pub(super) fn unix_millis<S: serde::Serializer>(
        at: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let since = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        millis(&since, serializer)
    }

    pub(super) fn millis<S: serde::Serializer>(
        d: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl CircuitBreaker {
    /// Starts configuring a breaker called `name` (used in errors, events, logs and metrics).
    pub fn builder(name: impl Into<Arc<str>>) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::new(name.into())
    }

    pub(crate) fn from_config(config: CircuitBreakerConfig) -> Self {
        Self {
            core: Core::new(config, lane_count()),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The settings it was built with.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.core.config
    }

    /// The current state. With a lazy half-open transition an open breaker whose wait is
    /// over still reports [`State::Open`] until a call arrives.
    pub fn state(&self) -> State {
        self.core.word().state()
    }

    /// Whether a [`BreakerRegistry`](crate::BreakerRegistry) holding this handle may forget
    /// the breaker. Nothing else may refer to it: no other handle (this is the registry's own)
    /// and no call in flight (a permit holds its lane). And forgetting it must lose no verdict
    /// still in force: closed, open with its open period over, or half-open with no probe
    /// running (the permit check covers probes). Open within its period, or in a state set by
    /// hand, it is kept.
    ///
    /// The counts are read in this order so that a permit taken through another handle is
    /// seen: a handle exists until after its permit does.
    pub(crate) fn is_evictable(&self) -> bool {
        if Arc::strong_count(&self.core) != 1 {
            return false;
        }
        let verdict_over = match self.core.word().state() {
            State::Closed | State::HalfOpen => true,
            State::Open => {
                self.core.now_nanos() >= self.core.hot.open_until.load(Ordering::Relaxed)
            }
            State::ForcedOpen | State::Disabled | State::MetricsOnly => false,
        };
        verdict_over
            && self
                .core
                .lanes
                .iter()
                .all(|lane| Arc::strong_count(lane) == 1)
    }

    #[inline(always)]
    pub(crate) fn lane(&self) -> &Arc<CachePadded<Lane>> {
        let lanes = &self.core.lanes;
        // The lane count is a power of two.
        &lanes[thread_index() & (lanes.len() - 1)]
    }

    /// Asks to make one call: a [`Permit`] to report the outcome to, or the rejection.
    ///
    /// Lock-free when closed; an open breaker whose wait is over moves to half-open here, and
    /// a half-open breaker reserves one of its probe slots atomically.
    ///
    /// ```
    /// # fn main() -> Result<(), staunch_core::ConfigError> {
    /// use staunch_circuit_breaker::CircuitBreaker;
    ///
    /// let breaker = CircuitBreaker::builder("ledger").build()?;
    /// match breaker.try_acquire() {
    ///     Ok(permit) => {
    ///         let ok = true; // ... make the call ...
    ///         if ok { permit.success() } else { permit.failure() }
    ///     }
    ///     Err(open) => println!("not calling: {open}"),
    /// }
    /// # Ok(()) }
    /// ```
    #[inline(always)]
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        // The common case inline; every other state out of line.
        let word = Word(self.core.hot.state.load(Ordering::Acquire));
        let lane = self.lane();
        if word.state() == State::Closed {
            return Ok(Permit::new(lane, word, Kind::Window));
        }
        self.try_acquire_slow(lane, word)
    }

    /// `try_acquire` for the response futures: the permit goes straight into `called`, with no
    /// `Result` in between (moving the permit through one cost a store-forwarding stall).
    #[inline(always)]
    pub(crate) fn acquire_into<S, R>(
        &self,
        state: S,
        called: impl FnOnce(S, Permit) -> R,
        rejected: impl FnOnce(S, BreakerOpen) -> R,
    ) -> R {
        let word = Word(self.core.hot.state.load(Ordering::Acquire));
        let lane = self.lane();
        if word.state() == State::Closed {
            return called(state, Permit::new(lane, word, Kind::Window));
        }
        match self.try_acquire_slow(lane, word) {
            Ok(permit) => called(state, permit),
            Err(open) => rejected(state, open),
        }
    }

    #[inline(never)]
    fn try_acquire_slow(
        &self,
        lane: &Arc<CachePadded<Lane>>,
        mut word: Word,
    ) -> Result<Permit, BreakerOpen> {
        let hot = &lane.hot;
        // A transition can race with us; after a few rounds, reject rather than spin.
        for _ in 0..4 {
            match word.state() {
                State::Closed | State::MetricsOnly => {
                    return Ok(Permit::new(lane, word, Kind::Window));
                }
                State::Disabled => return Ok(Permit::new(lane, word, Kind::Free)),
                State::Open => {
                    let now = self.core.now_nanos();
                    let until = hot.open_until.load(Ordering::Relaxed);
                    if now < until {
                        let wait = Duration::from_nanos(until - now);
                        return Err(self.reject(lane, State::Open, Some(wait)));
                    }
                    self.core.to_half_open(word);
                }
                State::HalfOpen => {
                    if let Some(permit) = self.try_probe(lane, word) {
                        return Ok(permit);
                    }
                    if self.core.config.max_half_open_duration.is_some()
                        && self.core.now_nanos() >= hot.half_open_until.load(Ordering::Relaxed)
                    {
                        self.core.half_open_timed_out(word);
                    } else {
                        return Err(self.reject(lane, State::HalfOpen, None));
                    }
                }
                State::ForcedOpen => return Err(self.reject(lane, State::ForcedOpen, None)),
            }
            word = Word(hot.state.load(Ordering::Acquire));
        }
        Err(self.reject(lane, word.state(), None))
    }

    /// Whether a call made now would be rejected, without reserving anything, moving to
    /// half-open or counting a rejection. The layer's `poll_ready` uses it so that a call the
    /// breaker will refuse does not first wait for the inner service (a full bulkhead below)
    /// to become ready. Closed: one atomic load.
    #[inline]
    pub(crate) fn rejects_now(&self) -> bool {
        let word = Word(self.core.hot.state.load(Ordering::Acquire));
        match word.state() {
            State::Closed | State::MetricsOnly | State::Disabled => false,
            State::ForcedOpen => true,
            State::Open => {
                let until = self.lane().hot.open_until.load(Ordering::Relaxed);
                self.core.now_nanos() < until
            }
            State::HalfOpen => {
                let hot = &self.lane().hot;
                let current = hot.probes.load(Ordering::Acquire);
                let limit = u64::from(self.core.config.permitted_calls_in_half_open);
                let full = current >> 32 == probe_tag(word) && current & 0xFFFF_FFFF >= limit;
                let timed_out = self.core.config.max_half_open_duration.is_some()
                    && self.core.now_nanos() >= hot.half_open_until.load(Ordering::Relaxed);
                full && !timed_out
            }
        }
    }

    /// The rejection for a call whose `poll_ready` found the breaker rejecting
    /// ([`rejects_now`](Self::rejects_now)): counted and reported like any other rejection,
    /// with the wait that is left when the breaker is open.
    #[cold]
    pub(crate) fn reject_unready(&self) -> BreakerOpen {
        let lane = self.lane();
        let state = self.core.word().state();
        let retry_after = (state == State::Open).then(|| {
            let until = lane.hot.open_until.load(Ordering::Relaxed);
            Duration::from_nanos(until.saturating_sub(self.core.now_nanos()))
        });
        self.reject(lane, state, retry_after)
    }

    fn try_probe(&self, lane: &Arc<CachePadded<Lane>>, word: Word) -> Option<Permit> {
        let probes = &lane.hot.probes;
        let tag = probe_tag(word);
        let limit = u64::from(self.core.config.permitted_calls_in_half_open);
        let mut current = probes.load(Ordering::Acquire);
        loop {
            if current >> 32 != tag || current & 0xFFFF_FFFF >= limit {
                return None;
            }
            match probes.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Permit::new(lane, word, Kind::Probe)),
                Err(actual) => current = actual,
            }
        }
    }

    #[cold]
    fn reject(&self, lane: &Lane, state: State, retry_after: Option<Duration>) -> BreakerOpen {
        lane.rejections.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(breaker = %self.core.name, state = %state, "circuit breaker rejected a call");
        #[cfg(feature = "metrics")]
        self.core.metrics.rejection();
        if self.core.subscribed.load(Ordering::Relaxed) {
            let _ = self.core.events.send(Event::Rejected {
                breaker: Arc::clone(&self.core.name),
                state,
            });
        }
        BreakerOpen::new(Arc::clone(&self.core.name), retry_after)
    }

    /// Runs `future` through the breaker: every `Err` counts as a failure.
    ///
    /// The permit is taken now, not on the first poll: a rejected call's future resolves at
    /// once to [`CircuitBreakerError::Open`](crate::CircuitBreakerError::Open) without
    /// polling `future`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future before it finishes counts as a cancelled call (ignored),
    /// and gives a half-open probe slot back.
    #[inline]
    pub fn call<F, T, E>(&self, future: F) -> CallFuture<F, AnyError>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_with(AnyError::new(), future)
    }

    /// Runs `future` through the breaker, letting `classifier` decide what counts as a
    /// failure (and what a cancelled call counts as).
    ///
    /// # Cancel safety
    ///
    /// As [`call`](Self::call), with the classifier's `classify_cancelled` outcome.
    #[inline]
    pub fn call_with<F, C, T, E>(&self, classifier: C, future: F) -> CallFuture<F, C>
    where
        F: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
    {
        let cancelled = classifier.classify_cancelled();
        self.acquire_into(
            (future, classifier),
            |(future, classifier), permit| {
                CallFuture::called(future, permit.cancelled_as(cancelled), classifier)
            },
            |(_, classifier), open| CallFuture::rejected(open, classifier),
        )
    }

    /// Opens the breaker until [`reset`](Self::reset): every call is rejected.
    pub fn force_open(&self) {
        self.core.set_manual(State::ForcedOpen);
    }

    /// Switches the breaker off until [`reset`](Self::reset): every call flows, nothing is
    /// recorded.
    pub fn disable(&self) {
        self.core.set_manual(State::Disabled);
    }

    /// Lets every call flow while still recording outcomes (visible in [`snapshot`]), without
    /// ever tripping: to watch a new breaker's verdicts before trusting them.
    ///
    /// [`snapshot`]: Self::snapshot
    pub fn metrics_only(&self) {
        self.core.set_manual(State::MetricsOnly);
    }

    /// Closes the breaker with an empty window and a fresh open-duration backoff, from any
    /// state. Results of calls started before the reset are discarded.
    pub fn reset(&self) {
        self.core.set_manual(State::Closed);
    }

    /// Receives the breaker's [`Event`]s from now on.
    ///
    /// A receiver that falls more than `event_capacity` events behind misses the oldest
    /// (`RecvError::Lagged`); the breaker never waits for subscribers.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        let receiver = self.core.events.subscribe();
        self.core.subscribed.store(true, Ordering::Relaxed);
        receiver
    }

    /// The breaker's state, window and counters right now. Takes the slow-path lock briefly;
    /// meant for dashboards and health endpoints, not for every call.
    pub fn snapshot(&self) -> Snapshot {
        let core = &self.core;
        let mut slow = core.lock();
        let word = core.word();
        let counts = match word.state() {
            State::Closed | State::MetricsOnly => core.counts(&mut slow, word),
            _ => Counts::default(),
        };
        let lane_successes: u64 = core
            .lanes
            .iter()
            .map(|l| l.successes.load(Ordering::Relaxed))
            .sum();
        let rejected: u64 = core
            .lanes
            .iter()
            .map(|l| l.rejections.load(Ordering::Relaxed))
            .sum();
        let config = &core.config;
        Snapshot {
            state: word.state(),
            failure_rate: percent(counts.failures, counts.calls),
            slow_call_rate: percent(counts.slow, counts.calls),
            calls_in_window: counts.calls,
            failures_in_window: counts.failures,
            slow_calls_in_window: counts.slow,
            consecutive_failures: core.consecutive_failures(),
            successful_calls: lane_successes + slow.other_successes,
            failed_calls: slow.failed_calls,
            slow_calls: slow.slow_calls,
            rejected_calls: rejected,
            transitions: slow.transitions,
            failure_rate_threshold: config.failure_rate_threshold,
            slow_call_rate_threshold: config
                .slow_call_duration
                .map(|_| config.slow_call_rate_threshold),
            consecutive_failures_threshold: config.consecutive_failures,
            last_trip: slow.last_trip,
        }
    }

    /// Emits the snapshot's gauges through the `metrics` crate (labelled with the breaker's
    /// name); call it from a periodic task. Transitions and rejections are counted as they
    /// happen.
    #[cfg(feature = "metrics")]
    pub fn emit_metrics(&self) {
        self.core.metrics.snapshot(&self.snapshot());
    }
}
