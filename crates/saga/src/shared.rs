//! What every part of one engine shares: its store, its counters, the registered
//! definitions, and the sagas this process drives or has handles waiting on.
//!
//! Everything goes through the methods of [`Shared`]; its fields are private, so the rules
//! of the live map (one runner per saga, handles answered once) are kept here only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::admission::{Admission, Permit};
use crate::config::Retention;
use crate::definition::{DefinitionInner, SagaState, Shape};
use crate::error::{LoadError, SagaError, StoreError};
use crate::metrics::{Count, Counters, SagaMetrics};
use crate::outcome::{Published, RawOutcome, Stopped};
use crate::replay::Progress;
use crate::store::{SagaLog, SagaStore};

/// The state one engine and all its clones share.
pub(crate) struct Shared {
    store: Arc<dyn SagaStore>,
    counters: Counters,
    registry: RwLock<Registry>,
    live: Mutex<HashMap<Arc<str>, Live>>,
    admission: Admission,
    poll: Duration,
    retention: Option<Retention>,
}

/// Registered definitions by name and version.
type Registry = HashMap<(Arc<str>, u32), Arc<dyn Resume>>;

/// A definition's name and version.
pub(crate) type Named = (Arc<str>, u32);

/// An operator's request for a saga, kept in the store (see
/// [`SagaStore::set_request`](crate::SagaStore::set_request)) until its runner acts on it
/// at a step boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OperatorRequest {
    /// Stop moving forward and compensate.
    Cancel { reason: String, actor: String },
    /// Hold the saga at its next step boundary.
    Pause { actor: String },
}

impl OperatorRequest {
    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn decode(stored: &str) -> Option<Self> {
        serde_json::from_str(stored).ok()
    }
}

/// The signal from `cancel`/`pause` to a saga's runner in this process: a flag read at each
/// step boundary, and a wake-up for a runner waiting out a backoff.
#[derive(Debug, Default)]
pub(crate) struct Control {
    requested: AtomicBool,
    notify: Notify,
}

impl Control {
    pub(crate) fn signal(&self) {
        self.requested.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether a request was signalled since the last call.
    pub(crate) fn take(&self) -> bool {
        self.requested.swap(false, Ordering::AcqRel)
    }

    /// Returns once a request is signalled (at once if one is pending).
    pub(crate) async fn signalled(&self) {
        loop {
            if self.requested.load(Ordering::Acquire) {
                return;
            }
            self.notify.notified().await;
        }
    }
}

/// A saga this engine runs or has handles waiting on.
struct Live {
    tx: watch::Sender<Published>,
    /// Operators' requests for its runner.
    control: Arc<Control>,
    /// A runner of this process drives it.
    running: bool,
    /// Its definition, once known (recovery claims before it loads the log).
    definition: Option<(Arc<str>, u32)>,
}

impl Live {
    fn new(running: bool, definition: Option<(Arc<str>, u32)>) -> Self {
        let (tx, _) = watch::channel(None);
        Self {
            tx,
            control: Arc::default(),
            running,
            definition,
        }
    }
}

/// A registered definition with its state type erased, so recovery and the operator API
/// can resume any saga (implemented where runners are spawned).
pub(crate) trait Resume: Send + Sync {
    fn step_count(&self) -> usize;
    /// What another registration under the same name and version must agree on.
    fn shape(&self) -> Shape;
    /// The definition's address: the same definition registered twice is the same one.
    fn definition_ptr(&self) -> *const ();
    fn resume(
        &self,
        shared: &Arc<Shared>,
        id: Arc<str>,
        progress: Progress,
        permit: Permit,
    ) -> Result<Replayed, LoadError>;
    /// The outcome of a saga whose log has ended (or is stuck).
    fn settled(&self, log: &SagaLog) -> Result<RawOutcome, LoadError>;
    /// The pivot step `progress` has completed, if any.
    fn pivot_done(&self, progress: &Progress) -> Option<String>;
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

/// What [`Shared::enter`] found for a saga `start` asks for.
pub(crate) enum Entry {
    /// New here: the caller drives it (and must [`forget`](Shared::forget) it on failure).
    Claimed(watch::Receiver<Published>),
    /// Known here already (running, or with handles waiting for recovery).
    Existing(watch::Receiver<Published>),
    /// Known here under another definition.
    Mismatch { definition: String, version: u32 },
}

impl Shared {
    pub(crate) fn new(
        store: Arc<dyn SagaStore>,
        admission: Admission,
        poll: Duration,
        retention: Option<Retention>,
    ) -> Self {
        Self {
            store,
            counters: Counters::default(),
            registry: RwLock::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            admission,
            poll,
            retention,
        }
    }

    /// The retention policy the recovery loop runs, if any.
    pub(crate) fn retention(&self) -> Option<&Retention> {
        self.retention.as_ref()
    }

    /// The engine's caps.
    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    /// How often a handle polls the store for a saga no runner here drives.
    pub(crate) fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// The store.
    pub(crate) fn store(&self) -> &Arc<dyn SagaStore> {
        &self.store
    }

    // --- counters -------------------------------------------------------------------------

    pub(crate) fn count(&self, what: Count, definition: &str) {
        self.counters.count(what, definition);
    }

    /// Counts sagas purged.
    pub(crate) fn purged(&self, n: u64) {
        self.counters.purged(n);
    }

    /// Counts one attempt of a step.
    pub(crate) fn attempt(&self, definition: &str, step: &str, elapsed: Duration, failed: bool) {
        self.counters.attempt(definition, step, elapsed, failed);
    }

    pub(crate) fn metrics(&self) -> SagaMetrics {
        self.counters.snapshot()
    }

    /// Counts a running saga task until the returned guard drops (even if the task is
    /// cancelled).
    pub(crate) fn in_flight(self: &Arc<Self>, definition: Arc<str>) -> InFlight {
        self.counters.in_flight(&definition, 1);
        InFlight(Arc::clone(self), definition)
    }

    // --- definitions ----------------------------------------------------------------------

    /// Makes a definition known. The same name and version again replaces it when the two
    /// have the same [`Shape`]; a different one is refused.
    pub(crate) fn register<S: SagaState>(
        &self,
        definition: &Arc<DefinitionInner<S>>,
    ) -> Result<(), SagaError> {
        self.register_with(definition, true)
    }

    /// Like [`register`](Self::register), but keeps a registered definition of the same
    /// shape (what `start` does).
    pub(crate) fn register_if_absent<S: SagaState>(
        &self,
        definition: &Arc<DefinitionInner<S>>,
    ) -> Result<(), SagaError> {
        self.register_with(definition, false)
    }

    fn register_with<S: SagaState>(
        &self,
        definition: &Arc<DefinitionInner<S>>,
        replace: bool,
    ) -> Result<(), SagaError> {
        let key = (Arc::clone(&definition.name), definition.version);
        // `start` calls this each time with the definition registered already: a read lock
        // and a pointer comparison, no shape built.
        // Ok(true): nothing to insert; Ok(false): insert; Err: a definition of another shape.
        let settled = |known: Option<&Arc<dyn Resume>>| -> Result<bool, SagaError> {
            let Some(known) = known else {
                return Ok(false);
            };
            if known.definition_ptr() != Arc::as_ptr(definition).cast::<()>()
                && let Some(difference) = known.shape().difference(&definition.shape())
            {
                return Err(SagaError::DefinitionConflict {
                    definition: definition.name.to_string(),
                    version: definition.version,
                    difference,
                });
            }
            Ok(!replace)
        };
        if settled(
            self.registry
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key),
        )? {
            return Ok(());
        }
        let mut registry = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked again: another registration may have come in between the two locks.
        if settled(registry.get(&key))? {
            return Ok(());
        }
        registry.insert(key, Arc::new(Arc::clone(definition)));
        Ok(())
    }

    /// Whether any definition is registered.
    pub(crate) fn has_definitions(&self) -> bool {
        !self
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    pub(crate) fn definition(&self, name: &str, version: u32) -> Option<Arc<dyn Resume>> {
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        registry.get(&(Arc::from(name), version)).cloned()
    }

    // --- the sagas this process drives ----------------------------------------------------

    fn live(&self) -> MutexGuard<'_, HashMap<Arc<str>, Live>> {
        // Held only for map operations that cannot panic half-way.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `start` of saga `id` with definition `name`/`version`: claims it when it is new here.
    pub(crate) fn enter(&self, id: &Arc<str>, name: &Arc<str>, version: u32) -> Entry {
        let mut live = self.live();
        if let Some(l) = live.get_mut(id) {
            if let Some((known, known_version)) = &l.definition
                && (**known != **name || *known_version != version)
            {
                return Entry::Mismatch {
                    definition: known.to_string(),
                    version: *known_version,
                };
            }
            if l.running {
                return Entry::Existing(l.tx.subscribe());
            }
            // Known here with nobody driving it (handles wait for it): `start` drives it.
            l.running = true;
            l.definition = Some((Arc::clone(name), version));
            return Entry::Claimed(l.tx.subscribe());
        }
        let entry = Live::new(true, Some((Arc::clone(name), version)));
        let rx = entry.tx.subscribe();
        live.insert(Arc::clone(id), entry);
        Entry::Claimed(rx)
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
                live.insert(Arc::clone(id), Live::new(true, None));
                true
            }
        }
    }

    /// Claims a saga no runner drives (stuck, paused) for an operator action that resumes it: a receiver for its next
    /// outcome (handles already waiting see it too), `None` if a runner drives it.
    pub(crate) fn claim_idle(
        &self,
        id: &Arc<str>,
        definition: (Arc<str>, u32),
    ) -> Option<watch::Receiver<Published>> {
        let mut live = self.live();
        match live.get_mut(id) {
            Some(l) if l.running => None,
            Some(l) => {
                l.running = true;
                l.definition = Some(definition);
                Some(l.tx.subscribe())
            }
            None => {
                let entry = Live::new(true, Some(definition));
                let rx = entry.tx.subscribe();
                live.insert(Arc::clone(id), entry);
                Some(rx)
            }
        }
    }

    /// No runner of this process drives the saga any more; its handles keep waiting (and
    /// without a handle waiting, it is forgotten).
    pub(crate) fn unclaim(&self, id: &str) {
        let mut live = self.live();
        if let Some(l) = live.get_mut(id) {
            l.running = false;
            if l.tx.receiver_count() == 0 {
                live.remove(id);
            }
        }
    }

    /// A receiver for the saga's next outcome if a runner of this process drives it, with
    /// the definition it runs under when known.
    pub(crate) fn subscribe_running(
        &self,
        id: &str,
    ) -> Option<(watch::Receiver<Published>, Option<Named>)> {
        self.live()
            .get(id)
            .filter(|l| l.running)
            .map(|l| (l.tx.subscribe(), l.definition.clone()))
    }

    /// Where the runner of saga `id` hears operators' requests (the saga is claimed here).
    pub(crate) fn control(&self, id: &str) -> Arc<Control> {
        self.live()
            .get(id)
            .map_or_else(Arc::default, |l| Arc::clone(&l.control))
    }

    /// Tells the runner of saga `id` in this process, if any, that a request was stored.
    pub(crate) fn signal(&self, id: &str) {
        if let Some(l) = self.live().get(id).filter(|l| l.running) {
            l.control.signal();
        }
    }

    /// Forgets a saga claimed by `start` that no runner took over; its handles close.
    pub(crate) fn forget(&self, id: &str) {
        self.live().remove(id);
    }

    /// Answers the saga's handles with `published` and forgets it.
    pub(crate) fn answer(&self, id: &str, published: Published) {
        if let Some(live) = self.live().remove(id) {
            live.tx.send_replace(published);
        }
    }

    /// A runner's result: counted (unless `counted` is false: a replay of a log that had
    /// already ended was counted when it ended), logged, and sent to the saga's handles.
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
            Ok(RawOutcome::Cancelled { .. }) => Some(Count::Cancelled),
            Ok(RawOutcome::Paused) | Err(_) => None,
        };
        if let Some(what) = what
            && counted
        {
            self.count(what, definition);
        }
        match &result {
            Ok(RawOutcome::Stuck { step, error, .. }) => {
                tracing::warn!(saga_id = %id, step, error, "saga is stuck and needs an operator");
            }
            Ok(_) => tracing::debug!(saga_id = %id, "saga finished"),
            Err(SagaError::Store(StoreError::LeaseLost { .. })) => {
                self.count(Count::LeaseLost, definition);
                tracing::warn!(saga_id = %id, "saga lease lost: another instance drives it now; stopping here");
            }
            Err(e) => tracing::error!(saga_id = %id, error = %e, "saga runner stopped"),
        }
        let published = result.map_err(|e| match e {
            SagaError::Store(StoreError::LeaseLost { .. }) => Stopped::LeaseLost,
            SagaError::Panicked { message, .. } => Stopped::Panicked(message),
            e => Stopped::Other(e.to_string()),
        });
        self.answer(id, Some(published));
    }
}

/// Counts a running saga task; the count drops even if the task is cancelled.
pub(crate) struct InFlight(Arc<Shared>, Arc<str>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.counters.in_flight(&self.1, -1);
    }
}
