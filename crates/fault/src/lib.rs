//! Fault injection for tokio services: delays, errors and aborts at configured rates, drawn
//! from a seeded random sequence, switchable at run time.
//!
//! - [`FaultInjector`] is the engine, usable without tower: [`decide`](FaultInjector::decide)
//!   says what happens to one call (wait a delay, then fail it or send it). Clones share
//!   everything; [`set`](FaultInjector::set), [`disable`](FaultInjector::disable) and
//!   [`enable`](FaultInjector::enable) take effect for the next call through every clone.
//! - [`FaultConfig`] is the configuration as plain data (and, with feature `serde`, a
//!   settings table with durations in human form), with presets for a payment dependency's
//!   failure modes: [`none`](FaultConfig::none), [`slow`](FaultConfig::slow),
//!   [`error`](FaultConfig::error), [`intermittent`](FaultConfig::intermittent), also by name
//!   ([`FaultConfig::preset`]).
//! - [`FaultLayer`] is the tower layer for any service: an injected error is the value a
//!   function of yours makes ([`error_with`](FaultLayer::error_with)), by default
//!   [`FaultInjected`]. [`HttpFaultLayer`] (feature `http`) answers a chosen response
//!   (status and body) instead.
//! - An abort fails the call with [`FaultInjected`] without reaching the service.
//!
//! # The model
//!
//! For each call, the injector draws the latency fault (probability `latency.rate`, a delay
//! uniform in `latency.min..=latency.max`), and independently an abort (`abort.rate`) or
//! else an error (`error.rate`); the two exclude each other, so each rate holds as written.
//! The draws come from one random sequence per injector, seeded by the configuration's
//! `seed`: the same seed and the same calls in the same order give the same faults, which
//! makes a failing test replayable. Delays run on tokio's clock, so tests with paused time
//! take no real time.
//!
//! Injected faults are not staunch rejections: a circuit breaker counts them, and a retry
//! layer retries them when it would retry the real thing (an abort is a connection abort,
//! whose source is an `io::Error` of kind `ConnectionAborted`; an HTTP `503` is a `503`).
//! That is the point: they show what the rest of the stack does when the dependency
//! misbehaves.
//!
//! # Cost
//!
//! A disabled injector (or one whose configuration injects nothing) costs a call one relaxed
//! atomic load: the layer's response future is then the inner future, and nothing is
//! allocated, locked or counted. An active injector takes a short lock per call to draw; a
//! delayed call boxes its timer with the request.
//!
//! # Where it goes in a stack
//!
//! Innermost, next to the service (or, for a server, around its router): every other layer
//! sees the faults as real ones. A delay counts against the timeout, an injected `503`
//! against the breaker, and the retry layer retries an abort and a `503` response.
//!
//! ```
//! use std::time::Duration;
//! use staunch_fault::{FaultConfig, FaultInjected, FaultInjector, FaultLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let injector = FaultInjector::builder("payment").abort(1.0).seed(42).build().unwrap();
//! let mut svc = ServiceBuilder::new()
//!     .layer(FaultLayer::new(injector.clone()))
//!     .service(service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
//! let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
//! assert!(err.is::<FaultInjected>());
//!
//! // Switched at run time, for the next call through every clone.
//! injector.set(FaultConfig::slow()).unwrap();
//! let start = tokio::time::Instant::now();
//! assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
//! assert!(start.elapsed() >= Duration::from_secs(3));
//! injector.disable();
//! assert_eq!(injector.metrics().aborts, 1);
//! # }
//! ```
//!
//! # Observability
//!
//! [`FaultInjector::metrics`] counts the calls decided while active and the faults of each
//! kind; with feature `metrics` the same go to the `metrics` crate as
//! `staunch.fault.injected{name, kind = latency | error | abort}`, with the gauge
//! `staunch.fault.active{name}` (1 while faults can be injected). Every injected fault is a
//! `tracing` debug event, and so is every switch.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod future;
mod injector;
mod layer;
mod preset;
#[cfg(feature = "serde")]
mod serde_impl;
mod service;

pub use crate::config::{AbortFault, ErrorFault, FaultConfig, LatencyFault};
pub use crate::error::{ErrorFnPanicked, FaultInjected, FaultKind};
pub use crate::future::ResponseFuture;
pub use crate::injector::{
    Fault, FaultInjector, FaultInjectorBuilder, FaultMetrics, InjectedError, Injection,
};
#[cfg(feature = "http")]
pub use crate::layer::HttpFaultLayer;
pub use crate::layer::{DefaultErrorFn, FaultLayer};
pub use crate::service::FaultService;
#[cfg(feature = "http")]
pub use crate::service::HttpFaultService;
pub use staunch_core::{BoxError, ConfigError};
