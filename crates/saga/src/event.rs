//! The events of a saga's durable log and their JSON encoding.
//!
//! Each row holds one event encoded as `{"v":1,"e":{"step_started":{...}}}`: the `v` tag
//! is the log format version, so a later format can still read (or clearly refuse) old rows.
//! Steps are named by index and name; states are stored as the JSON the state type produces.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::context::Phase;
use crate::error::{LoadError, StepErrorKind};
use crate::trace::TraceContext;

/// The log format version written by this crate.
pub const LOG_FORMAT_VERSION: u32 = 1;

/// One transition of a saga, as appended to its log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SagaEvent {
    /// The saga was created.
    Started {
        /// Definition name.
        definition: String,
        /// Definition version.
        version: u32,
        /// The input state, as JSON.
        input: Box<RawValue>,
        /// Wall-clock start, milliseconds since the Unix epoch (for the saga deadline).
        started_at_ms: u64,
        /// The W3C trace context of the caller that started the saga, if it gave a valid
        /// one. Absent in logs written before traces were stored; a stored value that is not
        /// a valid trace context reads as none (the saga runs untraced, nothing is
        /// quarantined).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::trace::lenient"
        )]
        trace: Option<TraceContext>,
    },
    /// An attempt of a step's action is about to run.
    StepStarted {
        /// Step index.
        step: u32,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A step's action succeeded; `state` is the saga state after it.
    StepCompleted {
        /// Step index.
        step: u32,
        /// The new saga state, as JSON (for a parallel group member: the group's state with
        /// every member completed so far merged in).
        state: Box<RawValue>,
        /// For a parallel group member: the state the member itself returned, so the group's
        /// join can be recomputed in declaration order after a restart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member: Option<Box<RawValue>>,
    },
    /// An attempt of a step's action failed.
    StepFailed {
        /// Step index.
        step: u32,
        /// Attempt number.
        attempt: u32,
        /// Kind of failure.
        kind: StepErrorKind,
        /// Error message.
        error: String,
        /// When the next attempt may start (milliseconds since the Unix epoch), for a
        /// failure that is retried after a backoff: a saga resumed after a restart waits
        /// until then instead of running the step again at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<u64>,
    },
    /// The saga gave up moving forward and starts compensating.
    CompensationBegan {
        /// The step whose failure caused it.
        failed_step: u32,
        /// Its error.
        error: String,
    },
    /// An attempt of a step's compensation is about to run.
    CompensationStarted {
        /// Step index.
        step: u32,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// A compensation succeeded; `state` is the state it returned.
    CompensationCompleted {
        /// Step index.
        step: u32,
        /// The new state, as JSON.
        state: Box<RawValue>,
    },
    /// An attempt of a compensation failed.
    CompensationFailed {
        /// Step index.
        step: u32,
        /// Attempt number.
        attempt: u32,
        /// Kind of failure.
        kind: StepErrorKind,
        /// Error message.
        error: String,
        /// When the next attempt may start (see [`StepFailed`](Self::StepFailed)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<u64>,
    },
    /// The saga cannot go on without an operator.
    Stuck {
        /// The step it is stuck on.
        step: u32,
        /// Whether the action or the compensation is stuck.
        phase: Phase,
        /// The last error.
        error: String,
    },
    /// An operator asked to try the stuck step again.
    OperatorRetried {
        /// The stuck step.
        step: u32,
        /// Who asked (empty in logs written before actors were recorded).
        #[serde(default)]
        actor: String,
    },
    /// An operator skipped the stuck step (a skipped action counts as done, a skipped
    /// compensation as undone).
    OperatorSkipped {
        /// The stuck step.
        step: u32,
        /// Who asked (empty in logs written before actors were recorded).
        #[serde(default)]
        actor: String,
    },
    /// Terminal: an operator marked the saga resolved.
    OperatorResolved {
        /// The operator's note.
        note: String,
        /// Who resolved it (empty in logs written before actors were recorded).
        #[serde(default)]
        actor: String,
    },
    /// Cancelled by an operator before its pivot: it stops moving forward and compensates
    /// what it completed, then ends [`Cancelled`](Self::Cancelled).
    CancelBegan {
        /// Why, as the operator gave it.
        reason: String,
        /// Who asked.
        actor: String,
    },
    /// Held at a step boundary by an operator: nothing runs until it is resumed.
    Paused {
        /// Who asked.
        actor: String,
    },
    /// A paused saga goes on from where it was held.
    Resumed {
        /// Who asked.
        actor: String,
    },
    /// Terminal: a cancelled saga compensated every completed step.
    Cancelled {
        /// Why it was cancelled.
        reason: String,
    },
    /// Terminal: every step succeeded.
    Completed,
    /// Terminal: every completed step was compensated.
    Compensated {
        /// The step whose failure started compensation.
        failed_step: u32,
        /// Its error.
        error: String,
    },
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u32,
    e: &'a SagaEvent,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u32,
    e: Box<RawValue>,
}

impl SagaEvent {
    /// Encodes the event as a log row.
    pub fn encode(&self) -> String {
        // Written into a buffer sized for the whole row, so a row carrying a state is not
        // copied over and over while `serde_json` grows its default 128-byte buffer.
        let mut row = Vec::with_capacity(self.encoded_len_hint());
        // Serializing these plain enums cannot fail: every field is a string, a number or
        // already-valid JSON, and what `serde_json` writes is UTF-8.
        let envelope = EnvelopeOut {
            v: LOG_FORMAT_VERSION,
            e: self,
        };
        if serde_json::to_writer(&mut row, &envelope).is_err() {
            return String::new();
        }
        String::from_utf8(row).unwrap_or_default()
    }

    /// About the length of the encoded row: the envelope and field names, plus the states
    /// and texts it carries (text that needs escaping grows the buffer once more).
    fn encoded_len_hint(&self) -> usize {
        const ENVELOPE: usize = 96;
        let carried = match self {
            Self::Started {
                definition,
                input,
                trace,
                ..
            } => {
                let trace = trace.as_ref().map_or(0, |t| {
                    t.traceparent().len() + t.tracestate().map_or(0, str::len)
                });
                definition.len() + input.get().len() + trace
            }
            Self::StepCompleted { state, member, .. } => {
                state.get().len() + member.as_ref().map_or(0, |m| m.get().len())
            }
            Self::CompensationCompleted { state, .. } => state.get().len(),
            Self::StepFailed { error, .. }
            | Self::CompensationFailed { error, .. }
            | Self::CompensationBegan { error, .. }
            | Self::Stuck { error, .. }
            | Self::Compensated { error, .. } => error.len(),
            Self::OperatorResolved { note, actor } => note.len() + actor.len(),
            Self::OperatorRetried { actor, .. } | Self::OperatorSkipped { actor, .. } => {
                actor.len()
            }
            Self::CancelBegan { reason, actor } => reason.len() + actor.len(),
            Self::Paused { actor } | Self::Resumed { actor } => actor.len(),
            Self::Cancelled { reason } => reason.len(),
            Self::StepStarted { .. } | Self::CompensationStarted { .. } | Self::Completed => 0,
        };
        ENVELOPE.saturating_add(carried)
    }

    /// Decodes a log row written by [`encode`](Self::encode).
    pub fn decode(seq: u64, row: &str) -> Result<Self, LoadError> {
        let corrupt = |reason: String| LoadError::Corrupt { seq, reason };
        let envelope: EnvelopeIn = serde_json::from_str(row).map_err(|e| corrupt(e.to_string()))?;
        if envelope.v != LOG_FORMAT_VERSION {
            return Err(corrupt(format!(
                "log format version {} is not supported (this build reads {LOG_FORMAT_VERSION})",
                envelope.v
            )));
        }
        serde_json::from_str(envelope.e.get()).map_err(|e| corrupt(e.to_string()))
    }

    /// Whether the event ends the saga for good.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::Compensated { .. }
                | Self::OperatorResolved { .. }
                | Self::Cancelled { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).expect("valid JSON")
    }

    /// Every kind of row, with texts that need escaping and states larger than the hint's
    /// envelope allowance.
    fn every_event() -> Vec<SagaEvent> {
        let big = raw(&format!("\"{}\"", "s".repeat(1000)));
        let text = "quote \" backslash \\ newline \n tab \t é".to_owned();
        vec![
            SagaEvent::Started {
                definition: text.clone(),
                version: u32::MAX,
                input: big.clone(),
                started_at_ms: u64::MAX,
                trace: None,
            },
            SagaEvent::Started {
                definition: "traced".into(),
                version: 1,
                input: raw("{}"),
                started_at_ms: 0,
                trace: Some(
                    TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                        .and_then(|t| t.with_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"))
                        .expect("valid trace"),
                ),
            },
            SagaEvent::StepStarted {
                step: 0,
                attempt: 1,
            },
            SagaEvent::StepCompleted {
                step: 1,
                state: big.clone(),
                member: Some(raw("{\"a\":[1,2,3]}")),
            },
            SagaEvent::StepCompleted {
                step: 2,
                state: raw("null"),
                member: None,
            },
            SagaEvent::StepFailed {
                step: 3,
                attempt: 2,
                kind: StepErrorKind::Timeout,
                error: text.repeat(50),
                retry_at_ms: Some(u64::MAX),
            },
            SagaEvent::CompensationBegan {
                failed_step: 3,
                error: text.clone(),
            },
            SagaEvent::CompensationStarted {
                step: 1,
                attempt: 1,
            },
            SagaEvent::CompensationCompleted {
                step: 1,
                state: big,
            },
            SagaEvent::CompensationFailed {
                step: 1,
                attempt: 3,
                kind: StepErrorKind::Panicked,
                error: text.clone(),
                retry_at_ms: None,
            },
            SagaEvent::Stuck {
                step: 1,
                phase: Phase::Compensate,
                error: text.clone(),
            },
            SagaEvent::OperatorRetried {
                step: 1,
                actor: text.clone(),
            },
            SagaEvent::OperatorSkipped {
                step: 1,
                actor: String::new(),
            },
            SagaEvent::OperatorResolved {
                note: text.clone(),
                actor: text.clone(),
            },
            SagaEvent::CancelBegan {
                reason: text.clone(),
                actor: text.clone(),
            },
            SagaEvent::Paused {
                actor: text.clone(),
            },
            SagaEvent::Resumed {
                actor: text.clone(),
            },
            SagaEvent::Cancelled {
                reason: text.clone(),
            },
            SagaEvent::Completed,
            SagaEvent::Compensated {
                failed_step: 3,
                error: text,
            },
        ]
    }

    #[test]
    fn encode_writes_exactly_what_serde_json_writes_and_decodes_back() {
        for (seq, event) in (0u64..).zip(every_event()) {
            let row = event.encode();
            let expected = serde_json::to_string(&EnvelopeOut {
                v: LOG_FORMAT_VERSION,
                e: &event,
            })
            .expect("serializes");
            assert_eq!(row, expected);
            let back = SagaEvent::decode(seq, &row).expect("decodes");
            assert_eq!(back.encode(), row);
        }
    }
}
