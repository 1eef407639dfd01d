//! [`Retry`]: the tower service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::BoxError;
use crate::budget::RetryBudget;
use crate::classify::{RetryClassify, RetryOn};
use crate::config::{Limits, RetryPolicy};
use crate::engine::{Attempts, ClassifiedPolicy, Machine};
use crate::future::ResponseFuture;
use crate::request::RetryRequest;

/// Retries calls to the inner service according to a [`RetryPolicy`]; built by
/// [`RetryLayer`](crate::RetryLayer).
///
/// `poll_ready` is the inner service's: the layer adds no reason to be unready. Errors are
/// boxed (`tower::BoxError`), so a timed-out attempt can surface as
/// [`Elapsed`](staunch_timeout::Elapsed).
///
/// A retry goes through a clone of the service that made the call, taken when the call was
/// made, as tower's own `Retry` does: a balancer, or a service whose clones carry state of
/// their own, retries with its own state. That clone, and the copy of the request, are made
/// only when the request could be retried (more than one attempt allowed, the request is
/// idempotent or the policy allows it, and [`RetryRequest::try_replay`] gives a copy); a
/// request that cannot be retried (a POST without an `Idempotency-Key`, by default) is sent
/// without either. A call that may be retried also takes a reference to the policy, since
/// its future may outlive the service (`ServiceExt::oneshot` drops the service before
/// polling); the future lets go of it when it finishes. Nothing is kept anywhere else: once
/// every `Retry`, layer and response future is dropped, the inner service, the policy's
/// hooks and the classifier are dropped too.
///
/// A call that succeeds on its first poll reads no clock (unless the backoff has a
/// `max_elapsed`, see [`RetryPolicyBuilder::backoff`](crate::RetryPolicyBuilder::backoff)),
/// arms no timer and allocates nothing.
pub struct Retry<S, C = RetryOn> {
    inner: S,
    // The budget handle and the limits are also in the policy; kept here too so every call
    // reaches them without chasing pointers (the limits are copied into its future).
    budget: RetryBudget,
    limits: Limits,
    policy: Arc<ClassifiedPolicy<C>>,
}

impl<S: Clone, C> Clone for Retry<S, C> {
    /// Clones the inner service; the clone shares the policy and the classifier.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            budget: self.budget.clone(),
            limits: self.limits,
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy.policy)
            .field("classify", &self.policy.classify)
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
            policy: Arc::new(ClassifiedPolicy { policy, classify }),
        }
    }

    /// The policy (and through it the budget and the metrics).
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy.policy
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
        let may_retry = self.limits.may_retry(req.is_idempotent());
        let backup = if may_retry { req.try_replay() } else { None };
        // A request that may be retried but could not be copied (a body over the replay cap)
        // still holds the policy, so that giving up on it is reported as `NotReplayable`.
        let policy = may_retry.then(|| Arc::clone(&self.policy));
        let mut limits = self.limits;
        if limits.attempts_cut_by.is_some()
            && let Some(own) = req.timeout_override()
        {
            limits.attempts_cut_by = Some(own);
        }
        let telemetry = crate::telemetry::CallTelemetry::start(&self.policy.policy.shared, &limits);
        let first = match telemetry.span() {
            Some(span) => span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        // Cloned after the call, as tower does: the clone is of the service that made it, and
        // inherits no readiness (the retry polls it ready before its attempt). Only a request
        // with a copy can be retried, so only then is the service cloned.
        let service = backup.as_ref().map(|_| self.inner.clone());
        let attempts = ServiceAttempts { service, backup };
        ResponseFuture::new(
            Machine::running(first, attempts, limits, policy).with_telemetry(telemetry),
        )
    }
}

/// A copy of the request and a clone of the service that made the call, for the next
/// attempt. The service is cloned only for a request with a copy, so `backup` is set only
/// while `service` is.
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
            // Not reached: a retry is made only when the request was copied, and then the
            // service was cloned too.
            None => Poll::Ready(Err("the retry layer has no service to retry with".into())),
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
