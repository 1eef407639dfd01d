//! staunch keeps tokio services standing when the services they call fail.
//!
//! This crate is the one dependency most users need: it re-exports the staunch family, each
//! part behind a cargo feature of the same name, so a service compiles only what it uses.
//!
//! | module | crate | what it gives |
//! |---|---|---|
//! | [`core`] | `staunch-core` | outcomes and classifiers (errors, HTTP, gRPC), backoff with jitter, rejections, configuration errors |
//! | `circuit_breaker` | `staunch-circuit-breaker` | feature `circuit-breaker`: fail fast while a dependency is down |
//! | `bulkhead` | `staunch-bulkhead` | feature `bulkhead`: cap concurrent calls so one slow dependency cannot take every task |
//! | `timeout` | `staunch-timeout` | feature `timeout`: per-call limits and propagated deadlines |
//! | `retry` | `staunch-retry` | feature `retry`: backoff, retry budgets, server hints, hedging |
//! | `saga` | `staunch-saga` | feature `saga`: multi-service transactions with compensations and a durable log |
//!
//! The shared vocabulary is also available at the root: [`Outcome`], [`Classify`],
//! [`Backoff`], [`Jitter`], [`ConfigError`].
//!
//! ```
//! use std::time::Duration;
//! use staunch::{Backoff, Jitter};
//!
//! let backoff = Backoff::exponential(Duration::from_millis(100))
//!     .max_delay(Duration::from_secs(5))
//!     .jitter(Jitter::Full)
//!     .build()?;
//! assert!(backoff.schedule().take(10).all(|d| d <= Duration::from_secs(5)));
//! # Ok::<(), staunch::ConfigError>(())
//! ```
//!
//! # Features
//!
//! - `reqwest`: classify `reqwest::Response` by status.
//! - `tonic`: classify gRPC calls by status code.
//! - `circuit-breaker`, `bulkhead`, `timeout`, `retry`, `saga`: the member crates.
//! - `full`: everything.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(feature = "circuit-breaker")]
mod breaker;
mod classify;
mod config;
#[cfg(feature = "serde")]
mod duration;
mod error;
mod ext;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry",
    feature = "tonic"
))]
pub mod grpc;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
pub mod http;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
mod registry;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
mod stack;

pub use staunch_core as core;

#[cfg(feature = "bulkhead")]
pub use staunch_bulkhead as bulkhead;
#[cfg(feature = "circuit-breaker")]
pub use staunch_circuit_breaker as circuit_breaker;
#[cfg(feature = "retry")]
pub use staunch_retry as retry;
#[cfg(feature = "saga")]
pub use staunch_saga as saga;
#[cfg(feature = "timeout")]
pub use staunch_timeout as timeout;

#[cfg(feature = "tonic")]
pub use staunch_core::GrpcStatus;
pub use staunch_core::{
    AnyError, Backoff, BackoffSchedule, BreakerOpen, BulkheadFull, Classify, ConfigError,
    HttpStatus, Jitter, Outcome, classify_fn, rejection_of,
};

#[cfg(feature = "circuit-breaker")]
pub use crate::breaker::{BreakerFuture, BreakerLayer, BreakerService};
pub use crate::classify::IgnoreRejections;
pub use crate::config::{
    BackoffConfig, BackoffStrategy, BreakerConfig, BudgetConfig, BulkheadConfig,
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT, JitterConfig, RegistryConfig, RetryConfig,
    StackConfig, WindowConfig,
};
pub use crate::error::{BoxError, Error, ErrorLayer, TypedErrors, TypedFuture};
pub use crate::ext::ServiceBuilderExt;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
pub use crate::registry::{Registry, Reloading};
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
pub use crate::stack::{Stack, StackHandle, StackStatus};
