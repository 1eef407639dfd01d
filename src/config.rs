//! Settings of a whole stack, as plain data: written in code or loaded from a file (feature
//! `serde`), validated by the layers' own builders.

use std::time::Duration;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

#[cfg(feature = "serde")]
mod load;

/// The per-attempt time limit when none is configured.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The overall time limit (every attempt and every wait) when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The settings of one stack (one dependency: `payment`, `inventory`, ...).
///
/// Every field is optional: an unset field keeps the layer's own default (documented on each
/// builder), except the two timeouts, whose defaults are [`DEFAULT_TIMEOUT`] and
/// [`DEFAULT_ATTEMPT_TIMEOUT`], and the breaker's failure-rate threshold, which follows the
/// retries' `max_attempts` ([`BreakerConfig::default_failure_rate_threshold`]: 79 % with the
/// default 3 attempts, because the breaker sees every attempt). With the `serde` feature it reads from and writes to any
/// serde format; durations are written in human form (`"250ms"`, `"30s"`), unknown fields are
/// an error (a typo must not silently fall back to a default).
///
/// ```toml
/// timeout = "3s"            # the whole call, retries and waits included
/// attempt_timeout = "500ms" # one attempt
///
/// [breaker]
/// failure_rate_threshold = 50.0
/// minimum_calls = 20
/// open_duration = "10s"
/// sliding_window = { kind = "count", size = 100 }
///
/// [bulkhead]
/// max_concurrent = 32
/// max_wait = "20ms"
/// adaptive = { algorithm = "vegas", min_limit = 4, max_limit = 128 }
///
/// [retry]
/// max_attempts = 3
/// backoff = { strategy = "exponential", base = "100ms", max_delay = "2s", jitter = "full" }
/// budget = { ratio = 0.2, min_per_sec = 10, ttl = "10s" }
///
/// [hedge]
/// delay = "50ms"            # or the observed p95 latency, 50ms until 100 calls were seen:
/// # percentile = 0.95
/// # min_samples = 100
///
/// [deadline.outgoing]       # tell the callee how long it has left
/// margin = "5ms"
/// header = "x-request-timeout"
///
/// [deadline.incoming]       # read the caller's remaining time (server side)
/// budget = "10s"
/// ```
///
/// Values are checked when a stack is built ([`StackConfig::build`], the presets, the
/// [`Registry`](crate::Registry)); a bad one is a [`ConfigError`](crate::ConfigError) whose
/// field is the whole path, e.g. `payment.breaker.failure_rate_threshold`.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct StackConfig {
    /// Overall limit of a call: every attempt and every backoff wait (default 5 s). A retry
    /// whose wait would end past it is not made.
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub timeout: Option<Duration>,
    /// Limit of one attempt (default 2 s). A timed-out attempt counts as a failure for the
    /// breaker and is retried.
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub attempt_timeout: Option<Duration>,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// The bulkhead.
    pub bulkhead: BulkheadConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Hedging: a second attempt for slow calls (default: off). See [`HedgeConfig`].
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub hedge: Option<HedgeConfig>,
    /// Deadlines across service boundaries (default: off). See [`DeadlineConfig`].
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub deadline: Option<DeadlineConfig>,
}

/// Circuit breaker settings; see `CircuitBreakerBuilder` for each one's default and meaning.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Trips when at least this percentage of calls (attempts, behind the stack's retries)
    /// failed, in `(0, 100]`. Default in a stack: the attempt failure rate at which half the
    /// calls fail after all their retries, 79 with the default 3 attempts (50 with 1, 71
    /// with 2; see [`BreakerConfig::default_failure_rate_threshold`]). Built alone
    /// ([`BreakerConfig::build`]): the breaker's own default, 50.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub failure_rate_threshold: Option<f64>,
    /// Trips when at least this percentage of calls were slow, in `(0, 100]` (default 100).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub slow_call_rate_threshold: Option<f64>,
    /// A call at least this long is slow (default: off).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub slow_call_duration: Option<Duration>,
    /// The calls the rates are computed over (default: the last 100).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub sliding_window: Option<WindowConfig>,
    /// Calls needed in the window before the rates count (default 20).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub minimum_calls: Option<u32>,
    /// Also trips after this many failures in a row (default: off).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub consecutive_failures: Option<u32>,
    /// How long it stays open (default 10 s).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub open_duration: Option<Duration>,
    /// Probes let through when half-open (default 5).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub permitted_calls_in_half_open: Option<u32>,
    /// Re-opens a half-open breaker whose probes have not finished after this long
    /// (default 30 s).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub max_half_open_duration: Option<Duration>,
}

impl BreakerConfig {
    /// The failure-rate threshold of a stack whose configuration sets none, for a stack that
    /// makes up to `max_attempts` attempts per call: the attempt failure rate at which half
    /// the calls still fail after all their attempts, `100 × 0.5^(1/max_attempts)` rounded
    /// to a whole percent (50, 71, 79, 84, 87 for 1 to 5 attempts; 0 counts as 1).
    ///
    /// Why: the breaker sits inside the retries and sees every attempt. The usual 50 % (the
    /// breaker crate's default, resilience4j's) is meant for a breaker that sees calls; with
    /// three attempts, a dependency failing half its attempts fails only one call in eight,
    /// and one that fails every call's first attempt fails none, yet a 50 % breaker would cut
    /// it off. At this threshold the breaker opens when about half the *calls* would fail
    /// anyway. It is also always above the highest failure rate retries can hide entirely
    /// (`(n - 1) / n`: every call succeeding at its last attempt, 67 % for three attempts),
    /// since `(1 - 1/n)^n < 1/e < 1/2`.
    ///
    /// ```
    /// use staunch::BreakerConfig;
    ///
    /// assert_eq!(BreakerConfig::default_failure_rate_threshold(1), 50.0);
    /// assert_eq!(BreakerConfig::default_failure_rate_threshold(3), 79.0);
    /// ```
    pub fn default_failure_rate_threshold(max_attempts: u32) -> f64 {
        let attempts = f64::from(max_attempts.max(1));
        (100.0 * 0.5_f64.powf(attempts.recip())).round()
    }
}

/// A breaker's sliding window: `{ kind = "count", size = 100 }` or
/// `{ kind = "time", duration = "60s", buckets = 60 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)
)]
pub enum WindowConfig {
    /// The last `size` calls.
    Count {
        /// How many calls.
        size: u32,
    },
    /// The calls of the last `duration`, in `buckets` buckets.
    Time {
        /// How far back.
        #[cfg_attr(feature = "serde", serde(with = "crate::duration"))]
        duration: Duration,
        /// How many buckets.
        buckets: u32,
    },
}

/// Bulkhead settings; see `BulkheadBuilder` for each one's default and meaning.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct BulkheadConfig {
    /// Calls in flight at most (default 25).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_concurrent: Option<usize>,
    /// How long a call may wait for a permit (default zero: fail fast).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub max_wait: Option<Duration>,
    /// Calls that may wait at once (default: `max_concurrent`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_queued: Option<usize>,
    /// Lets the limit move with observed latency and failures (default: a fixed limit).
    /// `max_concurrent` is then the initial limit and must lie within the algorithm's
    /// bounds. See [`AdaptiveConfig`].
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub adaptive: Option<AdaptiveConfig>,
}

/// Retry settings; see `RetryPolicyBuilder` for each one's default and meaning. The overall
/// deadline is the stack's [`timeout`](StackConfig::timeout).
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts per call, the first included (default 3; 1 turns retries off).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_attempts: Option<u32>,
    /// The waits between attempts (default: exponential from 100 ms, capped at 10 s, full
    /// jitter).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub backoff: Option<BackoffConfig>,
    /// The longest server hint (`Retry-After`, gRPC pushback) honoured (default 30 s).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub max_retry_after: Option<Duration>,
    /// Also retry non-idempotent HTTP requests without an `Idempotency-Key` (default false).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub retry_non_idempotent: Option<bool>,
    /// The retry budget (default: 20% of requests plus 10 per second, over 10 s).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub budget: Option<BudgetConfig>,
}

impl RetryConfig {
    /// Attempts per call when `max_attempts` is not set (the retry policy's own default).
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
}

/// A backoff: `{ strategy = "exponential", base = "100ms", max_delay = "2s", jitter = "full" }`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(remote = "Self", deny_unknown_fields))]
#[non_exhaustive]
pub struct BackoffConfig {
    /// How the delay grows.
    pub strategy: BackoffStrategy,
    /// The first delay (the constant delay of a constant backoff).
    #[cfg_attr(feature = "serde", serde(with = "crate::duration"))]
    pub base: Duration,
    /// Growth factor of an exponential backoff (default 2).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub multiplier: Option<f64>,
    /// Increment of a linear backoff (default: the base).
    #[cfg_attr(
        feature = "serde",
        serde(
            default,
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub step: Option<Duration>,
    /// Randomness mixed into each delay (default full; none for decorrelated).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub jitter: Option<JitterConfig>,
    /// Upper bound of every delay, after jitter.
    #[cfg_attr(
        feature = "serde",
        serde(
            default,
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub max_delay: Option<Duration>,
    /// Ends the schedule once this much time has passed.
    #[cfg_attr(
        feature = "serde",
        serde(
            default,
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub max_elapsed: Option<Duration>,
    /// Seeds the random number generator (tests only).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub seed: Option<u64>,
}

impl BackoffConfig {
    /// A backoff of `strategy` from `base`, the other settings at their defaults.
    pub const fn new(strategy: BackoffStrategy, base: Duration) -> Self {
        Self {
            strategy,
            base,
            multiplier: None,
            step: None,
            jitter: None,
            max_delay: None,
            max_elapsed: None,
            seed: None,
        }
    }
}

/// The growth of a [`BackoffConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum BackoffStrategy {
    /// The same delay every time.
    Constant,
    /// `base + n * step`.
    Linear,
    /// `base * multiplier^n`.
    Exponential,
    /// `base * fib(n)`.
    Fibonacci,
    /// AWS-style decorrelated jitter.
    Decorrelated,
}

/// Jitter: `"none"`, `"full"`, `"equal"` or `{ proportional = 0.2 }`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum JitterConfig {
    /// Exactly the delay.
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// Uniform in `[d/2, d]`.
    Equal,
    /// Uniform in `[d(1-f), d(1+f)]`.
    Proportional(f64),
}

/// A retry budget's settings; see `RetryBudgetBuilder`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Retries per request, in `[0, 1000]` (default 0.2).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub ratio: Option<f64>,
    /// Retries per second whatever the request rate (default 10).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub min_per_sec: Option<u32>,
    /// Length of the window, from 1 s to 60 s (default 10 s).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub ttl: Option<Duration>,
}

/// Settings for several named stacks: what a configuration file holds, one table per
/// dependency. Serialized as a map from name to [`StackConfig`].
///
/// ```toml
/// [payment]
/// attempt_timeout = "250ms"
/// breaker = { failure_rate_threshold = 25.0 }
///
/// [inventory]
/// bulkhead = { max_concurrent = 64 }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
#[non_exhaustive]
pub struct RegistryConfig {
    /// The stacks, by name.
    pub stacks: std::collections::BTreeMap<String, StackConfig>,
}

/// An adaptive bulkhead limit: `{ algorithm = "aimd", ... }` or `{ algorithm = "vegas", ... }`;
/// see `staunch::bulkhead::AdaptiveLimit` for how each moves the limit.
///
/// ```toml
/// [bulkhead]
/// max_concurrent = 16   # the initial limit
/// adaptive = { algorithm = "aimd", min_limit = 4, max_limit = 64, latency_threshold = "200ms" }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "algorithm", rename_all = "snake_case"))]
pub enum AdaptiveConfig {
    /// Additive increase, multiplicative decrease: grows by one per successful call, shrinks
    /// by `backoff_ratio` on a failure or a call slower than `latency_threshold`.
    Aimd(AimdConfig),
    /// Latency gradient (TCP Vegas style): grows while fewer than `alpha` calls seem queued in
    /// the dependency, shrinks above `beta`.
    Vegas(VegasConfig),
}

/// AIMD settings; unset fields keep `Aimd`'s defaults (limits `[1, 1000]`, `backoff_ratio`
/// 0.9, no latency threshold).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct AimdConfig {
    /// The limit never goes below this (default 1).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub min_limit: Option<usize>,
    /// The limit never goes above this (default 1000).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_limit: Option<usize>,
    /// Factor applied to the limit on a failure or a slow call, in `(0, 1)` (default 0.9).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub backoff_ratio: Option<f64>,
    /// A successful call slower than this lowers the limit (default: only failures do).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub latency_threshold: Option<Duration>,
}

/// Vegas settings; unset fields keep `Vegas`'s defaults (limits `[1, 1000]`, `alpha` 3,
/// `beta` 6, `backoff_ratio` 0.9, `probe_every` 1000).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct VegasConfig {
    /// The limit never goes below this (default 1).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub min_limit: Option<usize>,
    /// The limit never goes above this (default 1000).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_limit: Option<usize>,
    /// Below this many estimated queued calls the limit grows (default 3).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub alpha: Option<f64>,
    /// Above this many estimated queued calls the limit shrinks; must exceed `alpha`
    /// (default 6).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub beta: Option<f64>,
    /// Factor applied to the limit on a failure, in `(0, 1)` (default 0.9).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub backoff_ratio: Option<f64>,
    /// Re-measures the no-load latency every this many samples (default 1000).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub probe_every: Option<u64>,
}

/// Hedging settings: when an attempt is slower than the delay, one more copy is sent and the
/// first success wins (`staunch::retry::HedgeLayer`). Hedges draw on the stack's retry
/// budget, so during an outage hedging stops instead of doubling the load, and only requests
/// the retry layer could replay (idempotent, cloneable) are hedged.
///
/// `delay = "50ms"` hedges after a fixed 50 ms. With `percentile = 0.95` the delay is the
/// observed p95 latency, and `delay` is used until `min_samples` calls have been seen.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct HedgeConfig {
    /// The hedge delay, or the fallback of a percentile delay (required, greater than zero).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub delay: Option<Duration>,
    /// Hedge after this percentile of the observed latencies, in `(0, 1)` (default: a fixed
    /// delay).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub percentile: Option<f64>,
    /// Calls observed before the percentile replaces `delay` (default 100; only with
    /// `percentile`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub min_samples: Option<u64>,
}

impl HedgeConfig {
    /// Calls observed before a percentile delay is used, when `min_samples` is not set.
    pub const DEFAULT_MIN_SAMPLES: u64 = 100;

    /// A hedge after a fixed `delay`.
    pub const fn fixed(delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            percentile: None,
            min_samples: None,
        }
    }
}

/// Deadlines across service boundaries (`staunch::timeout`'s `PropagateDeadlineLayer` and
/// `DeadlineLayer`).
///
/// - `outgoing`: the presets (`http::client`, `grpc::channel`) and the registry's clients
///   write the time the callee has left onto every attempt they send: the earliest of the
///   request's `Deadline` (e.g. set by the server side from its own caller) and the attempt's
///   time limit, minus `margin`. An attempt with no time left is not sent (it fails as
///   elapsed).
/// - `incoming`: for the server side of the same service: the layer that reads the caller's
///   remaining time from the request ([`StackHandle::incoming_deadline`]), capped by
///   `budget`.
///
/// [`StackHandle::incoming_deadline`]: crate::StackHandle::incoming_deadline
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct DeadlineConfig {
    /// Writing the remaining time onto outgoing requests (default: not written).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub outgoing: Option<OutgoingDeadlineConfig>,
    /// Reading the caller's remaining time from incoming requests (default: not read).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub incoming: Option<IncomingDeadlineConfig>,
}

/// How the remaining time is written onto outgoing requests; see `PropagateDeadlineLayer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct OutgoingDeadlineConfig {
    /// Time kept back for the answer's trip home: the callee is told `remaining - margin`
    /// (default zero).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub margin: Option<Duration>,
    /// The HTTP header written (default `x-request-timeout`; `""` writes none, which needs
    /// `grpc = true`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub header: Option<String>,
    /// The header's syntax (default `grpc_timeout`, e.g. `1500m`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub format: Option<HeaderFormatConfig>,
    /// Also write `grpc-timeout` (default false).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub grpc: Option<bool>,
}

/// How the caller's remaining time is read from incoming requests; see `DeadlineLayer`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct IncomingDeadlineConfig {
    /// The longest this service spends on one request, whatever the caller allows (default:
    /// only the caller's headers count).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub budget: Option<Duration>,
    /// The HTTP header read (default `x-request-timeout`; `""` reads none).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub header: Option<String>,
    /// The header's syntax (default `grpc_timeout`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub format: Option<HeaderFormatConfig>,
    /// Also read `grpc-timeout` (default true).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub grpc: Option<bool>,
}

/// The syntax of a deadline header: `"grpc_timeout"` (`1500m`) or `"millis"` (`1500`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum HeaderFormatConfig {
    /// The `grpc-timeout` syntax: digits and a unit, e.g. `1500m`.
    GrpcTimeout,
    /// Whole milliseconds, e.g. `1500`.
    Millis,
}

/// Settings of a partitioned bulkhead (`staunch::bulkhead::PartitionedBulkhead`): one limit
/// per key (tenant, host, route), a default for other keys and an optional global cap.
///
/// It is not a section of [`StackConfig`]: which partition a request belongs to is a function
/// of the request that only code can give. Embed it in your own configuration and pair the
/// built bulkhead with the key function in a `PartitionedBulkheadLayer`.
///
/// ```toml
/// default_limit = 4
/// global_limit = 64
/// max_wait = "10ms"
///
/// [partitions]
/// "big-customer" = 16
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct PartitionedBulkheadConfig {
    /// Keys with a limit of their own.
    #[cfg_attr(
        feature = "serde",
        serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")
    )]
    pub partitions: std::collections::BTreeMap<String, usize>,
    /// The limit of each other key (default 25).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub default_limit: Option<usize>,
    /// Calls in flight across all keys at most (default: no cap).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub global_limit: Option<usize>,
    /// Partitions created on the fly for other keys; further keys share one (default 1024).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_partitions: Option<usize>,
    /// How long a call may wait for its permits in total (default zero: fail fast).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "crate::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub max_wait: Option<Duration>,
    /// Calls that may wait in each partition (default: the partition's limit).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_queued: Option<usize>,
}

#[cfg(feature = "bulkhead")]
impl PartitionedBulkheadConfig {
    /// Builds a partitioned bulkhead called `name`, keyed by `String`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](crate::ConfigError) whose field is prefixed with `name`, e.g.
    /// `search.global_limit`, or `search.partitions.<key>` for a key's limit.
    ///
    /// ```
    /// use staunch::PartitionedBulkheadConfig;
    ///
    /// let mut config = PartitionedBulkheadConfig::default();
    /// config.default_limit = Some(1);
    /// config.partitions.insert("big".into(), 0);
    /// let err = config.build("search").unwrap_err();
    /// assert_eq!(err.field(), "search.partitions.big");
    /// ```
    pub fn build(
        &self,
        name: &str,
    ) -> Result<staunch_bulkhead::PartitionedBulkhead<String>, crate::ConfigError> {
        let mut b = staunch_bulkhead::PartitionedBulkhead::builder(name);
        for (key, limit) in &self.partitions {
            b = b.partition(key.clone(), *limit);
        }
        if let Some(v) = self.default_limit {
            b = b.default_limit(v);
        }
        if let Some(v) = self.global_limit {
            b = b.global_limit(v);
        }
        if let Some(v) = self.max_partitions {
            b = b.max_partitions(v);
        }
        if let Some(v) = self.max_wait {
            b = b.max_wait(v);
        }
        if let Some(v) = self.max_queued {
            b = b.max_queued(v);
        }
        b.build().map_err(|e| {
            // The builder names a key's limit `partitions["key"].max_concurrent`; in a file it
            // is `partitions.key`.
            let key = self
                .partitions
                .keys()
                .find(|key| e.field() == format!("{name}.partitions[{key:?}].max_concurrent"));
            match key {
                Some(key) => {
                    crate::ConfigError::new(format!("partitions.{key}"), e.rule().to_owned())
                        .within(name)
                }
                None => e,
            }
        })
    }
}
