//! The response futures of [`Retry`](crate::Retry) and of [`RetryPolicy::retry`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;
use crate::classify::RetryClassify;
use crate::engine::{Attempts, Machine, Template};
use crate::request::RetryRequest;
use crate::service::ServiceAttempts;
use crate::spare;

pin_project! {
    /// The response future of [`Retry`](crate::Retry).
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the running attempt (cancelling it) or the pending wait; no budget
    /// is taken for a retry that never starts after the drop.
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        machine: Machine<ServiceAttempts<S, Req>, S::Future, C>,
    }
}

impl<S: Service<Req>, Req, C> ResponseFuture<S, Req, C> {
    #[inline]
    pub(crate) fn new(machine: Machine<ServiceAttempts<S, Req>, S::Future, C>) -> Self {
        Self { machine }
    }
}

impl<S: Service<Req>, Req, C> fmt::Debug for ResponseFuture<S, Req, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("machine", &self.machine)
            .finish()
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req> + Clone + 'static,
    S::Error: Into<BoxError>,
    Req: RetryRequest,
    C: RetryClassify<S::Response> + Send + Sync + 'static,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut machine = self.project().machine;
        let out = machine.as_mut().poll(cx);
        if out.is_ready()
            && let Some(handle) = machine.take_handle()
        {
            spare::release(handle);
        }
        out
    }
}

pin_project! {
    /// The future of [`RetryPolicy::retry`](crate::RetryPolicy::retry): retries a closure's
    /// futures.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the running attempt or the pending wait.
    pub struct RetryCall<F, Fut, C> {
        #[pin]
        machine: Machine<FnAttempts<F>, Fut, C>,
    }
}

impl<F, Fut, C> RetryCall<F, Fut, C> {
    pub(crate) fn new(machine: Machine<FnAttempts<F>, Fut, C>) -> Self {
        Self { machine }
    }
}

impl<F, Fut, C> fmt::Debug for RetryCall<F, Fut, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryCall")
            .field("machine", &self.machine)
            .finish()
    }
}

impl<F, Fut, C, T, E> Future for RetryCall<F, Fut, C>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: RetryClassify<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().machine.poll(cx)
    }
}

/// Attempts made by calling a closure.
pub(crate) struct FnAttempts<F>(pub(crate) F);

impl<F, Fut> Attempts<Fut> for FnAttempts<F>
where
    F: FnMut() -> Fut,
{
    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: Option<&Template>,
    ) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn can_replay(&self) -> bool {
        true
    }

    fn next(&mut self, _: bool) -> Option<Fut> {
        Some((self.0)())
    }
}
