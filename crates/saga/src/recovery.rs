//! Reading logs back: recovery of unfinished sagas, outcomes of settled ones, timelines.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::definition::{DefinitionInner, SagaState};
use crate::engine::{Replayed, SagaEngine, Shared};
use crate::error::{LoadError, LogRule, SagaError, StoreError};
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
    /// Sagas listed as unfinished whose log had already ended when they were claimed (they
    /// finished in between, or their summary was stale): the summary is corrected and
    /// nothing runs or is counted again.
    pub settled: Vec<String>,
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

/// Decodes every row, checking first that rows are numbered from 0 without a gap and are
/// UTF-8.
pub(crate) fn decode_log(log: &SagaLog) -> Result<Vec<SagaEvent>, LoadError> {
    let mut events = Vec::new();
    for (expected, row) in (0u64..).zip(&log.events) {
        if row.seq != expected {
            return Err(LoadError::Invalid {
                seq: row.seq,
                rule: LogRule::Sequence,
                detail: format!(
                    "row {expected} is missing (found row {} in its place)",
                    row.seq
                ),
            });
        }
        if let Some(e) = row.utf8_error {
            return Err(LoadError::Corrupt {
                seq: row.seq,
                reason: format!("the row is not valid UTF-8 ({e})"),
            });
        }
        events.push(SagaEvent::decode(row.seq, &row.payload)?);
    }
    Ok(events)
}

/// The definition a log names in its `started` row.
pub(crate) fn named_definition(events: &[SagaEvent]) -> Result<(&str, u32), LoadError> {
    match events.first() {
        Some(SagaEvent::Started {
            definition,
            version,
            ..
        }) => Ok((definition, *version)),
        Some(_) => Err(LoadError::Invalid {
            seq: 0,
            rule: LogRule::StartedFirst,
            detail: "the first event is not `started`".into(),
        }),
        None => Err(LoadError::Invalid {
            seq: 0,
            rule: LogRule::StartedFirst,
            detail: "the log is empty".into(),
        }),
    }
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
        let limit = if self.shared.store.lease_ttl().is_some() {
            limit
        } else {
            usize::MAX
        };
        let mut report = RecoveryReport::default();
        let claimed = self.shared.store.claim_resumable(limit).await?;
        let mut claimed = claimed.into_iter();
        // Every claimed saga is either resumed (its runner releases it), quarantined, or
        // released here: on every path, errors and panics included.
        while let Some(summary) = claimed.next() {
            let id: Arc<str> = Arc::from(summary.saga_id.as_str());
            if !self.shared.claim(&id) {
                report.already_running.push(summary.saga_id);
                continue;
            }
            let resumed = AssertUnwindSafe(self.resume(&id))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(ResumeError::Load(LoadError::Inconsistent(format!(
                        "loading the saga panicked: {}",
                        panic_message(&*panic)
                    ))))
                });
            let failure = match resumed {
                Ok(Replayed::Resumed) => {
                    self.shared
                        .counters
                        .count(Count::Resumed, &summary.definition);
                    report.resumed.push(summary.saga_id);
                    continue;
                }
                Ok(Replayed::Settled) => {
                    report.settled.push(summary.saga_id);
                    continue;
                }
                Err(ResumeError::Store(e)) => e,
                Err(ResumeError::Load(error)) => {
                    tracing::error!(saga_id = %id, %error, "saga quarantined: cannot be loaded");
                    let quarantined =
                        AssertUnwindSafe(self.shared.store.quarantine(&id, &error.to_string()))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|panic| {
                                Err(StoreError::Database(format!(
                                    "quarantine panicked: {}",
                                    panic_message(&*panic)
                                )))
                            });
                    match quarantined {
                        Ok(()) => {
                            self.shared
                                .counters
                                .count(Count::Quarantined, &summary.definition);
                            self.shared.store.release(&id);
                            self.shared.publish_failure(&id, &error);
                            report.quarantined.push((summary.saga_id, error));
                            continue;
                        }
                        Err(e) => e,
                    }
                }
            };
            self.shared.unclaim(&id);
            self.shared.store.release(&id);
            // The rest were claimed too: let them go for the next pass.
            for s in claimed {
                self.shared.store.release(&s.saga_id);
            }
            return Err(failure.into());
        }
        Ok(report)
    }

    async fn resume(&self, id: &Arc<str>) -> Result<Replayed, ResumeError> {
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
        let (name, version) = named_definition(&events).map_err(ResumeError::Load)?;
        let def = self.shared.definition(name, version).ok_or_else(|| {
            ResumeError::Load(LoadError::UnknownDefinition {
                name: name.to_owned(),
                version,
            })
        })?;
        let progress = Progress::replay(&events, def.step_count()).map_err(ResumeError::Load)?;
        def.resume(&self.shared, Arc::clone(id), progress)
            .map_err(ResumeError::Load)
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
    let progress = Progress::replay(&events, def.steps.len())?;
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

/// The shortest pause between two recovery passes: one tick of tokio's timer.
const MIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Sagas claimed per recovery pass of the background loop.
const CLAIM_BATCH: usize = 256;

impl SagaEngine {
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
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let mut first = true;
            loop {
                // A sleep, not an interval: any duration works (a huge one saturates instead
                // of overflowing the next tick's instant; one below the timer's 1 ms
                // resolution waits one tick, so the loop never spins without yielding).
                if !std::mem::take(&mut first) {
                    tokio::time::sleep(interval.max(MIN_PAUSE)).await;
                }
                loop {
                    // A panic in a pass (a store, say) must not end the loop for good.
                    let pass = AssertUnwindSafe(engine.recover_at_most(CLAIM_BATCH))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| {
                            Err(SagaError::Store(StoreError::Database(format!(
                                "recovery pass panicked: {}",
                                panic_message(&*panic)
                            ))))
                        });
                    match pass {
                        Ok(report) => {
                            let n = report.resumed.len()
                                + report.quarantined.len()
                                + report.settled.len();
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
