//! What a step's action or compensation is told about the call it is making.

use std::fmt;
use std::sync::Arc;

use crate::trace::TraceContext;

/// Whether a step call is the action or its compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The forward action.
    Action,
    /// The compensation undoing the action.
    Compensate,
}

impl Phase {
    /// `action` or `compensate`, as used in idempotency keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Compensate => "compensate",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Passed to every action and compensation: who is calling, and the key to deduplicate on.
///
/// Send [`idempotency_key`](Self::idempotency_key) to the participant (e.g. as an
/// `Idempotency-Key` header). It is the same on every attempt and after a crash and recovery,
/// so a participant that remembers keys applies each action and each compensation once, even
/// though the engine delivers them at least once.
///
/// Send [`traceparent`](Self::traceparent) too (and [`tracestate`](Self::tracestate)), so the
/// participant's spans join the trace of the caller that started the saga, also for attempts
/// run after a restart.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub(crate) saga_id: Arc<str>,
    pub(crate) step: Arc<str>,
    pub(crate) phase: Phase,
    pub(crate) attempt: u32,
    pub(crate) trace: Option<Arc<TraceContext>>,
}

impl StepContext {
    /// A context as the engine would pass it, for calling a step's function on its own in a
    /// unit test.
    pub fn new(
        saga_id: impl Into<Arc<str>>,
        step: impl Into<Arc<str>>,
        phase: Phase,
        attempt: u32,
    ) -> Self {
        Self {
            saga_id: saga_id.into(),
            step: step.into(),
            phase,
            attempt,
            trace: None,
        }
    }

    /// This context with the trace context the saga was started under, as the engine passes
    /// it to a traced saga's steps (for unit tests of a step).
    #[must_use]
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(Arc::new(trace));
        self
    }

    /// The saga's id.
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// Action or compensation.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The attempt number, from 1, counted over the saga's whole log (recovery continues it).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The trace context the saga was started under (read from its log, so also after a
    /// restart), if the caller gave a valid one.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_deref()
    }

    /// A `traceparent` header value for the calls this attempt makes: the saga's trace id
    /// and trace flags, and a span id derived from the saga id, step, phase and attempt
    /// ([`step_span_id`](crate::step_span_id); it is also the `span_id` field of the attempt's
    /// `saga_step` span). `None` when the saga was started without a valid trace context.
    pub fn traceparent(&self) -> Option<String> {
        let trace = self.trace.as_deref()?;
        Some(trace.child_traceparent(&self.saga_id, &self.step, self.phase, self.attempt))
    }

    /// The `tracestate` to send beside [`traceparent`](Self::traceparent): the caller's, as
    /// stored with the saga.
    pub fn tracestate(&self) -> Option<&str> {
        self.trace.as_deref()?.tracestate()
    }

    /// `{saga_id}:{step}:{action|compensate}`: stable across attempts and recoveries.
    pub fn idempotency_key(&self) -> String {
        idempotency_key(&self.saga_id, &self.step, self.phase)
    }
}

/// The idempotency key of a step call: `{saga_id}:{step}:{action|compensate}`.
pub fn idempotency_key(saga_id: &str, step: &str, phase: Phase) -> String {
    format!("{saga_id}:{step}:{}", phase.as_str())
}
