//! Reading logs back: recovery of unfinished sagas, outcomes of settled ones, timelines.

use std::sync::Arc;

use crate::definition::{DefinitionInner, SagaState};
use crate::engine::{SagaEngine, Shared};
use crate::error::{LoadError, SagaError, StoreError};
use crate::event::SagaEvent;
use crate::metrics::Count;
use crate::outcome::{RawOutcome, Stopped};
use crate::replay::{Progress, Stage};
use crate::store::{SagaLog, SagaSummary};

/// What [`SagaEngine::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Sagas resumed.
    pub resumed: Vec<String>,
    /// Sagas that could not be loaded, now quarantined, with why.
    pub quarantined: Vec<(String, LoadError)>,
    /// Sagas skipped because this engine already runs them.
    pub already_running: Vec<String>,
}

/// One row of a saga's timeline, as returned by [`SagaEngine::inspect`].
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    /// Position in the log.
    pub seq: u64,
    /// The decoded event, or why the row does not decode.
    pub event: Result<SagaEvent, LoadError>,
}

/// A saga's summary and decoded log.
#[derive(Debug, Clone)]
pub struct SagaTimeline {
    /// The summary row.
    pub summary: SagaSummary,
    /// Every log row, in order.
    pub entries: Vec<TimelineEntry>,
}

pub(crate) fn decode_log(log: &SagaLog) -> Result<Vec<SagaEvent>, LoadError> {
    log.events
        .iter()
        .map(|row| SagaEvent::decode(row.seq, &row.payload))
        .collect()
}

impl SagaEngine {
    /// Resumes every saga whose log says it is running or compensating and that this engine
    /// does not already run.
    ///
    /// A step whose attempt started without a recorded result is handled by its
    /// [`OnInterrupted`](crate::OnInterrupted) setting: by default it runs again with the
    /// same idempotency key, so delivery is at-least-once. A saga whose definition is not
    /// registered, or whose log does not decode, is quarantined (status `Quarantined`, the
    /// reason in its note, nothing deleted) and reported; the others are resumed.
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
        let limit = if self.shared.store.lease_ttl().is_some() {
            limit
        } else {
            usize::MAX
        };
        let mut report = RecoveryReport::default();
        let claimed = self.shared.store.claim_resumable(limit).await?;
        let mut claimed = claimed.into_iter();
        while let Some(summary) = claimed.next() {
            let id: Arc<str> = Arc::from(summary.saga_id.as_str());
            if !self.shared.claim(&id) {
                report.already_running.push(summary.saga_id);
                continue;
            }
            match self.resume(&id).await {
                Ok(()) => {
                    self.shared
                        .counters
                        .count(Count::Resumed, &summary.definition);
                    report.resumed.push(summary.saga_id);
                }
                Err(ResumeError::Store(e)) => {
                    self.shared.unclaim(&id);
                    self.shared.store.release(&id);
                    // The rest were claimed too: let them go for the next pass.
                    for s in claimed {
                        self.shared.store.release(&s.saga_id);
                    }
                    return Err(e.into());
                }
                Err(ResumeError::Load(error)) => {
                    tracing::error!(saga_id = %id, %error, "saga quarantined: cannot be loaded");
                    self.shared
                        .store
                        .quarantine(&id, &error.to_string())
                        .await?;
                    self.shared
                        .counters
                        .count(Count::Quarantined, &summary.definition);
                    self.shared.publish_failure(&id, &error);
                    report.quarantined.push((summary.saga_id, error));
                }
            }
        }
        Ok(report)
    }

    async fn resume(&self, id: &Arc<str>) -> Result<(), ResumeError> {
        let log = self
            .shared
            .store
            .load(id)
            .await
            .map_err(ResumeError::Store)?
            .ok_or_else(|| {
                ResumeError::Load(LoadError::Inconsistent("the saga vanished".into()))
            })?;
        let events = decode_log(&log).map_err(ResumeError::Load)?;
        let progress = Progress::replay(&events).map_err(ResumeError::Load)?;
        let def = self
            .shared
            .definition(&progress.definition, progress.version)
            .ok_or_else(|| {
                ResumeError::Load(LoadError::UnknownDefinition {
                    name: progress.definition.clone(),
                    version: progress.version,
                })
            })?;
        if progress.step_count_seen() > def.step_count() {
            return Err(ResumeError::Load(LoadError::Inconsistent(format!(
                "the log mentions step {} but the definition has {} steps",
                progress.step_count_seen() - 1,
                def.step_count()
            ))));
        }
        def.resume(&self.shared, Arc::clone(id), progress)
            .map_err(ResumeError::Load)
    }
}

impl Shared {
    fn publish_failure(&self, id: &Arc<str>, error: &LoadError) {
        if let Some(live) = self.live().remove(id) {
            live.tx
                .send_replace(Some(Err(Stopped::Other(format!("quarantined: {error}")))));
        }
    }
}

enum ResumeError {
    Store(StoreError),
    Load(LoadError),
}

/// The outcome of a saga that is stuck or terminal, from its log.
pub(crate) fn settled_outcome<S: SagaState>(
    log: &SagaLog,
    def: &DefinitionInner<S>,
) -> Result<RawOutcome, LoadError> {
    let events = decode_log(log)?;
    let progress = Progress::replay(&events)?;
    let name = |i: u32| {
        def.steps
            .get(i as usize)
            .map_or_else(|| format!("#{i}"), |s| s.name.to_string())
    };
    let state = || Arc::from(progress.state.clone());
    Ok(match progress.stage {
        Stage::Completed => RawOutcome::Completed(state()),
        Stage::Compensated => {
            let (failed, error) = progress.compensation.clone().unwrap_or_default();
            RawOutcome::Compensated {
                failed_step: name(failed),
                error,
                state: state(),
            }
        }
        Stage::Stuck {
            step,
            phase,
            ref error,
        } => RawOutcome::Stuck {
            step: name(step),
            phase,
            error: error.clone(),
        },
        Stage::Resolved { ref note } => RawOutcome::Resolved { note: note.clone() },
        Stage::Forward | Stage::Compensating => {
            return Err(LoadError::Inconsistent(
                "the summary says settled but the log does not".into(),
            ));
        }
    })
}

/// The background recovery of one engine, from [`SagaEngine::spawn_recovery`]. Dropping it
/// (or calling [`stop`](Self::stop)) stops the loop; sagas it resumed keep running.
#[derive(Debug)]
pub struct RecoveryLoop {
    task: tokio::task::JoinHandle<()>,
}

impl RecoveryLoop {
    /// Stops the loop.
    pub fn stop(self) {}
}

impl Drop for RecoveryLoop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sagas claimed per recovery pass of the background loop.
const CLAIM_BATCH: usize = 256;

impl SagaEngine {
    /// Runs recovery now and then every `interval` on a background task, for as long as the
    /// returned [`RecoveryLoop`] lives.
    ///
    /// With a store shared by several instances ([`PostgresStore`](crate::PostgresStore)),
    /// every instance runs this loop: each pass claims (up to 256 at a time) the sagas whose
    /// lease expired, so a dead instance's sagas are resumed elsewhere within the lease TTL
    /// plus `interval`. Pick an `interval` well under the TTL (a third of it, say). With a
    /// single-process store one pass at startup is enough; the loop then only finds sagas
    /// whose runner stopped on a store error.
    ///
    /// Register every definition first. Errors of a pass are logged and the next pass
    /// retries.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_recovery(&self, interval: std::time::Duration) -> RecoveryLoop {
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                loop {
                    match engine.recover_at_most(CLAIM_BATCH).await {
                        Ok(report) => {
                            let n = report.resumed.len() + report.quarantined.len();
                            if n > 0 {
                                tracing::debug!(
                                    resumed = report.resumed.len(),
                                    quarantined = report.quarantined.len(),
                                    "recovery pass"
                                );
                            }
                            // A full batch of new work: there may be more right away.
                            // (Sagas this engine already runs do not count: a store without
                            // leases lists them every time.)
                            if n < CLAIM_BATCH {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "saga recovery pass failed");
                            break;
                        }
                    }
                }
            }
        });
        RecoveryLoop { task }
    }
}
