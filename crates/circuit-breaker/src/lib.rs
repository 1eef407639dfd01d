//! The staunch circuit breaker: trips on failure rate and slow-call rate over a sliding window, probes in half-open, rejects fast when open.
//!
//! A circuit breaker stops a service from hammering a dependency that is failing: once too
//! many recent calls failed, it *opens* and rejects calls at once with [`BreakerOpen`] (cheap:
//! no allocation, a name and a `retry_after` hint), which gives the dependency room to
//! recover and the caller a fast answer to fall back on. After a while it lets a few probe
//! calls through to find out whether the dependency is back.
//!
//! # States
//!
//! Named in the electrical sense: a **closed** circuit conducts, an **open** one does not.
//!
//! - [`State::Closed`]: calls flow; each outcome goes into a sliding window. When the window
//!   holds at least `minimum_calls` and the failure rate (or the slow-call rate) reaches its
//!   threshold, or `consecutive_failures` failures came in a row, the breaker trips.
//! - [`State::Open`]: calls are rejected for the open duration: fixed, or drawn from a
//!   [`Backoff`](staunch_core::Backoff) that grows with every re-open and starts over once the
//!   breaker closes.
//! - [`State::HalfOpen`]: exactly `permitted_calls_in_half_open` probes are let through,
//!   reserved atomically; other calls are rejected. When all probes have reported, their
//!   failure (and slow-call) rate decides: below the threshold closes, otherwise it opens
//!   again. Probes that hang longer than `max_half_open_duration` re-open the breaker; a probe
//!   whose future is dropped gives its slot back.
//! - Manual states through the handle: [`State::ForcedOpen`], [`State::Disabled`] (always
//!   pass, record nothing) and [`State::MetricsOnly`] (always pass, still record), until
//!   [`CircuitBreaker::reset`].
//!
//! The rules are checked whenever a failure or a slow call is recorded, and on every call while
//! the window holds fewer than `minimum_calls` (the call that reaches the minimum may find the
//! rate already over the threshold). A success on a full window cannot raise a rate, so it is
//! not checked: that is what keeps the common path cheap. (In a time window, a rate that rises
//! only because older successes expired is acted on at the next failure.)
//!
//! Every transition starts a new *generation*: a call remembers the generation it started in,
//! and its result is discarded if the breaker has moved on (a slow call from before a trip
//! must not count in the fresh window after the breaker closes again).
//!
//! # Using it
//!
//! As a tower layer, in front of any client service. [`CircuitBreakerLayer`] takes a
//! [`Classify`](staunch_core::Classify) that says which results are failures: [`AnyError`]
//! (the default), [`HttpStatus`] for HTTP clients (reqwest, hyper, axum: 5xx and 429 fail,
//! 4xx do not), or `GrpcStatus` (the `tonic` feature of `staunch-core`) for a tonic
//! `Channel`, which it wraps like any other `tower::Service<http::Request<_>>`.
//!
//! What counts: the classifier decides for each result; a call whose future is dropped before
//! it finishes counts as the classifier's `classify_cancelled` (ignored by default); a panic
//! while polling the call counts as a failure, and then unwinds to the caller unchanged; a
//! call that never reached the dependency (a rejection further in, found by
//! [`rejection_of`](staunch_core::rejection_of)) is ignored: the layers wrap their classifier
//! in [`IgnoreRejections`](staunch_core::IgnoreRejections).
//!
//! # Errors
//!
//! The tower services return a [`BoxError`], as every staunch layer
//! and tower's own do, so they compose with a retry or timeout layer without adapters. A
//! refused call is a boxed [`BreakerOpen`] (`err.downcast_ref::<BreakerOpen>()`, or
//! [`rejection_of`](staunch_core::rejection_of) through any wrapping); a call that was made and
//! failed gives the inner service's error converted with `Into<BoxError>`, not wrapped.
//! [`CircuitBreaker::call`], used without tower, returns the typed [`CircuitBreakerError`]
//! instead, to match without downcasting.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), staunch_core::BoxError> {
//! use std::time::Duration;
//! use staunch_circuit_breaker::{BreakerOpen, CircuitBreaker, CircuitBreakerLayer, State};
//! use staunch_core::HttpStatus;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! let breaker = CircuitBreaker::builder("payment")
//!     .failure_rate_threshold(50.0)
//!     .count_window(20)
//!     .minimum_calls(5)
//!     .open_duration(Duration::from_secs(5))
//!     .build()?;
//! // A stand-in for `reqwest::Client` or a hyper client: always answers 503.
//! let mut payment = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()).with_classifier(HttpStatus::new()))
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::io::Error>(http::Response::builder().status(503).body(()).unwrap())
//!     });
//!
//! for _ in 0..5 {
//!     let response = payment.ready().await?.call(http::Request::new(())).await?;
//!     assert_eq!(response.status(), 503);
//! }
//! assert_eq!(breaker.state(), State::Open);
//! // Like every staunch layer, the service returns a `BoxError`: the rejection is a boxed
//! // `BreakerOpen` (an inner error would be the client's own error, boxed as it is).
//! let rejected = payment.ready().await?.call(http::Request::new(())).await.unwrap_err();
//! let open = rejected.downcast_ref::<BreakerOpen>().expect("the breaker refused the call");
//! assert!(open.retry_after().unwrap() <= Duration::from_secs(5));
//! # Ok(()) }
//! ```
//!
//! With a `reqwest::Client`, wrap `client.execute(request)` in a `tower::service_fn` and
//! layer it the same way (the crate's scenario tests do exactly that against a real server):
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use staunch_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
//! use staunch_core::HttpStatus;
//! use tower::ServiceBuilder;
//!
//! let client = reqwest::Client::new();
//! let breaker = CircuitBreaker::builder("inventory").build()?;
//! let inventory = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker).with_classifier(HttpStatus::new()))
//!     .service_fn(move |req: reqwest::Request| client.execute(req));
//! # drop(inventory);
//! # Ok(()) }
//! ```
//!
//! A tonic `Channel` is a `tower::Service<http::Request<_>>` too; with the `tonic` feature of
//! `staunch-core`, `GrpcStatus` reads the `grpc-status` header of its responses (how servers
//! report most errors: a "trailers-only" response), and counts transport errors as failures:
//!
//! ```ignore
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let channel = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker).with_classifier(GrpcStatus::new()))
//!     .service(channel);
//! let mut client = PaymentClient::new(channel);
//! ```
//!
//! Without tower, run a future through the breaker with [`CircuitBreaker::call`] /
//! [`call_with`](CircuitBreaker::call_with), or take a [`Permit`] with
//! [`try_acquire`](CircuitBreaker::try_acquire) and report the outcome yourself.
//!
//! # Defaults, and why
//!
//! See [`CircuitBreakerBuilder`]: 50 % failures over the last 100 calls, at least 20 calls,
//! open for 10 s, 5 probes, at most 30 s half-open, slow calls off. Invalid settings (a
//! threshold outside `(0, 100]`, a window of size 0, zero minimum calls, zero durations) are a
//! [`ConfigError`](staunch_core::ConfigError) from `build()` naming the field.
//!
//! # Cost
//!
//! A successful call in the closed state reads the state word (shared, written only on
//! transitions) and bumps a counter in the calling thread's *lane*: a cache-line-aligned shard
//! of the counters, so concurrent callers on different cores never write the same line. The
//! permit's reference to its lane is recycled per thread, so the success counter is the one
//! atomic read-modify-write of a call (the crate's README has the figures). A success on a
//! window that holds `minimum_calls` cannot trip a breaker, so it never looks at the window.
//! Failures and slow calls
//! take a short mutex on the slow path, sum the lanes and evaluate the window. The clock is
//! read per call only when it matters: with a slow-call threshold (twice) or a time-based
//! window (once). Nothing is allocated per call.
//!
//! # Per-key breakers, events, metrics
//!
//! [`KeyedCircuitBreakerLayer`] keeps one breaker per key (e.g. per host), created lazily and
//! bounded in number. [`CircuitBreaker::subscribe`] receives [`Event`]s (transitions, and
//! rejections once someone subscribed); transitions are logged with `tracing` at debug level
//! and rejections at trace level; [`CircuitBreaker::snapshot`] is a cheap [`Snapshot`]. The
//! `metrics` feature emits counters and gauges through the `metrics` crate, labelled
//! `staunch.dependency` (the names are in [`staunch_core::telemetry`]).
//!
//! [`AnyError`]: staunch_core::AnyError
//! [`HttpStatus`]: staunch_core::HttpStatus
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod config;
mod core;
mod error;
mod events;
mod future;
mod keyed;
mod lane;
mod layer;
#[cfg(feature = "metrics")]
mod metrics;
mod permit;
mod reconfigure;
mod service;
mod settings;
mod state;
mod sync;
mod window;

pub use crate::breaker::{CircuitBreaker, Snapshot, Trip};
pub use crate::config::{
    CircuitBreakerBuilder, CircuitBreakerConfig, HalfOpenTransition, OpenDuration, SlidingWindow,
};
pub use crate::error::{BreakerOpen, CircuitBreakerError};
pub use crate::events::{Event, TransitionReason};
pub use crate::future::{CallFuture, ResponseFuture};
pub use crate::keyed::{BreakerRegistry, KeyedCircuitBreakerLayer, KeyedCircuitBreakerService};
pub use crate::layer::CircuitBreakerLayer;
pub use crate::permit::Permit;
pub use crate::service::CircuitBreakerService;
pub use crate::settings::{BreakerConfig, WindowConfig};
pub use crate::state::State;
/// The error of the tower services (an open breaker is a boxed [`BreakerOpen`]).
pub use staunch_core::BoxError;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_unpin<T: Send + Sync + Unpin + 'static>() {}

    #[test]
    fn public_types_are_send_sync_unpin() {
        assert_send_sync_unpin::<CircuitBreaker>();
        assert_send_sync_unpin::<CircuitBreakerLayer>();
        assert_send_sync_unpin::<CircuitBreakerService<(), staunch_core::AnyError>>();
        assert_send_sync_unpin::<CircuitBreakerConfig>();
        assert_send_sync_unpin::<CircuitBreakerBuilder>();
        assert_send_sync_unpin::<Permit>();
        assert_send_sync_unpin::<Snapshot>();
        assert_send_sync_unpin::<Event>();
        assert_send_sync_unpin::<State>();
        assert_send_sync_unpin::<BreakerOpen>();
        assert_send_sync_unpin::<CircuitBreakerError<std::io::Error>>();
        assert_send_sync_unpin::<
            ResponseFuture<std::future::Ready<Result<(), ()>>, staunch_core::AnyError>,
        >();
        assert_send_sync_unpin::<
            CallFuture<std::future::Ready<Result<(), ()>>, staunch_core::AnyError>,
        >();
        assert_send_sync_unpin::<BreakerRegistry<String>>();
        assert_send_sync_unpin::<KeyedCircuitBreakerLayer<String, fn(&()) -> String>>();
    }
}
