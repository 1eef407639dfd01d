//! [`FaultConfig`]: which faults an injector injects and how often, as plain data, checked
//! into the [`Plan`] the injector draws from.

use std::sync::Arc;
use std::time::Duration;

use staunch_core::ConfigError;

use crate::FaultInjector;

/// What a [`FaultInjector`] injects: a delay, an error, an abort, each at its own rate.
///
/// Each section is optional; a missing one (or a rate of zero) injects nothing of its kind,
/// and the default configuration injects nothing at all. For every call the injector draws:
///
/// 1. the **latency** fault, with probability `latency.rate`: the call waits a delay drawn
///    uniformly from `latency.min..=latency.max` before it is sent;
/// 2. independently of the delay, the **abort** fault with probability `abort.rate`, or else
///    the **error** fault with probability `error.rate` (the two exclude each other, so
///    `error.rate + abort.rate` is at most 1 and each rate holds as written).
///
/// A delayed call that is also aborted or failed waits first, then fails.
///
/// ```toml
/// latency = { rate = 0.3, min = "2s", max = "5s" }
/// error = { rate = 0.2, status = 503, body = "payment unavailable" }
/// abort = { rate = 0.01 }
/// seed = 42
/// ```
///
/// With feature `serde` a table may also name a preset, whose sections the table's own
/// replace: `{ preset = "intermittent", seed = 7 }` (see [`preset`](Self::preset)).
///
/// Every value is checked by [`FaultInjector::set`] and the builder's `build()`; a bad one
/// is a [`ConfigError`] naming it (`latency.rate`, `error.status`, ...).
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FaultConfig {
    /// Delays before calls are sent.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub latency: Option<LatencyFault>,
    /// Calls answered with an error (or a chosen response) instead of the service's.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub error: Option<ErrorFault>,
    /// Calls failed with [`FaultInjected`](crate::FaultInjected) without reaching the service.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub abort: Option<AbortFault>,
    /// Seeds the injector's random draws when the configuration is applied, so a run can be
    /// replayed: the same seed and the same calls give the same faults. Without one, the
    /// draws go on from where they were (a new injector seeds itself at random).
    pub seed: Option<u64>,
}

/// The latency fault: with probability `rate`, a call waits a delay drawn uniformly from
/// `min..=max` before it is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(remote = "Self", deny_unknown_fields))]
#[non_exhaustive]
pub struct LatencyFault {
    /// The share of calls delayed, from 0 to 1.
    pub rate: f64,
    /// The shortest delay, e.g. `"2s"`.
    #[cfg_attr(feature = "serde", serde(with = "staunch_core::settings::duration"))]
    pub min: Duration,
    /// The longest delay (at least `min`; equal to it for a fixed delay), e.g. `"5s"`.
    #[cfg_attr(feature = "serde", serde(with = "staunch_core::settings::duration"))]
    pub max: Duration,
}

impl LatencyFault {
    /// Delays a share `rate` of calls by `min..=max`.
    pub fn new(rate: f64, min: Duration, max: Duration) -> Self {
        Self { rate, min, max }
    }
}

/// The error fault: with probability `rate`, a call is answered with an error (generic
/// layer) or with a response of `status` carrying `body` (HTTP layer), instead of reaching
/// the service.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(remote = "Self", deny_unknown_fields))]
#[non_exhaustive]
pub struct ErrorFault {
    /// The share of calls failed, from 0 to 1.
    pub rate: f64,
    /// The status the error stands for, from 400 to 599 (default 500).
    #[cfg_attr(feature = "serde", serde(default = "default_status"))]
    pub status: u16,
    /// The body of the HTTP response (default empty).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "String::is_empty")
    )]
    pub body: String,
}

#[cfg(feature = "serde")]
fn default_status() -> u16 {
    ErrorFault::DEFAULT_STATUS
}

impl ErrorFault {
    /// The status of injected errors unless one is chosen: 500.
    pub const DEFAULT_STATUS: u16 = 500;

    /// Fails a share `rate` of calls with status 500 and an empty body.
    pub fn new(rate: f64) -> Self {
        Self {
            rate,
            status: Self::DEFAULT_STATUS,
            body: String::new(),
        }
    }

    /// The status the injected errors stand for.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The body of the injected HTTP responses.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
}

/// The abort fault: with probability `rate`, a call fails with
/// [`FaultInjected`](crate::FaultInjected) without reaching the service.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(remote = "Self", deny_unknown_fields))]
#[non_exhaustive]
pub struct AbortFault {
    /// The share of calls aborted, from 0 to 1.
    pub rate: f64,
}

impl AbortFault {
    /// Aborts a share `rate` of calls.
    pub fn new(rate: f64) -> Self {
        Self { rate }
    }
}

impl FaultConfig {
    /// Delays a share `rate` of calls by a delay drawn from `min..=max`.
    pub fn with_latency(mut self, rate: f64, min: Duration, max: Duration) -> Self {
        self.latency = Some(LatencyFault::new(rate, min, max));
        self
    }

    /// Fails a share `rate` of calls with an error standing for `status` (keeping the body
    /// already set, if any).
    pub fn with_error(mut self, rate: f64, status: u16) -> Self {
        let body = self.error.take().map(|e| e.body).unwrap_or_default();
        self.error = Some(ErrorFault::new(rate).status(status).body(body));
        self
    }

    /// The body of injected HTTP error responses (the error fault's rate stays as set, zero
    /// if none was).
    pub fn with_error_body(mut self, body: impl Into<String>) -> Self {
        let error = self.error.take().unwrap_or_else(|| ErrorFault::new(0.0));
        self.error = Some(error.body(body));
        self
    }

    /// Fails a share `rate` of calls with [`FaultInjected`](crate::FaultInjected) before they
    /// reach the service.
    pub fn with_abort(mut self, rate: f64) -> Self {
        self.abort = Some(AbortFault::new(rate));
        self
    }

    /// Seeds the random draws when the configuration is applied.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// An injector called `name` with these settings, enabled.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, as [`FaultInjectorBuilder::build`](crate::FaultInjectorBuilder::build).
    pub fn build(&self, name: &str) -> Result<FaultInjector, ConfigError> {
        FaultInjector::builder(name).config(self.clone()).build()
    }

    /// Checks every value.
    pub(crate) fn plan(&self) -> Result<Plan, ConfigError> {
        let latency = match &self.latency {
            Some(l) => {
                let rate = rate(l.rate, "latency.rate")?;
                if l.max < l.min {
                    return Err(ConfigError::new(
                        "latency.max",
                        format!(
                            "must be at least `latency.min` (got {:?} < {:?})",
                            l.max, l.min
                        ),
                    ));
                }
                (rate > 0.0).then(|| Latency {
                    rate,
                    min: nanos(l.min),
                    max: nanos(l.max),
                })
            }
            None => None,
        };
        let abort = match &self.abort {
            Some(a) => rate(a.rate, "abort.rate")?,
            None => 0.0,
        };
        let error = match &self.error {
            Some(e) => {
                let rate = rate(e.rate, "error.rate")?;
                if !(400..=599).contains(&e.status) {
                    return Err(ConfigError::new(
                        "error.status",
                        format!(
                            "must be an HTTP error status, from 400 to 599 (got {})",
                            e.status
                        ),
                    ));
                }
                if rate + abort > 1.0 {
                    return Err(ConfigError::new(
                        "error.rate",
                        format!(
                            "plus `abort.rate` must be at most 1: a call is aborted or failed, not both (got {rate} + {abort})"
                        ),
                    ));
                }
                (rate > 0.0).then(|| ErrorPlan {
                    rate,
                    status: e.status,
                    body: Arc::from(e.body.as_str()),
                })
            }
            None => None,
        };
        Ok(Plan {
            latency,
            abort,
            error,
        })
    }
}

/// A rate from 0 to 1, or an error naming `field`.
fn rate(value: f64, field: &'static str) -> Result<f64, ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            field,
            format!("must be a share of calls from 0 to 1 (got {value})"),
        ))
    }
}

/// A duration in nanoseconds, saturating (`u64::MAX` ns is 584 years, past every timer's
/// horizon: the wait saturates there anyway).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A checked configuration, as the injector draws from it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) latency: Option<Latency>,
    /// Probability of an abort; 0 when none.
    pub(crate) abort: f64,
    pub(crate) error: Option<ErrorPlan>,
}

impl Plan {
    /// Whether any call can get a fault.
    pub(crate) fn injects(&self) -> bool {
        self.latency.is_some() || self.abort > 0.0 || self.error.is_some()
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) rate: f64,
    pub(crate) min: u64,
    pub(crate) max: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ErrorPlan {
    pub(crate) rate: f64,
    pub(crate) status: u16,
    pub(crate) body: Arc<str>,
}
