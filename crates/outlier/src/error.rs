//! The balancer's own error.

/// The balancer had no endpoint to send the call to (every endpoint was removed, or none was
/// ever added). A cheap value: find it with `err.downcast_ref::<NoEndpoints>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no endpoint to send the call to")]
pub struct NoEndpoints;
