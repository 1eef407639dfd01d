//! [`ServiceBuilderExt`]: staunch layers as `tower::ServiceBuilder` methods.

use tower::ServiceBuilder;
use tower::layer::util::Stack;

/// Adds staunch's layers to [`tower::ServiceBuilder`].
///
/// No method name is one of `ServiceBuilder`'s own (tower's inherent `retry` and `timeout`,
/// on with its `retry`/`timeout`/`full` features, would silently win over a trait method of
/// the same name), so `.retry_policy(..)` and `.time_limit(..)` always add staunch's layers.
///
/// As with every `ServiceBuilder` method, the first layer added is the outermost. Every
/// layer returns `tower::BoxError`; put [`TypedErrorsLayer`](crate::TypedErrorsLayer) first to get
/// [`staunch::Error`](crate::Error) instead. The order that works (and why) is in the crate
/// docs, [*The order of layers*](crate#the-order-of-layers).
///
/// ```
/// # #[cfg(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry"))]
/// # {
/// use std::time::Duration;
/// use staunch::ServiceBuilderExt;
/// use staunch::bulkhead::Bulkhead;
/// use staunch::circuit_breaker::CircuitBreaker;
/// use staunch::retry::RetryPolicy;
/// use staunch::timeout::TimeLimit;
/// use tower::{ServiceBuilder, service_fn};
///
/// let svc = ServiceBuilder::new()
///     .typed_errors::<std::io::Error>()
///     .retry_policy(RetryPolicy::builder().max_attempts(3).build()?)
///     .circuit_breaker(CircuitBreaker::builder("inventory").build()?)
///     .time_limit(TimeLimit::new(Duration::from_millis(250))?)
///     .bulkhead(Bulkhead::builder("inventory").max_concurrent(16).build()?)
///     .service(service_fn(|req: http::Request<String>| async move {
///         Ok::<_, std::io::Error>(http::Response::new(req.into_body()))
///     }));
/// # let _ = svc;
/// # }
/// # Ok::<(), staunch::ConfigError>(())
/// ```
pub trait ServiceBuilderExt<L>: Sized {
    /// Adds a [`TypedErrorsLayer`](crate::TypedErrorsLayer): the stack's boxed errors become
    /// [`staunch::Error<E>`](crate::Error), `E` being the wrapped client's error type. Put it
    /// first (outermost).
    fn typed_errors<E>(self) -> ServiceBuilder<Stack<crate::TypedErrorsLayer<E>, L>>;

    /// Adds a circuit breaker counting every error as a failure, except rejections by the
    /// layers after it ([`CircuitBreakerLayer::new`]).
    ///
    /// [`CircuitBreakerLayer::new`]: staunch_circuit_breaker::CircuitBreakerLayer::new
    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker(
        self,
        breaker: staunch_circuit_breaker::CircuitBreaker,
    ) -> ServiceBuilder<Stack<staunch_circuit_breaker::CircuitBreakerLayer, L>>;

    /// Adds a circuit breaker that classifies results with `classifier` (e.g.
    /// [`HttpStatus`](crate::HttpStatus) so that 5xx responses count as failures); rejections
    /// by the layers after it are still not counted.
    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker_with<C>(
        self,
        breaker: staunch_circuit_breaker::CircuitBreaker,
        classifier: C,
    ) -> ServiceBuilder<Stack<staunch_circuit_breaker::CircuitBreakerLayer<C>, L>>;

    /// Adds a bulkhead.
    #[cfg(feature = "bulkhead")]
    fn bulkhead(
        self,
        bulkhead: staunch_bulkhead::Bulkhead,
    ) -> ServiceBuilder<Stack<staunch_bulkhead::BulkheadLayer, L>>;

    /// Adds retries with `policy` and the default classifier
    /// ([`RetryOn`](staunch_retry::RetryOn)).
    #[cfg(feature = "retry")]
    fn retry_policy(
        self,
        policy: staunch_retry::RetryPolicy,
    ) -> ServiceBuilder<Stack<staunch_retry::RetryLayer, L>>;

    /// Adds a time limit. For `http::Request`s, a [`Deadline`](staunch_timeout::Deadline) or a
    /// [`TimeoutOverride`](staunch_timeout::TimeoutOverride) in the request's extensions
    /// tightens or replaces it (use `staunch::timeout::TimeoutLayer::from_limit(limit)
    /// .ignore_request()` with `.layer(..)` for other request types).
    #[cfg(feature = "timeout")]
    fn time_limit(
        self,
        limit: staunch_timeout::TimeLimit,
    ) -> ServiceBuilder<Stack<staunch_timeout::TimeoutLayer, L>>;

    /// Sets the deadline of incoming `http::Request`s from the caller's headers
    /// (`grpc-timeout`, `x-request-timeout`) and the layer's own budget.
    #[cfg(feature = "timeout")]
    fn deadline(
        self,
        layer: staunch_timeout::DeadlineLayer,
    ) -> ServiceBuilder<Stack<staunch_timeout::DeadlineLayer, L>>;

    /// Writes the remaining time of a request's deadline onto the outgoing request's headers,
    /// so the next service does not work past it.
    #[cfg(feature = "timeout")]
    fn propagate_deadline(
        self,
        layer: staunch_timeout::PropagateDeadlineLayer,
    ) -> ServiceBuilder<Stack<staunch_timeout::PropagateDeadlineLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn typed_errors<E>(self) -> ServiceBuilder<Stack<crate::TypedErrorsLayer<E>, L>> {
        self.layer(crate::TypedErrorsLayer::new())
    }

    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker(
        self,
        breaker: staunch_circuit_breaker::CircuitBreaker,
    ) -> ServiceBuilder<Stack<staunch_circuit_breaker::CircuitBreakerLayer, L>> {
        self.layer(staunch_circuit_breaker::CircuitBreakerLayer::new(breaker))
    }

    #[cfg(feature = "circuit-breaker")]
    fn circuit_breaker_with<C>(
        self,
        breaker: staunch_circuit_breaker::CircuitBreaker,
        classifier: C,
    ) -> ServiceBuilder<Stack<staunch_circuit_breaker::CircuitBreakerLayer<C>, L>> {
        self.layer(
            staunch_circuit_breaker::CircuitBreakerLayer::new(breaker).with_classifier(classifier),
        )
    }

    #[cfg(feature = "bulkhead")]
    fn bulkhead(
        self,
        bulkhead: staunch_bulkhead::Bulkhead,
    ) -> ServiceBuilder<Stack<staunch_bulkhead::BulkheadLayer, L>> {
        self.layer(staunch_bulkhead::BulkheadLayer::new(bulkhead))
    }

    #[cfg(feature = "retry")]
    fn retry_policy(
        self,
        policy: staunch_retry::RetryPolicy,
    ) -> ServiceBuilder<Stack<staunch_retry::RetryLayer, L>> {
        self.layer(staunch_retry::RetryLayer::new(policy))
    }

    #[cfg(feature = "timeout")]
    fn time_limit(
        self,
        limit: staunch_timeout::TimeLimit,
    ) -> ServiceBuilder<Stack<staunch_timeout::TimeoutLayer, L>> {
        self.layer(staunch_timeout::TimeoutLayer::from_limit(limit))
    }

    #[cfg(feature = "timeout")]
    fn deadline(
        self,
        layer: staunch_timeout::DeadlineLayer,
    ) -> ServiceBuilder<Stack<staunch_timeout::DeadlineLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "timeout")]
    fn propagate_deadline(
        self,
        layer: staunch_timeout::PropagateDeadlineLayer,
    ) -> ServiceBuilder<Stack<staunch_timeout::PropagateDeadlineLayer, L>> {
        self.layer(layer)
    }
}
