//! The detector engine: each endpoint's outcomes in, ejections and returns out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use staunch_core::{Outcome, instant_after};
use tokio::time::Instant;

use crate::settings::Settings;

/// Whether calls may go to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Calls may go to it.
    Healthy,
    /// Ejected: no calls go to it (unless every endpoint is out) until `until`.
    Ejected {
        /// When it returns.
        until: Instant,
    },
}

impl EndpointState {
    /// `true` when ejected.
    pub fn is_ejected(&self) -> bool {
        matches!(self, Self::Ejected { .. })
    }
}

/// One endpoint's state, as [`Detector::endpoints`] and
/// [`Balancer::status`](crate::Balancer::status) list it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStatus<K> {
    /// The endpoint's key (its index, for [`Detector::new`]; what it was added with for a
    /// balancer, e.g. its URL).
    pub key: K,
    /// Healthy, or ejected until when.
    pub state: EndpointState,
    /// How many times it was ejected; the next ejection lasts that many times plus one
    /// `base_ejection_time`, up to `max_ejection_time`.
    pub times_ejected: u32,
    /// Failures in a row since its last success (or return).
    pub consecutive_failures: u32,
    /// Calls in flight on it (always 0 from a bare [`Detector`], which does not see calls
    /// start).
    pub in_flight: usize,
}

impl<K> EndpointStatus<K> {
    /// When it returns, if ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        match self.state {
            EndpointState::Healthy => None,
            EndpointState::Ejected { until } => Some(until),
        }
    }
}

/// Why an endpoint was ejected, as tracing events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    ConsecutiveFailures,
    FailureRate,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::FailureRate => "failure_rate",
        })
    }
}

/// What a detector did, counted since it was made: [`Detector::metrics`] and
/// [`Balancer::metrics`](crate::Balancer::metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct OutlierMetrics {
    /// Endpoints ejected, all reasons.
    pub ejections: u64,
    /// Of those, ejections by the failure-rate test.
    pub failure_rate_ejections: u64,
    /// Ejected endpoints that came back (their time passed, or the cap shrank when
    /// endpoints were removed).
    pub returns: u64,
    /// Ejections the `max_ejection_percent` cap held back.
    pub held_by_cap: u64,
    /// Endpoints out now.
    pub ejected: usize,
    /// Endpoints known now.
    pub endpoints: usize,
}

#[derive(Debug, Clone)]
struct Entry<K> {
    key: K,
    /// The key as tracing events show it (`{:?}`), made once when the endpoint is added.
    label: Box<str>,
    ejected_until: Option<Instant>,
    times_ejected: u32,
    consecutive_failures: u32,
    /// Calls answered since the last failure-rate judgement, and how many failed.
    requests: u32,
    failures: u32,
}

impl<K: fmt::Debug> Entry<K> {
    fn new(key: K) -> Self {
        Self {
            label: format!("{key:?}").into_boxed_str(),
            key,
            ejected_until: None,
            times_ejected: 0,
            consecutive_failures: 0,
            requests: 0,
            failures: 0,
        }
    }
}

/// The outlier detector: records each call's outcome per endpoint and says which endpoints
/// calls may go to.
///
/// - An endpoint with `consecutive_failures` failures in a row is ejected for
///   `base_ejection_time × times ejected`, at most `max_ejection_time`.
/// - With the failure-rate test on, every `interval` the endpoints with at least
///   `minimum_requests` calls in it and a failure percentage at or above `threshold` are
///   ejected too (the highest rates first).
/// - No ejection puts more than `max_ejection_percent` of the endpoints (rounded down) out at
///   once; an ejection the cap holds back is counted in
///   [`held_by_cap`](OutlierMetrics::held_by_cap), and the endpoint is ejected by its next
///   failure once there is room.
/// - An ejected endpoint returns lazily: the first look at the detector after its time has
///   passed makes it eligible again, with its failures in a row reset. Failure-rate
///   judgements are lazy the same way: they run at the first look after each `interval`.
/// - When no endpoint is eligible (only possible with `max_ejection_percent` 100),
///   [`eligible`](Self::eligible) returns every endpoint: calls still go somewhere, as in
///   Envoy.
///
/// The detector is a plain value (`&mut self`, no lock, no task); time is passed in, so it
/// is as deterministic as its caller. [`Balancer`](crate::Balancer) keeps one behind a mutex.
/// Ejections and returns are `debug` tracing events, an ejection held by the cap a `trace`
/// event; with the `metrics` feature they are counted through the `metrics` crate.
#[derive(Debug)]
pub struct Detector<K = usize> {
    name: Arc<str>,
    settings: Settings,
    entries: Vec<Entry<K>>,
    ejected: usize,
    /// The earliest `ejected_until`, so a look with nothing to return scans nothing.
    next_return: Option<Instant>,
    /// When the failure-rate test runs next (`None` when it is off, or before the first
    /// outcome).
    next_judgement: Option<Instant>,
    counts: OutlierMetrics,
    #[cfg(feature = "metrics")]
    handles: crate::metrics::Handles,
}

impl Detector<usize> {
    /// A detector over `count` endpoints keyed `0..count`, all healthy.
    pub fn new(settings: Settings, count: usize) -> Self {
        Self::with_keys("outlier", settings, 0..count)
    }
}

impl<K: fmt::Debug> Detector<K> {
    /// A detector called `name` (in tracing events and metrics labels) over endpoints with
    /// these keys, all healthy.
    pub fn with_keys(
        name: impl Into<Arc<str>>,
        settings: Settings,
        keys: impl IntoIterator<Item = K>,
    ) -> Self {
        let name = name.into();
        let entries: Vec<Entry<K>> = keys.into_iter().map(Entry::new).collect();
        let counts = OutlierMetrics {
            endpoints: entries.len(),
            ..OutlierMetrics::default()
        };
        let detector = Self {
            #[cfg(feature = "metrics")]
            handles: crate::metrics::Handles::new(&name),
            name,
            settings,
            entries,
            ejected: 0,
            next_return: None,
            next_judgement: None,
            counts,
        };
        detector.emit_gauges();
        detector
    }

    /// Adds a healthy endpoint at the end (index [`len`](Self::len) before the call).
    pub fn push(&mut self, key: K) {
        self.entries.push(Entry::new(key));
        self.counts.endpoints = self.entries.len();
        self.emit_gauges();
    }
}

impl<K> Detector<K> {
    /// The name in tracing events and metrics labels.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How many endpoints it knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when it knows no endpoint.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key of endpoint `index`.
    pub fn key(&self, index: usize) -> Option<&K> {
        self.entries.get(index).map(|e| &e.key)
    }

    /// The index of the endpoint with this key.
    pub fn index_of(&self, key: &K) -> Option<usize>
    where
        K: PartialEq,
    {
        self.entries.iter().position(|e| e.key == *key)
    }

    /// Removes endpoint `index` (the ones after it move down by one) and returns its key;
    /// `None` when out of range.
    ///
    /// If the smaller set would have more endpoints out than `max_ejection_percent` allows,
    /// the ones due back soonest return now.
    pub fn remove(&mut self, index: usize, now: Instant) -> Option<K> {
        if index >= self.entries.len() {
            return None;
        }
        let entry = self.entries.remove(index);
        if entry.ejected_until.is_some() {
            self.ejected -= 1;
        }
        self.counts.endpoints = self.entries.len();
        let cap = self.settings.cap(self.entries.len());
        while self.ejected > cap {
            let soonest = self
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.ejected_until.map(|until| (until, i)))
                .min();
            match soonest {
                Some((_, i)) => self.bring_back(i, now, "cap"),
                None => break,
            }
        }
        self.next_return = self.entries.iter().filter_map(|e| e.ejected_until).min();
        self.emit_gauges();
        Some(entry.key)
    }

    /// Records one call's outcome on endpoint `index` (out of range and
    /// [`Outcome::Ignored`] are ignored), and ejects it if that was one failure too many.
    pub fn record(&mut self, index: usize, outcome: Outcome, now: Instant) {
        self.tick(now);
        let consecutive = self.settings.consecutive_failures;
        let judging = self.settings.failure_rate.is_some();
        if outcome == Outcome::Ignored || index >= self.entries.len() {
            return;
        }
        if judging && self.next_judgement.is_none() {
            self.start_judging(now);
        }
        let e = &mut self.entries[index];
        match outcome {
            Outcome::Ignored => return,
            Outcome::Success => {
                e.consecutive_failures = 0;
                if judging {
                    e.requests = e.requests.saturating_add(1);
                }
                return;
            }
            Outcome::Failure => {
                e.consecutive_failures = e.consecutive_failures.saturating_add(1);
                if judging {
                    e.requests = e.requests.saturating_add(1);
                    e.failures = e.failures.saturating_add(1);
                }
            }
        }
        let e = &self.entries[index];
        if e.ejected_until.is_none() && e.consecutive_failures >= consecutive {
            self.eject(index, now, Reason::ConsecutiveFailures);
        }
    }

    /// Returns whoever is due back and runs a failure-rate judgement that is due. Every other
    /// method that takes `now` does this first; call it on its own to have returns and
    /// judgements happen (and their events emitted) without a call.
    pub fn tick(&mut self, now: Instant) {
        if self.next_return.is_some_and(|at| at <= now) {
            self.expire(now);
        }
        if self.next_judgement.is_some_and(|at| at <= now) {
            self.judge(now);
        }
    }

    /// Whether calls may go to endpoint `index` now (ejected ones may not, unless every
    /// endpoint is out). Does not return anyone: call [`tick`](Self::tick) first.
    pub fn is_eligible(&self, index: usize) -> bool {
        self.entries
            .get(index)
            .is_some_and(|e| e.ejected_until.is_none() || self.ejected == self.entries.len())
    }

    /// How many endpoints calls may go to now: the healthy ones, or every endpoint when none
    /// is healthy. Does not return anyone: call [`tick`](Self::tick) first.
    pub fn eligible_count(&self) -> usize {
        if self.ejected == self.entries.len() {
            self.entries.len()
        } else {
            self.entries.len() - self.ejected
        }
    }

    /// The index of the `n`th (from 0) endpoint calls may go to, in index order.
    pub(crate) fn nth_eligible(&self, n: usize) -> Option<usize> {
        if self.ejected == self.entries.len() {
            return (n < self.entries.len()).then_some(n);
        }
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.ejected_until.is_none())
            .nth(n)
            .map(|(i, _)| i)
    }

    /// The indices of the endpoints calls may go to; every endpoint when none is healthy.
    pub fn eligible(&mut self, now: Instant) -> Vec<usize> {
        self.tick(now);
        (0..self.eligible_count())
            .filter_map(|n| self.nth_eligible(n))
            .collect()
    }

    /// Each endpoint's state, in index order.
    pub fn endpoints(&mut self, now: Instant) -> Vec<EndpointStatus<K>>
    where
        K: Clone,
    {
        self.tick(now);
        (0..self.entries.len())
            .filter_map(|i| self.status(i))
            .collect()
    }

    /// Endpoint `index`'s state as last updated (call [`tick`](Self::tick) first for a
    /// fresh one).
    pub fn status(&self, index: usize) -> Option<EndpointStatus<K>>
    where
        K: Clone,
    {
        self.entries.get(index).map(|e| EndpointStatus {
            key: e.key.clone(),
            state: match e.ejected_until {
                None => EndpointState::Healthy,
                Some(until) => EndpointState::Ejected { until },
            },
            times_ejected: e.times_ejected,
            consecutive_failures: e.consecutive_failures,
            in_flight: 0,
        })
    }

    /// What it did so far, and how many endpoints are out now.
    pub fn metrics(&self) -> OutlierMetrics {
        OutlierMetrics {
            ejected: self.ejected,
            ..self.counts
        }
    }

    fn start_judging(&mut self, now: Instant) {
        if let Some(rate) = self.settings.failure_rate {
            self.next_judgement = Some(instant_after(now, rate.interval));
        }
    }

    fn eject(&mut self, index: usize, now: Instant, reason: Reason) -> bool {
        let cap = self.settings.cap(self.entries.len());
        let e = &mut self.entries[index];
        if self.ejected >= cap {
            self.counts.held_by_cap += 1;
            tracing::trace!(
                outlier = %self.name,
                endpoint = %e.label,
                %reason,
                ejected = self.ejected,
                cap,
                "ejection held back: max_ejection_percent reached"
            );
            return false;
        }
        e.times_ejected = e.times_ejected.saturating_add(1);
        let time: Duration = self.settings.ejection_time(e.times_ejected);
        let until = instant_after(now, time);
        e.ejected_until = Some(until);
        self.ejected += 1;
        self.next_return = Some(self.next_return.map_or(until, |at| at.min(until)));
        self.counts.ejections += 1;
        if reason == Reason::FailureRate {
            self.counts.failure_rate_ejections += 1;
        }
        tracing::debug!(
            outlier = %self.name,
            endpoint = %e.label,
            %reason,
            times_ejected = e.times_ejected,
            ejection_time = ?time,
            ejected = self.ejected,
            "endpoint ejected"
        );
        #[cfg(feature = "metrics")]
        self.handles.ejected(reason == Reason::FailureRate);
        self.emit_gauges();
        true
    }

    fn bring_back(&mut self, index: usize, now: Instant, why: &'static str) {
        let e = &mut self.entries[index];
        let Some(until) = e.ejected_until.take() else {
            return;
        };
        e.consecutive_failures = 0;
        e.requests = 0;
        e.failures = 0;
        self.ejected -= 1;
        self.counts.returns += 1;
        tracing::debug!(
            outlier = %self.name,
            endpoint = %e.label,
            why,
            late = ?now.saturating_duration_since(until),
            ejected = self.ejected,
            "endpoint returned"
        );
        #[cfg(feature = "metrics")]
        self.handles.returned();
        self.emit_gauges();
    }

    fn expire(&mut self, now: Instant) {
        for i in 0..self.entries.len() {
            if self.entries[i]
                .ejected_until
                .is_some_and(|until| until <= now)
            {
                self.bring_back(i, now, "time");
            }
        }
        self.next_return = self.entries.iter().filter_map(|e| e.ejected_until).min();
    }

    /// The failure-rate test over the calls since the last one.
    fn judge(&mut self, now: Instant) {
        let Some(rate) = self.settings.failure_rate else {
            self.next_judgement = None;
            return;
        };
        // Highest rates first, so a cap that holds some back holds back the healthier ones.
        loop {
            let mut worst: Option<(f64, usize)> = None;
            for (i, e) in self.entries.iter().enumerate() {
                if e.ejected_until.is_some() || e.requests < rate.minimum_requests {
                    continue;
                }
                let percent = f64::from(e.failures) * 100.0 / f64::from(e.requests);
                if percent >= rate.threshold && worst.is_none_or(|(w, _)| percent > w) {
                    worst = Some((percent, i));
                }
            }
            let Some((_, i)) = worst else { break };
            // Judged: its counts start again whether or not the cap lets it out.
            let judged = &mut self.entries[i];
            judged.requests = 0;
            judged.failures = 0;
            self.eject(i, now, Reason::FailureRate);
        }
        for e in &mut self.entries {
            e.requests = 0;
            e.failures = 0;
        }
        self.next_judgement = Some(instant_after(now, rate.interval));
    }

    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    fn emit_gauges(&self) {
        #[cfg(feature = "metrics")]
        self.handles.gauges(self.ejected, self.entries.len());
    }
}
