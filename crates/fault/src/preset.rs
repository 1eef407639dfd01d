//! Presets: the failure modes of a payment dependency, by name.

use std::time::Duration;

use staunch_core::ConfigError;

use crate::{ErrorFault, FaultConfig, LatencyFault};

impl FaultConfig {
    /// The names [`preset`](Self::preset) knows.
    pub const PRESETS: [&'static str; 4] = ["none", "slow", "error", "intermittent"];

    /// The preset called `name`: `none`, `slow`, `error` or `intermittent`.
    ///
    /// ```
    /// use staunch_fault::FaultConfig;
    ///
    /// assert_eq!(FaultConfig::preset("slow").unwrap(), FaultConfig::slow());
    /// let err = FaultConfig::preset("flaky").unwrap_err();
    /// assert_eq!(err.field(), "preset");
    /// assert!(err.to_string().contains("`flaky`"));
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the field `preset` naming the unknown preset and the known ones.
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        match name {
            "none" => Ok(Self::none()),
            "slow" => Ok(Self::slow()),
            "error" => Ok(Self::error()),
            "intermittent" => Ok(Self::intermittent()),
            _ => Err(ConfigError::new(
                "preset",
                format!(
                    "names no preset: `{name}` is not one of `none`, `slow`, `error`, `intermittent`"
                ),
            )),
        }
    }

    /// No faults: the dependency behaves.
    pub fn none() -> Self {
        Self::default()
    }

    /// Every call is delayed by 3 to 8 seconds.
    pub fn slow() -> Self {
        Self {
            latency: Some(LatencyFault::new(
                1.0,
                Duration::from_secs(3),
                Duration::from_secs(8),
            )),
            ..Self::default()
        }
    }

    /// 70 % of calls answer `500`.
    pub fn error() -> Self {
        Self {
            error: Some(ErrorFault::new(0.7).status(500)),
            ..Self::default()
        }
    }

    /// 30 % of calls are delayed by 2 to 5 seconds, and (drawn independently) 20 % answer
    /// `503`.
    pub fn intermittent() -> Self {
        Self {
            latency: Some(LatencyFault::new(
                0.3,
                Duration::from_secs(2),
                Duration::from_secs(5),
            )),
            error: Some(ErrorFault::new(0.2).status(503)),
            ..Self::default()
        }
    }
}
