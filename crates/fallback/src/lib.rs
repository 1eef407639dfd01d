//! A fallback for tokio services: on chosen outcomes of a call (a staunch rejection, an error
//! kind, a response status or class) answer with a value, a function of the error or
//! response, or another service, and say that the answer is a fallback.
//!
//! - [`FallbackPolicy`] is the engine, usable without tower: its rules decide *when*
//!   ([`check`](FallbackPolicy::check) judges one result), [`call`](FallbackPolicy::call)
//!   and [`call_or_else`](FallbackPolicy::call_or_else) run a call and answer it, and
//!   [`metrics`](FallbackPolicy::metrics) counts what it did.
//! - [`Answer`] says *what*, computed in place: a value (cloned) or a function of the
//!   [`Reason`] and the primary's error or response ([`Cause`]). [`FallbackLayer::service`]
//!   answers with another tower service instead, called with a clone of the request.
//! - [`FallbackLayer`] is the tower layer.
//!
//! # When it answers
//!
//! By default, a policy answers every staunch **rejection** (a [`BreakerOpen`], a
//! [`BulkheadFull`], a [`RateLimited`], a [`DeadlineExpired`]): a call that a layer further
//! in refused without running it, found anywhere in the error's source chain
//! ([`rejection_of`](staunch_core::rejection_of)). [`rejections`](FallbackPolicyBuilder::rejections)
//! narrows that; [`on_any_error`](FallbackPolicyBuilder::on_any_error) and
//! [`on_error`](FallbackPolicyBuilder::on_error) add **errors**;
//! [`on_status`](FallbackPolicyBuilder::on_status) (feature `http`, or with
//! [`status_of`](FallbackPolicyBuilder::status_of)) and
//! [`on_response`](FallbackPolicyBuilder::on_response) replace **responses** such as
//! 5xx. Everything else passes through untouched. The rules that can live in a settings
//! file are [`FallbackConfig`] (feature `serde`); a bad value is a [`ConfigError`] naming
//! its field.
//!
//! # How the caller learns it was a fallback
//!
//! - `http::Response`: a policy made by [`FallbackPolicy::http`] (feature `http`) puts the
//!   [`Fallback`] extension, with its [`Reason`], on every response a fallback gives, and on
//!   no other: `response.extensions().get::<Fallback>()`.
//! - Any response type: the engine's calls return [`Answered<Res>`](Answered)
//!   (`Primary(res)` or `Fallback { response, reason }`), and
//!   [`FallbackLayer::answered`] makes the layer's services answer the same. A policy's
//!   [`mark`](FallbackPolicyBuilder::mark) can also label a response type of your own.
//!
//! # Failures of the fallback itself
//!
//! A rule, an answer or a backup that panics fails that one call with [`FallbackPanicked`]
//! (naming the policy and the callback); the fallback keeps working for every other call.
//! A backup service that fails fails the call with [`FallbackFailed`], whose source is the
//! backup's error as it was. Neither is answered again by the same fallback.
//!
//! # Where it goes in a stack
//!
//! Outermost: outside the retry layer and the circuit breaker. It answers once everything
//! else has given up: retries exhausted, and the calls an open breaker refuses (which the
//! retry layer, rightly, does not retry). Inside retry, a fallback would turn failures into
//! successes before retry could try again; inside the breaker, the breaker would count the
//! fallback's answers as the dependency's successes and never open.
//!
//! ```
//! # #[cfg(feature = "http")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use staunch_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
//! use staunch_core::HttpStatus;
//! use staunch_fallback::{Answer, Fallback, FallbackLayer, FallbackPolicy, Reason, RejectionKind};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! let breaker = CircuitBreaker::builder("catalog").build().unwrap();
//! let policy = FallbackPolicy::http("catalog").on_status(500..=599).build().unwrap();
//! let stale = http::Response::new(String::from("yesterday's catalog"));
//! let mut client = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(policy.clone(), Answer::value(stale)))
//!     .layer(CircuitBreakerLayer::new(breaker.clone()).with_classifier(HttpStatus::new()))
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::io::Error>(http::Response::new(String::from("today's catalog")))
//!     }));
//!
//! let res = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(res.body(), "today's catalog");
//! assert!(res.extensions().get::<Fallback>().is_none());
//!
//! breaker.force_open();
//! let res = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(res.body(), "yesterday's catalog");
//! let mark = res.extensions().get::<Fallback>().unwrap();
//! assert_eq!(mark.reason, Reason::Rejected(RejectionKind::BreakerOpen));
//! assert_eq!(policy.metrics().rejections, 1);
//! # }
//! # #[cfg(not(feature = "http"))] fn main() {}
//! ```
//!
//! # Cost
//!
//! A call the primary answers pays for one reference count (the layer's policy, moved into
//! the response future) and, when the policy has response rules, their check (a status is
//! one bit test). The response future wraps the inner one: no boxing, no allocation. Only a
//! fallback pays more: its counters, a trace event, and for a backup service a boxed call.
//! `cargo bench -p staunch-benches --bench fallback` measures it beside the circuit
//! breaker's success path and tower-resilience's fallback.
//!
//! # Features
//!
//! - `http`: [`FallbackPolicy::http`] (status rules, the [`Fallback`] extension).
//! - `serde`: [`FallbackConfig`] from and to any serde format; `Serialize` for
//!   [`FallbackMetrics`].
//! - `metrics`: the counters `staunch.fallback.used{name, reason}` and
//!   `staunch.fallback.failed{name, cause}` (cause `panicked` or `backup_error`)
//!   through the `metrics` crate. [`FallbackPolicy::metrics`] reads the same counts without
//!   it.
//!
//! [`BreakerOpen`]: staunch_core::BreakerOpen
//! [`BulkheadFull`]: staunch_core::BulkheadFull
//! [`RateLimited`]: staunch_core::RateLimited
//! [`DeadlineExpired`]: staunch_core::DeadlineExpired

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod answer;
mod call;
mod error;
mod future;
mod layer;
mod policy;
mod reason;
mod service;
mod settings;
mod status;

pub use crate::answer::{Answer, Backup, BackupCall, Respond};
pub use crate::call::{Call, CallOrElse};
pub use crate::error::{Callback, FallbackFailed, FallbackPanicked};
pub use crate::future::{Deliver, Plain, ResponseFuture, Wrap};
pub use crate::layer::FallbackLayer;
pub use crate::policy::{FallbackMetrics, FallbackPolicy, FallbackPolicyBuilder, Verdict};
pub use crate::reason::{Answered, Cause, Fallback, Reason, RejectionKind, Rejections};
pub use crate::service::FallbackService;
pub use crate::settings::FallbackConfig;
pub use crate::status::{ParseStatusRangeError, StatusRange};
pub use staunch_core::{BoxError, ConfigError};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_unpin<T: Send + Sync + Unpin>() {}

    #[test]
    fn public_types_are_send_sync_unpin() {
        assert_send_sync_unpin::<FallbackPolicy<String>>();
        assert_send_sync_unpin::<FallbackPolicyBuilder<String>>();
        assert_send_sync_unpin::<Answer<String>>();
        assert_send_sync_unpin::<FallbackLayer<String, Answer<String>>>();
        assert_send_sync_unpin::<Fallback>();
        assert_send_sync_unpin::<FallbackPanicked>();
        assert_send_sync_unpin::<FallbackFailed>();
        assert_send_sync_unpin::<FallbackConfig>();
        assert_send_sync_unpin::<FallbackMetrics>();
    }
}
