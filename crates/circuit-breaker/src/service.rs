//! The service a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) makes.

use std::task::{Context, Poll};

use staunch_core::{BoxError, Classify};
use tower_service::Service;

use crate::breaker::CircuitBreaker;
use crate::future::ResponseFuture;
use crate::permit::Permit;

/// A service behind a circuit breaker.
///
/// Its error is a [`BoxError`], like every staunch layer's: a boxed
/// [`BreakerOpen`](crate::BreakerOpen) when the breaker refused the call (find it with
/// `err.downcast_ref::<BreakerOpen>()` or [`rejection_of`](staunch_core::rejection_of)), else
/// the inner service's own error converted with `Into<BoxError>`, not wrapped in another type
/// (`err.downcast_ref::<std::io::Error>()` finds a client's I/O error). Results are classified
/// with the classifier wrapped in [`IgnoreRejections`](staunch_core::IgnoreRejections): a
/// rejection by a layer further in (a full bulkhead, an inner breaker) is not counted as the
/// dependency failing.
///
/// The breaker never fails `poll_ready` (tower treats that as terminal): an open breaker
/// rejects in `call`, with a future that resolves at once to the boxed `BreakerOpen`
/// without calling the inner service. While the breaker admits calls, readiness is the inner
/// service's. While it rejects them (open and still waiting, forced open, or half-open with
/// every probe slot taken), `poll_ready` answers ready at once *without polling the inner
/// service*, and the following `call` is rejected: a call the breaker is going to refuse never
/// waits for a permit of a bulkhead further in, nor reserves one. When the breaker starts
/// rejecting between `poll_ready` and `call` (another task tripped it, or took the last
/// half-open probe slot), whatever the inner service reserved is given back before the
/// rejection: the handle made ready is dropped for a fresh clone of it, which is why the inner
/// service must be `Clone` (a clone of a tower service starts not ready).
#[derive(Debug)]
pub struct CircuitBreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
    /// `poll_ready` found the breaker rejecting and did not poll `inner`: the next `call`
    /// must reject (the inner service was never made ready).
    skipped_inner: bool,
}

// Written by hand: `skipped_inner` is readiness state of this handle (the inner service was
// not polled ready), so a clone starts without it, like a clone of any tower service starts
// not ready. The permit itself is taken in `call` and moves into the response future.
impl<S: Clone, C: Clone> Clone for CircuitBreakerService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
            skipped_inner: false,
        }
    }
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Wraps `inner` in `breaker`, classifying results with `classifier` (rejections by layers
    /// further in are ignored whatever it says).
    pub fn new(inner: S, breaker: CircuitBreaker, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
            skipped_inner: false,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.breaker.rejects_now() {
            self.skipped_inner = true;
            return Poll::Ready(Ok(()));
        }
        self.skipped_inner = false;
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.skipped_inner {
            // The breaker was rejecting a moment ago, in `poll_ready`, and the inner service
            // was not made ready: reject even if the breaker has just moved on.
            self.skipped_inner = false;
            return ResponseFuture::rejected(
                self.breaker.reject_unready(),
                self.classifier.clone(),
            );
        }
        let cancelled = self.classifier.classify_cancelled();
        let classifier = &self.classifier;
        let call = move |inner: &mut S, permit: Permit| {
            ResponseFuture::called(
                inner.call(req),
                permit.cancelled_as(cancelled),
                classifier.clone(),
            )
        };
        self.breaker
            .acquire_into(&mut self.inner, call, |inner, open| {
                // The inner service was made ready for this call: give back what it reserved.
                release_readiness(inner);
                ResponseFuture::rejected(open, classifier.clone())
            })
    }
}

/// Gives back whatever `inner`'s `poll_ready` reserved for a call the breaker refuses (a
/// bulkhead's permit, say): the handle driven ready is dropped and a fresh clone, which starts
/// not ready, takes its place. Only a rejected call pays for the clone.
#[cold]
pub(crate) fn release_readiness<S: Clone>(inner: &mut S) {
    let fresh = inner.clone();
    drop(std::mem::replace(inner, fresh));
}
