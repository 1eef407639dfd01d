//! [`RetryConfig`], [`BudgetConfig`] and [`HedgeConfig`]: retry settings as plain data, for
//! settings files (feature `serde`).

use std::time::Duration;

use staunch_core::{BackoffConfig, ConfigError, Maybe};

use crate::{
    HedgeDelay, HedgeLayer, RetryBudget, RetryBudgetBuilder, RetryPolicy, RetryPolicyBuilder,
};

/// Retry settings; unset fields keep [`RetryPolicyBuilder`]'s defaults. With the `serde`
/// feature it reads from any serde format as a table, durations in human form.
///
/// ```toml
/// max_attempts = 3
/// backoff = { strategy = "exponential", base = "100ms", max_delay = "2s", jitter = "full" }
/// budget = { ratio = 0.2, min_per_sec = 10, ttl = "10s" }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_retry_after: Option<Duration>,
    /// Also retry non-idempotent HTTP requests without an `Idempotency-Key` (default false).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub retry_non_idempotent: Option<bool>,
    /// The retry budget (default: 20% of requests plus 10 per second, over 10 s).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub budget: Option<BudgetConfig>,
}

/// A retry budget's settings; unset fields keep [`RetryBudgetBuilder`]'s defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub ttl: Option<Duration>,
}

/// Hedging settings: when an attempt is slower than the delay, one more copy is sent and the
/// first success wins ([`HedgeLayer`]). Hedges draw on the retry budget, so during an outage
/// hedging stops instead of doubling the load, and only requests the retry layer could replay
/// (idempotent, cloneable) are hedged.
///
/// `delay = "50ms"` hedges after a fixed 50 ms. With `percentile = 0.95` the delay is the
/// observed p95 latency, and `delay` is used until `min_samples` calls have been seen.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct HedgeConfig {
    /// The hedge delay, or the fallback of a percentile delay (required, greater than zero).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
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

impl RetryConfig {
    /// Attempts per call when `max_attempts` is not set (the retry policy's own default).
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// Builds a retry policy called `name` whose calls end after `max_total_time`, drawing on
    /// `budget` (e.g. a running policy's) when given, else on a new budget from the `budget`
    /// section.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field within this section (`max_attempts`,
    /// `backoff.base`, `budget.ratio`); prefix it with the section's place in your file with
    /// [`ConfigError::within`].
    pub fn build(
        &self,
        name: &str,
        max_total_time: Duration,
        budget: Option<RetryBudget>,
    ) -> Result<RetryPolicy, ConfigError> {
        self.builder(name, max_total_time, budget)?.build()
    }

    /// Like [`build`](Self::build), stopping before the policy's own validation so the caller
    /// can add what the section does not hold (e.g.
    /// [`attempts_cut_by`](RetryPolicyBuilder::attempts_cut_by)).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the `backoff` or `budget` sections; the rest is validated by
    /// [`RetryPolicyBuilder::build`].
    pub fn builder(
        &self,
        name: &str,
        max_total_time: Duration,
        budget: Option<RetryBudget>,
    ) -> Result<RetryPolicyBuilder, ConfigError> {
        let backoff = self.backoff.as_ref().map(BackoffConfig::build).transpose();
        let budget = match (budget, &self.budget) {
            (Some(shared), _) => Some(shared),
            (None, Some(section)) => Some(section.build()?),
            (None, None) => None,
        };
        Ok(RetryPolicy::builder()
            .name(name)
            .max_total_time(max_total_time)
            .maybe(self.max_attempts, RetryPolicyBuilder::max_attempts)
            .maybe(
                backoff.map_err(|e| e.within("backoff"))?,
                RetryPolicyBuilder::backoff,
            )
            .maybe(self.max_retry_after, RetryPolicyBuilder::max_retry_after)
            .maybe(
                self.retry_non_idempotent,
                RetryPolicyBuilder::retry_non_idempotent,
            )
            .maybe(budget, RetryPolicyBuilder::budget))
    }
}

impl BudgetConfig {
    /// Builds the budget.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field as the budget's builder does (`budget.ratio`).
    pub fn build(&self) -> Result<RetryBudget, ConfigError> {
        RetryBudget::builder()
            .maybe(self.ratio, RetryBudgetBuilder::ratio)
            .maybe(self.min_per_sec, RetryBudgetBuilder::min_per_sec)
            .maybe(self.ttl, RetryBudgetBuilder::ttl)
            .build()
    }
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

    /// Builds a hedging layer drawing on `policy`'s budget, not counting requests (the retry
    /// layer around it does).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `hedge.delay` (unset or zero), `hedge.percentile` (outside
    /// `(0, 1)`) or `hedge.min_samples` (set without a percentile).
    pub fn build(&self, policy: RetryPolicy) -> Result<HedgeLayer, ConfigError> {
        let Some(delay) = self.delay else {
            return Err(ConfigError::new("delay", "must be set").within("hedge"));
        };
        let delay = match (self.percentile, self.min_samples) {
            (Some(percentile), min_samples) => HedgeDelay::Percentile {
                percentile,
                fallback: delay,
                min_samples: min_samples.unwrap_or(Self::DEFAULT_MIN_SAMPLES),
            },
            (None, Some(_)) => {
                let rule = "only applies with `percentile` (a fixed delay needs no samples)";
                return Err(ConfigError::new("min_samples", rule).within("hedge"));
            }
            (None, None) => HedgeDelay::Fixed(delay),
        };
        HedgeLayer::new(policy, delay).map(|layer| layer.count_requests(false))
    }
}

#[cfg(feature = "serde")]
staunch_core::tables! {
    RetryConfig: "a table of retry settings", serialize;
    BudgetConfig: "a table of retry budget settings", serialize;
    HedgeConfig: "a table of hedging settings", serialize;
}
