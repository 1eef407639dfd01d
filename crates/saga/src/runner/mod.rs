//! Drives one saga: runs the next action or compensation its progress calls for, appending
//! every transition to the store before the next call starts.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::Instrument;

use crate::context::{Phase, StepContext};
use crate::definition::{DefinitionInner, OnCancel, OnInterrupted, SagaState, StepFn, StepKind};
use crate::error::{LoadError, SagaError, StepError, StepErrorKind, panic_message};
use crate::event::SagaEvent;
use crate::outcome::RawOutcome;
use crate::replay::{Progress, Stage};
use crate::shared::{Control, OperatorRequest, Shared};
use crate::store::Append;

mod parallel;
mod retry;

use retry::Retries;

/// The longest stored backoff a resumed saga waits out (see `Runner::stored_backoff`).
const MAX_STORED_BACKOFF: Duration = Duration::from_hours(24);

pub(crate) fn to_raw<S: SagaState>(state: &S) -> Result<Box<RawValue>, SagaError> {
    serde_json::value::to_raw_value(state).map_err(|e| SagaError::State(e.to_string()))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The only writer of one saga's log while it runs here.
pub(crate) struct Runner<S: SagaState> {
    shared: Arc<Shared>,
    def: Arc<DefinitionInner<S>>,
    id: Arc<str>,
    state: S,
    progress: Progress,
    /// Encoded events recorded but not yet appended.
    pending: Vec<String>,
    /// Sequence number of the first pending event.
    flushed: u64,
    /// A step whose open attempt this runner logged itself (not an interrupted one).
    prelogged: Option<u32>,
    deadline: Option<Instant>,
    /// An event this runner recorded broke a log rule (an engine bug): nothing more is
    /// appended, and the saga is marked stuck with this error.
    broken: Option<LoadError>,
    /// The summary may disagree with the log (resumed from a log that is already stuck or
    /// settled): the first flush writes the status even without rows.
    resync: bool,
    /// Resumed from a log that had already ended (stuck or settled): its outcome was
    /// counted when it happened, so driving it counts nothing.
    settled: bool,
    /// Where operators' cancel and pause requests for this saga are signalled.
    control: Arc<Control>,
    /// Read the stored request at the next step boundary even without a signal (a resumed
    /// saga: the request may have been made while no runner drove it).
    check_request: bool,
}

impl<S: SagaState> Runner<S> {
    /// A runner for a new saga; the `started` event (and the first attempt's) are pending.
    pub(crate) fn new(
        shared: Arc<Shared>,
        def: Arc<DefinitionInner<S>>,
        id: Arc<str>,
        input: S,
    ) -> Result<Self, SagaError> {
        let started = SagaEvent::Started {
            definition: def.name.to_string(),
            version: def.version,
            input: to_raw(&input)?,
            started_at_ms: now_ms(),
        };
        let progress =
            Progress::started(&started, def.steps.len()).map_err(|error| SagaError::Load {
                saga_id: id.to_string(),
                error,
            })?;
        // Saturating: a deadline too far to represent is no deadline.
        let deadline = def.deadline.and_then(|d| Instant::now().checked_add(d));
        let control = shared.control(&id);
        let mut runner = Self {
            control,
            check_request: false,
            shared,
            def,
            id,
            state: input,
            progress,
            pending: vec![started.encode()],
            flushed: 0,
            prelogged: None,
            deadline,
            broken: None,
            resync: false,
            settled: false,
        };
        if runner.def.steps.first().is_some_and(|s| s.group.is_none()) {
            runner.record(SagaEvent::StepStarted {
                step: 0,
                attempt: 1,
            });
            runner.prelogged = Some(0);
        }
        Ok(runner)
    }

    /// A runner resuming from a replayed log.
    pub(crate) fn resume(
        shared: Arc<Shared>,
        def: Arc<DefinitionInner<S>>,
        id: Arc<str>,
        progress: Progress,
    ) -> Result<Self, String> {
        let state: S = serde_json::from_str(progress.state.get())
            .map_err(|e| format!("the saga state does not decode: {e}"))?;
        // Group members' stored results are decoded again by the join: check them now, so a
        // bad one quarantines the saga instead of stopping every resumed runner.
        for (i, p) in progress.steps.iter().enumerate() {
            if let Some(m) = &p.member {
                for raw in [&m.state, &m.state_before] {
                    serde_json::from_str::<S>(raw.get()).map_err(|e| {
                        format!("the stored result of group member {i} does not decode: {e}")
                    })?;
                }
            }
        }
        let deadline = def.deadline.and_then(|d| {
            let spent = Duration::from_millis(now_ms().saturating_sub(progress.started_at_ms));
            Instant::now().checked_add(d.saturating_sub(spent))
        });
        let resync = !matches!(progress.stage, Stage::Forward | Stage::Compensating);
        Ok(Self {
            control: shared.control(&id),
            check_request: true,
            resync,
            settled: resync,
            shared,
            def,
            id,
            state,
            flushed: progress.next_seq,
            progress,
            pending: Vec::new(),
            prelogged: None,
            deadline,
            broken: None,
        })
    }

    /// The events [`new`](Self::new) recorded (`started`, and the first attempt when the
    /// first step is not in a group), for the caller to write with
    /// [`SagaStore::create`](crate::SagaStore::create); from then on they count as appended.
    pub(crate) fn take_first_events(&mut self) -> Vec<String> {
        self.flushed = self.progress.next_seq;
        std::mem::take(&mut self.pending)
    }

    /// Whether the replayed log had already ended before this runner drove it.
    pub(crate) fn replayed_settled(&self) -> bool {
        self.settled
    }

    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub(crate) fn definition(&self) -> &Arc<DefinitionInner<S>> {
        &self.def
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether the runner stopped because it recorded an invalid event (an engine bug).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    pub(crate) fn record(&mut self, event: SagaEvent) {
        if self.broken.is_some() {
            return;
        }
        // The runner only records events valid for its progress; if one is not (a bug), it
        // is not written, and the next flush stops the runner so the saga gets marked.
        match self.progress.apply(&event) {
            Ok(()) => self.pending.push(event.encode()),
            Err(error) => {
                tracing::error!(saga_id = %self.id, %error, "the runner recorded an invalid event");
                self.broken = Some(error);
            }
        }
    }

    pub(crate) async fn flush(&mut self) -> Result<(), SagaError> {
        if let Some(error) = &self.broken {
            return Err(SagaError::Load {
                saga_id: self.id.to_string(),
                error: error.clone(),
            });
        }
        if self.pending.is_empty() && !self.resync {
            return Ok(());
        }
        self.resync = false;
        let (status, note) = self.progress.status();
        let events = std::mem::take(&mut self.pending);
        let append =
            Append::new(Arc::clone(&self.id), self.flushed, events, status).with_note(note);
        self.shared.store().append(append).await?;
        self.flushed = self.progress.next_seq;
        Ok(())
    }

    pub(crate) fn pivot_done(&self) -> bool {
        self.def
            .steps
            .iter()
            .zip(&self.progress.steps)
            .any(|(d, p)| d.kind == StepKind::Pivot && p.completed)
    }

    fn next_forward(&self) -> Option<u32> {
        (0..self.def.steps.len())
            .find(|&i| !self.progress.steps.get(i).is_some_and(|p| p.completed))
            .map(|i| i as u32)
    }

    fn next_compensation(&self) -> Option<u32> {
        (0..self.def.steps.len())
            .rev()
            .find(|&i| {
                let p = self.progress.steps.get(i);
                self.def.steps[i].compensation.is_some()
                    && p.is_some_and(|p| (p.completed || p.in_doubt) && !p.compensated)
            })
            .map(|i| i as u32)
    }

    pub(crate) fn step_name(&self, step: u32) -> String {
        // Stored indexes are checked on replay; a fallback keeps this total anyway.
        self.def
            .steps
            .get(step as usize)
            .map_or_else(|| format!("#{step}"), |s| s.name.to_string())
    }

    /// The last stored state, as stored (no second serialization that could fail).
    fn stored_state(&self) -> Arc<RawValue> {
        Arc::from(self.progress.state.clone())
    }

    /// Attempts of `step` started so far, in `phase`.
    pub(crate) fn attempts(&self, step: u32, phase: Phase) -> u32 {
        self.progress
            .steps
            .get(step as usize)
            .map_or(0, |p| match phase {
                Phase::Action => p.action_attempts,
                Phase::Compensate => p.comp_attempts,
            })
    }

    /// An attempt succeeded but its output cannot be serialized, so it cannot be stored. The
    /// effect happened: the saga is stuck for an operator instead of running it again on the
    /// next recovery.
    pub(crate) fn unstorable(&mut self, step: u32, phase: Phase, attempt: u32, error: &SagaError) {
        let error = StepError::new(StepErrorKind::Unstorable, error.to_string());
        tracing::warn!(saga_id = %self.id, step, %phase, %error, "step output cannot be stored: saga is stuck");
        self.record(failed_event(
            phase,
            step,
            attempt,
            StepErrorKind::Unstorable,
            error.message().to_owned(),
            None,
        ));
        self.record(SagaEvent::Stuck {
            step,
            phase,
            error: error.to_string(),
        });
    }

    /// An attempt counter that cannot count further: the saga is stuck on that step.
    fn counter_exhausted(&mut self, step: u32, phase: Phase) {
        self.record(SagaEvent::Stuck {
            step,
            phase,
            error: "the attempt counter is exhausted".into(),
        });
    }

    /// Runs until the saga ends or gets stuck, flushing every transition.
    pub(crate) async fn drive(&mut self) -> Result<RawOutcome, SagaError> {
        if self.resync {
            // Resumed from a log that is already stuck or settled: the summary follows it.
            self.flush().await?;
        }
        loop {
            if let Some(stop) = self.at_boundary().await? {
                return Ok(stop);
            }
            match self.progress.stage.clone() {
                Stage::Forward => {
                    if let Some(i) = self.next_forward() {
                        match self.def.steps.get(i as usize).and_then(|s| s.group) {
                            Some(g) => self.forward_group(g).await?,
                            None => self.run_step(i, Phase::Action).await?,
                        }
                    } else {
                        self.record(SagaEvent::Completed);
                        self.flush().await?;
                        return Ok(RawOutcome::Completed(self.stored_state()));
                    }
                }
                Stage::Compensating => {
                    self.close_open_actions();
                    if let Some(j) = self.next_compensation() {
                        match self.parallel_compensation(j) {
                            Some(g) => self.compensate_group(g).await?,
                            None => self.run_step(j, Phase::Compensate).await?,
                        }
                    } else if let Some(reason) = self.progress.cancelled.clone() {
                        self.record(SagaEvent::Cancelled {
                            reason: reason.clone(),
                        });
                        self.flush().await?;
                        return Ok(RawOutcome::Cancelled {
                            reason,
                            state: self.stored_state(),
                        });
                    } else {
                        let (failed_step, error) =
                            self.progress.compensation.clone().unwrap_or_default();
                        self.record(SagaEvent::Compensated {
                            failed_step,
                            error: error.clone(),
                        });
                        self.flush().await?;
                        return Ok(RawOutcome::Compensated {
                            failed_step: self.step_name(failed_step),
                            error,
                            state: self.stored_state(),
                        });
                    }
                }
                Stage::Stuck { step, phase, error } => {
                    self.flush().await?;
                    return Ok(RawOutcome::Stuck {
                        step: self.step_name(step),
                        phase,
                        error,
                    });
                }
                Stage::Completed => {
                    return Ok(RawOutcome::Completed(self.stored_state()));
                }
                Stage::Compensated => {
                    let (failed_step, error) =
                        self.progress.compensation.clone().unwrap_or_default();
                    return Ok(RawOutcome::Compensated {
                        failed_step: self.step_name(failed_step),
                        error,
                        state: self.stored_state(),
                    });
                }
                Stage::Resolved { note } => return Ok(RawOutcome::Resolved { note }),
                Stage::Cancelled => {
                    return Ok(RawOutcome::Cancelled {
                        reason: self.progress.cancelled.clone().unwrap_or_default(),
                        state: self.stored_state(),
                    });
                }
                Stage::Paused { .. } => return Ok(RawOutcome::Paused),
            }
        }
    }

    /// At a step boundary: acts on an operator's request for this saga, if one was made
    /// since the last boundary (signalled here, seen by the store's heartbeat, or found
    /// stored when the saga was resumed). `Some` when the runner stops here (paused).
    async fn at_boundary(&mut self) -> Result<Option<RawOutcome>, SagaError> {
        let signalled = self.control.take();
        let seen = self.shared.store().request_seen(&self.id);
        if !(std::mem::take(&mut self.check_request) || signalled || seen) {
            return Ok(None);
        }
        let Some(stored) = self.shared.store().request(&self.id).await? else {
            return Ok(None);
        };
        let Some(request) = OperatorRequest::decode(&stored) else {
            tracing::warn!(saga_id = %self.id, stored, "an operator request that does not decode is ignored");
            return Ok(None);
        };
        match (request, &self.progress.stage) {
            (OperatorRequest::Cancel { reason, actor }, Stage::Forward) if !self.pivot_done() => {
                tracing::info!(saga_id = %self.id, reason, actor, "saga cancelled: compensating");
                self.record(SagaEvent::CancelBegan { reason, actor });
                Ok(None)
            }
            (OperatorRequest::Pause { actor }, Stage::Forward | Stage::Compensating) => {
                tracing::info!(saga_id = %self.id, actor, "saga paused");
                self.record(SagaEvent::Paused { actor });
                self.flush().await?;
                Ok(Some(RawOutcome::Paused))
            }
            (request, stage) => {
                // Made before the saga moved on (past its pivot, into compensation, or
                // already cancelled): nothing to do.
                tracing::debug!(saga_id = %self.id, ?request, ?stage, "operator request no longer applies");
                Ok(None)
            }
        }
    }

    /// Runs an attempt of a step that aborts on cancel: `None` when a cancel of this saga is
    /// signalled first (the attempt is dropped). Any other request (a pause), or a request
    /// that cannot be read, lets the attempt finish.
    async fn unless_cancelled<T>(&self, call: impl Future<Output = T>) -> Option<T> {
        let mut call = std::pin::pin!(call);
        tokio::select! {
            biased;
            out = &mut call => return Some(out),
            () = self.control.signalled() => {}
        }
        match self.shared.store().request(&self.id).await {
            Ok(Some(stored))
                if matches!(
                    OperatorRequest::decode(&stored),
                    Some(OperatorRequest::Cancel { .. })
                ) =>
            {
                None
            }
            Ok(_) => Some(call.await),
            Err(e) => {
                tracing::warn!(saga_id = %self.id, error = %e, "cannot read the operator request; the attempt finishes");
                Some(call.await)
            }
        }
    }

    /// Sleeps `delay` (a retry's backoff) unless an operator's request is signalled first:
    /// `true` when it is, and the caller goes back to the step boundary.
    async fn backoff(&self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            () = self.control.signalled() => true,
        }
    }

    /// What is left of a backoff a previous runner recorded for the next attempt of `step`
    /// in `phase` (it was resumed after a restart). Cut to the delay the step's own backoff
    /// gives before this attempt (and to one day), so a damaged row cannot hold the saga.
    fn stored_backoff(
        &self,
        step: u32,
        phase: Phase,
        policy: &crate::StepRetry,
    ) -> Option<Duration> {
        let p = self.progress.steps.get(step as usize)?;
        let at = match phase {
            Phase::Action => p.retry_at_ms,
            Phase::Compensate => p.comp_retry_at_ms,
        }?;
        let left = Duration::from_millis(at.checked_sub(now_ms())?);
        // No longer than the step's own schedule gives before this attempt: a stored time
        // past it comes from a damaged row (or a changed policy).
        let mut schedule = policy.backoff.schedule();
        let mut cap = Duration::ZERO;
        for _ in 0..self.attempts(step, phase).min(64) {
            match schedule.next_delay() {
                Some(d) => cap = d,
                None => break,
            }
        }
        Some(left.min(cap).min(MAX_STORED_BACKOFF))
    }

    pub(crate) fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d) && !self.pivot_done()
    }

    pub(crate) fn begin_compensation(&mut self, failed_step: u32, error: String) {
        self.record(SagaEvent::CompensationBegan { failed_step, error });
    }

    /// One step in `phase` (its action, or its compensation), retries included; leaves the
    /// progress at its next stage. The retry loop of every sequential step.
    async fn run_step(&mut self, i: u32, phase: Phase) -> Result<(), SagaError> {
        let Some(step) = self.def.steps.get(i as usize) else {
            return Ok(());
        };
        let (policy, f) = match phase {
            Phase::Action => (step.retry, Arc::clone(&step.action)),
            Phase::Compensate => match step.compensation.clone() {
                Some(c) => (step.compensation_retry, c),
                None => return Ok(()),
            },
        };
        let retriable_step = phase == Phase::Action && step.kind == StepKind::Retriable;
        let aborts = phase == Phase::Action && step.on_cancel == OnCancel::Abort;
        let mut reuse_open = match phase {
            Phase::Action => match self.open_attempt(i) {
                Some(reuse) => reuse,
                None => return Ok(()),
            },
            Phase::Compensate => false,
        };
        let mut retries = Retries::new(policy);
        if !reuse_open && let Some(wait) = self.stored_backoff(i, phase, &policy) {
            tracing::debug!(saga_id = %self.id, step = i, %phase, ?wait, "waiting out a stored backoff");
            if self.backoff(wait).await {
                return Ok(());
            }
        }
        loop {
            if phase == Phase::Action && self.deadline_passed() {
                self.deadline_reached(i);
                return Ok(());
            }
            let attempt = if std::mem::take(&mut reuse_open) {
                self.attempts(i, phase)
            } else {
                let Some(attempt) = self.attempts(i, phase).checked_add(1) else {
                    self.counter_exhausted(i, phase);
                    return Ok(());
                };
                self.record(started_event(phase, i, attempt));
                attempt
            };
            self.flush().await?;
            retries.started();
            let deadline = if phase == Phase::Action && !self.pivot_done() {
                self.deadline
            } else {
                None
            };
            let call = self.call(&f, i, phase, attempt, retries.timeout(), deadline);
            let result = if aborts && !self.pivot_done() {
                let Some(result) = self.unless_cancelled(call).await else {
                    tracing::info!(saga_id = %self.id, step = i, attempt, "attempt aborted: the saga was cancelled");
                    self.record(SagaEvent::StepFailed {
                        step: i,
                        attempt,
                        kind: StepErrorKind::Cancelled,
                        error: "aborted: the saga was cancelled during the attempt".into(),
                        retry_at_ms: None,
                    });
                    // The boundary next carries the cancel out.
                    return Ok(());
                };
                result
            } else {
                call.await
            };
            match result {
                Ok(new_state) => {
                    self.store_output(i, phase, attempt, new_state);
                    return Ok(());
                }
                Err(error) => {
                    let kind = error.kind();
                    let deadline = phase == Phase::Action && kind == StepErrorKind::Deadline;
                    let delay = if deadline {
                        None
                    } else {
                        retries.next_delay(kind, retriable_step)
                    };
                    // The next attempt's time is logged with the failure: a saga resumed
                    // after a restart waits it out too.
                    let retry_at_ms = delay.map(|d| {
                        now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    });
                    self.record(failed_event(
                        phase,
                        i,
                        attempt,
                        kind,
                        error.message().to_owned(),
                        retry_at_ms,
                    ));
                    if deadline {
                        self.begin_compensation(i, error.to_string());
                        return Ok(());
                    }
                    if let Some(delay) = delay {
                        self.flush().await?;
                        tracing::debug!(saga_id = %self.id, step = i, %phase, attempt, ?delay, %error, "retrying step");
                        if self.backoff(delay).await {
                            return Ok(());
                        }
                        continue;
                    }
                    self.give_up(i, phase, &error);
                    return Ok(());
                }
            }
        }
    }

    /// Deals with an attempt of action `i` logged without a result. `Some(reuse)` to go on
    /// (`reuse`: this runner logged it itself and runs it now); `None` when the step's
    /// [`OnInterrupted`] setting settled it (compensate or stuck).
    fn open_attempt(&mut self, i: u32) -> Option<bool> {
        let open = self
            .progress
            .steps
            .get(i as usize)
            .is_some_and(|p| p.action_open);
        let reuse_open = self.prelogged.take() == Some(i) && open;
        if !open || reuse_open {
            return Some(reuse_open);
        }
        // The process stopped during this attempt: its effect is unknown.
        let attempt = self.attempts(i, Phase::Action);
        let on_interrupted = self
            .def
            .steps
            .get(i as usize)
            .map_or(OnInterrupted::Rerun, |s| s.on_interrupted);
        let decision = match on_interrupted {
            OnInterrupted::Compensate if self.pivot_done() => OnInterrupted::Stuck,
            other => other,
        };
        tracing::debug!(saga_id = %self.id, step = i, attempt, ?decision, "interrupted step found");
        if decision == OnInterrupted::Rerun {
            return Some(false);
        }
        let error = "the process stopped during the attempt".to_owned();
        self.record(SagaEvent::StepFailed {
            step: i,
            attempt,
            kind: StepErrorKind::Interrupted,
            error: error.clone(),
            retry_at_ms: None,
        });
        if decision == OnInterrupted::Compensate {
            self.begin_compensation(i, error);
        } else {
            self.record(SagaEvent::Stuck {
                step: i,
                phase: Phase::Action,
                error,
            });
        }
        None
    }

    /// The saga deadline passed before the next attempt of action `i`: compensate.
    fn deadline_reached(&mut self, i: u32) {
        // An attempt logged as started (by this runner, or by a process that stopped) has an
        // unknown effect: mark it so the step is compensated too.
        if let Some(p) = self.progress.steps.get(i as usize)
            && p.action_open
        {
            let attempt = p.action_attempts;
            self.record(SagaEvent::StepFailed {
                step: i,
                attempt,
                kind: StepErrorKind::Deadline,
                error: "saga deadline passed".into(),
                retry_at_ms: None,
            });
        }
        self.begin_compensation(i, "saga deadline passed".into());
    }

    /// Records a successful attempt's output (stuck when it cannot be stored).
    fn store_output(&mut self, step: u32, phase: Phase, attempt: u32, new_state: S) {
        match to_raw(&new_state) {
            Ok(state) => {
                self.state = new_state;
                self.record(match phase {
                    Phase::Action => SagaEvent::StepCompleted {
                        step,
                        state,
                        member: None,
                    },
                    Phase::Compensate => SagaEvent::CompensationCompleted { step, state },
                });
            }
            Err(e) => self.unstorable(step, phase, attempt, &e),
        }
    }

    /// A step failed for good: an action compensates the saga (stuck after the pivot), a
    /// compensation leaves it stuck.
    fn give_up(&mut self, step: u32, phase: Phase, error: &StepError) {
        match phase {
            Phase::Action if !self.pivot_done() => {
                self.begin_compensation(step, error.to_string());
            }
            Phase::Action => self.record(SagaEvent::Stuck {
                step,
                phase,
                error: error.to_string(),
            }),
            Phase::Compensate => {
                tracing::warn!(saga_id = %self.id, step, %error, "compensation exhausted: saga is stuck");
                self.record(SagaEvent::Stuck {
                    step,
                    phase,
                    error: error.to_string(),
                });
            }
        }
    }

    /// One attempt: panics caught, per-attempt timeout and saga deadline applied.
    async fn call(
        &self,
        f: &StepFn<S>,
        step: u32,
        phase: Phase,
        attempt: u32,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Result<S, StepError> {
        let state = self.state.clone();
        self.attempt(
            Arc::clone(f),
            state,
            step,
            phase,
            attempt,
            timeout,
            deadline,
        )
        .await
    }

    /// One attempt as an owned future (parallel group members run on their own tasks).
    #[allow(clippy::too_many_arguments)] // one attempt's full description, used twice
    pub(crate) fn attempt(
        &self,
        f: StepFn<S>,
        state: S,
        step: u32,
        phase: Phase,
        attempt: u32,
        timeout: Option<Duration>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<S, StepError>> + Send + 'static {
        let name = self
            .def
            .steps
            .get(step as usize)
            .map_or_else(|| Arc::from(format!("#{step}")), |s| Arc::clone(&s.name));
        let ctx = StepContext {
            saga_id: Arc::clone(&self.id),
            step: Arc::clone(&name),
            phase,
            attempt,
        };
        let span =
            tracing::debug_span!("saga_step", saga_id = %self.id, step = %name, %phase, attempt);
        let shared = Arc::clone(&self.shared);
        let definition = Arc::clone(&self.def.name);
        async move {
            let started = Instant::now();
            let attempt_fut = async move {
                let fut = std::panic::catch_unwind(AssertUnwindSafe(|| f(state, ctx)))
                    .map_err(|p| panicked(&*p))?;
                let guarded = AssertUnwindSafe(fut).catch_unwind();
                let result = match timeout {
                    Some(t) => tokio::time::timeout(t, guarded).await.map_err(|_| {
                        StepError::new(StepErrorKind::Timeout, format!("attempt exceeded {t:?}"))
                    })?,
                    None => guarded.await,
                };
                result.map_err(|p| panicked(&*p))?
            }
            .instrument(span);
            let result = match deadline {
                Some(d) => tokio::select! {
                    r = attempt_fut => r,
                    () = tokio::time::sleep_until(d) => Err(StepError::new(StepErrorKind::Deadline, "saga deadline passed")),
                },
                None => attempt_fut.await,
            };
            shared.attempt(&definition, &name, started.elapsed(), result.is_err());
            result
        }
    }
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> StepError {
    StepError::new(StepErrorKind::Panicked, panic_message(payload))
}

/// The event that logs the start of an attempt.
fn started_event(phase: Phase, step: u32, attempt: u32) -> SagaEvent {
    match phase {
        Phase::Action => SagaEvent::StepStarted { step, attempt },
        Phase::Compensate => SagaEvent::CompensationStarted { step, attempt },
    }
}

/// The event that logs a failed attempt.
fn failed_event(
    phase: Phase,
    step: u32,
    attempt: u32,
    kind: StepErrorKind,
    error: String,
    retry_at_ms: Option<u64>,
) -> SagaEvent {
    match phase {
        Phase::Action => SagaEvent::StepFailed {
            step,
            attempt,
            kind,
            error,
            retry_at_ms,
        },
        Phase::Compensate => SagaEvent::CompensationFailed {
            step,
            attempt,
            kind,
            error,
            retry_at_ms,
        },
    }
}
