//! What a caller can tell [`SagaEngine::start_with`](crate::SagaEngine::start_with) beyond
//! the definition, the id and the input.

/// Options of one start: for now, the W3C trace context of the caller.
///
/// The headers are taken as they came (from an HTTP request, a message): a malformed
/// `traceparent` is ignored with a debug event and the saga starts without a trace; a
/// malformed `tracestate` is dropped the same way and the `traceparent` kept. Neither is ever
/// an error. See [`TraceContext`](crate::TraceContext) for what is valid.
///
/// ```
/// use staunch_saga::StartOptions;
///
/// let options = StartOptions::new()
///     .traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
///     .tracestate("rojo=00f067aa0ba902b7");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct StartOptions {
    pub(crate) traceparent: Option<String>,
    pub(crate) tracestate: Option<String>,
}

impl StartOptions {
    /// No options: what [`SagaEngine::start`](crate::SagaEngine::start) uses.
    pub fn new() -> Self {
        Self::default()
    }

    /// The caller's `traceparent` header value, stored with the saga (checked at start). An
    /// empty value means none.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// The caller's `tracestate` header value, stored beside a valid `traceparent` (and
    /// ignored without one).
    pub fn tracestate(mut self, tracestate: impl Into<String>) -> Self {
        self.tracestate = Some(tracestate.into());
        self
    }

    /// A trace context already parsed.
    pub fn trace(mut self, trace: &crate::TraceContext) -> Self {
        self.traceparent = Some(trace.traceparent().to_owned());
        self.tracestate = trace.tracestate().map(str::to_owned);
        self
    }
}
