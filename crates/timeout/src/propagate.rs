//! Deadlines across service boundaries: set from an incoming request, written onto an outgoing
//! one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderName;
use pin_project_lite::pin_project;
use staunch_core::{DeadlineExpired, instant_after};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{DeadlineLayerBuilder, GRPC_TIMEOUT, Headers, PropagateDeadlineLayerBuilder};
use crate::deadline::Deadline;
use crate::service::{BoxError, release_readiness};
use crate::wire::{self, HeaderFormat};

/// Sets the [`Deadline`] of incoming requests: the earliest of the deadline the request
/// already carries, the caller's remaining time (the configured header and `grpc-timeout`),
/// and the configured budget. Put it on the server side, outermost, so handlers find the
/// deadline in the request's extensions (axum: `Extension<Deadline>`).
///
/// A malformed header value is ignored (with a `trace` event): the request keeps whatever
/// other bound applies. The layer never rejects a request; pair it with a
/// [`TimeoutLayer`](crate::TimeoutLayer) to enforce the deadline.
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::{Deadline, DeadlineLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut svc = ServiceBuilder::new()
///     .layer(DeadlineLayer::builder().budget(Duration::from_secs(5)).build()?)
///     .service(service_fn(|req: http::Request<()>| async move {
///         Ok::<_, std::io::Error>(Deadline::of(&req).map(|d| d.remaining()))
///     }));
/// let request = http::Request::builder()
///     .header("x-request-timeout", "1500m")
///     .body(())?;
/// let remaining = svc.ready().await?.call(request).await?;
/// assert_eq!(remaining, Some(Duration::from_millis(1500)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    budget: Option<Duration>,
    headers: Headers,
}

impl DeadlineLayer {
    /// Reads [`DEFAULT_HEADER`](crate::DEFAULT_HEADER) and `grpc-timeout`, with no budget of
    /// its own.
    pub fn new() -> Self {
        Self::from_parts(
            None,
            Headers {
                header: Some(HeaderName::from_static(crate::DEFAULT_HEADER)),
                format: HeaderFormat::GrpcTimeout,
                grpc: true,
            },
        )
    }

    /// A builder for a budget, another header name or format.
    pub fn builder() -> DeadlineLayerBuilder {
        DeadlineLayerBuilder::default()
    }

    pub(crate) fn from_parts(budget: Option<Duration>, headers: Headers) -> Self {
        Self { budget, headers }
    }
}

impl Default for DeadlineLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = SetDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct SetDeadline<S> {
    inner: S,
    layer: DeadlineLayer,
}

impl<S> SetDeadline<S> {
    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<http::Request<B>> for SetDeadline<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(deadline) = self.layer.deadline_for(&request) {
            request.extensions_mut().insert(deadline);
        }
        self.inner.call(request)
    }
}

impl DeadlineLayer {
    /// The earliest bound in effect for `request`.
    fn deadline_for<B>(&self, request: &http::Request<B>) -> Option<Deadline> {
        // The clock is read once, and only when some bound is found.
        let mut now = None;
        let mut deadline = Deadline::of(request);
        let mut tighten = |budget: Duration| {
            let now = *now.get_or_insert_with(Instant::now);
            let candidate = Deadline::at(instant_after(now, budget));
            deadline = Some(candidate.earliest(deadline));
        };
        if let Some(budget) = self.budget {
            tighten(budget);
        }
        let headers = request.headers();
        if self.headers.grpc
            && let Some(value) = headers.get(GRPC_TIMEOUT)
        {
            if let Some(remaining) = wire::parse_grpc_timeout(value.as_bytes()) {
                tighten(remaining);
            } else {
                tracing::trace!(?value, "malformed grpc-timeout ignored");
            }
        }
        if let Some(name) = &self.headers.header
            && let Some(value) = headers.get(name)
        {
            if let Some(remaining) = self.headers.format.parse(value.as_bytes()) {
                tighten(remaining);
            } else {
                tracing::trace!(header = %name, ?value, "malformed deadline header ignored");
            }
        }
        deadline
    }
}

/// Writes the time left until an outgoing request's [`Deadline`] into its headers (the
/// configured HTTP header and/or `grpc-timeout`), so the service called stops working when the
/// caller stops waiting. Put it on the client side, around the HTTP or gRPC client.
///
/// The value is rounded down, never giving the callee more time than remains; a shorter value
/// the request already carries (say, a timeout a gRPC client set) is kept. A request without
/// a deadline is sent unchanged.
///
/// A request whose deadline has already passed (or leaves no more than the margin) is not
/// sent: the call fails at once with a [`DeadlineExpired`] rejection, which circuit breakers
/// do not count and retry layers do not retry, and whatever the inner service reserved in
/// `poll_ready` is given back first (the handle made ready is replaced by a clone of it,
/// hence `S: Clone`).
///
/// The callee computes its own deadline when the request arrives, so it ends up later than the
/// caller's by the time the request spent in transit. A
/// [margin](PropagateDeadlineLayerBuilder::margin) keeps time back for that trip and for
/// handling the answer.
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::{Deadline, PropagateDeadlineLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let mut client = ServiceBuilder::new()
///     .layer(PropagateDeadlineLayer::builder().grpc(true).build()?)
///     .service(service_fn(|req: http::Request<()>| async move {
///         Ok::<_, std::io::Error>(req.headers().clone())
///     }));
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Deadline::after(Duration::from_millis(250)));
/// let sent = client.ready().await?.call(request).await?;
/// assert_eq!(sent["x-request-timeout"], "250000u");
/// assert_eq!(sent["grpc-timeout"], "250000u");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PropagateDeadlineLayer {
    headers: Headers,
    margin: Duration,
}

impl PropagateDeadlineLayer {
    /// Writes [`DEFAULT_HEADER`](crate::DEFAULT_HEADER) in the
    /// [`GrpcTimeout`](HeaderFormat::GrpcTimeout) syntax, for HTTP clients.
    pub fn http() -> Self {
        Self::from_parts(
            Headers {
                header: Some(HeaderName::from_static(crate::DEFAULT_HEADER)),
                format: HeaderFormat::GrpcTimeout,
                grpc: false,
            },
            Duration::ZERO,
        )
    }

    /// Writes `grpc-timeout` only, for gRPC clients (e.g. around a `tonic` channel).
    pub fn grpc() -> Self {
        Self::from_parts(
            Headers {
                header: None,
                format: HeaderFormat::GrpcTimeout,
                grpc: true,
            },
            Duration::ZERO,
        )
    }

    /// A builder for another header name or format, or both headers.
    pub fn builder() -> PropagateDeadlineLayerBuilder {
        PropagateDeadlineLayerBuilder::default()
    }

    pub(crate) fn from_parts(headers: Headers, margin: Duration) -> Self {
        Self { headers, margin }
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline {
            inner,
            headers: self.headers.clone(),
            margin: self.margin,
        }
    }
}

/// The service built by [`PropagateDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct PropagateDeadline<S> {
    inner: S,
    headers: Headers,
    margin: Duration,
}

impl<S> PropagateDeadline<S> {
    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<http::Request<B>> for PropagateDeadline<S>
where
    S: Service<http::Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = PropagateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(deadline) = Deadline::of(&request) {
            // Keep the margin back for the answer's trip home.
            let remaining = deadline.remaining().saturating_sub(self.margin);
            if remaining.is_zero() {
                tracing::trace!(
                    ?deadline,
                    "deadline passed before the request was sent; refused"
                );
                release_readiness(&mut self.inner);
                return PropagateFuture {
                    state: PropagateState::Expired {
                        expired: DeadlineExpired::new(None),
                    },
                };
            }
            let headers = request.headers_mut();
            if self.headers.grpc {
                write_if_earlier(headers, GRPC_TIMEOUT, HeaderFormat::GrpcTimeout, remaining);
            }
            if let Some(name) = &self.headers.header {
                write_if_earlier(headers, name.clone(), self.headers.format, remaining);
            }
        }
        PropagateFuture {
            state: PropagateState::Sent {
                call: self.inner.call(request),
            },
        }
    }
}

/// Writes `remaining` into header `name` unless the request already carries a shorter valid
/// value there (e.g. a timeout a gRPC client set itself): deadlines only ever get earlier.
fn write_if_earlier(
    headers: &mut http::HeaderMap,
    name: impl http::header::IntoHeaderName + http::header::AsHeaderName + Clone,
    format: HeaderFormat,
    remaining: Duration,
) {
    let shorter_already = headers
        .get(name.clone())
        .and_then(|value| format.parse(value.as_bytes()))
        .is_some_and(|existing| existing <= remaining);
    if !shorter_already {
        headers.insert(name, format.format(remaining));
    }
}

pin_project! {
    /// The response future of [`PropagateDeadline`]: the inner response, the inner error boxed,
    /// or a boxed [`DeadlineExpired`] when the deadline had passed before sending.
    #[must_use = "futures do nothing unless polled"]
    pub struct PropagateFuture<F> {
        #[pin]
        state: PropagateState<F>,
    }
}

pin_project! {
    #[project = PropagateStateProj]
    enum PropagateState<F> {
        Sent { #[pin] call: F },
        Expired { expired: DeadlineExpired },
    }
}

impl<F> std::fmt::Debug for PropagateFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            PropagateState::Sent { .. } => "Sent",
            PropagateState::Expired { .. } => "Expired",
        };
        f.debug_tuple("PropagateFuture").field(&state).finish()
    }
}

impl<F, T, E> Future for PropagateFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            PropagateStateProj::Sent { call } => call.poll(cx).map_err(Into::into),
            PropagateStateProj::Expired { expired } => Poll::Ready(Err(Box::new(expired.clone()))),
        }
    }
}
