//! The bulkhead engine: a named, shareable concurrency limit with bounded FIFO waiting.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

#[cfg(feature = "metrics")]
use staunch_core::telemetry::{label, metric};
use staunch_core::{BulkheadFull, BulkheadFullReason, ConfigError, Outcome, instant_after};
use tokio::time::Instant;

use crate::acquire::{Acquire, Run};
use crate::adaptive::Limiter;
use crate::config::BulkheadBuilder;
use crate::layer::BulkheadLayer;
use crate::metrics::BulkheadMetrics;
use crate::state::{MAX_LIMIT, Permits};

/// A concurrency limit shared by every clone: at most `max_concurrent` calls run at once,
/// others wait in FIFO order for at most `max_wait`, and at most `max_queued` may wait.
///
/// Cloning is cheap (a reference count) and every clone is the same bulkhead. Build one with
/// [`Bulkhead::builder`]; use it directly ([`run`](Self::run), [`acquire`](Self::acquire),
/// [`try_acquire`](Self::try_acquire)) or as a tower layer ([`layer`](Self::layer)).
///
/// ```
/// use std::time::Duration;
/// use staunch_bulkhead::Bulkhead;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bulkhead = Bulkhead::builder("inventory")
///     .max_concurrent(2)
///     .max_wait(Duration::from_millis(50))
///     .build()?;
/// let stock = bulkhead.run(async { 42 }).await?;
/// assert_eq!(stock, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Bulkhead {
    pub(crate) inner: Arc<Inner>,
}

// `repr(C)` with the permit counter first: it then sits right after the `Arc`'s reference
// counts, on the same cache line in most allocations, so a call that clones the `Arc` and
// takes a permit touches one contended line instead of two.
#[repr(C)]
pub(crate) struct Inner {
    pub(crate) permits: Permits,
    /// `adaptive.is_some()`, next to the counter so the fast path reads one cache line.
    is_adaptive: bool,
    /// Permits of an adaptive bulkhead record their start as nanoseconds since this instant.
    epoch: Instant,
    pub(crate) name: Arc<str>,
    pub(crate) max_wait: Duration,
    pub(crate) max_queued: usize,
    adaptive: Option<Mutex<Limiter>>,
    stats: Stats,
}

/// Counters only touched on the slow path and on rejections.
#[derive(Default)]
struct Stats {
    rejected_no_permit: AtomicU64,
    rejected_wait_timed_out: AtomicU64,
    rejected_queue_full: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.name)
            .field("max_concurrent", &self.max_concurrent())
            .field("in_flight", &self.in_flight())
            .field("max_wait", &self.inner.max_wait)
            .field("max_queued", &self.inner.max_queued)
            .field("adaptive", &self.is_adaptive())
            .finish()
    }
}

impl Bulkhead {
    /// Starts configuring a bulkhead called `name` (the name appears in rejections, logs and
    /// metrics: name it after the dependency it protects).
    pub fn builder(name: impl Into<Arc<str>>) -> BulkheadBuilder {
        BulkheadBuilder::new(name.into())
    }

    pub(crate) fn from_parts(
        name: Arc<str>,
        max_concurrent: usize,
        max_wait: Duration,
        max_queued: usize,
        adaptive: Option<Limiter>,
    ) -> Self {
        #[cfg(feature = "metrics")]
        staunch_core::telemetry::describe_metrics();
        Self {
            inner: Arc::new(Inner {
                permits: Permits::new(max_concurrent),
                is_adaptive: adaptive.is_some(),
                epoch: Instant::now(),
                name,
                max_wait,
                max_queued,
                adaptive: adaptive.map(Mutex::new),
                stats: Stats::default(),
            }),
        }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The current limit on concurrent calls (it moves when adaptive or resized).
    pub fn max_concurrent(&self) -> usize {
        self.inner.permits.limit()
    }

    /// How long a call may wait for a permit (zero: callers never wait).
    pub fn max_wait(&self) -> Duration {
        self.inner.max_wait
    }

    /// How many calls may wait for a permit at once.
    pub fn max_queued(&self) -> usize {
        self.inner.max_queued
    }

    /// Calls holding a permit right now.
    pub fn in_flight(&self) -> usize {
        self.inner.permits.in_flight()
    }

    /// `true` when the limit is driven by an [`AdaptiveLimit`](crate::AdaptiveLimit).
    pub fn is_adaptive(&self) -> bool {
        self.inner.adaptive.is_some()
    }

    /// Takes a permit if one is free and nobody is waiting; never waits.
    ///
    /// Lock-free and allocation-free. It does not overtake queued callers: while anyone
    /// waits it fails with [`BulkheadFullReason::NoPermit`].
    pub fn try_acquire(&self) -> Result<Permit, BulkheadFull> {
        if self.inner.permits.try_acquire() {
            Ok(Permit::new(self))
        } else {
            Err(self.inner.reject(BulkheadFullReason::NoPermit))
        }
    }

    /// Waits for a permit, in FIFO order, for at most `max_wait`.
    ///
    /// Resolves at once when a permit is free. Fails with `NoPermit` when `max_wait` is zero,
    /// `QueueFull` when `max_queued` callers already wait, and `WaitTimedOut` at the deadline.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up the place in the queue; a permit granted to it in the
    /// meantime is passed on to the next waiter. No permit is ever lost.
    pub fn acquire(&self) -> Acquire {
        Acquire::new(self.clone(), None)
    }

    /// Runs `future` under a permit: waits like [`acquire`](Self::acquire), then polls
    /// `future` to completion and releases the permit.
    ///
    /// `future` is not polled at all when the call is rejected. When the bulkhead is adaptive,
    /// a completed run counts as a success with its latency; use
    /// [`acquire`](Self::acquire) and [`Permit::record`] to classify results yourself.
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future at any point releases the permit (or the place in the
    /// queue) and drops `future`.
    pub fn run<F: Future>(&self, future: F) -> Run<F> {
        Run::new(self.acquire(), future)
    }

    /// Changes the limit at runtime.
    ///
    /// Growing it admits queued callers at once. Shrinking it never cancels a call in flight:
    /// they finish, and nobody is admitted until fewer than `max_concurrent` are in flight.
    /// For an adaptive bulkhead this resets the estimate, and `max_concurrent` must lie within
    /// the adaptive bounds.
    pub fn set_max_concurrent(&self, max_concurrent: usize) -> Result<(), ConfigError> {
        if max_concurrent == 0 {
            return Err(ConfigError::new("max_concurrent", "must be at least 1"));
        }
        if max_concurrent > MAX_LIMIT {
            return Err(ConfigError::new(
                "max_concurrent",
                format!("must be at most {MAX_LIMIT} (got {max_concurrent})"),
            ));
        }
        if let Some(limiter) = &self.inner.adaptive {
            let mut limiter = limiter.lock().unwrap_or_else(PoisonError::into_inner);
            let (min, max) = limiter.bounds();
            if !(min..=max).contains(&max_concurrent) {
                return Err(ConfigError::new(
                    "max_concurrent",
                    format!(
                        "must lie within the adaptive bounds [{min}, {max}] (got {max_concurrent})"
                    ),
                ));
            }
            limiter.reset(max_concurrent, Instant::now());
            self.inner.set_limit(max_concurrent, "resized");
        } else {
            self.inner.set_limit(max_concurrent, "resized");
        }
        Ok(())
    }

    /// A tower layer that puts this bulkhead in front of a service.
    pub fn layer(&self) -> BulkheadLayer {
        BulkheadLayer::new(self.clone())
    }

    /// A cheap snapshot of the bulkhead's state and counters.
    pub fn metrics(&self) -> BulkheadMetrics {
        let s = &self.inner.stats;
        BulkheadMetrics {
            in_flight: self.in_flight(),
            queued: self.inner.permits.queued(),
            max_concurrent: self.max_concurrent(),
            rejected_no_permit: s.rejected_no_permit.load(Ordering::Relaxed),
            rejected_wait_timed_out: s.rejected_wait_timed_out.load(Ordering::Relaxed),
            rejected_queue_full: s.rejected_queue_full.load(Ordering::Relaxed),
            waited: s.waited.load(Ordering::Relaxed),
            total_wait: Duration::from_nanos(s.wait_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Publishes [`metrics`](Self::metrics) as gauges through the `metrics` crate, labelled
    /// `staunch.dependency` with the bulkhead's name: `staunch.bulkhead.in_flight`,
    /// `staunch.bulkhead.queued` and `staunch.bulkhead.limit`. Call it from a periodic task; the request path never
    /// touches the metrics recorder except on rejections, waits and limit changes.
    #[cfg(feature = "metrics")]
    pub fn emit_metrics(&self) {
        let m = self.metrics();
        let name = metrics::SharedString::from_shared(Arc::clone(&self.inner.name));
        metrics::gauge!(metric::BULKHEAD_IN_FLIGHT, label::DEPENDENCY => name.clone())
            .set(m.in_flight as f64);
        metrics::gauge!(metric::BULKHEAD_QUEUED, label::DEPENDENCY => name.clone())
            .set(m.queued as f64);
        metrics::gauge!(metric::BULKHEAD_LIMIT, label::DEPENDENCY => name)
            .set(m.max_concurrent as f64);
    }
}

impl Inner {
    /// Counts and reports a rejection, and builds the error.
    #[cold]
    pub(crate) fn reject(&self, reason: BulkheadFullReason) -> BulkheadFull {
        let (counter, label) = match reason {
            BulkheadFullReason::WaitTimedOut(_) => {
                (&self.stats.rejected_wait_timed_out, "wait_timed_out")
            }
            BulkheadFullReason::QueueFull => (&self.stats.rejected_queue_full, "queue_full"),
            _ => (&self.stats.rejected_no_permit, "no_permit"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let limit = self.permits.limit();
        tracing::trace!(bulkhead = %self.name, reason = label, max_concurrent = limit, "bulkhead rejected a call");
        #[cfg(feature = "metrics")]
        metrics::counter!(
            metric::BULKHEAD_REJECTIONS,
            label::DEPENDENCY => metrics::SharedString::from_shared(Arc::clone(&self.name)),
            label::REASON => label
        )
        .increment(1);
        BulkheadFull::new(Arc::clone(&self.name), limit, reason)
    }

    /// Records how long an admitted (or timed-out) caller waited.
    #[cold]
    pub(crate) fn record_wait(&self, waited: Duration, admitted: bool) {
        if admitted {
            self.stats.waited.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.stats.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::histogram!(
            metric::BULKHEAD_WAIT_DURATION,
            label::DEPENDENCY => metrics::SharedString::from_shared(Arc::clone(&self.name))
        )
        .record(waited.as_secs_f64());
    }

    fn set_limit(&self, limit: usize, why: &'static str) {
        let old = self.permits.set_limit(limit);
        if old != limit {
            tracing::debug!(bulkhead = %self.name, old, new = limit, why, "bulkhead limit changed");
            #[cfg(feature = "metrics")]
            metrics::gauge!(
                metric::BULKHEAD_LIMIT,
                label::DEPENDENCY => metrics::SharedString::from_shared(Arc::clone(&self.name))
            )
            .set(limit as f64);
        }
    }

    fn sample(&self, started: Instant, outcome: Outcome) {
        let Some(limiter) = &self.adaptive else {
            return;
        };
        if outcome == Outcome::Ignored {
            return;
        }
        let now = Instant::now();
        let in_flight = self.permits.in_flight();
        let mut limiter = limiter.lock().unwrap_or_else(PoisonError::into_inner);
        let next = limiter.sample(started, now, in_flight, outcome);
        if next != self.permits.limit() {
            self.set_limit(next, "adaptive");
        }
    }
}

/// A permit to run one call; the permit goes back to the bulkhead when dropped.
///
/// Holding it is what counts as "in flight". For an adaptive bulkhead, finish with
/// [`record`](Self::record) so the call's latency and outcome feed the limit; a permit that
/// is simply dropped records nothing (as for a cancelled call).
///
/// ```
/// use staunch_bulkhead::{AdaptiveLimit, Bulkhead};
/// use staunch_core::{AnyError, Classify};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let search = Bulkhead::builder("search")
///     .max_concurrent(4)
///     .adaptive(AdaptiveLimit::aimd().max_limit(64))
///     .build()?;
/// let permit = search.acquire().await?;
/// let result: Result<u32, std::io::Error> = Ok(3); // the call made under the permit
/// permit.record(AnyError::new().classify(&result));
/// assert_eq!(search.in_flight(), 0);
/// # Ok(())
/// # }
/// ```
#[must_use = "the permit is released as soon as it is dropped"]
pub struct Permit {
    /// A reference of its own, taken per permit: a permit may outlive every `Bulkhead`
    /// handle. `None` only while the permit is dropped.
    bulkhead: Option<Bulkhead>,
    /// When the permit was granted, as nanoseconds since `Inner::epoch` plus one; zero when
    /// the bulkhead is not adaptive. A plain integer rather than `Option<Instant>`: it keeps
    /// `Option<Permit>` the size of a pointer-tagged value and the fast path free of the
    /// narrow stores an `Instant` niche would need.
    started: u64,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("bulkhead", &self.bulkhead().inner.name)
            .finish()
    }
}

impl Permit {
    /// Wraps a permit already counted in `bulkhead`'s `in_flight`.
    #[inline]
    pub(crate) fn new(bulkhead: &Bulkhead) -> Self {
        let bulkhead = bulkhead.clone();
        let started = if bulkhead.inner.is_adaptive {
            let since = Instant::now().saturating_duration_since(bulkhead.inner.epoch);
            u64::try_from(since.as_nanos())
                .unwrap_or(u64::MAX - 1)
                .saturating_add(1)
        } else {
            0
        };
        Self {
            bulkhead: Some(bulkhead),
            started,
        }
    }

    /// The bulkhead this permit belongs to.
    pub fn bulkhead(&self) -> &Bulkhead {
        match &self.bulkhead {
            Some(bulkhead) => bulkhead,
            None => unreachable!("a permit keeps its bulkhead until it is dropped"),
        }
    }

    /// Releases the permit and reports the call's outcome to an adaptive limit (the latency
    /// is measured from when the permit was granted). Without an adaptive limit this is the
    /// same as dropping the permit.
    pub fn record(mut self, outcome: Outcome) {
        let started = std::mem::take(&mut self.started);
        if started != 0 {
            let inner = &self.bulkhead().inner;
            inner.sample(
                instant_after(inner.epoch, Duration::from_nanos(started - 1)),
                outcome,
            );
        }
    }

    pub(crate) fn wants_outcome(&self) -> bool {
        self.started != 0
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let Some(bulkhead) = self.bulkhead.take() {
            bulkhead.inner.permits.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Bulkhead;

    fn bulkhead(limit: usize) -> Bulkhead {
        Bulkhead::builder("references")
            .max_concurrent(limit)
            .build()
            .unwrap()
    }

    #[test]
    fn a_permit_holds_its_bulkhead_only_until_it_is_released() {
        let b = bulkhead(2);
        assert_eq!(Arc::strong_count(&b.inner), 1);
        let permit = b.try_acquire().unwrap();
        assert_eq!(Arc::strong_count(&b.inner), 2);
        assert_eq!(b.in_flight(), 1);
        let second = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "the limit still holds");
        drop((permit, second));
        assert_eq!(b.in_flight(), 0);
        assert_eq!(Arc::strong_count(&b.inner), 1);
    }

    #[test]
    fn a_permit_that_outlives_its_bulkhead_frees_it() {
        let b = bulkhead(1);
        let weak = Arc::downgrade(&b.inner);
        let permit = b.try_acquire().unwrap();
        drop(b);
        assert_eq!(weak.strong_count(), 1);
        drop(permit);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn bulkheads_taking_turns_on_one_thread_release_every_permit() {
        let (a, b) = (bulkhead(1), bulkhead(1));
        for _ in 0..100 {
            drop(a.try_acquire().unwrap());
            drop(b.try_acquire().unwrap());
        }
        assert_eq!((a.in_flight(), b.in_flight()), (0, 0));
        // Nothing but the handle holds a bulkhead between calls.
        assert_eq!(Arc::strong_count(&a.inner), 1);
        assert_eq!(Arc::strong_count(&b.inner), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_bulkhead_leaves_nothing_alive_on_worker_threads() {
        // Waiting, so that permits are also handed from task to task.
        let b = Bulkhead::builder("references")
            .max_concurrent(2)
            .max_wait(std::time::Duration::from_mins(1))
            .max_queued(8)
            .build()
            .unwrap();
        let weak = Arc::downgrade(&b.inner);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        b.run(tokio::task::yield_now()).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(b.in_flight(), 0);
        drop(b);
        // The workers are still running: a reference one of them kept would still be alive.
        assert!(
            weak.upgrade().is_none(),
            "the bulkhead outlived its last handle"
        );
    }
}
