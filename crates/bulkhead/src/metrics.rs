//! A cheap snapshot of a bulkhead's state and counters.

use std::time::Duration;

/// What a bulkhead is doing right now and what it has done; from [`Bulkhead::metrics`].
///
/// Counters are cumulative since the bulkhead was built. Reading a snapshot takes the wait
/// queue's lock briefly (to count waiters) and touches nothing on the request path.
///
/// [`Bulkhead::metrics`]: crate::Bulkhead::metrics
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BulkheadMetrics {
    /// Calls holding a permit.
    pub in_flight: usize,
    /// Calls waiting for a permit.
    pub queued: usize,
    /// The current limit.
    pub max_concurrent: usize,
    /// Calls rejected because no permit was free and waiting is disabled (or someone was
    /// already waiting, for `try_acquire`).
    pub rejected_no_permit: u64,
    /// Calls rejected after waiting `max_wait`.
    pub rejected_wait_timed_out: u64,
    /// Calls rejected because `max_queued` callers were already waiting.
    pub rejected_queue_full: u64,
    /// Calls admitted after waiting in the queue.
    pub waited: u64,
    /// Total time spent waiting, by admitted and timed-out callers (serialized as
    /// milliseconds, `total_wait_ms`, with the `serde` feature).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "total_wait_ms", serialize_with = "millis")
    )]
    pub total_wait: Duration,
}

impl BulkheadMetrics {
    /// All rejections, whatever the reason.
    pub fn rejections(&self) -> u64 {
        self.rejected_no_permit + self.rejected_wait_timed_out + self.rejected_queue_full
    }
}

#[cfg(feature = "serde")]
fn millis<S: serde::Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
