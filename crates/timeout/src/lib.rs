//! Per-call time limits and deadlines that propagate across services, as tower layers.
//!
//! A service that waits forever for a dependency is only as available as that dependency.
//! `staunch-timeout` bounds every wait in two complementary ways:
//!
//! - a **time limit** per call ([`TimeoutLayer`], or [`TimeLimit`] on any future): "this call
//!   may take at most 2 s";
//! - a **deadline** per request ([`Deadline`]): "the user stops waiting at 12:00:03.250".
//!   Deadlines travel: a [`DeadlineLayer`] on the server sets it from the caller's remaining
//!   time (`grpc-timeout`, or an HTTP header, [`DEFAULT_HEADER`] by default) and an optional
//!   budget; the handler copies it onto its downstream requests; a [`PropagateDeadlineLayer`]
//!   on the client writes what is left of it into the outgoing headers; and a [`Timeout`]
//!   never waits past it. Every hop therefore gives up no later than its caller, instead of
//!   doing work nobody is waiting for.
//!
//! A call never waits past the earliest bound in effect: the limit (or the request's
//! [`TimeoutOverride`]) and the deadline. The [`Elapsed`] error says which limit applied, so
//! a log line reads "timed out after 180ms" when only 180 ms of the deadline was left.
//!
//! A call whose deadline has already passed is not sent at all: [`Timeout`] and
//! [`PropagateDeadline`] refuse it with a [`DeadlineExpired`](staunch_core::DeadlineExpired)
//! rejection, which circuit breakers do not count and retry layers never retry (it never
//! reached the dependency), after giving back whatever the inner service reserved for it (a
//! bulkhead's permit); [`Elapsed`] is kept for calls that were sent and cut off.
//!
//! # The fast path costs almost nothing
//!
//! Many calls finish on their first poll (a cache hit, an in-process service, a ready
//! channel). tower's `Timeout` registers a timer for every call; here the inner future is
//! polled first, and a timer is armed (and the clock read) only when it returns `Pending`. A
//! call that completes at once costs a few nanoseconds and allocates nothing; a call that has
//! to wait pays for one entry in its limit's timer. The relative limit therefore counts from
//! the first `Pending`, not from `call`; a deadline is absolute.
//!
//! # The timer
//!
//! A call that pends registers no tokio timer of its own: each [`TimeLimit`] (one per
//! [`TimeoutLayer`], shared by its clones) keeps a table of its waiting calls and their ends
//! behind a plain `Mutex`, and one driver task per runtime sleeps on a single tokio timer
//! until the earliest end. Arming is a clock read, a short lock and a push onto a heap;
//! finishing or dropping a call frees its entry. A timeout never fires early and at most
//! [`precision`](TimeLimitBuilder::precision) late (1 ms by default; zero for exact wakes):
//! the driver wakes at most once per `precision`, so timeouts that fall due together share a
//! wake, and timeouts further apart fire at their exact end (exact under tokio's paused
//! clock). The driver holds only a weak reference: it exits once nothing waits (at its next
//! wake) and at once when the limit and its calls are dropped. See
//! [the timer](TimeLimit#the-timer) for runtimes that come and go.
//!
//! # Example: a client call that honours the caller's deadline
//!
//! ```
//! use std::time::Duration;
//! use staunch_timeout::{Deadline, Elapsed, PropagateDeadlineLayer, TimeoutLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // A downstream client: a slow one, to show the deadline winning over the 2 s limit.
//! let mut client = ServiceBuilder::new()
//!     .layer(PropagateDeadlineLayer::http())
//!     .layer(TimeoutLayer::new(Duration::from_secs(2))?)
//!     .service(service_fn(|req: http::Request<()>| async move {
//!         assert_eq!(req.headers()["x-request-timeout"], "300000u");
//!         tokio::time::sleep(Duration::from_secs(10)).await;
//!         Ok::<_, std::io::Error>(http::Response::new(()))
//!     }));
//!
//! // In a handler, the incoming request's deadline goes onto the outgoing request.
//! let mut request = http::Request::new(());
//! request.extensions_mut().insert(Deadline::after(Duration::from_millis(300)));
//!
//! let err = client.ready().await?.call(request).await.unwrap_err();
//! let elapsed = err.downcast_ref::<Elapsed>().expect("a timeout");
//! assert_eq!(elapsed.limit(), Duration::from_millis(300));
//! # Ok(())
//! # }
//! ```
//!
//! # Server side: enforce the caller's deadline
//!
//! Put the [`DeadlineLayer`] outermost so the handler (and a [`TimeoutLayer`] around it) sees
//! the [`Deadline`]; with axum, turn [`Elapsed`] into a `504` with `HandleErrorLayer`:
//!
//! ```
//! use std::time::Duration;
//! use axum::{BoxError, Router, error_handling::HandleErrorLayer, http::StatusCode, routing::get};
//! use staunch_timeout::{DeadlineLayer, Elapsed, TimeoutLayer};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), staunch_core::ConfigError> {
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(DeadlineLayer::builder().budget(Duration::from_secs(10)).build()?)
//!             .layer(HandleErrorLayer::new(|err: BoxError| async move {
//!                 if err.is::<Elapsed>() {
//!                     StatusCode::GATEWAY_TIMEOUT
//!                 } else {
//!                     StatusCode::INTERNAL_SERVER_ERROR
//!                 }
//!             }))
//!             .layer(TimeoutLayer::new(Duration::from_secs(30))?),
//!     );
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! # Without tower
//!
//! ```
//! use std::time::Duration;
//! use staunch_timeout::{Deadline, Elapsed, TimeLimit};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), staunch_core::ConfigError> {
//! let limit = TimeLimit::new(Duration::from_secs(1))?;
//! let deadline = Deadline::after(Duration::from_millis(100));
//! let result = limit.run_until(deadline, std::future::pending::<()>()).await;
//! assert_eq!(result, Err(Elapsed::new(Duration::from_millis(100))));
//! # Ok(())
//! # }
//! ```
//!
//! # Request types
//!
//! [`TimeoutLayer`] reads a request's [`TimeoutOverride`] and [`Deadline`] from the extensions
//! of an `http::Request` (so hyper, axum, tonic channels, and reqwest through
//! `reqwest::Request::try_from`). For other request types use
//! [`TimeoutLayer::ignore_request`] or implement [`ReadLimits`].
//!
//! # Wire formats
//!
//! `grpc-timeout` follows the gRPC spec: at most eight digits and a unit (`H M S m u n`).
//! The HTTP header ([`DEFAULT_HEADER`], configurable) uses the same syntax by default, or
//! whole milliseconds ([`HeaderFormat::Millis`]). Written values are rounded down so the
//! callee never believes it has more time than the caller; malformed values are ignored with a
//! `trace` event. See [`wire`].
//!
//! # Observability
//!
//! A `debug` event when a call times out; `trace` events when a request is refused because
//! its deadline had passed and when a malformed header is ignored. A named [`TimeLimit`] keeps
//! counters ([`TimeLimit::metrics`]: timers armed, calls cut off, calls refused because their
//! deadline had passed) and, with the `metrics` feature, increments
//! `staunch.timeout.elapsed{name}` and `staunch.timeout.refused{name}`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod deadline;
mod error;
mod future;
mod layer;
mod limit;
mod propagate;
mod request;
mod service;
mod settings;
mod wheel;
pub mod wire;

pub use crate::config::{
    DEFAULT_HEADER, DeadlineLayerBuilder, GRPC_TIMEOUT, PropagateDeadlineLayerBuilder,
    TimeLimitBuilder,
};
pub use crate::deadline::{Deadline, TimeoutOverride};
pub use crate::error::Elapsed;
pub use crate::future::ResponseFuture;
pub use crate::layer::TimeoutLayer;
pub use crate::limit::{Limited, TimeLimit, TimeoutMetrics};
pub use crate::propagate::{
    DeadlineLayer, PropagateDeadline, PropagateDeadlineLayer, PropagateFuture, SetDeadline,
};
pub use crate::request::{FromExtensions, IgnoreRequest, ReadLimits, RequestLimits};
pub use crate::service::{BoxError, Timeout};
pub use crate::settings::{DeadlineConfig, IncomingDeadlineConfig, OutgoingDeadlineConfig};
pub use crate::wire::HeaderFormat;
