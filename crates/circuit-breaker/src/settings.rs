//! [`BreakerConfig`]: a breaker's settings as plain data, for settings files (feature
//! `serde`).

use std::time::Duration;

use staunch_core::{ConfigError, Maybe};

use crate::{CircuitBreaker, CircuitBreakerBuilder as B};

/// Circuit breaker settings; unset fields keep [`CircuitBreakerBuilder`](crate::CircuitBreakerBuilder)'s
/// defaults. With the `serde` feature it reads from any serde format as a table (never an
/// array), durations in human form (`"10s"`), unknown fields refused.
///
/// ```toml
/// failure_rate_threshold = 50.0
/// minimum_calls = 20
/// open_duration = "10s"
/// sliding_window = { kind = "count", size = 100 }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Trips when at least this percentage of calls failed, in `(0, 100]` (default 50; a
    /// `staunch` stack derives its default from its retries).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub failure_rate_threshold: Option<f64>,
    /// Trips when at least this percentage of calls were slow, in `(0, 100]` (default 100).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub slow_call_rate_threshold: Option<f64>,
    /// A call at least this long is slow (default: off).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
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
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub open_duration: Option<Duration>,
    /// Probes let through when half-open (default 5).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub permitted_calls_in_half_open: Option<u32>,
    /// Re-opens a half-open breaker whose probes have not finished after this long
    /// (default 30 s).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_half_open_duration: Option<Duration>,
}

/// A breaker's sliding window: `{ kind = "count", size = 100 }` or
/// `{ kind = "time", duration = "60s", buckets = 60 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
pub enum WindowConfig {
    /// The last `size` calls.
    Count {
        /// How many calls.
        size: u32,
    },
    /// The calls of the last `duration`, in `buckets` buckets.
    Time {
        /// How far back.
        #[cfg_attr(feature = "serde", serde(with = "staunch_core::settings::duration"))]
        duration: Duration,
        /// How many buckets.
        buckets: u32,
    },
}

impl BreakerConfig {
    /// The failure-rate threshold for a breaker that sits inside retries (a `staunch` stack whose
    /// configuration sets none) making up to `max_attempts` attempts per call: the attempt failure rate at which half
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
    /// use staunch_circuit_breaker::BreakerConfig;
    ///
    /// assert_eq!(BreakerConfig::default_failure_rate_threshold(1), 50.0);
    /// assert_eq!(BreakerConfig::default_failure_rate_threshold(3), 79.0);
    /// ```
    pub fn default_failure_rate_threshold(max_attempts: u32) -> f64 {
        let attempts = f64::from(max_attempts.max(1));
        (100.0 * 0.5_f64.powf(attempts.recip())).round()
    }

    /// The breaker builder for `name` with these settings applied.
    pub fn builder(&self, name: &str) -> B {
        let b = CircuitBreaker::builder(name)
            .maybe(self.failure_rate_threshold, B::failure_rate_threshold)
            .maybe(self.slow_call_rate_threshold, B::slow_call_rate_threshold)
            .maybe(self.slow_call_duration, B::slow_call_duration)
            .maybe(self.minimum_calls, B::minimum_calls)
            .maybe(self.consecutive_failures, B::consecutive_failures)
            .maybe(self.open_duration, B::open_duration)
            .maybe(
                self.permitted_calls_in_half_open,
                B::permitted_calls_in_half_open,
            )
            .maybe(self.max_half_open_duration, B::max_half_open_duration);
        match self.sliding_window {
            Some(WindowConfig::Count { size }) => b.count_window(size),
            Some(WindowConfig::Time { duration, buckets }) => b.time_window(duration, buckets),
            None => b,
        }
    }

    /// These settings with `other`'s thresholds: what a running breaker can change while
    /// keeping its state and window ([`CircuitBreaker::reconfigured`]). Reloads compare
    /// `old.with_thresholds_of(&new) == new` to carry a breaker over.
    #[must_use]
    pub fn with_thresholds_of(&self, other: &BreakerConfig) -> BreakerConfig {
        BreakerConfig {
            failure_rate_threshold: other.failure_rate_threshold,
            slow_call_rate_threshold: other.slow_call_rate_threshold,
            slow_call_duration: other.slow_call_duration,
            minimum_calls: other.minimum_calls,
            consecutive_failures: other.consecutive_failures,
            ..self.clone()
        }
    }

    /// Builds a breaker called `name`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field within this section (`minimum_calls`,
    /// `sliding_window.size`); prefix it with the section's place in your file with
    /// [`ConfigError::within`].
    pub fn build(&self, name: &str) -> Result<CircuitBreaker, ConfigError> {
        self.builder(name).build_in_section()
    }
}

#[cfg(feature = "serde")]
mod load {
    use std::time::Duration;

    use serde::Deserialize;
    use serde::de::{self, Deserializer};
    use staunch_core::settings::{foreign_key, table};

    use super::{BreakerConfig, WindowConfig};

    staunch_core::tables! {
        BreakerConfig: "a table of circuit breaker settings", serialize;
        WindowKeys: "a table with `kind = \"count\"` or `kind = \"time\"`";
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum WindowKind {
        Count,
        Time,
    }

    /// Every key a sliding window may have: serde's internally tagged enums buffer the
    /// section first (an error inside names no key) and read an array by position, so the
    /// window is read as one table and checked against its tag afterwards.
    #[derive(Deserialize)]
    #[serde(remote = "Self", deny_unknown_fields)]
    struct WindowKeys {
        kind: WindowKind,
        #[serde(default)]
        size: Option<u32>,
        #[serde(default, with = "staunch_core::settings::duration::option")]
        duration: Option<Duration>,
        #[serde(default)]
        buckets: Option<u32>,
    }

    impl<'de> Deserialize<'de> for WindowConfig {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let keys: WindowKeys = table(d)?;
            match keys.kind {
                WindowKind::Count => {
                    const KEYS: &[&str] = &["kind", "size"];
                    if keys.duration.is_some() {
                        return Err(foreign_key("duration", "a count window", KEYS));
                    }
                    if keys.buckets.is_some() {
                        return Err(foreign_key("buckets", "a count window", KEYS));
                    }
                    let size = keys.size.ok_or_else(|| de::Error::missing_field("size"))?;
                    Ok(Self::Count { size })
                }
                WindowKind::Time => {
                    const KEYS: &[&str] = &["kind", "duration", "buckets"];
                    if keys.size.is_some() {
                        return Err(foreign_key("size", "a time window", KEYS));
                    }
                    let missing = |k| de::Error::missing_field(k);
                    let duration = keys.duration.ok_or_else(|| missing("duration"))?;
                    let buckets = keys.buckets.ok_or_else(|| missing("buckets"))?;
                    Ok(Self::Time { duration, buckets })
                }
            }
        }
    }
}
