//! The running state of an adaptive limit: the AIMD and Vegas update rules.

use std::time::Duration;

use staunch_core::Outcome;
use tokio::time::Instant;

use super::{AdaptiveLimit, Vegas};

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
    use crate::adaptive::Aimd;

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
}
