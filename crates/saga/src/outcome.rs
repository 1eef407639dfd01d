//! How a saga ended (or stopped), and the handle that waits for it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::context::Phase;
use crate::definition::SagaState;
use crate::error::SagaError;
use crate::shared::{Resume, Shared};
use crate::store::{SagaLog, SagaStatus};

/// What awaiting a saga gives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SagaOutcome<S> {
    /// Every step succeeded; the final state.
    Completed(S),
    /// A step failed and every completed step was compensated, in reverse order.
    Compensated {
        /// The step whose failure started compensation.
        failed_step: String,
        /// Its error.
        error: String,
        /// The state after the compensations.
        state: S,
    },
    /// The saga needs an operator (see [`SagaEngine::stuck`](crate::SagaEngine::stuck)).
    Stuck {
        /// The step it is stuck on.
        step: String,
        /// Whether the action or the compensation is stuck.
        phase: Phase,
        /// The last error.
        error: String,
    },
    /// An operator marked the saga resolved.
    Resolved {
        /// The operator's note.
        note: String,
    },
    /// An operator cancelled the saga ([`SagaEngine::cancel`](crate::SagaEngine::cancel))
    /// and every step it had completed was compensated, in reverse order.
    Cancelled {
        /// The reason given with the cancel.
        reason: String,
        /// The state after the compensations.
        state: S,
    },
}

/// The untyped outcome passed from runners to handles.
#[derive(Debug, Clone)]
pub(crate) enum RawOutcome {
    Completed(Arc<RawValue>),
    Compensated {
        failed_step: String,
        error: String,
        state: Arc<RawValue>,
    },
    Stuck {
        step: String,
        phase: Phase,
        error: String,
    },
    Resolved {
        note: String,
    },
    Cancelled {
        reason: String,
        state: Arc<RawValue>,
    },
    /// Not an outcome: the runner held the saga for an operator (paused) and stopped; the
    /// saga's handles keep waiting.
    Paused,
}

/// Why a runner stopped without an outcome.
#[derive(Debug, Clone)]
pub(crate) enum Stopped {
    /// Another instance owns the saga now.
    LeaseLost,
    /// Something panicked in the saga's task; the saga was marked.
    Panicked(String),
    /// Any other reason (store failure, quarantine).
    Other(String),
}

/// What a live saga's watchers receive: an outcome, or why its runner stopped without one.
pub(crate) type Published = Option<Result<RawOutcome, Stopped>>;

impl RawOutcome {
    pub(crate) fn decode<S: SagaState>(self) -> Result<SagaOutcome<S>, SagaError> {
        let state = |raw: &RawValue| {
            serde_json::from_str::<S>(raw.get()).map_err(|e| SagaError::State(e.to_string()))
        };
        Ok(match self {
            Self::Completed(raw) => SagaOutcome::Completed(state(&raw)?),
            Self::Compensated {
                failed_step,
                error,
                state: raw,
            } => SagaOutcome::Compensated {
                failed_step,
                error,
                state: state(&raw)?,
            },
            Self::Stuck { step, phase, error } => SagaOutcome::Stuck { step, phase, error },
            Self::Resolved { note } => SagaOutcome::Resolved { note },
            Self::Cancelled { reason, state: raw } => SagaOutcome::Cancelled {
                reason,
                state: state(&raw)?,
            },
            Self::Paused => {
                return Err(SagaError::Interrupted {
                    saga_id: String::new(),
                    reason: "the saga is paused".into(),
                });
            }
        })
    }
}

/// Waits for a saga's outcome. Dropping it does not affect the saga.
///
/// From [`SagaEngine::start`](crate::SagaEngine::start), an operator action, or by id from
/// [`SagaEngine::handle`](crate::SagaEngine::handle).
pub struct SagaHandle<S> {
    saga_id: Arc<str>,
    source: Source,
    _state: PhantomData<fn() -> S>,
}

/// Where a handle hears the outcome from.
enum Source {
    /// The saga's runner in this process (or its outcome, already known).
    Runner(watch::Receiver<Published>),
    /// No runner of this engine drives the saga (another instance does, or it waits for
    /// recovery): the store, polled, until a runner here takes it up.
    Store {
        shared: Arc<Shared>,
        definition: Arc<dyn Resume>,
    },
}

impl<S> fmt::Debug for SagaHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            Source::Runner(_) => "runner",
            Source::Store { .. } => "store",
        };
        f.debug_struct("SagaHandle")
            .field("saga_id", &self.saga_id)
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

/// The outcome a stored saga's log gives, `None` while it is unfinished.
pub(crate) fn stored_outcome(
    log: &SagaLog,
    definition: &dyn Resume,
) -> Option<Result<RawOutcome, SagaError>> {
    let status = log.summary.status;
    if status.is_resumable() || status == SagaStatus::Paused {
        return None;
    }
    let saga_id = &log.summary.saga_id;
    Some(if status == SagaStatus::Quarantined {
        Err(SagaError::Quarantined {
            saga_id: saga_id.clone(),
            reason: log.summary.note.clone().unwrap_or_default(),
        })
    } else {
        definition.settled(log).map_err(|error| SagaError::Load {
            saga_id: saga_id.clone(),
            error,
        })
    })
}

impl<S: SagaState> SagaHandle<S> {
    pub(crate) fn new(saga_id: Arc<str>, rx: watch::Receiver<Published>) -> Self {
        Self {
            saga_id,
            source: Source::Runner(rx),
            _state: PhantomData,
        }
    }

    /// A handle that already knows the outcome.
    pub(crate) fn settled(saga_id: Arc<str>, outcome: RawOutcome) -> Self {
        let (tx, rx) = watch::channel(Some(Ok(outcome)));
        drop(tx);
        Self::new(saga_id, rx)
    }

    /// A handle for a saga no runner of this engine drives: it polls the store.
    pub(crate) fn polling(
        saga_id: Arc<str>,
        shared: Arc<Shared>,
        definition: Arc<dyn Resume>,
    ) -> Self {
        Self {
            saga_id,
            source: Source::Store { shared, definition },
            _state: PhantomData,
        }
    }

    /// The saga's id.
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// Waits until the saga completes, is compensated, gets stuck or is resolved.
    ///
    /// A saga that a runner of this engine drives is heard from directly. One that no
    /// runner here drives (another instance runs it, or it waits for recovery) is reloaded
    /// from the store every
    /// [`outcome_poll_interval`](crate::SagaEngineBuilder::outcome_poll_interval) (500 ms by
    /// default) until it settles or a runner of this engine takes it up.
    ///
    /// Errors: the runner stopped without an outcome (a store failure:
    /// [`SagaError::Interrupted`]; another instance took the saga over:
    /// [`SagaError::LeaseLost`]; something panicked in the saga's task, which marked the
    /// saga stuck or quarantined: [`SagaError::Panicked`]); the saga is quarantined; the
    /// store failed while polling; or the final state cannot be decoded as `S`.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting; it holds nothing else.
    pub async fn outcome(self) -> Result<SagaOutcome<S>, SagaError> {
        let mut rx = match self.source {
            Source::Runner(ref rx) => rx.clone(),
            Source::Store {
                ref shared,
                ref definition,
            } => match poll(shared, &self.saga_id, &**definition).await {
                Polled::Settled(raw) => return raw?.decode(),
                Polled::Runner(rx) => rx,
            },
        };
        loop {
            let seen = rx.borrow_and_update().clone();
            if let Some(published) = seen {
                return self.finish(published);
            }
            if rx.changed().await.is_err() {
                let last = rx.borrow().clone();
                return match last {
                    Some(published) => self.finish(published),
                    None => Err(SagaError::Interrupted {
                        saga_id: self.saga_id.to_string(),
                        reason: "the engine dropped the saga".into(),
                    }),
                };
            }
        }
    }

    fn finish(&self, published: Result<RawOutcome, Stopped>) -> Result<SagaOutcome<S>, SagaError> {
        match published {
            Ok(raw) => raw.decode(),
            Err(Stopped::LeaseLost) => Err(SagaError::LeaseLost {
                saga_id: self.saga_id.to_string(),
            }),
            Err(Stopped::Panicked(message)) => Err(SagaError::Panicked {
                saga_id: self.saga_id.to_string(),
                message,
            }),
            Err(Stopped::Other(reason)) => Err(SagaError::Interrupted {
                saga_id: self.saga_id.to_string(),
                reason,
            }),
        }
    }
}

/// What polling the store for a saga found.
enum Polled {
    Settled(Result<RawOutcome, SagaError>),
    /// A runner of this engine drives it now.
    Runner(watch::Receiver<Published>),
}

/// Reloads the saga every poll interval until it settles or a runner here takes it up.
async fn poll(shared: &Shared, id: &str, definition: &dyn Resume) -> Polled {
    loop {
        // Checked before each load: a runner here that finishes after this check has
        // written its last row before the load reads the log.
        if let Some((rx, _)) = shared.subscribe_running(id) {
            return Polled::Runner(rx);
        }
        match shared.store().load(id).await {
            Err(e) => return Polled::Settled(Err(e.into())),
            Ok(None) => return Polled::Settled(Err(SagaError::NotFound(id.to_owned()))),
            Ok(Some(log)) => {
                if let Some(outcome) = stored_outcome(&log, definition) {
                    return Polled::Settled(outcome);
                }
            }
        }
        tokio::time::sleep(shared.poll_interval()).await;
    }
}
