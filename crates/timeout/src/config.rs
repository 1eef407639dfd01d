//! Builders and validation for time limits and deadline layers.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use staunch_core::ConfigError;

use crate::limit::TimeLimit;
use crate::propagate::{DeadlineLayer, PropagateDeadlineLayer};
use crate::wire::HeaderFormat;

/// The header a [`DeadlineLayer`] reads and a [`PropagateDeadlineLayer`] writes by default:
/// the time the caller has left, in the [`HeaderFormat::GrpcTimeout`] syntax (e.g. `1500m`).
pub const DEFAULT_HEADER: &str = "x-request-timeout";

/// The gRPC header carrying the caller's remaining time.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Builds a [`TimeLimit`]; see [`TimeLimit::builder`].
#[derive(Debug, Clone, Default)]
pub struct TimeLimitBuilder {
    limit: Option<Duration>,
    name: Option<Arc<str>>,
    precision: Option<Duration>,
}

impl TimeLimitBuilder {
    /// How late a timeout may fire when unset: 1 ms.
    pub const DEFAULT_PRECISION: Duration = Duration::from_millis(1);
}

impl TimeLimitBuilder {
    /// The longest a call may take (required, greater than zero).
    pub fn limit(mut self, limit: Duration) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Names the limit: events and metrics carry the name, and the limit keeps counters
    /// ([`TimeLimit::metrics`]), shared by its clones beside their timer. A call of a named
    /// limit that pends or times out also updates a counter shared by every caller; leave it
    /// unnamed on the hottest paths.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How late a timeout may fire at most (default [`DEFAULT_PRECISION`](Self::DEFAULT_PRECISION),
    /// 1 ms; never early): the limit's timer wakes at most once per `precision`, so timeouts
    /// that fall due close together are handled in one wake. Zero wakes for every distinct
    /// end. See [the timer](TimeLimit#the-timer).
    pub fn precision(mut self, precision: Duration) -> Self {
        self.precision = Some(precision);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `limit` when it is missing or zero, or `name` when it is empty.
    pub fn build(self) -> Result<TimeLimit, ConfigError> {
        #[cfg(feature = "metrics")]
        staunch_core::telemetry::describe_metrics();
        let limit = self
            .limit
            .ok_or_else(|| ConfigError::new("limit", "must be set"))?;
        if limit.is_zero() {
            return Err(ConfigError::new("limit", "must be greater than zero"));
        }
        if self.name.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        Ok(TimeLimit::from_parts(
            limit,
            self.name,
            self.precision.unwrap_or(Self::DEFAULT_PRECISION),
        ))
    }
}

/// Which headers carry a remaining time, shared by both deadline layers.
#[derive(Debug, Clone)]
pub(crate) struct Headers {
    pub(crate) header: Option<HeaderName>,
    pub(crate) format: HeaderFormat,
    pub(crate) grpc: bool,
}

/// Header settings while building, validated by `build()`.
#[derive(Debug, Clone)]
struct HeaderSettings {
    header: Option<String>,
    format: HeaderFormat,
    grpc: bool,
}

impl HeaderSettings {
    fn validate(self) -> Result<Headers, ConfigError> {
        let header = match self.header {
            None => None,
            Some(name) => Some(HeaderName::try_from(name.as_str()).map_err(|_| {
                ConfigError::new(
                    "header",
                    format!("must be a valid HTTP header name (got {name:?})"),
                )
            })?),
        };
        if header.as_ref().is_some_and(|h| h == GRPC_TIMEOUT) {
            return Err(ConfigError::new(
                "header",
                "must not be `grpc-timeout` (enable `grpc` instead)",
            ));
        }
        Ok(Headers {
            header,
            format: self.format,
            grpc: self.grpc,
        })
    }
}

/// Builds a [`DeadlineLayer`]; see [`DeadlineLayer::builder`].
#[derive(Debug, Clone)]
pub struct DeadlineLayerBuilder {
    budget: Option<Duration>,
    headers: HeaderSettings,
}

impl Default for DeadlineLayerBuilder {
    fn default() -> Self {
        Self {
            budget: None,
            headers: HeaderSettings {
                header: Some(DEFAULT_HEADER.to_owned()),
                format: HeaderFormat::GrpcTimeout,
                grpc: true,
            },
        }
    }
}

impl DeadlineLayerBuilder {
    /// The longest this service spends on one request: the deadline is at most `budget` after
    /// the request arrives, even when the caller allows more. Unset by default (only the
    /// caller's headers and an existing [`Deadline`](crate::Deadline) count).
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The HTTP header to read the caller's remaining time from (default
    /// [`DEFAULT_HEADER`]).
    pub fn header(mut self, name: impl Into<String>) -> Self {
        self.headers.header = Some(name.into());
        self
    }

    /// Reads no HTTP header (only `grpc-timeout`, if enabled, and the budget).
    pub fn no_header(mut self) -> Self {
        self.headers.header = None;
        self
    }

    /// The syntax of the HTTP header (default [`HeaderFormat::GrpcTimeout`]).
    pub fn header_format(mut self, format: HeaderFormat) -> Self {
        self.headers.format = format;
        self
    }

    /// Whether to read `grpc-timeout` (default `true`).
    pub fn grpc(mut self, enabled: bool) -> Self {
        self.headers.grpc = enabled;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `budget` when it is zero, or `header` when it is not a valid
    /// header name or is `grpc-timeout`.
    pub fn build(self) -> Result<DeadlineLayer, ConfigError> {
        if self.budget.is_some_and(|b| b.is_zero()) {
            return Err(ConfigError::new("budget", "must be greater than zero"));
        }
        Ok(DeadlineLayer::from_parts(
            self.budget,
            self.headers.validate()?,
        ))
    }
}

/// Builds a [`PropagateDeadlineLayer`]; see [`PropagateDeadlineLayer::builder`].
#[derive(Debug, Clone)]
pub struct PropagateDeadlineLayerBuilder {
    headers: HeaderSettings,
    margin: Duration,
}

impl Default for PropagateDeadlineLayerBuilder {
    fn default() -> Self {
        Self {
            headers: HeaderSettings {
                header: Some(DEFAULT_HEADER.to_owned()),
                format: HeaderFormat::GrpcTimeout,
                grpc: false,
            },
            margin: Duration::ZERO,
        }
    }
}

impl PropagateDeadlineLayerBuilder {
    /// Time kept back from what is written: the callee is told `remaining - margin`, leaving
    /// the caller that long to receive and handle the answer (network transit, decoding). A
    /// request with no more than `margin` left is not sent. Default zero.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The HTTP header to write the remaining time to (default [`DEFAULT_HEADER`]).
    pub fn header(mut self, name: impl Into<String>) -> Self {
        self.headers.header = Some(name.into());
        self
    }

    /// Writes no HTTP header (only `grpc-timeout`, if enabled).
    pub fn no_header(mut self) -> Self {
        self.headers.header = None;
        self
    }

    /// The syntax of the HTTP header (default [`HeaderFormat::GrpcTimeout`]).
    pub fn header_format(mut self, format: HeaderFormat) -> Self {
        self.headers.format = format;
        self
    }

    /// Whether to write `grpc-timeout` (default `false`; enable it for gRPC clients).
    pub fn grpc(mut self, enabled: bool) -> Self {
        self.headers.grpc = enabled;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `header` when it is not a valid header name or is
    /// `grpc-timeout`, or when neither a header nor `grpc-timeout` is enabled.
    pub fn build(self) -> Result<PropagateDeadlineLayer, ConfigError> {
        let headers = self.headers.validate()?;
        if headers.header.is_none() && !headers.grpc {
            return Err(ConfigError::new(
                "header",
                "must be set when `grpc` is disabled (nothing would be written)",
            ));
        }
        Ok(PropagateDeadlineLayer::from_parts(headers, self.margin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limit_rejects_zero_missing_and_empty_name() {
        let err = TimeLimit::builder().build().unwrap_err();
        assert_eq!(err.field(), "limit");
        let err = TimeLimit::new(Duration::ZERO).unwrap_err();
        assert_eq!(
            (err.field(), err.rule()),
            ("limit", "must be greater than zero")
        );
        let err = TimeLimit::builder()
            .limit(Duration::from_secs(1))
            .name("")
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "name");
    }

    #[test]
    fn deadline_layer_rejects_zero_budget_and_bad_headers() {
        let err = DeadlineLayer::builder()
            .budget(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "budget");
        let err = DeadlineLayer::builder()
            .header("not a header")
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "header");
        let err = DeadlineLayer::builder()
            .header("grpc-timeout")
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "header");
    }

    #[test]
    fn propagate_layer_must_write_something() {
        let err = PropagateDeadlineLayer::builder()
            .no_header()
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "header");
        assert!(
            PropagateDeadlineLayer::builder()
                .no_header()
                .grpc(true)
                .build()
                .is_ok()
        );
    }
}
