//! The engine's public face: [`SagaEngine`] and every method of it. Each method delegates
//! to the module that owns its job (runners and their tasks, recovery, the operator API,
//! log reading); this file owns none of that logic, only `start`'s handshake with the store.

use std::fmt;
use std::sync::Arc;

use crate::admission::{Admission, Permit};
use crate::config::{DEFAULT_OUTCOME_POLL_INTERVAL, Retention, SagaEngineBuilder};
use crate::definition::{SagaDefinition, SagaState};
use crate::error::SagaError;
use crate::event::SagaEvent;
use crate::log::SagaTimeline;
use crate::metrics::{Count, SagaMetrics};
use crate::outcome::{SagaHandle, SagaOutcome, stored_outcome};
use crate::recovery::{self, RecoveryLoop, RecoveryReport, ResumeError};
use crate::runner::Runner;
use crate::shared::{Entry, Replayed, Resume, Shared};
use crate::store::{Created, ListFilter, NewSaga, SagaStatus, SagaStore, SagaSummary};
use crate::{operator, task};

/// Runs sagas against a [`SagaStore`]. Cheap to clone; clones share everything.
///
/// Each saga runs on its own tokio task (so the engine must be used inside a tokio runtime).
/// Register every definition before calling [`recover`](Self::recover) (which refuses to run
/// with none registered, [`SagaError::NothingRegistered`]). `start` and [`handle`](Self::handle)
/// work before recovery too: `start` of an unfinished saga resumes it, a handle waits.
///
/// [`SagaEngine::builder`] caps how many sagas run at once (admission control); recovery is
/// paced by the same caps.
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
/// engine.resolve("t-1", "debit reversed manually, ticket 981", "alice@ops").await?;
/// assert!(engine.stuck().await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SagaEngine {
    shared: Arc<Shared>,
}

impl fmt::Debug for SagaEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaEngine")
            .field("store", self.shared.store())
            .field("metrics", &self.shared.metrics())
            .finish_non_exhaustive()
    }
}

/// Forgets a saga claimed by `start` when the call is cancelled or fails before a runner
/// takes it over.
struct ClaimGuard<'a> {
    shared: &'a Shared,
    id: Arc<str>,
    armed: bool,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.forget(&self.id);
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
        Self::with_settings(
            store,
            Admission::default(),
            DEFAULT_OUTCOME_POLL_INTERVAL,
            None,
        )
    }

    /// An engine with settings: caps on running sagas, the start queue, the outcome poll.
    pub fn builder(store: impl SagaStore) -> SagaEngineBuilder {
        SagaEngineBuilder::new(Arc::new(store))
    }

    /// [`builder`](Self::builder) over a shared store.
    pub fn builder_from_arc(store: Arc<dyn SagaStore>) -> SagaEngineBuilder {
        SagaEngineBuilder::new(store)
    }

    pub(crate) fn with_settings(
        store: Arc<dyn SagaStore>,
        admission: Admission,
        poll: std::time::Duration,
        retention: Option<Retention>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(store, admission, poll, retention)),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SagaStore> {
        self.shared.store()
    }

    /// Makes a definition known for recovery and operator actions.
    ///
    /// Registering the same name and version again replaces it if the two have the same
    /// shape: the same state type, and the same steps in the same order (names, kinds,
    /// groups, which have compensations). That is a rebuilt definition, say with new
    /// clients inside its steps. Anything else is refused with
    /// [`SagaError::DefinitionConflict`], since stored logs of that version would be replayed
    /// against steps they were not written by; give the new definition a new version.
    pub fn register<S: SagaState>(&self, definition: &SagaDefinition<S>) -> Result<(), SagaError> {
        self.shared.register(&definition.inner)
    }

    /// Starts a saga, or returns the existing one with this id (start is idempotent).
    ///
    /// The `started` event and the first step's first attempt are durably appended before
    /// this returns; the saga then runs on its own task. Also registers the definition if
    /// none of its name and version is (one of another shape is an error, as for
    /// [`register`](Self::register)).
    ///
    /// An existing saga with this id: a settled one gives a handle with its outcome; an
    /// unfinished one that no runner here drives (after a restart, before or without
    /// [`recover`](Self::recover)) is resumed here, like recovery would; one another
    /// instance drives (a leased store) gives a handle that polls the store (see
    /// [`SagaHandle::outcome`]). `input` is then ignored.
    ///
    /// Under a cap ([`SagaEngineBuilder::max_running`]) a new saga waits for room first,
    /// in a bounded queue.
    ///
    /// Errors: the id belongs to a saga of another definition, or is quarantined; the
    /// queue of waiting starts is full ([`SagaError::Overloaded`], nothing written); the
    /// store failed; the input does not serialize; the log of an unfinished saga does not
    /// load ([`SagaError::Load`]; recovery quarantines it).
    ///
    /// # Cancel safety
    /// If the future is dropped before it finishes, the saga may or may not have been
    /// created; calling `start` again with the same id settles it either way. A start
    /// dropped while it waits for room leaves the queue and wrote nothing.
    pub async fn start<S: SagaState>(
        &self,
        definition: &SagaDefinition<S>,
        saga_id: impl Into<Arc<str>>,
        input: S,
    ) -> Result<SagaHandle<S>, SagaError> {
        let id: Arc<str> = saga_id.into();
        self.shared.register_if_absent(&definition.inner)?;
        let rx = match self
            .shared
            .enter(&id, &definition.inner.name, definition.inner.version)
        {
            Entry::Claimed(rx) => rx,
            Entry::Existing(rx) => return Ok(SagaHandle::new(id, rx)),
            Entry::Mismatch {
                definition,
                version,
            } => {
                return Err(SagaError::DefinitionMismatch {
                    saga_id: id.to_string(),
                    definition,
                    version,
                });
            }
        };
        let mut guard = ClaimGuard {
            shared: &self.shared,
            id: Arc::clone(&id),
            armed: true,
        };
        let permit = self
            .shared
            .admission()
            .admit_queued(&definition.inner.name)
            .await
            .map_err(|full| SagaError::Overloaded {
                saga_id: id.to_string(),
                queued: full.queued,
            })?;
        let mut runner = Runner::new(
            Arc::clone(&self.shared),
            Arc::clone(&definition.inner),
            Arc::clone(&id),
            input,
        )?;
        let events = runner.take_first_events();
        let new = NewSaga::new(
            Arc::clone(&id),
            Arc::clone(&definition.inner.name),
            definition.inner.version,
            SagaStatus::Running,
            events,
        );
        match self.shared.store().create(new).await? {
            Created::New => {
                guard.armed = false;
                self.shared.count(Count::Started, &definition.inner.name);
                task::spawn(runner, permit);
                Ok(SagaHandle::new(id, rx))
            }
            Created::Exists => {
                // The handle comes from what the store says, below (and a receiver kept
                // here would keep the claim's entry alive after an unclaim).
                drop((runner, rx));
                let log = self
                    .shared
                    .store()
                    .load(&id)
                    .await?
                    .ok_or_else(|| SagaError::NotFound(id.to_string()))?;
                check_definition(&id, &log.summary, definition)?;
                let resume: Arc<dyn Resume> = Arc::new(Arc::clone(&definition.inner));
                if let Some(outcome) = stored_outcome(&log, &*resume) {
                    drop(guard);
                    return Ok(SagaHandle::settled(id, outcome?));
                }
                self.resume_unfinished(&id, &definition.inner.name, permit)
                    .await?;
                guard.armed = false;
                Ok(match self.shared.subscribe_running(&id) {
                    Some((rx, _)) => SagaHandle::new(id, rx),
                    // Another instance drives it, or its runner here already finished.
                    None => SagaHandle::polling(id, Arc::clone(&self.shared), resume),
                })
            }
        }
    }

    /// Resumes an unfinished saga `start` found in the store and claimed here; a leased
    /// store gives its lease first (another instance may drive it: then it is left alone).
    async fn resume_unfinished(
        &self,
        id: &Arc<str>,
        definition: &str,
        permit: Permit,
    ) -> Result<(), SagaError> {
        let store = self.shared.store();
        match store.acquire(id).await {
            Ok(()) => {}
            Err(crate::StoreError::LeaseLost { .. }) => {
                self.shared.unclaim(id);
                return Ok(());
            }
            Err(e) => {
                self.shared.unclaim(id);
                return Err(e.into());
            }
        }
        match recovery::resume(&self.shared, id, permit).await {
            Ok(Replayed::Resumed) => {
                self.shared.count(Count::Resumed, definition);
                Ok(())
            }
            Ok(Replayed::Settled) => Ok(()),
            Err(e) => {
                self.shared.unclaim(id);
                store.release(id);
                Err(match e {
                    ResumeError::Store(e) => e.into(),
                    ResumeError::Load(error) => SagaError::Load {
                        saga_id: id.to_string(),
                        error,
                    },
                })
            }
        }
    }

    /// A handle for the saga `saga_id` of `definition`, without starting anything: it gives
    /// the outcome of a settled saga at once, and waits for an unfinished one, whether a
    /// runner of this engine drives it (started or resumed here, the ids of a
    /// [`RecoveryReport`] included) or not (another instance drives it, or it waits for
    /// recovery: the handle then polls the store, see [`SagaHandle::outcome`]).
    ///
    /// Errors: no saga has this id ([`SagaError::NotFound`]); it belongs to another
    /// definition; it is quarantined; the store failed.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn handle<S: SagaState>(
        &self,
        definition: &SagaDefinition<S>,
        saga_id: impl Into<Arc<str>>,
    ) -> Result<SagaHandle<S>, SagaError> {
        let id: Arc<str> = saga_id.into();
        if let Some((rx, known)) = self.shared.subscribe_running(&id) {
            if let Some((name, version)) = known
                && (*name != *definition.inner.name || version != definition.inner.version)
            {
                return Err(SagaError::DefinitionMismatch {
                    saga_id: id.to_string(),
                    definition: name.to_string(),
                    version,
                });
            }
            return Ok(SagaHandle::new(id, rx));
        }
        let log = self
            .shared
            .store()
            .load(&id)
            .await?
            .ok_or_else(|| SagaError::NotFound(id.to_string()))?;
        check_definition(&id, &log.summary, definition)?;
        let resume: Arc<dyn Resume> = Arc::new(Arc::clone(&definition.inner));
        Ok(match stored_outcome(&log, &*resume) {
            Some(outcome) => SagaHandle::settled(id, outcome?),
            None => SagaHandle::polling(id, Arc::clone(&self.shared), resume),
        })
    }

    /// The outcome of the saga `saga_id` of `definition`: `handle(definition, saga_id)`
    /// then [`SagaHandle::outcome`] (same errors; cancel safe).
    pub async fn outcome<S: SagaState>(
        &self,
        definition: &SagaDefinition<S>,
        saga_id: impl Into<Arc<str>>,
    ) -> Result<SagaOutcome<S>, SagaError> {
        self.handle(definition, saga_id).await?.outcome().await
    }

    /// Sagas waiting for an operator.
    pub async fn stuck(&self) -> Result<Vec<SagaSummary>, SagaError> {
        self.list(&ListFilter::status(SagaStatus::Stuck)).await
    }

    /// Sagas matching `filter` (status and definition), in id order.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaSummary>, SagaError> {
        Ok(self.shared.store().list(filter).await?)
    }

    /// A saga's summary and timeline; rows that do not decode are shown with their error.
    pub async fn inspect(&self, saga_id: &str) -> Result<Option<SagaTimeline>, SagaError> {
        let log = self.shared.store().load(saga_id).await?;
        Ok(log.map(SagaTimeline::of))
    }

    /// A snapshot of the engine's counters.
    pub fn metrics(&self) -> SagaMetrics {
        self.shared.metrics()
    }

    /// Resumes every saga whose log says it is running or compensating and that this engine
    /// does not already run.
    ///
    /// A step whose attempt started without a recorded result is handled by its
    /// [`OnInterrupted`](crate::OnInterrupted) setting: by default it runs again with the
    /// same idempotency key, so delivery is at-least-once. A saga whose definition is not
    /// registered, or whose log does not decode, is quarantined (status `Quarantined`, the
    /// reason in its note, nothing deleted) and reported; the others are resumed.
    ///
    /// Each saga is counted once: one listed as unfinished whose log has ended by the time
    /// it is claimed (its runner finished in between) is reported in
    /// [`settled`](RecoveryReport::settled), and neither its outcome nor a resume is counted
    /// again.
    ///
    /// With a store shared by several instances, only sagas nobody drives are resumed (see
    /// [`SagaStore::claim_resumable`](crate::SagaStore::claim_resumable)): no owner, an expired
    /// lease, or a lease of this instance's owner id it no longer uses. Run it continuously
    /// with [`spawn_recovery`](Self::spawn_recovery).
    pub async fn recover(&self) -> Result<RecoveryReport, SagaError> {
        self.recover_at_most(usize::MAX).await
    }

    /// Like [`recover`](Self::recover), claiming at most `limit` sagas. With a store shared
    /// by several instances (leases), only sagas nobody drives are claimed: no owner, or an
    /// expired lease.
    ///
    /// A store without leases cannot tell which of its unfinished sagas this engine runs, so
    /// for it every pass lists them all and `limit` is ignored.
    pub async fn recover_at_most(&self, limit: usize) -> Result<RecoveryReport, SagaError> {
        recovery::recover(&self.shared, limit).await
    }

    /// Deletes the sagas in one of `statuses` whose status last changed before
    /// `finished_before` (by the store's clock, [`SagaSummary::updated_at`]), each with its
    /// whole log, and returns how many went. Each saga goes atomically, so a crash mid-purge
    /// leaves every saga whole or gone; call it again to finish. A saga whose time the store
    /// does not know is kept.
    ///
    /// Only ended sagas (completed, compensated, resolved, cancelled) and quarantined ones
    /// can be purged; a stuck saga is resolved first. Any other status in `statuses` is
    /// refused with [`SagaError::NotPurgeable`] and nothing is deleted. An empty `statuses`
    /// deletes nothing. For a policy run by the recovery loop, see
    /// [`SagaEngineBuilder::retention`].
    ///
    /// A purged saga is gone: [`outcome`](Self::outcome) and [`inspect`](Self::inspect)
    /// find nothing, and a [`start`](Self::start) with its id runs a new saga.
    ///
    /// Errors: the store failed (what was purged before stays purged), or it does not
    /// support purging ([`StoreError::Unsupported`](crate::StoreError::Unsupported)).
    pub async fn purge(
        &self,
        finished_before: std::time::SystemTime,
        statuses: &[SagaStatus],
    ) -> Result<u64, SagaError> {
        if let Some(&status) = statuses
            .iter()
            .find(|s| !s.is_terminal() && **s != SagaStatus::Quarantined)
        {
            return Err(SagaError::NotPurgeable { status });
        }
        recovery::purge(&self.shared, finished_before, statuses).await
    }

    /// Runs recovery now and then `interval` after each pass on a background task, for as
    /// long as the returned [`RecoveryLoop`] lives. Any interval works: one shorter than the
    /// timer's 1 ms resolution (zero included) waits 1 ms, a huge one saturates.
    ///
    /// With a store shared by several instances ([`PostgresStore`](crate::PostgresStore)),
    /// every instance runs this loop: each pass claims (up to 256 at a time) the sagas whose
    /// lease expired, so a dead instance's sagas are resumed elsewhere within the lease TTL
    /// plus `interval`. Pick an `interval` well under the TTL (a third of it, say). With a
    /// single-process store one pass at startup is enough; the loop then only finds sagas
    /// whose runner stopped on a store error.
    ///
    /// Register every definition first. Errors of a pass (and panics inside one) are logged
    /// and the next pass retries.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_recovery(&self, interval: std::time::Duration) -> RecoveryLoop {
        recovery::spawn_loop(Arc::clone(&self.shared), interval)
    }

    /// Operator: runs the stuck step (action or compensation) of the saga `saga_id` of
    /// `definition` again with a fresh attempt budget; the saga continues from there. The
    /// log records `actor` (who asked). Returns a handle for the new outcome.
    ///
    /// Errors: no such saga; it is not stuck ([`SagaError::NotStuck`]); it belongs to
    /// another definition; the store failed.
    pub async fn retry_stuck<S: SagaState>(
        &self,
        definition: &SagaDefinition<S>,
        saga_id: &str,
        actor: impl Into<String>,
    ) -> Result<SagaHandle<S>, SagaError> {
        let actor = actor.into();
        self.register_if_absent(definition)?;
        operator::act(
            &self.shared,
            saga_id,
            Some(definition.key()),
            move |step| SagaEvent::OperatorRetried {
                step,
                actor: actor.clone(),
            },
            true,
        )
        .await
    }

    /// Operator: skips the stuck step of the saga `saga_id` of `definition` (a skipped
    /// action counts as done, a skipped compensation as done) and continues. The log
    /// records `actor`. Returns a handle for the new outcome. Errors as for
    /// [`retry_stuck`](Self::retry_stuck).
    pub async fn skip_stuck<S: SagaState>(
        &self,
        definition: &SagaDefinition<S>,
        saga_id: &str,
        actor: impl Into<String>,
    ) -> Result<SagaHandle<S>, SagaError> {
        let actor = actor.into();
        self.register_if_absent(definition)?;
        operator::act(
            &self.shared,
            saga_id,
            Some(definition.key()),
            move |step| SagaEvent::OperatorSkipped {
                step,
                actor: actor.clone(),
            },
            true,
        )
        .await
    }

    /// `retry_stuck` (or with `skip`, `skip_stuck`) through the registered definition,
    /// for callers without the typed one (the operator endpoint).
    #[cfg(feature = "http")]
    pub(crate) async fn retry_stuck_by_id(
        &self,
        saga_id: &str,
        actor: String,
        skip: bool,
    ) -> Result<(), SagaError> {
        let _: SagaHandle<serde_json::Value> = operator::act(
            &self.shared,
            saga_id,
            None,
            move |step| {
                if skip {
                    SagaEvent::OperatorSkipped {
                        step,
                        actor: actor.clone(),
                    }
                } else {
                    SagaEvent::OperatorRetried {
                        step,
                        actor: actor.clone(),
                    }
                }
            },
            true,
        )
        .await?;
        Ok(())
    }

    fn register_if_absent<S: SagaState>(
        &self,
        definition: &SagaDefinition<S>,
    ) -> Result<(), SagaError> {
        self.shared.register_if_absent(&definition.inner)
    }

    /// Operator: cancels a saga that has not passed its pivot. It stops moving forward at its
    /// next step boundary (a step attempt in flight finishes first and its result is kept,
    /// unless the step aborts on cancel, [`OnCancel::Abort`](crate::OnCancel::Abort); a
    /// retry waiting out its backoff stops waiting), compensates every step it completed
    /// in reverse order, and ends [`SagaOutcome::Cancelled`] (or stuck, if a compensation
    /// keeps failing). The log records `reason` and `actor` (who asked).
    ///
    /// The request is durable when this returns: it is stored beside the saga's summary, so
    /// a crash before the runner acts on it leaves a saga that recovery cancels. A paused
    /// saga is resumed here to be cancelled. With a store shared by several instances, the
    /// instance driving the saga sees the request at its next lease heartbeat (within the
    /// store's heartbeat interval, a third of the lease TTL by default) and acts at the
    /// step boundary after that; in this process it is signalled at once.
    ///
    /// Errors ([`SagaError::Refused`] unless said otherwise): no such saga
    /// ([`SagaError::NotFound`]); it ended ([`Refusal::Finished`](crate::Refusal::Finished));
    /// it completed its pivot ([`Refusal::PivotPassed`](crate::Refusal::PivotPassed)); a
    /// cancel was already asked for ([`Refusal::AlreadyCancelled`](crate::Refusal::AlreadyCancelled));
    /// it is compensating already or stuck; it is quarantined; its definition is not
    /// registered here (a [`SagaError::Load`]); the store failed.
    pub async fn cancel(
        &self,
        saga_id: &str,
        reason: impl Into<String>,
        actor: impl Into<String>,
    ) -> Result<(), SagaError> {
        crate::lifecycle::cancel(&self.shared, saga_id, reason.into(), actor.into()).await
    }

    /// Operator: holds a running (or compensating) saga at its next step boundary: it logs
    /// `paused` with `actor`, lets go of its lease and stops; recovery leaves it alone
    /// (status [`SagaStatus::Paused`]) until [`resume`](Self::resume). Handles keep waiting
    /// for its outcome. Useful while a dependency is down for long. The request is durable
    /// when this returns, and is seen like a [`cancel`](Self::cancel)'s.
    ///
    /// Errors: no such saga; it ended, is stuck or quarantined; it is paused or a pause was
    /// asked for ([`Refusal::AlreadyPaused`](crate::Refusal::AlreadyPaused)); a cancel is
    /// pending; the store failed.
    pub async fn pause(&self, saga_id: &str, actor: impl Into<String>) -> Result<(), SagaError> {
        crate::lifecycle::pause(&self.shared, saga_id, actor.into()).await
    }

    /// Operator: resumes a paused saga here, from where it was held (it logs `resumed` with
    /// `actor`); it runs under the engine's caps like any other saga.
    ///
    /// Errors: no such saga; it is not paused ([`Refusal::NotPaused`](crate::Refusal::NotPaused));
    /// its definition is not registered; another instance holds its lease; the store failed.
    pub async fn resume(&self, saga_id: &str, actor: impl Into<String>) -> Result<(), SagaError> {
        crate::lifecycle::resume(&self.shared, saga_id, actor.into()).await
    }

    /// Operator: marks a stuck saga resolved (terminal), with a note and the `actor` who
    /// resolved it for the log. Needs no definition: a saga whose definition is gone can be
    /// resolved too.
    ///
    /// Errors: no such saga; it is not stuck; the store failed.
    pub async fn resolve(
        &self,
        saga_id: &str,
        note: impl Into<String>,
        actor: impl Into<String>,
    ) -> Result<(), SagaError> {
        let note = note.into();
        let actor = actor.into();
        let _: SagaHandle<()> = operator::act(
            &self.shared,
            saga_id,
            None,
            move |_| SagaEvent::OperatorResolved {
                note: note.clone(),
                actor: actor.clone(),
            },
            false,
        )
        .await?;
        Ok(())
    }
}

/// The stored saga `id` belongs to `definition`.
fn check_definition<S: SagaState>(
    id: &str,
    summary: &SagaSummary,
    definition: &SagaDefinition<S>,
) -> Result<(), SagaError> {
    if summary.definition != *definition.inner.name || summary.version != definition.inner.version {
        return Err(SagaError::DefinitionMismatch {
            saga_id: id.to_owned(),
            definition: summary.definition.clone(),
            version: summary.version,
        });
    }
    Ok(())
}
