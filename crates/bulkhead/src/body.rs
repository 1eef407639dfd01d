//! Holding a permit until an HTTP response body has been read (feature `http`).
//!
//! For an HTTP client the response head arrives long before the body has streamed; the
//! connection (and the dependency's work) stays busy until the last byte. Releasing the
//! permit at the head would let more calls in than the dependency can serve. With
//! [`BulkheadLayer::hold_until_body_end`](crate::BulkheadLayer::hold_until_body_end) the
//! permit moves into the response body and is released when the body reports its end, fails,
//! or is dropped.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use staunch_core::{BulkheadFull, Classify, Outcome};
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;
use crate::bulkhead::{Bulkhead, Permit};
use crate::service::Gate;

/// Like [`BulkheadLayer`](crate::BulkheadLayer), but each permit is held until the HTTP
/// response body ends or is dropped.
///
/// ```
/// use staunch_bulkhead::Bulkhead;
/// use tower::ServiceBuilder;
///
/// let bulkhead = Bulkhead::builder("downloads").max_concurrent(4).build()?;
/// let svc = ServiceBuilder::new()
///     .layer(bulkhead.layer().hold_until_body_end())
///     .service_fn(|_req: http::Request<String>| async {
///         Ok::<_, std::io::Error>(http::Response::new(String::from("payload")))
///     });
/// # drop(svc);
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpBulkheadLayer<C> {
    bulkhead: Bulkhead,
    classifier: C,
}

impl<C> HttpBulkheadLayer<C> {
    pub(crate) fn new(bulkhead: Bulkhead, classifier: C) -> Self {
        Self {
            bulkhead,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for HttpBulkheadLayer<C> {
    type Service = HttpBulkheadService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpBulkheadService {
            inner,
            classifier: self.classifier.clone(),
            gate: Gate::new(self.bulkhead.clone()),
        }
    }
}

/// A service whose permits last until the response body ends; see [`HttpBulkheadLayer`].
///
/// # Panics
///
/// `call` panics if `poll_ready` did not return `Ready` first, as tower requires.
pub struct HttpBulkheadService<S, C> {
    inner: S,
    classifier: C,
    gate: Gate,
}

impl<S: fmt::Debug, C> fmt::Debug for HttpBulkheadService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBulkheadService")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .finish()
    }
}

// By hand, for the same reason as `BulkheadService`: a reserved permit belongs to the one
// call this handle is about to make and must not be duplicated into a clone.
impl<S: Clone, C: Clone> Clone for HttpBulkheadService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            gate: Gate::new(self.gate.bulkhead().clone()),
        }
    }
}

impl<S, C, Req, B> Service<Req> for HttpBulkheadService<S, C>
where
    S: Service<Req, Response = http::Response<B>>,
    B: Body,
    S::Error: Into<BoxError>,
    C: Classify<http::Response<B>, S::Error> + Clone,
{
    type Response = http::Response<PermitBody<B>>;
    type Error = BoxError;
    type Future = HttpResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.gate.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(false) => Poll::Ready(Ok(())),
            Poll::Ready(true) => self.inner.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.gate.take() {
            Ok(permit) => {
                let classifier = permit.wants_outcome().then(|| self.classifier.clone());
                HttpResponseFuture {
                    future: Some(self.inner.call(req)),
                    permit: Some(permit),
                    classifier,
                    rejected: None,
                }
            }
            Err(full) => HttpResponseFuture {
                future: None,
                permit: None,
                classifier: None,
                rejected: Some(full),
            },
        }
    }
}

pin_project! {
    /// The response future of [`HttpBulkheadService`]: the permit moves into the body.
    ///
    /// # Cancel safety
    ///
    /// Dropping it before the response arrives releases the permit.
    #[must_use = "futures do nothing unless polled"]
    pub struct HttpResponseFuture<F, C> {
        #[pin]
        future: Option<F>,
        permit: Option<Permit>,
        classifier: Option<C>,
        rejected: Option<Box<BulkheadFull>>,
    }
}

impl<F, C> fmt::Debug for HttpResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponseFuture")
            .field("rejected", &self.rejected.is_some())
            .finish()
    }
}

impl<F, C, B, E> Future for HttpResponseFuture<F, C>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body,
    E: Into<BoxError>,
    C: Classify<http::Response<B>, E>,
{
    type Output = Result<http::Response<PermitBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(full) = this.rejected.take() {
            return Poll::Ready(Err(full));
        }
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            panic!("`HttpResponseFuture` polled after completion");
        };
        let result = ready!(future.poll(cx));
        this.future.set(None);
        let outcome = match this.classifier {
            Some(c) => c.classify(&result),
            None => Outcome::Ignored,
        };
        let permit = this.permit.take();
        Poll::Ready(match result {
            Ok(response) => Ok(response.map(|body| PermitBody::new(body, permit, outcome))),
            Err(e) => {
                if let Some(permit) = permit {
                    permit.record(outcome);
                }
                Err(e.into())
            }
        })
    }
}

pin_project! {
    /// A response body that holds its call's bulkhead permit until the body ends, fails or is
    /// dropped.
    pub struct PermitBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
        outcome: Outcome,
    }
}

impl<B> PermitBody<B> {
    fn new(inner: B, permit: Option<Permit>, outcome: Outcome) -> Self
    where
        B: Body,
    {
        let mut body = Self {
            inner,
            permit,
            outcome,
        };
        if body.inner.is_end_stream() {
            body.release(outcome);
        }
        body
    }

    fn release(&mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            permit.record(outcome);
        }
    }

    /// `true` while the body still holds its permit.
    pub fn holds_permit(&self) -> bool {
        self.permit.is_some()
    }

    /// The wrapped body (the permit is released).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: fmt::Debug> fmt::Debug for PermitBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermitBody")
            .field("inner", &self.inner)
            .field("holds_permit", &self.permit.is_some())
            .finish()
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let finished = match &frame {
            None => Some(*this.outcome),
            // A body that breaks off mid-stream is a failed call.
            Some(Err(_)) => Some(Outcome::Failure),
            Some(Ok(_)) => this.inner.is_end_stream().then_some(*this.outcome),
        };
        if let Some(outcome) = finished
            && let Some(permit) = this.permit.take()
        {
            permit.record(outcome);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
