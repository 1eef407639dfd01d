//! The tower layer that applies a [`TimeLimit`] to every call of a service.

use std::time::Duration;

use staunch_core::ConfigError;
use tower_layer::Layer;

use crate::limit::TimeLimit;
use crate::request::{FromExtensions, IgnoreRequest};
use crate::service::Timeout;

/// Applies a time limit to every call of the services it wraps; see [`Timeout`].
///
/// By default the limits a request carries are read from an `http::Request`'s extensions
/// ([`FromExtensions`]: a [`TimeoutOverride`](crate::TimeoutOverride) and a
/// [`Deadline`](crate::Deadline)). For other request types call
/// [`ignore_request`](Self::ignore_request) or [`read_limits_with`](Self::read_limits_with).
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::TimeoutLayer;
/// use tower::{ServiceBuilder, service_fn};
///
/// let layer = TimeoutLayer::new(Duration::from_secs(2))?;
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|req: http::Request<()>| async move {
///         Ok::<_, std::io::Error>(http::Response::new(()))
///     }));
/// # let _ = svc;
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TimeoutLayer<L = FromExtensions> {
    limit: TimeLimit,
    read: L,
}

impl TimeoutLayer {
    /// A layer limiting each call to `limit`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `limit` when it is zero.
    pub fn new(limit: Duration) -> Result<Self, ConfigError> {
        Ok(Self::from_limit(TimeLimit::new(limit)?))
    }

    /// A layer applying `limit` (built with [`TimeLimit::builder`], e.g. to give it a name).
    pub fn from_limit(limit: TimeLimit) -> Self {
        Self {
            limit,
            read: FromExtensions,
        }
    }
}

impl<L> TimeoutLayer<L> {
    /// Applies the configured limit to requests of any type, without reading anything from
    /// them.
    pub fn ignore_request(self) -> TimeoutLayer<IgnoreRequest> {
        self.read_limits_with(IgnoreRequest)
    }

    /// Reads each request's own limits with `read`.
    pub fn read_limits_with<M>(self, read: M) -> TimeoutLayer<M> {
        TimeoutLayer {
            limit: self.limit,
            read,
        }
    }

    /// The limit applied to each call.
    pub fn time_limit(&self) -> &TimeLimit {
        &self.limit
    }
}

impl<S, L: Clone> Layer<S> for TimeoutLayer<L> {
    type Service = Timeout<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.limit.clone(), self.read.clone())
    }
}
