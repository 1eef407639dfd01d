//! The response future of a call through a [`Balancer`](crate::Balancer).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use staunch_core::{BoxError, Classify, Outcome};

use crate::balancer::Shared;

/// One call counted in flight on an endpoint, until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    count: Arc<AtomicUsize>,
}

impl InFlight {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self {
            count: Arc::clone(count),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A call on its way: where to record its outcome, and its place in the endpoint's load.
/// Dropped before it is reported (the call was cancelled, or its future panicked), it
/// records the cancelled outcome; either way the in-flight count goes down.
#[derive(Debug)]
pub(crate) struct Call<K, S> {
    pub(crate) shared: Arc<Shared<K, S>>,
    pub(crate) id: u64,
    pub(crate) cancelled: Outcome,
    pub(crate) reported: bool,
    /// Given back as soon as the outcome is known, not when the future is dropped.
    pub(crate) in_flight: Option<InFlight>,
}

impl<K, S> Call<K, S> {
    fn report(&mut self, outcome: Outcome) {
        self.reported = true;
        self.in_flight = None;
        self.shared.record(self.id, outcome);
    }
}

impl<K, S> Drop for Call<K, S> {
    fn drop(&mut self) {
        if !self.reported {
            let cancelled = self.cancelled;
            self.report(cancelled);
        }
    }
}

pin_project! {
    /// The response future of [`Balancer`](crate::Balancer): the chosen endpoint's answer, or
    /// a [`BoxError`] (the endpoint's own error as it is, or a boxed
    /// [`NoEndpoints`](crate::NoEndpoints)).
    ///
    /// # Cancel safety
    ///
    /// Dropping it before it finishes takes the call out of the endpoint's in-flight count
    /// and records the classifier's `classify_cancelled` outcome (ignored by default).
    ///
    /// # Panics
    ///
    /// A panic of the endpoint's future counts as a failure of that endpoint and goes on
    /// unwinding to the caller. Polling again after `Ready` panics, as for most futures.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, C, K, S> {
        #[pin]
        kind: Kind<F, C, K, S>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C, K, S> {
        Called {
            #[pin]
            future: F,
            call: Call<K, S>,
            classifier: C,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<F, C, K, S> ResponseFuture<F, C, K, S> {
    pub(crate) fn called(future: F, call: Call<K, S>, classifier: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                call,
                classifier,
            },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<F, C, K, S, T, E> Future for ResponseFuture<F, C, K, S>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                call,
                classifier,
            } => {
                // The future is not polled again after a panic: the unwind goes on at once.
                let result = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(poll) => ready!(poll),
                    Err(panic) => {
                        call.report(Outcome::Failure);
                        resume_unwind(panic)
                    }
                };
                call.report(classifier.classify(&result));
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
