//! [`RetryLayer`]: applies [`Retry`] to a service.

use tower_layer::Layer;

use crate::classify::RetryOn;
use crate::config::RetryPolicy;
use crate::service::Retry;

/// Wraps services in [`Retry`] with a shared [`RetryPolicy`] and a classifier (default
/// [`RetryOn`]).
///
/// Every service the layer wraps shares the policy: one budget, one set of counters.
///
/// ```
/// use staunch_retry::{RetryLayer, RetryPolicy};
/// use tower::ServiceBuilder;
///
/// let policy = RetryPolicy::builder().max_attempts(3).build()?;
/// let svc = ServiceBuilder::new()
///     .layer(RetryLayer::new(policy))
///     .service_fn(|req: http::Request<String>| async move {
///         Ok::<_, std::io::Error>(http::Response::new(req.into_body()))
///     });
/// # let _ = svc;
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer<C = RetryOn> {
    policy: RetryPolicy,
    classify: C,
}

impl RetryLayer {
    /// A layer with `policy` and the default classifier.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            classify: RetryOn::new(),
        }
    }
}

impl<C> RetryLayer<C> {
    /// Replaces the classifier that decides what is retried.
    pub fn classify<C2>(self, classify: C2) -> RetryLayer<C2> {
        RetryLayer {
            policy: self.policy,
            classify,
        }
    }

    /// The policy (and through it the budget and the metrics).
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.policy.clone(), self.classify.clone())
    }
}
