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
    /// A delayed call: the timer, then what to do when it fires.
    struct Waiting<S, Req, Res> {
        #[pin]
        sleep: Sleep,
        then: Then<S, Req, Res>,
    }
}

/// What a delayed call does once its delay has passed.
enum Then<S, Req, Res> {
    /// Sends the request to the (ready) service.
    Call { service: S, request: Option<Req> },
    /// Answers with the injected result.
    Answer(Option<Result<Res, BoxError>>),
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F, Res> {
        // Not delayed, not failed: the inner future and nothing else.
        Called { #[pin] future: F },
        // Boxed: only a delayed call pays for room for a timer, the service and the request;
        // the common future stays as small as the inner one's plus a tag.
        Waiting { waiting: Pin<Box<Waiting<S, Req, Res>>> },
        Answered { result: Option<Result<Res, BoxError>> },
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
            State::Waiting { .. } => "waiting",
            State::Answered { .. } => "answered",
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

    /// The injected `result`, after `delay` if any.
    pub(crate) fn answered(result: Result<S::Response, BoxError>, delay: Option<Duration>) -> Self {
        let state = match delay {
            None => State::Answered {
                result: Some(result),
            },
            Some(delay) => State::Waiting {
                waiting: Box::pin(Waiting {
                    sleep: sleep(delay),
                    then: Then::Answer(Some(result)),
                }),
            },
        };
        Self { state }
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
        Self {
            state: State::Waiting {
                waiting: Box::pin(Waiting {
                    sleep: sleep(delay),
                    then: Then::Call {
                        service: ready,
                        request: Some(request),
                    },
                }),
            },
        }
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
                StateProj::Answered { result } => {
                    return Poll::Ready(
                        result
                            .take()
                            .unwrap_or_else(|| Err("polled after completion".into())),
                    );
                }
                StateProj::Waiting { waiting } => {
                    let w = waiting.as_mut().project();
                    ready!(w.sleep.poll(cx));
                    let next = match w.then {
                        Then::Call { service, request } => match request.take() {
                            Some(request) => State::Called {
                                future: service.call(request),
                            },
                            None => State::Answered { result: None },
                        },
                        Then::Answer(result) => State::Answered {
                            result: result.take(),
                        },
                    };
                    this.state.set(next);
                }
            }
        }
    }
}
