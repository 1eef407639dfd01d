//! The unwind guard of a saga's task: a panic anywhere in it (engine code, a group's
//! `merge`, the store) ends with the saga durably marked and its handles answered.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::context::Phase;
use crate::definition::{DefinitionInner, SagaState};
use crate::error::panic_message;
use crate::event::SagaEvent;
use crate::log::decode_log;
use crate::metrics::Count;
use crate::replay::{Progress, Stage};
use crate::shared::Shared;
use crate::store::Append;

/// How a saga whose task failed was marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marked {
    /// A `stuck` event was appended: `stuck()` lists it, the operator API applies.
    Stuck,
    /// The log could not take a `stuck` event; the summary says quarantined.
    Quarantined,
    /// The log already ends stuck or settled: nothing to add.
    Settled,
    /// Nothing could be written (the store failed too); the saga resumes on recovery.
    Unmarked,
}

/// Marks saga `id` after its task panicked with `reason`: stuck on the step its stored log
/// is at, or quarantined when that cannot be written. Never panics itself.
pub(crate) async fn mark<S: SagaState>(
    shared: &Arc<Shared>,
    def: &Arc<DefinitionInner<S>>,
    id: &Arc<str>,
    reason: &str,
) -> Marked {
    let stuck = AssertUnwindSafe(append_stuck(shared, def, id, reason))
        .catch_unwind()
        .await;
    let marked = match stuck {
        Ok(Ok(marked)) => marked,
        Ok(Err(why)) => {
            tracing::warn!(saga_id = %id, why, "cannot mark the saga stuck; quarantining it");
            quarantine(shared, id, reason).await
        }
        Err(panic) => {
            let why = panic_message(&*panic);
            tracing::warn!(saga_id = %id, why, "marking the saga stuck panicked; quarantining it");
            quarantine(shared, id, reason).await
        }
    };
    match marked {
        Marked::Stuck => shared.count(Count::Stuck, &def.name),
        Marked::Quarantined => shared.count(Count::Quarantined, &def.name),
        Marked::Settled => {}
        Marked::Unmarked => {
            tracing::error!(saga_id = %id, reason, "the saga's task failed and it cannot be marked; it resumes on recovery");
        }
    }
    marked
}

/// Why saga `id`'s log cannot be continued at `expected` although it holds exactly the
/// `expected` rows the runner continued from (the store's next sequence number is elsewhere),
/// or `None` when the log changed (another writer) or cannot be read. Never panics.
pub(crate) async fn unfollowable(shared: &Arc<Shared>, id: &str, expected: u64) -> Option<String> {
    let log = AssertUnwindSafe(shared.store().load(id))
        .catch_unwind()
        .await
        .ok()?
        .ok()??;
    let rows = u64::try_from(log.events.len()).ok()?;
    (rows == expected && log.summary.status.is_resumable()).then(|| {
        format!(
            "its log holds {rows} rows but the store does not take row {expected} (a row is \
             missing at the end of the log)"
        )
    })
}

/// Quarantines saga `id` with `reason` (its log cannot be continued) and counts it; whether
/// it was quarantined. Never panics.
pub(crate) async fn quarantine_counted<S: SagaState>(
    shared: &Arc<Shared>,
    def: &Arc<DefinitionInner<S>>,
    id: &Arc<str>,
    reason: &str,
) -> bool {
    let done = quarantine(shared, id, reason).await == Marked::Quarantined;
    if done {
        shared.count(Count::Quarantined, &def.name);
    }
    done
}

async fn quarantine(shared: &Arc<Shared>, id: &str, reason: &str) -> Marked {
    match AssertUnwindSafe(shared.store().quarantine(id, reason))
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => Marked::Quarantined,
        Ok(Err(e)) => {
            tracing::error!(saga_id = %id, error = %e, "cannot quarantine the saga");
            Marked::Unmarked
        }
        Err(panic) => {
            tracing::error!(saga_id = %id, why = panic_message(&*panic), "quarantining the saga panicked");
            Marked::Unmarked
        }
    }
}

/// Appends `stuck` after the last stored row, on the step the stored log is at.
async fn append_stuck<S: SagaState>(
    shared: &Arc<Shared>,
    def: &Arc<DefinitionInner<S>>,
    id: &Arc<str>,
    reason: &str,
) -> Result<Marked, String> {
    let log = shared
        .store()
        .load(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the saga is not stored")?;
    let events = decode_log(&log).map_err(|e| e.to_string())?;
    let mut progress = Progress::replay(&events, def.steps.len()).map_err(|e| e.to_string())?;
    let (step, phase) = match &progress.stage {
        Stage::Forward => (current_forward(def, &progress), Phase::Action),
        Stage::Compensating => (current_compensation(def, &progress), Phase::Compensate),
        Stage::Stuck { .. }
        | Stage::Paused { .. }
        | Stage::Completed
        | Stage::Compensated
        | Stage::Cancelled
        | Stage::Resolved { .. } => {
            return Ok(Marked::Settled);
        }
    };
    let first_seq = progress.next_seq;
    let event = SagaEvent::Stuck {
        step,
        phase,
        error: reason.to_owned(),
    };
    progress.apply(&event).map_err(|e| e.to_string())?;
    let (status, note) = progress.status();
    let append =
        Append::new(Arc::clone(id), first_seq, vec![event.encode()], status).with_note(note);
    shared
        .store()
        .append(append)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Marked::Stuck)
}

/// The first step not completed (the last one when all are).
fn current_forward<S>(def: &DefinitionInner<S>, progress: &Progress) -> u32 {
    let last = def.steps.len().saturating_sub(1);
    let i = (0..def.steps.len())
        .find(|&i| !progress.steps.get(i).is_some_and(|p| p.completed))
        .unwrap_or(last);
    u32::try_from(i).unwrap_or(0)
}

/// The next step to compensate, else the one whose failure started compensation.
fn current_compensation<S>(def: &DefinitionInner<S>, progress: &Progress) -> u32 {
    let next = (0..def.steps.len()).rev().find(|&i| {
        def.steps[i].compensation.is_some()
            && progress
                .steps
                .get(i)
                .is_some_and(|p| (p.completed || p.in_doubt) && !p.compensated)
    });
    match next {
        Some(i) => u32::try_from(i).unwrap_or(0),
        None => progress.compensation.as_ref().map_or(0, |(s, _)| *s),
    }
}
