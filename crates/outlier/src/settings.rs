//! [`Settings`]: when an endpoint is ejected and for how long, checked once by a builder.

use std::time::Duration;

use staunch_core::ConfigError;

/// The optional failure-rate test: every `interval`, an endpoint that answered at least
/// `minimum_requests` calls in it, `threshold` percent or more of them failures, is ejected
/// (Envoy's `failure_percentage` test).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureRate {
    /// How often the rates are judged; each judgement looks at the calls since the last.
    pub interval: Duration,
    /// Calls an endpoint must have answered in the interval to be judged at all.
    pub minimum_requests: u32,
    /// The failure percentage (in `(0, 100]`) at or above which an endpoint is ejected.
    pub threshold: f64,
}

/// Validated outlier detection settings; build them with [`Settings::builder`].
///
/// | setting | default | why |
/// |---|---|---|
/// | `consecutive_failures` | 5 | Envoy's `consecutive_5xx`: one bad answer is noise, five in a row is a sick replica |
/// | `base_ejection_time` | 30 s | Envoy's default; the `n`th ejection lasts `n ×` this |
/// | `max_ejection_time` | 300 s (or `base_ejection_time` if longer) | Envoy's default: a replica that keeps failing is still retried every five minutes |
/// | `max_ejection_percent` | 50 % | more than half the replicas failing is an outage of the service, not outliers; the rest must carry the load |
/// | `failure_rate` | off | needs traffic to judge; turn it on for replicas that fail some calls but rarely several in a row |
///
/// The cap rounds down: with 3 endpoints, 50 % lets one out at a time, and 33 % or less lets
/// none out at all (Envoy ejects one regardless; staunch keeps the promise the setting makes).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub(crate) consecutive_failures: u32,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejection_percent: u32,
    pub(crate) failure_rate: Option<FailureRate>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_mins(5),
            max_ejection_percent: 50,
            failure_rate: None,
        }
    }
}

impl Settings {
    /// Settings with these three values and the defaults for the rest (no failure-rate
    /// test, `max_ejection_time` 300 s or `base_ejection_time` if longer).
    ///
    /// # Errors
    ///
    /// As [`SettingsBuilder::build`].
    pub fn new(
        consecutive_failures: u32,
        base_ejection_time: Duration,
        max_ejection_percent: u32,
    ) -> Result<Self, ConfigError> {
        Self::builder()
            .consecutive_failures(consecutive_failures)
            .base_ejection_time(base_ejection_time)
            .max_ejection_percent(max_ejection_percent)
            .build()
    }

    /// A builder starting from the defaults (see the table above).
    pub fn builder() -> SettingsBuilder {
        SettingsBuilder::default()
    }

    /// Failures in a row that eject an endpoint.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How long a first ejection lasts.
    pub fn base_ejection_time(&self) -> Duration {
        self.base_ejection_time
    }

    /// The longest an ejection lasts, however many came before.
    pub fn max_ejection_time(&self) -> Duration {
        self.max_ejection_time
    }

    /// The share of endpoints (percent, rounded down) that may be out at once.
    pub fn max_ejection_percent(&self) -> u32 {
        self.max_ejection_percent
    }

    /// The failure-rate test, if on.
    pub fn failure_rate(&self) -> Option<FailureRate> {
        self.failure_rate
    }

    /// How long the `times`th ejection lasts: `base × times`, at most `max_ejection_time`.
    pub(crate) fn ejection_time(&self, times: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(times)
            .min(self.max_ejection_time)
    }

    /// How many of `total` endpoints may be out at once.
    pub(crate) fn cap(&self, total: usize) -> usize {
        // `total * percent` cannot overflow for any list that fits in memory (percent <= 100,
        // and 100 × the count of endpoints a `Vec` can hold fits in `usize` on 64-bit);
        // saturating keeps the promise anyway.
        total.saturating_mul(self.max_ejection_percent as usize) / 100
    }
}

/// Builds [`Settings`]; [`build`](Self::build) checks every value and names the one that
/// breaks a rule.
#[derive(Debug, Clone, Default)]
pub struct SettingsBuilder {
    consecutive_failures: Option<u32>,
    base_ejection_time: Option<Duration>,
    max_ejection_time: Option<Duration>,
    max_ejection_percent: Option<u32>,
    failure_rate: Option<FailureRate>,
}

impl SettingsBuilder {
    /// Failures in a row that eject an endpoint (default 5, at least 1).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = Some(n);
        self
    }

    /// How long a first ejection lasts (default 30 s, more than zero); the `n`th lasts `n ×`
    /// this, up to `max_ejection_time`.
    pub fn base_ejection_time(mut self, time: Duration) -> Self {
        self.base_ejection_time = Some(time);
        self
    }

    /// The longest an ejection lasts (default 300 s, or `base_ejection_time` if longer; at
    /// least `base_ejection_time`).
    pub fn max_ejection_time(mut self, time: Duration) -> Self {
        self.max_ejection_time = Some(time);
        self
    }

    /// The share of endpoints that may be out at once, in percent, rounded down (default 50,
    /// `1..=100`).
    pub fn max_ejection_percent(mut self, percent: u32) -> Self {
        self.max_ejection_percent = Some(percent);
        self
    }

    /// Turns on the failure-rate test: every `interval`, an endpoint with at least
    /// `minimum_requests` calls in it of which `threshold` percent or more failed is ejected.
    pub fn failure_rate(
        mut self,
        interval: Duration,
        minimum_requests: u32,
        threshold: f64,
    ) -> Self {
        self.failure_rate = Some(FailureRate {
            interval,
            minimum_requests,
            threshold,
        });
        self
    }

    /// Checks every value.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `consecutive_failures` of 0, a zero
    /// `base_ejection_time`, a `max_ejection_time` shorter than `base_ejection_time`, a
    /// `max_ejection_percent` of 0 or above 100, and for the failure-rate test a zero
    /// `failure_rate.interval`, a `failure_rate.minimum_requests` of 0 or a
    /// `failure_rate.threshold` that is not a number in `(0, 100]`.
    pub fn build(self) -> Result<Settings, ConfigError> {
        let defaults = Settings::default();
        let consecutive_failures = self
            .consecutive_failures
            .unwrap_or(defaults.consecutive_failures);
        if consecutive_failures == 0 {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        let base_ejection_time = self
            .base_ejection_time
            .unwrap_or(defaults.base_ejection_time);
        if base_ejection_time.is_zero() {
            return Err(ConfigError::new(
                "base_ejection_time",
                "must be greater than zero",
            ));
        }
        let max_ejection_time = match self.max_ejection_time {
            Some(max) if max < base_ejection_time => {
                return Err(ConfigError::new(
                    "max_ejection_time",
                    format!(
                        "must be at least base_ejection_time ({base_ejection_time:?}; got {max:?})"
                    ),
                ));
            }
            Some(max) => max,
            None => defaults.max_ejection_time.max(base_ejection_time),
        };
        let max_ejection_percent = self
            .max_ejection_percent
            .unwrap_or(defaults.max_ejection_percent);
        if !(1..=100).contains(&max_ejection_percent) {
            return Err(ConfigError::new(
                "max_ejection_percent",
                format!("must be in 1..=100 (got {max_ejection_percent})"),
            ));
        }
        if let Some(rate) = &self.failure_rate {
            if rate.interval.is_zero() {
                return Err(ConfigError::new(
                    "failure_rate.interval",
                    "must be greater than zero",
                ));
            }
            if rate.minimum_requests == 0 {
                return Err(ConfigError::new(
                    "failure_rate.minimum_requests",
                    "must be at least 1",
                ));
            }
            if !(rate.threshold.is_finite() && rate.threshold > 0.0 && rate.threshold <= 100.0) {
                return Err(ConfigError::new(
                    "failure_rate.threshold",
                    format!("must be a percentage in (0, 100] (got {})", rate.threshold),
                ));
            }
        }
        Ok(Settings {
            consecutive_failures,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent,
            failure_rate: self.failure_rate,
        })
    }
}

impl From<&Settings> for SettingsBuilder {
    fn from(settings: &Settings) -> Self {
        Self {
            consecutive_failures: Some(settings.consecutive_failures),
            base_ejection_time: Some(settings.base_ejection_time),
            max_ejection_time: Some(settings.max_ejection_time),
            max_ejection_percent: Some(settings.max_ejection_percent),
            failure_rate: settings.failure_rate,
        }
    }
}
