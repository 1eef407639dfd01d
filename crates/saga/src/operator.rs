//! The operator API for stuck sagas: retry the stuck step, skip it, or mark the saga
//! resolved. Each action appends one operator event to the stuck saga's log.

use std::sync::Arc;

use tokio::sync::watch;

use crate::admission::Permit;
use crate::definition::SagaState;
use crate::error::{LoadError, SagaError};
use crate::event::SagaEvent;
use crate::log::{decode_log, named_definition};
use crate::metrics::Count;
use crate::outcome::{RawOutcome, SagaHandle};
use crate::replay::{Progress, Stage};
use crate::shared::Shared;
use crate::store::{Append, SagaStatus};

/// Appends `event(stuck step)` to the stuck saga `saga_id`; with `resume`, a runner then
/// drives it on and the handle waits for its next outcome.
pub(crate) async fn act<S: SagaState>(
    shared: &Arc<Shared>,
    saga_id: &str,
    definition: Option<(&str, u32)>,
    event: impl Fn(u32) -> SagaEvent,
    resume: bool,
) -> Result<SagaHandle<S>, SagaError> {
    let load_err = |error| SagaError::Load {
        saga_id: saga_id.to_owned(),
        error,
    };
    let log = shared
        .store()
        .load(saga_id)
        .await?
        .ok_or_else(|| SagaError::NotFound(saga_id.to_owned()))?;
    if let Some((name, version)) = definition
        && (log.summary.definition != name || log.summary.version != version)
    {
        return Err(SagaError::DefinitionMismatch {
            saga_id: saga_id.to_owned(),
            definition: log.summary.definition.clone(),
            version: log.summary.version,
        });
    }
    let events = decode_log(&log).map_err(load_err)?;
    // Step indexes are checked against the definition; without one registered (only
    // `resolve` can go on), against the number of rows: a valid log never names a step
    // beyond it, and the table stays sized by what was read, not by a stored value.
    let (name, version) = named_definition(&events).map_err(load_err)?;
    let step_count = shared
        .definition(name, version)
        .map_or(events.len(), |d| d.step_count());
    let mut progress = Progress::replay(&events, step_count).map_err(load_err)?;
    let Stage::Stuck { step, .. } = progress.stage else {
        return Err(SagaError::NotStuck {
            saga_id: saga_id.to_owned(),
            status: log.summary.status,
        });
    };
    // A saga this action resumes runs under the engine's caps like any other: wait for room
    // before claiming it (a cancelled wait holds nothing).
    let permit = if resume {
        shared.admission().admit(name).await
    } else {
        Permit::default()
    };
    let event = event(step);
    tracing::info!(saga_id, ?event, "operator action");
    let first_seq = progress.next_seq;
    progress.apply(&event).map_err(load_err)?;
    let (status, note) = progress.status();
    let id: Arc<str> = Arc::from(saga_id);
    let definition = (Arc::from(progress.definition.as_str()), progress.version);
    let rx = if resume {
        // Handles already waiting on this saga see the new outcome too.
        shared
            .claim_idle(&id, definition)
            .ok_or_else(|| SagaError::NotStuck {
                saga_id: saga_id.to_owned(),
                status: SagaStatus::Running,
            })?
    } else {
        watch::channel(None).1
    };
    let append =
        Append::new(Arc::clone(&id), first_seq, vec![event.encode()], status).with_note(note);
    // A shared store: take the lease of the stuck saga first (no runner holds it).
    let written = match shared.store().acquire(&id).await {
        Ok(()) => shared.store().append(append).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        shared.store().release(&id);
        if resume {
            shared.unclaim(&id);
        }
        return Err(e.into());
    }
    if !resume {
        shared.count(Count::Resolved, &log.summary.definition);
        if let Stage::Resolved { note } = progress.stage {
            shared.answer(&id, Some(Ok(RawOutcome::Resolved { note })));
        }
        return Ok(SagaHandle::new(id, rx));
    }
    let def = shared
        .definition(&progress.definition, progress.version)
        .ok_or_else(|| {
            load_err(LoadError::UnknownDefinition {
                name: progress.definition.clone(),
                version: progress.version,
            })
        });
    let resumed = def.and_then(|def| {
        def.resume(shared, Arc::clone(&id), progress, permit)
            .map_err(load_err)
    });
    if let Err(e) = resumed {
        shared.unclaim(&id);
        return Err(e);
    }
    shared.count(Count::Resumed, &log.summary.definition);
    Ok(SagaHandle::new(id, rx))
}
