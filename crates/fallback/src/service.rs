//! [`FallbackService`]: the service a [`FallbackLayer`](crate::FallbackLayer) makes.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use staunch_core::BoxError;
use tower_service::Service;

use crate::FallbackPolicy;
use crate::answer::Respond;
use crate::future::{Deliver, Plain, ResponseFuture};

/// A layer's policy and answer, shared by its services and their calls.
pub(crate) struct Shared<Res, A> {
    pub(crate) policy: FallbackPolicy<Res>,
    pub(crate) answer: A,
}

/// A service whose chosen failures are answered by a fallback (see
/// [`FallbackLayer`](crate::FallbackLayer)).
pub struct FallbackService<S, Res, A, O = Plain> {
    inner: S,
    shared: Arc<Shared<Res, A>>,
    _output: PhantomData<fn() -> O>,
}

impl<S: Clone, Res, A, O> Clone for FallbackService<S, Res, A, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            _output: PhantomData,
        }
    }
}

impl<S: fmt::Debug, Res, A, O> fmt::Debug for FallbackService<S, Res, A, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackService")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<S, Res, A, O> FallbackService<S, Res, A, O> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<Res, A>>) -> Self {
        Self {
            inner,
            shared,
            _output: PhantomData,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &FallbackPolicy<Res> {
        &self.shared.policy
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

impl<S, Req, Res, A, O> Service<Req> for FallbackService<S, Res, A, O>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
    A: Respond<Req, Res>,
    O: Deliver<Res>,
{
    type Response = O::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Req, Res, A, O>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let kept = self.shared.answer.keep(&request);
        ResponseFuture::new(self.inner.call(request), Arc::clone(&self.shared), kept)
    }
}
