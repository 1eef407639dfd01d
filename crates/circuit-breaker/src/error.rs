//! The error of a call run by the engine ([`CircuitBreaker::call`](crate::CircuitBreaker::call)):
//! rejected, or the call's own error.

use std::error::Error;
use std::fmt;

pub use staunch_core::BreakerOpen;

/// A call run by [`CircuitBreaker::call`](crate::CircuitBreaker::call) failed: the breaker
/// refused it, or the call itself failed.
///
/// Match on it without downcasting. The tower services do not return it: like every staunch
/// layer they return a [`BoxError`](staunch_core::BoxError), the boxed [`BreakerOpen`] or the
/// inner error itself, which is what [`into_box_error`](Self::into_box_error) makes of this.
/// It implements [`std::error::Error`] when the inner error does, so it converts into a
/// `BoxError` with `?` too; [`rejection_of`] finds the [`BreakerOpen`] inside (its
/// `source()`), which is how a retry layer knows not to retry it.
///
/// Its `Display` says what happened and its `source()` is the cause, so an error report
/// (`anyhow`'s `{:#}`) says each thing once: `call through the circuit breaker failed:
/// connection reset`, not the inner message twice.
///
/// [`rejection_of`]: staunch_core::rejection_of
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitBreakerError<E> {
    /// The breaker was open (or every half-open probe was taken): the call was not made.
    Open(BreakerOpen),
    /// The call was made and failed.
    Inner(E),
}

impl<E> CircuitBreakerError<E> {
    /// `true` when the breaker refused the call.
    pub fn is_open(&self) -> bool {
        matches!(self, CircuitBreakerError::Open(_))
    }

    /// The rejection, if the breaker refused the call.
    pub fn as_open(&self) -> Option<&BreakerOpen> {
        match self {
            CircuitBreakerError::Open(open) => Some(open),
            CircuitBreakerError::Inner(_) => None,
        }
    }

    /// The inner call's error, if it was made.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CircuitBreakerError::Open(_) => None,
            CircuitBreakerError::Inner(e) => Some(e),
        }
    }

    /// Converts into a boxed error: the inner error as it was, or the [`BreakerOpen`].
    pub fn into_box_error(self) -> Box<dyn Error + Send + Sync>
    where
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        match self {
            CircuitBreakerError::Open(open) => Box::new(open),
            CircuitBreakerError::Inner(e) => e.into(),
        }
    }
}

impl<E> From<BreakerOpen> for CircuitBreakerError<E> {
    fn from(open: BreakerOpen) -> Self {
        CircuitBreakerError::Open(open)
    }
}

impl<E> fmt::Display for CircuitBreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The details are in the source, so that reports do not say them twice.
            CircuitBreakerError::Open(open) => {
                write!(f, "call rejected by circuit breaker `{}`", open.name())
            }
            CircuitBreakerError::Inner(_) => f.write_str("call through the circuit breaker failed"),
        }
    }
}

impl<E: Error + 'static> Error for CircuitBreakerError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CircuitBreakerError::Open(open) => Some(open),
            // The inner error itself (not only its source), so that a rejection returned by
            // an inner layer is still found by `rejection_of`.
            CircuitBreakerError::Inner(e) => Some(e),
        }
    }
}
