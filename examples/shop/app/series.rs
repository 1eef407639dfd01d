//! The dashboard's time series: a sampler in the order service that reads the shop's own
//! status once a second (each dependency's breaker, bulkhead and retry policy, the
//! payment-pending fallback policy, and the step calls the order service times) and keeps
//! the last five minutes in a bounded ring.
//!
//! Rates are per second, from the difference of the cumulative counters between two
//! samples; latencies are the step calls' (retries included) that ended in the second.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::MissedTickBehavior;

use super::order::{Guards, OrderService};

/// The dependencies the dashboard plots, with the saga steps that call each.
pub(crate) const DEPENDENCIES: [(&str, &[&str]); 3] = [
    ("inventory", &["reserve", "hold"]),
    ("payment", &["charge"]),
    ("shipping", &["ship"]),
];

/// Samples kept: five minutes at one a second.
pub(crate) const CAPACITY: usize = 300;

/// One dependency in one sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct DepSample {
    /// The dependency.
    pub(crate) name: &'static str,
    /// Calls that succeeded, per second.
    pub(crate) ok: f64,
    /// Calls that failed (errors, timeouts, slow calls counted as failures), per second.
    pub(crate) failed: f64,
    /// Calls refused by the open breaker, per second.
    pub(crate) refused_breaker: f64,
    /// Calls refused by the full bulkhead, per second.
    pub(crate) refused_bulkhead: f64,
    /// Refusals answered by the fallback policy (payment pending), per second.
    pub(crate) fallback: f64,
    /// Retries, per second.
    pub(crate) retries: f64,
    /// Median step latency in the second, milliseconds (`None`: no calls).
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile step latency in the second, milliseconds.
    pub(crate) p99_ms: Option<f64>,
    /// The breaker's state (`closed`, `half_open`, `open`, ...).
    pub(crate) state: &'static str,
    /// Calls holding a bulkhead permit.
    pub(crate) in_flight: usize,
    /// Calls waiting for one.
    pub(crate) queued: usize,
    /// The bulkhead's limit.
    pub(crate) max_concurrent: usize,
    /// Retries the budget allows now (`None`: unlimited).
    pub(crate) budget_left: Option<u64>,
}

/// One sample: every dependency at one instant.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Sample {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub(crate) t_ms: u64,
    /// One entry per dependency of [`DEPENDENCIES`], in that order.
    pub(crate) deps: Vec<DepSample>,
}

/// Cumulative counters of one dependency.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    ok: u64,
    failed: u64,
    refused_breaker: u64,
    refused_bulkhead: u64,
    fallback: u64,
    retries: u64,
}

impl Totals {
    fn of(guards: &Guards, fallback: u64) -> Self {
        let breaker = guards.breaker.snapshot();
        Self {
            ok: breaker.successful_calls,
            failed: breaker.failed_calls,
            refused_breaker: breaker.rejected_calls,
            refused_bulkhead: guards.bulkhead.metrics().rejections(),
            fallback,
            retries: guards.retry.metrics().retries,
        }
    }
}

/// The ring of samples, shared by the sampler task and the HTTP handler.
#[derive(Debug, Clone, Default)]
pub(crate) struct Series {
    ring: Arc<Mutex<VecDeque<Sample>>>,
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `p`th percentile (0..=100) of sorted values (nearest rank).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `now - before` per second of `elapsed` (0 for a counter that went back).
fn rate(now: u64, before: u64, elapsed: f64) -> f64 {
    now.saturating_sub(before) as f64 / elapsed
}

impl Series {
    /// Starts sampling `orders` every `every` into a fresh ring; the task ends when the
    /// last handle to the ring is dropped.
    pub(crate) fn start(orders: OrderService, every: Duration) -> Self {
        let series = Self::default();
        let ring = Arc::downgrade(&series.ring);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut before: Option<(tokio::time::Instant, Vec<Totals>)> = None;
            loop {
                ticker.tick().await;
                let Some(ring) = ring.upgrade() else { break };
                let now = tokio::time::Instant::now();
                let totals = totals(&orders);
                if let Some((at, previous)) = &before {
                    let elapsed = now.duration_since(*at).as_secs_f64().max(1e-3);
                    let sample = sample(&orders, &totals, previous, elapsed);
                    let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
                    if ring.len() >= CAPACITY {
                        ring.pop_front();
                    }
                    ring.push_back(sample);
                } else {
                    // The first tick only sets the baseline (and drops older step calls).
                    orders.take_step_latencies();
                }
                if let Some(prometheus) = super::dashboard::prometheus() {
                    prometheus.run_upkeep();
                }
                before = Some((now, totals));
            }
        });
        series
    }

    /// The samples, oldest first.
    pub(crate) fn samples(&self) -> Vec<Sample> {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

fn guards_of<'a>(orders: &'a OrderService, name: &str) -> Option<&'a Guards> {
    orders.guards().iter().find(|g| g.name == name)
}

fn totals(orders: &OrderService) -> Vec<Totals> {
    let fallback = orders.fallback_metrics();
    DEPENDENCIES
        .iter()
        .map(|(name, _)| {
            let answered = if *name == "payment" {
                fallback.rejections + fallback.errors + fallback.statuses + fallback.responses
            } else {
                0
            };
            guards_of(orders, name).map_or_else(Totals::default, |g| Totals::of(g, answered))
        })
        .collect()
}

fn sample(orders: &OrderService, totals: &[Totals], before: &[Totals], elapsed: f64) -> Sample {
    let calls = orders.take_step_latencies();
    let deps = DEPENDENCIES
        .iter()
        .zip(totals.iter().zip(before))
        .map(|((name, steps), (now, then))| {
            let mut latencies: Vec<f64> = calls
                .iter()
                .filter(|(step, _)| steps.contains(&step.as_str()))
                .map(|(_, took)| took.as_secs_f64() * 1000.0)
                .collect();
            latencies.sort_by(f64::total_cmp);
            let guards = guards_of(orders, name);
            let bulkhead = guards.map(|g| g.bulkhead.metrics());
            DepSample {
                name,
                ok: rate(now.ok, then.ok, elapsed),
                failed: rate(now.failed, then.failed, elapsed),
                refused_breaker: rate(now.refused_breaker, then.refused_breaker, elapsed),
                refused_bulkhead: rate(now.refused_bulkhead, then.refused_bulkhead, elapsed),
                fallback: rate(now.fallback, then.fallback, elapsed),
                retries: rate(now.retries, then.retries, elapsed),
                p50_ms: percentile(&latencies, 50.0),
                p99_ms: percentile(&latencies, 99.0),
                state: guards.map_or("unknown", |g| g.breaker.state().as_str()),
                in_flight: bulkhead.as_ref().map_or(0, |b| b.in_flight),
                queued: bulkhead.as_ref().map_or(0, |b| b.queued),
                max_concurrent: bulkhead.as_ref().map_or(0, |b| b.max_concurrent),
                budget_left: guards.and_then(|g| g.retry.metrics().budget_left),
            }
        })
        .collect();
    Sample {
        t_ms: unix_ms(),
        deps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn a_counter_that_went_back_is_no_negative_rate() {
        assert_eq!(rate(3, 5, 1.0), 0.0);
        assert_eq!(rate(10, 4, 2.0), 3.0);
    }
}
