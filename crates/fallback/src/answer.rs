//! What a fallback answers with: [`Answer`] (a value or a function) and [`Backup`] (another
//! service), behind the sealed [`Respond`] trait the layer is generic over.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use staunch_core::BoxError;
use tower_service::Service;

use crate::error::{Callback, FallbackPanicked};
use crate::{Cause, FallbackPolicy, Reason};

type AnswerFn<Res> = dyn Fn(Reason, Cause<Res>) -> Res + Send + Sync;

/// A fallback's answer computed in place: a value (cloned for each fallback) or a function
/// of why the fallback fired and what the primary call ended with.
///
/// Cloning it bumps a reference count. An answer that panics (a function, or a value's
/// `clone`) fails that call with [`FallbackPanicked`]; it keeps answering other calls.
///
/// ```
/// use staunch_fallback::{Answer, Cause, Reason};
///
/// let fixed = Answer::value(String::from("unavailable"));
/// let explain = Answer::function(|reason: Reason, cause: Cause<String>| match cause {
///     Cause::Error(e) => format!("{reason}: {e}"),
///     Cause::Response(r) => format!("{reason}: replaced {r:?}"),
///     _ => reason.to_string(),
/// });
/// # drop((fixed, explain));
/// ```
pub struct Answer<Res> {
    f: Arc<AnswerFn<Res>>,
}

impl<Res> Clone for Answer<Res> {
    fn clone(&self) -> Self {
        Self {
            f: Arc::clone(&self.f),
        }
    }
}

impl<Res> fmt::Debug for Answer<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Answer")
    }
}

impl<Res: 'static> Answer<Res> {
    /// Answers with a clone of `value`.
    pub fn value(value: Res) -> Self
    where
        Res: Clone + Send + Sync,
    {
        Self {
            f: Arc::new(move |_, _| value.clone()),
        }
    }

    /// Answers with what `f` makes of the reason and of the primary's error or response.
    pub fn function<F>(f: F) -> Self
    where
        F: Fn(Reason, Cause<Res>) -> Res + Send + Sync + 'static,
    {
        Self { f: Arc::new(f) }
    }
}

impl<Res> Answer<Res> {
    /// The answer for `reason`, or the panic of the function (counted by `policy`).
    pub(crate) fn answer(
        &self,
        policy: &FallbackPolicy<Res>,
        reason: Reason,
        cause: Cause<Res>,
    ) -> Result<Res, FallbackPanicked> {
        catch_unwind(AssertUnwindSafe(|| (self.f)(reason, cause)))
            .map_err(|panic| policy.panicked(Callback::Answer, &*panic))
    }
}

/// A fallback's answer from another tower service, called with a clone of the request
/// ([`FallbackLayer::service`](crate::FallbackLayer::service)).
///
/// Only this answer needs the request, so only it needs `Req: Clone`, and it clones each
/// request before the primary call (a cost on every call: cheap for most requests, an
/// allocation for an `http::Request` with headers). Each fallback clones the backup service
/// (a clone starts not ready), drives it ready and calls it, in a boxed future: the boxing
/// happens only when the fallback fires. The backup's error fails the call as a
/// [`FallbackFailed`](crate::FallbackFailed) with the backup's error as its source; a panic
/// in the backup's `poll_ready`, `call` or future fails it with [`FallbackPanicked`].
#[derive(Debug, Clone)]
pub struct Backup<F> {
    service: F,
}

impl<F> Backup<F> {
    pub(crate) fn new(service: F) -> Self {
        Self { service }
    }

    /// The backup service.
    pub fn get_ref(&self) -> &F {
        &self.service
    }
}

mod sealed {
    pub trait Sealed {}
    impl<Res> Sealed for super::Answer<Res> {}
    impl<F> Sealed for super::Backup<F> {}
}

/// An answer's next step: done, or a future to drive.
#[doc(hidden)]
#[derive(Debug)]
pub enum Responding<Res, F> {
    Now(Result<Res, BoxError>),
    Later(F),
}

/// How a fallback layer answers: implemented by [`Answer`] and [`Backup`] only.
pub trait Respond<Req, Res>: sealed::Sealed {
    /// What each call keeps of its request for the fallback: nothing, or a clone.
    type Kept;
    /// The future of an answer that is not ready at once.
    type Future: Future<Output = Result<Res, BoxError>>;

    #[doc(hidden)]
    fn keep(&self, request: &Req) -> Self::Kept;

    #[doc(hidden)]
    fn respond(
        &self,
        policy: &FallbackPolicy<Res>,
        kept: Self::Kept,
        reason: Reason,
        cause: Cause<Res>,
    ) -> Responding<Res, Self::Future>;
}

impl<Req, Res> Respond<Req, Res> for Answer<Res> {
    type Kept = ();
    type Future = std::future::Pending<Result<Res, BoxError>>;

    #[inline]
    fn keep(&self, _: &Req) {}

    fn respond(
        &self,
        policy: &FallbackPolicy<Res>,
        (): (),
        reason: Reason,
        cause: Cause<Res>,
    ) -> Responding<Res, Self::Future> {
        Responding::Now(self.answer(policy, reason, cause).map_err(Into::into))
    }
}

impl<Req, Res, F> Respond<Req, Res> for Backup<F>
where
    Req: Clone,
    F: Service<Req, Response = Res> + Clone,
    F::Error: Into<BoxError>,
{
    type Kept = Req;
    type Future = Pin<Box<BackupCall<F, Req, Res>>>;

    #[inline]
    fn keep(&self, request: &Req) -> Req {
        request.clone()
    }

    fn respond(
        &self,
        policy: &FallbackPolicy<Res>,
        request: Req,
        reason: Reason,
        _: Cause<Res>,
    ) -> Responding<Res, Self::Future> {
        Responding::Later(Box::pin(BackupCall {
            policy: policy.clone(),
            reason,
            state: BackupState::Ready {
                service: self.service.clone(),
                request: Some(request),
            },
        }))
    }
}

pin_project! {
    #[project = BackupProj]
    enum BackupState<F, Req, Fut> {
        Ready { service: F, request: Option<Req> },
        Called { #[pin] future: Fut },
        Done,
    }
}

pin_project! {
    /// A call to a fallback's backup service: readiness, then the call. Its errors are the
    /// fallback's ([`FallbackFailed`](crate::FallbackFailed), [`FallbackPanicked`]).
    pub struct BackupCall<F, Req, Res>
    where
        F: Service<Req>,
    {
        policy: FallbackPolicy<Res>,
        reason: Reason,
        #[pin]
        state: BackupState<F, Req, F::Future>,
    }
}

impl<F, Req, Res> fmt::Debug for BackupCall<F, Req, Res>
where
    F: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupCall")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl<F, Req, Res> Future for BackupCall<F, Req, Res>
where
    F: Service<Req, Response = Res>,
    F::Error: Into<BoxError>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                BackupProj::Ready { service, request } => {
                    let ready = catch_unwind(AssertUnwindSafe(|| service.poll_ready(cx)));
                    let called = match ready {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(Err(e))) => {
                            this.state.set(BackupState::Done);
                            return Poll::Ready(Err(this
                                .policy
                                .failed(*this.reason, e.into())
                                .into()));
                        }
                        Ok(Poll::Ready(Ok(()))) => {
                            let Some(request) = request.take() else {
                                this.state.set(BackupState::Done);
                                continue;
                            };
                            catch_unwind(AssertUnwindSafe(|| service.call(request)))
                        }
                        Err(panic) => Err(panic),
                    };
                    match called {
                        Ok(future) => this.state.set(BackupState::Called { future }),
                        Err(panic) => {
                            this.state.set(BackupState::Done);
                            let error = this.policy.panicked(Callback::Backup, &*panic);
                            return Poll::Ready(Err(error.into()));
                        }
                    }
                }
                BackupProj::Called { future } => {
                    let polled = catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
                    let result = match polled {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(Ok(response))) => Ok(response),
                        Ok(Poll::Ready(Err(e))) => {
                            Err(this.policy.failed(*this.reason, e.into()).into())
                        }
                        Err(panic) => Err(this.policy.panicked(Callback::Backup, &*panic).into()),
                    };
                    // A future that panicked is never polled again.
                    this.state.set(BackupState::Done);
                    return Poll::Ready(result);
                }
                BackupProj::Done => {
                    return Poll::Ready(Err("fallback backup polled after completion".into()));
                }
            }
        }
    }
}
