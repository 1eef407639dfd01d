//! The service a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) makes.

use std::task::{Context, Poll};

use staunch_core::Classify;
use tower_service::Service;

use crate::breaker::CircuitBreaker;
use crate::error::CircuitBreakerError;
use crate::future::ResponseFuture;
use crate::permit::Permit;

/// A service behind a circuit breaker.
///
/// Readiness is the inner service's: the breaker never fails `poll_ready` (tower treats that
/// as terminal). An open breaker rejects in `call`, with a future that resolves at once to
/// [`CircuitBreakerError::Open`] without calling the inner service.
#[derive(Debug)]
pub struct CircuitBreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
}

// Written by hand to say so: nothing is reserved in `poll_ready` (the permit is taken in
// `call` and moves into the response future), so a clone has no readiness or permit state
// to inherit; it shares only the breaker.
impl<S: Clone, C: Clone> Clone for CircuitBreakerService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Wraps `inner` in `breaker`, classifying results with `classifier`.
    pub fn new(inner: S, breaker: CircuitBreaker, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
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
    S: Service<Req>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = CircuitBreakerError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(CircuitBreakerError::Inner)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let cancelled = self.classifier.classify_cancelled();
        let (inner, classifier) = (&mut self.inner, &self.classifier);
        let call = move |permit: Permit| {
            ResponseFuture::called(
                inner.call(req),
                permit.cancelled_as(cancelled),
                classifier.clone(),
            )
        };
        self.breaker.acquire_into(
            (),
            |(), permit| call(permit),
            |(), open| ResponseFuture::rejected(open, self.classifier.clone()),
        )
    }
}
