//! [`IgnoreRejections`]: a classifier wrapper that does not count staunch rejections.

use std::any::Any;

use staunch_core::{Classify, Outcome, rejection_of};

use crate::error::BoxError;

/// Wraps a classifier so that a rejection from a layer further in (a full bulkhead, an inner
/// breaker that is open) counts as [`Outcome::Ignored`] instead of a failure.
///
/// A circuit breaker measures the health of the dependency. A bulkhead below it that is full
/// says the *caller* is saturated, not that the dependency is failing: counting it would trip
/// the breaker on local load. The breaker layers of this crate ([`BreakerLayer`], the presets)
/// wrap their classifier in it.
///
/// Rejections are recognised in boxed errors (`tower::BoxError`, what every staunch layer
/// returns); other error types go to the wrapped classifier unchanged.
///
/// ```
/// use std::sync::Arc;
/// use staunch::{AnyError, BoxError, BulkheadFull, Classify, IgnoreRejections, Outcome};
/// use staunch::core::BulkheadFullReason;
///
/// let classify = IgnoreRejections::new(AnyError::new());
/// let full: Result<(), BoxError> =
///     Err(Box::new(BulkheadFull::new(Arc::from("db"), 4, BulkheadFullReason::NoPermit)));
/// assert_eq!(classify.classify(&full), Outcome::Ignored);
/// let failed: Result<(), BoxError> = Err("reset".into());
/// assert_eq!(classify.classify(&failed), Outcome::Failure);
/// ```
///
/// [`BreakerLayer`]: crate::BreakerLayer
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreRejections<C> {
    inner: C,
}

impl<C> IgnoreRejections<C> {
    /// Wraps `inner`.
    pub const fn new(inner: C) -> Self {
        Self { inner }
    }

    /// The wrapped classifier.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }
}

impl<Res, Err, C> Classify<Res, Err> for IgnoreRejections<C>
where
    Err: 'static,
    C: Classify<Res, Err>,
{
    #[inline]
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        if let Err(err) = result
            && let Some(boxed) = (err as &dyn Any).downcast_ref::<BoxError>()
            && rejection_of(&**boxed).is_some()
        {
            return Outcome::Ignored;
        }
        self.inner.classify(result)
    }

    fn classify_cancelled(&self) -> Outcome {
        self.inner.classify_cancelled()
    }
}
