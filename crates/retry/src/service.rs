//! [`Retry`]: the tower service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::BoxError;
use crate::budget::RetryBudget;
use crate::classify::{RetryClassify, RetryOn};
use crate::config::{Limits, RetryPolicy};
use crate::engine::{Attempts, Handle, Machine};
use crate::future::ResponseFuture;
use crate::request::RetryRequest;

/// Retries calls to the inner service according to a [`RetryPolicy`]; built by
/// [`RetryLayer`](crate::RetryLayer).
///
/// `poll_ready` is the inner service's: the layer adds no reason to be unready. Errors are
/// boxed (`tower::BoxError`), so a timed-out attempt can surface as
/// [`Elapsed`](staunch_timeout::Elapsed).
///
/// The request is copied before the first attempt only when it could be retried (more than
/// one attempt allowed, the request is idempotent or the policy allows it, and
/// [`RetryRequest::try_replay`] gives a copy); the inner service is cloned into the response
/// future only when the request was copied, so that a retry can call it again. A call that
/// succeeds on its first poll reads no clock and arms no timer.
pub struct Retry<S, C = RetryOn> {
    inner: S,
    // The budget and the limits are also in the handle; kept here too so the success path
    // reaches them without chasing pointers.
    budget: RetryBudget,
    limits: Limits,
    handle: Arc<Handle<C>>,
}

impl<S: Clone, C: Clone> Clone for Retry<S, C> {
    /// Clones the inner service, and gives the clone a handle of its own on the policy and
    /// the classifier (one small allocation).
    ///
    /// Why not share the handle: each response future that may retry holds a reference to
    /// it. With one shared `Arc`, every call on every thread would increment and decrement
    /// the same counter, and that cache line would bounce between cores on every call. With
    /// a handle per clone, as tower services are cloned per task or connection, the counter
    /// stays with the thread that uses it. The policy itself (budget, counters) is shared.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            limits: self.limits,
            handle: Arc::new(Handle {
                policy: self.handle.policy.clone(),
                classify: self.handle.classify.clone(),
            }),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.handle.policy)
            .field("classify", &self.handle.classify)
            .finish()
    }
}

impl<S, C> Retry<S, C> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy, classify: C) -> Self {
        Self {
            inner,
            budget: policy.shared.budget.clone(),
            limits: policy.limits,
            handle: Arc::new(Handle { policy, classify }),
        }
    }

    /// The policy (and through it the budget and the metrics).
    pub fn policy(&self) -> &RetryPolicy {
        &self.handle.policy
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
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: RetryRequest,
    C: RetryClassify<S::Response>,
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
        let limits = self.limits;
        let may_retry = limits.may_retry(req.is_idempotent());
        let backup = if may_retry { req.try_replay() } else { None };
        let first = self.inner.call(req);
        let service = backup.as_ref().map(|_| self.inner.clone());
        // A request that may be retried but could not be copied (a body over the replay cap)
        // still gets the handle, so that giving up on it is reported as `NotReplayable`.
        let handle = may_retry.then(|| Arc::clone(&self.handle));
        let attempts = ServiceAttempts { service, backup };
        ResponseFuture::new(Machine::running(first, attempts, limits, handle))
    }
}

/// A service clone and a copy of the request, for the next attempt.
pub(crate) struct ServiceAttempts<S, Req> {
    service: Option<S>,
    backup: Option<Req>,
}

impl<S, Req> Attempts<S::Future> for ServiceAttempts<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: RetryRequest,
{
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.service {
            Some(s) => s.poll_ready(cx).map_err(Into::into),
            None => Poll::Ready(Ok(())),
        }
    }

    fn can_replay(&self) -> bool {
        self.backup.is_some() && self.service.is_some()
    }

    fn next(&mut self, keep_copy: bool) -> Option<S::Future> {
        let req = self.backup.take()?;
        if keep_copy {
            self.backup = req.try_replay();
        }
        Some(self.service.as_mut()?.call(req))
    }
}
