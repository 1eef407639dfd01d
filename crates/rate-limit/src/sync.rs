//! The atomics of the rate cells: loom's under `cfg(loom)`, so that the loom model
//! (`loom_model.rs`) explores every interleaving of the real code, and std's otherwise.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
