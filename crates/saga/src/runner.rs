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
use crate::definition::{DefinitionInner, OnInterrupted, SagaState, StepFn, StepKind};
use crate::engine::Shared;
use crate::error::{SagaError, StepError, StepErrorKind};
use crate::event::SagaEvent;
use crate::outcome::RawOutcome;
use crate::replay::{Progress, Stage};
use crate::store::Append;

pub(crate) fn to_raw<S: SagaState>(state: &S) -> Result<Box<RawValue>, SagaError> {
    serde_json::value::to_raw_value(state).map_err(|e| SagaError::State(e.to_string()))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) struct Runner<S: SagaState> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) def: Arc<DefinitionInner<S>>,
    pub(crate) id: Arc<str>,
    pub(crate) state: S,
    pub(crate) progress: Progress,
    /// Encoded events recorded but not yet appended.
    pub(crate) pending: Vec<String>,
    /// Sequence number of the first pending event.
    pub(crate) flushed: u64,
    /// A step whose open attempt this runner logged itself (not an interrupted one).
    pub(crate) prelogged: Option<u32>,
    pub(crate) deadline: Option<Instant>,
    /// An event this runner recorded broke a log rule (an engine bug): nothing more is
    /// appended, and the saga is marked stuck with this error.
    pub(crate) broken: Option<crate::error::LoadError>,
    /// The summary may disagree with the log (resumed from a log that is already stuck or
    /// settled): the first flush writes the status even without rows.
    resync: bool,
    /// Resumed from a log that had already ended (stuck or settled): its outcome was
    /// counted when it happened, so driving it counts nothing.
    settled: bool,
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
        let mut runner = Self {
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

    /// Whether the replayed log had already ended before this runner drove it.
    pub(crate) fn replayed_settled(&self) -> bool {
        self.settled
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
        self.shared.store.append(append).await?;
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
        self.record(match phase {
            Phase::Action => SagaEvent::StepFailed {
                step,
                attempt,
                kind: StepErrorKind::Unstorable,
                error: error.message().to_owned(),
            },
            Phase::Compensate => SagaEvent::CompensationFailed {
                step,
                attempt,
                kind: StepErrorKind::Unstorable,
                error: error.message().to_owned(),
            },
        });
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
            match self.progress.stage.clone() {
                Stage::Forward => {
                    if let Some(i) = self.next_forward() {
                        match self.def.steps.get(i as usize).and_then(|s| s.group) {
                            Some(g) => self.forward_group(g).await?,
                            None => self.forward(i).await?,
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
                            None => self.compensate(j).await?,
                        }
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
            }
        }
    }

    pub(crate) fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d) && !self.pivot_done()
    }

    pub(crate) fn begin_compensation(&mut self, failed_step: u32, error: String) {
        self.record(SagaEvent::CompensationBegan { failed_step, error });
    }

    /// One forward step, retries included; leaves the progress at its next stage.
    async fn forward(&mut self, i: u32) -> Result<(), SagaError> {
        let Some(step) = self.def.steps.get(i as usize) else {
            return Ok(());
        };
        let (kind, policy, action, on_interrupted) = (
            step.kind,
            step.retry,
            Arc::clone(&step.action),
            step.on_interrupted,
        );
        let open = self
            .progress
            .steps
            .get(i as usize)
            .is_some_and(|p| p.action_open);
        let mut reuse_open = self.prelogged.take() == Some(i) && open;
        if open && !reuse_open {
            // The process stopped during this attempt: its effect is unknown.
            let attempt = self.attempts(i, Phase::Action);
            let decision = match on_interrupted {
                OnInterrupted::Compensate if self.pivot_done() => OnInterrupted::Stuck,
                other => other,
            };
            tracing::debug!(saga_id = %self.id, step = i, attempt, ?decision, "interrupted step found");
            if decision != OnInterrupted::Rerun {
                let error = "the process stopped during the attempt".to_owned();
                self.record(SagaEvent::StepFailed {
                    step: i,
                    attempt,
                    kind: StepErrorKind::Interrupted,
                    error: error.clone(),
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
                return Ok(());
            }
        }
        let mut schedule = policy.backoff.schedule();
        let first_start = Instant::now();
        let mut tries = 0u32;
        loop {
            if self.deadline_passed() {
                // An attempt logged as started (by this runner, or by a process that stopped)
                // has an unknown effect: mark it so the step is compensated too.
                if let Some(p) = self.progress.steps.get(i as usize)
                    && p.action_open
                {
                    let attempt = p.action_attempts;
                    self.record(SagaEvent::StepFailed {
                        step: i,
                        attempt,
                        kind: StepErrorKind::Deadline,
                        error: "saga deadline passed".into(),
                    });
                }
                self.begin_compensation(i, "saga deadline passed".into());
                return Ok(());
            }
            let attempt = if reuse_open {
                reuse_open = false;
                self.attempts(i, Phase::Action)
            } else {
                let Some(attempt) = self.attempts(i, Phase::Action).checked_add(1) else {
                    self.counter_exhausted(i, Phase::Action);
                    return Ok(());
                };
                self.record(SagaEvent::StepStarted { step: i, attempt });
                attempt
            };
            self.flush().await?;
            tries += 1;
            let deadline = if self.pivot_done() {
                None
            } else {
                self.deadline
            };
            match self
                .call(&action, i, Phase::Action, attempt, policy.timeout, deadline)
                .await
            {
                Ok(new_state) => {
                    match to_raw(&new_state) {
                        Ok(raw) => {
                            self.state = new_state;
                            self.record(SagaEvent::StepCompleted {
                                step: i,
                                state: raw,
                                member: None,
                            });
                        }
                        Err(e) => self.unstorable(i, Phase::Action, attempt, &e),
                    }
                    return Ok(());
                }
                Err(error) => {
                    self.record(SagaEvent::StepFailed {
                        step: i,
                        attempt,
                        kind: error.kind(),
                        error: error.message().to_owned(),
                    });
                    if error.kind() == StepErrorKind::Deadline {
                        self.begin_compensation(i, error.to_string());
                        return Ok(());
                    }
                    let may_retry = kind == StepKind::Retriable || error.kind().is_retryable();
                    let attempts_left = policy.max_attempts.is_none_or(|m| tries < m);
                    if may_retry
                        && attempts_left
                        && let Some(delay) = schedule.next_delay_after(first_start.elapsed())
                    {
                        self.flush().await?;
                        tracing::debug!(saga_id = %self.id, step = i, attempt, ?delay, %error, "retrying step");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    if self.pivot_done() {
                        self.record(SagaEvent::Stuck {
                            step: i,
                            phase: Phase::Action,
                            error: error.to_string(),
                        });
                    } else {
                        self.begin_compensation(i, error.to_string());
                    }
                    return Ok(());
                }
            }
        }
    }

    /// One compensation, retries included.
    async fn compensate(&mut self, j: u32) -> Result<(), SagaError> {
        let Some(step) = self.def.steps.get(j as usize) else {
            return Ok(());
        };
        let policy = step.compensation_retry;
        let Some(compensation) = step.compensation.clone() else {
            return Ok(());
        };
        let mut schedule = policy.backoff.schedule();
        let first_start = Instant::now();
        let mut tries = 0u32;
        loop {
            let Some(attempt) = self.attempts(j, Phase::Compensate).checked_add(1) else {
                self.counter_exhausted(j, Phase::Compensate);
                return Ok(());
            };
            self.record(SagaEvent::CompensationStarted { step: j, attempt });
            self.flush().await?;
            tries += 1;
            match self
                .call(
                    &compensation,
                    j,
                    Phase::Compensate,
                    attempt,
                    policy.timeout,
                    None,
                )
                .await
            {
                Ok(new_state) => {
                    match to_raw(&new_state) {
                        Ok(raw) => {
                            self.state = new_state;
                            self.record(SagaEvent::CompensationCompleted {
                                step: j,
                                state: raw,
                            });
                        }
                        Err(e) => self.unstorable(j, Phase::Compensate, attempt, &e),
                    }
                    return Ok(());
                }
                Err(error) => {
                    self.record(SagaEvent::CompensationFailed {
                        step: j,
                        attempt,
                        kind: error.kind(),
                        error: error.message().to_owned(),
                    });
                    let attempts_left = policy.max_attempts.is_none_or(|m| tries < m);
                    if error.kind().is_retryable()
                        && attempts_left
                        && let Some(delay) = schedule.next_delay_after(first_start.elapsed())
                    {
                        self.flush().await?;
                        tracing::debug!(saga_id = %self.id, step = j, attempt, ?delay, %error, "retrying compensation");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    tracing::warn!(saga_id = %self.id, step = j, %error, "compensation exhausted: saga is stuck");
                    self.record(SagaEvent::Stuck {
                        step: j,
                        phase: Phase::Compensate,
                        error: error.to_string(),
                    });
                    return Ok(());
                }
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
            shared
                .counters
                .attempt(&definition, &name, started.elapsed(), result.is_err());
            result
        }
    }
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> StepError {
    StepError::new(
        StepErrorKind::Panicked,
        crate::recovery::panic_message(payload),
    )
}
