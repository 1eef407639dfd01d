//! Outcomes of calls, and the `Classify` trait that decides them.

use std::fmt;

/// What a finished call means for a resilience policy.
///
/// A circuit breaker counts [`Failure`](Outcome::Failure)s toward its failure rate, an adaptive
/// bulkhead lowers its limit on them, and a retry policy considers retrying them.
/// [`Ignored`](Outcome::Ignored) calls are not counted at all: a cancelled call, or an error the
/// caller caused (a 404, a validation error) says nothing about the health of the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency did its job.
    Success,
    /// The dependency failed; this call counts against its health.
    Failure,
    /// The call says nothing about the dependency's health and is not recorded.
    Ignored,
}

impl Outcome {
    /// `true` for [`Outcome::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// `true` for [`Outcome::Failure`].
    pub const fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure)
    }

    /// `true` for [`Outcome::Ignored`].
    pub const fn is_ignored(self) -> bool {
        matches!(self, Outcome::Ignored)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Ignored => "ignored",
        })
    }
}

/// Decides the [`Outcome`] of a finished call from its result.
///
/// Every staunch engine takes a classifier, so "what counts as a failure" is decided once, by
/// the user, in one place. Classification runs on the request path, so implementations should
/// be cheap: look at a status code, not at a body.
///
/// Provided classifiers: [`AnyError`] (every `Err` fails), [`HttpStatus`](crate::HttpStatus)
/// (5xx and 429 fail, configurable), `GrpcCode` (behind the `tonic` feature) and [`FnClassifier`]
/// for any closure.
///
/// # Example
///
/// A classifier that only counts timeouts as failures:
///
/// ```
/// use staunch_core::{Classify, Outcome};
///
/// #[derive(Debug)]
/// enum CallError { Timeout, NotFound }
///
/// #[derive(Clone)]
/// struct TimeoutsOnly;
///
/// impl<T> Classify<T, CallError> for TimeoutsOnly {
///     fn classify(&self, result: &Result<T, CallError>) -> Outcome {
///         match result {
///             Ok(_) => Outcome::Success,
///             Err(CallError::Timeout) => Outcome::Failure,
///             Err(CallError::NotFound) => Outcome::Ignored,
///         }
///     }
/// }
///
/// let c = TimeoutsOnly;
/// assert_eq!(c.classify(&Err::<(), _>(CallError::Timeout)), Outcome::Failure);
/// assert_eq!(c.classify(&Err::<(), _>(CallError::NotFound)), Outcome::Ignored);
/// assert_eq!(Classify::<(), CallError>::classify_cancelled(&c), Outcome::Ignored);
/// ```
pub trait Classify<Res, Err> {
    /// Classifies a finished call.
    fn classify(&self, result: &Result<Res, Err>) -> Outcome;

    /// Classifies a call whose future was dropped before it finished.
    ///
    /// The default is [`Outcome::Ignored`]: a caller that gave up (its own timeout, a client
    /// that went away) has learnt nothing about the dependency.
    fn classify_cancelled(&self) -> Outcome {
        Outcome::Ignored
    }
}

impl<Res, Err, C> Classify<Res, Err> for &C
where
    C: Classify<Res, Err> + ?Sized,
{
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        (**self).classify(result)
    }

    fn classify_cancelled(&self) -> Outcome {
        (**self).classify_cancelled()
    }
}

impl<Res, Err, C> Classify<Res, Err> for std::sync::Arc<C>
where
    C: Classify<Res, Err> + ?Sized,
{
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        (**self).classify(result)
    }

    fn classify_cancelled(&self) -> Outcome {
        (**self).classify_cancelled()
    }
}

/// The simplest classifier: `Ok` is a success, every `Err` is a failure.
///
/// ```
/// use staunch_core::{AnyError, Classify, Outcome};
///
/// let c = AnyError::new();
/// assert_eq!(c.classify(&Ok::<_, ()>(1)), Outcome::Success);
/// assert_eq!(c.classify(&Err::<(), _>("boom")), Outcome::Failure);
/// // Cancellation can be made to count, for callers whose own deadline means "too slow".
/// let strict = AnyError::new().cancelled_as(Outcome::Failure);
/// assert_eq!(Classify::<(), ()>::classify_cancelled(&strict), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyError {
    cancelled: Outcome,
}

impl AnyError {
    /// `Ok` succeeds, `Err` fails, cancellation is ignored.
    pub const fn new() -> Self {
        Self {
            cancelled: Outcome::Ignored,
        }
    }

    /// Sets the outcome of a cancelled call (default [`Outcome::Ignored`]).
    pub const fn cancelled_as(mut self, outcome: Outcome) -> Self {
        self.cancelled = outcome;
        self
    }
}

impl Default for AnyError {
    fn default() -> Self {
        Self::new()
    }
}

impl<Res, Err> Classify<Res, Err> for AnyError {
    #[inline]
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }

    fn classify_cancelled(&self) -> Outcome {
        self.cancelled
    }
}

/// A classifier made from a closure; build one with [`classify_fn`].
#[derive(Clone, Copy)]
pub struct FnClassifier<F> {
    f: F,
    cancelled: Outcome,
}

impl<F> fmt::Debug for FnClassifier<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnClassifier")
            .field("cancelled", &self.cancelled)
            .finish_non_exhaustive()
    }
}

impl<F> FnClassifier<F> {
    /// Sets the outcome of a cancelled call (default [`Outcome::Ignored`]).
    pub fn cancelled_as(mut self, outcome: Outcome) -> Self {
        self.cancelled = outcome;
        self
    }
}

/// Makes a classifier from a closure over the call's result.
///
/// ```
/// use staunch_core::{classify_fn, Classify, Outcome};
///
/// // Only errors that say "unavailable" count against the dependency.
/// let c = classify_fn(|r: &Result<u32, String>| match r {
///     Ok(_) => Outcome::Success,
///     Err(e) if e.contains("unavailable") => Outcome::Failure,
///     Err(_) => Outcome::Ignored,
/// });
/// assert_eq!(c.classify(&Err("service unavailable".into())), Outcome::Failure);
/// assert_eq!(c.classify(&Err("bad request".into())), Outcome::Ignored);
/// ```
pub fn classify_fn<F>(f: F) -> FnClassifier<F> {
    FnClassifier {
        f,
        cancelled: Outcome::Ignored,
    }
}

impl<Res, Err, F> Classify<Res, Err> for FnClassifier<F>
where
    F: Fn(&Result<Res, Err>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        (self.f)(result)
    }

    fn classify_cancelled(&self) -> Outcome {
        self.cancelled
    }
}
