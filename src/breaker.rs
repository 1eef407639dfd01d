//! [`BreakerLayer`]: the circuit breaker with boxed errors, composable with the other layers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use staunch_circuit_breaker::{CircuitBreaker, CircuitBreakerError, CircuitBreakerService};
use staunch_core::{AnyError, Classify};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BoxError;
use staunch_core::IgnoreRejections;

/// A circuit breaker layer whose service returns `tower::BoxError`, like every other staunch
/// layer, so that a retry layer can sit on top of it.
///
/// It is [`CircuitBreakerLayer`](staunch_circuit_breaker::CircuitBreakerLayer) with two
/// differences that make it compose: errors are boxed (an open breaker becomes a boxed
/// [`BreakerOpen`](crate::BreakerOpen), an inner error is boxed as it is), and the classifier
/// is wrapped in [`IgnoreRejections`], so a full bulkhead further in does not count as the
/// dependency failing. Added by [`ServiceBuilderExt::circuit_breaker`](crate::ServiceBuilderExt::circuit_breaker).
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = AnyError> {
    breaker: CircuitBreaker,
    classifier: IgnoreRejections<C>,
}

impl BreakerLayer {
    /// Every error counts as a failure (except rejections from layers further in).
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self::with_classifier(breaker, AnyError::new())
    }
}

impl<C> BreakerLayer<C> {
    /// Results are classified by `classifier` (e.g. [`HttpStatus`](crate::HttpStatus)).
    pub fn with_classifier(breaker: CircuitBreaker, classifier: C) -> Self {
        Self {
            breaker,
            classifier: IgnoreRejections::new(classifier),
        }
    }

    /// The breaker: a handle for state, metrics and manual control.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner: CircuitBreakerService::new(inner, self.breaker.clone(), self.classifier.clone()),
        }
    }
}

/// The service built by [`BreakerLayer`].
///
/// `Clone` is derived: the wrapped breaker service holds no readiness state of its own (the
/// breaker decides in `call`), so clones share only the breaker.
#[derive(Clone)]
pub struct BreakerService<S, C> {
    inner: CircuitBreakerService<S, IgnoreRejections<C>>,
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for BreakerService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService")
            .field("breaker", self.inner.breaker())
            .field("inner", self.inner.get_ref())
            .finish()
    }
}

impl<S, C> BreakerService<S, C> {
    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        self.inner.breaker()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }
}

impl<S, C, Req> Service<Req> for BreakerService<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        BreakerFuture<staunch_circuit_breaker::ResponseFuture<S::Future, IgnoreRejections<C>>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(box_breaker_error)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        BreakerFuture {
            inner: self.inner.call(req),
        }
    }
}

#[inline]
fn box_breaker_error<E: Into<BoxError>>(err: CircuitBreakerError<E>) -> BoxError {
    match err {
        CircuitBreakerError::Open(open) => Box::new(open),
        CircuitBreakerError::Inner(e) => e.into(),
    }
}

pin_project! {
    /// The response future of [`BreakerService`].
    pub struct BreakerFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> fmt::Debug for BreakerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BreakerFuture")
    }
}

impl<F, T, E> Future for BreakerFuture<F>
where
    F: Future<Output = Result<T, CircuitBreakerError<E>>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map(|r| r.map_err(box_breaker_error))
    }
}
