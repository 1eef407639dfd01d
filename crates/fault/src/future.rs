//! [`ResponseFuture`]: the inner call's future, a call waiting out its injected delay, or
//! an injected answer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use staunch_core::BoxError;
use tokio::time::Sleep;
use tower_service::Service;

pin_project! {
    /// A call with a fault: its delay, if any, then what to do.
    struct Injected<S, Req, Res> {
        #[pin]
        sleep: Option<Sleep>,
        then: Then<S, Req, Res>,
    }
}

/// What a call with a fault does once its delay (if any) has passed.
enum Then<S, Req, Res> {
    /// Sends the request to the (ready) service.
    Call { service: S, request: Req },
    /// Answers with the injected result.
    Answer(Result<Res, BoxError>),
    /// Done (or moved into the `Called` state).
    Done,
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F, Res> {
        // No fault: the inner future and nothing else.
        Called { #[pin] future: F },
        // Boxed: only a call with a fault pays for room for a timer, the service and the
        // request (or the answer); the common future stays the inner one plus a tag.
        Injected { injected: Pin<Box<Injected<S, Req, Res>>> },
    }
}

pin_project! {
    /// The response future of [`FaultService`](crate::FaultService) and
    /// [`HttpFaultService`](crate::HttpFaultService).
    ///
    /// A call without a fault is the inner future. A delayed call holds the service and the
    /// request until its delay has passed; dropping the future then drops both, and the
    /// service never sees the request.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future, S::Response>,
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Injected { injected } => match (&injected.sleep, &injected.then) {
                (Some(_), _) => "delayed",
                (None, Then::Done) => "done",
                (None, _) => "answered",
            },
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    /// The inner call, untouched.
    #[inline]
    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    fn injected(sleep: Option<Sleep>, then: Then<S, Req, S::Response>) -> Self {
        Self {
            state: State::Injected {
                injected: Box::pin(Injected { sleep, then }),
            },
        }
    }

    /// The injected `result`, after `delay` if any.
    pub(crate) fn answered(result: Result<S::Response, BoxError>, delay: Option<Duration>) -> Self {
        Self::injected(delay.map(sleep), Then::Answer(result))
    }

    /// `request` sent to `service` (ready) after `delay`.
    pub(crate) fn delayed(service: &mut S, request: Req, delay: Duration) -> Self
    where
        S: Clone,
    {
        // `service` is ready; the clone left behind is not (tower's contract), and the
        // caller polls it ready before its next call.
        let clone = service.clone();
        let ready = std::mem::replace(service, clone);
        Self::injected(
            Some(sleep(delay)),
            Then::Call {
                service: ready,
                request,
            },
        )
    }
}

fn sleep(delay: Duration) -> Sleep {
    let now = tokio::time::Instant::now();
    tokio::time::sleep_until(staunch_core::instant_after(now, delay))
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                StateProj::Injected { injected } => {
                    let i = injected.as_mut().project();
                    if let Some(sleep) = i.sleep.as_pin_mut() {
                        ready!(sleep.poll(cx));
                    }
                    match std::mem::replace(i.then, Then::Done) {
                        Then::Call {
                            mut service,
                            request,
                        } => {
                            let future = service.call(request);
                            this.state.set(State::Called { future });
                        }
                        Then::Answer(result) => return Poll::Ready(result),
                        Then::Done => {
                            return Poll::Ready(Err("polled after completion".into()));
                        }
                    }
                }
            }
        }
    }
}
