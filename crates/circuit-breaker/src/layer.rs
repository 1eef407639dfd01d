//! The tower layer: wraps a service in a circuit breaker.

use staunch_core::AnyError;
use tower_layer::Layer;

use crate::breaker::CircuitBreaker;
use crate::service::CircuitBreakerService;

/// Wraps services in a [`CircuitBreaker`], with a classifier that decides which results count
/// as failures.
///
/// Every service made by one layer shares the layer's breaker. The default classifier is
/// [`AnyError`]; pass [`HttpStatus::new()`](staunch_core::HttpStatus) for HTTP clients
/// (reqwest, hyper, axum: 5xx and 429 are failures) or `GrpcStatus::new()` (feature `tonic` of
/// `staunch-core`) for a tonic `Channel`. Whatever the classifier, a rejection by a layer
/// further in (a full bulkhead, an open inner breaker, a call not sent because its deadline
/// had passed) is never counted: the classifier is wrapped in
/// [`IgnoreRejections`](staunch_core::IgnoreRejections), because such a call never reached the
/// dependency.
///
/// The service's error is a [`BoxError`](staunch_core::BoxError), as for every staunch layer:
/// a boxed [`BreakerOpen`](crate::BreakerOpen) when the breaker refused the call, else the
/// inner service's error as it is (see [`CircuitBreakerService`]).
///
/// ```
/// # fn main() -> Result<(), staunch_core::ConfigError> {
/// use staunch_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
/// use staunch_core::HttpStatus;
/// use tower::ServiceBuilder;
///
/// let breaker = CircuitBreaker::builder("payment").build()?;
/// let client = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()).with_classifier(HttpStatus::new()))
///     .service_fn(|req: http::Request<String>| async move {
///         Ok::<_, std::io::Error>(http::Response::new(req.into_body()))
///     });
/// // `breaker` is the handle: state, snapshot, manual control.
/// # drop(client);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = AnyError> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer around `breaker` that counts every `Err` as a failure, except rejections by
    /// layers further in.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classifier: AnyError::new(),
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Uses `classifier` to decide which results count as failures (rejections by layers
    /// further in are still ignored).
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The breaker (a handle to it: clones share its state).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
