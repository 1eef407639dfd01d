//! The operator API for stuck sagas: retry the stuck step, skip it, or mark the saga resolved.

use std::sync::Arc;

use tokio::sync::watch;

use crate::definition::SagaState;
use crate::engine::{Live, SagaEngine};
use crate::error::{LoadError, SagaError};
use crate::event::SagaEvent;
use crate::metrics::Count;
use crate::outcome::{RawOutcome, SagaHandle};
use crate::recovery::{decode_log, named_definition};
use crate::replay::{Progress, Stage};
use crate::store::{Append, SagaStatus};

impl SagaEngine {
    /// Operator: runs the stuck step (action or compensation) again with a fresh attempt
    /// budget; the saga continues from there. Returns a handle for the new outcome.
    pub async fn retry_stuck<S: SagaState>(
        &self,
        saga_id: &str,
    ) -> Result<SagaHandle<S>, SagaError> {
        self.operator(saga_id, |step| SagaEvent::OperatorRetried { step }, true)
            .await
    }

    /// Operator: skips the stuck step (a skipped action counts as done, a skipped
    /// compensation as done) and continues. Returns a handle for the new outcome.
    pub async fn skip_stuck<S: SagaState>(
        &self,
        saga_id: &str,
    ) -> Result<SagaHandle<S>, SagaError> {
        self.operator(saga_id, |step| SagaEvent::OperatorSkipped { step }, true)
            .await
    }

    /// Operator: marks a stuck saga resolved (terminal), with a note for the log.
    pub async fn resolve(&self, saga_id: &str, note: impl Into<String>) -> Result<(), SagaError> {
        let note = note.into();
        let _: SagaHandle<()> = self
            .operator(
                saga_id,
                move |_| SagaEvent::OperatorResolved { note: note.clone() },
                false,
            )
            .await?;
        Ok(())
    }

    async fn operator<S: SagaState>(
        &self,
        saga_id: &str,
        event: impl Fn(u32) -> SagaEvent,
        resume: bool,
    ) -> Result<SagaHandle<S>, SagaError> {
        let load_err = |error| SagaError::Load {
            saga_id: saga_id.to_owned(),
            error,
        };
        let log = self
            .shared
            .store
            .load(saga_id)
            .await?
            .ok_or_else(|| SagaError::NotFound(saga_id.to_owned()))?;
        let events = decode_log(&log).map_err(load_err)?;
        // Step indexes are checked against the definition; without one registered (only
        // `resolve` can go on), against the number of rows: a valid log never names a step
        // beyond it, and the table stays sized by what was read, not by a stored value.
        let (name, version) = named_definition(&events).map_err(load_err)?;
        let step_count = self
            .shared
            .definition(name, version)
            .map_or(events.len(), |d| d.step_count());
        let mut progress = Progress::replay(&events, step_count).map_err(load_err)?;
        let Stage::Stuck { step, .. } = progress.stage else {
            return Err(SagaError::NotStuck {
                saga_id: saga_id.to_owned(),
                status: log.summary.status,
            });
        };
        let event = event(step);
        tracing::info!(saga_id, ?event, "operator action");
        let first_seq = progress.next_seq;
        progress.apply(&event).map_err(load_err)?;
        let (status, note) = progress.status();
        let id: Arc<str> = Arc::from(saga_id);
        let definition = (Arc::from(progress.definition.as_str()), progress.version);
        let rx = if resume {
            let mut live = self.shared.live();
            match live.get_mut(&id) {
                Some(l) if l.running => {
                    return Err(SagaError::NotStuck {
                        saga_id: saga_id.to_owned(),
                        status: SagaStatus::Running,
                    });
                }
                // Handles already waiting on this saga see the new outcome too.
                Some(l) => {
                    l.running = true;
                    l.definition = Some(definition);
                    l.tx.subscribe()
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    let entry = Live {
                        tx,
                        running: true,
                        definition: Some(definition),
                    };
                    live.insert(Arc::clone(&id), entry);
                    rx
                }
            }
        } else {
            watch::channel(None).1
        };
        let append =
            Append::new(Arc::clone(&id), first_seq, vec![event.encode()], status).with_note(note);
        // A shared store: take the lease of the stuck saga first (no runner holds it).
        let written = match self.shared.store.acquire(&id).await {
            Ok(()) => self.shared.store.append(append).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.shared.store.release(&id);
            if resume {
                self.shared.unclaim(&id);
            }
            return Err(e.into());
        }
        if !resume {
            self.shared
                .counters
                .count(Count::Resolved, &log.summary.definition);
            if let Stage::Resolved { note } = progress.stage
                && let Some(l) = self.shared.live().remove(&id)
            {
                l.tx.send_replace(Some(Ok(RawOutcome::Resolved { note })));
            }
            return Ok(SagaHandle::new(id, rx));
        }
        let def = self
            .shared
            .definition(&progress.definition, progress.version)
            .ok_or_else(|| {
                load_err(LoadError::UnknownDefinition {
                    name: progress.definition.clone(),
                    version: progress.version,
                })
            });
        let resumed = def.and_then(|def| {
            def.resume(&self.shared, Arc::clone(&id), progress)
                .map_err(load_err)
        });
        if let Err(e) = resumed {
            self.shared.unclaim(&id);
            return Err(e);
        }
        self.shared
            .counters
            .count(Count::Resumed, &log.summary.definition);
        Ok(SagaHandle::new(id, rx))
    }
}
