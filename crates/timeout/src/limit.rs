//! The engine: a time limit applied to any future, with the timer armed only when needed.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use staunch_core::instant_after;
use tokio::time::Instant;

use crate::config::TimeLimitBuilder;
use crate::deadline::Deadline;
use crate::error::Elapsed;
use crate::request::RequestLimits;
use crate::wheel::{Key, Wheel};
#[cfg(feature = "metrics")]
use staunch_core::telemetry::{label, metric};

/// A time limit for calls: the engine behind [`Timeout`](crate::Timeout), usable on any future
/// without tower.
///
/// [`run`](Self::run) wraps a future so it resolves to `Err(Elapsed)` once the limit passes;
/// [`run_with`](Self::run_with) also honours a per-call override and a [`Deadline`], the
/// earliest bound winning. The timer is armed lazily: a future that finishes on its first poll
/// never arms one and never reads the clock, which is what makes the common fast call cost
/// next to nothing.
///
/// The clock for the relative limit starts when the wrapped future first returns `Pending`
/// (the first moment there is anything to wait for); a deadline is absolute and is honoured
/// exactly.
///
/// # The timer
///
/// A limit and its clones share one deadline timer, not one tokio timer per call: a call that
/// pends takes an entry in the limit's own table (a clock read and a short lock), and one
/// driver task per runtime sleeps until the earliest end and wakes the calls that are due.
/// A driver is spawned by the first call that waits on its runtime, exits once no call is
/// waiting there (at its next wake) or as soon as the limit and all its calls are dropped, and
/// holds nothing that keeps the limit alive. If its runtime shuts down while calls it was
/// timing are still polled elsewhere, they are woken and register again where they are.
///
/// A call never times out early: it reads the clock when polled and gives up only once its
/// end has passed. It may time out up to [`precision`](TimeLimitBuilder::precision) late
/// (default 1 ms), since a driver wakes at most once per `precision`; when timeouts are
/// further apart than that, each fires at its exact end (so under tokio's paused clock a lone
/// timeout fires exactly when due).
///
/// Cloning is cheap (a reference count) and clones share the timer and the
/// [metrics](Self::metrics) of a named limit.
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::{Elapsed, TimeLimit};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = TimeLimit::new(Duration::from_millis(100))?;
/// assert_eq!(limit.run(async { 7 }).await, Ok(7));
///
/// let slow = limit.run(tokio::time::sleep(Duration::from_secs(5)));
/// assert_eq!(slow.await, Err(Elapsed::new(Duration::from_millis(100))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TimeLimit {
    limit: Duration,
    shared: Arc<Shared>,
}

/// State shared by the clones of a [`TimeLimit`]: the timer, and the counters of a named
/// limit (an unnamed one keeps none, so its calls touch no counter).
#[derive(Debug)]
pub(crate) struct Shared {
    // Its own allocation: the driver task holds a `Weak` to it alone.
    wheel: Arc<Wheel>,
    counters: Option<Counters>,
}

#[derive(Debug)]
struct Counters {
    name: Arc<str>,
    armed: AtomicU64,
    elapsed: AtomicU64,
    refused: AtomicU64,
}

/// A snapshot of a named [`TimeLimit`]'s counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TimeoutMetrics {
    /// Calls that did not finish on their first poll, so a timer was armed for them.
    pub timers_armed: u64,
    /// Calls that were started and then cut off by their limit or deadline.
    pub elapsed: u64,
    /// Calls refused without being sent because their deadline had already passed (answered
    /// with a [`DeadlineExpired`](staunch_core::DeadlineExpired) rejection): not counted in
    /// `elapsed`, since nothing was waited for.
    pub refused: u64,
}

impl TimeLimit {
    /// A limit of `limit` per call.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](staunch_core::ConfigError) for `limit` when it is zero.
    pub fn new(limit: Duration) -> Result<Self, staunch_core::ConfigError> {
        Self::builder().limit(limit).build()
    }

    /// A builder, for a named limit (metrics, events) or configuration read from a file.
    pub fn builder() -> TimeLimitBuilder {
        TimeLimitBuilder::default()
    }

    pub(crate) fn from_parts(limit: Duration, name: Option<Arc<str>>, precision: Duration) -> Self {
        Self {
            limit,
            shared: Arc::new(Shared {
                wheel: Arc::new(Wheel::new(precision)),
                counters: name.map(|name| Counters {
                    name,
                    armed: AtomicU64::new(0),
                    elapsed: AtomicU64::new(0),
                    refused: AtomicU64::new(0),
                }),
            }),
        }
    }

    /// The configured limit per call.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// How late a timeout may fire at most (see [the timer](Self#the-timer)).
    pub fn precision(&self) -> Duration {
        self.shared.wheel.precision()
    }

    /// The name given at build time, if any.
    pub fn name(&self) -> Option<&str> {
        self.shared.counters.as_ref().map(|c| &*c.name)
    }

    /// The counters of a named limit (shared by its clones); `None` for an unnamed one, which
    /// keeps no counters so that its calls share no counter.
    pub fn metrics(&self) -> Option<TimeoutMetrics> {
        self.shared.counters.as_ref().map(|c| TimeoutMetrics {
            timers_armed: c.armed.load(Ordering::Relaxed),
            elapsed: c.elapsed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        })
    }

    /// Calls of this limit (and its clones) waiting on its timer right now.
    #[doc(hidden)]
    pub fn waiting(&self) -> usize {
        self.shared.wheel.waiting()
    }

    /// Driver tasks of this limit's timer running right now (one per runtime it has calls
    /// waiting on, until their next wake).
    #[doc(hidden)]
    pub fn drivers(&self) -> usize {
        self.shared.wheel.drivers()
    }

    /// The name, for a rejection to carry.
    pub(crate) fn shared_name(&self) -> Option<Arc<str>> {
        self.shared.counters.as_ref().map(|c| Arc::clone(&c.name))
    }

    /// Runs `future` under the configured limit.
    pub fn run<F: IntoFuture>(&self, future: F) -> Limited<F::IntoFuture> {
        self.run_with(RequestLimits::NONE, future)
    }

    /// Runs `future` until `deadline` at the latest, and under the configured limit.
    pub fn run_until<F: IntoFuture>(
        &self,
        deadline: Deadline,
        future: F,
    ) -> Limited<F::IntoFuture> {
        self.run_with(RequestLimits::deadline(deadline), future)
    }

    /// Runs `future` under `limits.limit` (or the configured limit when `None`) and never past
    /// `limits.deadline`.
    #[inline]
    pub fn run_with<F: IntoFuture>(
        &self,
        limits: RequestLimits,
        future: F,
    ) -> Limited<F::IntoFuture> {
        self.prepare(limits).run(future)
    }

    /// Counts a call refused because its deadline had passed before it started (the `trace`
    /// event is the caller's).
    pub(crate) fn record_expired(&self) {
        if let Some(counters) = &self.shared.counters {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            metrics::counter!(metric::TIMEOUT_REFUSED, label::DEPENDENCY => counters.name.to_string())
                .increment(1);
        }
    }

    /// Everything a [`Limited`] needs but the future: taken before the future is made, so
    /// that the future is built straight into the `Limited` (a call between making it and
    /// moving it in would make the compiler copy it through the stack).
    #[inline]
    pub(crate) fn prepare(&self, limits: RequestLimits) -> Prepared {
        Prepared {
            limit: limits.limit.unwrap_or(self.limit),
            deadline: limits.deadline,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A [`Limited`] waiting for its future: see [`TimeLimit::prepare`].
pub(crate) struct Prepared {
    limit: Duration,
    deadline: Option<Deadline>,
    shared: Arc<Shared>,
}

impl Prepared {
    #[inline]
    pub(crate) fn run<F: IntoFuture>(self, future: F) -> Limited<F::IntoFuture> {
        Limited {
            inner: future.into_future(),
            limit: self.limit,
            deadline: self.deadline,
            timer: Timer {
                shared: self.shared,
                armed: None,
            },
        }
    }
}

pin_project! {
    /// A future limited in time by a [`TimeLimit`]: resolves to the inner output, or to
    /// [`Elapsed`] (carrying the limit that applied) when time runs out first.
    ///
    /// The inner future is always polled before the clock is read, so an output that is ready
    /// at the same moment the limit passes is returned rather than discarded.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner future and frees its entry in the limit's timer (if it was
    /// waiting); it holds nothing else.
    ///
    /// # Panics
    ///
    /// When the inner future returns `Pending`, waiting on the limit's timer panics outside a
    /// tokio runtime with the time driver enabled, as any `tokio::time::sleep` does. A future
    /// that finishes on its first poll needs no runtime.
    #[must_use = "futures do nothing unless polled"]
    pub struct Limited<F> {
        #[pin]
        inner: F,
        // The relative limit until the timer is armed; then the limit actually applied.
        limit: Duration,
        deadline: Option<Deadline>,
        timer: Timer,
    }
}

/// A call's hold on its limit's timer: its entry, freed on drop.
struct Timer {
    shared: Arc<Shared>,
    armed: Option<(Instant, Key)>,
}

impl Timer {
    fn disarm(&mut self) {
        if let Some((_, key)) = self.armed.take() {
            self.shared.wheel.remove(key);
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl<F> std::fmt::Debug for Limited<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limited")
            .field("limit", &self.limit)
            .field("deadline", &self.deadline)
            .field("armed", &self.timer.armed.is_some())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Limited<F> {
    type Output = Result<F::Output, Elapsed>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            this.timer.disarm();
            return Poll::Ready(Ok(output));
        }
        let now = Instant::now();
        let timer = this.timer;
        match timer.armed {
            None => {
                // First `Pending`: only now is a timer worth its cost (clock read, entry).
                let mut end = instant_after(now, *this.limit);
                if let Some(deadline) = *this.deadline
                    && deadline.instant() < end
                {
                    end = deadline.instant();
                    *this.limit = end.saturating_duration_since(now);
                }
                if let Some(counters) = &timer.shared.counters {
                    counters.armed.fetch_add(1, Ordering::Relaxed);
                }
                if now < end {
                    let key = timer.shared.wheel.insert(end, cx.waker());
                    timer.armed = Some((end, key));
                    return Poll::Pending;
                }
            }
            Some((end, key)) => {
                if now < end {
                    timer.shared.wheel.refresh(key, cx.waker());
                    return Poll::Pending;
                }
                timer.disarm();
            }
        }
        report_elapsed(timer.shared.counters.as_ref(), *this.limit);
        Poll::Ready(Err(Elapsed::new(*this.limit)))
    }
}

fn report_elapsed(counters: Option<&Counters>, limit: Duration) {
    if let Some(counters) = counters {
        counters.elapsed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(name = &*counters.name, ?limit, "call timed out");
        #[cfg(feature = "metrics")]
        metrics::counter!(metric::TIMEOUT_ELAPSED, label::DEPENDENCY => counters.name.to_string())
            .increment(1);
    } else {
        tracing::debug!(?limit, "call timed out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_of_a_named_limit_holds_its_counters_until_it_is_dropped() {
        let limit = TimeLimit::builder()
            .limit(Duration::from_secs(1))
            .name("counted")
            .build()
            .unwrap();
        let shared = Arc::clone(&limit.shared);
        // The limit's reference and ours.
        assert_eq!(Arc::strong_count(&shared), 2);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut call = Box::pin(limit.run(async { 1 }));
        assert_eq!(Arc::strong_count(&shared), 3);
        assert_eq!(call.as_mut().poll(&mut cx), Poll::Ready(Ok(1)));
        drop(call);
        assert_eq!(Arc::strong_count(&shared), 2);
        // A call dropped before it finished drops its reference too.
        drop(limit.run(async { 0 }));
        assert_eq!(Arc::strong_count(&shared), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_named_limit_leaves_nothing_alive_on_worker_threads() {
        let limit = TimeLimit::builder()
            .limit(Duration::from_mins(1))
            .name("dropped")
            .build()
            .unwrap();
        let weak = Arc::downgrade(&limit.shared);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let limit = limit.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        // Ready at once, then pending once (a timer is armed).
                        limit.run(async {}).await.unwrap();
                        limit.run(tokio::task::yield_now()).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(limit.metrics().map(|m| m.timers_armed), Some(800));
        drop(limit);
        // The workers are still running: a reference one of them kept would still be alive.
        assert!(
            weak.upgrade().is_none(),
            "the counters outlived the last limit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_left_alive_once_a_limit_and_its_calls_are_dropped() {
        let limit = TimeLimit::new(Duration::from_mins(1)).unwrap();
        let shared = Arc::downgrade(&limit.shared);
        let wheel = Arc::downgrade(&limit.shared.wheel);
        let metrics = tokio::runtime::Handle::current().metrics();
        // A call that waits spawns the driver, which sleeps until its end (a minute away).
        limit
            .run(tokio::time::sleep(Duration::from_millis(1)))
            .await
            .unwrap();
        assert_eq!((limit.drivers(), metrics.num_alive_tasks()), (1, 1));
        // A call still waiting when the limit is dropped keeps the timer until it goes.
        let mut waiting = Box::pin(limit.run(std::future::pending::<()>()));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(limit);
        assert!(wheel.upgrade().is_some());
        drop(waiting);
        assert!(shared.upgrade().is_none(), "the limit's state outlived it");
        assert!(wheel.upgrade().is_none(), "the timer outlived its limit");
        // The dropped timer woke its driver, which exits at once.
        tokio::task::yield_now().await;
        assert_eq!(
            metrics.num_alive_tasks(),
            0,
            "the driver outlived its timer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn named_limits_count_armed_timers_and_timeouts() {
        let limit = TimeLimit::builder()
            .limit(Duration::from_millis(10))
            .name("payments")
            .build()
            .unwrap();
        assert_eq!(limit.name(), Some("payments"));
        assert_eq!(limit.run(async {}).await, Ok(()));
        assert_eq!(limit.metrics(), Some(TimeoutMetrics::default()));

        let clone = limit.clone();
        let slow = clone.run(tokio::time::sleep(Duration::from_secs(1))).await;
        assert_eq!(slow, Err(Elapsed::new(Duration::from_millis(10))));
        let quick_but_pending = limit
            .run(tokio::time::sleep(Duration::from_millis(1)))
            .await;
        assert_eq!(quick_but_pending, Ok(()));
        assert_eq!(
            limit.metrics(),
            Some(TimeoutMetrics {
                timers_armed: 2,
                elapsed: 1,
                refused: 0,
            })
        );
    }

    #[test]
    fn unnamed_limits_keep_no_counters() {
        let limit = TimeLimit::new(Duration::from_secs(1)).unwrap();
        assert_eq!(limit.name(), None);
        assert_eq!(limit.metrics(), None);
    }
}
