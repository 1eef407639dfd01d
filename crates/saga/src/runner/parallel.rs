//! Running a parallel group: member attempts on their own tasks, every transition logged by
//! the saga's runner (the only writer of its log) as the attempts finish.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::context::Phase;
use crate::definition::{
    GroupCompensation, GroupFailure, GroupInner, OnInterrupted, SagaState, StepKind,
};
use crate::error::{SagaError, StepError, StepErrorKind};
use crate::event::SagaEvent;
use crate::replay::MemberResult;

use super::{Retries, Runner, failed_event, started_event, to_raw};

/// What a member task reports.
enum Report<S> {
    Done {
        step: u32,
        result: Result<S, StepError>,
    },
    RetryDue {
        step: u32,
    },
}

/// The deterministic join of a group: the state before it and each member's result, folded
/// in declaration order (never completion order) whenever a member completes.
struct Join<S> {
    base: S,
    results: BTreeMap<u32, S>,
}

fn decode<S: SagaState>(raw: &serde_json::value::RawValue) -> Result<S, SagaError> {
    serde_json::from_str(raw.get()).map_err(|e| SagaError::State(e.to_string()))
}

/// A member's retry bookkeeping.
struct Member {
    retries: Retries,
    in_flight: bool,
}

impl<S: SagaState> Runner<S> {
    /// The group to compensate in parallel, when step `j` (the next to compensate) is in one.
    pub(crate) fn parallel_compensation(&self, j: u32) -> Option<u32> {
        let g = self.def.steps.get(j as usize)?.group?;
        (self.def.groups.get(g as usize)?.compensation == GroupCompensation::Parallel).then_some(g)
    }

    /// While compensating, an action attempt with no result can only be a group member the
    /// process was running when it stopped: its effect is unknown, so it is compensated.
    pub(crate) fn close_open_actions(&mut self) {
        let open: Vec<(u32, u32)> = (0..self.progress.steps.len())
            .filter(|&i| self.progress.steps[i].action_open)
            .map(|i| (i as u32, self.progress.steps[i].action_attempts))
            .collect();
        for (step, attempt) in open {
            self.record(SagaEvent::StepFailed {
                step,
                attempt,
                kind: StepErrorKind::Interrupted,
                error: "the process stopped during the attempt".into(),
                retry_at_ms: None,
            });
        }
    }

    /// Runs the members of group `g` that have not completed; leaves the progress at its
    /// next stage (forward past the group, compensating, or stuck).
    pub(crate) async fn forward_group(&mut self, g: u32) -> Result<(), SagaError> {
        // Group indexes come from the definition itself (a step's `group`), never from the log.
        let Some(group) = self.def.groups.get(g as usize) else {
            return Ok(());
        };
        let (on_failure, first_member) = (group.on_failure, group.first);
        let members: Vec<u32> = group
            .members()
            .filter(|&i| {
                !self
                    .progress
                    .steps
                    .get(i as usize)
                    .is_some_and(|p| p.completed)
            })
            .collect();
        // Attempts left open by a process that stopped: each member's OnInterrupted decides;
        // any decision other than re-running settles the whole group.
        let open: Vec<(u32, u32)> = members
            .iter()
            .filter_map(|&i| {
                let p = self.progress.steps.get(i as usize)?;
                p.action_open.then_some((i, p.action_attempts))
            })
            .collect();
        let decision = open
            .iter()
            .map(
                |&(i, _)| match self.def.steps.get(i as usize).map(|s| s.on_interrupted) {
                    None => (i, OnInterrupted::Rerun),
                    Some(OnInterrupted::Compensate) if self.pivot_done() => {
                        (i, OnInterrupted::Stuck)
                    }
                    Some(other) => (i, other),
                },
            )
            .find(|(_, d)| *d != OnInterrupted::Rerun);
        let deadline_passed = self.deadline_passed();
        if decision.is_some() || deadline_passed {
            let (kind, error) = if deadline_passed {
                (StepErrorKind::Deadline, "saga deadline passed")
            } else {
                (
                    StepErrorKind::Interrupted,
                    "the process stopped during the attempt",
                )
            };
            for &(step, attempt) in &open {
                self.record(SagaEvent::StepFailed {
                    step,
                    attempt,
                    kind,
                    error: error.into(),
                    retry_at_ms: None,
                });
            }
            let first = members.first().copied().unwrap_or(first_member);
            let (step, d) = decision.unwrap_or((first, OnInterrupted::Compensate));
            if d == OnInterrupted::Stuck {
                self.record(SagaEvent::Stuck {
                    step,
                    phase: Phase::Action,
                    error: error.into(),
                });
            } else {
                self.begin_compensation(step, error.into());
            }
            return Ok(());
        }
        // The join restarts from the log: the state before the group (as it was when its first
        // completed member was applied) and the results of the members completed so far.
        let done: Vec<(u32, MemberResult)> = self
            .def
            .groups
            .get(g as usize)
            .map_or(0..0, GroupInner::members)
            .filter_map(|i| Some((i, self.progress.steps.get(i as usize)?.member.clone()?)))
            .collect();
        let base = match done.iter().min_by_key(|(_, m)| m.seq) {
            Some((_, first)) => decode(&first.state_before)?,
            None => self.state.clone(),
        };
        let mut join = Join {
            base,
            results: BTreeMap::new(),
        };
        for (i, m) in &done {
            join.results.insert(*i, decode(&m.state)?);
        }
        let cancel = on_failure == GroupFailure::CancelOthers;
        // A member whose output cannot be stored leaves the saga stuck: its effect happened.
        if let Some((step, error)) = self
            .run_concurrent(g, &members, Phase::Action, cancel, &mut join)
            .await?
            && (self.pivot_done() || error.kind() == StepErrorKind::Unstorable)
        {
            self.record(SagaEvent::Stuck {
                step,
                phase: Phase::Action,
                error: error.to_string(),
            });
        }
        Ok(())
    }

    /// Runs the compensations of group `g`'s members that need one, all at once.
    pub(crate) async fn compensate_group(&mut self, g: u32) -> Result<(), SagaError> {
        let Some(group) = self.def.groups.get(g as usize) else {
            return Ok(());
        };
        let members: Vec<u32> = group
            .members()
            .filter(|&i| {
                let p = self.progress.steps.get(i as usize);
                self.def
                    .steps
                    .get(i as usize)
                    .is_some_and(|s| s.compensation.is_some())
                    && p.is_some_and(|p| (p.completed || p.in_doubt) && !p.compensated)
            })
            .collect();
        let mut join = Join {
            base: self.state.clone(),
            results: BTreeMap::new(),
        };
        if let Some((step, error)) = self
            .run_concurrent(g, &members, Phase::Compensate, false, &mut join)
            .await?
        {
            tracing::warn!(saga_id = %self.id, step, %error, "compensation exhausted: saga is stuck");
            self.record(SagaEvent::Stuck {
                step,
                phase: Phase::Compensate,
                error: error.to_string(),
            });
        }
        Ok(())
    }

    /// Logs and spawns the next attempt of `step`.
    fn launch(
        &mut self,
        set: &mut JoinSet<Report<S>>,
        tracks: &mut HashMap<u32, Member>,
        base: &S,
        step: u32,
        phase: Phase,
    ) {
        let Some(def) = self.def.steps.get(step as usize) else {
            return;
        };
        let Some(f) = (match phase {
            Phase::Action => Some(Arc::clone(&def.action)),
            Phase::Compensate => def.compensation.clone(),
        }) else {
            return;
        };
        let Some(track) = tracks.get_mut(&step) else {
            return;
        };
        let Some(attempt) = self.attempts(step, phase).checked_add(1) else {
            // Cannot count another attempt: recorded as a failure of this member for good.
            set.spawn(async move {
                Report::Done {
                    step,
                    result: Err(StepError::fail("the attempt counter is exhausted")),
                }
            });
            return;
        };
        self.record(started_event(phase, step, attempt));
        track.retries.started();
        track.in_flight = true;
        let deadline = (phase == Phase::Action && !self.pivot_done())
            .then_some(self.deadline)
            .flatten();
        // Members see the state before the group, whatever their siblings returned.
        let fut = self.attempt(
            f,
            base.clone(),
            step,
            phase,
            attempt,
            track.retries.timeout(),
            deadline,
        );
        set.spawn(async move {
            Report::Done {
                step,
                result: fut.await,
            }
        });
    }

    /// Runs `members` of group `g` concurrently in `phase`, each with its retry policy,
    /// logging every transition. Returns the first member that failed for good. Once one has,
    /// no new attempt starts; running ones finish, or are cancelled when `cancel`. A failed
    /// action starts compensation at once (logged before the others finish, so recovery
    /// knows the group failed).
    async fn run_concurrent(
        &mut self,
        g: u32,
        members: &[u32],
        phase: Phase,
        cancel: bool,
        join: &mut Join<S>,
    ) -> Result<Option<(u32, StepError)>, SagaError> {
        let Some(merge) = self
            .def
            .groups
            .get(g as usize)
            .map(|g| Arc::clone(&g.merge))
        else {
            return Ok(None);
        };
        let mut set = JoinSet::new();
        let mut tracks = HashMap::with_capacity(members.len());
        for &i in members {
            let Some(step) = self.def.steps.get(i as usize) else {
                continue;
            };
            let policy = match phase {
                Phase::Action => step.retry,
                Phase::Compensate => step.compensation_retry,
            };
            tracks.insert(
                i,
                Member {
                    retries: Retries::new(policy),
                    in_flight: false,
                },
            );
        }
        for &i in members {
            // A member resumed after a restart waits out the backoff its log recorded (cut
            // as for a sequential step), so a restart is no thundering herd.
            let stored = self
                .def
                .steps
                .get(i as usize)
                .map(|step| match phase {
                    Phase::Action => step.retry,
                    Phase::Compensate => step.compensation_retry,
                })
                .and_then(|policy| self.stored_backoff(i, phase, &policy));
            match stored {
                Some(wait) if !wait.is_zero() => {
                    tracing::debug!(saga_id = %self.id, step = i, %phase, ?wait, "group member waits out a stored backoff");
                    set.spawn(async move {
                        tokio::time::sleep(wait).await;
                        Report::RetryDue { step: i }
                    });
                }
                _ => self.launch(&mut set, &mut tracks, &join.base, i, phase),
            }
        }
        self.flush().await?;
        let mut failure: Option<(u32, StepError)> = None;
        while let Some(joined) = set.join_next().await {
            let Ok(report) = joined else {
                // Cancelled by `abort_all` below (panics are caught inside the attempt).
                continue;
            };
            match report {
                Report::RetryDue { step } => {
                    if failure.is_none() {
                        self.launch(&mut set, &mut tracks, &join.base, step, phase);
                        self.flush().await?;
                    }
                }
                Report::Done { step, result } => {
                    let Some(track) = tracks.get_mut(&step) else {
                        continue;
                    };
                    track.in_flight = false;
                    match result {
                        Ok(member_state) => {
                            let stored = match to_raw(&member_state) {
                                Ok(member) => {
                                    join.results.insert(step, member_state);
                                    let merged = join
                                        .results
                                        .values()
                                        .fold(join.base.clone(), |acc, m| merge(acc, m.clone()));
                                    match to_raw(&merged) {
                                        Ok(state) => Ok((merged, state, member)),
                                        Err(e) => {
                                            join.results.remove(&step);
                                            Err(e)
                                        }
                                    }
                                }
                                Err(e) => Err(e),
                            };
                            match stored {
                                Ok((merged, state, member)) => {
                                    self.state = merged;
                                    self.record(match phase {
                                        Phase::Action => SagaEvent::StepCompleted {
                                            step,
                                            state,
                                            member: Some(member),
                                        },
                                        Phase::Compensate => {
                                            SagaEvent::CompensationCompleted { step, state }
                                        }
                                    });
                                }
                                Err(e) => {
                                    // The effect happened but cannot be stored: no new attempt,
                                    // no compensation of its own; the caller makes the saga stuck
                                    // (unless a failure before it already rolls the group back,
                                    // which compensates this member too: it is in doubt).
                                    let attempt = self.attempts(step, phase);
                                    let error =
                                        StepError::new(StepErrorKind::Unstorable, e.to_string());
                                    tracing::warn!(saga_id = %self.id, step, %error, "group member output cannot be stored");
                                    self.record(failed_event(
                                        phase,
                                        step,
                                        attempt,
                                        StepErrorKind::Unstorable,
                                        error.message().to_owned(),
                                        None,
                                    ));
                                    if failure.is_none() {
                                        failure = Some((step, error));
                                        if cancel {
                                            set.abort_all();
                                        }
                                    }
                                }
                            }
                        }
                        Err(error) => {
                            let attempt = self.attempts(step, phase);
                            let (kind, message) = (error.kind(), error.message().to_owned());
                            let retriable_step = phase == Phase::Action
                                && self
                                    .def
                                    .steps
                                    .get(step as usize)
                                    .is_some_and(|s| s.kind == StepKind::Retriable);
                            let delay = if failure.is_none() {
                                track.retries.next_delay(kind, retriable_step)
                            } else {
                                None
                            };
                            let retry_at_ms = delay.map(|d| {
                                super::now_ms().saturating_add(
                                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                                )
                            });
                            self.record(failed_event(
                                phase,
                                step,
                                attempt,
                                kind,
                                message,
                                retry_at_ms,
                            ));
                            if let Some(delay) = delay {
                                tracing::debug!(saga_id = %self.id, step, attempt, ?delay, %error, "retrying group member");
                                set.spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    Report::RetryDue { step }
                                });
                            } else if failure.is_none() {
                                tracing::debug!(saga_id = %self.id, step, %error, "group member failed");
                                if phase == Phase::Action && !self.pivot_done() {
                                    self.begin_compensation(step, error.to_string());
                                }
                                failure = Some((step, error));
                                if cancel {
                                    set.abort_all();
                                }
                            }
                        }
                    }
                    self.flush().await?;
                }
            }
        }
        // Attempts cancelled before they reported: their effect is unknown.
        let mut cancelled: Vec<u32> = tracks
            .iter()
            .filter(|(_, t)| t.in_flight)
            .map(|(&i, _)| i)
            .collect();
        cancelled.sort_unstable();
        for step in cancelled {
            let attempt = self.attempts(step, Phase::Action);
            self.record(SagaEvent::StepFailed {
                step,
                attempt,
                kind: StepErrorKind::Cancelled,
                error: "cancelled: another member of the group failed".into(),
                retry_at_ms: None,
            });
        }
        self.flush().await?;
        Ok(failure)
    }
}
