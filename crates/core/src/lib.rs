//! The pieces every staunch crate shares: what a call's result *means* ([`Outcome`],
//! [`Classify`]), how long to wait before trying again ([`Backoff`]), and how a bad setting
//! is reported ([`ConfigError`]).
//!
//! Most users meet these through the `staunch` facade and the layer crates; depend on
//! `staunch-core` directly when writing a classifier or using a backoff schedule on its own.
//!
//! # Outcomes and classifiers
//!
//! A circuit breaker, an adaptive bulkhead and a retry policy all need to know whether a call
//! failed *in a way that says the dependency is unhealthy*. That is not the same as `Err`: an
//! HTTP client returns `Ok(response)` for a 503, and a 404 is a perfectly healthy answer. A
//! [`Classify`] implementation makes that decision once:
//!
//! - [`AnyError`]: every `Err` is a failure;
//! - [`HttpStatus`]: 5xx and 429 responses are failures (configurable), for
//!   `http::Response<B>` and, with the `reqwest` feature, `reqwest::Response`;
//! - `GrpcStatus` (feature `tonic`): `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`,
//!   `INTERNAL`, `UNKNOWN` are failures (configurable), from a `tonic::Status` or from the
//!   `grpc-status` header seen by a layer around a `Channel`;
//! - [`classify_fn`]: any closure.
//!
//! A call whose future is dropped before it finishes is [`Outcome::Ignored`] unless the
//! classifier is configured otherwise: the caller gave up, which says nothing about the
//! dependency.
//!
//! ```
//! use staunch_core::{Classify, HttpStatus, Outcome};
//!
//! let classify = HttpStatus::new();
//! let response = http::Response::builder().status(503).body(()).unwrap();
//! assert_eq!(classify.classify(&Ok::<_, std::io::Error>(response)), Outcome::Failure);
//! ```
//!
//! # Backoff
//!
//! [`Backoff`] describes the waits between attempts: constant, linear, exponential, Fibonacci
//! or AWS-style decorrelated growth; [`Jitter`] none, full, equal or proportional; a hard cap
//! (`max_delay`, applied after jitter) and an optional total time (`max_elapsed`). A
//! [`BackoffSchedule`] draws one sequence of delays without allocating.
//!
//! ```
//! use std::time::Duration;
//! use staunch_core::{Backoff, Jitter};
//!
//! let backoff = Backoff::exponential(Duration::from_millis(50))
//!     .max_delay(Duration::from_secs(2))
//!     .jitter(Jitter::Equal)
//!     .build()?;
//! let mut schedule = backoff.schedule();
//! let first = schedule.next_delay().unwrap();
//! assert!(first >= Duration::from_millis(25) && first <= Duration::from_millis(50));
//! # Ok::<(), staunch_core::ConfigError>(())
//! ```
//!
//! # Rejections
//!
//! [`BreakerOpen`] and [`BulkheadFull`] are the cheap errors a circuit breaker and a bulkhead
//! return when they refuse a call, and [`DeadlineExpired`] the one a timeout layer returns for a
//! call it did not send because the caller's deadline had already passed. They live here so that any layer (retry above all, which
//! must never retry them) can recognise them with [`rejection_of`], even inside a boxed error,
//! and so that a breaker can ignore them with [`IgnoreRejections`].
//!
//! # Time
//!
//! [`instant_after`] adds a configured or received duration to an instant without ever
//! panicking (it saturates at [`FAR_FUTURE`]); every staunch crate uses it instead of
//! `Instant + Duration`, so `Duration::MAX` is a valid setting everywhere.
//!
//! # Features
//!
//! - `reqwest`: [`HttpStatus`] classifies `reqwest::Response`.
//! - `tonic`: `GrpcStatus`, the gRPC classifier.
//! - `metrics`: [`telemetry::describe_metrics`], units and descriptions of every metric.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod backoff_config;
mod classify;
mod config;
#[doc(hidden)]
pub mod entries;
#[cfg(feature = "tonic")]
mod grpc;
mod http;
mod rejection;
#[cfg(feature = "serde")]
pub mod settings;
pub mod telemetry;
mod time;

pub use crate::backoff::{Backoff, BackoffBuilder, BackoffSchedule, Jitter, Strategy};
pub use crate::backoff_config::{BackoffConfig, BackoffStrategy, JitterConfig};
pub use crate::classify::{AnyError, Classify, FnClassifier, Outcome, classify_fn};
pub use crate::config::{ConfigError, Maybe};
#[cfg(feature = "tonic")]
pub use crate::grpc::GrpcStatus;
pub use crate::http::HttpStatus;
pub use crate::rejection::{
    BreakerOpen, BulkheadFull, BulkheadFullReason, DeadlineExpired, IgnoreRejections, RateLimited,
    Rejection, rejection_of,
};
pub use crate::time::{FAR_FUTURE, Moment, instant_after};

/// The error every staunch tower layer returns: any error, boxed (the same type as
/// `tower::BoxError`).
///
/// A layer's own refusals are boxed typed values ([`BreakerOpen`], [`BulkheadFull`],
/// [`DeadlineExpired`], ...): find them with `err.downcast_ref::<BreakerOpen>()` or, anywhere
/// in the source chain, with [`rejection_of`]. The wrapped service's own error is boxed as it
/// is, so `err.downcast_ref::<std::io::Error>()` finds a client's I/O error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_unpin<T: Send + Sync + Unpin + 'static>() {}

    #[test]
    fn public_types_are_send_sync_unpin() {
        assert_send_sync_unpin::<Outcome>();
        assert_send_sync_unpin::<AnyError>();
        assert_send_sync_unpin::<HttpStatus>();
        assert_send_sync_unpin::<Backoff>();
        assert_send_sync_unpin::<BackoffSchedule>();
        assert_send_sync_unpin::<ConfigError>();
        assert_send_sync_unpin::<BreakerOpen>();
        assert_send_sync_unpin::<BulkheadFull>();
        #[cfg(feature = "tonic")]
        assert_send_sync_unpin::<GrpcStatus>();
    }
}
