//! How a [`Timeout`](crate::Timeout) learns a request's own limits: an override and a deadline.

use std::time::Duration;

use crate::deadline::{Deadline, TimeoutOverride};

/// What one request says about its time limit: an override of the configured limit and a
/// deadline, each optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestLimits {
    /// Replaces the configured limit for this request.
    pub limit: Option<Duration>,
    /// The call must not wait past this point, whatever the limit.
    pub deadline: Option<Deadline>,
}

impl RequestLimits {
    /// Nothing: the configured limit applies.
    pub const NONE: Self = Self {
        limit: None,
        deadline: None,
    };

    /// Only an override of the configured limit.
    pub const fn limit(limit: Duration) -> Self {
        Self {
            limit: Some(limit),
            deadline: None,
        }
    }

    /// Only a deadline.
    pub const fn deadline(deadline: Deadline) -> Self {
        Self {
            limit: None,
            deadline: Some(deadline),
        }
    }
}

/// Reads a request's own limits before it is passed to the inner service.
///
/// [`FromExtensions`], the default, reads [`TimeoutOverride`] and [`Deadline`] from an
/// `http::Request`'s extensions; [`IgnoreRequest`] works with any request type and always
/// applies the configured limit. Implement it to read limits from your own request type.
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::{ReadLimits, RequestLimits, TimeoutLayer};
///
/// struct Job { budget: Option<Duration> }
///
/// #[derive(Clone)]
/// struct JobBudget;
///
/// impl ReadLimits<Job> for JobBudget {
///     fn read(&self, job: &Job) -> RequestLimits {
///         RequestLimits { limit: job.budget, deadline: None }
///     }
/// }
///
/// let layer = TimeoutLayer::new(Duration::from_secs(1))?.read_limits_with(JobBudget);
/// # let _ = layer;
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot read time limits from a `{R}`",
    note = "the default `FromExtensions` works with `http::Request<B>`; for other request types use `.ignore_request()` or `.read_limits_with(..)` on the layer"
)]
pub trait ReadLimits<R> {
    /// The limits `request` carries.
    fn read(&self, request: &R) -> RequestLimits;
}

/// Reads [`TimeoutOverride`] and [`Deadline`] from an `http::Request`'s extensions (the
/// default for [`TimeoutLayer`](crate::TimeoutLayer)).
///
/// Costs one check for empty extensions when a request carries none.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromExtensions;

impl<B> ReadLimits<http::Request<B>> for FromExtensions {
    #[inline]
    fn read(&self, request: &http::Request<B>) -> RequestLimits {
        let extensions = request.extensions();
        if extensions.is_empty() {
            return RequestLimits::NONE;
        }
        RequestLimits {
            limit: extensions.get::<TimeoutOverride>().map(|o| o.0),
            deadline: extensions.get::<Deadline>().copied(),
        }
    }
}

/// Applies the configured limit to every request, of any type, without looking at it.
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreRequest;

impl<R> ReadLimits<R> for IgnoreRequest {
    #[inline]
    fn read(&self, _request: &R) -> RequestLimits {
        RequestLimits::NONE
    }
}
