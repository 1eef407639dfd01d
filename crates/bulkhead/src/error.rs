//! Errors: the rejection a full bulkhead returns, shared with the rest of staunch.
//!
//! [`BulkheadFull`] and [`BulkheadFullReason`] live in `staunch-core` so that other layers
//! (retry above all, which must never retry a rejection) recognise them with
//! `staunch_core::rejection_of` without depending on this crate.

pub use staunch_core::{BulkheadFull, BulkheadFullReason};

/// The boxed error type of the bulkhead services (the same as `tower::BoxError`).
pub use staunch_core::BoxError;
