//! [`OutlierConfig`]: outlier detection settings as plain data, for settings files (feature
//! `serde`).

use std::sync::Arc;
use std::time::Duration;

use staunch_core::{ConfigError, Maybe};

use crate::balancer::Balancer;
use crate::builder::BalancerBuilder;
use crate::settings::{Settings, SettingsBuilder};

/// Outlier detection settings a settings file can hold; every field is optional and
/// defaults as in [`Settings`].
///
/// ```toml
/// consecutive_failures = 5
/// base_ejection_time = "30s"
/// max_ejection_time = "5m"
/// max_ejection_percent = 50
///
/// [failure_rate]            # optional: off when absent
/// interval = "10s"
/// minimum_requests = 50
/// threshold = 85.0          # percent of calls failing
/// ```
///
/// Every value is checked when the settings are built; a bad one is a [`ConfigError`]
/// naming it (`failure_rate.threshold` for a threshold of 150).
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint (default 5).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub consecutive_failures: Option<u32>,
    /// How long a first ejection lasts (default `"30s"`).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "staunch_core::settings::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub base_ejection_time: Option<Duration>,
    /// The longest an ejection lasts (default `"5m"`, or `base_ejection_time` if longer).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "staunch_core::settings::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub max_ejection_time: Option<Duration>,
    /// The share of endpoints out at once, in percent (default 50).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_ejection_percent: Option<u32>,
    /// The failure-rate test (default off).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub failure_rate: Option<FailureRateConfig>,
}

/// The failure-rate test's settings; absent fields take Envoy's defaults.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct FailureRateConfig {
    /// How often rates are judged (default `"10s"`).
    #[cfg_attr(
        feature = "serde",
        serde(
            with = "staunch_core::settings::duration::option",
            skip_serializing_if = "Option::is_none"
        )
    )]
    pub interval: Option<Duration>,
    /// Calls in an interval below which an endpoint is not judged (default 50).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub minimum_requests: Option<u32>,
    /// The failure percentage that ejects (default 85).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub threshold: Option<f64>,
}

impl FailureRateConfig {
    /// Envoy's default interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    /// Envoy's default `failure_percentage_request_volume`.
    pub const DEFAULT_MINIMUM_REQUESTS: u32 = 50;
    /// Envoy's default `failure_percentage_threshold`.
    pub const DEFAULT_THRESHOLD: f64 = 85.0;
}

#[cfg(feature = "serde")]
staunch_core::tables! {
    OutlierConfig: "a table of outlier detection settings", serialize;
    FailureRateConfig: "a table of failure-rate settings", serialize;
}

impl OutlierConfig {
    /// These settings on a [`SettingsBuilder`] (nothing checked yet).
    pub fn settings_builder(&self) -> SettingsBuilder {
        self.apply(Settings::builder())
    }

    /// These settings, checked.
    ///
    /// # Errors
    ///
    /// As [`SettingsBuilder::build`], naming the field as this type spells it.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        self.settings_builder().build()
    }

    /// A balancer builder called `name` with these settings; add endpoints (and a
    /// classifier) and build it.
    pub fn balancer<K, S>(&self, name: impl Into<Arc<str>>) -> BalancerBuilder<K, S> {
        let rate = self.failure_rate.as_ref().map(FailureRateConfig::resolved);
        Balancer::builder(name)
            .maybe(
                self.consecutive_failures,
                BalancerBuilder::consecutive_failures,
            )
            .maybe(self.base_ejection_time, BalancerBuilder::base_ejection_time)
            .maybe(self.max_ejection_time, BalancerBuilder::max_ejection_time)
            .maybe(
                self.max_ejection_percent,
                BalancerBuilder::max_ejection_percent,
            )
            .maybe(rate, |b, (interval, minimum, threshold)| {
                b.failure_rate(interval, minimum, threshold)
            })
    }

    fn apply(&self, builder: SettingsBuilder) -> SettingsBuilder {
        let rate = self.failure_rate.as_ref().map(FailureRateConfig::resolved);
        builder
            .maybe(
                self.consecutive_failures,
                SettingsBuilder::consecutive_failures,
            )
            .maybe(self.base_ejection_time, SettingsBuilder::base_ejection_time)
            .maybe(self.max_ejection_time, SettingsBuilder::max_ejection_time)
            .maybe(
                self.max_ejection_percent,
                SettingsBuilder::max_ejection_percent,
            )
            .maybe(rate, |b, (interval, minimum, threshold)| {
                b.failure_rate(interval, minimum, threshold)
            })
    }
}

impl FailureRateConfig {
    fn resolved(&self) -> (Duration, u32, f64) {
        (
            self.interval.unwrap_or(Self::DEFAULT_INTERVAL),
            self.minimum_requests
                .unwrap_or(Self::DEFAULT_MINIMUM_REQUESTS),
            self.threshold.unwrap_or(Self::DEFAULT_THRESHOLD),
        )
    }
}
