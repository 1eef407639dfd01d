//! Folding a saga's events into where it stands: the single source of truth for both a live
//! runner (which applies each event as it records it) and recovery (which applies the log).

use serde_json::value::RawValue;

use crate::context::Phase;
use crate::error::LoadError;
use crate::event::SagaEvent;
use crate::store::SagaStatus;

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
    Completed,
    Compensated,
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
    pub(crate) state: Box<RawValue>,
    pub(crate) steps: Vec<StepProgress>,
    pub(crate) stage: Stage,
    /// Why compensation began: failed step and error.
    pub(crate) compensation: Option<(u32, String)>,
    /// Number of events applied (the next sequence number).
    pub(crate) next_seq: u64,
}

impl Progress {
    /// The progress right after a `Started` event.
    pub(crate) fn started(event: &SagaEvent) -> Result<Self, LoadError> {
        match event {
            SagaEvent::Started {
                definition,
                version,
                input,
                started_at_ms,
            } => Ok(Self {
                definition: definition.clone(),
                version: *version,
                started_at_ms: *started_at_ms,
                state: input.clone(),
                steps: Vec::new(),
                stage: Stage::Forward,
                compensation: None,
                next_seq: 1,
            }),
            _ => Err(LoadError::Inconsistent(
                "the first event is not `started`".into(),
            )),
        }
    }

    /// Replays a whole log.
    pub(crate) fn replay(events: &[SagaEvent]) -> Result<Self, LoadError> {
        let first = events
            .first()
            .ok_or_else(|| LoadError::Inconsistent("the log is empty".into()))?;
        let mut progress = Self::started(first)?;
        for event in &events[1..] {
            progress.apply(event)?;
        }
        Ok(progress)
    }

    fn step(&mut self, step: u32) -> &mut StepProgress {
        let i = step as usize;
        if self.steps.len() <= i {
            self.steps.resize_with(i + 1, StepProgress::default);
        }
        &mut self.steps[i]
    }

    /// Applies one event after the first.
    pub(crate) fn apply(&mut self, event: &SagaEvent) -> Result<(), LoadError> {
        if matches!(
            self.stage,
            Stage::Completed | Stage::Compensated | Stage::Resolved { .. }
        ) {
            return Err(LoadError::Inconsistent(format!(
                "event {} follows a terminal event",
                self.next_seq
            )));
        }
        match event {
            SagaEvent::Started { .. } => {
                return Err(LoadError::Inconsistent(format!(
                    "event {} is a second `started`",
                    self.next_seq
                )));
            }
            SagaEvent::StepStarted { step, attempt } => {
                let s = self.step(*step);
                s.action_attempts = *attempt;
                s.action_open = true;
            }
            SagaEvent::StepCompleted {
                step,
                state,
                member,
            } => {
                let (before, seq) = (self.state.clone(), self.next_seq);
                let s = self.step(*step);
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
            SagaEvent::StepFailed { step, kind, .. } => {
                let s = self.step(*step);
                s.action_open = false;
                s.in_doubt |= kind.is_in_doubt();
            }
            SagaEvent::CompensationBegan { failed_step, error } => {
                self.stage = Stage::Compensating;
                self.compensation = Some((*failed_step, error.clone()));
            }
            SagaEvent::CompensationStarted { step, attempt } => {
                self.step(*step).comp_attempts = *attempt;
            }
            SagaEvent::CompensationCompleted { step, state } => {
                self.step(*step).compensated = true;
                self.state = state.clone();
            }
            SagaEvent::CompensationFailed { step, .. } => {
                self.step(*step);
            }
            SagaEvent::Stuck { step, phase, error } => {
                self.stage = Stage::Stuck {
                    step: *step,
                    phase: *phase,
                    error: error.clone(),
                };
            }
            SagaEvent::OperatorRetried { step } | SagaEvent::OperatorSkipped { step } => {
                let Stage::Stuck { phase, .. } = self.stage else {
                    return Err(LoadError::Inconsistent(format!(
                        "operator action at event {} on a saga that is not stuck",
                        self.next_seq
                    )));
                };
                if matches!(event, SagaEvent::OperatorSkipped { .. }) {
                    let s = self.step(*step);
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
            SagaEvent::OperatorResolved { note } => {
                self.stage = Stage::Resolved { note: note.clone() };
            }
            SagaEvent::Completed => self.stage = Stage::Completed,
            SagaEvent::Compensated { .. } => self.stage = Stage::Compensated,
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
            Stage::Completed => (SagaStatus::Completed, None),
            Stage::Compensated => (SagaStatus::Compensated, None),
            Stage::Resolved { note } => (SagaStatus::Resolved, Some(note.clone())),
        }
    }

    /// The largest step index the log mentions.
    pub(crate) fn step_count_seen(&self) -> usize {
        self.steps.len()
    }
}
