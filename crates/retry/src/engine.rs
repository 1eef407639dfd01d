//! The retry state machine shared by the tower service and [`RetryPolicy::retry`].
//!
//! One attempt runs at a time. The machine is `Running` while an attempt's future is set,
//! `Waiting` while the backoff timer runs, and `Readying` while it waits for the inner service
//! to accept the next attempt. A single `Sleep` serves as the attempt timer and the backoff
//! timer; it is created only when an attempt does not finish on its first poll or a retry is
//! due, so a call that succeeds at once reads no clock and arms no timer. The one exception:
//! with a backoff `max_elapsed`, which counts from the first attempt's start, a call that may
//! be retried reads the clock when it starts (there is no later moment at which that start
//! can be known). With `attempts_cut_by`, a running attempt that the time limit inside the
//! retry ends first gets no timer at all (`CutInside`): that limit's timer is the call's only
//! one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
use crate::telemetry::{CallOutcome, CallTelemetry};

/// The source of attempts: a service and a copy of the request, or a closure.
pub(crate) trait Attempts<Fut> {
    /// Waits until another attempt can start.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>;

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
    /// The running attempt has no timer: the time limit inside the retry
    /// (`attempts_cut_by`) ends it before any limit of the retry's own would.
    CutInside,
    /// Waiting before the next attempt.
    Backoff,
    /// Waiting for the inner service to accept the next attempt, until the overall deadline.
    Readying,
    /// The call returned its result. Polling again breaks the `Future` contract; it is
    /// answered with an error rather than a new attempt or a panic.
    Finished,
}

/// A retry policy with the classifier that decides what it retries.
///
/// The clones of a [`Retry`](crate::Retry) share one, and a call that may be retried holds a
/// reference to it until it finishes: a retry may happen after the service that made the call
/// was dropped (tower's `oneshot` drops it before polling). A call that cannot be retried
/// holds none.
pub(crate) struct ClassifiedPolicy<C> {
    pub(crate) policy: RetryPolicy,
    pub(crate) classify: C,
}

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
        // A copy of the policy's limits: they time every attempt, retried or not.
        limits: Limits,
        made: u32,
        // The policy and the classifier, for a call that may be retried; `None` for one that
        // cannot (its result is returned as it is). Dropped when the call finishes.
        policy: Option<Arc<ClassifiedPolicy<C>>>,
        started: Option<Instant>,
        schedule: Schedule,
        telemetry: CallTelemetry,
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
    /// A machine whose first attempt is already running; `policy` is `None` when the call
    /// cannot be retried.
    #[inline]
    pub(crate) fn running(
        first: Fut,
        attempts: A,
        limits: Limits,
        policy: Option<Arc<ClassifiedPolicy<C>>>,
    ) -> Self {
        let started = start_clock(policy.is_some(), &limits);
        Self {
            attempt: Some(first),
            sleep: None,
            timer: Timer::First,
            attempts,
            limits,
            made: 1,
            policy,
            started,
            schedule: None,
            telemetry: CallTelemetry::default(),
        }
    }

    /// Sets what the call reports (its span, its metrics).
    #[inline]
    pub(crate) fn with_telemetry(mut self, telemetry: CallTelemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The attempts source, to configure before the first poll.
    pub(crate) fn attempts_mut(&mut self) -> &mut A {
        &mut self.attempts
    }

    /// A machine that starts its first attempt when the attempts source is ready.
    pub(crate) fn idle(attempts: A, policy: Arc<ClassifiedPolicy<C>>) -> Self {
        let limits = policy.policy.limits;
        let started = start_clock(true, &limits);
        Self {
            attempt: None,
            sleep: None,
            timer: Timer::Idle,
            attempts,
            limits,
            made: 0,
            policy: Some(policy),
            started,
            schedule: None,
            telemetry: CallTelemetry::default(),
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
    pub(crate) fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, BoxError>> {
        if self.timer == Timer::Finished {
            return Poll::Ready(Err("a retry future was polled after it completed".into()));
        }
        let out = match self.telemetry.span() {
            None => self.as_mut().poll_attempts(cx),
            Some(span) => {
                let span = span.clone();
                let _entered = span.enter();
                self.as_mut().poll_attempts(cx)
            }
        };
        if let Poll::Ready(result) = &out {
            let this = self.project();
            if this.telemetry.is_active() {
                report(this.telemetry, *this.made, result, this.policy.as_deref());
            }
            *this.timer = Timer::Finished;
            // A finished call lets go of the policy (its hooks, its classifier) at once,
            // whenever the future itself is dropped.
            *this.policy = None;
        }
        out
    }

    #[inline]
    fn poll_attempts(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, BoxError>> {
        let mut this = self.project();
        // What the fast path learnt from polling the first attempt, for the slow path.
        let mut polled = None;
        if *this.timer == Timer::First
            && let Some(fut) = this.attempt.as_mut().as_pin_mut()
        {
            // The fast path: the first attempt, before any timer or retry was needed.
            match fut.poll(cx) {
                Poll::Ready(Ok(response)) => {
                    let verdict = match this.policy.as_deref() {
                        Some(policy) => policy.classify.classify(Ok(&response)),
                        None => Verdict::Done,
                    };
                    if verdict == Verdict::Done {
                        this.attempt.set(None);
                        return Poll::Ready(Ok(response));
                    }
                    polled = Some(Poll::Ready((Ok(response), Some(verdict))));
                }
                Poll::Ready(Err(e)) => {
                    if this.policy.is_none() {
                        this.attempt.set(None);
                        return Poll::Ready(Err(e.into()));
                    }
                    polled = Some(Poll::Ready((Err(e.into()), None)));
                }
                Poll::Pending => {
                    let limits = &this.limits;
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
                                this.limits,
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
                    this.limits,
                    this.policy.as_deref(),
                    this.started,
                    this.schedule,
                    this.attempts,
                );
                match next {
                    Next::Return(result) => return Poll::Ready(result),
                    Next::Wait(until) => {
                        if this.telemetry.span().is_some() {
                            let backoff = until.saturating_duration_since(Instant::now());
                            this.telemetry.retrying(*this.made, backoff);
                        }
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
                match this.attempts.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // The inner service is not ready (a full bulkhead below, a buffer):
                        // the overall deadline still holds while we wait for it.
                        let (Some(total), Some(start)) =
                            (this.limits.max_total_time, *this.started)
                        else {
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
                        let Some(policy) = this.policy.as_deref() else {
                            return Poll::Ready(Err(err));
                        };
                        let event = GiveUp {
                            attempts: *this.made,
                            reason: GiveUpReason::Deadline,
                        };
                        return Poll::Ready(give_up(Err(err), event, true, policy));
                    }
                }
                *this.timer = Timer::Idle;
                let keep_copy = *this.made + 1 < this.limits.max_attempts;
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

/// Reports how a call ended to its span and metrics.
fn report<T, C: RetryClassify<T>>(
    telemetry: &mut CallTelemetry,
    made: u32,
    result: &Result<T, BoxError>,
    policy: Option<&ClassifiedPolicy<C>>,
) {
    let (outcome, error) = match result {
        // A response the classifier still wanted retried (the attempts ran out on a 503) is
        // a failed call; classified again only here, when the call is observed. A call that
        // could not be retried has no classifier: its response counts as a success.
        Ok(response) => match policy.map(|p| p.classify.classify(Ok(response))) {
            Some(Verdict::Done) | None => (CallOutcome::Success, None),
            Some(_) => (CallOutcome::Failure, None),
        },
        Err(e) if rejection_of(&**e).is_some() => (CallOutcome::Rejected, Some(e)),
        Err(e) => (CallOutcome::Failure, Some(e)),
    };
    telemetry.finish(made, outcome, error);
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
        if let Some(inner) = limits.attempts_cut_by
            && instant_after(now, inner) <= until
        {
            // The inner limit started its clock no later than `now`, so it ends the attempt
            // first: timing it here too would only cost a second timer.
            *timer = Timer::CutInside;
            return;
        }
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
    policy: Option<&ClassifiedPolicy<C>>,
    started: &mut Option<Instant>,
    schedule: &mut Schedule,
    attempts: &A,
) -> Next<Result<T, BoxError>> {
    let Some(policy) = policy else {
        // This call could never be retried: return what it gave.
        return Next::Return(result);
    };
    // A result is classified once: a response was already, on the fast path.
    let verdict = if overall_elapsed {
        None
    } else {
        Some(classified.unwrap_or_else(|| policy.classify.classify(result.as_ref())))
    };
    if verdict == Some(Verdict::Done) {
        return Next::Return(result);
    }
    retry_or_give_up(
        result, verdict, made, limits, policy, started, schedule, attempts,
    )
}

/// Reports a give-up and returns the result, annotated when `event` calls for it (see
/// [`RetryExhausted`]): `due` says a retry was due when `event.reason` stopped it.
#[cold]
fn give_up<T, C: RetryClassify<T>>(
    result: Result<T, BoxError>,
    event: GiveUp,
    due: bool,
    policy: &ClassifiedPolicy<C>,
) -> Result<T, BoxError> {
    policy.policy.shared.gave_up(event);
    if !event.annotates(due) {
        return result;
    }
    match result {
        Ok(mut response) => {
            policy.classify.annotate(&mut response, event);
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
    policy: &ClassifiedPolicy<C>,
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
        Next::Return(give_up(result, event, due, policy))
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
    let shared = &policy.policy.shared;
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
