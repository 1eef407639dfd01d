//! [`ResponseFuture`]: a call through a [`FallbackService`](crate::FallbackService), and how
//! it hands its response over ([`Plain`], [`Wrap`]).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use staunch_core::BoxError;

use crate::answer::{Respond, Responding};
use crate::policy::Verdict;
use crate::service::Shared;
use crate::{Answered, Reason};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Plain {}
    impl Sealed for super::Wrap {}
}

/// How a fallback service hands its response over: [`Plain`] or [`Wrap`].
pub trait Deliver<Res>: sealed::Sealed {
    /// The service's response type.
    type Response;

    #[doc(hidden)]
    fn primary(response: Res) -> Self::Response;

    #[doc(hidden)]
    fn fallback(response: Res, reason: Reason) -> Self::Response;
}

/// The response as it is (a fallback's marked the way its policy says): the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

/// The response wrapped in [`Answered`]
/// ([`FallbackLayer::answered`](crate::FallbackLayer::answered)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Wrap;

impl<Res> Deliver<Res> for Plain {
    type Response = Res;

    #[inline]
    fn primary(response: Res) -> Res {
        response
    }

    fn fallback(response: Res, _: Reason) -> Res {
        response
    }
}

impl<Res> Deliver<Res> for Wrap {
    type Response = Answered<Res>;

    #[inline]
    fn primary(response: Res) -> Answered<Res> {
        Answered::Primary(response)
    }

    fn fallback(response: Res, reason: Reason) -> Answered<Res> {
        Answered::Fallback { response, reason }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, G> {
        Primary { #[pin] future: F },
        Answering { #[pin] future: G, reason: Reason },
        Done,
    }
}

pin_project! {
    /// The response future of [`FallbackService`](crate::FallbackService): the primary
    /// call, then, if a rule fires, the fallback's answer.
    ///
    /// It holds the inner future, a reference to the layer's policy, and (for a backup
    /// service only) a clone of the request; a backup's call is boxed.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops whichever call is in flight, the primary or the backup, and with
    /// it whatever that call holds (a bulkhead permit, say).
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F, Req, Res, A, O>
    where
        A: Respond<Req, Res>,
    {
        #[pin]
        state: State<F, A::Future>,
        shared: Arc<Shared<Res, A>>,
        kept: Option<A::Kept>,
        _output: PhantomData<fn() -> O>,
    }
}

impl<F, Req, Res, A, O> fmt::Debug for ResponseFuture<F, Req, Res, A, O>
where
    A: Respond<Req, Res>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("policy", &self.shared.policy.name())
            .finish_non_exhaustive()
    }
}

impl<F, Req, Res, A, O> ResponseFuture<F, Req, Res, A, O>
where
    A: Respond<Req, Res>,
{
    #[inline]
    pub(crate) fn new(future: F, shared: Arc<Shared<Res, A>>, kept: A::Kept) -> Self {
        Self {
            state: State::Primary { future },
            shared,
            kept: Some(kept),
            _output: PhantomData,
        }
    }
}

impl<F, E, Req, Res, A, O> Future for ResponseFuture<F, Req, Res, A, O>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    A: Respond<Req, Res>,
    O: Deliver<Res>,
{
    type Output = Result<O::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Primary { future } => {
                    let result = ready!(future.poll(cx));
                    let policy = &this.shared.policy;
                    let (reason, cause) = match policy.check(result) {
                        Verdict::Primary(result) => {
                            this.state.set(State::Done);
                            return Poll::Ready(result.map(O::primary));
                        }
                        Verdict::Panicked(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                        Verdict::Fallback { reason, cause } => (reason, cause),
                    };
                    let Some(kept) = this.kept.take() else {
                        this.state.set(State::Done);
                        continue;
                    };
                    match this.shared.answer.respond(policy, kept, reason, cause) {
                        Responding::Now(result) => {
                            this.state.set(State::Done);
                            return Poll::Ready(result.map(|mut response| {
                                policy.mark(&mut response, reason);
                                O::fallback(response, reason)
                            }));
                        }
                        Responding::Later(future) => {
                            this.state.set(State::Answering { future, reason });
                        }
                    }
                }
                StateProj::Answering { future, reason } => {
                    let reason = *reason;
                    let result = ready!(future.poll(cx));
                    this.state.set(State::Done);
                    let policy = &this.shared.policy;
                    return Poll::Ready(result.map(|mut response| {
                        policy.mark(&mut response, reason);
                        O::fallback(response, reason)
                    }));
                }
                StateProj::Done => {
                    return Poll::Ready(Err(
                        "fallback response future polled after completion".into()
                    ));
                }
            }
        }
    }
}
