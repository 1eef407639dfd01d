//! The staunch bulkhead: caps concurrent calls to a dependency, with bounded FIFO waiting,
//! per-key partitions and adaptive limits.
//!
//! A slow dependency is more dangerous than a dead one: every call to it holds a task, a
//! connection and memory for as long as it hangs, until the caller has nothing left for its
//! healthy dependencies. A bulkhead gives each dependency its own compartment: at most
//! `max_concurrent` calls to it run at once, so when the payment service hangs, only the
//! payment compartment fills up and the inventory calls keep flowing.
//!
//! # The model
//!
//! - A call needs a [`Permit`]. There are `max_concurrent` of them; a permit is held until the
//!   call finishes or its future is dropped (with the `http` feature, optionally until the
//!   response body has been read to the end).
//! - A cancelled call's future is dropped before its permit is released ([`Bulkhead::run`]
//!   and every layer), so no waiting call starts while the cancelled call's destructor still
//!   runs.
//! - When none is free, a call may wait up to `max_wait`, in FIFO order, with at most
//!   `max_queued` callers waiting. Otherwise it is rejected with [`BulkheadFull`], a cheap
//!   typed error carrying the bulkhead's name, its limit and the [`BulkheadFullReason`].
//! - Defaults: 25 permits, `max_wait` zero (fail fast: waiting for a saturated dependency
//!   only moves its queue into your service), `max_queued` equal to the limit.
//! - The limit can be changed at runtime ([`Bulkhead::set_max_concurrent`]): growing it admits
//!   waiters at once; shrinking it lets calls in flight finish and admits nobody until fewer
//!   than the new limit run.
//! - Optionally the limit adapts ([`AdaptiveLimit`]): AIMD or a Vegas-style latency gradient
//!   raises it while latency stays at its no-load level and lowers it when latency grows or
//!   calls fail (as decided by a [`Classify`](staunch_core::Classify)er).
//! - [`PartitionedBulkhead`] keeps one bulkhead per key (tenant, host) with an optional global
//!   cap, so one noisy key cannot starve the others. Each partition is a plain [`Bulkhead`]
//!   (resize one with `partition(&key).set_max_concurrent(n)`). Its tower layer waits in the
//!   response future rather than in `poll_ready`, since the key comes from the request.
//!
//! # Speed and fairness
//!
//! Taking a free permit is one compare-and-swap on an atomic word, releasing it one atomic
//! subtraction (plus the reference count that lets a permit outlive the service handle that
//! took it); neither locks nor allocates. The mutex-protected queue is only touched once
//! someone has to wait. Waiting callers are served strictly in FIFO order: while anyone is
//! queued, the fast path is closed, newcomers queue behind, and every released permit is
//! handed straight to the head of the queue, so a burst of fresh calls can never overtake a
//! caller that has been waiting.
//!
//! # Without tower
//!
//! ```
//! use std::time::Duration;
//! use staunch_bulkhead::{Bulkhead, BulkheadFullReason};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let payment = Bulkhead::builder("payment")
//!     .max_concurrent(1)
//!     .max_wait(Duration::from_millis(100))
//!     .build()?;
//!
//! let held = payment.try_acquire()?;
//! // The only permit is taken: this call waits 100ms, then gives up.
//! let err = payment.run(async { "charged" }).await.unwrap_err();
//! assert_eq!(err.reason(), BulkheadFullReason::WaitTimedOut(Duration::from_millis(100)));
//! drop(held);
//! assert_eq!(payment.run(async { "charged" }).await?, "charged");
//! assert_eq!(payment.metrics().rejections(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # With tower
//!
//! The layer reserves the permit in `poll_ready` (waiting at most `max_wait`) and moves it into
//! the response future, as tower's `ConcurrencyLimit` does; when no permit comes, `poll_ready`
//! still succeeds and `call` fails with [`BulkheadFull`] (see [`BulkheadService`]). Errors are
//! boxed: test them with `err.is::<BulkheadFull>()`.
//!
//! ```
//! use std::time::Duration;
//! use staunch_bulkhead::Bulkhead;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let inventory = Bulkhead::builder("inventory")
//!     .max_concurrent(32)
//!     .max_wait(Duration::from_millis(10))
//!     .build()?;
//! let mut client = ServiceBuilder::new()
//!     .layer(inventory.layer())
//!     .service_fn(|sku: u32| async move { Ok::<_, std::io::Error>(sku % 7) });
//! assert_eq!(client.ready().await?.call(15).await?, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `http`: [`BulkheadLayer::hold_until_body_end`] keeps the permit until the response body
//!   has been read.
//! - `metrics`: rejections, waits and limit changes are emitted through the `metrics` crate
//!   with a `name` label, and [`Bulkhead::emit_metrics`] publishes the gauges.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod acquire;
mod adaptive;
#[cfg(feature = "http")]
mod body;
mod bulkhead;
mod config;
mod error;
mod future;
mod layer;
mod metrics;
mod partition;
mod service;
mod settings;
mod state;
mod sync;

pub use crate::acquire::{Acquire, Run};
pub use crate::adaptive::{AdaptiveLimit, Aimd, Vegas};
#[cfg(feature = "http")]
pub use crate::body::{HttpBulkheadLayer, HttpBulkheadService, HttpResponseFuture, PermitBody};
pub use crate::bulkhead::{Bulkhead, Permit};
pub use crate::config::{BulkheadBuilder, DEFAULT_MAX_CONCURRENT};
pub use crate::error::{BoxError, BulkheadFull, BulkheadFullReason};
pub use crate::future::ResponseFuture;
pub use crate::layer::BulkheadLayer;
pub use crate::metrics::BulkheadMetrics;
pub use crate::partition::{
    PartitionAcquire, PartitionPermit, PartitionedBulkhead, PartitionedBulkheadBuilder,
    PartitionedBulkheadLayer, PartitionedBulkheadService, PartitionedResponseFuture,
};
pub use crate::service::BulkheadService;
pub use crate::settings::{
    AdaptiveConfig, AimdConfig, BulkheadConfig, PartitionedBulkheadConfig, VegasConfig,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn assert_unpin<T: Unpin>() {}

    #[test]
    fn public_types_are_send_sync_unpin() {
        assert_send_sync::<Bulkhead>();
        assert_send_sync::<Permit>();
        assert_send_sync::<Acquire>();
        assert_send_sync::<BulkheadBuilder>();
        assert_send_sync::<BulkheadLayer>();
        assert_send_sync::<BulkheadMetrics>();
        assert_send_sync::<AdaptiveLimit>();
        assert_send_sync::<PartitionedBulkhead<String>>();
        assert_send_sync::<PartitionPermit>();
        assert_send_sync::<PartitionAcquire>();
        assert_send_sync::<
            BulkheadService<
                tower::util::BoxCloneSyncService<u8, u8, BoxError>,
                staunch_core::AnyError,
            >,
        >();
        assert_send_sync::<PartitionedBulkheadLayer<String, fn(&u8) -> String>>();
        #[cfg(feature = "http")]
        assert_send_sync::<HttpBulkheadLayer<staunch_core::AnyError>>();
        #[cfg(feature = "http")]
        assert_send_sync::<PermitBody<String>>();
        assert_unpin::<Bulkhead>();
        assert_unpin::<Permit>();
        assert_unpin::<Acquire>();
        assert_unpin::<PartitionAcquire>();
        assert_unpin::<Run<std::future::Ready<()>>>();
    }
}
