//! The preset for tonic channels.

use tower_layer::Layer;
use tower_service::Service;

use staunch_bulkhead::{BulkheadLayer, BulkheadService};
use staunch_core::{AnyError, ConfigError, GrpcStatus};
use staunch_timeout::{Timeout, TimeoutLayer};

use crate::breaker::{BreakerLayer, BreakerService};
use crate::config::StackConfig;
use crate::http::AttemptDeadline;
use crate::stack::StackHandle;

/// A tonic channel wrapped by [`channel`]: circuit breaker, per-attempt timeout, bulkhead.
/// Errors are boxed (what tonic's generated clients expect); the rejections inside
/// ([`BreakerOpen`](crate::BreakerOpen), [`BulkheadFull`](crate::BulkheadFull)) reach the
/// caller as the source of the `tonic::Status` the client returns.
pub type Channel<S> =
    BreakerService<Timeout<BulkheadService<AttemptDeadline<S>, AnyError>>, GrpcStatus>;

/// Wraps a tonic channel (any `Service<http::Request<tonic::body::Body>>`) for a generated
/// client: circuit breaker ([`GrpcStatus`]: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, ... count as
/// failures), per-attempt timeout, bulkhead, in that order. Returns the wrapped channel and
/// the handle to the stack's engines.
///
/// **Retries are not in the channel.** A channel carries a streamed body that cannot be
/// replayed, and every gRPC call is a `POST`: retry around the generated client instead,
/// where the request message can be cloned, with the handle's policy
/// (`handle.retry().retry(|| ...)`). It never retries a rejection of the channel's breaker or
/// bulkhead, and it honours `grpc-retry-pushback-ms`. The stack's `timeout` is that policy's
/// overall deadline.
///
/// With a [`deadline.outgoing`](crate::DeadlineConfig::outgoing) section, each call tells
/// the server how long it has left (set `grpc = true` there to write `grpc-timeout`, and
/// `header = ""` to write only that), as in [`http::client`](crate::http::client).
///
/// # Errors
///
/// A [`ConfigError`] naming the bad field, e.g. `inventory.bulkhead.max_concurrent`.
pub fn channel<S, B>(
    name: &str,
    inner: S,
    config: &StackConfig,
) -> Result<(Channel<S>, StackHandle), ConfigError>
where
    S: Service<http::Request<B>>,
{
    let handle = config.build(name)?;
    let inner = AttemptDeadline::new(inner, &handle);
    let bulkhead = BulkheadLayer::new(handle.bulkhead().clone()).layer(inner);
    let attempt = TimeoutLayer::from_limit(handle.attempt_timeout().clone()).layer(bulkhead);
    let breaker =
        BreakerLayer::with_classifier(handle.breaker().clone(), GrpcStatus::new()).layer(attempt);
    Ok((breaker, handle))
}
