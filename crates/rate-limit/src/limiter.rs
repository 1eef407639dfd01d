//! [`RateLimiter`]: one rate for every call, shared by every clone.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use staunch_core::{ConfigError, RateLimited};
use tokio::time::{Instant, Sleep};

use crate::gcra::{Cell, Quota, Take};
use crate::hint::RateHint;
#[cfg(feature = "metrics")]
use staunch_core::telemetry::{label, metric};

/// Nanoseconds since a limiter was made, on tokio's clock (so paused time drives it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    #[inline]
    pub(crate) fn now(self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    /// The instant `nanos` from now, saturating.
    pub(crate) fn after(nanos_from_now: u64) -> Instant {
        staunch_core::instant_after(Instant::now(), Duration::from_nanos(nanos_from_now))
    }
}

/// The longest span the limiter reckons with: 2^61 ns, about 73 years. A bucket must refill
/// within it; longer waits (a `max_wait`, a server's `Retry-After`) are cut to it, which for
/// a running process is the same as "never". Keeping every timestamp under 2^63 means no
/// sum of them saturates, so saturation never turns a limit into no limit.
pub(crate) const HORIZON: u64 = 1 << 61;

/// A duration in nanoseconds, capped at [`HORIZON`].
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).map_or(HORIZON, |n| n.min(HORIZON))
}

/// What a limiter admits: the rate, the burst and how long a call may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) quota: Quota,
    pub(crate) max_wait: u64,
    pub(crate) count: u32,
    pub(crate) per: Duration,
    pub(crate) burst: u32,
}

/// Counters shared by a limiter's clones.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delayed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) hints: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> RateLimitMetrics {
        RateLimitMetrics {
            delayed: self.delayed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            hints: self.hints.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reject(&self, name: &Arc<str>, retry_after: u64) -> RateLimited {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let retry_after = Duration::from_nanos(retry_after);
        tracing::debug!(limiter = %name, ?retry_after, "call rate limited");
        #[cfg(feature = "metrics")]
        metrics::counter!(metric::RATE_LIMIT_REJECTIONS, label::DEPENDENCY => name.to_string())
            .increment(1);
        RateLimited::new(Arc::clone(name), retry_after)
    }

    pub(crate) fn delay(&self, name: &Arc<str>, wait: u64) {
        self.delayed.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(limiter = %name, wait = ?Duration::from_nanos(wait), "call delayed");
        #[cfg(feature = "metrics")]
        metrics::counter!(metric::RATE_LIMIT_DELAYED, label::DEPENDENCY => name.to_string())
            .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = name;
    }

    pub(crate) fn hint(&self, name: &Arc<str>, hint: RateHint) {
        self.hints.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(limiter = %name, ?hint, "server asked to slow down");
        #[cfg(feature = "metrics")]
        metrics::counter!(metric::RATE_LIMIT_HINTS, label::DEPENDENCY => name.to_string())
            .increment(1);
    }
}

/// A snapshot of a limiter's counters.
///
/// Calls let through at once are not counted: that path costs one compare-and-swap and
/// nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RateLimitMetrics {
    /// Calls that waited for a permit (and then ran, or were dropped while waiting).
    pub delayed: u64,
    /// Calls refused with [`RateLimited`].
    pub rejected: u64,
    /// Server hints applied (`429` with `Retry-After`, quota headers).
    pub hints: u64,
}

pub(crate) struct Inner {
    name: Arc<str>,
    settings: Settings,
    clock: Clock,
    cell: Cell,
    counters: Counters,
}

/// A rate limiter: at most `count` calls per `per`, with bursts of up to `burst`, shared by
/// every clone.
///
/// It implements the generic cell rate algorithm (the leaky bucket as a single atomic
/// timestamp): a call costs one compare-and-swap, takes no lock and arms no timer. A call
/// with no permit either waits for the next one, up to `max_wait` (its slot is reserved, so
/// callers are served in order, and a caller that gives up waiting gives its slot back), or
/// is refused at once with a [`RateLimited`] rejection that says when the next permit
/// comes. Like every staunch rejection it is never retried by the retry layer and never
/// counted by a circuit breaker.
///
/// The clock is tokio's, so the limiter follows paused time in tests. Server hints
/// ([`observe`](Self::observe)) lower the rate for a while: see [`RateHint`].
///
/// ```
/// use std::time::Duration;
/// use staunch_rate_limit::RateLimiter;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::builder("search")
///     .rate(10, Duration::from_secs(1))
///     .burst(2)
///     .build()
///     .unwrap();
/// assert!(limiter.try_acquire().is_ok());
/// assert!(limiter.try_acquire().is_ok());
/// let refused = limiter.try_acquire().unwrap_err();
/// assert_eq!(refused.retry_after(), Duration::from_millis(100));
/// tokio::time::sleep(Duration::from_millis(100)).await;
/// assert!(limiter.try_acquire().is_ok());
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.name)
            .field("count", &self.inner.settings.count)
            .field("per", &self.inner.settings.per)
            .field("burst", &self.inner.settings.burst)
            .field(
                "max_wait",
                &Duration::from_nanos(self.inner.settings.max_wait),
            )
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Starts a limiter called `name` (in rejections, metrics and traces).
    pub fn builder(name: impl Into<Arc<str>>) -> RateLimiterBuilder {
        RateLimiterBuilder::new(name.into())
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Takes a permit if one is free now; never waits.
    ///
    /// # Errors
    ///
    /// [`RateLimited`] when no permit is free, with the time until the next one.
    #[inline]
    pub fn try_acquire(&self) -> Result<(), RateLimited> {
        let inner = &*self.inner;
        match inner.cell.take(inner.clock.now(), inner.settings.quota, 0) {
            Take::Now => Ok(()),
            Take::Refused { retry_after } => Err(inner.counters.reject(&inner.name, retry_after)),
            // `max_wait` is zero, so nothing is reserved.
            Take::Later { .. } => unreachable_later(),
        }
    }

    /// Takes a permit, waiting for it up to the limiter's `max_wait`.
    ///
    /// # Errors
    ///
    /// [`RateLimited`] (at once, without waiting) when the next free permit is further away
    /// than `max_wait`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves gives its reserved slot back to the limiter.
    pub fn acquire(&self) -> Acquire {
        Acquire::new(Reservation::take(self, true))
    }

    /// A slot for a call sent at once if free (no refund needed then).
    pub(crate) fn reserve(&self) -> Reservation {
        Reservation::take(self, false)
    }

    /// Applies a server's hint: no permit until a `Retry-After` has passed, or the
    /// remaining calls of a quota spread over its window.
    pub fn observe(&self, hint: RateHint) {
        let inner = &*self.inner;
        apply(&inner.cell, inner.clock.now(), hint, inner.settings.quota);
        inner.counters.hint(&inner.name, hint);
    }

    /// How long until a call would get a permit (zero: now).
    pub fn wait_time(&self) -> Duration {
        let inner = &*self.inner;
        Duration::from_nanos(inner.cell.wait_at(inner.clock.now(), inner.settings.quota))
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> RateLimitMetrics {
        self.inner.counters.snapshot()
    }
}

/// Applies `hint` to `cell`.
pub(crate) fn apply(cell: &Cell, now: u64, hint: RateHint, quota: Quota) {
    match hint {
        RateHint::RetryAfter(wait) => cell.block_for(now, nanos(wait), quota),
        RateHint::Remaining { remaining, window } => {
            cell.slow_down(now, remaining, nanos(window), quota);
        }
    }
}

#[cold]
fn unreachable_later() -> Result<(), RateLimited> {
    // A take with `max_wait == 0` only reserves a slot that starts now, which is `Now`.
    Ok(())
}

/// A slot taken from a limiter: free now, reserved for later, or refused.
#[derive(Debug)]
pub(crate) enum Reservation {
    /// Go now; the refund is there for a permit that may still go unused (an `Acquire`
    /// dropped before it is polled).
    Now(Option<Refund>),
    /// Wait until `at`; `refund` gives the slot back if dropped before.
    Later { at: Instant, refund: Refund },
    /// Refused.
    Refused(RateLimited),
}

impl Reservation {
    fn take(limiter: &RateLimiter, refundable: bool) -> Self {
        let inner = &*limiter.inner;
        match inner.cell.take(
            inner.clock.now(),
            inner.settings.quota,
            inner.settings.max_wait,
        ) {
            Take::Now => Reservation::Now(refundable.then(|| {
                Refund::new(
                    RefundTarget::Single(Arc::clone(&limiter.inner)),
                    inner.settings.quota.interval,
                )
            })),
            Take::Later { wait, interval } => {
                inner.counters.delay(&inner.name, wait);
                Reservation::Later {
                    at: Clock::after(wait),
                    refund: Refund::new(RefundTarget::Single(Arc::clone(&limiter.inner)), interval),
                }
            }
            Take::Refused { retry_after } => {
                Reservation::Refused(inner.counters.reject(&inner.name, retry_after))
            }
        }
    }
}

/// Where a reserved slot goes back to.
pub(crate) enum RefundTarget {
    Single(Arc<Inner>),
    Keyed(Arc<Cell>, Clock),
}

impl fmt::Debug for RefundTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefundTarget")
    }
}

/// A reserved slot, given back when dropped unless [`keep`](Self::keep) was called.
#[derive(Debug)]
pub(crate) struct Refund {
    target: Option<RefundTarget>,
    interval: u64,
}

impl Refund {
    pub(crate) fn new(target: RefundTarget, interval: u64) -> Self {
        Self {
            target: Some(target),
            interval,
        }
    }

    /// The slot was used: nothing to give back.
    pub(crate) fn keep(mut self) {
        self.target = None;
    }
}

impl Drop for Refund {
    fn drop(&mut self) {
        match self.target.take() {
            Some(RefundTarget::Single(inner)) => {
                inner.cell.refund(inner.clock.now(), self.interval);
            }
            Some(RefundTarget::Keyed(cell, clock)) => cell.refund(clock.now(), self.interval),
            None => {}
        }
    }
}

pin_project! {
    /// The future of [`RateLimiter::acquire`] and [`KeyedRateLimiter::acquire`](crate::KeyedRateLimiter::acquire):
    /// resolves when the call's permit starts.
    ///
    /// Dropping it before it resolves gives the reserved slot back.
    #[must_use = "a permit is only waited for when the future is awaited"]
    #[derive(Debug)]
    pub struct Acquire {
        #[pin]
        sleep: Option<Sleep>,
        reservation: Option<Reservation>,
    }
}

impl Acquire {
    pub(crate) fn new(reservation: Reservation) -> Self {
        let sleep = match &reservation {
            Reservation::Later { at, .. } => Some(tokio::time::sleep_until(*at)),
            Reservation::Now(_) | Reservation::Refused(_) => None,
        };
        Self {
            sleep,
            reservation: Some(reservation),
        }
    }
}

impl Future for Acquire {
    type Output = Result<(), RateLimited>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(sleep) = this.sleep.as_pin_mut() {
            std::task::ready!(sleep.poll(cx));
        }
        match this.reservation.take() {
            Some(Reservation::Now(refund)) => {
                if let Some(refund) = refund {
                    refund.keep();
                }
                Poll::Ready(Ok(()))
            }
            Some(Reservation::Later { refund, .. }) => {
                refund.keep();
                Poll::Ready(Ok(()))
            }
            None => Poll::Ready(Ok(())),
            Some(Reservation::Refused(rejection)) => Poll::Ready(Err(rejection)),
        }
    }
}

/// Builds a [`RateLimiter`] or a [`KeyedRateLimiter`](crate::KeyedRateLimiter).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RateLimiterBuilder {
    name: Arc<str>,
    rate: Option<(u32, Duration)>,
    per_second: Option<f64>,
    burst: Option<u32>,
    max_wait: Duration,
    max_keys: usize,
}

/// The default cap on keys a keyed limiter remembers.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

impl RateLimiterBuilder {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            rate: None,
            per_second: None,
            burst: None,
            max_wait: Duration::ZERO,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    /// At most `count` calls per `per` on average (required, or [`per_second`](Self::per_second)).
    pub fn rate(mut self, count: u32, per: Duration) -> Self {
        self.rate = Some((count, per));
        self.per_second = None;
        self
    }

    /// At most `rate` calls per second on average, fractions allowed (`0.5`: one call every
    /// two seconds).
    pub fn per_second(mut self, rate: f64) -> Self {
        self.per_second = Some(rate);
        self.rate = None;
        self
    }

    /// Calls let through at once by a full bucket (default: the rate's `count`, or the
    /// per-second rate rounded up).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// How long a call may wait for a permit before it is refused (default zero: refused at
    /// once). The wait is a reserved slot, not a queue: waiting calls cost a timer each and
    /// nothing else.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// For a keyed limiter: how many keys it remembers (default 10 000, rounded up to a
    /// multiple of 16: the keys are kept in 16 shards of `max_keys / 16`). A shard that is
    /// full forgets the keys whose bucket is full again (that loses nothing); a new key that
    /// finds its shard full of busy keys shares one extra bucket with every such key.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        let (interval, count, per) = match (self.rate, self.per_second) {
            (Some((count, per)), _) => {
                if count == 0 {
                    return Err(ConfigError::new(
                        "rate.count",
                        "must be at least 1 (a limiter that admits nothing refuses every call)",
                    ));
                }
                if per.is_zero() {
                    return Err(ConfigError::new("rate.per", "must be greater than zero"));
                }
                let interval = per.as_nanos() / u128::from(count);
                if interval == 0 {
                    return Err(ConfigError::new(
                        "rate",
                        format!(
                            "must be at most one call per nanosecond (got {count} per {per:?})"
                        ),
                    ));
                }
                // Saturating; a period this long is refused below, with the burst.
                (u64::try_from(interval).unwrap_or(u64::MAX), count, per)
            }
            (None, Some(rate)) => {
                if !rate.is_finite() || rate <= 0.0 {
                    return Err(ConfigError::new(
                        "per_second",
                        format!("must be a finite number greater than zero (got {rate})"),
                    ));
                }
                let interval = 1e9 / rate;
                if interval < 1.0 {
                    return Err(ConfigError::new(
                        "per_second",
                        format!("must be at most 1e9 (got {rate})"),
                    ));
                }
                // Saturating; a rate this slow is refused below, with the burst.
                let interval = interval.min(u64::MAX as f64) as u64;
                let count = rate.ceil().min(f64::from(u32::MAX)) as u32;
                (interval, count, Duration::from_secs(1))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "rate",
                    "is required (`rate(count, per)` or `per_second(rate)`)",
                ));
            }
        };
        let burst = self.burst.unwrap_or(count.max(1));
        if burst == 0 {
            return Err(ConfigError::new(
                "burst",
                "must be at least 1 (a bucket of zero admits nothing)",
            ));
        }
        if u128::from(interval) * u128::from(burst) > u128::from(HORIZON) {
            let field = match (self.rate.is_some(), burst) {
                (true, 1) => "rate.per",
                (false, 1) => "per_second",
                _ => "burst",
            };
            return Err(ConfigError::new(
                field,
                format!(
                    "is too large: an empty bucket must refill within 73 years (got a burst of {burst} at one call per {:?})",
                    Duration::from_nanos(interval)
                ),
            ));
        }
        let tolerance = interval * (u64::from(burst) - 1);
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        Ok(Settings {
            quota: Quota {
                interval,
                tolerance,
            },
            max_wait: nanos(self.max_wait),
            count,
            per,
            burst,
        })
    }

    pub(crate) fn name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    pub(crate) fn keys(&self) -> usize {
        self.max_keys
    }

    /// Builds the limiter. Its clock is tokio's (`tokio::time::Instant`), read from the
    /// runtime the limiter is used in; it may be built outside any runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: no rate, a zero count or period, a rate over one
    /// call per nanosecond, a per-second rate that is not a finite positive number, a zero
    /// burst, or a burst so large the bucket would not fit the clock.
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        #[cfg(feature = "metrics")]
        staunch_core::telemetry::describe_metrics();
        let settings = self.settings()?;
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                name: self.name,
                settings,
                clock: Clock::new(),
                cell: Cell::new(),
                counters: Counters::default(),
            }),
        })
    }
}
