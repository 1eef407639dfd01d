//! Retries that cannot become a storm: backoff with jitter, an overall deadline, per-attempt
//! timeouts, server hints, a retry budget and hedging, as tower layers and as a plain engine.
//!
//! Retries are the most dangerous resilience tool. During an outage a naive retry multiplies
//! the load on the dependency that is already down; stacked services multiply it again. This
//! crate is safe by default:
//!
//! - **A retry budget** ([`RetryBudget`], on by default): retries add at most 20% to the
//!   request rate (plus 10 per second), however many requests fail. When the budget is
//!   exhausted the original error is returned, annotated ([`RetryExhausted`]).
//! - **Only what a retry can fix** ([`RetryOn`]): connection errors and timeouts, HTTP 502,
//!   503, 504 and 429, gRPC `UNAVAILABLE` and `RESOURCE_EXHAUSTED`; for HTTP only idempotent
//!   methods or requests carrying an `Idempotency-Key` ([`RetryRequest`]); and **never** a
//!   [`BreakerOpen`](staunch_core::BreakerOpen) or [`BulkheadFull`](staunch_core::BulkheadFull)
//!   rejection from the layers below, whatever the classifier says: they mean "back off".
//! - **Jittered exponential backoff** from [`staunch_core::Backoff`], so that clients that
//!   failed together do not retry together.
//! - **Server hints honoured, and capped**: `Retry-After` (seconds or HTTP-date) and
//!   `grpc-retry-pushback-ms` set the wait, never beyond `max_retry_after` (30 s by
//!   default); a negative pushback stops retrying.
//! - **Deadlines**: `max_total_time` bounds the whole call, attempts and waits included (a
//!   wait that would end past it is skipped); `attempt_timeout` cancels a slow attempt and
//!   retries it; the caller's [`Deadline`] is never waited past (see [Deadlines](#deadlines)).
//!   Timed-out attempts surface as [`Elapsed`].
//!
//! # The model
//!
//! A [`RetryPolicy`] holds the settings, the budget and the counters; clones share them. The
//! tower layer [`RetryLayer`] wraps a service in [`Retry`], whose [`ResponseFuture`] is a
//! small state machine: *running* an attempt, *waiting* the backoff, *readying* the inner
//! service for the next attempt. Without tower, [`RetryPolicy::retry`] runs the same machine
//! over a closure. [`HedgeLayer`] sends a second copy of a slow request instead of waiting for
//! it to fail.
//!
//! The first attempt costs almost nothing: a relaxed load and store (the budget deposit, on a
//! counter of the calling thread; one deposit in 16 also reads the clock), a copy of the
//! request only when it could be retried, and no clock read, no timer and no shared state
//! unless the attempt is still pending after its first poll (then a timer is armed if a
//! timeout applies), it failed in a retryable way, or the backoff has a `max_elapsed` (which
//! counts from the first attempt's start, so that start is read).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use staunch_core::{Backoff, Jitter};
//! use staunch_retry::{RetryLayer, RetryPolicy};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! let policy = RetryPolicy::builder()
//!     .max_attempts(3)
//!     .backoff(Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Full).build().unwrap())
//!     .max_total_time(Duration::from_secs(2))
//!     .attempt_timeout(Duration::from_millis(500))
//!     .build()
//!     .unwrap();
//!
//! // A dependency that answers 503 once, then 200.
//! let hits = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&hits);
//! let mut svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(policy.clone()))
//!     .service_fn(move |_req: http::Request<String>| {
//!         let status = if counter.fetch_add(1, Ordering::Relaxed) == 0 { 503 } else { 200 };
//!         async move { Ok::<_, std::io::Error>(http::Response::builder().status(status).body(()).unwrap()) }
//!     });
//!
//! let req = http::Request::get("http://127.0.0.1/stock").body(String::new()).unwrap();
//! let res = svc.ready().await.unwrap().call(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(hits.load(Ordering::Relaxed), 2);
//! assert_eq!(policy.metrics().retries, 1);
//! # }
//! ```
//!
//! # Giving up
//!
//! When the retries run out (`max_attempts`, the overall deadline, the backoff's
//! `max_elapsed`) or the budget refuses a due retry, the last attempt's error comes back
//! wrapped in a [`RetryExhausted`]: the attempts made, the [`GiveUpReason`], and the original
//! error as its `source()` (so [`rejection_of`](staunch_core::rejection_of), [`Elapsed::find`]
//! and downcasts along the source chain still work). A retryable response returned after
//! giving up (a final 503) carries the [`GiveUp`] in its extensions instead. Failures that
//! were never going to be retried (not retryable, a rejection, a non-idempotent or
//! unreplayable request, a single attempt allowed) are returned untouched. The annotation
//! costs one allocation, on the give-up path only.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use staunch_retry::{GiveUp, GiveUpReason, RetryBudget, RetryExhausted, RetryPolicy};
//!
//! // A budget that allows no retry at all.
//! let budget = RetryBudget::builder().ratio(0.0).min_per_sec(0).build().unwrap();
//! let policy = RetryPolicy::builder().budget(budget).build().unwrap();
//!
//! let err = policy
//!     .retry(|| async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) })
//!     .await
//!     .unwrap_err();
//! let gave_up = err.downcast_ref::<RetryExhausted>().unwrap();
//! assert_eq!((gave_up.attempts(), gave_up.reason()), (1, GiveUpReason::BudgetExhausted));
//! assert!(gave_up.last().is::<std::io::Error>());
//!
//! let res = policy
//!     .retry(|| async { Ok::<_, std::io::Error>(http::Response::builder().status(503).body(()).unwrap()) })
//!     .await
//!     .unwrap();
//! let gave_up = res.extensions().get::<GiveUp>().unwrap();
//! assert_eq!(gave_up.reason, GiveUpReason::BudgetExhausted);
//! # }
//! ```
//!
//! # Deadlines
//!
//! No retry waits past the caller's deadline: a backoff wait or a server hint
//! (`Retry-After`, `grpc-retry-pushback-ms`) that would end at or past it is not started, and
//! the last attempt's real result comes back at once, annotated with
//! [`GiveUpReason::Deadline`] (the 503 itself with the [`GiveUp`] in its extensions, or the
//! error in a [`RetryExhausted`]), rather than a timeout of an attempt that had no time left.
//! The layer reads the caller's deadline from the request ([`RetryRequest::deadline`]: the
//! [`Deadline`] in an `http::Request`'s extensions); without tower, give it to
//! [`RetryCall::with_deadline`]. The same rule applies to the policy's own
//! [`max_total_time`](RetryPolicyBuilder::max_total_time), counted from the first attempt.
//! Cutting an attempt that is still running at the deadline is the timeout layer's job
//! (`staunch-timeout`'s `Timeout` reads the same `Deadline`), or `max_total_time`'s.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use staunch_retry::{Deadline, GiveUp, GiveUpReason, RetryLayer, RetryPolicy};
//! use tower::{Layer, ServiceExt};
//!
//! // A dependency that answers 503 and asks for a second's pause.
//! let svc = RetryLayer::new(RetryPolicy::default()).layer(tower::service_fn(|_: http::Request<()>| async {
//!     Ok::<_, std::io::Error>(http::Response::builder().status(503).header("retry-after", "1").body(()).unwrap())
//! }));
//! let mut req = http::Request::get("http://127.0.0.1/stock").body(()).unwrap();
//! req.extensions_mut().insert(Deadline::after(Duration::from_millis(100)));
//! let res = svc.oneshot(req).await.unwrap();
//! // 100 ms left: the 503 comes back at once, saying why it was not retried.
//! assert_eq!(res.status(), 503);
//! assert_eq!(res.extensions().get::<GiveUp>().map(|g| g.reason), Some(GiveUpReason::Deadline));
//! # }
//! ```
//!
//! # Observability
//!
//! `tracing` debug events for every retry, give-up and hedge; [`RetryPolicy::metrics`] for a
//! snapshot ([`RetryMetrics`]); hooks [`on_retry`](RetryPolicyBuilder::on_retry) and
//! [`on_give_up`](RetryPolicyBuilder::on_give_up), whose [`GiveUpReason`] says, among
//! others, when the budget refused a retry. With the `metrics` feature, counters
//! `staunch.retry.retries`, `staunch.retry.gave_up` (label `reason`) and
//! `staunch.retry.hedges`, labelled with the policy's `name`.
//!
//! # Features
//!
//! - `reqwest`: `reqwest::Request` is replayable (`try_clone`), `reqwest::Response` is
//!   classified by status and headers, and `reqwest::Error`s that are connect errors or
//!   timeouts are retried; enables `hyper`.
//! - `hyper`: a `hyper::Error` that is an incomplete message (the server closed the
//!   connection without answering) is retried like a reset, for idempotent requests.
//! - `tonic`: `tonic::Status` errors with a retryable code are retried (honouring
//!   `grpc-retry-pushback-ms` in their metadata) and `tonic::Response` is classified, so
//!   [`RetryPolicy::retry`] works around generated gRPC clients.
//! - `metrics`: emit through the `metrics` facade.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
pub mod budget;
mod classify;
mod config;
mod engine;
mod error;
mod future;
mod hedge;
mod hints;
mod latency;
mod layer;
mod metrics;
mod request;
mod service;
mod settings;
mod telemetry;

pub use crate::body::{DEFAULT_REPLAY_CAP, ReplayBody, buffer_request};
pub use crate::budget::{RetryBudget, RetryBudgetBuilder};
pub use crate::classify::{
    RetryClassify, RetryFn, RetryOn, RetryResponse, Verdict, is_transient, retry_fn,
};
pub use crate::config::{RetryPolicy, RetryPolicyBuilder};
pub use crate::error::RetryExhausted;
pub use crate::future::{ResponseFuture, RetryCall};
pub use crate::hedge::{Hedge, HedgeDelay, HedgeFuture, HedgeLayer};
pub use crate::hints::{GRPC_RETRY_PUSHBACK_MS, Pushback, grpc_pushback, retry_after};
pub use crate::layer::RetryLayer;
pub use crate::metrics::{GiveUp, GiveUpReason, RetryMetrics, Retrying};
pub use crate::request::{IDEMPOTENCY_KEY, RetryRequest, TryCloneBody, is_idempotent};
pub use crate::service::Retry;
pub use crate::settings::{BudgetConfig, HedgeConfig, RetryConfig};
pub use staunch_core::{BackoffConfig, BackoffStrategy, JitterConfig};
pub use staunch_timeout::{Deadline, Elapsed};

/// The error type of the retry and hedge services: any error, boxed (as `tower::BoxError`).
pub use staunch_core::BoxError;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_unpin<T: Send + Sync + Unpin + 'static>() {}
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn assert_send<T: Send + 'static>() {}

    #[test]
    fn public_types_are_send_sync() {
        assert_send_sync_unpin::<RetryPolicy>();
        assert_send_sync_unpin::<RetryBudget>();
        assert_send_sync_unpin::<RetryLayer>();
        assert_send_sync_unpin::<RetryOn>();
        assert_send_sync_unpin::<RetryMetrics>();
        assert_send_sync_unpin::<GiveUp>();
        assert_send_sync_unpin::<RetryExhausted>();
        assert_send_sync_unpin::<Retrying>();
        assert_send_sync_unpin::<HedgeLayer>();
        assert_send_sync_unpin::<Retry<tower::util::BoxCloneSyncService<u64, u64, BoxError>>>();
        assert_send_sync::<ReplayBody<String>>();
        // A response future is as `Sync` as the inner service's future; it adds nothing that
        // is not `Send`.
        assert_send::<ResponseFuture<tower::util::BoxCloneService<u64, u64, BoxError>, u64, RetryOn>>(
        );
        assert_send::<HedgeFuture<tower::util::BoxCloneService<u64, u64, BoxError>, u64>>();
    }
}
