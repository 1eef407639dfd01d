//! The response futures of [`Retry`](crate::Retry) and of [`RetryPolicy::retry`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;
use crate::classify::RetryClassify;
use crate::engine::{Attempts, Machine};
use crate::request::RetryRequest;
use crate::service::ServiceAttempts;
use staunch_timeout::Deadline;

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
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: RetryRequest,
    C: RetryClassify<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().machine.poll(cx)
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

    /// Never waits for a retry past `deadline` (the caller's, e.g. the [`Deadline`] of the
    /// request being served): a retry whose wait would end at or past it is not made, and
    /// the last attempt's result is returned, annotated with
    /// [`GiveUpReason::Deadline`](crate::GiveUpReason::Deadline). Call it before the first
    /// poll; a running attempt is not cut at the deadline (give the closure's future a
    /// timeout for that).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use staunch_retry::{Deadline, GiveUpReason, RetryExhausted, RetryPolicy};
    ///
    /// let policy = RetryPolicy::builder().build().unwrap();
    /// let err = policy
    ///     .retry(|| async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) })
    ///     .with_deadline(Deadline::after(Duration::from_millis(1)))
    ///     .await
    ///     .unwrap_err();
    /// let gave_up = err.downcast_ref::<RetryExhausted>().unwrap();
    /// assert_eq!(gave_up.reason(), GiveUpReason::Deadline);
    /// assert!(gave_up.last().is::<std::io::Error>());
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub fn with_deadline(mut self, deadline: Deadline) -> Self {
        self.machine.attempts_mut().deadline = Some(deadline.instant());
        self
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

/// Attempts made by calling a closure, and the deadline it was given.
pub(crate) struct FnAttempts<F> {
    pub(crate) make: F,
    pub(crate) deadline: Option<tokio::time::Instant>,
}

impl<F, Fut> Attempts<Fut> for FnAttempts<F>
where
    F: FnMut() -> Fut,
{
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn can_replay(&self) -> bool {
        true
    }

    fn next(&mut self, _: bool) -> Option<Fut> {
        Some((self.make)())
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }
}
