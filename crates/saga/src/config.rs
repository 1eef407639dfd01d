//! [`SagaEngineBuilder`]: the engine's settings (admission caps, the start queue, how often a
//! handle polls for a saga driven elsewhere), validated by name.

use std::sync::Arc;
use std::time::Duration;

use staunch_core::ConfigError;
use tokio::sync::Semaphore;

use crate::admission::Admission;
use crate::engine::SagaEngine;
use crate::store::{SagaStatus, SagaStore};

/// The default bound of the queue of `start` calls waiting for room under a cap.
pub const DEFAULT_MAX_QUEUED: usize = 1024;

/// The default interval at which a handle polls the store for a saga no runner of this
/// engine drives.
pub const DEFAULT_OUTCOME_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How often, at most, the recovery loop runs the retention policy.
pub const RETENTION_PERIOD: Duration = Duration::from_mins(1);

/// The retention policy the recovery loop runs ([`SagaEngineBuilder::retention`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retention {
    /// How long an ended saga is kept after it ended.
    pub(crate) keep: Duration,
    /// The statuses purged: ended ones only.
    pub(crate) statuses: Vec<SagaStatus>,
}

/// Builds a [`SagaEngine`] with settings; [`SagaEngine::new`] is the same with the defaults
/// (no cap, a 500 ms outcome poll).
///
/// ```
/// use std::time::Duration;
/// use staunch_saga::{MemoryStore, SagaEngine};
///
/// let engine = SagaEngine::builder(MemoryStore::new())
///     .max_running(64)                   // at most 64 sagas run at once ...
///     .max_running_for("payments", 8)    // ... at most 8 of them `payments`
///     .max_queued(1_000)                 // starts beyond that wait, up to 1 000 of them
///     .outcome_poll_interval(Duration::from_secs(1))
///     .build()?;
/// # drop(engine);
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct SagaEngineBuilder {
    store: Arc<dyn SagaStore>,
    max_running: Option<usize>,
    per_definition: Vec<(Arc<str>, usize)>,
    max_queued: usize,
    poll: Duration,
    retention: Option<Duration>,
    retention_statuses: Option<Vec<SagaStatus>>,
}

impl SagaEngineBuilder {
    pub(crate) fn new(store: Arc<dyn SagaStore>) -> Self {
        Self {
            store,
            max_running: None,
            per_definition: Vec::new(),
            max_queued: DEFAULT_MAX_QUEUED,
            poll: DEFAULT_OUTCOME_POLL_INTERVAL,
            retention: None,
            retention_statuses: None,
        }
    }

    /// At most `n` sagas run on this engine at once (default: no cap). A saga runs from its
    /// first step until it ends, gets stuck, or its runner stops; one waiting out a retry
    /// backoff counts as running.
    ///
    /// `start` beyond the cap waits in a queue (see [`max_queued`](Self::max_queued));
    /// recovery resumes sagas only as room frees up, so a restart with many unfinished sagas
    /// never fires more than `n` of them at the dependencies at once.
    ///
    /// A step that starts another saga on the same engine and waits for its outcome holds
    /// its own room meanwhile: with every slot held that way, nothing moves. Give such child
    /// sagas their own engine (or no cap).
    pub fn max_running(mut self, n: usize) -> Self {
        self.max_running = Some(n);
        self
    }

    /// At most `n` sagas of the definition named `definition` (any version) run at once, on
    /// top of [`max_running`](Self::max_running). Setting it again for the same name
    /// replaces it.
    ///
    /// Recovery resumes sagas in id order, loading up to 16 at a time: one waiting for its
    /// definition's room holds back the sagas listed more than 16 after it until room frees
    /// up.
    pub fn max_running_for(mut self, definition: impl Into<Arc<str>>, n: usize) -> Self {
        let definition = definition.into();
        self.per_definition.retain(|(name, _)| *name != definition);
        self.per_definition.push((definition, n));
        self
    }

    /// At most `n` `start` calls wait for room under a cap at once (default
    /// [`DEFAULT_MAX_QUEUED`]); one more is refused at once with
    /// [`SagaError::Overloaded`](crate::SagaError::Overloaded). Zero refuses every start
    /// that finds no room. Recovery and operator actions wait outside this queue.
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = n;
        self
    }

    /// How often a handle for a saga that no runner of this engine drives (it runs on another
    /// instance, or waits for recovery) reloads it from the store (default
    /// [`DEFAULT_OUTCOME_POLL_INTERVAL`]).
    pub fn outcome_poll_interval(mut self, interval: Duration) -> Self {
        self.poll = interval;
        self
    }

    /// Keeps ended sagas (completed, compensated, cancelled, resolved) for `keep` after they
    /// ended, then deletes them: the recovery loop
    /// ([`SagaEngine::spawn_recovery`](crate::SagaEngine::spawn_recovery)) runs
    /// [`purge`](crate::SagaEngine::purge) at its first pass and then at most once every
    /// [`RETENTION_PERIOD`]. Default: none, every saga is kept forever. Stuck, paused,
    /// running and quarantined sagas are never purged by the policy, whatever their age.
    ///
    /// Starting a saga is idempotent on its id only while the saga is kept: once purged,
    /// a `start` with the same id runs a new saga. Keep ended sagas longer than any caller
    /// may retry a start.
    pub fn retention(mut self, keep: Duration) -> Self {
        self.retention = Some(keep);
        self
    }

    /// Narrows the [`retention`](Self::retention) policy to some ended statuses (default:
    /// [`SagaStatus::ENDED`], all of them), e.g. to keep compensated and cancelled sagas
    /// for an audit while completed ones go.
    pub fn retention_statuses(mut self, statuses: impl IntoIterator<Item = SagaStatus>) -> Self {
        self.retention_statuses = Some(statuses.into_iter().collect());
        self
    }

    /// The engine.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: a cap (`max_running`, `max_running_for`) of zero
    /// or above tokio's semaphore limit (`usize::MAX >> 3`), a zero
    /// `outcome_poll_interval`, a zero `retention`, or `retention_statuses` naming a status
    /// that has not ended (or given without `retention`).
    pub fn build(self) -> Result<SagaEngine, ConfigError> {
        #[cfg(feature = "metrics")]
        staunch_core::telemetry::describe_metrics();
        fn cap(field: &'static str, n: usize) -> Result<(), ConfigError> {
            if n == 0 {
                Err(ConfigError::new(field, "must be at least 1 (got 0)"))
            } else if n > Semaphore::MAX_PERMITS {
                Err(ConfigError::new(
                    field,
                    format!("must be at most {} (got {n})", Semaphore::MAX_PERMITS),
                ))
            } else {
                Ok(())
            }
        }
        if let Some(n) = self.max_running {
            cap("max_running", n)?;
        }
        for (name, n) in &self.per_definition {
            cap("max_running_for", *n).map_err(|e| e.within(name))?;
        }
        if self.poll.is_zero() {
            return Err(ConfigError::new(
                "outcome_poll_interval",
                "must be greater than zero",
            ));
        }
        let retention = match (self.retention, self.retention_statuses) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "retention_statuses",
                    "has no effect without `retention`",
                ));
            }
            (Some(keep), _) if keep.is_zero() => {
                return Err(ConfigError::new(
                    "retention",
                    "must be greater than zero (an ended saga is kept at least that long)",
                ));
            }
            (Some(keep), statuses) => {
                let mut statuses = statuses.unwrap_or_else(|| SagaStatus::ENDED.to_vec());
                if let Some(status) = statuses.iter().find(|s| !s.is_terminal()) {
                    return Err(ConfigError::new(
                        "retention_statuses",
                        format!(
                            "`{status}` sagas are never purged by the retention policy; \
                             only ended ones (completed, compensated, resolved, cancelled)"
                        ),
                    ));
                }
                statuses.sort_by_key(|s| s.as_str());
                statuses.dedup();
                Some(Retention { keep, statuses })
            }
        };
        let admission = Admission::new(self.max_running, self.per_definition, self.max_queued);
        Ok(SagaEngine::with_settings(
            self.store, admission, self.poll, retention,
        ))
    }
}
