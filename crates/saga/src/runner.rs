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
        let progress = Progress::started(&started).map_err(|error| SagaError::Load {
            saga_id: id.to_string(),
            error,
        })?;
        let deadline = def.deadline.map(|d| Instant::now() + d);
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
        };
        if runner.def.steps[0].group.is_none() {
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
        let deadline = def.deadline.map(|d| {
            let spent = Duration::from_millis(now_ms().saturating_sub(progress.started_at_ms));
            Instant::now() + d.saturating_sub(spent)
        });
        Ok(Self {
            shared,
            def,
            id,
            state,
            flushed: progress.next_seq,
            progress,
            pending: Vec::new(),
            prelogged: None,
            deadline,
        })
    }

    pub(crate) fn record(&mut self, event: SagaEvent) {
        // The runner only records events valid for its progress, so apply cannot fail.
        let applied = self.progress.apply(&event);
        debug_assert!(applied.is_ok(), "{applied:?}");
        self.pending.push(event.encode());
    }

    pub(crate) async fn flush(&mut self) -> Result<(), SagaError> {
        if self.pending.is_empty() {
            return Ok(());
        }
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

    fn step_name(&self, step: u32) -> String {
        self.def.steps[step as usize].name.to_string()
    }

    /// Runs until the saga ends or gets stuck, flushing every transition.
    pub(crate) async fn drive(&mut self) -> Result<RawOutcome, SagaError> {
        loop {
            match self.progress.stage.clone() {
                Stage::Forward => {
                    if let Some(i) = self.next_forward() {
                        match self.def.steps[i as usize].group {
                            Some(g) => self.forward_group(g).await?,
                            None => self.forward(i).await?,
                        }
                    } else {
                        self.record(SagaEvent::Completed);
                        self.flush().await?;
                        return Ok(RawOutcome::Completed(Arc::from(to_raw(&self.state)?)));
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
                            state: Arc::from(to_raw(&self.state)?),
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
                    return Ok(RawOutcome::Completed(Arc::from(to_raw(&self.state)?)));
                }
                Stage::Compensated => {
                    let (failed_step, error) =
                        self.progress.compensation.clone().unwrap_or_default();
                    return Ok(RawOutcome::Compensated {
                        failed_step: self.step_name(failed_step),
                        error,
                        state: Arc::from(to_raw(&self.state)?),
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
        let step = &self.def.steps[i as usize];
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
            let attempt = self.progress.steps[i as usize].action_attempts;
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
                self.progress.steps[i as usize].action_attempts
            } else {
                let attempt = self
                    .progress
                    .steps
                    .get(i as usize)
                    .map_or(0, |p| p.action_attempts)
                    + 1;
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
                    let raw = to_raw(&new_state)?;
                    self.state = new_state;
                    self.record(SagaEvent::StepCompleted {
                        step: i,
                        state: raw,
                        member: None,
                    });
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
        let step = &self.def.steps[j as usize];
        let policy = step.compensation_retry;
        let Some(compensation) = step.compensation.clone() else {
            return Ok(());
        };
        let mut schedule = policy.backoff.schedule();
        let first_start = Instant::now();
        let mut tries = 0u32;
        loop {
            let attempt = self.progress.steps[j as usize].comp_attempts + 1;
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
                    let raw = to_raw(&new_state)?;
                    self.state = new_state;
                    self.record(SagaEvent::CompensationCompleted {
                        step: j,
                        state: raw,
                    });
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
        let name = Arc::clone(&self.def.steps[step as usize].name);
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
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    StepError::new(StepErrorKind::Panicked, msg)
}
