//! Outlier ejection over several replicas of one service, with Envoy's (and Istio's)
//! semantics: calls are balanced over the endpoints, and an endpoint that keeps failing is
//! taken out of the rotation for a while, then let back in.
//!
//! - [`Balancer`] is the tower service over the endpoints (one inner service each, keyed by
//!   what names it, such as its URL): each call goes to the less loaded of two eligible
//!   endpoints drawn at random (power of two choices on calls in flight), and its outcome,
//!   judged by a [`Classify`](staunch_core::Classify)er, is recorded against that endpoint.
//!   [`status`](Balancer::status) lists every endpoint's state; endpoints are
//!   [`insert`](Balancer::insert)ed and [`remove`](Balancer::remove)d at run time.
//! - [`Detector`] is the engine, usable without tower: outcomes in, eligible endpoints out.
//!
//! # The model
//!
//! - **Ejection**: `consecutive_failures` failures in a row (default 5) eject an endpoint;
//!   with the optional failure-rate test, so does a failure percentage at or above
//!   `threshold` over an `interval` in which it answered at least `minimum_requests` calls.
//! - **For how long**: the `n`th ejection of an endpoint lasts `n × base_ejection_time`
//!   (default 30 s), at most `max_ejection_time` (default 5 min), so a replica that keeps
//!   failing is tried less and less often, but still tried.
//! - **How many**: never more than `max_ejection_percent` of the endpoints (default 50 %,
//!   rounded down) at once; the rest carry the load even if they fail too, because ejecting
//!   every replica of a service that is down helps no one.
//! - **Return**: automatic, when the time has passed, checked at the next call (no
//!   background task). A returned endpoint starts again from no failures in a row, and keeps
//!   its count of ejections.
//! - **Nowhere to go**: if every endpoint is out (possible only with 100 %), calls go to
//!   all of them, as in Envoy. With no endpoint at all, a call fails with [`NoEndpoints`].
//!
//! For HTTP, `HttpStatus::empty().failures(500..=599)` classifies as Envoy's
//! `consecutive_5xx`: 5xx responses and transport errors (refused connections, resets)
//! fail, 4xx are the caller's business. The default classifier, [`AnyError`], fails every
//! `Err`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::time::Duration;
//! use staunch_outlier::Balancer;
//! use tower::{BoxError, Service, ServiceExt, service_fn};
//!
//! // Three replicas; "b" fails every call.
//! let replica = |name: &'static str| {
//!     service_fn(move |_req: ()| async move {
//!         if name == "b" { Err::<&str, BoxError>("b is down".into()) } else { Ok(name) }
//!     })
//! };
//! let mut client = Balancer::builder("catalog")
//!     .endpoint("a", replica("a"))
//!     .endpoint("b", replica("b"))
//!     .endpoint("c", replica("c"))
//!     .consecutive_failures(3)
//!     .base_ejection_time(Duration::from_secs(30))
//!     .seed(7)
//!     .build()
//!     .unwrap();
//!
//! // "b" fails until it has failed three times in a row, and is ejected...
//! while client.endpoint(&"b").unwrap().times_ejected == 0 {
//!     let _ = client.ready().await.unwrap().call(()).await;
//! }
//! // ...after which every call goes to "a" or "c".
//! for _ in 0..100 {
//!     let answer = client.ready().await.unwrap().call(()).await.unwrap();
//!     assert_ne!(answer, "b");
//! }
//! // Thirty seconds later, "b" is back in the rotation.
//! tokio::time::advance(Duration::from_secs(30)).await;
//! assert!(!client.endpoint(&"b").unwrap().state.is_ejected());
//! # }
//! ```
//!
//! # Where it goes in a stack
//!
//! Below the retry layer, above the per-endpoint layers: `retry → Balancer → [breaker →
//! timeout → client]` per endpoint. A retry then goes through the balancer again and
//! usually lands on another endpoint (and never on an ejected one). Each endpoint's own
//! breaker, timeout and bulkhead sit inside its service, so they judge that replica only; a
//! timeout or an open breaker there is an `Err` the balancer counts against the endpoint.
//!
//! # Cost
//!
//! A call takes the balancer's mutex twice (to choose, and to record the outcome), clones
//! the chosen endpoint's service (clones of tower services start not ready, so a clone per
//! call is what lets every clone of the balancer share the endpoints; for reqwest or hyper
//! clients it is one reference count) and counts itself in flight with an atomic. No
//! allocation. `cargo bench -p staunch-benches --bench outlier` measures it beside tower's
//! `balance::p2c::Balance`.
//!
//! # Features
//!
//! - `serde`: [`OutlierConfig`] from and to any serde format (durations in human form);
//!   `Serialize` for [`OutlierMetrics`].
//! - `metrics`: the counters `staunch.outlier.ejections{name, reason}` (reason
//!   `consecutive_failures` or `failure_rate`) and `staunch.outlier.returns{name}`,
//!   and the gauges `staunch.outlier.ejected{name}` and
//!   `staunch.outlier.endpoints{name}`, through the `metrics` crate.
//!   [`Balancer::metrics`] reads the same counts without it.
//!
//! Ejections and returns are `debug` tracing events (with the endpoint's key, the reason,
//! the times ejected and the ejection time); an ejection held back by the cap is a `trace`
//! event.
//!
//! [`AnyError`]: staunch_core::AnyError

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod balancer;
mod builder;
mod config;
mod detector;
mod error;
mod future;
#[cfg(feature = "metrics")]
mod metrics;
mod settings;

pub use crate::balancer::Balancer;
pub use crate::builder::BalancerBuilder;
pub use crate::config::{FailureRateConfig, OutlierConfig};
pub use crate::detector::{Detector, EndpointState, EndpointStatus, OutlierMetrics};
pub use crate::error::NoEndpoints;
pub use crate::future::ResponseFuture;
pub use crate::settings::{FailureRate, Settings, SettingsBuilder};
pub use staunch_core::{BoxError, ConfigError};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_unpin<T: Send + Sync + Unpin>() {}

    #[test]
    fn public_types_are_send_sync_unpin() {
        assert_send_sync_unpin::<Detector<String>>();
        assert_send_sync_unpin::<Settings>();
        assert_send_sync_unpin::<OutlierConfig>();
        assert_send_sync_unpin::<EndpointStatus<String>>();
        assert_send_sync_unpin::<NoEndpoints>();
        assert_send_sync_unpin::<OutlierMetrics>();
    }
}
