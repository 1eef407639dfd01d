//! Folding a saga's events into where it stands: the single source of truth for both a live
//! runner (which applies each event as it records it) and recovery (which applies the log).

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::context::Phase;
use crate::error::{LoadError, LogRule};
use crate::event::SagaEvent;
use crate::store::SagaStatus;
use crate::trace::TraceContext;

/// Per-step facts gathered from the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepProgress {
    /// The action succeeded (or an operator skipped it).
    pub(crate) completed: bool,
    /// Highest action attempt started.
    pub(crate) action_attempts: u32,
    /// An action attempt started and has no recorded result.
    pub(crate) action_open: bool,
    /// Some action attempt ended with an unknown effect (timeout, deadline, interruption).
    pub(crate) in_doubt: bool,
    /// The compensation succeeded (or an operator skipped it).
    pub(crate) compensated: bool,
    /// Highest compensation attempt started.
    pub(crate) comp_attempts: u32,
    /// When the next action attempt may start, after a failure retried with a backoff
    /// (milliseconds since the Unix epoch).
    pub(crate) retry_at_ms: Option<u64>,
    /// The same for the compensation.
    pub(crate) comp_retry_at_ms: Option<u64>,
    /// For a completed parallel group member: the state it returned, the saga state just
    /// before its completion was applied, and the position of that completion in the log.
    pub(crate) member: Option<MemberResult>,
}

/// What the log says of a completed parallel group member.
#[derive(Debug, Clone)]
pub(crate) struct MemberResult {
    pub(crate) state: Box<RawValue>,
    pub(crate) state_before: Box<RawValue>,
    pub(crate) seq: u64,
}

/// Where the saga is.
#[derive(Debug, Clone)]
pub(crate) enum Stage {
    Forward,
    Compensating,
    Stuck {
        step: u32,
        phase: Phase,
        error: String,
    },
    /// Held by an operator at a step boundary; `compensating` says where it goes on.
    Paused {
        compensating: bool,
    },
    Completed,
    Compensated,
    Cancelled,
    Resolved {
        note: String,
    },
}

/// The saga as its log describes it.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) definition: String,
    pub(crate) version: u32,
    pub(crate) started_at_ms: u64,
    /// The caller's trace context, from the `started` event.
    pub(crate) trace: Option<Arc<TraceContext>>,
    pub(crate) state: Box<RawValue>,
    pub(crate) steps: Vec<StepProgress>,
    pub(crate) stage: Stage,
    /// Why compensation began: failed step and error.
    pub(crate) compensation: Option<(u32, String)>,
    /// Why an operator cancelled the saga, once one did.
    pub(crate) cancelled: Option<String>,
    /// Number of events applied (the next sequence number).
    pub(crate) next_seq: u64,
}

impl Progress {
    /// The progress right after a `Started` event, for a definition of `step_count` steps.
    ///
    /// Step indexes in later events are checked against `step_count`, and the per-step
    /// table is sized by it: never by a value read from the log.
    pub(crate) fn started(event: &SagaEvent, step_count: usize) -> Result<Self, LoadError> {
        match event {
            SagaEvent::Started {
                definition,
                version,
                input,
                started_at_ms,
                trace,
            } => Ok(Self {
                definition: definition.clone(),
                version: *version,
                started_at_ms: *started_at_ms,
                trace: trace.clone().map(Arc::new),
                state: input.clone(),
                steps: vec![StepProgress::default(); step_count],
                stage: Stage::Forward,
                compensation: None,
                cancelled: None,
                next_seq: 1,
            }),
            _ => Err(invalid(
                0,
                LogRule::StartedFirst,
                "the first event is not `started`".into(),
            )),
        }
    }

    /// Replays a whole log against a definition of `step_count` steps, checking every rule.
    pub(crate) fn replay(events: &[SagaEvent], step_count: usize) -> Result<Self, LoadError> {
        let first = events
            .first()
            .ok_or_else(|| invalid(0, LogRule::StartedFirst, "the log is empty".into()))?;
        let mut progress = Self::started(first, step_count)?;
        for event in &events[1..] {
            progress.apply(event)?;
        }
        Ok(progress)
    }

    fn fail(&self, rule: LogRule, detail: String) -> LoadError {
        invalid(self.next_seq, rule, detail)
    }

    /// The progress of `step`, if the definition has it.
    fn step(&mut self, step: u32) -> Result<&mut StepProgress, LoadError> {
        let count = self.steps.len();
        let seq = self.next_seq;
        usize::try_from(step)
            .ok()
            .and_then(|i| self.steps.get_mut(i))
            .ok_or_else(|| {
                invalid(
                    seq,
                    LogRule::StepIndex,
                    format!("step {step} does not exist (the definition has {count} steps)"),
                )
            })
    }

    /// Checks a step index without touching its progress.
    fn check_step(&mut self, step: u32) -> Result<(), LoadError> {
        self.step(step).map(|_| ())
    }

    /// Applies one event after the first, checking it against the rules first: nothing is
    /// changed when it breaks one.
    pub(crate) fn apply(&mut self, event: &SagaEvent) -> Result<(), LoadError> {
        if matches!(
            self.stage,
            Stage::Completed | Stage::Compensated | Stage::Cancelled | Stage::Resolved { .. }
        ) {
            return Err(self.fail(
                LogRule::TerminalLast,
                "an event follows a terminal event".into(),
            ));
        }
        if matches!(self.stage, Stage::Paused { .. }) && !matches!(event, SagaEvent::Resumed { .. })
        {
            return Err(self.fail(
                LogRule::Lifecycle,
                "only `resumed` may follow `paused`".into(),
            ));
        }
        let seq = self.next_seq;
        match event {
            SagaEvent::Started { .. } => {
                return Err(self.fail(LogRule::StartedFirst, "a second `started`".into()));
            }
            SagaEvent::StepStarted { step, attempt } => {
                let s = self.step(*step)?;
                let expected = next_attempt(s.action_attempts, *attempt, seq)?;
                s.action_attempts = expected;
                s.action_open = true;
                s.retry_at_ms = None;
            }
            SagaEvent::StepCompleted {
                step,
                state,
                member,
            } => {
                let before = self.state.clone();
                let s = self.step(*step)?;
                s.completed = true;
                s.action_open = false;
                s.in_doubt = false;
                s.member = member.as_ref().map(|m| MemberResult {
                    state: m.clone(),
                    state_before: before,
                    seq,
                });
                self.state = state.clone();
            }
            SagaEvent::StepFailed {
                step,
                attempt,
                kind,
                retry_at_ms,
                ..
            } => {
                let s = self.step(*step)?;
                started_attempt(s.action_attempts, *attempt, seq)?;
                s.action_open = false;
                s.in_doubt |= kind.is_in_doubt();
                s.retry_at_ms = *retry_at_ms;
            }
            SagaEvent::CompensationBegan { failed_step, error } => {
                self.check_step(*failed_step)?;
                self.stage = Stage::Compensating;
                self.compensation = Some((*failed_step, error.clone()));
            }
            SagaEvent::CompensationStarted { step, attempt } => {
                let s = self.step(*step)?;
                s.comp_attempts = next_attempt(s.comp_attempts, *attempt, seq)?;
                s.comp_retry_at_ms = None;
            }
            SagaEvent::CompensationCompleted { step, state } => {
                self.step(*step)?.compensated = true;
                self.state = state.clone();
            }
            SagaEvent::CompensationFailed {
                step,
                attempt,
                retry_at_ms,
                ..
            } => {
                let s = self.step(*step)?;
                started_attempt(s.comp_attempts, *attempt, seq)?;
                s.comp_retry_at_ms = *retry_at_ms;
            }
            SagaEvent::Stuck { step, phase, error } => {
                self.check_step(*step)?;
                self.stage = Stage::Stuck {
                    step: *step,
                    phase: *phase,
                    error: error.clone(),
                };
            }
            SagaEvent::OperatorRetried { step, .. } | SagaEvent::OperatorSkipped { step, .. } => {
                let (stuck_step, phase) = match &self.stage {
                    Stage::Stuck { step, phase, .. } => (*step, *phase),
                    _ => {
                        return Err(self.fail(
                            LogRule::OperatorOnStuck,
                            "an operator action on a saga that is not stuck".into(),
                        ));
                    }
                };
                if *step != stuck_step {
                    return Err(self.fail(
                        LogRule::OperatorOnStuck,
                        format!("it names step {step}, the saga is stuck on step {stuck_step}"),
                    ));
                }
                if matches!(event, SagaEvent::OperatorSkipped { .. }) {
                    let s = self.step(*step)?;
                    match phase {
                        Phase::Action => s.completed = true,
                        Phase::Compensate => s.compensated = true,
                    }
                }
                self.stage = match phase {
                    Phase::Action => Stage::Forward,
                    Phase::Compensate => Stage::Compensating,
                };
            }
            SagaEvent::OperatorResolved { note, .. } => {
                self.stage = Stage::Resolved { note: note.clone() };
            }
            SagaEvent::CancelBegan { reason, .. } => {
                if !matches!(self.stage, Stage::Forward) {
                    return Err(self.fail(
                        LogRule::Lifecycle,
                        "`cancel_began` on a saga that is not moving forward".into(),
                    ));
                }
                self.stage = Stage::Compensating;
                self.cancelled = Some(reason.clone());
            }
            SagaEvent::Paused { .. } => {
                let compensating = match self.stage {
                    Stage::Forward => false,
                    Stage::Compensating => true,
                    _ => {
                        return Err(self.fail(
                            LogRule::Lifecycle,
                            "`paused` on a saga that is neither running nor compensating".into(),
                        ));
                    }
                };
                self.stage = Stage::Paused { compensating };
            }
            SagaEvent::Resumed { .. } => {
                self.stage = match self.stage {
                    Stage::Paused { compensating: true } => Stage::Compensating,
                    Stage::Paused {
                        compensating: false,
                    } => Stage::Forward,
                    _ => {
                        return Err(self.fail(
                            LogRule::Lifecycle,
                            "`resumed` on a saga that is not paused".into(),
                        ));
                    }
                };
            }
            SagaEvent::Cancelled { .. } => {
                if !matches!(self.stage, Stage::Compensating) || self.cancelled.is_none() {
                    return Err(self.fail(
                        LogRule::Lifecycle,
                        "`cancelled` ends a saga that was not cancelled and compensating".into(),
                    ));
                }
                self.stage = Stage::Cancelled;
            }
            SagaEvent::Completed => self.stage = Stage::Completed,
            SagaEvent::Compensated { failed_step, .. } => {
                self.check_step(*failed_step)?;
                self.stage = Stage::Compensated;
            }
        }
        self.next_seq += 1;
        Ok(())
    }

    /// The status to store with the summary, and its note.
    pub(crate) fn status(&self) -> (SagaStatus, Option<String>) {
        match &self.stage {
            Stage::Forward => (SagaStatus::Running, None),
            Stage::Compensating => (SagaStatus::Compensating, None),
            Stage::Stuck { error, .. } => (SagaStatus::Stuck, Some(error.clone())),
            Stage::Paused { .. } => (SagaStatus::Paused, None),
            Stage::Completed => (SagaStatus::Completed, None),
            Stage::Compensated => (SagaStatus::Compensated, None),
            Stage::Cancelled => (SagaStatus::Cancelled, self.cancelled.clone()),
            Stage::Resolved { note } => (SagaStatus::Resolved, Some(note.clone())),
        }
    }
}

fn invalid(seq: u64, rule: LogRule, detail: String) -> LoadError {
    LoadError::Invalid { seq, rule, detail }
}

/// The attempt number after `current`, which `attempt` must be.
fn next_attempt(current: u32, attempt: u32, seq: u64) -> Result<u32, LoadError> {
    match current.checked_add(1) {
        Some(next) if next == attempt => Ok(next),
        Some(next) => Err(invalid(
            seq,
            LogRule::AttemptCounter,
            format!("attempt {attempt} starts where attempt {next} is due"),
        )),
        None => Err(invalid(
            seq,
            LogRule::AttemptCounter,
            "the attempt counter is exhausted".into(),
        )),
    }
}

/// A failure must name an attempt that started: 1 ..= `current`.
fn started_attempt(current: u32, attempt: u32, seq: u64) -> Result<(), LoadError> {
    if attempt == 0 || attempt > current {
        return Err(invalid(
            seq,
            LogRule::AttemptCounter,
            format!("attempt {attempt} failed but {current} attempts started"),
        ));
    }
    Ok(())
}
