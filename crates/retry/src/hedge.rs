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
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use staunch_core::{ConfigError, instant_after};
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::config::RetryPolicy;
use crate::latency::Latency;
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
/// At most one hedge is sent per call, and only for requests the retry layer could replay
/// (idempotent, copyable). The first success wins and the other attempt is dropped. A
/// failure that arrives before the hedge is sent is returned at once: hedging is not retrying
/// (stack a [`RetryLayer`] for that); once the hedge is out, a failure of one attempt waits
/// for the other, and if both fail the last error is returned.
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
    /// A [`ConfigError`] naming `hedge.delay` when the delay (or a percentile's fallback) is
    /// zero, `hedge.percentile` when the percentile is outside `(0, 1)`.
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
                    // One name for the delay whichever form it takes: a file's `hedge.delay`.
                    return Err(ConfigError::new(
                        "delay",
                        "(the fallback of a percentile delay) must be greater than zero",
                    )
                    .within("hedge"));
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
            policy: self.policy.clone(),
            inner,
            delay: self.delay,
            latency: self.latency.clone(),
            count_requests: self.count_requests,
        }
    }
}

/// Sends a second attempt when the first is slower than the hedge delay; built by
/// [`HedgeLayer`].
///
/// A call that may hedge (its request can be replayed and the policy allows retrying it)
/// clones the service that makes it, and a hedge goes through that clone once it is ready,
/// as a retry does (see [`Retry`](crate::Retry)); a call that cannot hedge clones nothing. As
/// in tower, a clone must start unready: a service that reserves capacity in `poll_ready`
/// must not copy the reservation into its clones (staunch's layers do not). Clones of a `Hedge`
/// share the policy; nothing of it outlives the last `Hedge` and the last call.
pub struct Hedge<S> {
    inner: S,
    policy: RetryPolicy,
    delay: Duration,
    latency: Option<Arc<Latency>>,
    count_requests: bool,
}

impl<S: Clone> Clone for Hedge<S> {
    /// Clones the inner service; the clone shares the policy.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
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

impl<S> Hedge<S> {
    /// The policy whose budget the hedges draw on.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
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
        let policy = &self.policy;
        if self.count_requests {
            policy.shared.budget.deposit();
        }
        let backup = if policy.limits.may_retry(req.is_idempotent()) {
            req.try_replay()
        } else {
            None
        };
        // Only a call that may hedge needs the policy and a service later: a clone of the
        // one making the call, readied when the hedge is due.
        let hedge = backup
            .as_ref()
            .map(|_| (self.policy.clone(), self.inner.clone()));
        let first = self.inner.call(req);
        let (delay, started) = match &self.latency {
            Some(l) => (l.delay(), Some(Instant::now())),
            None => (self.delay, None),
        };
        let (policy, service) = hedge.unzip();
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
        // The hedge's service: a clone of the one that made the call.
        service: Option<S>,
        backup: Option<Req>,
        policy: Option<RetryPolicy>,
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
    S: Service<Req> + Clone,
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
                    let until = instant_after(Instant::now(), *this.delay);
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
                    match this.policy.as_ref() {
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
                        Poll::Pending => return Poll::Pending,
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
                Stage::Settled => {
                    // Nothing more is sent: let go of the hedge's service and request now,
                    // not when the attempts end.
                    *this.service = None;
                    *this.backup = None;
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
