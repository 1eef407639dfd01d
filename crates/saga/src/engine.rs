//! The engine: starts sagas, runs them on tokio tasks, recovers them, and the operator API.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use futures_util::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use crate::definition::{DefinitionInner, SagaDefinition, SagaState};
use crate::error::{LoadError, SagaError, StoreError};
use crate::event::SagaEvent;
use crate::guard;
use crate::metrics::{Count, Counters, SagaMetrics};
use crate::outcome::{Published, RawOutcome, SagaHandle, Stopped};
use crate::recovery::{SagaTimeline, TimelineEntry, panic_message, settled_outcome};
use crate::replay::Progress;
use crate::runner::Runner;
use crate::store::{Created, ListFilter, NewSaga, SagaStatus, SagaStore, SagaSummary};

/// Runs sagas against a [`SagaStore`]. Cheap to clone; clones share everything.
///
/// Each saga runs on its own tokio task (so the engine must be used inside a tokio runtime).
/// Register every definition before calling [`recover`](Self::recover).
///
/// A compensation that keeps failing leaves the saga stuck until an operator acts:
///
/// ```
/// use staunch_saga::{
///     MemoryStore, StepRetry, SagaDefinition, SagaEngine, SagaOutcome, Step, StepError,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let def = SagaDefinition::<u32>::builder("transfer", 1)
///     .step(Step::new("debit", |n, _| async move { Ok(n) })
///         .compensate(|_n, _| async move { Err(StepError::fail("ledger locked")) })
///         .compensation_retry(StepRetry::new(1)))
///     .step(Step::new("credit", |_n, _| async move { Err(StepError::fail("account closed")) }))
///     .build()?;
/// let engine = SagaEngine::new(MemoryStore::new());
/// let outcome = engine.start(&def, "t-1", 100).await?.outcome().await?;
/// assert!(matches!(outcome, SagaOutcome::Stuck { ref step, .. } if step == "debit"));
/// assert_eq!(engine.stuck().await?[0].saga_id, "t-1");
///
/// // Fixed by hand: record it and close the saga.
/// engine.resolve("t-1", "debit reversed manually, ticket 981").await?;
/// assert!(engine.stuck().await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SagaEngine {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for SagaEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaEngine")
            .field("store", &self.shared.store)
            .field("metrics", &self.shared.counters.snapshot())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn SagaStore>,
    pub(crate) counters: Counters,
    registry: RwLock<Registry>,
    live: Mutex<HashMap<Arc<str>, Live>>,
}

/// Registered definitions by name and version.
type Registry = HashMap<(Arc<str>, u32), Arc<dyn Resume>>;

/// A saga this engine runs or has handles waiting on.
pub(crate) struct Live {
    pub(crate) tx: watch::Sender<Published>,
    /// A runner of this process drives it.
    pub(crate) running: bool,
    /// Its definition, once known (recovery claims before it loads the log).
    pub(crate) definition: Option<(Arc<str>, u32)>,
}

/// A registered definition with its state type erased, so recovery can resume any saga.
pub(crate) trait Resume: Send + Sync {
    fn step_count(&self) -> usize;
    fn resume(
        &self,
        shared: &Arc<Shared>,
        id: Arc<str>,
        progress: Progress,
    ) -> Result<Replayed, LoadError>;
}

/// What resuming a replayed log started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replayed {
    /// The saga was unfinished: a runner drives it on.
    Resumed,
    /// The log had already ended (the saga finished after it was listed, or its summary was
    /// stale): the runner only corrects the summary and answers handles, counting nothing.
    Settled,
}

impl<S: SagaState> Resume for Arc<DefinitionInner<S>> {
    fn step_count(&self) -> usize {
        self.steps.len()
    }

    fn resume(
        &self,
        shared: &Arc<Shared>,
        id: Arc<str>,
        progress: Progress,
    ) -> Result<Replayed, LoadError> {
        let runner = Runner::resume(Arc::clone(shared), Arc::clone(self), id, progress)
            .map_err(LoadError::Inconsistent)?;
        let replayed = if runner.replayed_settled() {
            Replayed::Settled
        } else {
            Replayed::Resumed
        };
        spawn(runner);
        Ok(replayed)
    }
}

fn spawn<S: SagaState>(mut runner: Runner<S>) {
    let span = tracing::info_span!("saga", saga_id = %runner.id, definition = %runner.def.name);
    let in_flight = InFlight::enter(Arc::clone(&runner.shared), Arc::clone(&runner.def.name));
    tokio::spawn(
        async move {
            let _in_flight = in_flight;
            // The unwind guard: whatever panics in here, the saga is marked and its handles
            // answered, and the engine forgets it.
            let result = AssertUnwindSafe(runner.drive()).catch_unwind().await;
            let failure = match &result {
                Err(panic) => Some(panic_message(&**panic)),
                Ok(Err(SagaError::Load { error, .. })) if runner.broken.is_some() => {
                    Some(format!("the engine recorded an invalid event ({error})"))
                }
                Ok(_) => None,
            };
            let result = match (result, failure) {
                (Ok(result), None) => result,
                (_, message) => {
                    let message = message.unwrap_or_default();
                    tracing::error!(saga_id = %runner.id, message, "the saga's task panicked");
                    let reason = format!("the saga's task panicked: {message}");
                    guard::mark(&runner.shared, &runner.def, &runner.id, &reason).await;
                    Err(SagaError::Panicked {
                        saga_id: runner.id.to_string(),
                        message,
                    })
                }
            };
            // Whatever happened, this process stops driving it: a leased store lets the
            // lease expire (terminal appends already released it).
            runner.shared.store.release(&runner.id);
            let counted = !runner.replayed_settled();
            runner
                .shared
                .publish(&runner.id, &runner.def.name, result, counted);
        }
        .instrument(span),
    );
}

/// Counts a running saga task; the count drops even if the task is cancelled.
struct InFlight(Arc<Shared>, Arc<str>);

impl InFlight {
    fn enter(shared: Arc<Shared>, definition: Arc<str>) -> Self {
        shared.counters.in_flight(&definition, 1);
        Self(shared, definition)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counters.in_flight(&self.1, -1);
    }
}

impl Shared {
    pub(crate) fn live(&self) -> MutexGuard<'_, HashMap<Arc<str>, Live>> {
        // Held only for map operations that cannot panic half-way.
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers the saga's handles and forgets it; counts the outcome when `counted` (a
    /// replay of a log that had already ended was counted when it ended).
    pub(crate) fn publish(
        &self,
        id: &Arc<str>,
        definition: &str,
        result: Result<RawOutcome, SagaError>,
        counted: bool,
    ) {
        let what = match &result {
            Ok(RawOutcome::Completed(_)) => Some(Count::Completed),
            Ok(RawOutcome::Compensated { .. }) => Some(Count::Compensated),
            Ok(RawOutcome::Stuck { .. }) => Some(Count::Stuck),
            Ok(RawOutcome::Resolved { .. }) => Some(Count::Resolved),
            Err(_) => None,
        };
        if let Some(what) = what
            && counted
        {
            self.counters.count(what, definition);
        }
        match &result {
            Ok(RawOutcome::Stuck { step, error, .. }) => {
                tracing::warn!(saga_id = %id, step, error, "saga is stuck and needs an operator");
            }
            Ok(_) => tracing::debug!(saga_id = %id, "saga finished"),
            Err(SagaError::Store(StoreError::LeaseLost { .. })) => {
                self.counters.count(Count::LeaseLost, definition);
                tracing::warn!(saga_id = %id, "saga lease lost: another instance drives it now; stopping here");
            }
            Err(e) => tracing::error!(saga_id = %id, error = %e, "saga runner stopped"),
        }
        let published = result.map_err(|e| match e {
            SagaError::Store(StoreError::LeaseLost { .. }) => Stopped::LeaseLost,
            SagaError::Panicked { message, .. } => Stopped::Panicked(message),
            e => Stopped::Other(e.to_string()),
        });
        if let Some(live) = self.live().remove(id) {
            live.tx.send_replace(Some(published));
        }
    }

    pub(crate) fn definition(&self, name: &str, version: u32) -> Option<Arc<dyn Resume>> {
        let registry = self
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry.get(&(Arc::from(name), version)).cloned()
    }

    /// Marks a saga as driven by a runner of this process; false if one already drives it.
    pub(crate) fn claim(&self, id: &Arc<str>) -> bool {
        let mut live = self.live();
        match live.get_mut(id) {
            Some(l) if l.running => false,
            Some(l) => {
                l.running = true;
                true
            }
            None => {
                let (tx, _) = watch::channel(None);
                live.insert(
                    Arc::clone(id),
                    Live {
                        tx,
                        running: true,
                        definition: None,
                    },
                );
                true
            }
        }
    }

    pub(crate) fn unclaim(&self, id: &str) {
        let mut live = self.live();
        if let Some(l) = live.get_mut(id) {
            l.running = false;
        }
    }
}

/// Removes a claim made by `start` when the call is cancelled or fails before a runner
/// takes it over.
struct ClaimGuard<'a> {
    shared: &'a Shared,
    id: Arc<str>,
    armed: bool,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.live().remove(&self.id);
        }
    }
}

impl SagaEngine {
    /// An engine over `store`.
    pub fn new(store: impl SagaStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// An engine over a shared store.
    pub fn from_arc(store: Arc<dyn SagaStore>) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                counters: Counters::default(),
                registry: RwLock::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        &self.shared.store
    }

    /// Makes a definition known for recovery and operator actions. Registering the same
    /// name and version again replaces it.
    pub fn register<S: SagaState>(&self, definition: &SagaDefinition<S>) {
        let mut registry = self
            .shared
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry.insert(
            (Arc::clone(&definition.inner.name), definition.inner.version),
            Arc::new(Arc::clone(&definition.inner)),
        );
    }

    fn register_if_absent<S: SagaState>(&self, definition: &SagaDefinition<S>) {
        let key = (Arc::clone(&definition.inner.name), definition.inner.version);
        let known = self
            .shared
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&key);
        if !known {
            self.register(definition);
        }
    }

    /// Starts a saga, or returns the existing one with this id (start is idempotent).
    ///
    /// The `started` event and the first step's first attempt are durably appended before
    /// this returns; the saga then runs on its own task. Also registers the definition.
    ///
    /// Errors: the id belongs to a saga of another definition, or is quarantined; the store
    /// failed; the input does not serialize.
    ///
    /// # Cancel safety
    /// If the future is dropped before it finishes, the saga may or may not have been
    /// created; calling `start` again with the same id settles it either way.
    pub async fn start<S: SagaState>(
        &self,
        definition: &SagaDefinition<S>,
        saga_id: impl Into<Arc<str>>,
        input: S,
    ) -> Result<SagaHandle<S>, SagaError> {
        let id: Arc<str> = saga_id.into();
        self.register_if_absent(definition);
        let rx = {
            let mut live = self.shared.live();
            if let Some(l) = live.get(&id) {
                if let Some((name, version)) = &l.definition
                    && (**name != *definition.inner.name || *version != definition.inner.version)
                {
                    return Err(SagaError::DefinitionMismatch {
                        saga_id: id.to_string(),
                        definition: name.to_string(),
                        version: *version,
                    });
                }
                return Ok(SagaHandle::new(id, l.tx.subscribe()));
            }
            let (tx, rx) = watch::channel(None);
            live.insert(
                Arc::clone(&id),
                Live {
                    tx,
                    running: true,
                    definition: Some((
                        Arc::clone(&definition.inner.name),
                        definition.inner.version,
                    )),
                },
            );
            rx
        };
        let mut guard = ClaimGuard {
            shared: &self.shared,
            id: Arc::clone(&id),
            armed: true,
        };
        let mut runner = Runner::new(
            Arc::clone(&self.shared),
            Arc::clone(&definition.inner),
            Arc::clone(&id),
            input,
        )?;
        let events = std::mem::take(&mut runner.pending);
        runner.flushed = runner.progress.next_seq;
        let new = NewSaga::new(
            Arc::clone(&id),
            Arc::clone(&definition.inner.name),
            definition.inner.version,
            SagaStatus::Running,
            events,
        );
        match self.shared.store.create(new).await? {
            Created::New => {
                guard.armed = false;
                self.shared
                    .counters
                    .count(Count::Started, &definition.inner.name);
                spawn(runner);
                Ok(SagaHandle::new(id, rx))
            }
            Created::Exists => {
                let log = self
                    .shared
                    .store
                    .load(&id)
                    .await?
                    .ok_or_else(|| SagaError::NotFound(id.to_string()))?;
                let summary = &log.summary;
                if summary.definition != *definition.inner.name
                    || summary.version != definition.inner.version
                {
                    return Err(SagaError::DefinitionMismatch {
                        saga_id: id.to_string(),
                        definition: summary.definition.clone(),
                        version: summary.version,
                    });
                }
                if summary.status == SagaStatus::Quarantined {
                    return Err(SagaError::Quarantined {
                        saga_id: id.to_string(),
                        reason: summary.note.clone().unwrap_or_default(),
                    });
                }
                if summary.status.is_resumable() {
                    // Not driven here yet: the handle waits for recovery to resume it.
                    guard.armed = false;
                    self.shared.unclaim(&id);
                    return Ok(SagaHandle::new(id, rx));
                }
                let outcome =
                    settled_outcome(&log, &definition.inner).map_err(|error| SagaError::Load {
                        saga_id: id.to_string(),
                        error,
                    })?;
                drop(guard);
                let (tx, rx) = watch::channel(Some(Ok(outcome)));
                drop(tx);
                Ok(SagaHandle::new(id, rx))
            }
        }
    }
    /// Sagas waiting for an operator.
    pub async fn stuck(&self) -> Result<Vec<SagaSummary>, SagaError> {
        self.list(&ListFilter::status(SagaStatus::Stuck)).await
    }

    /// Sagas matching `filter` (status and definition), in id order.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaSummary>, SagaError> {
        Ok(self.shared.store.list(filter).await?)
    }

    /// A saga's summary and timeline; rows that do not decode are shown with their error.
    pub async fn inspect(&self, saga_id: &str) -> Result<Option<SagaTimeline>, SagaError> {
        let Some(log) = self.shared.store.load(saga_id).await? else {
            return Ok(None);
        };
        let entries = log
            .events
            .iter()
            .map(|row| TimelineEntry {
                seq: row.seq,
                event: SagaEvent::decode(row.seq, &row.payload),
            })
            .collect();
        Ok(Some(SagaTimeline {
            summary: log.summary,
            entries,
        }))
    }

    /// A snapshot of the engine's counters.
    pub fn metrics(&self) -> SagaMetrics {
        self.shared.counters.snapshot()
    }
}
