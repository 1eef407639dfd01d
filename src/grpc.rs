//! The preset for tonic channels, and gRPC status codes for staunch's errors.

use std::error::Error as StdError;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use staunch_bulkhead::{BulkheadLayer, BulkheadService};
use staunch_circuit_breaker::{CircuitBreakerLayer, CircuitBreakerService};
use staunch_core::{AnyError, BreakerOpen, BulkheadFull, ConfigError, DeadlineExpired, GrpcStatus};
use staunch_retry::{RetryCall, RetryClassify, RetryOn, RetryPolicy, RetryResponse};
use staunch_timeout::{Elapsed, Timeout, TimeoutLayer};

use crate::config::StackConfig;
use crate::error::BoxError;
use crate::http::AttemptDeadline;
use crate::stack::StackHandle;

/// The metadata key of the retry hint on a status made of an open breaker's rejection: the
/// milliseconds until the breaker lets a probe through (gRPC's own pushback key, which
/// staunch's retry policy reads too).
pub const RETRY_PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// A tonic channel wrapped by [`channel`]: circuit breaker, per-attempt timeout, bulkhead,
/// with [`GrpcErrors`] outermost so that a generated client's `Status` has the right code.
pub type Channel<S> = GrpcErrors<
    CircuitBreakerService<Timeout<BulkheadService<AttemptDeadline<S>, AnyError>>, GrpcStatus>,
>;

/// Wraps a tonic channel (any `Service<http::Request<tonic::body::Body>>`) for a generated
/// client: circuit breaker ([`GrpcStatus`]: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, ... count as
/// failures), per-attempt timeout, bulkhead, in that order. Returns the wrapped channel and
/// the handle to the stack's engines.
///
/// A generated client turns the channel's errors into the `tonic::Status` it returns; the
/// channel makes staunch's own errors statuses with the codes a gRPC client expects (see
/// [`status_of`]): an open breaker is `UNAVAILABLE` with the time until its next probe in
/// [`grpc-retry-pushback-ms`](RETRY_PUSHBACK_KEY), a full bulkhead `RESOURCE_EXHAUSTED`, an
/// elapsed attempt timeout `DEADLINE_EXCEEDED`. The staunch error stays the status's source,
/// so [`rejection_of`](crate::rejection_of)`(&status)` finds a rejection.
///
/// **Retries are not in the channel.** A channel carries a streamed body that cannot be
/// replayed, and every gRPC call is a `POST`: retry around the generated client instead,
/// where the request message can be cloned, with the handle's policy
/// (`handle.retry().retry(|| ...)`, which returns a `tonic::Status` too). It never retries a
/// rejection of the channel's breaker or bulkhead, and it honours `grpc-retry-pushback-ms`.
/// The stack's `timeout` is that policy's overall deadline.
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
) -> Result<(Channel<S>, GrpcHandle), ConfigError>
where
    S: Service<http::Request<B>>,
{
    let handle = config.build(name)?;
    let inner = AttemptDeadline::new(inner, &handle);
    let bulkhead = BulkheadLayer::new(handle.bulkhead().clone()).layer(inner);
    let attempt = TimeoutLayer::from_limit(handle.attempt_timeout().clone()).layer(bulkhead);
    let breaker = CircuitBreakerLayer::new(handle.breaker().clone())
        .with_classifier(GrpcStatus::new())
        .layer(attempt);
    Ok((GrpcErrors::new(breaker), GrpcHandle { stack: handle }))
}

/// The engines of a stack built by [`channel`]: a [`StackHandle`] (it dereferences to one,
/// for `status()`, `breaker()`, ...) whose [`retry`](Self::retry) returns `tonic::Status`.
#[derive(Debug, Clone)]
pub struct GrpcHandle {
    stack: StackHandle,
}

impl GrpcHandle {
    /// The stack's retry policy, for retries around a generated client's call: errors come
    /// back as `tonic::Status` ([`status_of`]), the last attempt's status when it gave up.
    pub fn retry(&self) -> GrpcRetry<'_> {
        GrpcRetry {
            policy: self.stack.retry(),
        }
    }

    /// The stack's engines.
    pub fn stack(&self) -> &StackHandle {
        &self.stack
    }

    /// Unwraps the stack's engines.
    pub fn into_stack(self) -> StackHandle {
        self.stack
    }
}

impl Deref for GrpcHandle {
    type Target = StackHandle;

    fn deref(&self) -> &StackHandle {
        &self.stack
    }
}

/// A retry policy whose calls fail with `tonic::Status`: [`GrpcHandle::retry`].
#[derive(Debug, Clone, Copy)]
pub struct GrpcRetry<'a> {
    policy: &'a RetryPolicy,
}

impl GrpcRetry<'_> {
    /// Runs `f` until it succeeds or the policy gives up, as [`RetryPolicy::retry`] does; the
    /// error is a `tonic::Status`: the last attempt's status (its source the retry layer's
    /// [`RetryExhausted`](staunch_retry::RetryExhausted), saying how many attempts were made
    /// and why it stopped), or a staunch rejection made a status by [`status_of`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use staunch::StackConfig;
    /// use tonic::{Code, Status};
    ///
    /// let channel = tower::service_fn(|_: http::Request<tonic::body::Body>| async {
    ///     Ok::<http::Response<tonic::body::Body>, std::io::Error>(http::Response::default())
    /// });
    /// let (_channel, handle) = staunch::grpc::channel("shipping", channel, &StackConfig::default()).unwrap();
    /// let calls = AtomicU32::new(0);
    /// let result: Result<u32, Status> = handle
    ///     .retry()
    ///     .retry(|| async {
    ///         calls.fetch_add(1, Ordering::Relaxed);
    ///         Err::<u32, _>(Status::unavailable("shipping is restarting"))
    ///     })
    ///     .await;
    /// let status = result.unwrap_err();
    /// assert_eq!(status.code(), Code::Unavailable);
    /// assert_eq!(calls.load(Ordering::Relaxed), 3);
    /// # }
    /// ```
    pub fn retry<F, Fut, T, E>(&self, f: F) -> GrpcRetryCall<F, Fut, RetryOn>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
        T: RetryResponse,
    {
        GrpcRetryCall {
            call: self.policy.retry(f),
        }
    }

    /// Like [`retry`](Self::retry), with `classify` deciding what is retried.
    pub fn retry_with<C, F, Fut, T, E>(&self, classify: C, f: F) -> GrpcRetryCall<F, Fut, C>
    where
        C: RetryClassify<T>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        GrpcRetryCall {
            call: self.policy.retry_with(classify, f),
        }
    }

    /// The policy itself (its errors are boxed).
    pub fn policy(&self) -> &RetryPolicy {
        self.policy
    }
}

pin_project! {
    /// The future of [`GrpcRetry::retry`]: a [`RetryCall`] whose error is a `tonic::Status`.
    ///
    /// # Cancel safety
    ///
    /// Dropping it drops the running attempt or the pending wait.
    #[derive(Debug)]
    pub struct GrpcRetryCall<F, Fut, C> {
        #[pin]
        call: RetryCall<F, Fut, C>,
    }
}

impl<F, Fut, C, T, E> Future for GrpcRetryCall<F, Fut, C>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: RetryClassify<T>,
{
    type Output = Result<T, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().call.poll(cx).map_err(status_of)
    }
}

/// Makes a `tonic::Status` of a staunch stack's error, with the code a gRPC client expects.
///
/// The error's source chain is searched for the first of:
/// - a `tonic::Status` (the server's, or one a layer made) is that status, with its code,
///   message, details and metadata;
/// - a [`BreakerOpen`] is `UNAVAILABLE`, with the milliseconds until the breaker's next probe in
///   [`grpc-retry-pushback-ms`](RETRY_PUSHBACK_KEY) when the breaker knows them;
/// - a [`BulkheadFull`] is `RESOURCE_EXHAUSTED` (the caller is saturated: back off);
/// - a [`DeadlineExpired`] (the call was not sent: its deadline had already passed) is
///   `DEADLINE_EXCEEDED`;
/// - an [`Elapsed`] is `DEADLINE_EXCEEDED`.
///
/// The error itself becomes the status's source (so [`rejection_of`](crate::rejection_of)
/// and `Elapsed::find` still find what happened, and a retry layer never retries a
/// rejection). Any other error is given to `tonic::Status::from_error` (a refused connection
/// is `UNAVAILABLE`, the rest `UNKNOWN`).
pub fn status_of(err: BoxError) -> Status {
    let err = match err.downcast::<Status>() {
        Ok(status) => return *status,
        Err(err) => err,
    };
    match code_of(&*err) {
        Some(mut status) => {
            status.set_source(Arc::from(err));
            status
        }
        None => Status::from_error(err),
    }
}

fn code_of(err: &(dyn StdError + 'static)) -> Option<Status> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(status) = e.downcast_ref::<Status>() {
            return Some(Status::with_details_and_metadata(
                status.code(),
                status.message(),
                bytes::Bytes::copy_from_slice(status.details()),
                status.metadata().clone(),
            ));
        }
        if let Some(open) = e.downcast_ref::<BreakerOpen>() {
            let mut metadata = MetadataMap::new();
            if let Some(after) = open.retry_after() {
                metadata.insert(RETRY_PUSHBACK_KEY, pushback(after));
            }
            return Some(Status::with_metadata(
                Code::Unavailable,
                open.to_string(),
                metadata,
            ));
        }
        if let Some(full) = e.downcast_ref::<BulkheadFull>() {
            return Some(Status::resource_exhausted(full.to_string()));
        }
        if let Some(expired) = e.downcast_ref::<DeadlineExpired>() {
            return Some(Status::deadline_exceeded(expired.to_string()));
        }
        if let Some(elapsed) = e.downcast_ref::<Elapsed>() {
            return Some(Status::deadline_exceeded(elapsed.to_string()));
        }
        current = e.source();
    }
    None
}

fn pushback(after: Duration) -> MetadataValue<tonic::metadata::Ascii> {
    let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    MetadataValue::from(millis)
}

/// Makes the errors of the service it wraps `tonic::Status`es with the right codes
/// ([`status_of`]); the outermost layer of [`channel`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcErrorsLayer {
    _private: (),
}

impl GrpcErrorsLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl<S> Layer<S> for GrpcErrorsLayer {
    type Service = GrpcErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcErrors::new(inner)
    }
}

/// The service built by [`GrpcErrorsLayer`]: errors are boxed `tonic::Status`es (what a
/// generated client returns as they are).
#[derive(Debug, Clone)]
pub struct GrpcErrors<S> {
    inner: S,
}

impl<S> GrpcErrors<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for GrpcErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GrpcErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Box::new(status_of(e.into())) as BoxError)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        GrpcErrorsFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`GrpcErrors`].
    #[derive(Debug)]
    pub struct GrpcErrorsFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for GrpcErrorsFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map_err(|e| Box::new(status_of(e.into())) as BoxError)
    }
}
