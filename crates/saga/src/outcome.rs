//! How a saga ended (or stopped), and the handle that waits for it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::context::Phase;
use crate::definition::SagaState;
use crate::error::SagaError;

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
        })
    }
}

/// Waits for a saga's outcome. Dropping it does not affect the saga.
pub struct SagaHandle<S> {
    saga_id: Arc<str>,
    rx: watch::Receiver<Published>,
    _state: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for SagaHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaHandle")
            .field("saga_id", &self.saga_id)
            .finish_non_exhaustive()
    }
}

impl<S: SagaState> SagaHandle<S> {
    pub(crate) fn new(saga_id: Arc<str>, rx: watch::Receiver<Published>) -> Self {
        Self {
            saga_id,
            rx,
            _state: PhantomData,
        }
    }

    /// The saga's id.
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// Waits until the saga completes, is compensated, gets stuck or is resolved.
    ///
    /// Errors: the runner stopped without an outcome (a store failure:
    /// [`SagaError::Interrupted`]; another instance took the saga over:
    /// [`SagaError::LeaseLost`]; something panicked in the saga's task, which marked the
    /// saga stuck or quarantined: [`SagaError::Panicked`]), or the final state cannot be decoded as `S`. A saga that was not running in this process when the handle
    /// was made waits for [`recover`](crate::SagaEngine::recover) to resume it.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn outcome(mut self) -> Result<SagaOutcome<S>, SagaError> {
        loop {
            let seen = self.rx.borrow_and_update().clone();
            if let Some(published) = seen {
                return self.finish(published);
            }
            if self.rx.changed().await.is_err() {
                let last = self.rx.borrow().clone();
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
