//! Futures of the engine: [`Acquire`] (wait for a permit) and [`Run`] (run a future under one).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use staunch_core::{BulkheadFull, BulkheadFullReason, Outcome, instant_after};
use tokio::time::{Instant, Sleep};

use crate::bulkhead::{Bulkhead, Permit};
use crate::state::{Enqueue, Waiter};

/// Waits for a permit of a [`Bulkhead`]; returned by [`Bulkhead::acquire`].
///
/// The first poll takes a free permit without locking. Otherwise the caller joins the FIFO
/// queue (if `max_wait` is not zero and the queue is below `max_queued`) and waits until a
/// permit is handed to it or `max_wait` has passed, counted from that first poll.
///
/// # Panics
///
/// Waiting needs a tokio runtime with the time driver enabled; polling a call that has to
/// wait outside one panics (as `tokio::time::sleep` does). Polling again after completion
/// panics.
///
/// # Cancel safety
///
/// Dropping it gives up the place in the queue; a permit granted meanwhile passes on to the
/// next waiter.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire {
    bulkhead: Bulkhead,
    deadline: Option<Instant>,
    state: State,
}

enum State {
    Start,
    Waiting {
        waiter: Arc<Waiter>,
        // Boxed so `Acquire` is `Unpin`; only callers that must wait pay for it.
        sleep: Pin<Box<Sleep>>,
        since: Instant,
    },
    Done,
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Start => "start",
            State::Waiting { .. } => "waiting",
            State::Done => "done",
        };
        f.debug_struct("Acquire")
            .field("bulkhead", &self.bulkhead.name())
            .field("state", &state)
            .finish()
    }
}

impl Acquire {
    /// `deadline` overrides `now + max_wait` (a partition's global stage shares the deadline
    /// of its key stage).
    pub(crate) fn new(bulkhead: Bulkhead, deadline: Option<Instant>) -> Self {
        Self {
            bulkhead,
            deadline,
            state: State::Start,
        }
    }

    /// The deadline of the wait, once the caller had to wait.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    fn granted(&mut self) -> Poll<Result<Permit, BulkheadFull>> {
        self.state = State::Done;
        Poll::Ready(Ok(Permit::new(&self.bulkhead)))
    }

    fn rejected(&mut self, reason: BulkheadFullReason) -> Poll<Result<Permit, BulkheadFull>> {
        self.state = State::Done;
        Poll::Ready(Err(self.bulkhead.inner.reject(reason)))
    }
}

impl Future for Acquire {
    type Output = Result<Permit, BulkheadFull>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = Arc::clone(&this.bulkhead.inner);
        loop {
            match &mut this.state {
                State::Start => {
                    if inner.permits.try_acquire() {
                        return this.granted();
                    }
                    if inner.max_wait.is_zero() {
                        return this.rejected(BulkheadFullReason::NoPermit);
                    }
                    match inner.permits.enqueue(inner.max_queued) {
                        Enqueue::Acquired => return this.granted(),
                        Enqueue::QueueFull => return this.rejected(BulkheadFullReason::QueueFull),
                        Enqueue::Queued(waiter) => {
                            let now = Instant::now();
                            let deadline = *this
                                .deadline
                                .get_or_insert_with(|| instant_after(now, inner.max_wait));
                            this.state = State::Waiting {
                                waiter,
                                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                                since: now,
                            };
                        }
                    }
                }
                State::Waiting {
                    waiter,
                    sleep,
                    since,
                } => {
                    if waiter.register(cx.waker()) {
                        inner.record_wait(since.elapsed(), true);
                        return this.granted();
                    }
                    ready!(sleep.as_mut().poll(cx));
                    // Deadline. A grant may have raced with the timer: keep it if so.
                    let waited = since.elapsed();
                    let granted = inner.permits.withdraw(waiter, true);
                    inner.record_wait(waited, granted);
                    if granted {
                        return this.granted();
                    }
                    return this.rejected(BulkheadFullReason::WaitTimedOut(inner.max_wait));
                }
                State::Done => panic!("`Acquire` polled after completion"),
            }
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let State::Waiting { waiter, .. } = &self.state {
            self.bulkhead.inner.permits.withdraw(waiter, false);
        }
    }
}

pin_project! {
    /// Runs a future under a permit; returned by [`Bulkhead::run`].
    ///
    /// Resolves to `Ok(output)`, or to `Err(BulkheadFull)` without ever polling the future.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the future first and only then releases the permit (or the place in
    /// the queue): a cancelled call's destructor still runs inside the bulkhead, so no queued
    /// call starts while it does.
    #[must_use = "futures do nothing unless polled"]
    pub struct Run<F> {
        // Declared first so that it is dropped first (fields drop in declaration order): the
        // permit must outlive everything the future's destructor does.
        #[pin]
        future: F,
        acquire: Acquire,
        permit: Option<Permit>,
    }
}

impl<F> fmt::Debug for Run<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("bulkhead", &self.acquire.bulkhead().name())
            .field("running", &self.permit.is_some())
            .finish()
    }
}

impl<F> Run<F> {
    pub(crate) fn new(acquire: Acquire, future: F) -> Self {
        Self {
            future,
            acquire,
            permit: None,
        }
    }
}

impl<F: Future> Future for Run<F> {
    type Output = Result<F::Output, BulkheadFull>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.permit.is_none() {
            match ready!(Pin::new(this.acquire).poll(cx)) {
                Ok(permit) => *this.permit = Some(permit),
                Err(full) => return Poll::Ready(Err(full)),
            }
        }
        let output = ready!(this.future.poll(cx));
        if let Some(permit) = this.permit.take() {
            permit.record(Outcome::Success);
        }
        Poll::Ready(Ok(output))
    }
}
