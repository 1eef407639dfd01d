//! [`FallbackService`]: the service a [`FallbackLayer`](crate::FallbackLayer) makes.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use staunch_core::BoxError;
use tower_service::Service;

use crate::FallbackPolicy;
use crate::answer::Respond;
use crate::future::{Deliver, Plain, ResponseFuture};

/// A layer's policy and answer, as each call's response future holds them.
///
/// Aligned to two cache lines, so that the reference counts of two copies never share one
/// (see [`Copies`]).
#[repr(align(128))]
pub(crate) struct Shared<Res, A> {
    pub(crate) policy: FallbackPolicy<Res>,
    pub(crate) answer: A,
}

/// How many copies of its [`Shared`] state a layer keeps.
const COPIES: usize = 16;

/// A layer's copies of its shared state.
///
/// Every call takes a reference to the policy and answer into its response future (one
/// reference count, as tower takes one `Arc` clone per call). With one `Arc` for all, the
/// services of one layer on different threads would write the same count on every call, and
/// the cache line would bounce between cores: measured, that made two threads sharing a
/// layer slower than the circuit breaker's success path (`benches/fallback.rs`,
/// `contended`). So a layer keeps a few copies (the policy and the answer are handles: a copy
/// is a few reference counts, made once per layer), and each service, when made or cloned,
/// takes the next copy in turn; services that run on different threads then rarely share a
/// count. The policy's counters stay shared: only fallbacks touch them.
pub(crate) struct Copies<Res, A> {
    copies: Box<[Arc<Shared<Res, A>>]>,
    next: AtomicUsize,
}

impl<Res, A: Clone> Copies<Res, A> {
    pub(crate) fn new(policy: FallbackPolicy<Res>, answer: A) -> Self {
        let copies = (0..COPIES)
            .map(|_| {
                Arc::new(Shared {
                    policy: policy.clone(),
                    answer: answer.clone(),
                })
            })
            .collect();
        Self {
            copies,
            next: AtomicUsize::new(0),
        }
    }
}

impl<Res, A> Copies<Res, A> {
    /// The next copy in turn.
    pub(crate) fn take(&self) -> Arc<Shared<Res, A>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.copies.len();
        Arc::clone(&self.copies[i])
    }

    /// Any copy, to read the policy and the answer.
    pub(crate) fn first(&self) -> &Shared<Res, A> {
        &self.copies[0]
    }
}

/// A service whose chosen failures are answered by a fallback (see
/// [`FallbackLayer`](crate::FallbackLayer)).
pub struct FallbackService<S, Res, A, O = Plain> {
    inner: S,
    copies: Arc<Copies<Res, A>>,
    /// This service's copy of the shared state, which its calls take a reference to.
    shared: Arc<Shared<Res, A>>,
    _output: PhantomData<fn() -> O>,
}

// Written by hand: a clone takes the layer's next copy of the shared state rather than this
// service's, so that clones running on other threads do not write the same reference count
// on every call (see `Copies`).
impl<S: Clone, Res, A, O> Clone for FallbackService<S, Res, A, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.copies.take(),
            copies: Arc::clone(&self.copies),
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
    pub(crate) fn new(inner: S, copies: Arc<Copies<Res, A>>) -> Self {
        Self {
            inner,
            shared: copies.take(),
            copies,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Answer, FallbackLayer};
    use tower_layer::Layer;

    #[test]
    fn clones_take_the_copies_in_turn() {
        let policy = FallbackPolicy::<u32>::builder("x").build().unwrap();
        let layer = FallbackLayer::new(policy, Answer::value(0));
        let first = layer.layer(());
        let clones: Vec<_> = (0..COPIES).map(|_| first.clone()).collect();
        assert!(!Arc::ptr_eq(&first.shared, &clones[0].shared));
        assert!(!Arc::ptr_eq(&clones[0].shared, &clones[1].shared));
        // Sixteen copies, handed out in turn: the first service's comes round again.
        assert!(Arc::ptr_eq(&first.shared, &clones[COPIES - 1].shared));
        // Every copy answers for the same policy (one set of counters).
        assert!(Arc::ptr_eq(
            &first.shared.policy.inner,
            &clones[3].shared.policy.inner
        ));
    }
}
