//! The response future of [`Timeout`](crate::Timeout).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use staunch_core::DeadlineExpired;

use crate::limit::Limited;
use crate::service::BoxError;

pin_project! {
    /// The response future of [`Timeout`](crate::Timeout): the inner response, the inner
    /// error boxed, a boxed [`Elapsed`](crate::Elapsed) when the call was cut off, or a boxed
    /// [`DeadlineExpired`] when it was not sent because its deadline had passed.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the inner future and the timer, if one was armed; it holds nothing
    /// else.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] call: Limited<F> },
        Expired { expired: DeadlineExpired },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn running(call: Limited<F>) -> Self {
        Self {
            state: State::Running { call },
        }
    }

    pub(crate) fn expired(expired: DeadlineExpired) -> Self {
        Self {
            state: State::Expired { expired },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            State::Running { call } => f.debug_tuple("ResponseFuture").field(call).finish(),
            State::Expired { .. } => f.write_str("ResponseFuture(Expired)"),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { call } => call.poll(cx).map(|result| match result {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(err)) => Err(err.into()),
                Err(elapsed) => Err(elapsed.into()),
            }),
            StateProj::Expired { expired } => Poll::Ready(Err(Box::new(expired.clone()))),
        }
    }
}
