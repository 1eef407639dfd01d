//! Cancel, pause and resume: an operator's request is stored beside the saga's summary
//! ([`SagaStore::set_request`](crate::SagaStore::set_request)) and its runner, wherever it
//! runs, acts on it at the next step boundary; a paused saga is resumed here.

use std::sync::Arc;

use crate::error::{LifecycleAction, LoadError, Refusal, SagaError};
use crate::event::SagaEvent;
use crate::log::{decode_log, named_definition};
use crate::metrics::Count;
use crate::replay::{Progress, Stage};
use crate::shared::{OperatorRequest, Resume, Shared};
use crate::store::{Append, SagaStatus};

/// A saga as an operator action finds it.
struct Found {
    status: SagaStatus,
    progress: Progress,
    definition: Option<Arc<dyn Resume>>,
    request: Option<OperatorRequest>,
}

async fn find(shared: &Shared, saga_id: &str) -> Result<Found, SagaError> {
    let load_err = |error| SagaError::Load {
        saga_id: saga_id.to_owned(),
        error,
    };
    let log = shared
        .store()
        .load(saga_id)
        .await?
        .ok_or_else(|| SagaError::NotFound(saga_id.to_owned()))?;
    if log.summary.status == SagaStatus::Quarantined {
        return Err(SagaError::Quarantined {
            saga_id: saga_id.to_owned(),
            reason: log.summary.note.unwrap_or_default(),
        });
    }
    let events = decode_log(&log).map_err(load_err)?;
    let (name, version) = named_definition(&events).map_err(load_err)?;
    let definition = shared.definition(name, version);
    // Sized by the definition; without one, by the rows read (never by a stored value).
    let step_count = definition.as_ref().map_or(events.len(), |d| d.step_count());
    let progress = Progress::replay(&events, step_count).map_err(load_err)?;
    let request = shared
        .store()
        .request(saga_id)
        .await?
        .and_then(|r| OperatorRequest::decode(&r));
    Ok(Found {
        status: log.summary.status,
        progress,
        definition,
        request,
    })
}

fn refused(saga_id: &str, action: LifecycleAction, reason: Refusal) -> SagaError {
    SagaError::Refused {
        saga_id: saga_id.to_owned(),
        action,
        reason,
    }
}

/// Why a saga in `stage` cannot take `action` (shared refusals).
fn settled_refusal(found: &Found) -> Option<Refusal> {
    match found.progress.stage {
        Stage::Stuck { .. } => Some(Refusal::Stuck),
        Stage::Completed | Stage::Compensated | Stage::Cancelled | Stage::Resolved { .. } => {
            Some(Refusal::Finished(found.progress.status().0))
        }
        _ => None,
    }
    .or_else(|| {
        found
            .status
            .is_terminal()
            .then_some(Refusal::Finished(found.status))
    })
}

pub(crate) async fn cancel(
    shared: &Arc<Shared>,
    saga_id: &str,
    reason: String,
    actor: String,
) -> Result<(), SagaError> {
    let action = LifecycleAction::Cancel;
    let found = find(shared, saga_id).await?;
    if let Some(why) = settled_refusal(&found) {
        return Err(refused(saga_id, action, why));
    }
    if found.progress.cancelled.is_some()
        || matches!(found.request, Some(OperatorRequest::Cancel { .. }))
    {
        return Err(refused(saga_id, action, Refusal::AlreadyCancelled));
    }
    let paused = match found.progress.stage {
        Stage::Forward => false,
        Stage::Paused {
            compensating: false,
        } => true,
        _ => return Err(refused(saga_id, action, Refusal::Compensating)),
    };
    // The pivot is a property of the definition: without it registered, a cancel cannot
    // know whether the saga may still roll back.
    let definition = found
        .definition
        .as_ref()
        .ok_or_else(|| unknown(saga_id, &found))?;
    if let Some(step) = definition.pivot_done(&found.progress) {
        return Err(refused(saga_id, action, Refusal::PivotPassed { step }));
    }
    let request = OperatorRequest::Cancel {
        reason,
        actor: actor.clone(),
    };
    tracing::info!(saga_id, ?request, "saga cancel requested");
    if !shared
        .store()
        .set_request(saga_id, Some(&request.encode()))
        .await?
    {
        return Err(SagaError::NotFound(saga_id.to_owned()));
    }
    if paused {
        // Nothing drives a paused saga: resume it here, and its runner cancels it at once.
        return resume_found(shared, saga_id, found, actor).await;
    }
    shared.signal(saga_id);
    Ok(())
}

pub(crate) async fn pause(shared: &Shared, saga_id: &str, actor: String) -> Result<(), SagaError> {
    let action = LifecycleAction::Pause;
    let found = find(shared, saga_id).await?;
    if let Some(why) = settled_refusal(&found) {
        return Err(refused(saga_id, action, why));
    }
    match (&found.progress.stage, &found.request) {
        (Stage::Paused { .. }, _) | (_, Some(OperatorRequest::Pause { .. })) => {
            return Err(refused(saga_id, action, Refusal::AlreadyPaused));
        }
        (Stage::Forward, Some(OperatorRequest::Cancel { .. })) => {
            return Err(refused(saga_id, action, Refusal::AlreadyCancelled));
        }
        _ => {}
    }
    let request = OperatorRequest::Pause { actor };
    tracing::info!(saga_id, ?request, "saga pause requested");
    if !shared
        .store()
        .set_request(saga_id, Some(&request.encode()))
        .await?
    {
        return Err(SagaError::NotFound(saga_id.to_owned()));
    }
    shared.signal(saga_id);
    Ok(())
}

pub(crate) async fn resume(
    shared: &Arc<Shared>,
    saga_id: &str,
    actor: String,
) -> Result<(), SagaError> {
    let found = find(shared, saga_id).await?;
    if !matches!(found.progress.stage, Stage::Paused { .. }) {
        let status = found.progress.status().0;
        return Err(refused(
            saga_id,
            LifecycleAction::Resume,
            Refusal::NotPaused(status),
        ));
    }
    if matches!(found.request, Some(OperatorRequest::Pause { .. })) {
        // The pause is done; a cancel asked for meanwhile stays, for the runner.
        shared.store().set_request(saga_id, None).await?;
    }
    resume_found(shared, saga_id, found, actor).await
}

fn unknown(saga_id: &str, found: &Found) -> SagaError {
    SagaError::Load {
        saga_id: saga_id.to_owned(),
        error: LoadError::UnknownDefinition {
            name: found.progress.definition.clone(),
            version: found.progress.version,
        },
    }
}

/// Appends `resumed` to the paused saga and drives it here.
async fn resume_found(
    shared: &Arc<Shared>,
    saga_id: &str,
    found: Found,
    actor: String,
) -> Result<(), SagaError> {
    let load_err = |error| SagaError::Load {
        saga_id: saga_id.to_owned(),
        error,
    };
    let definition = found
        .definition
        .clone()
        .ok_or_else(|| unknown(saga_id, &found))?;
    let mut progress = found.progress;
    // Runs under the engine's caps like any other saga (a cancelled wait holds nothing).
    let permit = shared.admission().admit(&progress.definition).await;
    let id: Arc<str> = Arc::from(saga_id);
    let named = (Arc::from(progress.definition.as_str()), progress.version);
    if shared.claim_idle(&id, named).is_none() {
        // A runner here drives it already (another resume won).
        return Err(refused(
            saga_id,
            LifecycleAction::Resume,
            Refusal::NotPaused(SagaStatus::Running),
        ));
    }
    let event = SagaEvent::Resumed { actor };
    tracing::info!(saga_id, ?event, "saga resumed");
    let first_seq = progress.next_seq;
    if let Err(error) = progress.apply(&event) {
        shared.unclaim(&id);
        return Err(load_err(error));
    }
    let (status, note) = progress.status();
    let append =
        Append::new(Arc::clone(&id), first_seq, vec![event.encode()], status).with_note(note);
    let written = match shared.store().acquire(&id).await {
        Ok(()) => shared.store().append(append).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        shared.store().release(&id);
        shared.unclaim(&id);
        return Err(e.into());
    }
    let name = progress.definition.clone();
    if let Err(error) = definition.resume(shared, Arc::clone(&id), progress, permit) {
        shared.unclaim(&id);
        return Err(load_err(error));
    }
    shared.count(Count::Resumed, &name);
    Ok(())
}
