//! A client-side rate limiter for tokio services: GCRA with a burst, shared by every clone,
//! keyed per host or tenant with bounded keys, waiting up to a bound or refusing at once,
//! and slowed down by servers that answer `429`.
//!
//! - [`RateLimiter`] is the engine, usable without tower: [`try_acquire`](RateLimiter::try_acquire)
//!   never waits, [`acquire`](RateLimiter::acquire) waits up to `max_wait`. A permit costs one
//!   compare-and-swap on one atomic timestamp: no lock, no timer, no allocation.
//! - [`KeyedRateLimiter`] keeps one bucket per key, at most `max_keys` of them.
//! - [`RateLimitLayer`] and [`KeyedRateLimitLayer`] are the tower layers.
//! - A call refused is a [`RateLimited`] rejection carrying `retry_after`: like the circuit
//!   breaker's `BreakerOpen` it is never retried by the staunch retry layer and never counted
//!   by a circuit breaker (it never reached the dependency).
//! - [`RateHint`]s from servers lower the rate for a while: `429` with `Retry-After` stops
//!   calls until it has passed, and the `RateLimit` headers spread the calls the server still
//!   accepts over its window ([`HttpHints`], feature `http`).
//!
//! # Why GCRA, and why not `governor` inside
//!
//! The generic cell rate algorithm is the leaky bucket kept as one timestamp (see the `gcra`
//! module's notes): no refill task, exact at any rate, and a burst is just how far ahead of
//! now the timestamp may run. `governor` implements the same algorithm; staunch keeps its
//! own ~100 lines because a server's hint must change one key's rate at run time (governor's
//! quota is fixed per limiter), because the clock must be tokio's so tests run under paused
//! time, and because waiting callers reserve their slot in order instead of polling. The
//! bench `cargo bench -p staunch-benches --bench rate_limit` runs both side by side.
//!
//! # Where it goes in a stack
//!
//! Inside the retry layer (each attempt takes a permit; a rejection ends the call instead of
//! being retried into the limit) and outside the circuit breaker (a call the limiter refuses
//! never reaches the breaker, and a breaker that is open does not spend permits).
//!
//! ```
//! use std::time::Duration;
//! use staunch_rate_limit::{RateLimitLayer, RateLimiter};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let limiter = RateLimiter::builder("payments")
//!     .rate(100, Duration::from_secs(1))
//!     .burst(10)
//!     .max_wait(Duration::from_millis(50))
//!     .build()
//!     .unwrap();
//! let mut svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(limiter.clone()))
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
//! // Ten at once (the burst), then one every 10 ms, waiting up to 50 ms for it.
//! for n in 0..15 {
//!     assert_eq!(svc.ready().await.unwrap().call(n).await.unwrap(), n);
//! }
//! assert_eq!(limiter.metrics().delayed, 5);
//! # }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod gcra;
mod hint;
mod keyed;
mod limiter;
#[cfg(all(test, loom))]
mod loom_model;
mod service;
mod settings;
mod sync;

#[cfg(feature = "http")]
pub use crate::hint::HttpHints;
pub use crate::hint::{NoHints, RateHint, ReadHint};
pub use crate::keyed::KeyedRateLimiter;
pub use crate::limiter::{
    Acquire, DEFAULT_MAX_KEYS, RateLimitMetrics, RateLimiter, RateLimiterBuilder,
};
pub use crate::service::{
    KeyPanicked, KeyedRateLimit, KeyedRateLimitLayer, RateLimit, RateLimitLayer, ResponseFuture,
};
pub use crate::settings::RateLimitConfig;
pub use staunch_core::{BoxError, ConfigError, RateLimited};
