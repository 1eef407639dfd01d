//! The errors a fallback adds: a callback that panicked ([`FallbackPanicked`]) and a backup
//! that failed ([`FallbackFailed`]).

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

use staunch_core::BoxError;

use crate::Reason;

/// Which piece of user code of a fallback panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Callback {
    /// The error rule ([`on_error`](crate::FallbackPolicyBuilder::on_error)).
    ErrorRule,
    /// The response rule ([`on_response`](crate::FallbackPolicyBuilder::on_response)).
    ResponseRule,
    /// The answer: a value's `clone` or a function ([`Answer`](crate::Answer)).
    Answer,
    /// The backup service or the engine's backup future
    /// ([`FallbackLayer::service`](crate::FallbackLayer::service),
    /// [`FallbackPolicy::call_or_else`](crate::FallbackPolicy::call_or_else)).
    Backup,
}

impl Callback {
    /// The callback's name in messages and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Callback::ErrorRule => "error rule",
            Callback::ResponseRule => "response rule",
            Callback::Answer => "answer",
            Callback::Backup => "backup",
        }
    }
}

/// A fallback's rule, answer or backup panicked: the call fails with this error, and the
/// fallback keeps working for every other call.
///
/// The primary call's own result is dropped: a rule that panics cannot say whether it
/// should have been answered, and an answer that panics has none to give.
#[derive(Debug, Clone)]
pub struct FallbackPanicked {
    name: Arc<str>,
    callback: Callback,
    message: String,
}

impl FallbackPanicked {
    pub(crate) fn new(name: &Arc<str>, callback: Callback, panic: &(dyn Any + Send)) -> Self {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        Self {
            name: Arc::clone(name),
            callback,
            message,
        }
    }

    /// The name of the fallback policy.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which callback panicked.
    pub fn callback(&self) -> Callback {
        self.callback
    }

    /// The panic's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for FallbackPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} of fallback `{}` panicked ({}); the call failed, the fallback keeps working",
            self.callback.as_str(),
            self.name,
            self.message
        )
    }
}

impl Error for FallbackPanicked {}

/// The backup service (or backup future) a fallback called failed: the call fails with this
/// error, whose [`source`](Error::source) is the backup's own error, as it was.
///
/// The primary call's error is dropped: the fallback was asked to answer it and could not.
/// A rejection by the backup's own layers (its breaker open, say) is still found by
/// [`rejection_of`](staunch_core::rejection_of) through the source chain, so an outer
/// retry layer does not retry it.
#[derive(Debug)]
pub struct FallbackFailed {
    name: Arc<str>,
    reason: Reason,
    source: BoxError,
}

impl FallbackFailed {
    pub(crate) fn new(name: &Arc<str>, reason: Reason, source: BoxError) -> Self {
        Self {
            name: Arc::clone(name),
            reason,
            source,
        }
    }

    /// The name of the fallback policy.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why the fallback was asked to answer.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The backup's error.
    pub fn backup_error(&self) -> &BoxError {
        &self.source
    }

    /// The backup's error, owned.
    pub fn into_backup_error(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for FallbackFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the backup of fallback `{}` failed (asked to answer for: {})",
            self.name, self.reason
        )
    }
}

impl Error for FallbackFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}
