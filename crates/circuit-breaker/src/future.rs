//! The futures of a call through a breaker: [`CallFuture`] for the engine's
//! [`CircuitBreaker::call`](crate::CircuitBreaker::call), [`ResponseFuture`] for the tower
//! services.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use staunch_core::{BoxError, BreakerOpen, Classify, IgnoreRejections, Outcome};

use crate::error::CircuitBreakerError;
use crate::permit::Permit;

pin_project! {
    /// The future of [`CircuitBreaker::call`](crate::CircuitBreaker::call) and
    /// [`call_with`](crate::CircuitBreaker::call_with): the call itself, holding its permit,
    /// or a rejection that resolves at once to [`CircuitBreakerError::Open`].
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it finishes reports the call as cancelled (the classifier's
    /// `classify_cancelled`, ignored by default) and gives a half-open probe slot back.
    ///
    /// # Panics
    ///
    /// A panic while polling the call counts as a failure (a client that panics on every
    /// call is a failing dependency), and then goes on unwinding to the caller unchanged.
    /// Polling it again after it returned `Ready` panics, as for most futures.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct CallFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        classifier: C,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
            permit: Permit,
        },
        Rejected {
            open: Option<BreakerOpen>,
        },
    }
}

impl<F, C> CallFuture<F, C> {
    pub(crate) fn called(future: F, permit: Permit, classifier: C) -> Self {
        Self {
            kind: Kind::Called { future, permit },
            classifier,
        }
    }

    pub(crate) fn rejected(open: BreakerOpen, classifier: C) -> Self {
        Self {
            kind: Kind::Rejected { open: Some(open) },
            classifier,
        }
    }
}

impl<F, C, T, E> Future for CallFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<T, CircuitBreakerError<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future, permit } => {
                // The future is not used again after a panic: the unwind goes on at once.
                let polled = catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
                let result = match polled {
                    Ok(poll) => ready!(poll),
                    Err(panic) => {
                        permit.report(Outcome::Failure);
                        resume_unwind(panic)
                    }
                };
                permit.report(this.classifier.classify(&result));
                Poll::Ready(result.map_err(CircuitBreakerError::Inner))
            }
            KindProj::Rejected { open } => Poll::Ready(Err(CircuitBreakerError::Open(
                open.take().expect("CallFuture polled after completion"),
            ))),
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreakerService`](crate::CircuitBreakerService) and
    /// [`KeyedCircuitBreakerService`](crate::KeyedCircuitBreakerService): the call's response,
    /// or a [`BoxError`] that is a boxed [`BreakerOpen`] when the breaker refused the call,
    /// else the inner service's error converted with `Into<BoxError>` (not wrapped).
    ///
    /// Results are classified with the layer's classifier wrapped in [`IgnoreRejections`]: a
    /// rejection by a layer further in (a full bulkhead) is not counted.
    ///
    /// # Cancel safety
    ///
    /// As [`CallFuture`]: dropping it reports the call as cancelled and gives a half-open
    /// probe slot back.
    ///
    /// # Panics
    ///
    /// As [`CallFuture`]: a panic of the inner future counts as a failure and goes on
    /// unwinding; polling again after `Ready` panics.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, C> {
        #[pin]
        call: CallFuture<F, IgnoreRejections<C>>,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, permit: Permit, classifier: C) -> Self {
        Self {
            call: CallFuture::called(future, permit, IgnoreRejections::new(classifier)),
        }
    }

    pub(crate) fn rejected(open: BreakerOpen, classifier: C) -> Self {
        Self {
            call: CallFuture::rejected(open, IgnoreRejections::new(classifier)),
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
    E: Into<BoxError> + 'static,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .call
            .poll(cx)
            .map_err(CircuitBreakerError::into_box_error)
    }
}
