//! Reading a stored log back: row checks and decoding, the definition it names, the outcome
//! of a settled saga, and the timeline shown to operators.

use std::sync::Arc;

use crate::definition::{DefinitionInner, SagaState};
use crate::error::{LoadError, LogRule};
use crate::event::SagaEvent;
use crate::outcome::RawOutcome;
use crate::replay::{Progress, Stage};
use crate::store::{SagaLog, SagaSummary};

/// One row of a saga's timeline, as returned by [`SagaEngine::inspect`](crate::SagaEngine::inspect).
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

impl SagaTimeline {
    /// Every row of `log`, decoded one by one (a bad row is shown with its error).
    pub(crate) fn of(log: SagaLog) -> Self {
        let entries = log
            .events
            .iter()
            .map(|row| TimelineEntry {
                seq: row.seq,
                event: SagaEvent::decode(row.seq, &row.payload),
            })
            .collect();
        Self {
            summary: log.summary,
            entries,
        }
    }
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
        Stage::Cancelled => RawOutcome::Cancelled {
            reason: progress.cancelled.clone().unwrap_or_default(),
            state: state(),
        },
        Stage::Forward | Stage::Compensating | Stage::Paused { .. } => {
            return Err(LoadError::Inconsistent(
                "the summary says settled but the log does not".into(),
            ));
        }
    })
}
