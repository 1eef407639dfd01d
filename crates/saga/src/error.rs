//! Errors: what a step returns, what the engine and the stores report.

use std::borrow::Cow;
use std::fmt;

/// The error a step's action or compensation returns: retryable or a business failure.
///
/// A retryable error (a timeout, a 503, a dropped connection) is retried with the step's
/// [`StepRetry`](crate::StepRetry). A business failure (card declined, out of stock) is
/// final: the saga starts compensating at once. Only the message is kept: it is written to
/// the durable log, so it must make sense after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    kind: StepErrorKind,
    message: Cow<'static, str>,
}

/// Whether a [`StepError`] may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepErrorKind {
    /// Worth another attempt with the step's retry policy.
    Retryable,
    /// Final: compensate now (for a compensation: the saga is stuck).
    Business,
    /// The attempt passed the step's per-attempt timeout (retryable; its effect is unknown).
    Timeout,
    /// The step panicked (final, like a business failure).
    Panicked,
    /// The saga's deadline passed while the attempt ran (its effect is unknown).
    Deadline,
    /// The process stopped while the attempt ran; found by recovery (its effect is unknown).
    Interrupted,
    /// The attempt was cancelled while it ran (its effect is unknown): another member of
    /// its parallel group failed, or an operator cancelled the saga and the step aborts on
    /// cancel ([`OnCancel::Abort`](crate::OnCancel::Abort)).
    Cancelled,
    /// The attempt succeeded but its output (the new state) cannot be serialized, so it
    /// cannot be stored: the effect happened, the saga is stuck for an operator.
    Unstorable,
    /// The step cannot tell whether its effect happened (a dropped connection after the
    /// request was sent, a gateway timeout): retryable, and compensated too when the saga
    /// rolls back ([`StepError::in_doubt`]).
    InDoubt,
}

impl StepErrorKind {
    /// Whether the retry policy may try again after this error.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Retryable | Self::Timeout | Self::InDoubt)
    }

    /// Whether the participant may or may not have applied the attempt (timeouts, deadline,
    /// interruption). Such a step is compensated too when the saga rolls back, so its
    /// compensation must accept an idempotency key whose action never took effect.
    pub fn is_in_doubt(self) -> bool {
        matches!(
            self,
            Self::Timeout
                | Self::Deadline
                | Self::Interrupted
                | Self::Cancelled
                | Self::Unstorable
                | Self::InDoubt
        )
    }
}

impl StepError {
    /// A transient error: the step is retried according to its retry policy.
    pub fn retryable(error: impl fmt::Display) -> Self {
        Self::new(StepErrorKind::Retryable, error.to_string())
    }

    /// A transient error after which the effect may or may not have happened (the request
    /// was sent, the answer was lost): retried like [`retryable`](Self::retryable), and if
    /// the retries run out the step is compensated too, so its compensation must accept a
    /// key whose action never took effect. Use it for timeouts and dropped connections of
    /// calls that change something.
    pub fn in_doubt(error: impl fmt::Display) -> Self {
        Self::new(StepErrorKind::InDoubt, error.to_string())
    }

    /// A business failure: no retry, the saga compensates what it completed.
    pub fn fail(error: impl fmt::Display) -> Self {
        Self::new(StepErrorKind::Business, error.to_string())
    }

    /// An error of the given kind with a message.
    pub fn new(kind: StepErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> StepErrorKind {
        self.kind
    }

    /// The message, as written to the log.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StepErrorKind::Retryable => "retryable",
            StepErrorKind::Business => "business failure",
            StepErrorKind::Timeout => "timed out",
            StepErrorKind::Panicked => "panicked",
            StepErrorKind::Deadline => "saga deadline passed",
            StepErrorKind::Interrupted => "interrupted",
            StepErrorKind::Cancelled => "cancelled",
            StepErrorKind::Unstorable => "output cannot be stored",
            StepErrorKind::InDoubt => "in doubt",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for StepError {}

/// A failure of a [`SagaStore`](crate::SagaStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An append did not start at the saga's next sequence number: another writer appended
    /// first (or the saga does not exist).
    #[error(
        "append conflict for saga `{saga_id}`: expected next sequence {expected}, store has {actual:?}"
    )]
    Conflict {
        /// The saga.
        saga_id: String,
        /// The sequence number the append started at.
        expected: u64,
        /// The store's next sequence number, `None` when the saga does not exist.
        actual: Option<u64>,
    },
    /// A store setting is invalid.
    #[error(transparent)]
    Config(#[from] staunch_core::ConfigError),
    /// Another SQLite store has this database file open, in this process or another: one
    /// engine per file, since two would each recover and drive the same sagas. Held
    /// through an OS file lock on `lock` (the database path with `-lock` appended), which
    /// the operating system releases when the holder exits, however it ends.
    #[error(
        "the saga database `{path}` is open in another store (its lock file `{lock}` is held); one engine per SQLite file"
    )]
    InUse {
        /// The database file.
        path: std::path::PathBuf,
        /// The lock file.
        lock: std::path::PathBuf,
    },
    /// The store has shut down (its writer task ended).
    #[error("the saga store is closed")]
    Closed,
    /// The database reported an error.
    #[error("saga store database error: {0}")]
    Database(String),
    /// The store does not implement this operation (a custom store that kept the trait's
    /// default).
    #[error("this saga store does not support {operation}")]
    Unsupported {
        /// What was asked.
        operation: &'static str,
    },
    /// This instance does not hold the saga's lease (it expired and another instance took the
    /// saga over, or it was never taken): nothing was written. The engine stops driving the
    /// saga without marking it failed; its new owner carries on.
    #[error("lease lost for saga `{saga_id}`: another instance owns it now")]
    LeaseLost {
        /// The saga.
        saga_id: String,
    },
}

/// Why a saga's log could not be turned back into a running saga.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The definition named in the log is not registered with the engine.
    #[error("definition `{name}` version {version} is not registered")]
    UnknownDefinition {
        /// Definition name from the log.
        name: String,
        /// Definition version from the log.
        version: u32,
    },
    /// A row of the log could not be decoded.
    #[error("log row {seq} cannot be decoded: {reason}")]
    Corrupt {
        /// Sequence number of the row.
        seq: u64,
        /// What was wrong with it.
        reason: String,
    },
    /// A decodable row breaks one of the rules a log must follow before it is replayed.
    #[error("log row {seq} breaks the rule that {rule}: {detail}")]
    Invalid {
        /// Sequence number of the row (its position in the log when the numbering itself is
        /// broken).
        seq: u64,
        /// The rule it breaks.
        rule: LogRule,
        /// What exactly was wrong.
        detail: String,
    },
    /// The events are decodable but do not form a valid history for the definition.
    #[error("log is inconsistent: {0}")]
    Inconsistent(String),
}

/// A rule every saga log is checked against before it is replayed (see
/// [`LoadError::Invalid`]). A log that breaks one quarantines its saga; nothing else stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LogRule {
    /// Rows are numbered 0, 1, 2, ... without a gap.
    Sequence,
    /// The first row, and only the first, is `started`.
    StartedFirst,
    /// Nothing follows a terminal event (completed, compensated, resolved).
    TerminalLast,
    /// Every step index names a step of the definition.
    StepIndex,
    /// Attempt numbers count up by one from 1, and a failure names an attempt that started.
    AttemptCounter,
    /// An operator action names the stuck step of a stuck saga.
    OperatorOnStuck,
    /// Cancel, pause and resume follow the saga's stage: a cancel only while it moves
    /// forward, a pause while it runs or compensates, only a resume after a pause, and
    /// `cancelled` ends only a cancelled saga.
    Lifecycle,
}

impl fmt::Display for LogRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sequence => "rows are numbered 0, 1, 2, ... without a gap",
            Self::StartedFirst => "the first row, and only the first, is `started`",
            Self::TerminalLast => "nothing follows a terminal event",
            Self::StepIndex => "every step index names a step of the definition",
            Self::AttemptCounter => {
                "attempt numbers count up by one from 1 and failures name a started attempt"
            }
            Self::OperatorOnStuck => "an operator action names the stuck step of a stuck saga",
            Self::Lifecycle => "cancel, pause and resume follow the saga's stage",
        })
    }
}

/// An error of the [`SagaEngine`](crate::SagaEngine) API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The store failed; the saga keeps its last durable state and resumes on recovery.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The saga's log could not be loaded.
    #[error("saga `{saga_id}`: {error}")]
    Load {
        /// The saga.
        saga_id: String,
        /// What was wrong.
        error: LoadError,
    },
    /// The saga id is taken by a saga of another definition.
    #[error("saga `{saga_id}` exists with definition `{definition}` version {version}")]
    DefinitionMismatch {
        /// The saga.
        saga_id: String,
        /// Its definition.
        definition: String,
        /// Its definition version.
        version: u32,
    },
    /// Another definition with this name and version is registered, and the two differ
    /// in a way a stored log would be replayed against: bump the version.
    #[error(
        "definition `{definition}` version {version} is registered already, and differs: {difference}"
    )]
    DefinitionConflict {
        /// The definition's name.
        definition: String,
        /// Its version.
        version: u32,
        /// The first difference found, in words.
        difference: String,
    },
    /// No saga has this id.
    #[error("no saga `{0}`")]
    NotFound(String),
    /// An operator action needs a stuck saga.
    #[error("saga `{saga_id}` is not stuck (status {status})")]
    NotStuck {
        /// The saga.
        saga_id: String,
        /// Its status.
        status: crate::SagaStatus,
    },
    /// The saga is quarantined: its log could not be loaded earlier.
    #[error("saga `{saga_id}` is quarantined: {reason}")]
    Quarantined {
        /// The saga.
        saga_id: String,
        /// Why.
        reason: String,
    },
    /// A state could not be encoded or decoded as JSON.
    #[error("saga state cannot be (de)serialized: {0}")]
    State(String),
    /// This instance lost the saga's lease (another instance took it over after the lease
    /// expired); this engine stopped driving it and the new owner carries on.
    #[error("saga `{saga_id}` is now driven by another instance (lease lost)")]
    LeaseLost {
        /// The saga.
        saga_id: String,
    },
    /// Something panicked inside the saga's task (engine code, a group's `merge`, the
    /// store). The saga is marked stuck (or, when that cannot be written, quarantined) with
    /// the panic message, so an operator sees it; it does not resume on its own.
    #[error("saga `{saga_id}` stopped: its task panicked ({message})")]
    Panicked {
        /// The saga.
        saga_id: String,
        /// The panic message.
        message: String,
    },
    /// The engine's caps are reached and its queue of waiting starts is full
    /// ([`SagaEngineBuilder::max_queued`](crate::SagaEngineBuilder::max_queued)); nothing
    /// was written. Try again later.
    #[error("saga `{saga_id}` not started: the engine is at its cap and {queued} starts wait")]
    Overloaded {
        /// The saga.
        saga_id: String,
        /// How many starts were waiting.
        queued: usize,
    },
    /// [`recover`](crate::SagaEngine::recover) ran before any definition was registered: it
    /// would have quarantined every unfinished saga as unknown. Every saga it claimed was
    /// given back untouched.
    #[error("recovery needs the definitions first: register them, then recover")]
    NothingRegistered,
    /// A cancel, pause or resume that does not apply to the saga as it stands; nothing was
    /// changed.
    #[error("cannot {action} saga `{saga_id}`: {reason}")]
    Refused {
        /// The saga.
        saga_id: String,
        /// What was asked.
        action: LifecycleAction,
        /// Why it does not apply.
        reason: Refusal,
    },
    /// [`purge`](crate::SagaEngine::purge) was asked to delete sagas in a status that is
    /// never purged: only ended sagas (completed, compensated, cancelled, resolved) and
    /// quarantined ones can be. Nothing was deleted.
    #[error("sagas in status {status} cannot be purged: only ended or quarantined ones")]
    NotPurgeable {
        /// The status asked for.
        status: crate::SagaStatus,
    },
    /// The runner driving the saga stopped without an outcome (store failure or shutdown);
    /// the saga resumes on the next recovery.
    #[error("saga `{saga_id}` stopped without an outcome ({reason}); it resumes on recovery")]
    Interrupted {
        /// The saga.
        saga_id: String,
        /// Why the runner stopped.
        reason: String,
    },
}

/// An operator's lifecycle action on a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LifecycleAction {
    /// [`SagaEngine::cancel`](crate::SagaEngine::cancel).
    Cancel,
    /// [`SagaEngine::pause`](crate::SagaEngine::pause).
    Pause,
    /// [`SagaEngine::resume`](crate::SagaEngine::resume).
    Resume,
}

impl fmt::Display for LifecycleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cancel => "cancel",
            Self::Pause => "pause",
            Self::Resume => "resume",
        })
    }
}

/// Why a lifecycle action does not apply ([`SagaError::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The saga has ended.
    Finished(crate::SagaStatus),
    /// The saga completed its pivot step: from there it only goes forward, so it cannot be
    /// cancelled.
    PivotPassed {
        /// The pivot step.
        step: String,
    },
    /// A cancel was already asked for (or the saga is compensating because of one).
    AlreadyCancelled,
    /// The saga is compensating after a failure: it is already rolling back.
    Compensating,
    /// The saga is paused, or a pause was already asked for.
    AlreadyPaused,
    /// Only a paused saga can be resumed.
    NotPaused(crate::SagaStatus),
    /// The saga is stuck: an operator retries, skips or resolves it instead.
    Stuck,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Finished(status) => write!(f, "it has ended ({status})"),
            Self::PivotPassed { step } => {
                write!(
                    f,
                    "it completed its pivot step `{step}` and only goes forward"
                )
            }
            Self::AlreadyCancelled => f.write_str("it is already cancelled"),
            Self::Compensating => f.write_str("it is already compensating"),
            Self::AlreadyPaused => f.write_str("it is already paused"),
            Self::NotPaused(status) => write!(f, "it is not paused ({status})"),
            Self::Stuck => f.write_str("it is stuck: retry, skip or resolve it instead"),
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}
