//! The retry state machine shared by the tower service and [`RetryPolicy::retry`].
//!
//! One attempt runs at a time. The machine is `Running` while an attempt's future is set,
//! `Waiting` while the backoff timer runs, and `Readying` while it waits for the inner service
//! to accept the next attempt. A single `Sleep` serves as the attempt timer and the backoff
//! timer; it is created only when an attempt does not finish on its first poll or a retry is
//! due, so a call that succeeds at once reads no clock and arms no timer. The one exception:
//! with a backoff `max_elapsed`, which counts from the first attempt's start, a call that may
//! be retried reads the clock when it starts (there is no later moment at which that start
//! can be known).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use staunch_core::{BackoffSchedule, instant_after, rejection_of};
use staunch_timeout::Elapsed;
use tokio::time::{Instant, Sleep};

use crate::BoxError;
use crate::classify::{RetryClassify, Verdict};
use crate::config::{Limits, RetryPolicy};
use crate::error::RetryExhausted;
use crate::metrics::{GiveUp, GiveUpReason, Retrying};

/// The source of attempts: a service and a copy of the request, or a closure.
pub(crate) trait Attempts<Fut> {
    /// Waits until another attempt can start. `template` is the handle's
    /// [`template`](Handle::template), if it has one.
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        template: Option<&Template>,
    ) -> Poll<Result<(), BoxError>>;

    /// Whether another attempt can be made (the request could be copied).
    fn can_replay(&self) -> bool;

    /// Starts the next attempt; `keep_copy` says whether yet another may follow it.
    fn next(&mut self, keep_copy: bool) -> Option<Fut>;

    /// The caller's deadline, if known: no retry waits past it.
    fn deadline(&self) -> Option<Instant>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The first attempt is running and nothing else was needed yet: the fast path.
    First,
    /// No timer is running.
    Idle,
    /// The running attempt must finish by the timer; `limit` is what `Elapsed` reports, and
    /// `overall` says the overall deadline (not the attempt timeout) set it.
    Attempt { limit: Duration, overall: bool },
    /// Waiting before the next attempt.
    Backoff,
    /// Waiting for the inner service to accept the next attempt, until the overall deadline.
    Readying,
}

/// What every call holds until it finishes: the policy (its limits time the attempt), the
/// classifier, and for the tower service the kept clone of the inner service.
///
/// The clones of a [`Retry`](crate::Retry) share one `Arc<Handle>`; each response future
/// holds a reference to it, recycled through the thread's spare (see
/// `crate::spare`) so that a call does not change the reference count. The alignment keeps
/// the count off the cache lines of neighbouring allocations.
#[repr(align(128))]
pub(crate) struct Handle<C> {
    pub(crate) policy: RetryPolicy,
    pub(crate) classify: C,
    /// For the tower service: a `Mutex<S>` holding a clone of the inner service, which a
    /// retry clones to make its attempt, so that a call which is not retried never clones the
    /// inner service. `None` for closures.
    pub(crate) template: Option<Box<Template>>,
    /// How many `Retry` services hold this handle (0 for closures): once none does, a
    /// finished call's reference is dropped rather than kept as a spare.
    pub(crate) services: AtomicUsize,
}

/// A type-erased [`Handle::template`].
pub(crate) type Template = dyn std::any::Any + Send + Sync;

/// The backoff schedule, drawn on the first retry only (seeding its RNG is not free).
type Schedule = Option<Box<BackoffSchedule>>;

pin_project! {
    /// The retry state machine.
    pub(crate) struct Machine<A, Fut, C> {
        #[pin]
        attempt: Option<Fut>,
        #[pin]
        sleep: Option<Sleep>,
        timer: Timer,
        attempts: A,
        // Whether this call may be retried at all; when not, its result is returned as it is.
        retryable: bool,
        made: u32,
        // The policy (its limits included) and the classifier; taken when the call finishes.
        handle: Option<Arc<Handle<C>>>,
        started: Option<Instant>,
        schedule: Schedule,
    }
}

enum Next<T> {
    Return(T),
    Wait(Instant),
}

impl<A, Fut, C> std::fmt::Debug for Machine<A, Fut, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("running", &self.attempt.is_some())
            .field("timer", &self.timer)
            .field("attempts_made", &self.made)
            .finish_non_exhaustive()
    }
}

impl<A, Fut, C> Machine<A, Fut, C> {
    /// A machine whose first attempt is already running.
    #[inline]
    pub(crate) fn running(
        first: Fut,
        attempts: A,
        retryable: bool,
        handle: Arc<Handle<C>>,
    ) -> Self {
        let started = start_clock(retryable, &handle.policy.limits);
        Self {
            attempt: Some(first),
            sleep: None,
            timer: Timer::First,
            attempts,
            retryable,
            made: 1,
            handle: Some(handle),
            started,
            schedule: None,
        }
    }

    /// The attempts source, to configure before the first poll.
    pub(crate) fn attempts_mut(&mut self) -> &mut A {
        &mut self.attempts
    }

    /// Takes the policy handle out of a finished machine.
    #[inline]
    pub(crate) fn take_handle(self: Pin<&mut Self>) -> Option<Arc<Handle<C>>> {
        self.project().handle.take()
    }

    /// A machine that starts its first attempt when the attempts source is ready.
    pub(crate) fn idle(attempts: A, handle: Arc<Handle<C>>) -> Self {
        let started = start_clock(true, &handle.policy.limits);
        Self {
            attempt: None,
            sleep: None,
            timer: Timer::Idle,
            attempts,
            retryable: true,
            made: 0,
            handle: Some(handle),
            started,
            schedule: None,
        }
    }
}

impl<A, Fut, C, T, E> Machine<A, Fut, C>
where
    A: Attempts<Fut>,
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: RetryClassify<T>,
{
    #[inline]
    pub(crate) fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, BoxError>> {
        let mut this = self.project();
        // What the fast path learnt from polling the first attempt, for the slow path.
        let mut polled = None;
        if *this.timer == Timer::First
            && let Some(fut) = this.attempt.as_mut().as_pin_mut()
        {
            // The fast path: the first attempt, before any timer or retry was needed.
            match fut.poll(cx) {
                Poll::Ready(Ok(response)) => {
                    let verdict = match this.handle.as_deref() {
                        Some(handle) if *this.retryable => handle.classify.classify(Ok(&response)),
                        _ => Verdict::Done,
                    };
                    if verdict == Verdict::Done {
                        this.attempt.set(None);
                        return Poll::Ready(Ok(response));
                    }
                    polled = Some(Poll::Ready((Ok(response), Some(verdict))));
                }
                Poll::Ready(Err(e)) => {
                    if !*this.retryable {
                        this.attempt.set(None);
                        return Poll::Ready(Err(e.into()));
                    }
                    polled = Some(Poll::Ready((Err(e.into()), None)));
                }
                Poll::Pending => {
                    let limits = limits_of(this.handle.as_deref());
                    if limits.attempt_timeout.is_none() && limits.max_total_time.is_none() {
                        return Poll::Pending;
                    }
                    polled = Some(Poll::Pending);
                }
            }
        }
        if *this.timer == Timer::First {
            *this.timer = Timer::Idle;
        }
        loop {
            if let Some(fut) = this.attempt.as_mut().as_pin_mut() {
                // `classified`: the verdict on a response, when the fast path took it.
                let (result, overall, classified) = match polled.take().unwrap_or_else(|| {
                    fut.poll(cx)
                        .map(|result| (result.map_err(Into::into), None))
                }) {
                    Poll::Ready((result, classified)) => (result, false, classified),
                    Poll::Pending => {
                        if *this.timer == Timer::Idle {
                            arm_attempt_timer(
                                limits_of(this.handle.as_deref()),
                                this.started,
                                this.timer,
                                this.sleep.as_mut(),
                            );
                        }
                        let Timer::Attempt { limit, overall } = *this.timer else {
                            return Poll::Pending;
                        };
                        let Some(sleep) = this.sleep.as_mut().as_pin_mut() else {
                            return Poll::Pending;
                        };
                        ready!(sleep.poll(cx));
                        tracing::debug!(?limit, overall, attempt = *this.made, "attempt timed out");
                        let err: BoxError = Box::new(Elapsed::new(limit));
                        (Err(err), overall, None)
                    }
                };
                // The attempt is over: drop it now (a response body, a connection) before
                // any wait.
                this.attempt.set(None);
                *this.timer = Timer::Idle;
                let next = decide::<A, Fut, C, T>(
                    result,
                    overall,
                    classified,
                    *this.made,
                    limits_of(this.handle.as_deref()),
                    this.handle.as_deref().filter(|_| *this.retryable),
                    this.started,
                    this.schedule,
                    this.attempts,
                );
                match next {
                    Next::Return(result) => return Poll::Ready(result),
                    Next::Wait(until) => {
                        set_sleep(this.sleep.as_mut(), until);
                        *this.timer = Timer::Backoff;
                    }
                }
            } else if *this.timer == Timer::Backoff {
                if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                    ready!(sleep.poll(cx));
                }
                *this.timer = Timer::Idle;
            } else {
                let template = this.handle.as_deref().and_then(|h| h.template.as_deref());
                match this.attempts.poll_ready(cx, template) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // The inner service is not ready (a full bulkhead below, a buffer):
                        // the overall deadline still holds while we wait for it.
                        let (Some(total), Some(start)) = (
                            limits_of(this.handle.as_deref()).max_total_time,
                            *this.started,
                        ) else {
                            return Poll::Pending;
                        };
                        if *this.timer != Timer::Readying {
                            set_sleep(this.sleep.as_mut(), instant_after(start, total));
                            *this.timer = Timer::Readying;
                        }
                        let Some(sleep) = this.sleep.as_mut().as_pin_mut() else {
                            return Poll::Pending;
                        };
                        ready!(sleep.poll(cx));
                        // A retry was due (the last attempt's result was dropped when its
                        // wait began): the deadline refused it.
                        let err: BoxError = Box::new(Elapsed::new(total));
                        let Some(handle) = this.handle.as_deref().filter(|_| *this.retryable)
                        else {
                            return Poll::Ready(Err(err));
                        };
                        let event = GiveUp {
                            attempts: *this.made,
                            reason: GiveUpReason::Deadline,
                        };
                        return Poll::Ready(give_up(Err(err), event, true, handle));
                    }
                }
                *this.timer = Timer::Idle;
                let keep_copy = *this.made + 1 < limits_of(this.handle.as_deref()).max_attempts;
                let Some(fut) = this.attempts.next(keep_copy) else {
                    // Only reachable if `can_replay` lied; nothing to send.
                    return Poll::Ready(Err("the request could not be replayed".into()));
                };
                *this.made += 1;
                tracing::trace!(attempt = *this.made, "starting attempt");
                this.attempt.set(Some(fut));
            }
        }
    }
}

/// When a call starts: read only when the backoff's `max_elapsed` needs the first
/// attempt's start; otherwise the clock is first read when a timer or a retry needs it.
#[inline]
fn start_clock(retryable: bool, limits: &Limits) -> Option<Instant> {
    if retryable && limits.clock_from_start {
        Some(Instant::now())
    } else {
        None
    }
}

/// The limits of the call's policy; none once the call has finished (a future polled again
/// after it finished does not retry).
#[inline]
fn limits_of<C>(handle: Option<&Handle<C>>) -> &Limits {
    static FINISHED: Limits = Limits {
        max_attempts: 1,
        attempt_timeout: None,
        max_total_time: None,
        retry_non_idempotent: false,
        clock_from_start: false,
    };
    handle.map_or(&FINISHED, |h| &h.policy.limits)
}

fn set_sleep(mut sleep: Pin<&mut Option<Sleep>>, until: Instant) {
    match sleep.as_mut().as_pin_mut() {
        Some(s) => s.reset(until),
        None => sleep.set(Some(tokio::time::sleep_until(until))),
    }
}

/// Arms the timer for a running attempt that did not finish on its first poll.
fn arm_attempt_timer(
    limits: &Limits,
    started: &mut Option<Instant>,
    timer: &mut Timer,
    sleep: Pin<&mut Option<Sleep>>,
) {
    if limits.attempt_timeout.is_none() && limits.max_total_time.is_none() {
        return;
    }
    let now = Instant::now();
    let start = *started.get_or_insert(now);
    let mut deadline = None;
    if let Some(limit) = limits.attempt_timeout {
        deadline = Some((instant_after(now, limit), limit, false));
    }
    if let Some(total) = limits.max_total_time {
        let end = instant_after(start, total);
        if deadline.is_none_or(|(d, _, _)| end < d) {
            deadline = Some((end, total, true));
        }
    }
    if let Some((until, limit, overall)) = deadline {
        set_sleep(sleep, until);
        *timer = Timer::Attempt { limit, overall };
    }
}

/// Decides what follows a finished attempt.
#[inline]
#[allow(clippy::too_many_arguments)]
fn decide<A: Attempts<Fut>, Fut, C: RetryClassify<T>, T>(
    result: Result<T, BoxError>,
    overall_elapsed: bool,
    classified: Option<Verdict>,
    made: u32,
    limits: &Limits,
    handle: Option<&Handle<C>>,
    started: &mut Option<Instant>,
    schedule: &mut Schedule,
    attempts: &A,
) -> Next<Result<T, BoxError>> {
    let Some(handle) = handle else {
        // This call could never be retried: return what it gave.
        return Next::Return(result);
    };
    // A result is classified once: a response was already, on the fast path.
    let verdict = if overall_elapsed {
        None
    } else {
        Some(classified.unwrap_or_else(|| handle.classify.classify(result.as_ref())))
    };
    if verdict == Some(Verdict::Done) {
        return Next::Return(result);
    }
    retry_or_give_up(
        result, verdict, made, limits, handle, started, schedule, attempts,
    )
}

/// Reports a give-up and returns the result, annotated when `event` calls for it (see
/// [`RetryExhausted`]): `due` says a retry was due when `event.reason` stopped it.
#[cold]
fn give_up<T, C: RetryClassify<T>>(
    result: Result<T, BoxError>,
    event: GiveUp,
    due: bool,
    handle: &Handle<C>,
) -> Result<T, BoxError> {
    handle.policy.shared.gave_up(event);
    if !event.annotates(due) {
        return result;
    }
    match result {
        Ok(mut response) => {
            handle.classify.annotate(&mut response, event);
            Ok(response)
        }
        Err(last) => Err(Box::new(RetryExhausted::from_event(event, last))),
    }
}

/// The slow path of [`decide`]: the attempt failed in a way that may be retried.
#[cold]
#[allow(clippy::too_many_arguments)]
fn retry_or_give_up<A: Attempts<Fut>, Fut, T, C: RetryClassify<T>>(
    result: Result<T, BoxError>,
    verdict: Option<Verdict>,
    made: u32,
    limits: &Limits,
    handle: &Handle<C>,
    started: &mut Option<Instant>,
    schedule: &mut Schedule,
    attempts: &A,
) -> Next<Result<T, BoxError>> {
    // From here on the attempt failed in a retryable way (or was cut by the deadline, or the
    // server said not to retry): the slow path. `due`: a retry was due and `reason` refused
    // it (as opposed to the attempt being cut short or the server saying not to retry).
    let stop = |result, reason, due| {
        let event = GiveUp {
            attempts: made,
            reason,
        };
        Next::Return(give_up(result, event, due, handle))
    };
    if let Err(e) = &result
        && let Some(rejection) = rejection_of(&**e)
    {
        tracing::trace!(?rejection, "not retrying a rejection");
        return stop(result, GiveUpReason::Rejected, false);
    }
    if let Err(e) = &result
        && RetryExhausted::find(&**e).is_some()
    {
        tracing::trace!("not retrying what an inner retry layer gave up on");
        return stop(result, GiveUpReason::InnerGaveUp, false);
    }
    let verdict = match verdict {
        None => return stop(result, GiveUpReason::Deadline, false),
        Some(Verdict::DoNotRetry) => return stop(result, GiveUpReason::ServerPushback, false),
        Some(v) => v,
    };
    if made >= limits.max_attempts {
        return stop(result, GiveUpReason::MaxAttempts, false);
    }
    if !attempts.can_replay() {
        return stop(result, GiveUpReason::NotReplayable, false);
    }
    let shared = &handle.policy.shared;
    let now = Instant::now();
    let start = *started.get_or_insert(now);
    let elapsed = now.saturating_duration_since(start);
    let (delay, server_hint) = if let Verdict::RetryAfter(hint) = verdict {
        (hint.min(shared.max_retry_after), true)
    } else {
        let schedule = schedule.get_or_insert_with(|| Box::new(shared.backoff.schedule()));
        match schedule.next_delay_after(elapsed) {
            Some(d) => (d, false),
            None => return stop(result, GiveUpReason::BackoffEnded, true),
        }
    };
    if let Some(total) = limits.max_total_time
        && elapsed.saturating_add(delay) >= total
    {
        return stop(result, GiveUpReason::Deadline, true);
    }
    // The caller's deadline: a wait that would end at or past it is not started, and the
    // last result (not a timeout of the attempt that would follow) is returned.
    if let Some(deadline) = attempts.deadline()
        && instant_after(now, delay) >= deadline
    {
        return stop(result, GiveUpReason::Deadline, true);
    }
    if !shared.budget.try_withdraw() {
        return stop(result, GiveUpReason::BudgetExhausted, true);
    }
    shared.retried(&Retrying {
        attempt: made,
        delay,
        server_hint,
    });
    drop(result);
    Next::Wait(instant_after(now, delay))
}
