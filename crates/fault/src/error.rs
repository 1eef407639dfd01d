//! The errors a fault injector produces: [`FaultInjected`] (an abort, or an error nobody
//! chose a value for) and [`ErrorFnPanicked`] (the user's error function panicked).

use std::any::Any;
use std::fmt;
use std::io;
use std::sync::Arc;

/// The kinds of fault an injector injects, as the metrics label them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// The call was delayed before it was sent.
    Latency,
    /// The call was answered with the chosen error (or response) instead of the service's.
    Error,
    /// The call failed with [`FaultInjected`] without reaching the service.
    Abort,
}

impl FaultKind {
    /// The kind as the `kind` label of `staunch.fault.injected` spells it: `latency`,
    /// `error` or `abort`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Error => "error",
            FaultKind::Abort => "abort",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call failed because a fault injector said so: it never reached the service.
///
/// An abort always fails with it; an injected error does too, unless the layer was given a
/// function that makes the service's own error ([`FaultLayer::error_with`](crate::FaultLayer::error_with))
/// or answers a chosen HTTP response ([`HttpFaultLayer`](crate::HttpFaultLayer)).
///
/// It is deliberately *not* a staunch rejection: a fault stands for the dependency failing,
/// so a circuit breaker counts it as it would a real failure. An abort stands for a
/// connection aborted before the request got through: its [`source`](std::error::Error::source)
/// is an `io::Error` of kind `ConnectionAborted`, so a classifier that looks for connection
/// failures (the staunch retry layer's default) retries it like one. An injected error has no
/// source. A cheap value: cloning it bumps a reference count.
#[derive(Debug)]
pub struct FaultInjected {
    name: Arc<str>,
    kind: FaultKind,
    status: Option<u16>,
    /// For an abort, the connection failure it stands for (an `io::Error` of a simple kind
    /// allocates nothing).
    cause: Option<io::Error>,
}

impl FaultInjected {
    /// An abort by the injector called `name`.
    pub fn abort(name: Arc<str>) -> Self {
        Self {
            name,
            kind: FaultKind::Abort,
            status: None,
            cause: Some(io::Error::from(io::ErrorKind::ConnectionAborted)),
        }
    }

    /// An injected error by the injector called `name`, standing for `status`.
    pub fn error(name: Arc<str>, status: u16) -> Self {
        Self {
            name,
            kind: FaultKind::Error,
            status: Some(status),
            cause: None,
        }
    }

    /// The name of the injector.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// [`FaultKind::Abort`] or [`FaultKind::Error`].
    pub fn kind(&self) -> FaultKind {
        self.kind
    }

    /// For an injected error, the status it stands for (the `error.status` setting).
    pub fn status(&self) -> Option<u16> {
        self.status
    }
}

impl Clone for FaultInjected {
    fn clone(&self) -> Self {
        Self {
            name: Arc::clone(&self.name),
            kind: self.kind,
            status: self.status,
            cause: self.cause.as_ref().map(|e| io::Error::from(e.kind())),
        }
    }
}

impl PartialEq for FaultInjected {
    fn eq(&self, other: &Self) -> bool {
        // The cause follows from the kind.
        self.name == other.name && self.kind == other.kind && self.status == other.status
    }
}

impl Eq for FaultInjected {}

impl fmt::Display for FaultInjected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(
                f,
                "fault injector `{}` failed the call (injected error, status {status})",
                self.name
            ),
            None => write!(
                f,
                "fault injector `{}` aborted the call before it reached the service",
                self.name
            ),
        }
    }
}

impl std::error::Error for FaultInjected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The function that makes a layer's injected errors panicked: that call fails with this
/// error instead, and the layer keeps working for every other call.
#[derive(Debug, Clone)]
pub struct ErrorFnPanicked {
    name: Arc<str>,
    message: String,
}

impl ErrorFnPanicked {
    pub(crate) fn new(name: Arc<str>, panic: &(dyn Any + Send)) -> Self {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        Self { name, message }
    }

    /// The name of the injector.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The panic's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ErrorFnPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the error function of fault injector `{}` panicked ({}); the call was not made",
            self.name, self.message
        )
    }
}

impl std::error::Error for ErrorFnPanicked {}
