//! Settings of a whole stack, as plain data: written in code or loaded from a file (feature
//! `serde`), validated by the layers' own builders.

use std::time::Duration;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use staunch_bulkhead::BulkheadConfig;
use staunch_circuit_breaker::BreakerConfig;
use staunch_retry::{HedgeConfig, RetryConfig};
use staunch_timeout::DeadlineConfig;

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
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub timeout: Option<Duration>,
    /// Limit of one attempt (default 2 s). A timed-out attempt counts as a failure for the
    /// breaker and is retried.
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
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
