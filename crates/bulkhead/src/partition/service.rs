//! The partitioned bulkhead as a tower layer and service.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use staunch_core::BulkheadFull;
use tower_layer::Layer;
use tower_service::Service;

use super::{PartitionAcquire, PartitionPermit, PartitionedBulkhead};
use crate::BoxError;

/// Applies a [`PartitionedBulkhead`] to a service, choosing the partition with `key_fn`.
///
/// ```
/// use staunch_bulkhead::{PartitionedBulkhead, PartitionedBulkheadLayer};
/// use tower::ServiceBuilder;
///
/// let per_host = PartitionedBulkhead::<String>::builder("upstream").default_limit(4).build()?;
/// let svc = ServiceBuilder::new()
///     .layer(PartitionedBulkheadLayer::new(per_host, |req: &http::Request<()>| {
///         req.uri().host().unwrap_or("").to_owned()
///     }))
///     .service_fn(|_req: http::Request<()>| async { Ok::<_, std::io::Error>(()) });
/// # drop(svc);
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
pub struct PartitionedBulkheadLayer<K, F> {
    bulkhead: PartitionedBulkhead<K>,
    key_fn: F,
}

impl<K, F> PartitionedBulkheadLayer<K, F> {
    /// A layer over `bulkhead` that picks each request's partition with `key_fn`.
    pub fn new(bulkhead: PartitionedBulkhead<K>, key_fn: F) -> Self {
        Self { bulkhead, key_fn }
    }
}

impl<K, F: Clone> Clone for PartitionedBulkheadLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            bulkhead: self.bulkhead.clone(),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<K: fmt::Debug, F> fmt::Debug for PartitionedBulkheadLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedBulkheadLayer")
            .field("bulkhead", &self.bulkhead)
            .finish()
    }
}

impl<S, K, F: Clone> Layer<S> for PartitionedBulkheadLayer<K, F> {
    type Service = PartitionedBulkheadService<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        PartitionedBulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
            key_fn: self.key_fn.clone(),
        }
    }
}

/// A service behind a [`PartitionedBulkhead`]; errors are boxed like
/// [`BulkheadService`](crate::BulkheadService)'s.
///
/// The key is a function of the request, and tower's `poll_ready` does not see the request,
/// so a partitioned service cannot reserve in `poll_ready` like
/// [`BulkheadService`](crate::BulkheadService) does. `poll_ready` only drives the inner
/// service; `call` takes the key's permits on the lock-free fast path and calls the inner
/// service at once. When it has to wait, the ready inner service is moved into the response
/// future (a fresh clone takes its place, which is why `S: Clone` is required), and the
/// future calls it once the permits arrive, or fails with [`BulkheadFull`] at the deadline.
/// A call turned away at once (no waiting allowed) drops the ready inner service for a fresh
/// clone too, so nothing the inner service reserved in `poll_ready` stays behind.
pub struct PartitionedBulkheadService<S, K, F> {
    inner: S,
    bulkhead: PartitionedBulkhead<K>,
    key_fn: F,
}

impl<S: Clone, K, F: Clone> Clone for PartitionedBulkheadService<S, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            bulkhead: self.bulkhead.clone(),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<S: fmt::Debug, K: fmt::Debug, F> fmt::Debug for PartitionedBulkheadService<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedBulkheadService")
            .field("inner", &self.inner)
            .field("bulkhead", &self.bulkhead)
            .finish()
    }
}

impl<S, K, F, Req> Service<Req> for PartitionedBulkheadService<S, K, F>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Debug,
    F: Fn(&Req) -> K,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = PartitionedResponseFuture<S, Req, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.key_fn)(&req);
        if let Some(permit) = self.bulkhead.try_acquire_quiet(&key) {
            return PartitionedResponseFuture::running(permit, self.inner.call(req));
        }
        if self.bulkhead.max_wait().is_zero() {
            // Counts the rejection and names the bulkhead that is full.
            return match self.bulkhead.try_acquire(&key) {
                Ok(permit) => PartitionedResponseFuture::running(permit, self.inner.call(req)),
                Err(full) => {
                    // The inner service was made ready for this call: give back what it
                    // reserved (a bulkhead further in, say) by dropping the ready handle.
                    let fresh = self.inner.clone();
                    drop(std::mem::replace(&mut self.inner, fresh));
                    PartitionedResponseFuture::rejected(Box::new(full))
                }
            };
        }
        // Take the service that was driven ready; leave a fresh clone for the next call.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        PartitionedResponseFuture::waiting(Box::new(Waiting {
            acquire: self.bulkhead.acquire(&key),
            svc: ready,
            req: Some(req),
        }))
    }
}

/// A call waiting for its permits, with the ready service it will be made on. Boxed: only
/// calls that wait pay for it.
struct Waiting<S, Req> {
    acquire: PartitionAcquire,
    svc: S,
    req: Option<Req>,
}

pin_project! {
    /// The response of a call through a partitioned bulkhead.
    ///
    /// # Cancel safety
    ///
    /// Dropping it releases its permits or its place in the queue.
    #[must_use = "futures do nothing unless polled"]
    pub struct PartitionedResponseFuture<S, Req, Fut> {
        // Declared first so that it is dropped first (fields drop in declaration order): a
        // cancelled call's destructor runs while its permit is still held.
        #[pin]
        future: Option<Fut>,
        waiting: Option<Box<Waiting<S, Req>>>,
        permit: Option<PartitionPermit>,
        rejected: Option<Box<BulkheadFull>>,
    }
}

impl<S, Req, Fut> PartitionedResponseFuture<S, Req, Fut> {
    fn running(permit: PartitionPermit, future: Fut) -> Self {
        Self {
            future: Some(future),
            waiting: None,
            permit: Some(permit),
            rejected: None,
        }
    }

    fn waiting(waiting: Box<Waiting<S, Req>>) -> Self {
        Self {
            future: None,
            waiting: Some(waiting),
            permit: None,
            rejected: None,
        }
    }

    fn rejected(full: Box<BulkheadFull>) -> Self {
        Self {
            future: None,
            waiting: None,
            permit: None,
            rejected: Some(full),
        }
    }
}

impl<S, Req, Fut> fmt::Debug for PartitionedResponseFuture<S, Req, Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedResponseFuture")
            .field("waiting", &self.waiting.is_some())
            .field("running", &self.future.is_some())
            .finish()
    }
}

impl<S, Req, Fut, T, E> Future for PartitionedResponseFuture<S, Req, Fut>
where
    S: Service<Req, Future = Fut>,
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(full) = this.rejected.take() {
            return Poll::Ready(Err(full));
        }
        if let Some(waiting) = this.waiting.as_mut() {
            let result = ready!(Pin::new(&mut waiting.acquire).poll(cx));
            match result {
                Ok(permit) => {
                    *this.permit = Some(permit);
                    if let Some(req) = waiting.req.take() {
                        this.future.set(Some(waiting.svc.call(req)));
                    }
                    *this.waiting = None;
                }
                Err(full) => {
                    *this.waiting = None;
                    return Poll::Ready(Err(full.into()));
                }
            }
        }
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            panic!("`PartitionedResponseFuture` polled after completion");
        };
        let result = ready!(future.poll(cx));
        this.future.set(None);
        *this.permit = None;
        Poll::Ready(result.map_err(Into::into))
    }
}
