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

use staunch_core::{ConfigError, Outcome};
use tokio::time::Instant;

use crate::state::MAX_LIMIT;

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

    fn bounds(&self) -> (usize, usize) {
        match self {
            AdaptiveLimit::Aimd(a) => (a.min_limit, a.max_limit),
            AdaptiveLimit::Vegas(v) => (v.min_limit, v.max_limit),
        }
    }

    pub(crate) fn validate(&self, initial: usize) -> Result<(), ConfigError> {
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
        if !(min..=max).contains(&initial) {
            return Err(ConfigError::new(
                "max_concurrent",
                format!(
                    "is the initial adaptive limit and must lie within [{min}, {max}] (got {initial})"
                ),
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
                if v.beta <= v.alpha {
                    return Err(ConfigError::new(
                        "beta",
                        format!("must be greater than alpha ({}) (got {})", v.alpha, v.beta),
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
    min_limit: usize,
    max_limit: usize,
    backoff_ratio: f64,
    latency_threshold: Option<Duration>,
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
    min_limit: usize,
    max_limit: usize,
    alpha: f64,
    beta: f64,
    backoff_ratio: f64,
    probe_every: u64,
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

    /// Below this many estimated queued calls the limit grows (default 3).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Above this many estimated queued calls the limit shrinks (default 6; must exceed
    /// `alpha`).
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

/// The running state of an adaptive limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    config: AdaptiveLimit,
    limit: f64,
    no_load: Option<Duration>,
    samples: u64,
    last_change: Option<Instant>,
    probe: Option<Probe>,
}

/// A Vegas no-load probe in progress: the limit is halved for one round so queues inside
/// the dependency drain and the latency it then shows is its no-load latency.
#[derive(Debug)]
struct Probe {
    restore: f64,
    best: Option<Duration>,
    samples: u64,
    needed: u64,
}

impl Limiter {
    pub(crate) fn new(config: AdaptiveLimit, initial: usize) -> Self {
        Self {
            config,
            limit: initial as f64,
            no_load: None,
            samples: 0,
            last_change: None,
            probe: None,
        }
    }

    pub(crate) fn bounds(&self) -> (usize, usize) {
        self.config.bounds()
    }

    /// Overrides the estimate (a manual resize).
    pub(crate) fn reset(&mut self, limit: usize, now: Instant) {
        self.limit = limit as f64;
        self.last_change = Some(now);
    }

    /// Feeds one finished call that started at `started` and ended `now`; returns the new
    /// integer limit.
    pub(crate) fn sample(
        &mut self,
        started: Instant,
        now: Instant,
        in_flight: usize,
        outcome: Outcome,
    ) -> usize {
        let (min, max) = self.config.bounds();
        let limit = self.limit;
        let latency = now.saturating_duration_since(started);
        if let AdaptiveLimit::Vegas(_) = self.config
            && outcome == Outcome::Success
        {
            self.no_load = Some(self.no_load.map_or(latency, |n| n.min(latency)));
        }
        if self.last_change.is_some_and(|t| started < t) {
            // Admitted under an older limit: says nothing about the current one.
            return limit as usize;
        }
        // A limit that is not being used tells nothing about whether it could be higher.
        let utilised = (in_flight as f64) * 2.0 >= limit;
        let next = match (&self.config, outcome) {
            (_, Outcome::Ignored) => limit,
            (AdaptiveLimit::Aimd(a), Outcome::Failure) => limit * a.backoff_ratio,
            (AdaptiveLimit::Aimd(a), Outcome::Success) => {
                if a.latency_threshold.is_some_and(|t| latency > t) {
                    limit * a.backoff_ratio
                } else if utilised {
                    limit + 1.0
                } else {
                    limit
                }
            }
            (AdaptiveLimit::Vegas(v), Outcome::Failure) => match &mut self.probe {
                Some(probe) => {
                    probe.restore *= v.backoff_ratio;
                    limit
                }
                None => limit * v.backoff_ratio,
            },
            (AdaptiveLimit::Vegas(v), Outcome::Success) => {
                if let Some(probe) = &mut self.probe {
                    probe.best = Some(probe.best.map_or(latency, |b| b.min(latency)));
                    probe.samples += 1;
                    if probe.samples >= probe.needed {
                        self.no_load = probe.best;
                        let restore = probe.restore;
                        self.probe = None;
                        restore
                    } else {
                        limit
                    }
                } else {
                    self.samples += 1;
                    if self.samples.is_multiple_of(v.probe_every) {
                        let probe_limit = (limit / 2.0).max(min as f64);
                        self.probe = Some(Probe {
                            restore: limit,
                            best: None,
                            samples: 0,
                            needed: (probe_limit as u64).max(1),
                        });
                        probe_limit
                    } else {
                        vegas_step(v, limit, latency, self.no_load.unwrap_or(latency), utilised)
                    }
                }
            }
        };
        let next = next.clamp(min as f64, max as f64);
        if next as usize != limit as usize {
            self.last_change = Some(now);
        }
        self.limit = next;
        self.limit as usize
    }
}

/// One Vegas step: estimate the calls queued inside the dependency and move by one.
fn vegas_step(v: &Vegas, limit: f64, latency: Duration, no_load: Duration, utilised: bool) -> f64 {
    let latency_s = latency.as_secs_f64();
    let queue = if latency_s > 0.0 {
        limit * (1.0 - no_load.as_secs_f64() / latency_s)
    } else {
        0.0
    };
    if queue > v.beta {
        limit - 1.0
    } else if queue < v.alpha && utilised {
        limit + 1.0
    } else {
        limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Samples of calls that each start after the previous one ended, so every one counts.
    struct Clock {
        now: Instant,
    }

    impl Clock {
        fn new() -> Self {
            Self {
                now: Instant::now(),
            }
        }

        fn call(
            &mut self,
            l: &mut Limiter,
            latency: Duration,
            in_flight: usize,
            o: Outcome,
        ) -> usize {
            let started = self.now + MS;
            self.now = started + latency;
            l.sample(started, self.now, in_flight, o)
        }
    }

    #[test]
    fn aimd_grows_when_used_and_backs_off_on_failure_and_slowness() {
        let mut l = Limiter::new(
            Aimd::default()
                .min_limit(2)
                .max_limit(12)
                .latency_threshold(50 * MS)
                .into(),
            10,
        );
        let mut c = Clock::new();
        assert_eq!(c.call(&mut l, 10 * MS, 10, Outcome::Success), 11);
        assert_eq!(
            c.call(&mut l, 10 * MS, 1, Outcome::Success),
            11,
            "not utilised"
        );
        assert_eq!(c.call(&mut l, 10 * MS, 11, Outcome::Success), 12);
        assert_eq!(
            c.call(&mut l, 10 * MS, 12, Outcome::Success),
            12,
            "max bound"
        );
        assert_eq!(c.call(&mut l, 10 * MS, 12, Outcome::Failure), 10);
        assert_eq!(
            c.call(&mut l, 80 * MS, 12, Outcome::Success),
            9,
            "slow call"
        );
        assert_eq!(c.call(&mut l, 80 * MS, 12, Outcome::Ignored), 9);
        for _ in 0..100 {
            c.call(&mut l, 10 * MS, 12, Outcome::Failure);
        }
        assert_eq!(
            c.call(&mut l, 10 * MS, 12, Outcome::Failure),
            2,
            "min bound"
        );
    }

    #[test]
    fn vegas_grows_at_no_load_latency_and_shrinks_when_latency_queues() {
        let mut l = Limiter::new(Vegas::default().max_limit(100).into(), 10);
        let mut c = Clock::new();
        assert_eq!(c.call(&mut l, 10 * MS, 10, Outcome::Success), 11);
        assert_eq!(c.call(&mut l, 10 * MS, 11, Outcome::Success), 12);
        // Latency tripled: two thirds of the limit are queueing in the dependency.
        assert_eq!(c.call(&mut l, 30 * MS, 12, Outcome::Success), 11);
        // A little queueing (between alpha and beta): hold.
        let held = c.call(&mut l, 15 * MS, 11, Outcome::Success);
        assert_eq!(held, 11);
    }

    #[test]
    fn vegas_probe_halves_the_limit_for_a_round_and_relearns_no_load_latency() {
        let mut l = Limiter::new(Vegas::default().probe_every(3).into(), 20);
        let mut c = Clock::new();
        // The no-load latency is 10ms; then the dependency gets permanently slower (30ms).
        assert_eq!(c.call(&mut l, 10 * MS, 20, Outcome::Success), 21);
        assert_eq!(
            c.call(&mut l, 30 * MS, 21, Outcome::Success),
            20,
            "looks queued"
        );
        // Third sample: probe starts, the limit is halved.
        assert_eq!(c.call(&mut l, 30 * MS, 20, Outcome::Success), 10);
        // 10 samples under the probe limit, all at the new no-load latency of 30ms.
        for _ in 0..9 {
            assert_eq!(c.call(&mut l, 30 * MS, 10, Outcome::Success), 10);
        }
        assert_eq!(
            c.call(&mut l, 30 * MS, 10, Outcome::Success),
            20,
            "restored"
        );
        // 30ms is now the no-load latency: no longer seen as queueing.
        assert_eq!(c.call(&mut l, 30 * MS, 20, Outcome::Success), 21);
    }

    #[test]
    fn invalid_bounds_are_rejected_naming_the_field() {
        let e = AdaptiveLimit::from(Aimd::default().min_limit(5).max_limit(4))
            .validate(4)
            .unwrap_err();
        assert_eq!(e.field(), "max_limit");
        let e = AdaptiveLimit::from(Aimd::default().min_limit(0))
            .validate(4)
            .unwrap_err();
        assert_eq!(e.field(), "min_limit");
        let e = AdaptiveLimit::from(Vegas::default().max_limit(8))
            .validate(9)
            .unwrap_err();
        assert_eq!(e.field(), "max_concurrent");
        let e = AdaptiveLimit::from(Vegas::default().alpha(4.0).beta(4.0))
            .validate(4)
            .unwrap_err();
        assert_eq!(e.field(), "beta");
        let e = AdaptiveLimit::from(Aimd::default().backoff_ratio(1.0))
            .validate(4)
            .unwrap_err();
        assert_eq!(e.field(), "backoff_ratio");
    }
}
