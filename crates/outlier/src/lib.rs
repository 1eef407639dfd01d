//! Outlier ejection over balanced endpoints: the detector engine.
//!
//! [`Detector`] records each call's outcome per endpoint and says which endpoints are
//! eligible. An endpoint with `consecutive_failures` failures in a row is ejected for
//! `base_ejection_time × times ejected`, unless that would put more than
//! `max_ejection_percent` of the endpoints out at once. An ejected endpoint returns lazily:
//! the first look at the detector after its time has passed makes it eligible again. When no
//! endpoint is eligible, [`Detector::eligible`] returns every endpoint (calls still go
//! somewhere, as Envoy does).

use std::time::Duration;
use tokio::time::Instant;

pub use staunch_core::ConfigError;

/// Validated detector settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    consecutive_failures: u32,
    base_ejection_time: Duration,
    max_ejection_percent: u32,
}

impl Settings {
    /// Checks and builds the settings.
    pub fn new(
        consecutive_failures: u32,
        base_ejection_time: Duration,
        max_ejection_percent: u32,
    ) -> Result<Self, ConfigError> {
        if consecutive_failures == 0 {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        if base_ejection_time.is_zero() {
            return Err(ConfigError::new("base_ejection_time", "must be positive"));
        }
        if max_ejection_percent > 100 {
            return Err(ConfigError::new("max_ejection_percent", "must be 0..=100"));
        }
        Ok(Self {
            consecutive_failures,
            base_ejection_time,
            max_ejection_percent,
        })
    }
}

/// One endpoint's state, as [`Detector::endpoints`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint's index.
    pub index: usize,
    /// When it returns, if ejected.
    pub ejected_until: Option<Instant>,
    /// How many times it was ejected.
    pub times_ejected: u32,
    /// Failures in a row.
    pub consecutive_failures: u32,
}

/// The outlier detector over a fixed number of endpoints.
#[derive(Debug)]
pub struct Detector {
    settings: Settings,
    endpoints: Vec<EndpointStatus>,
}

impl Detector {
    /// A detector over `count` endpoints, all eligible.
    pub fn new(settings: Settings, count: usize) -> Self {
        let endpoints = (0..count)
            .map(|index| EndpointStatus {
                index,
                ejected_until: None,
                times_ejected: 0,
                consecutive_failures: 0,
            })
            .collect();
        Self {
            settings,
            endpoints,
        }
    }

    fn expire(&mut self, now: Instant) {
        for e in &mut self.endpoints {
            if e.ejected_until.is_some_and(|until| until <= now) {
                e.ejected_until = None;
                e.consecutive_failures = 0;
            }
        }
    }

    /// Records one call's outcome on endpoint `index` (out of range is ignored).
    pub fn record(&mut self, index: usize, failed: bool, now: Instant) {
        self.expire(now);
        let total = self.endpoints.len();
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.ejected_until.is_some())
            .count();
        let cap = total * self.settings.max_ejection_percent as usize / 100;
        let Some(e) = self.endpoints.get_mut(index) else {
            return;
        };
        if !failed {
            e.consecutive_failures = 0;
            return;
        }
        e.consecutive_failures = e.consecutive_failures.saturating_add(1);
        if e.ejected_until.is_none()
            && e.consecutive_failures >= self.settings.consecutive_failures
            && ejected < cap
        {
            e.times_ejected = e.times_ejected.saturating_add(1);
            let time = self
                .settings
                .base_ejection_time
                .saturating_mul(e.times_ejected);
            e.ejected_until = Some(
                now.checked_add(time)
                    .unwrap_or(now + Duration::from_hours(24 * 365)),
            );
        }
    }

    /// The endpoints calls may go to; every endpoint when none is eligible.
    pub fn eligible(&mut self, now: Instant) -> Vec<usize> {
        self.expire(now);
        let ok: Vec<usize> = self
            .endpoints
            .iter()
            .filter(|e| e.ejected_until.is_none())
            .map(|e| e.index)
            .collect();
        if ok.is_empty() {
            (0..self.endpoints.len()).collect()
        } else {
            ok
        }
    }

    /// Each endpoint's state.
    pub fn endpoints(&mut self, now: Instant) -> Vec<EndpointStatus> {
        self.expire(now);
        self.endpoints.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::new(3, Duration::from_secs(10), 50).unwrap()
    }

    #[test]
    fn bad_config_names_field() {
        assert_eq!(
            Settings::new(0, Duration::from_secs(1), 10)
                .unwrap_err()
                .field(),
            "consecutive_failures"
        );
        assert_eq!(
            Settings::new(1, Duration::ZERO, 10).unwrap_err().field(),
            "base_ejection_time"
        );
        assert_eq!(
            Settings::new(1, Duration::from_secs(1), 101)
                .unwrap_err()
                .field(),
            "max_ejection_percent"
        );
    }

    #[test]
    fn ejects_after_consecutive_failures_and_returns_with_growing_time() {
        let now = Instant::now();
        let mut d = Detector::new(settings(), 3);
        for _ in 0..3 {
            d.record(1, true, now);
        }
        assert_eq!(d.eligible(now), vec![0, 2]);
        assert_eq!(d.eligible(now + Duration::from_secs(10)), vec![0, 1, 2]);
        let later = now + Duration::from_secs(10);
        for _ in 0..3 {
            d.record(1, true, later);
        }
        assert_eq!(d.eligible(later + Duration::from_secs(19)), vec![0, 2]);
        assert_eq!(d.eligible(later + Duration::from_secs(20)), vec![0, 1, 2]);
        assert_eq!(d.endpoints(later)[1].times_ejected, 2);
    }

    #[test]
    fn success_resets_the_count() {
        let now = Instant::now();
        let mut d = Detector::new(settings(), 3);
        d.record(0, true, now);
        d.record(0, true, now);
        d.record(0, false, now);
        d.record(0, true, now);
        assert_eq!(d.eligible(now), vec![0, 1, 2]);
    }

    #[test]
    fn cap_holds_endpoints_in() {
        let now = Instant::now();
        let mut d = Detector::new(settings(), 3);
        for i in 0..3 {
            for _ in 0..5 {
                d.record(i, true, now);
            }
        }
        // 50 % of 3 is one endpoint.
        assert_eq!(d.eligible(now).len(), 2);
    }

    #[test]
    fn seeded_sequences_never_eject_more_than_the_cap() {
        let start = Instant::now();
        let mut seed: u64 = 0x5eed;
        for percent in [0, 10, 34, 50, 100] {
            let settings = Settings::new(2, Duration::from_secs(5), percent).unwrap();
            let mut d = Detector::new(settings, 5);
            let cap = 5 * percent as usize / 100;
            for step in 0..2000u64 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let now = start + Duration::from_millis(step * 37);
                d.record(
                    (seed >> 33) as usize % 5,
                    !(seed >> 20).is_multiple_of(3),
                    now,
                );
                let out = d
                    .endpoints(now)
                    .iter()
                    .filter(|e| e.ejected_until.is_some())
                    .count();
                assert!(out <= cap, "{out} ejected with cap {cap}");
                assert!(!d.eligible(now).is_empty());
            }
        }
    }
}
