//! The response future of [`BulkheadService`](crate::BulkheadService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use staunch_core::{BulkheadFull, Classify};

use crate::BoxError;
use crate::bulkhead::Permit;

pin_project! {
    /// The response of a call through a bulkhead: the inner call holding its permit, or a
    /// rejection that resolves at once.
    ///
    /// # Cancel safety
    ///
    /// Dropping it releases the permit.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Running {
            #[pin]
            future: F,
            permit: Option<Permit>,
            // Present only when an adaptive limit wants the outcome.
            classifier: Option<C>,
        },
        Rejected {
            // Boxed once here; it becomes the `BoxError` without another allocation.
            full: Option<Box<BulkheadFull>>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn running(future: F, permit: Permit, classifier: Option<C>) -> Self {
        Self {
            kind: Kind::Running {
                future,
                permit: Some(permit),
                classifier,
            },
        }
    }

    pub(crate) fn rejected(full: Box<BulkheadFull>) -> Self {
        Self {
            kind: Kind::Rejected { full: Some(full) },
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.kind {
            Kind::Running { .. } => "running",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Running {
                future,
                permit,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    match classifier {
                        Some(c) => permit.record(c.classify(&result)),
                        None => drop(permit),
                    }
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { full } => {
                let full = full
                    .take()
                    .expect("`ResponseFuture` polled after completion");
                Poll::Ready(Err(full))
            }
        }
    }
}
