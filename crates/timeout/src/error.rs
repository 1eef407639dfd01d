//! The error a timed-out call returns.

use std::fmt;
use std::time::Duration;

/// The call did not finish within its time limit and was cancelled.
///
/// Carries the limit that was in effect (the configured timeout, a per-request override, or
/// what was left of a propagated deadline), so logs say how long the caller was willing to
/// wait. A cheap value: no allocation, no backtrace. It converts into `tower::BoxError`; test
/// for it with `err.is::<Elapsed>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    limit: Duration,
}

impl Elapsed {
    /// A timeout after `limit`.
    pub const fn new(limit: Duration) -> Self {
        Self { limit }
    }

    /// The limit that was in effect for the call.
    pub const fn limit(&self) -> Duration {
        self.limit
    }

    /// Finds an `Elapsed` in `err` or anywhere in its source chain (looking inside
    /// `std::io::Error`s too), e.g. inside an error a layer above wrapped it in.
    ///
    /// ```
    /// use std::time::Duration;
    /// use staunch_timeout::Elapsed;
    ///
    /// #[derive(Debug)]
    /// struct Wrapped(Elapsed);
    /// impl std::fmt::Display for Wrapped {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("upstream failed")
    ///     }
    /// }
    /// impl std::error::Error for Wrapped {
    ///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
    ///         Some(&self.0)
    ///     }
    /// }
    ///
    /// let err: tower::BoxError = Box::new(Wrapped(Elapsed::new(Duration::from_secs(1))));
    /// assert_eq!(Elapsed::find(&*err).map(Elapsed::limit), Some(Duration::from_secs(1)));
    /// ```
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut current = Some(err);
        while let Some(err) = current {
            if let Some(elapsed) = err.downcast_ref::<Self>() {
                return Some(elapsed);
            }
            // `io::Error::source` skips the error it wraps (it returns that error's source),
            // so look inside it explicitly: clients often wrap layer errors in `io::Error`.
            current = match err.downcast_ref::<std::io::Error>() {
                Some(io) => io
                    .get_ref()
                    .map(|inner| inner as &(dyn std::error::Error + 'static)),
                None => err.source(),
            };
        }
        None
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call timed out after {:?}", self.limit)
    }
}

impl std::error::Error for Elapsed {}
