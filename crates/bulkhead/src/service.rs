//! The bulkhead as a tower service (see [`BulkheadService`] for how waiting maps onto tower).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use staunch_core::{BulkheadFull, Classify};
use tower_service::Service;

use crate::BoxError;
use crate::acquire::Acquire;
use crate::bulkhead::{Bulkhead, Permit};
use crate::future::ResponseFuture;

/// Reservation state of one service handle: the bounded wait of `poll_ready`.
///
/// The reserved permit has a field of its own, apart from the rarer states, so the fast path
/// writes and reads it with full-width moves only.
pub(crate) struct Gate {
    bulkhead: Bulkhead,
    permit: Option<Permit>,
    slow: Slow,
}

enum Slow {
    None,
    // Boxed: only callers that wait or are rejected pay for the bigger states.
    Waiting(Box<Acquire>),
    Rejected(Box<BulkheadFull>),
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.permit, &self.slow) {
            (Some(_), _) => "reserved",
            (None, Slow::None) => "idle",
            (None, Slow::Waiting(_)) => "waiting",
            (None, Slow::Rejected(_)) => "rejected",
        };
        f.debug_struct("Gate")
            .field("bulkhead", &self.bulkhead.name())
            .field("state", &state)
            .finish()
    }
}

impl Gate {
    pub(crate) fn new(bulkhead: Bulkhead) -> Self {
        Self {
            bulkhead,
            permit: None,
            slow: Slow::None,
        }
    }

    pub(crate) fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// Ready with `true` when a permit is reserved (poll the inner service next), with
    /// `false` when the next call is to be rejected.
    #[inline]
    pub(crate) fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.permit.is_some() {
            return Poll::Ready(true);
        }
        if let Slow::None = self.slow
            && self.bulkhead.inner.permits.try_acquire()
        {
            self.permit = Some(Permit::new(&self.bulkhead));
            return Poll::Ready(true);
        }
        self.poll_reserve_slow(cx)
    }

    #[cold]
    fn poll_reserve_slow(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            match &mut self.slow {
                Slow::Rejected(_) => {
                    // Readiness polled again before the call: take a permit freed meanwhile
                    // rather than reject on a stale verdict.
                    if self.bulkhead.inner.permits.try_acquire() {
                        self.slow = Slow::None;
                        self.permit = Some(Permit::new(&self.bulkhead));
                        return Poll::Ready(true);
                    }
                    return Poll::Ready(false);
                }
                Slow::None => self.slow = Slow::Waiting(Box::new(self.bulkhead.acquire())),
                Slow::Waiting(acquire) => match Pin::new(&mut **acquire).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(permit)) => {
                        self.slow = Slow::None;
                        self.permit = Some(permit);
                        return Poll::Ready(true);
                    }
                    Poll::Ready(Err(full)) => {
                        self.slow = Slow::Rejected(Box::new(full));
                        return Poll::Ready(false);
                    }
                },
            }
        }
    }

    /// Takes the reservation for a call.
    ///
    /// # Panics
    ///
    /// When `poll_reserve` did not return `Ready` first (the tower contract).
    #[inline]
    pub(crate) fn take(&mut self) -> Result<Permit, Box<BulkheadFull>> {
        if let Some(permit) = self.permit.take() {
            return Ok(permit);
        }
        match std::mem::replace(&mut self.slow, Slow::None) {
            Slow::Rejected(full) => Err(full),
            _ => panic!("bulkhead service called before `poll_ready` returned `Ready`"),
        }
    }
}

/// A service behind a [`Bulkhead`]; made by [`BulkheadLayer`](crate::BulkheadLayer).
///
/// Errors are boxed (`tower::BoxError`): the inner service's error, or [`BulkheadFull`] when
/// the bulkhead turned the call away (test with `err.is::<BulkheadFull>()`, or find it in a
/// chain with `staunch_core::rejection_of`).
///
/// # How waiting maps onto tower
///
/// Like tower's `ConcurrencyLimit`, the permit is reserved in `poll_ready` and moves into the
/// response future in `call`; dropping the service or the future gives it back. Unlike
/// `ConcurrencyLimit`, readiness never waits forever: `poll_ready` waits at most `max_wait`
/// (in FIFO order, within the queue cap). When no permit comes, `poll_ready` still returns
/// `Ready(Ok(()))` and the following `call` returns a future that fails at once with
/// [`BulkheadFull`], without calling the inner service. `poll_ready` errors are terminal in
/// tower, so a full bulkhead must never be one: rejecting from `call` (as `load_shed` does)
/// lets the caller shed that one request and keep using the service.
///
/// # Panics
///
/// `call` panics if `poll_ready` did not return `Ready` first, as tower requires.
pub struct BulkheadService<S, C> {
    inner: S,
    classifier: C,
    gate: Gate,
}

impl<S, C> BulkheadService<S, C> {
    /// Wraps `inner` in `bulkhead`, classifying results with `classifier`.
    pub fn new(inner: S, bulkhead: Bulkhead, classifier: C) -> Self {
        Self {
            inner,
            classifier,
            gate: Gate::new(bulkhead),
        }
    }

    /// The bulkhead this service shares.
    pub fn bulkhead(&self) -> &Bulkhead {
        self.gate.bulkhead()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service (a reserved permit is released).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, C> fmt::Debug for BulkheadService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadService")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .finish()
    }
}

// Written by hand: a handle may hold a permit reserved by its `poll_ready` for the one call it
// is about to make. A clone must start without it (deriving would not compile for `Permit`,
// and copying the reservation would let two calls run on one permit).
impl<S: Clone, C: Clone> Clone for BulkheadService<S, C> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.gate.bulkhead().clone(),
            self.classifier.clone(),
        )
    }
}

impl<S, C, Req> Service<Req> for BulkheadService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.gate.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            // The call will be rejected: the inner service's readiness does not matter.
            Poll::Ready(false) => Poll::Ready(Ok(())),
            Poll::Ready(true) => self.inner.poll_ready(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.gate.take() {
            Ok(permit) => {
                let classifier = permit.wants_outcome().then(|| self.classifier.clone());
                ResponseFuture::running(self.inner.call(req), permit, classifier)
            }
            Err(full) => ResponseFuture::rejected(full),
        }
    }
}
