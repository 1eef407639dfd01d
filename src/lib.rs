//! staunch keeps tokio services standing when the services they call fail.
//!
//! This crate is the one dependency most users need: it re-exports the staunch family, each
//! part behind a cargo feature of the same name, so a service compiles only what it uses.
//!
//! | module | crate | what it gives |
//! |---|---|---|
//! | [`core`] | `staunch-core` | outcomes and classifiers (errors, HTTP, gRPC), backoff with jitter, configuration errors |
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
//! - `full`: everything.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub use staunch_core as core;

#[cfg(feature = "tonic")]
pub use staunch_core::GrpcStatus;
pub use staunch_core::{
    AnyError, Backoff, BackoffSchedule, Classify, ConfigError, HttpStatus, Jitter, Outcome,
    classify_fn,
};
