//! Settings of a circuit breaker: the builder, its defaults, and validation.

use std::sync::Arc;
use std::time::Duration;

use staunch_core::{Backoff, ConfigError};

use crate::breaker::CircuitBreaker;

/// Which recent calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `size` recorded calls, however old.
    Count {
        /// How many calls the window holds.
        size: u32,
    },
    /// The calls recorded in the last `duration`, kept in `buckets` buckets of equal width
    /// (a bucket expires as a whole, so the window slides in steps of `duration / buckets`).
    Time {
        /// How far back the window reaches.
        duration: Duration,
        /// How many buckets the window is cut into.
        buckets: u32,
    },
}

/// How long the breaker stays open before it lets probes through.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenDuration {
    /// The same wait after every trip.
    Fixed(Duration),
    /// A wait drawn from a backoff schedule: it grows with each re-open (a half-open breaker
    /// whose probes failed) and starts over once the breaker has closed.
    Backoff(Backoff),
}

/// How an open breaker becomes half-open once its open duration has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HalfOpenTransition {
    /// On the first call after the wait (no timer, no task). The breaker keeps reporting
    /// [`State::Open`](crate::State::Open) until a call arrives.
    #[default]
    Lazy,
    /// A tokio task moves the breaker to half-open (and re-opens a half-open breaker whose
    /// probes hang) when the time comes, so the reported state is always current. Needs a
    /// tokio runtime when the breaker trips; without one it falls back to [`Lazy`](Self::Lazy).
    Automatic,
}

/// The validated settings of a circuit breaker, shared by every breaker built from them
/// (the per-key breakers of a [`KeyedCircuitBreakerLayer`](crate::KeyedCircuitBreakerLayer)).
#[derive(Debug, Clone)]
pub struct CircuitBreakerConfig {
    pub(crate) name: Arc<str>,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) open_duration: OpenDuration,
    pub(crate) permitted_calls_in_half_open: u32,
    pub(crate) max_half_open_duration: Option<Duration>,
    pub(crate) half_open_transition: HalfOpenTransition,
    pub(crate) event_capacity: usize,
}

impl CircuitBreakerConfig {
    /// The breaker's name (the prefix of per-key breakers' names).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The failure rate, in percent of the calls in the window, at which the breaker trips.
    pub fn failure_rate_threshold(&self) -> f64 {
        self.failure_rate_threshold
    }

    /// The slow-call rate, in percent, at which it trips (used only with
    /// [`slow_call_duration`](Self::slow_call_duration)).
    pub fn slow_call_rate_threshold(&self) -> f64 {
        self.slow_call_rate_threshold
    }

    /// How long a call may take before it counts as slow, if slow calls are measured.
    pub fn slow_call_duration(&self) -> Option<Duration> {
        self.slow_call_duration
    }

    /// The sliding window the rates are computed over.
    pub fn sliding_window(&self) -> SlidingWindow {
        self.window
    }

    /// The calls the window must hold before a rate can trip the breaker.
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// The failures in a row that trip the breaker, if configured.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// How long the breaker stays open before it probes.
    pub fn open_duration(&self) -> &OpenDuration {
        &self.open_duration
    }

    /// The probes let through while half-open.
    pub fn permitted_calls_in_half_open(&self) -> u32 {
        self.permitted_calls_in_half_open
    }

    /// How long the breaker may stay half-open before it opens again, if bounded.
    pub fn max_half_open_duration(&self) -> Option<Duration> {
        self.max_half_open_duration
    }

    /// Whether an open breaker moves to half-open by itself or on the next call.
    pub fn half_open_transition(&self) -> HalfOpenTransition {
        self.half_open_transition
    }

    /// Builds a new breaker from these settings, called `name`.
    pub fn breaker(&self, name: impl Into<Arc<str>>) -> CircuitBreaker {
        let mut config = self.clone();
        config.name = name.into();
        CircuitBreaker::from_config(config)
    }
}

/// Sets up a [`CircuitBreaker`]; start from [`CircuitBreaker::builder`].
///
/// Defaults, and why:
///
/// | setting | default | why |
/// |---|---|---|
/// | `failure_rate_threshold` | 50 % | half the calls failing is an outage, not noise |
/// | `sliding_window` | last 100 calls | enough calls for a rate to mean something |
/// | `minimum_calls` | 20 | never trip on the first unlucky calls after a (re)start |
/// | `slow_call_duration` | off | "slow" depends on the dependency; set it when you know |
/// | `slow_call_rate_threshold` | 100 % | once slow calls are on: trip when all are slow |
/// | `consecutive_failures` | off | a rate over a window is the steadier signal |
/// | `open_duration` | fixed 10 s | long enough to relieve the dependency, short enough to notice recovery |
/// | `permitted_calls_in_half_open` | 5 | a handful of probes, not a flood |
/// | `max_half_open_duration` | 30 s | probes that hang must not keep the breaker half-open |
/// | `half_open_transition` | lazy | no task or timer unless asked for |
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct CircuitBreakerBuilder {
    config: CircuitBreakerConfig,
}

impl CircuitBreakerBuilder {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            config: CircuitBreakerConfig {
                name,
                failure_rate_threshold: 50.0,
                slow_call_rate_threshold: 100.0,
                slow_call_duration: None,
                window: SlidingWindow::Count { size: 100 },
                minimum_calls: 20,
                consecutive_failures: None,
                open_duration: OpenDuration::Fixed(Duration::from_secs(10)),
                permitted_calls_in_half_open: 5,
                max_half_open_duration: Some(Duration::from_secs(30)),
                half_open_transition: HalfOpenTransition::Lazy,
                event_capacity: 64,
            },
        }
    }

    /// Trips when at least this percentage of the calls in the window failed, in `(0, 100]`.
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.config.failure_rate_threshold = percent;
        self
    }

    /// Trips when at least this percentage of the calls in the window were slow, in `(0, 100]`.
    /// Only used with a [`slow_call_duration`](Self::slow_call_duration).
    pub fn slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.config.slow_call_rate_threshold = percent;
        self
    }

    /// A call that takes at least this long counts as slow, even when it succeeds.
    ///
    /// Measuring durations reads the clock twice per call, so it is off by default.
    pub fn slow_call_duration(mut self, threshold: Duration) -> Self {
        self.config.slow_call_duration = Some(threshold);
        self
    }

    /// The calls the rates are computed over (default: the last 100 calls).
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.config.window = window;
        self
    }

    /// Shorthand for a count-based window of the last `size` calls.
    pub fn count_window(self, size: u32) -> Self {
        self.sliding_window(SlidingWindow::Count { size })
    }

    /// Shorthand for a time-based window of the last `duration`, in `buckets` buckets.
    pub fn time_window(self, duration: Duration, buckets: u32) -> Self {
        self.sliding_window(SlidingWindow::Time { duration, buckets })
    }

    /// The rates are only acted on once the window holds this many calls (default 20).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.minimum_calls = calls;
        self
    }

    /// Also trips after this many failures in a row, whatever the window says.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.config.consecutive_failures = Some(failures);
        self
    }

    /// Stays open for the same `duration` after every trip (default 10 s).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.config.open_duration = OpenDuration::Fixed(duration);
        self
    }

    /// Stays open for a duration drawn from `backoff`: it grows with every re-open and starts
    /// over once the breaker closes. Use a seeded backoff in tests for exact durations.
    pub fn open_backoff(mut self, backoff: Backoff) -> Self {
        self.config.open_duration = OpenDuration::Backoff(backoff);
        self
    }

    /// How many probe calls a half-open breaker lets through (default 5). Their success rate
    /// decides whether it closes or opens again.
    pub fn permitted_calls_in_half_open(mut self, calls: u32) -> Self {
        self.config.permitted_calls_in_half_open = calls;
        self
    }

    /// Re-opens a half-open breaker whose probes have not all finished after `duration`
    /// (default 30 s).
    pub fn max_half_open_duration(mut self, duration: Duration) -> Self {
        self.config.max_half_open_duration = Some(duration);
        self
    }

    /// Lets a half-open breaker wait for its probes for as long as they take.
    pub fn unbounded_half_open(mut self) -> Self {
        self.config.max_half_open_duration = None;
        self
    }

    /// How an open breaker becomes half-open (default [`HalfOpenTransition::Lazy`]).
    pub fn half_open_transition(mut self, transition: HalfOpenTransition) -> Self {
        self.config.half_open_transition = transition;
        self
    }

    /// How many events a slow [`subscribe`](CircuitBreaker::subscribe)r may fall behind
    /// before it misses some (default 64).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = capacity;
        self
    }

    /// Validates the settings and builds the breaker.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when: the name is empty; a rate threshold is outside
    /// `(0, 100]`; the window has size 0, a zero duration, no buckets, more than 128 buckets
    /// or buckets narrower than a millisecond; `minimum_calls` is 0 or larger than a count
    /// window; `consecutive_failures` is 0; a duration is zero; `permitted_calls_in_half_open` is 0;
    /// `event_capacity` is 0.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        let config = self.build_config()?;
        Ok(CircuitBreaker::from_config(config))
    }

    /// Validates and builds, errors naming the field alone: for a settings section
    /// ([`BreakerConfig`](crate::BreakerConfig)), whose place in a file the caller knows.
    pub(crate) fn build_in_section(self) -> Result<CircuitBreaker, ConfigError> {
        validate(&self.config)?;
        Ok(CircuitBreaker::from_config(self.config))
    }

    /// Validates the settings without building a breaker: for per-key breakers, which are
    /// built later from the shared settings.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_config(self) -> Result<CircuitBreakerConfig, ConfigError> {
        let c = self.config;
        let section = c.name.to_string();
        validate(&c).map_err(|e| e.within(&section))?;
        Ok(c)
    }
}

/// Every lane keeps a counter per bucket, and evaluating the window (on a failure) reads them
/// all: a finer window buys little and costs memory and time on the failure path.
const MAX_BUCKETS: u32 = 128;

fn percent(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 && value <= 100.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("must be a percentage in (0, 100] (got {value})"),
        ))
    }
}

fn nonzero(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(ConfigError::new(field, "must be greater than zero"))
    } else {
        Ok(())
    }
}

fn validate(c: &CircuitBreakerConfig) -> Result<(), ConfigError> {
    if c.name.is_empty() {
        return Err(ConfigError::new("name", "must not be empty"));
    }
    percent("failure_rate_threshold", c.failure_rate_threshold)?;
    percent("slow_call_rate_threshold", c.slow_call_rate_threshold)?;
    if let Some(d) = c.slow_call_duration {
        nonzero("slow_call_duration", d)?;
    }
    match c.window {
        SlidingWindow::Count { size } => {
            if size == 0 {
                return Err(ConfigError::new(
                    "sliding_window.size",
                    "must be greater than zero",
                ));
            }
            if c.minimum_calls > size {
                return Err(ConfigError::new(
                    "minimum_calls",
                    format!(
                        "must not exceed the count window's size ({size}), or the breaker could never trip (got {})",
                        c.minimum_calls
                    ),
                ));
            }
        }
        SlidingWindow::Time { duration, buckets } => {
            nonzero("sliding_window.duration", duration)?;
            if buckets == 0 || buckets > MAX_BUCKETS {
                return Err(ConfigError::new(
                    "sliding_window.buckets",
                    format!("must be between 1 and {MAX_BUCKETS} (got {buckets})"),
                ));
            }
            // Bucket epochs are kept in 40 bits: 1 ms buckets last 34 years.
            if duration / buckets < Duration::from_millis(1) {
                return Err(ConfigError::new(
                    "sliding_window.buckets",
                    format!(
                        "must leave buckets at least 1 ms wide ({buckets} buckets over {duration:?})"
                    ),
                ));
            }
        }
    }
    if c.minimum_calls == 0 {
        return Err(ConfigError::new("minimum_calls", "must be at least 1"));
    }
    if c.consecutive_failures == Some(0) {
        return Err(ConfigError::new(
            "consecutive_failures",
            "must be at least 1",
        ));
    }
    if let OpenDuration::Fixed(d) = c.open_duration {
        nonzero("open_duration", d)?;
    }
    if c.permitted_calls_in_half_open == 0 {
        return Err(ConfigError::new(
            "permitted_calls_in_half_open",
            "must be at least 1",
        ));
    }
    if let Some(d) = c.max_half_open_duration {
        nonzero("max_half_open_duration", d)?;
    }
    if c.event_capacity == 0 {
        return Err(ConfigError::new("event_capacity", "must be at least 1"));
    }
    Ok(())
}
