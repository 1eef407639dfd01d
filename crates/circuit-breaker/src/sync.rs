//! The synchronisation primitives of the lanes' time buckets: loom's under `cfg(loom)`, so
//! that the loom models (`lane/loom_model.rs`) explore every interleaving of the real code,
//! and std's otherwise.

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU64;
#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicU64;
