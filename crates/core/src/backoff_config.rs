//! [`BackoffConfig`]: a backoff as plain data, for settings files.

use std::time::Duration;

use crate::{Backoff, ConfigError, Jitter, Maybe};

/// A backoff: `{ strategy = "exponential", base = "100ms", max_delay = "2s", jitter = "full" }`.
/// Built by [`Backoff`]'s builder; errors name the fields here (`base`, `max_delay`, ...).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(remote = "Self", deny_unknown_fields))]
#[non_exhaustive]
pub struct BackoffConfig {
    /// How the delay grows.
    pub strategy: BackoffStrategy,
    /// The first delay (the constant delay of a constant backoff).
    #[cfg_attr(feature = "serde", serde(with = "crate::settings::duration"))]
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
        serde(default, with = "crate::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
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
        serde(default, with = "crate::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_delay: Option<Duration>,
    /// Ends the schedule once this much time has passed.
    #[cfg_attr(
        feature = "serde",
        serde(default, with = "crate::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_elapsed: Option<Duration>,
    /// Seeds the random number generator (tests only).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub seed: Option<u64>,
}

#[cfg(feature = "serde")]
crate::tables! {
    BackoffConfig: "a table of backoff settings", serialize;
}

/// The growth of a [`BackoffConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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

impl From<JitterConfig> for Jitter {
    fn from(j: JitterConfig) -> Self {
        match j {
            JitterConfig::None => Jitter::None,
            JitterConfig::Full => Jitter::Full,
            JitterConfig::Equal => Jitter::Equal,
            JitterConfig::Proportional(f) => Jitter::Proportional(f),
        }
    }
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

    /// Builds the backoff.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, as [`BackoffBuilder::build`](crate::BackoffBuilder::build).
    pub fn build(&self) -> Result<Backoff, ConfigError> {
        use crate::BackoffBuilder as B;
        let b = match self.strategy {
            BackoffStrategy::Constant => Backoff::constant(self.base),
            BackoffStrategy::Linear => Backoff::linear(self.base),
            BackoffStrategy::Exponential => Backoff::exponential(self.base),
            BackoffStrategy::Fibonacci => Backoff::fibonacci(self.base),
            BackoffStrategy::Decorrelated => Backoff::decorrelated(self.base),
        };
        // Decorrelated backoff is random by construction and takes no extra jitter.
        let jitter = match (self.jitter, self.strategy) {
            (Some(j), _) => Some(j.into()),
            (None, BackoffStrategy::Decorrelated) => Some(Jitter::None),
            (None, _) => None,
        };
        b.maybe(self.multiplier, B::multiplier)
            .maybe(self.step, B::step)
            .maybe(jitter, B::jitter)
            .maybe(self.max_delay, B::max_delay)
            .maybe(self.max_elapsed, B::max_elapsed)
            .maybe(self.seed, B::seed)
            .build()
    }
}
