//! A saga's tokio task: drives its runner under the unwind guard, then answers its handles
//! and stops driving it here.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tracing::Instrument;

use crate::admission::Permit;
use crate::definition::{DefinitionInner, SagaState};
use crate::error::{LoadError, SagaError, StoreError, panic_message};
use crate::guard;
use crate::log::settled_outcome;
use crate::metrics::Count;
use crate::outcome::RawOutcome;
use crate::replay::Progress;
use crate::runner::Runner;
use crate::shared::{Replayed, Resume, Shared};
use crate::store::SagaLog;

impl<S: SagaState> Resume for Arc<DefinitionInner<S>> {
    fn step_count(&self) -> usize {
        self.steps.len()
    }

    fn shape(&self) -> crate::definition::Shape {
        DefinitionInner::shape(self)
    }

    fn definition_ptr(&self) -> *const () {
        Arc::as_ptr(self).cast::<()>()
    }

    fn resume(
        &self,
        shared: &Arc<Shared>,
        id: Arc<str>,
        progress: Progress,
        permit: Permit,
    ) -> Result<Replayed, LoadError> {
        let runner = Runner::resume(Arc::clone(shared), Arc::clone(self), id, progress)
            .map_err(LoadError::Inconsistent)?;
        let replayed = if runner.replayed_settled() {
            Replayed::Settled
        } else {
            Replayed::Resumed
        };
        spawn(runner, permit);
        Ok(replayed)
    }

    fn settled(&self, log: &SagaLog) -> Result<RawOutcome, LoadError> {
        settled_outcome(log, self)
    }

    fn pivot_done(&self, progress: &Progress) -> Option<String> {
        self.steps
            .iter()
            .zip(&progress.steps)
            .find(|(d, p)| d.kind == crate::definition::StepKind::Pivot && p.completed)
            .map(|(d, _)| d.name.to_string())
    }
}

/// Runs `runner` on its own task until the saga ends, gets stuck, or its runner stops; the
/// task holds `permit` (its room under the engine's caps) until then.
pub(crate) fn spawn<S: SagaState>(mut runner: Runner<S>, permit: Permit) {
    let id = Arc::clone(runner.id());
    let def = Arc::clone(runner.definition());
    let shared = Arc::clone(runner.shared());
    let span = tracing::info_span!(
        "saga",
        saga_id = %id,
        definition = %def.name,
        trace_id = runner.trace().map(crate::TraceContext::trace_id),
    );
    let in_flight = shared.in_flight(Arc::clone(&def.name));
    tokio::spawn(
        async move {
            let _in_flight = in_flight;
            // Room under the caps, freed before the handles hear the outcome (a caller that
            // starts the next saga on hearing it finds the room).
            let permit = permit;
            // The unwind guard: whatever panics in here, the saga is marked and its handles
            // answered, and the engine forgets it.
            let result = AssertUnwindSafe(runner.drive()).catch_unwind().await;
            // An append that does not continue the stored log although every row the runner
            // continued from is there (the store's next sequence number is past a row that is
            // missing at the end) can never succeed: the saga is quarantined rather than
            // resumed into the same conflict forever. A log that grew (another writer) is left.
            let mut result = result;
            if let Ok(Err(SagaError::Store(StoreError::Conflict { expected, .. }))) = &result
                && let Some(reason) = guard::unfollowable(&shared, &id, *expected).await
            {
                tracing::error!(saga_id = %id, reason, "saga quarantined");
                if guard::quarantine_counted(&shared, &def, &id, &reason).await {
                    result = Ok(Err(SagaError::Quarantined {
                        saga_id: id.to_string(),
                        reason,
                    }));
                }
            }
            let failure = match &result {
                Err(panic) => Some(panic_message(&**panic)),
                Ok(Err(SagaError::Load { error, .. })) if runner.is_broken() => {
                    Some(format!("the engine recorded an invalid event ({error})"))
                }
                Ok(_) => None,
            };
            let result = match (result, failure) {
                (Ok(result), None) => result,
                (_, message) => {
                    let message = message.unwrap_or_default();
                    tracing::error!(saga_id = %id, message, "the saga's task panicked");
                    let reason = format!("the saga's task panicked: {message}");
                    guard::mark(&shared, &def, &id, &reason).await;
                    Err(SagaError::Panicked {
                        saga_id: id.to_string(),
                        message,
                    })
                }
            };
            // Whatever happened, this process stops driving it: a leased store lets the
            // lease expire (terminal appends already released it).
            shared.store().release(&id);
            drop(permit);
            if matches!(result, Ok(RawOutcome::Paused)) {
                // Held for an operator: its handles keep waiting for `resume`.
                shared.count(Count::Paused, &def.name);
                shared.unclaim(&id);
                return;
            }
            shared.publish(&id, &def.name, result, !runner.replayed_settled());
        }
        .instrument(span),
    );
}
