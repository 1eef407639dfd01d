//! [`Retry`]: the tower service.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tower_service::Service;

use crate::BoxError;
use crate::budget::RetryBudget;
use crate::classify::{RetryClassify, RetryOn};
use crate::config::{Limits, RetryPolicy};
use crate::engine::{Attempts, Handle, Machine, Template};
use crate::future::ResponseFuture;
use crate::request::RetryRequest;
use crate::spare;

/// Retries calls to the inner service according to a [`RetryPolicy`]; built by
/// [`RetryLayer`](crate::RetryLayer).
///
/// `poll_ready` is the inner service's: the layer adds no reason to be unready. Errors are
/// boxed (`tower::BoxError`), so a timed-out attempt can surface as
/// [`Elapsed`](staunch_timeout::Elapsed).
///
/// The request is copied before the first attempt only when it could be retried (more than
/// one attempt allowed, the request is idempotent or the policy allows it, and
/// [`RetryRequest::try_replay`] gives a copy). The inner service is not cloned per call: the
/// layer keeps one clone of it, made when the layer was built, and a retry clones that one to
/// make its attempt (tower's own `Retry` clones the service that made the call, on every
/// call). For services whose clones are handles to shared state (reqwest, hyper and tonic
/// clients, staunch's layers) that is the same; a service whose clones carry state of their
/// own, set after the layer was built, retries with the state it had then. A call that
/// succeeds on its first poll reads no clock (unless the backoff has a `max_elapsed`, see
/// [`RetryPolicyBuilder::backoff`](crate::RetryPolicyBuilder::backoff)), arms no timer, clones nothing and changes no
/// reference count.
///
/// # Reference recycling
///
/// A response future owns a reference to the policy, the classifier and the kept service,
/// since it may outlive the service it came from (tower's `oneshot` drops the service before
/// polling). Rather than take and drop an `Arc` reference per call (two atomic
/// read-modify-writes, the larger part of this layer's cost on a call that succeeds), a
/// finished future leaves its reference with the thread that polled it, and the next call on
/// that thread reuses it. Once no service is left, a finished call keeps nothing, and
/// dropping the last service clears the dropping thread's spare, so on a single-threaded
/// runtime nothing outlives the services. With several threads, a thread that kept a spare
/// before the last service was dropped elsewhere holds on to the policy (hooks, classifier
/// and the kept clone of the inner service included) until it finishes a call through
/// another retry layer or exits: at most one per thread.
pub struct Retry<S, C = RetryOn> {
    inner: S,
    // The budget and the limits are also in the handle; kept here too so the success path
    // reaches them without chasing pointers.
    budget: RetryBudget,
    limits: Limits,
    handle: Owned<C>,
}

/// A service's reference to the policy handle, counted in `Handle::services`; dropping the
/// last one clears the dropping thread's spare reference to the handle.
struct Owned<C>(Arc<Handle<C>>);

impl<C> Owned<C> {
    fn new(handle: Arc<Handle<C>>) -> Self {
        handle.services.fetch_add(1, Ordering::Relaxed);
        Self(handle)
    }
}

impl<C> Drop for Owned<C> {
    fn drop(&mut self) {
        if self.0.services.fetch_sub(1, Ordering::AcqRel) == 1 {
            spare::forget(Arc::as_ptr(&self.0).cast());
        }
    }
}

impl<S: Clone, C> Clone for Retry<S, C> {
    /// Clones the inner service; the clone shares the policy and the classifier.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            limits: self.limits,
            handle: Owned::new(Arc::clone(&self.handle.0)),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.handle.0.policy)
            .field("classify", &self.handle.0.classify)
            .finish()
    }
}

impl<S: Clone + Send + 'static, C> Retry<S, C> {
    /// Wraps `inner`.
    ///
    /// A clone of `inner` is kept with the policy: a retry clones it to make its attempt, so
    /// that a call which is not retried never clones the inner service.
    pub fn new(inner: S, policy: RetryPolicy, classify: C) -> Self {
        let template: Box<Template> = Box::new(Mutex::new(inner.clone()));
        Self {
            inner,
            budget: policy.shared.budget.clone(),
            limits: policy.limits,
            handle: Owned::new(Arc::new(Handle {
                policy,
                classify,
                template: Some(template),
                services: AtomicUsize::new(0),
            })),
        }
    }
}

impl<S, C> Retry<S, C> {
    /// The policy (and through it the budget and the metrics).
    pub fn policy(&self) -> &RetryPolicy {
        &self.handle.0.policy
    }

    #[cfg(test)]
    pub(crate) fn handle(&self) -> &Arc<Handle<C>> {
        &self.handle.0
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the layer, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for Retry<S, C>
where
    S: Service<Req> + Clone + 'static,
    S::Error: Into<BoxError>,
    Req: RetryRequest,
    C: RetryClassify<S::Response> + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.budget.deposit();
        let may_retry = self.limits.may_retry(req.is_idempotent());
        let backup = if may_retry { req.try_replay() } else { None };
        // Every call holds the handle: its limits time the attempt. A request that may be
        // retried but could not be copied (a body over the replay cap) is retryable, so that
        // giving up on it is reported as `NotReplayable`.
        let handle = spare::acquire(&self.handle.0);
        let attempts = ServiceAttempts {
            service: None,
            backup,
        };
        // Called last, so that the attempt's future goes straight into the response future.
        let first = self.inner.call(req);
        ResponseFuture::new(Machine::running(first, attempts, may_retry, handle))
    }
}

/// A copy of the request, and once a retry is due a clone of the inner service, for the next
/// attempt.
pub(crate) struct ServiceAttempts<S, Req> {
    service: Option<S>,
    backup: Option<Req>,
}

impl<S, Req> Attempts<S::Future> for ServiceAttempts<S, Req>
where
    S: Service<Req> + Clone + 'static,
    S::Error: Into<BoxError>,
    Req: RetryRequest,
{
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        template: Option<&Template>,
    ) -> Poll<Result<(), BoxError>> {
        if self.service.is_none() {
            // The first retry of this call: clone the service kept with the policy.
            let template = template.and_then(|t| t.downcast_ref::<Mutex<S>>());
            let Some(template) = template else {
                return Poll::Ready(Err("the retry layer has no service to retry with".into()));
            };
            let service = template
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            self.service = Some(service);
        }
        match &mut self.service {
            Some(s) => s.poll_ready(cx).map_err(Into::into),
            None => Poll::Ready(Ok(())),
        }
    }

    fn can_replay(&self) -> bool {
        self.backup.is_some()
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.backup
            .as_ref()
            .and_then(RetryRequest::deadline)
            .map(|d| d.instant())
    }

    fn next(&mut self, keep_copy: bool) -> Option<S::Future> {
        let req = self.backup.take()?;
        if keep_copy {
            self.backup = req.try_replay();
        }
        Some(self.service.as_mut()?.call(req))
    }
}
