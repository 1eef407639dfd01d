//! staunch keeps tokio services standing when the services they call fail.
//!
//! This crate is the one dependency most users need: it re-exports the staunch family, each
//! part behind a cargo feature of the same name, so a service compiles only what it uses, and
//! it puts the parts together: [`ServiceBuilderExt`] adds the layers to
//! `tower::ServiceBuilder`, [`Error`] is one error type for a whole stack, the presets
//! [`http::client`] and [`grpc::channel`] build a well-ordered stack around a client, and
//! [`StackConfig`] / [`Registry`] load stacks from a configuration file and reload them.
//!
//! | module | crate | what it gives |
//! |---|---|---|
//! | [`core`] | [`staunch-core`](https://docs.rs/staunch-core) | outcomes and classifiers (errors, HTTP, gRPC), backoff with jitter, rejections, configuration errors |
//! | [`circuit_breaker`] | [`staunch-circuit-breaker`](https://docs.rs/staunch-circuit-breaker) | feature `circuit-breaker`: fail fast while a dependency is down |
//! | [`bulkhead`] | [`staunch-bulkhead`](https://docs.rs/staunch-bulkhead) | feature `bulkhead`: cap concurrent calls so one slow dependency cannot take every task |
//! | [`timeout`] | [`staunch-timeout`](https://docs.rs/staunch-timeout) | feature `timeout`: per-call limits and propagated deadlines |
//! | [`retry`] | [`staunch-retry`](https://docs.rs/staunch-retry) | feature `retry`: backoff, retry budgets, server hints, hedging |
//! | [`saga`] | [`staunch-saga`](https://docs.rs/staunch-saga) | feature `saga`: multi-service transactions with compensations and a durable log |
//!
//! The shared vocabulary is also available at the root: [`Outcome`], [`Classify`],
//! [`Backoff`], [`Jitter`], [`ConfigError`].
//!
//! ```
//! use std::time::Duration;
//! use staunch::{Backoff, Jitter};
//!
//! let backoff = Backoff::exponential(Duration::from_millis(100))
//!     .max_delay(Duration::from_secs(5))
//!     .jitter(Jitter::Full)
//!     .build()?;
//! assert!(backoff.schedule().take(10).all(|d| d <= Duration::from_secs(5)));
//! # Ok::<(), staunch::ConfigError>(())
//! ```
//!
//! # The model
//!
//! Each resilience tool is an **engine** with shared state, and a thin tower **layer** over it:
//!
//! - a circuit breaker ([`CircuitBreaker`](crate::circuit_breaker::CircuitBreaker)) counts the outcomes of calls and, while the
//!   dependency is failing, refuses calls at once with a [`BreakerOpen`];
//! - a bulkhead ([`Bulkhead`](crate::bulkhead::Bulkhead)) caps the calls in flight and refuses the rest with a
//!   [`BulkheadFull`] (or lets them wait a bounded time);
//! - a time limit ([`TimeLimit`](crate::timeout::TimeLimit)) cancels a call that takes too
//!   long, with an [`Elapsed`](crate::timeout::Elapsed);
//! - a retry policy ([`RetryPolicy`](crate::retry::RetryPolicy)) makes another attempt after a transient failure, waiting
//!   a jittered backoff, within an overall deadline and a retry budget shared by every clone.
//!
//! Engines are cheap handles (clones share the state) and outlive the layers built from
//! them, so a status endpoint can read them and an operator can force a breaker open. A
//! rejection is a small typed value that says "back off": no retry layer of staunch ever
//! retries one, and no breaker
//! ([`CircuitBreakerLayer`](crate::circuit_breaker::CircuitBreakerLayer)) ever counts a
//! bulkhead's rejection as the dependency failing. A call whose caller's `Deadline` had
//! already passed is not sent at all: it is the rejection [`DeadlineExpired`], which no layer
//! counts or retries, and no layer that answers a call itself keeps a bulkhead permit for it.
//!
//! Every layer returns [`BoxError`] (`tower::BoxError`): a rejection is a boxed typed value
//! (`err.downcast_ref::<BreakerOpen>()`, or [`rejection_of`] through any wrapping), the
//! client's own error is boxed as it is. [`Error<E>`](Error) (through [`TypedErrorsLayer`], which
//! the HTTP preset puts outermost) gives it back as an enum to `match`: the client's own
//! error `E`, `BreakerOpen`, `BulkheadFull`, `DeadlineExpired`, `Elapsed`,
//! `RetriesExhausted` and `BudgetExhausted` (with the last attempt's error inside), or
//! `Other`.
//!
//! # The order of layers
//!
//! Outermost first, as the HTTP preset builds it and as [`ServiceBuilderExt`] calls are
//! written (the gRPC preset is the same without its first two lines: see [*tonic*](#tonic)):
//!
//! ```text
//! TypedErrorsLayer            BoxError -> staunch::Error<E>
//!  retry                attempts, jittered backoff, budget, overall deadline (`timeout`)
//!   circuit breaker     one outcome per attempt
//!    attempt timeout    `attempt_timeout`
//!     bulkhead          a permit per attempt in flight
//!      client           reqwest, hyper, a tonic channel
//! ```
//!
//! **Retry sits outside the breaker.** Every attempt is then one outcome for the breaker, so a
//! failing dependency trips it as soon as the failures are there, not once per exhausted call.
//! When the breaker opens in the middle of a call's retries, the next attempt is refused at
//! once and the retry layer stops: the rejection is never retried, so no load reaches a
//! dependency known to be down, and the caller gets `Error::BreakerOpen` to serve a fallback
//! with. With the breaker outside, it would see one outcome per call whatever the number of
//! attempts, and trip late.
//!
//! **The per-attempt timeout sits inside retry, and inside the breaker.** Inside retry, a hung
//! attempt becomes a failure the retry layer can act on: another attempt, within the overall
//! deadline. (A timeout outside retry can only cancel the whole call; that is the overall
//! deadline's job, which the retry layer enforces itself as `max_total_time`, skipping a wait
//! that would end past it.) Inside the breaker, the timed-out attempt is a failure the breaker
//! counts; a timeout outside it would *cancel* the breaker's call, and a cancelled call is
//! ignored (it is not the dependency's fault), so a dependency that hangs would never trip it.
//!
//! **The bulkhead is innermost.** It holds a permit only while an attempt is in flight: not
//! during backoff waits (a call waiting to retry does not starve the calls that could
//! succeed), and not for calls the open breaker refuses (they never reach it). Its
//! rejections are neither retried nor counted by the breaker (the breaker's classifier is
//! wrapped in [`IgnoreRejections`]). Waiting for a permit happens while the stack gets ready,
//! bounded by the bulkhead's `max_wait` (default zero: fail fast). Put a second bulkhead
//! outermost when what you must bound is the number of *callers* inside the stack (memory,
//! tasks) rather than the load on the dependency.
//!
//! **A rate limiter (feature `rate-limit`) goes inside retry and outside the breaker.** Inside
//! retry, each attempt takes a permit, so retries cannot exceed the rate the dependency
//! grants, and a call the limiter refuses ends with `Error::RateLimited` instead of being
//! retried into the limit. Outside the breaker, a refused call never reaches the breaker,
//! which therefore never counts it (it says nothing about the dependency's health). With
//! `HttpHints`, a `429` with `Retry-After` stops the client's calls until it has passed:
//!
//! ```
//! # #[cfg(all(feature = "rate-limit", feature = "circuit-breaker", feature = "retry"))]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::time::Duration;
//! use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
//! use staunch::rate_limit::{RateLimitLayer, RateLimiter};
//! use staunch::retry::{RetryLayer, RetryPolicy};
//! use staunch::{BoxError, Error, TypedErrorsLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! let limiter = RateLimiter::builder("geo").rate(1, Duration::from_secs(1)).build().unwrap();
//! let breaker = CircuitBreaker::builder("geo").build().unwrap();
//! let mut client = ServiceBuilder::new()
//!     .layer(TypedErrorsLayer::<std::io::Error>::new())
//!     .layer(RetryLayer::new(RetryPolicy::builder().build().unwrap()))
//!     .layer(RateLimitLayer::new(limiter))
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service(service_fn(|q: u32| async move { Ok::<_, std::io::Error>(q) }));
//! assert_eq!(client.ready().await.unwrap().call(1).await.unwrap(), 1);
//! // No permit for a second: refused at once, not retried, not counted by the breaker.
//! let err = client.ready().await.unwrap().call(2).await.unwrap_err();
//! assert!(matches!(err, Error::RateLimited(ref e) if e.retry_after() == Duration::from_secs(1)));
//! let seen = breaker.snapshot();
//! assert_eq!((seen.successful_calls, seen.failed_calls, seen.rejected_calls), (1, 0, 0));
//! # }
//! # #[cfg(not(all(feature = "rate-limit", feature = "circuit-breaker", feature = "retry")))]
//! # fn main() {}
//! ```
//!
//! **Fault injection (feature `fault`) goes innermost**, next to the client (or around a
//! server's router). Every other layer then sees an injected delay, error or abort as the
//! dependency's own: the timeout cuts the delay, the breaker counts the failures and trips,
//! the retry layer retries aborts (connection aborts) and `503` responses, so a drill shows
//! what the stack really does. Disabled (the
//! default in production, switched on through its handle or a reloaded `FaultConfig`), it
//! costs one atomic load per call:
//!
//! ```
//! # #[cfg(all(feature = "fault", feature = "circuit-breaker"))]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, State};
//! use staunch::fault::{FaultConfig, FaultLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! let faults = FaultConfig::none().build("payment").unwrap();
//! let breaker = CircuitBreaker::builder("payment").count_window(10).minimum_calls(10).build().unwrap();
//! let mut client = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .layer(FaultLayer::new(faults.clone()))
//!     .service(service_fn(|q: u32| async move { Ok::<_, std::io::Error>(q) }));
//! assert_eq!(client.ready().await.unwrap().call(1).await.unwrap(), 1);
//! // The drill: every call fails; the breaker counts the faults as failures and opens.
//! faults.set(FaultConfig::none().with_error(1.0, 503).with_seed(1)).unwrap();
//! for q in 0..10 {
//!     assert!(client.ready().await.unwrap().call(q).await.is_err());
//! }
//! assert_eq!(breaker.state(), State::Open);
//! faults.disable();
//! # }
//! # #[cfg(not(all(feature = "fault", feature = "circuit-breaker")))]
//! # fn main() {}
//! ```
//!
//! **A fallback (feature `fallback`) goes outermost**: outside retry and the breaker (just
//! inside [`TypedErrorsLayer`], so its own errors still reach the caller as [`Error`]). It
//! answers once everything else has given up: the retries are spent, or the open breaker
//! refused the call (a refusal retry rightly never retries). Inside retry it would turn a
//! failure into a success before retry could try again; inside the breaker, the breaker would
//! count the fallback's answers as the dependency's successes and never open. By default it
//! answers every rejection (breaker open, bulkhead full, rate limited, deadline expired);
//! errors and response statuses are answered when chosen, and an `http::Response` it gives
//! carries the [`Fallback`](crate::fallback::Fallback) extension:
//!
//! ```
//! # #[cfg(all(feature = "fallback", feature = "circuit-breaker"))]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
//! use staunch::fallback::{Answer, Fallback, FallbackLayer, FallbackPolicy, Reason, RejectionKind};
//! use staunch::HttpStatus;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! let breaker = CircuitBreaker::builder("payment").consecutive_failures(1).build().unwrap();
//! let policy = FallbackPolicy::http("payment").build().unwrap();
//! let pending = http::Response::builder().status(202).body("payment pending").unwrap();
//! let mut client = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(policy.clone(), Answer::value(pending)))
//!     .layer(CircuitBreakerLayer::new(breaker).with_classifier(HttpStatus::new()))
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::io::Error>(http::Response::builder().status(503).body("down").unwrap())
//!     }));
//! // The dependency's 503 opens the breaker (this policy does not answer statuses)...
//! let res = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(res.status(), 503);
//! // ...and the breaker's refusal is answered by the fallback, marked as such.
//! let res = client.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!((res.status().as_u16(), *res.body()), (202, "payment pending"));
//! let mark = res.extensions().get::<Fallback>().unwrap();
//! assert_eq!(mark.reason, Reason::Rejected(RejectionKind::BreakerOpen));
//! assert_eq!(policy.metrics().rejections, 1);
//! # }
//! # #[cfg(not(all(feature = "fallback", feature = "circuit-breaker")))]
//! # fn main() {}
//! ```
//!
//! **Outlier ejection over replicas (feature `outlier`) goes below retry, above the
//! per-endpoint layers.** When a dependency runs as several replicas, the
//! [`Balancer`](crate::outlier::Balancer) is the service the retry layer wraps, and each
//! endpoint's own breaker, attempt timeout and bulkhead sit inside that endpoint's service:
//!
//! ```text
//! retry                     a retry goes through the balancer again: usually another replica
//!  Balancer                 power of two choices among the replicas not ejected
//!   circuit breaker, attempt timeout, bulkhead, client    one stack per replica
//! ```
//!
//! A replica's timeouts, failures and open breaker are errors the balancer counts against
//! that replica (they say it is sick), so it is ejected and the others take its calls; retry
//! outside then lands the next attempt on a healthy replica. Inside a single-endpoint stack
//! instead, the balancer would have nothing to choose from; above retry, it would see one
//! outcome per call and send every attempt of a call to the same replica.
//!
//! ```
//! # #[cfg(all(feature = "outlier", feature = "retry", feature = "circuit-breaker"))]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::time::Duration;
//! use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
//! use staunch::outlier::Balancer;
//! use staunch::retry::{RetryLayer, RetryPolicy};
//! use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! // Three replicas, each behind its own breaker; "b" refuses every call.
//! let replica = |name: &'static str| {
//!     let breaker = CircuitBreaker::builder(name).build().unwrap();
//!     CircuitBreakerLayer::new(breaker).layer(service_fn(move |_q: u32| async move {
//!         let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
//!         if name == "b" { Err(refused) } else { Ok(name.to_owned()) }
//!     }))
//! };
//! let balancer = Balancer::builder("catalog")
//!     .endpoints(["a", "b", "c"].map(|name| (name, replica(name))))
//!     .consecutive_failures(2)
//!     .build()
//!     .unwrap();
//! let mut client = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryPolicy::builder().build().unwrap()))
//!     .service(balancer.clone());
//! // Every call succeeds: an attempt that reached "b" is retried on another replica...
//! for q in 0..50 {
//!     assert_ne!(client.ready().await.unwrap().call(q).await.unwrap(), "b");
//! }
//! // ...and "b", having failed twice in a row, is out of the rotation for 30 seconds.
//! assert!(balancer.endpoint(&"b").unwrap().state.is_ejected());
//! # }
//! # #[cfg(not(all(feature = "outlier", feature = "retry", feature = "circuit-breaker")))]
//! # fn main() {}
//! ```
//!
//! # Choosing settings
//!
//! - `attempt_timeout` (default 2 s): a little above the dependency's p99.9 latency. Tighter
//!   turns slow answers into retries; looser lets hung connections hold tasks.
//! - `timeout` (default 5 s): what your own caller can wait. At least `attempt_timeout` plus
//!   one backoff, or retries never happen; a deadline carried by the request
//!   (`staunch::timeout::Deadline` in its extensions) shortens every attempt further.
//! - `retry.max_attempts` (default 3) with jittered exponential backoff, and the budget
//!   (default: retries add at most 20% to the request rate, plus 10 per second): keep the
//!   budget on; it is what stops a fleet of clients from multiplying an outage.
//! - `breaker.failure_rate_threshold` (default 79% with the default 3 attempts) over the last
//!   100 attempts with at least 20. The breaker sits inside the retries and sees every
//!   *attempt*: a dependency failing half its attempts fails one call in eight after three
//!   attempts, and one failing every call's first attempt fails none, yet a breaker at 50%
//!   (resilience4j's default, and the breaker crate's, meant for a breaker that sees calls)
//!   would cut either off for `open_duration`. So the default is the attempt failure rate at
//!   which about half the *calls* fail after all their attempts, `100 × 0.5^(1/max_attempts)`:
//!   50% with 1 attempt, 71% with 2, 79% with 3
//!   ([`BreakerConfig::default_failure_rate_threshold`]). It is always above what retries
//!   can hide entirely (every call succeeding at its last attempt: 67% with 3). Set it
//!   yourself (50 is the usual choice) when most calls are not retried: the preset retries
//!   only idempotent requests, so a dependency that mostly takes `POST`s without an
//!   `Idempotency-Key` sees calls, not attempts. For a dependency with little traffic use a
//!   time window (`{ kind = "time", duration = "60s", buckets = 60 }`) so old calls age out.
//!   `open_duration` (default 10 s): about the time the dependency takes to recover.
//! - `bulkhead.max_concurrent` (default 25): the dependency's share of concurrent calls, by
//!   Little's law its request rate times its p99 latency, with some headroom.
//!
//! # A stack by hand
//!
//! ```
//! # #[cfg(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry"))]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use staunch::bulkhead::Bulkhead;
//! use staunch::circuit_breaker::CircuitBreaker;
//! use staunch::retry::RetryPolicy;
//! use staunch::timeout::TimeLimit;
//! use staunch::{Error, TypedErrorsLayer, HttpStatus, ServiceBuilderExt};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! let breaker = CircuitBreaker::builder("inventory").build()?;
//! let builder = ServiceBuilder::new()
//!     .layer(TypedErrorsLayer::<std::io::Error>::new())
//!     .layer(staunch::retry::RetryLayer::new(
//!         RetryPolicy::builder().max_total_time(Duration::from_secs(2)).build()?,
//!     ))
//!     .circuit_breaker_with(breaker.clone(), HttpStatus::new())
//!     .layer(staunch::timeout::TimeoutLayer::from_limit(TimeLimit::new(Duration::from_millis(300))?))
//!     .bulkhead(Bulkhead::builder("inventory").max_concurrent(16).build()?);
//! let mut client = builder.service(service_fn(|_req: http::Request<String>| async {
//!     Ok::<_, std::io::Error>(http::Response::new(String::from("42 in stock")))
//! }));
//!
//! let request = http::Request::get("http://127.0.0.1/stock").body(String::new())?;
//! assert_eq!(client.ready().await?.call(request).await?.body(), "42 in stock");
//!
//! breaker.force_open();
//! let request = http::Request::get("http://127.0.0.1/stock").body(String::new())?;
//! match client.ready().await?.call(request).await {
//!     Err(Error::BreakerOpen(open)) => assert_eq!(open.name(), "inventory"),
//!     other => panic!("expected the breaker's rejection, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry")))]
//! # fn main() {}
//! ```
//!
//! ([`ServiceBuilderExt`] adds the same layers as methods: `.typed_errors::<E>()`,
//! `.retry_policy(policy)`, `.circuit_breaker_with(breaker, classifier)`, `.time_limit(limit)`,
//! `.bulkhead(bulkhead)`; none of their names is one of tower's own `ServiceBuilder` methods.)
//!
//! # reqwest
//!
//! The HTTP preset wraps any `Service<http::Request<B>>` (hyper's client is one);
//! [`http::reqwest`] makes one of a `reqwest::Client` (feature `reqwest`). Results are
//! classified by [`HttpStatus`] (5xx and 429 are failures); only idempotent requests (or
//! those with an `Idempotency-Key`) are retried, on connection errors, timeouts, 502, 503,
//! 504 and 429.
//!
//! ```no_run
//! # #[cfg(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry", feature = "reqwest"))]
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use staunch::{Error, StackConfig};
//! use tower::{Service, ServiceExt};
//!
//! let mut config = StackConfig::default();
//! config.attempt_timeout = Some(Duration::from_millis(500));
//! config.timeout = Some(Duration::from_secs(2));
//! config.bulkhead.max_concurrent = Some(32);
//! let inner = staunch::http::reqwest(reqwest::Client::new());
//! let (mut payment, handle) = staunch::http::client("payment", inner, &config)?;
//!
//! let request = http::Request::get("http://127.0.0.1:8080/balance").body(String::new())?;
//! match payment.ready().await?.call(request).await {
//!     Ok(res) => println!("{}", res.status()),
//!     Err(err) => {
//!         if let Error::RetriesExhausted { attempts, .. } = &err {
//!             println!("gave up after {attempts} attempts");
//!         }
//!         // A failure that was retried arrives as `RetriesExhausted { last, .. }` (or
//!         // `BudgetExhausted`); `last()` is what the last attempt ran into.
//!         match err.last() {
//!             Error::BreakerOpen(open) => println!("payment is down: {open}"),
//!             Error::BulkheadFull(_) => println!("too many calls to payment in flight"),
//!             Error::DeadlineExpired(_) => println!("not sent: our caller stopped waiting"),
//!             Error::Elapsed(elapsed) => println!("no answer within {:?}", elapsed.limit()),
//!             Error::Inner(e) => println!("transport error: {e}"),
//!             other => println!("{other}"),
//!         }
//!     }
//! }
//! // For a status endpoint:
//! println!("{:?}", handle.status());
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry", feature = "reqwest")))]
//! # fn main() {}
//! ```
//!
//! # tonic
//!
//! [`grpc::channel`] (feature `tonic`) wraps a channel for a generated client: breaker
//! (classified by gRPC status), attempt timeout, bulkhead. The client returns staunch's
//! refusals as the `tonic::Status` codes gRPC clients expect: an open breaker is
//! `UNAVAILABLE` with the time until its next probe in `grpc-retry-pushback-ms`, a full
//! bulkhead `RESOURCE_EXHAUSTED`, an attempt timeout `DEADLINE_EXCEEDED`, and
//! [`rejection_of`]`(&status)` finds the rejection. Retries go around the client call, where
//! the request message can be cloned (the channel's body is a stream that cannot be
//! replayed), with the stack's retry policy; they fail with a `tonic::Status` too (the last
//! attempt's):
//!
//! ```no_run
//! # #[cfg(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry", feature = "tonic"))]
//! # mod example {
//! # // What `tonic-build` generates, reduced to one method.
//! # #[derive(Clone)]
//! # pub struct ShippingClient<T>(T);
//! # impl<T> ShippingClient<T> {
//! #     pub fn new(channel: T) -> Self { Self(channel) }
//! #     pub async fn create(&mut self, _: tonic::Request<u64>) -> Result<tonic::Response<u64>, tonic::Status> {
//! #         Ok(tonic::Response::new(7))
//! #     }
//! # }
//! # pub async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use staunch::StackConfig;
//!
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let (channel, handle) = staunch::grpc::channel("shipping", channel, &StackConfig::default())?;
//! let client = ShippingClient::new(channel);
//!
//! let order_id = 42;
//! let shipment: Result<_, tonic::Status> = handle
//!     .retry()
//!     .retry(|| {
//!         let mut client = client.clone();
//!         async move { client.create(tonic::Request::new(order_id)).await }
//!     })
//!     .await;
//! match shipment {
//!     Ok(shipment) => println!("shipment {}", shipment.into_inner()),
//!     Err(status) if status.code() == tonic::Code::Unavailable => println!("shipping is down"),
//!     Err(status) => return Err(status.into()),
//! }
//! # Ok(())
//! # }
//! # }
//! # fn main() {}
//! ```
//!
//! The client above stands for one `tonic-build` generates. No `protoc` is needed for that:
//! `tonic_build::manual` generates the client (and server) from a service described in
//! `build.rs`, the messages being prost structs written in Rust, as this repository's gRPC
//! tests do (`tests/build.rs`, `tests/grpc.rs`):
//!
//! ```text
//! // build.rs
//! let check = tonic_build::manual::Method::builder()
//!     .name("check")
//!     .route_name("Check")
//!     .input_type("crate::StockQuery")
//!     .output_type("crate::StockLevel")
//!     .codec_path("tonic_prost::ProstCodec")
//!     .build();
//! let stock = tonic_build::manual::Service::builder().name("Stock").package("shop").method(check).build();
//! tonic_build::manual::Builder::new().compile(&[stock]);
//!
//! // src/main.rs
//! include!(concat!(env!("OUT_DIR"), "/shop.Stock.rs"));
//! let (channel, handle) = staunch::grpc::channel("inventory", channel, &config)?;
//! let mut client = stock_client::StockClient::new(channel);
//! ```
//!
//! # Configuration files
//!
//! [`StackConfig`] holds every layer's settings as plain data; with the `serde` feature it
//! reads from TOML, YAML or JSON, durations in human form (`"250ms"`, `"30s"`). A
//! [`Registry`] builds one stack per name and reloads them at run time; a bad value is a
//! [`ConfigError`] naming its whole path, and the stacks keep running on the old settings.
//!
//! ```
//! # #[cfg(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry", feature = "serde"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use staunch::{Registry, RegistryConfig};
//!
//! let file = r#"
//!     [payment]
//!     attempt_timeout = "250ms"
//!     breaker = { failure_rate_threshold = 25.0, open_duration = "30s" }
//!     retry = { max_attempts = 2 }
//!
//!     [inventory]
//!     bulkhead = { max_concurrent = 64, max_wait = "10ms" }
//! "#;
//! let registry = Registry::new(&toml::from_str::<RegistryConfig>(file)?)?;
//! assert_eq!(registry.handle("inventory").unwrap().bulkhead().max_concurrent(), 64);
//!
//! let bad = file.replace("25.0", "250.0");
//! let err = registry.reload(&toml::from_str::<RegistryConfig>(&bad)?).unwrap_err();
//! assert_eq!(err.field(), "payment.breaker.failure_rate_threshold");
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry", feature = "serde")))]
//! # fn main() {}
//! ```
//!
//! Services from [`Registry::http_client`] follow reloads: after a good one, their next
//! call runs through the new stack.
//!
//! Three optional sections go beyond the four layers' basic settings; leaving them out keeps
//! the behaviour described above:
//!
//! - `bulkhead.adaptive` ([`AdaptiveConfig`]): the bulkhead's limit follows the dependency,
//!   `max_concurrent` being only the starting point. `aimd` is simple and needs a
//!   `latency_threshold` to react to slowness; `vegas` finds the knee where latency starts to
//!   grow by itself. Bound it with `min_limit` / `max_limit`.
//! - `deadline` ([`DeadlineConfig`]): `outgoing` makes the presets tell the server how long
//!   each attempt has left (the request's [`Deadline`](timeout::Deadline) or the attempt
//!   timeout, whichever ends first, minus `margin`), so it can give up when the caller
//!   already has; `incoming` is the server-side layer reading that time from your own callers
//!   ([`StackHandle::incoming_deadline`]).
//! - `hedge` ([`HedgeConfig`]): a second copy of a slow call after `delay` (or after the
//!   observed `percentile` of latencies), drawing on the retry budget. It wraps a whole call,
//!   so it sits outside the stack: `handle.hedge()` gives the layer to put around the client.
//!
//! A bulkhead per key (tenant, host) has its own settings type, [`PartitionedBulkheadConfig`],
//! to embed in your configuration: the key is a function of the request that only code can
//! give, so it is built next to the stack rather than inside it.
//!
//! ```
//! # #[cfg(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry", feature = "serde"))]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), staunch::BoxError> {
//! use staunch::StackConfig;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! let config: StackConfig = toml::from_str(r#"
//!     attempt_timeout = "300ms"
//!     bulkhead = { max_concurrent = 16, adaptive = { algorithm = "vegas", max_limit = 128 } }
//!     hedge = { delay = "50ms" }
//!     deadline = { outgoing = { margin = "20ms" } }
//! "#)?;
//! let inner = service_fn(|req: http::Request<String>| async move {
//!     let told = req.headers().get("x-request-timeout").cloned();
//!     Ok::<_, std::io::Error>(http::Response::new(told))
//! });
//! let (client, handle) = staunch::http::client("search", inner, &config)?;
//! let mut client = handle.hedge().expect("configured").layer(client);
//! let req = http::Request::get("/q").body(String::new())?;
//! let res = client.ready().await?.call(req).await?;
//! assert_eq!(res.body().as_ref().unwrap(), "280000u"); // 300 ms for the attempt, 20 ms kept back
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "circuit-breaker", feature = "bulkhead", feature = "timeout", feature = "retry", feature = "serde")))]
//! # fn main() {}
//! ```
//!
//! # Telemetry: metric names and span fields
//!
//! Every name is spelled once, in `staunch::core::telemetry`; OpenTelemetry's conventions: dotted
//! lower-case names, units as metadata (`describe_*` with a `Unit`, sent when a layer is built), no
//! `_total` in counter names. metrics-exporter-prometheus renders dots as underscores and adds
//! `_total` to counters (`staunch.calls` → `staunch_calls_total`). Every metric is labelled
//! `staunch.dependency` with the layer's name (sagas: `staunch.saga.name`), so label sets stay as
//! bounded as the names you give your layers.
//!
//! | metric | type | unit | labels (beside `staunch.dependency`) | emitted |
//! | --- | --- | --- | --- | --- |
//! | `staunch.calls` | counter | call | `staunch.layer` (`retry`), `staunch.outcome` (`success`: a response the classifier accepted, `failure`: an error or a response it still wanted retried, `rejected`: a staunch rejection) | once per call through a retry policy with `call_metrics(true)` (off by default: it reads the clock twice a call), after its last attempt |
//! | `staunch.call.duration` | histogram | seconds | as `staunch.calls` | as `staunch.calls` |
//! | `staunch.circuit_breaker.state` | gauge | | | on each transition and `emit_metrics` (0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics-only) |
//! | `staunch.circuit_breaker.transitions` | counter | | `staunch.circuit_breaker.state` (the state entered) | on each transition |
//! | `staunch.circuit_breaker.rejections` | counter | call | | on each refused call |
//! | `staunch.circuit_breaker.failure_rate` | gauge | percent | | on each failure and `emit_metrics` |
//! | `staunch.circuit_breaker.slow_call_rate` | gauge | percent | | as `failure_rate` |
//! | `staunch.circuit_breaker.window.calls` | gauge | call | | as `failure_rate` |
//! | `staunch.bulkhead.in_flight` | gauge | call | | `Bulkhead::emit_metrics` |
//! | `staunch.bulkhead.queued` | gauge | call | | `Bulkhead::emit_metrics` |
//! | `staunch.bulkhead.limit` | gauge | call | | `emit_metrics` and each limit change |
//! | `staunch.bulkhead.rejections` | counter | call | `staunch.reason` (`no_permit`, `wait_timed_out`, `queue_full`) | on each refused call |
//! | `staunch.bulkhead.wait.duration` | histogram | seconds | | after each wait for a permit |
//! | `staunch.retry.retries` | counter | attempt | | on each retry |
//! | `staunch.retry.gave_up` | counter | call | `staunch.reason` (`GiveUpReason::as_str`) | when a failing call is not retried again |
//! | `staunch.retry.hedges` | counter | attempt | | on each hedge sent |
//! | `staunch.retry.budget.balance` | gauge | retry | | on each retry and give-up (limited budgets) |
//! | `staunch.timeout.elapsed` | counter | call | | on each call cut at its limit |
//! | `staunch.timeout.refused` | counter | call | | on each call refused for an expired deadline |
//! | `staunch.rate_limit.rejections` | counter | call | | on each refused call |
//! | `staunch.rate_limit.delayed` | counter | call | | on each delayed call |
//! | `staunch.rate_limit.hints` | counter | | | on each slow-down hint from a server |
//! | `staunch.fault.active` | gauge | | | when the injector is switched |
//! | `staunch.fault.injected` | counter | | `staunch.fault.kind` (`latency`, `error`, `abort`) | on each fault |
//! | `staunch.fallback.used` | counter | call | `staunch.reason` (`breaker_open`, `bulkhead_full`, `deadline_expired`, `rate_limited`, `error`, `status`, `response`) | on each call the fallback answers |
//! | `staunch.fallback.failed` | counter | call | `staunch.reason` (`panicked`, `backup_error`) | on each failed fallback |
//! | `staunch.outlier.ejections` | counter | | `staunch.reason` (`consecutive_failures`, `failure_rate`) | on each ejection |
//! | `staunch.outlier.returns` | counter | | | on each return to the pool |
//! | `staunch.outlier.ejected` | gauge | | | on each ejection and return |
//! | `staunch.outlier.endpoints` | gauge | | | as `ejected` |
//! | `staunch.idempotency.leases_lost` | counter | | (none) | when a response is not stored because its lease was lost |
//! | `staunch.saga.sagas` | counter | saga | `staunch.saga.name`, `staunch.saga.status` (`started`, `resumed`, `completed`, `compensated`, `stuck`, `resolved`, `cancelled`, `paused`, `quarantined`, `lease_lost`) | on each lifecycle event |
//! | `staunch.saga.purged` | counter | saga | (none) | on each purge |
//! | `staunch.saga.in_flight` | gauge | saga | `staunch.saga.name` | as sagas start and end |
//! | `staunch.saga.step.duration` | histogram | seconds | `staunch.saga.name`, `staunch.saga.step`, `staunch.outcome` | after each step attempt |
//! | `staunch.saga.step.failures` | counter | attempt | `staunch.saga.name`, `staunch.saga.step` | after each failed step attempt |
//!
//! Spans are opt-in per layer (`RetryPolicyBuilder::spans(true)`): off, a call creates no span and
//! costs what it did before. On, the layer wraps each call in an `INFO` span of its own whose fields
//! are declared up front and recorded as the call proceeds, so `tracing-opentelemetry` exports them
//! as span attributes with no code of yours.
//!
//! | span | field | value |
//! | --- | --- | --- |
//! | `staunch.retry` | `staunch.dependency` | the policy's name |
//! | | `http.request.resend_count` | attempts sent again after the first (OpenTelemetry's HTTP name) |
//! | | `staunch.retry.backoff_ms` | the last wait before a retry, in milliseconds |
//! | | `error.type` | when the call failed: `timeout`, a rejection (`breaker_open`, `bulkhead_full`, `deadline_expired`, `rate_limited`) or `_OTHER` |
//!
//! The names of the breaker's, bulkhead's and timeout's spans and fields are reserved in
//! `staunch::core::telemetry::span` (`staunch.circuit_breaker.state`, `staunch.circuit_breaker.refused`,
//! `staunch.bulkhead.wait_ms`, `staunch.bulkhead.refused`, `staunch.timeout.limit_ms`,
//! `staunch.timeout.elapsed`); those layers do not record spans yet.
//!
//!
//! # Features
//!
//! Every feature compiles alone (`cargo add staunch --features X`), and each has an example
//! below that needs nothing else:
//!
//! - `circuit-breaker`, `bulkhead`, `timeout`, `retry`, `saga`: the member crates. The four
//!   middleware features together enable the presets, [`StackConfig::build`] and the
//!   [`Registry`].
//! - `serde`: (de)serializable settings ([`StackConfig`], [`RegistryConfig`]) and
//!   serializable status ([`StackStatus`] and the engines' snapshots).
//! - `reqwest`: classify `reqwest::Response` by status, replay `reqwest::Request`.
//! - `tonic`: classify gRPC calls by status code; [`grpc::channel`], gRPC status codes for
//!   staunch's errors ([`grpc::status_of`]).
//! - `metrics`: emit through the `metrics` crate from every enabled part.
//! - `saga-http`: the saga engine's operator endpoint (`saga::http::router`), an axum
//!   `Router` that lists, inspects, cancels, pauses, resumes, retries, skips and resolves
//!   sagas as JSON, each action recorded in the saga's log with who acted.
//! - `postgres`: the saga engine's PostgreSQL store (and `saga`); with `idempotency`, the
//!   idempotency layer's PostgreSQL store too.
//! - `idempotency`: the server-side `Idempotency-Key` layer ([`idempotency`]) with its
//!   memory and SQLite stores.
//! - `rate-limit`: the client-side rate limiter ([`rate_limit`]), GCRA with a burst, keyed,
//!   slowed down by `429` and `RateLimit` headers.
//! - `fault`: fault injection ([`fault`]): seeded latency, errors (a chosen error, or a chosen
//!   HTTP response) and aborts at configured rates, switchable at run time, with the presets
//!   `none`, `slow`, `error`, `intermittent`.
//! - `fallback`: the fallback layer ([`fallback`]): rejections, chosen errors and chosen
//!   statuses answered by a value, a function or a backup service, marked as fallbacks.
//! - `outlier`: outlier ejection over several replicas ([`outlier`]): a power-of-two-choices
//!   balancer whose detector ejects an endpoint after failures in a row or a failure rate,
//!   for a growing time, capped by a share of endpoints, with a per-endpoint status. It goes
//!   under the retry and over each replica's own layers, so a retry lands on another replica.
//! - `full`: everything.
//!
//! `rate-limit` alone:
//!
//! ```
//! # #[cfg(feature = "rate-limit")]
//! # fn main() {
//! use std::time::Duration;
//! use staunch::rate_limit::RateLimiter;
//!
//! let limiter = RateLimiter::builder("api").rate(2, Duration::from_secs(1)).build().unwrap();
//! assert!(limiter.try_acquire().is_ok());
//! assert!(limiter.try_acquire().is_ok());
//! // The next permit comes half a second after the first.
//! assert!(limiter.try_acquire().unwrap_err().retry_after() <= Duration::from_millis(500));
//! # }
//! # #[cfg(not(feature = "rate-limit"))] fn main() {}
//! ```
//!
//! `fault` alone:
//!
//! ```
//! # #[cfg(feature = "fault")]
//! # fn main() {
//! use staunch::fault::{Fault, FaultConfig};
//!
//! let faults = FaultConfig::preset("error").unwrap().with_seed(7).build("payment").unwrap();
//! let failed = (0..1000).filter(|_| matches!(faults.decide().fault(), Some(Fault::Error(_)))).count();
//! assert!((650..=750).contains(&failed)); // 70 % answer 500
//! faults.disable();
//! assert!(faults.decide().is_none());
//! # }
//! # #[cfg(not(feature = "fault"))] fn main() {}
//! ```
//!
//! `fallback` alone:
//!
//! ```
//! # #[cfg(feature = "fallback")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use staunch::fallback::{Answer, Answered, FallbackPolicy, Reason};
//!
//! let policy = FallbackPolicy::builder("quotes").on_any_error().build().unwrap();
//! let answer = Answer::value(0u32);
//! let failed = async { Err::<u32, _>(std::io::Error::other("reset")) };
//! let answered = policy.call(failed, &answer).await.unwrap();
//! assert_eq!(answered, Answered::Fallback { response: 0, reason: Reason::Error });
//! # }
//! # #[cfg(not(feature = "fallback"))] fn main() {}
//! ```
//!
//! `idempotency` alone:
//!
//! ```
//! # #[cfg(feature = "idempotency")]
//! # fn main() {
//! use staunch::idempotency::{Idempotency, IdempotencyLayer, MemoryStore, parse_key};
//!
//! let settings = Idempotency::builder().require_key(true).build().unwrap();
//! let _layer = IdempotencyLayer::new(MemoryStore::new(), settings);
//! // The header's value is a structured-field string; a bare token is accepted too.
//! assert_eq!(parse_key(br#""order-7""#, 255).unwrap(), "order-7");
//! assert_eq!(parse_key(b"order-7", 255).unwrap(), "order-7");
//! # }
//! # #[cfg(not(feature = "idempotency"))] fn main() {}
//! ```
//!
//! `circuit-breaker` alone:
//!
//! ```
//! # #[cfg(feature = "circuit-breaker")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use staunch::circuit_breaker::{CircuitBreaker, State};
//!
//! let breaker = CircuitBreaker::builder("payment").consecutive_failures(2).build().unwrap();
//! for _ in 0..2 {
//!     let _ = breaker.call(async { Err::<(), _>(std::io::Error::other("down")) }).await;
//! }
//! assert_eq!(breaker.state(), State::Open);
//! # }
//! # #[cfg(not(feature = "circuit-breaker"))] fn main() {}
//! ```
//!
//! `bulkhead` alone:
//!
//! ```
//! # #[cfg(feature = "bulkhead")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use staunch::bulkhead::Bulkhead;
//!
//! let bulkhead = Bulkhead::builder("inventory").max_concurrent(1).build().unwrap();
//! let answer = bulkhead.run(async { 42 }).await.unwrap();
//! assert_eq!((answer, bulkhead.in_flight()), (42, 0));
//! # }
//! # #[cfg(not(feature = "bulkhead"))] fn main() {}
//! ```
//!
//! `timeout` alone:
//!
//! ```
//! # #[cfg(feature = "timeout")]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use staunch::timeout::TimeLimit;
//!
//! let limit = TimeLimit::new(Duration::from_millis(100)).unwrap();
//! let err = limit.run(std::future::pending::<()>()).await.unwrap_err();
//! assert_eq!(err.limit(), Duration::from_millis(100));
//! # }
//! # #[cfg(not(feature = "timeout"))] fn main() {}
//! ```
//!
//! `retry` alone:
//!
//! ```
//! # #[cfg(feature = "retry")]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use staunch::retry::RetryPolicy;
//!
//! let calls = AtomicU32::new(0);
//! let answer = RetryPolicy::builder().max_attempts(3).build().unwrap()
//!     .retry(|| async {
//!         match calls.fetch_add(1, Ordering::Relaxed) {
//!             0 => Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
//!             _ => Ok(7u32),
//!         }
//!     })
//!     .await
//!     .unwrap();
//! assert_eq!(answer, 7);
//! # }
//! # #[cfg(not(feature = "retry"))] fn main() {}
//! ```
//!
//! `saga` alone:
//!
//! ```
//! # #[cfg(feature = "saga")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use staunch::saga::{MemoryStore, SagaDefinition, SagaEngine, SagaOutcome, Step};
//!
//! let count = SagaDefinition::<u64>::builder("count", 1)
//!     .step(Step::new("add", |n: u64, _ctx| async move { Ok(n + 1) }))
//!     .build()
//!     .unwrap();
//! let engine = SagaEngine::new(MemoryStore::new());
//! let handle = engine.start(&count, "count-1", 41).await.unwrap();
//! assert!(matches!(handle.outcome().await.unwrap(), SagaOutcome::Completed(42)));
//! # }
//! # #[cfg(not(feature = "saga"))] fn main() {}
//! ```
//!
//! `serde`, `reqwest`, `tonic` and `metrics` add to the parts above; alone, they give the
//! shared vocabulary its adapters:
//!
//! ```
//! # #[cfg(feature = "tonic")] {
//! use staunch::{Classify, GrpcStatus, Outcome};
//!
//! let call: Result<tonic::Response<()>, tonic::Status> = Err(tonic::Status::unavailable("down"));
//! assert_eq!(GrpcStatus::new().classify(&call), Outcome::Failure);
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
mod config;
mod error;
mod ext;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry",
    feature = "tonic"
))]
pub mod grpc;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
pub mod http;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
mod registry;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
mod stack;

pub use staunch_core as core;

#[cfg(feature = "bulkhead")]
pub use staunch_bulkhead as bulkhead;
#[cfg(feature = "circuit-breaker")]
pub use staunch_circuit_breaker as circuit_breaker;
#[cfg(feature = "fallback")]
pub use staunch_fallback as fallback;
#[cfg(feature = "fault")]
pub use staunch_fault as fault;
#[cfg(feature = "idempotency")]
pub use staunch_idempotency as idempotency;
#[cfg(feature = "outlier")]
pub use staunch_outlier as outlier;
#[cfg(feature = "rate-limit")]
pub use staunch_rate_limit as rate_limit;
#[cfg(feature = "retry")]
pub use staunch_retry as retry;
#[cfg(feature = "saga")]
pub use staunch_saga as saga;
#[cfg(feature = "timeout")]
pub use staunch_timeout as timeout;

#[cfg(feature = "tonic")]
pub use staunch_core::GrpcStatus;
pub use staunch_core::{
    AnyError, Backoff, BackoffSchedule, BreakerOpen, BulkheadFull, Classify, ConfigError,
    DeadlineExpired, HttpStatus, Jitter, Outcome, RateLimited, Rejection, classify_fn,
    rejection_of,
};

#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
pub use crate::config::{DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT, RegistryConfig, StackConfig};
#[cfg(feature = "serde")]
pub mod settings;
pub use crate::error::{BoxError, Error, TypedErrors, TypedErrorsFuture, TypedErrorsLayer};
pub use crate::ext::ServiceBuilderExt;
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
pub use crate::registry::{Registry, Reloading};
#[cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
pub use crate::stack::{Stack, StackHandle, StackStatus};
#[cfg(feature = "bulkhead")]
pub use staunch_bulkhead::{
    AdaptiveConfig, AimdConfig, BulkheadConfig, PartitionedBulkheadConfig, VegasConfig,
};
#[cfg(feature = "circuit-breaker")]
pub use staunch_circuit_breaker::{BreakerConfig, WindowConfig};
pub use staunch_core::IgnoreRejections;
pub use staunch_core::{BackoffConfig, BackoffStrategy, JitterConfig};
#[cfg(feature = "retry")]
pub use staunch_retry::{BudgetConfig, HedgeConfig, RetryConfig};
#[cfg(feature = "timeout")]
pub use staunch_timeout::{
    DeadlineConfig, HeaderFormat as HeaderFormatConfig, IncomingDeadlineConfig,
    OutgoingDeadlineConfig,
};

#[cfg(all(
    test,
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry"
))]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    type Inner =
        tower::util::BoxCloneSyncService<::http::Request<String>, ::http::Response<()>, BoxError>;

    #[test]
    fn public_types_are_send_sync() {
        assert_send_sync::<Error<std::io::Error>>();
        assert_send_sync::<TypedErrorsLayer<std::io::Error>>();
        assert_send_sync::<IgnoreRejections<HttpStatus>>();
        assert_send_sync::<circuit_breaker::CircuitBreakerLayer<HttpStatus>>();
        assert_send_sync::<circuit_breaker::CircuitBreakerService<Inner, HttpStatus>>();
        assert_send_sync::<StackConfig>();
        assert_send_sync::<RegistryConfig>();
        assert_send_sync::<StackHandle>();
        assert_send_sync::<StackStatus>();
        assert_send_sync::<Registry>();
        assert_send_sync::<Stack<Inner, HttpStatus, std::io::Error>>();
        assert_send_sync::<Reloading<Inner, HttpStatus, std::io::Error>>();
        #[cfg(feature = "reqwest")]
        assert_send_sync::<http::Reqwest<String>>();
    }
}
