//! Adaptive limits: algorithms that move the concurrency limit from observed latency and
//! failures, so the limit follows what the dependency can actually take.
//!
//! A fixed limit is a guess. Too low and the bulkhead rejects calls the dependency could have
//! served; too high and calls queue *inside* the dependency, where latency grows for everyone.
//! An adaptive limit looks for the knee: the concurrency beyond which latency starts to grow.
//!
//! - [`Aimd`]: additive increase, multiplicative decrease (TCP-style). The limit grows by one
//!   per successful, well-utilised call and is cut by `backoff_ratio` on a failure or a call
//!   slower than `latency_threshold`. Simple and robust; needs a latency threshold to react to
//!   slowness rather than only to failures.
//! - [`Vegas`]: TCP Vegas / Netflix concurrency-limits style. It tracks the lowest latency seen
//!   (the no-load latency) and estimates the queue inside the dependency as
//!   `limit * (1 - no_load / latency)`. Below `alpha` queued calls it raises the limit, above
//!   `beta` it lowers it, and failures cut it by `backoff_ratio`. It needs no threshold and
//!   settles near the knee.
//!
//! Both change the limit at most once per round trip: a call that started before the last
//! change was admitted under the old limit and says nothing about the new one, so its sample
//! is not acted on (TCP's "one adjustment per RTT" rule). Without it, the calls of one
//! overloaded round all report slowness and would cut the limit many times over.
//!
//! Both keep the limit within `[min_limit, max_limit]` and ignore calls classified
//! [`Outcome::Ignored`] (cancelled calls by default). Updates take a short mutex per finished
//! call, so the adaptive option costs two clock reads and a lock per call.

use std::time::Duration;

use staunch_core::ConfigError;

use crate::state::MAX_LIMIT;

mod limiter;

pub(crate) use self::limiter::Limiter;

/// An adaptive limit configuration: [`AdaptiveLimit::aimd`] or [`AdaptiveLimit::vegas`].
///
/// The bulkhead's `max_concurrent` is the initial limit; it must lie within the bounds.
///
/// ```
/// use std::time::Duration;
/// use staunch_bulkhead::{AdaptiveLimit, Bulkhead};
///
/// let bulkhead = Bulkhead::builder("payment")
///     .max_concurrent(8)
///     .adaptive(AdaptiveLimit::vegas().min_limit(2).max_limit(64))
///     .build()?;
/// assert_eq!(bulkhead.max_concurrent(), 8);
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum AdaptiveLimit {
    /// Additive increase, multiplicative decrease.
    Aimd(Aimd),
    /// Latency-gradient (TCP Vegas style).
    Vegas(Vegas),
}

impl AdaptiveLimit {
    /// An AIMD limit with the defaults of [`Aimd`].
    pub fn aimd() -> Aimd {
        Aimd::default()
    }

    /// A Vegas-style limit with the defaults of [`Vegas`].
    pub fn vegas() -> Vegas {
        Vegas::default()
    }

    pub(crate) fn bounds(&self) -> (usize, usize) {
        match self {
            AdaptiveLimit::Aimd(a) => (a.min_limit, a.max_limit),
            AdaptiveLimit::Vegas(v) => (v.min_limit, v.max_limit),
        }
    }

    /// The initial limit (the bulkhead's `max_concurrent`) lies within the bounds.
    pub(crate) fn check_initial(&self, initial: usize) -> Result<(), ConfigError> {
        let (min, max) = self.bounds();
        if !(min..=max).contains(&initial) {
            return Err(ConfigError::new(
                "max_concurrent",
                format!(
                    "is the initial adaptive limit and must lie within [{min}, {max}] (got {initial})"
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let (min, max) = self.bounds();
        if min == 0 {
            return Err(ConfigError::new("min_limit", "must be at least 1"));
        }
        if max < min {
            return Err(ConfigError::new(
                "max_limit",
                format!("must be at least min_limit ({min}) (got {max})"),
            ));
        }
        if max > MAX_LIMIT {
            return Err(ConfigError::new(
                "max_limit",
                format!("must be at most {MAX_LIMIT} (got {max})"),
            ));
        }
        let ratio = match self {
            AdaptiveLimit::Aimd(a) => a.backoff_ratio,
            AdaptiveLimit::Vegas(v) => v.backoff_ratio,
        };
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(ConfigError::new(
                "backoff_ratio",
                format!("must be greater than 0 and less than 1 (got {ratio})"),
            ));
        }
        match self {
            AdaptiveLimit::Aimd(a) => {
                if a.latency_threshold == Some(Duration::ZERO) {
                    return Err(ConfigError::new(
                        "latency_threshold",
                        "must be greater than zero",
                    ));
                }
            }
            AdaptiveLimit::Vegas(v) => {
                // Written so that NaN fails too: every comparison with NaN is false.
                if !(v.alpha.is_finite() && v.alpha >= 0.0) {
                    return Err(ConfigError::new(
                        "alpha",
                        format!("must be a finite number of at least 0 (got {})", v.alpha),
                    ));
                }
                if !(v.beta.is_finite() && v.beta > v.alpha) {
                    return Err(ConfigError::new(
                        "beta",
                        format!(
                            "must be a finite number greater than alpha ({}) (got {})",
                            v.alpha, v.beta
                        ),
                    ));
                }
                if v.probe_every == 0 {
                    return Err(ConfigError::new("probe_every", "must be at least 1"));
                }
            }
        }
        Ok(())
    }
}

impl From<Aimd> for AdaptiveLimit {
    fn from(a: Aimd) -> Self {
        AdaptiveLimit::Aimd(a)
    }
}

impl From<Vegas> for AdaptiveLimit {
    fn from(v: Vegas) -> Self {
        AdaptiveLimit::Vegas(v)
    }
}

/// AIMD settings. Defaults: limits `[1, 1000]`, `backoff_ratio` 0.9, no latency threshold
/// (only failures lower the limit until one is set).
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    pub(super) min_limit: usize,
    pub(super) max_limit: usize,
    pub(super) backoff_ratio: f64,
    pub(super) latency_threshold: Option<Duration>,
}

impl Default for Aimd {
    fn default() -> Self {
        Self {
            min_limit: 1,
            max_limit: 1000,
            backoff_ratio: 0.9,
            latency_threshold: None,
        }
    }
}

impl Aimd {
    /// The limit never goes below this (default 1).
    pub fn min_limit(mut self, n: usize) -> Self {
        self.min_limit = n;
        self
    }

    /// The limit never goes above this (default 1000).
    pub fn max_limit(mut self, n: usize) -> Self {
        self.max_limit = n;
        self
    }

    /// The factor the limit is multiplied by on a failure or a slow call (default 0.9; must
    /// be in `(0, 1)`).
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// A successful call slower than this counts as a sign of overload (default: none).
    pub fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.latency_threshold = Some(threshold);
        self
    }
}

/// Vegas settings. Defaults: limits `[1, 1000]`, `alpha` 3 and `beta` 6 queued calls,
/// `backoff_ratio` 0.9 on failures, no-load latency re-probed every 1000 samples.
///
/// The no-load latency is the lowest latency seen. A dependency that got permanently slower
/// would look permanently queued, so every `probe_every` samples the limit is halved for one
/// round: queues inside the dependency drain, the lowest latency of that round becomes the
/// new no-load latency, and the limit is restored.
#[derive(Debug, Clone, PartialEq)]
pub struct Vegas {
    pub(super) min_limit: usize,
    pub(super) max_limit: usize,
    pub(super) alpha: f64,
    pub(super) beta: f64,
    pub(super) backoff_ratio: f64,
    pub(super) probe_every: u64,
}

impl Default for Vegas {
    fn default() -> Self {
        Self {
            min_limit: 1,
            max_limit: 1000,
            alpha: 3.0,
            beta: 6.0,
            backoff_ratio: 0.9,
            probe_every: 1000,
        }
    }
}

impl Vegas {
    /// The limit never goes below this (default 1).
    pub fn min_limit(mut self, n: usize) -> Self {
        self.min_limit = n;
        self
    }

    /// The limit never goes above this (default 1000).
    pub fn max_limit(mut self, n: usize) -> Self {
        self.max_limit = n;
        self
    }

    /// Below this many estimated queued calls the limit grows (default 3; must be a finite
    /// number of at least 0).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Above this many estimated queued calls the limit shrinks (default 6; must be finite and
    /// exceed `alpha`).
    pub fn beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }

    /// The factor the limit is multiplied by on a failure (default 0.9; must be in `(0, 1)`).
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// Re-measure the no-load latency every this many samples, by halving the limit for one
    /// round, so a dependency that got permanently slower (or faster) is re-learnt (default
    /// 1000).
    pub fn probe_every(mut self, samples: u64) -> Self {
        self.probe_every = samples;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vegas_thresholds_that_are_not_finite_are_rejected() {
        for (alpha, beta, field) in [
            (f64::NAN, 6.0, "alpha"),
            (f64::NEG_INFINITY, 6.0, "alpha"),
            (f64::INFINITY, 6.0, "alpha"),
            (-1.0, 6.0, "alpha"),
            (3.0, f64::NAN, "beta"),
            (3.0, f64::INFINITY, "beta"),
            (3.0, 3.0, "beta"),
        ] {
            let e = AdaptiveLimit::from(Vegas::default().alpha(alpha).beta(beta))
                .validate()
                .unwrap_err();
            assert_eq!(e.field(), field, "alpha {alpha}, beta {beta}: {e}");
        }
        AdaptiveLimit::from(Vegas::default().alpha(0.0).beta(0.5))
            .validate()
            .unwrap();
    }

    #[test]
    fn invalid_bounds_are_rejected_naming_the_field() {
        let e = AdaptiveLimit::from(Aimd::default().min_limit(5).max_limit(4))
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "max_limit");
        let e = AdaptiveLimit::from(Aimd::default().min_limit(0))
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "min_limit");
        let e = AdaptiveLimit::from(Vegas::default().max_limit(8))
            .check_initial(9)
            .unwrap_err();
        assert_eq!(e.field(), "max_concurrent");
        let e = AdaptiveLimit::from(Vegas::default().alpha(4.0).beta(4.0))
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "beta");
        let e = AdaptiveLimit::from(Aimd::default().backoff_ratio(1.0))
            .validate()
            .unwrap_err();
        assert_eq!(e.field(), "backoff_ratio");
    }
}
