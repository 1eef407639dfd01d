//! The tower service that cuts calls off at their time limit or deadline.

use std::task::{Context, Poll};

use staunch_core::DeadlineExpired;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::limit::TimeLimit;
use crate::request::{FromExtensions, ReadLimits};

/// The error type of a [`Timeout`]: the inner service's error or an [`Elapsed`](crate::Elapsed),
/// boxed as tower's own `Timeout` does. Test for a timeout with `err.is::<Elapsed>()`.
pub use staunch_core::BoxError;

/// Cuts each call off when its time limit passes or its deadline arrives, whichever is first.
///
/// The limit of a call is the request's [`TimeoutOverride`](crate::TimeoutOverride) if it has
/// one, else the configured limit; a [`Deadline`](crate::Deadline) on the request caps it. A
/// request whose deadline has already passed is refused with `Elapsed` (limit zero) without
/// calling the inner service: its caller has stopped waiting.
///
/// No timer is armed and the clock is not read when the inner future finishes on its first
/// poll (requests carrying a deadline read the clock once, to refuse expired ones).
///
/// Readiness is the inner service's: `poll_ready` passes its result through (boxed) and is not
/// timed, as with tower's `Timeout`; bound the wait for capacity where it is queued (e.g. a
/// bulkhead's maximum wait).
///
/// Built by [`TimeoutLayer`](crate::TimeoutLayer). Engine users who want the typed
/// [`Elapsed`](crate::Elapsed) rather than a boxed error call [`TimeLimit::run_with`] directly.
#[derive(Debug, Clone)]
// `Clone` is derived: a `Timeout` holds no readiness or permit state, only configuration and
// the inner service (whose own `Clone` decides what its clones share).
pub struct Timeout<S, L = FromExtensions> {
    inner: S,
    limit: TimeLimit,
    read: L,
}

impl<S, L> Timeout<S, L> {
    /// Wraps `inner`, reading each request's own limits with `read`.
    pub fn new(inner: S, limit: TimeLimit, read: L) -> Self {
        Self { inner, limit, read }
    }

    /// The limit applied to each call.
    pub fn time_limit(&self) -> &TimeLimit {
        &self.limit
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, L> Service<R> for Timeout<S, L>
where
    S: Service<R> + Clone,
    S::Error: Into<BoxError>,
    L: ReadLimits<R>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: R) -> Self::Future {
        let limits = self.read.read(&request);
        if let Some(deadline) = limits.deadline
            && deadline.is_expired()
        {
            tracing::trace!(
                ?deadline,
                "deadline passed before the call started; refused"
            );
            self.limit.record_expired();
            release_readiness(&mut self.inner);
            return ResponseFuture::expired(DeadlineExpired::new(self.limit.shared_name()));
        }
        let prepared = self.limit.prepare(limits);
        ResponseFuture::running(prepared.run(self.inner.call(request)))
    }
}

/// Gives back whatever `inner`'s `poll_ready` reserved for the call that is not being made
/// (a bulkhead's permit, say): the handle driven ready is dropped and a fresh clone, which
/// starts not ready, takes its place. Only a refused call pays for the clone.
#[cold]
pub(crate) fn release_readiness<S: Clone>(inner: &mut S) {
    let fresh = inner.clone();
    drop(std::mem::replace(inner, fresh));
}
