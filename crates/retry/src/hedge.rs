//! Hedging: when an attempt is slow, send one more and take the first success.
//!
//! Tail latency often comes from one slow replica, a GC pause or a lost packet, not from an
//! overloaded dependency. Waiting for such an attempt to time out and then retrying costs the
//! whole timeout; sending a second copy after a short delay (a fixed delay, or the observed
//! p95 latency) costs one extra request for the few calls that are slow. The first successful
//! answer wins and the other attempt is dropped, which cancels it.
//!
//! Hedges draw on the [`RetryBudget`](crate::RetryBudget) of the policy, like retries: during
//! an outage, when everything is slow, hedging stops instead of doubling the load.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use staunch_core::ConfigError;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::config::RetryPolicy;
use crate::request::RetryRequest;

/// When to send the hedge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// A fixed delay after the first attempt started.
    Fixed(Duration),
    /// The given percentile (in `(0, 1)`, e.g. 0.95) of the latencies observed so far, or
    /// `fallback` until `min_samples` calls have been observed. Observing latencies reads the
    /// clock twice per call.
    Percentile {
        /// Which percentile, in `(0, 1)`.
        percentile: f64,
        /// The delay before enough samples exist.
        fallback: Duration,
        /// Calls observed before the percentile is used.
        min_samples: u64,
    },
}

/// Sends a hedged attempt for slow calls; wraps services in [`Hedge`].
///
/// ```
/// use std::time::Duration;
/// use staunch_retry::{HedgeDelay, HedgeLayer, RetryPolicy};
///
/// let policy = RetryPolicy::builder().build()?;
/// let layer = HedgeLayer::new(policy, HedgeDelay::Fixed(Duration::from_millis(50)))?;
/// # let _ = layer;
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
///
/// Each call counts as one request in the policy's budget. When a [`RetryLayer`] drawing on
/// the same budget sees the same requests (the two layers stacked), call
/// [`count_requests(false)`](Self::count_requests) on the hedge layer so requests are not
/// counted twice, which would double the share of retries and hedges the budget allows.
///
/// [`RetryLayer`]: crate::RetryLayer
#[derive(Debug, Clone)]
pub struct HedgeLayer {
    policy: RetryPolicy,
    delay: Duration,
    latency: Option<Arc<Latency>>,
    count_requests: bool,
}

impl HedgeLayer {
    /// A hedging layer drawing on `policy`'s budget.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the delay is zero or the percentile is outside `(0, 1)`.
    pub fn new(policy: RetryPolicy, delay: HedgeDelay) -> Result<Self, ConfigError> {
        let (delay, latency) = match delay {
            HedgeDelay::Fixed(d) => {
                if d.is_zero() {
                    return Err(
                        ConfigError::new("delay", "must be greater than zero").within("hedge")
                    );
                }
                (d, None)
            }
            HedgeDelay::Percentile {
                percentile,
                fallback,
                min_samples,
            } => {
                if !(percentile > 0.0 && percentile < 1.0) {
                    return Err(ConfigError::new(
                        "percentile",
                        format!("must be within (0, 1) (got {percentile})"),
                    )
                    .within("hedge"));
                }
                if fallback.is_zero() {
                    return Err(
                        ConfigError::new("fallback", "must be greater than zero").within("hedge")
                    );
                }
                (
                    fallback,
                    Some(Arc::new(Latency::new(percentile, fallback, min_samples))),
                )
            }
        };
        Ok(Self {
            policy,
            delay,
            latency,
            count_requests: true,
        })
    }

    /// Whether each call is recorded as a request in the budget (default `true`; see the
    /// type's docs for when to turn it off).
    pub fn count_requests(mut self, yes: bool) -> Self {
        self.count_requests = yes;
        self
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge {
            inner,
            policy: Arc::new(self.policy.clone()),
            delay: self.delay,
            latency: self.latency.clone(),
            count_requests: self.count_requests,
        }
    }
}

/// Sends a second attempt when the first is slower than the hedge delay; built by
/// [`HedgeLayer`].
pub struct Hedge<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
    delay: Duration,
    latency: Option<Arc<Latency>>,
    count_requests: bool,
}

impl<S: Clone> Clone for Hedge<S> {
    /// Gives the clone a policy handle of its own, for the reason given on
    /// [`Retry`](crate::Retry)'s `Clone`.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: Arc::new(RetryPolicy::clone(&self.policy)),
            delay: self.delay,
            latency: self.latency.clone(),
            count_requests: self.count_requests,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Hedge<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("delay", &self.delay)
            .field("percentile", &self.latency.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for Hedge<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: RetryRequest,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = HedgeFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if self.count_requests {
            self.policy.shared.budget.deposit();
        }
        let backup = if self.policy.limits.may_retry(req.is_idempotent()) {
            req.try_replay()
        } else {
            None
        };
        let first = self.inner.call(req);
        let (service, policy) = match backup {
            Some(_) => (Some(self.inner.clone()), Some(Arc::clone(&self.policy))),
            None => (None, None),
        };
        let (delay, started) = match &self.latency {
            Some(l) => (l.delay(), Some(Instant::now())),
            None => (self.delay, None),
        };
        HedgeFuture {
            first: Some(first),
            second: None,
            sleep: None,
            service,
            backup,
            policy,
            delay,
            stage: Stage::Single,
            started,
            latency: started.and(self.latency.clone()),
            error: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Only the first attempt runs; the timer is armed on its first pending poll.
    Single,
    /// The timer runs.
    Timing,
    /// The timer fired: waiting for the service to accept the hedge.
    Readying,
    /// The hedge was sent, or will not be.
    Settled,
}

pin_project! {
    /// The response future of [`Hedge`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops (cancels) every attempt still running.
    pub struct HedgeFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        first: Option<S::Future>,
        #[pin]
        second: Option<S::Future>,
        #[pin]
        sleep: Option<Sleep>,
        service: Option<S>,
        backup: Option<Req>,
        policy: Option<Arc<RetryPolicy>>,
        delay: Duration,
        stage: Stage,
        started: Option<Instant>,
        latency: Option<Arc<Latency>>,
        error: Option<BoxError>,
    }
}

impl<S: Service<Req>, Req> fmt::Debug for HedgeFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeFuture")
            .field("stage", &self.stage)
            .field("first", &self.first.is_some())
            .field("second", &self.second.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, Req> Future for HedgeFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            for slot in [this.first.as_mut(), this.second.as_mut()] {
                let mut slot = slot;
                let Some(fut) = slot.as_mut().as_pin_mut() else {
                    continue;
                };
                if let Poll::Ready(result) = fut.poll(cx) {
                    slot.set(None);
                    match result {
                        Ok(res) => {
                            if let (Some(l), Some(start)) = (this.latency.as_ref(), *this.started) {
                                l.record(start.elapsed());
                            }
                            // Returning drops the other attempt: it is cancelled.
                            return Poll::Ready(Ok(res));
                        }
                        Err(e) => *this.error = Some(e.into()),
                    }
                }
            }
            let running = this.first.is_some() || this.second.is_some();
            if !running && *this.stage != Stage::Readying {
                let err = this
                    .error
                    .take()
                    .unwrap_or_else(|| "hedged call ended without an answer".into());
                return Poll::Ready(Err(err));
            }
            match *this.stage {
                Stage::Single => {
                    if this.backup.is_none() || this.error.is_some() {
                        *this.stage = Stage::Settled;
                        continue;
                    }
                    let until = Instant::now() + *this.delay;
                    this.sleep.set(Some(tokio::time::sleep_until(until)));
                    *this.stage = Stage::Timing;
                }
                Stage::Timing => {
                    let Some(sleep) = this.sleep.as_mut().as_pin_mut() else {
                        *this.stage = Stage::Settled;
                        continue;
                    };
                    if sleep.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.sleep.set(None);
                    match this.policy.as_deref() {
                        Some(policy) if policy.shared.budget.try_withdraw() => {
                            policy.shared.hedged();
                            *this.stage = Stage::Readying;
                        }
                        _ => {
                            tracing::trace!("no hedge: the retry budget is exhausted");
                            *this.stage = Stage::Settled;
                        }
                    }
                }
                Stage::Readying => {
                    let Some(service) = this.service.as_mut() else {
                        *this.stage = Stage::Settled;
                        continue;
                    };
                    match service.poll_ready(cx) {
                        Poll::Pending => {
                            if running {
                                return Poll::Pending;
                            }
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(e)) => {
                            *this.error = Some(e.into());
                            *this.stage = Stage::Settled;
                        }
                        Poll::Ready(Ok(())) => {
                            if let Some(req) = this.backup.take() {
                                this.second.set(Some(service.call(req)));
                            }
                            *this.stage = Stage::Settled;
                        }
                    }
                }
                Stage::Settled => return Poll::Pending,
            }
        }
    }
}

const OCTAVES: usize = 40;
const SUB: usize = 4;

/// A small histogram of latencies (microseconds, 4 buckets per power of two) and the delay
/// derived from it, recomputed every 32 observations.
pub(crate) struct Latency {
    buckets: [AtomicU64; OCTAVES * SUB],
    count: AtomicU64,
    delay_nanos: AtomicU64,
    percentile: f64,
    min_samples: u64,
}

impl fmt::Debug for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latency")
            .field("percentile", &self.percentile)
            .field("delay", &self.delay())
            .finish_non_exhaustive()
    }
}

impl Latency {
    fn new(percentile: f64, fallback: Duration, min_samples: u64) -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            delay_nanos: AtomicU64::new(fallback.as_nanos() as u64),
            percentile,
            min_samples,
        }
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    fn index(micros: u64) -> usize {
        if micros < SUB as u64 {
            return micros as usize;
        }
        let octave = 63 - micros.leading_zeros() as usize; // >= 2
        let sub = ((micros >> (octave - 2)) & 0b11) as usize;
        ((octave - 1) * SUB + sub).min(OCTAVES * SUB - 1)
    }

    /// The upper edge of bucket `i`, in microseconds.
    fn upper(i: usize) -> u64 {
        if i < SUB {
            return i as u64 + 1;
        }
        let octave = i / SUB + 1;
        let sub = (i % SUB) as u64;
        ((SUB as u64 + sub + 1) << (octave - 2)).max(1)
    }

    fn record(&self, latency: Duration) {
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.buckets[Self::index(micros)].fetch_add(1, Ordering::Relaxed);
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.min_samples && n.is_multiple_of(32) {
            self.recompute();
        }
    }

    fn recompute(&self) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return;
        }
        let target = (total as f64 * self.percentile).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                let nanos = Self::upper(i).saturating_mul(1000);
                self.delay_nanos.store(nanos, Ordering::Relaxed);
                break;
            }
        }
        // Halve old counts now and then, so the percentile follows the recent latency.
        if total > 10_000 {
            for b in &self.buckets {
                let v = b.load(Ordering::Relaxed);
                b.store(v / 2, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotone_and_cover_their_values() {
        let mut last = 0;
        for micros in [
            0u64, 1, 3, 4, 5, 7, 8, 100, 1000, 12_345, 1_000_000, 60_000_000,
        ] {
            let i = Latency::index(micros);
            assert!(i >= last, "{micros}");
            last = i;
            assert!(
                Latency::upper(i) > micros,
                "{micros} -> {i} -> {}",
                Latency::upper(i)
            );
        }
    }

    #[test]
    fn percentile_follows_observations() {
        let l = Latency::new(0.9, Duration::from_secs(1), 10);
        for _ in 0..90 {
            l.record(Duration::from_millis(1));
        }
        for _ in 0..6 {
            l.record(Duration::from_millis(100));
        }
        // 96 samples: recomputed at 32, 64 and 96; p90 is within the 1 ms bucket.
        let d = l.delay();
        assert!(
            d >= Duration::from_millis(1) && d < Duration::from_millis(2),
            "{d:?}"
        );
    }

    #[test]
    fn invalid_delays_are_config_errors() {
        let p = RetryPolicy::default();
        let e = HedgeLayer::new(p.clone(), HedgeDelay::Fixed(Duration::ZERO)).unwrap_err();
        assert_eq!(e.field(), "hedge.delay");
        let e = HedgeLayer::new(
            p,
            HedgeDelay::Percentile {
                percentile: 1.5,
                fallback: Duration::from_millis(10),
                min_samples: 10,
            },
        )
        .unwrap_err();
        assert_eq!(e.field(), "hedge.percentile");
    }
}
