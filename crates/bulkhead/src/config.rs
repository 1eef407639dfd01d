//! The bulkhead builder and its validation.

use std::sync::Arc;
use std::time::Duration;

use staunch_core::ConfigError;

use crate::adaptive::{AdaptiveLimit, Limiter};
use crate::bulkhead::Bulkhead;
use crate::state::MAX_LIMIT;

/// The default limit on concurrent calls.
pub const DEFAULT_MAX_CONCURRENT: usize = 25;

/// Configures a [`Bulkhead`]; start with [`Bulkhead::builder`].
///
/// Defaults, and why:
/// - `max_concurrent` = 25 ([`DEFAULT_MAX_CONCURRENT`]): a common connection-pool size; set
///   it from what the dependency can serve.
/// - `max_wait` = zero: fail fast. Waiting for a saturated dependency only moves its queue
///   into your service; opt in to a short wait to absorb bursts.
/// - `max_queued` = `max_concurrent`: when waiting is enabled, at most as many callers wait
///   as run, so the bulkhead never holds more than twice its limit.
/// - not adaptive.
///
/// ```
/// use std::time::Duration;
/// use staunch_bulkhead::Bulkhead;
///
/// let err = Bulkhead::builder("payment").max_concurrent(0).build().unwrap_err();
/// assert_eq!(err.field(), "payment.max_concurrent");
///
/// let bulkhead = Bulkhead::builder("payment")
///     .max_concurrent(10)
///     .max_wait(Duration::from_millis(20))
///     .max_queued(100)
///     .build()?;
/// assert_eq!(bulkhead.max_queued(), 100);
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "call `build()` to get a bulkhead"]
pub struct BulkheadBuilder {
    name: Arc<str>,
    max_concurrent: usize,
    max_wait: Duration,
    max_queued: Option<usize>,
    adaptive: Option<AdaptiveLimit>,
}

impl BulkheadBuilder {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            name,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_wait: Duration::ZERO,
            max_queued: None,
            adaptive: None,
        }
    }

    /// At most this many calls run at once (default 25; at least 1). With an adaptive limit
    /// this is the initial limit.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// How long a call may wait for a permit before it is rejected (default zero: never wait).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How many calls may wait at once; past that, calls are rejected at once (default:
    /// `max_concurrent`). Zero means nobody waits.
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = Some(n);
        self
    }

    /// Lets the limit move between bounds from observed latency and failures.
    pub fn adaptive(mut self, limit: impl Into<AdaptiveLimit>) -> Self {
        self.adaptive = Some(limit.into());
        self
    }

    /// Validates the settings and builds the bulkhead.
    ///
    /// Errors name the field, prefixed with the bulkhead's name (e.g.
    /// `payment.max_concurrent`).
    pub fn build(self) -> Result<Bulkhead, ConfigError> {
        self.validate().map_err(|e| e.within(&self.name))?;
        let limiter = self
            .adaptive
            .map(|config| Limiter::new(config, self.max_concurrent));
        Ok(Bulkhead::from_parts(
            self.name,
            self.max_concurrent,
            self.max_wait,
            self.max_queued.unwrap_or(self.max_concurrent),
            limiter,
        ))
    }

    /// Validates and builds, errors naming the field alone: for a settings section
    /// ([`BulkheadConfig`](crate::BulkheadConfig)), whose place in a file the caller knows.
    pub(crate) fn build_in_section(self) -> Result<Bulkhead, ConfigError> {
        self.validate()?;
        self.build()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        validate_limit("max_concurrent", self.max_concurrent)?;
        if let Some(q) = self.max_queued
            && q > MAX_LIMIT
        {
            return Err(ConfigError::new(
                "max_queued",
                format!("must be at most {MAX_LIMIT} (got {q})"),
            ));
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate().map_err(|e| e.within("adaptive"))?;
            adaptive.check_initial(self.max_concurrent)?;
        }
        Ok(())
    }
}

pub(crate) fn validate_limit(
    field: impl Into<std::borrow::Cow<'static, str>>,
    n: usize,
) -> Result<(), ConfigError> {
    let field = field.into();
    if n == 0 {
        return Err(ConfigError::new(field, "must be at least 1"));
    }
    if n > MAX_LIMIT {
        return Err(ConfigError::new(
            field,
            format!("must be at most {MAX_LIMIT} (got {n})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AdaptiveLimit;

    #[test]
    fn invalid_settings_fail_at_build_naming_the_field() {
        let e = Bulkhead::builder("p")
            .max_concurrent(0)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "p.max_concurrent");
        let e = Bulkhead::builder("p")
            .max_concurrent(MAX_LIMIT + 1)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "p.max_concurrent");
        let e = Bulkhead::builder("").build().unwrap_err();
        assert_eq!(e.field(), "name");
        let e = Bulkhead::builder("p")
            .max_concurrent(4)
            .adaptive(AdaptiveLimit::aimd().min_limit(8).max_limit(4))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "p.adaptive.max_limit");
        let e = Bulkhead::builder("p")
            .max_concurrent(50)
            .adaptive(AdaptiveLimit::vegas().min_limit(1).max_limit(40))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "p.max_concurrent");
    }

    #[test]
    fn defaults_fail_fast_and_queue_up_to_the_limit() {
        let b = Bulkhead::builder("p").max_concurrent(7).build().unwrap();
        assert_eq!(b.max_wait(), Duration::ZERO);
        assert_eq!(b.max_queued(), 7);
        assert_eq!(b.max_concurrent(), 7);
        assert!(!b.is_adaptive());
    }
}
