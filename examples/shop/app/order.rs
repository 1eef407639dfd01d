//! The order service: places orders through a staunch saga, calling inventory and payment
//! over HTTP (`reqwest`) and shipping over gRPC (`tonic`), every client wrapped in staunch
//! layers.
//!
//! # The client stack, outermost first
//!
//! 1. **Retry** (with its budget): retries what a retry can fix (connection errors, timeouts,
//!    502/503/504/429; POSTs only because they carry an `Idempotency-Key`), never a rejection
//!    from the layers below. The budget caps retries at a share of the traffic, so an outage
//!    cannot multiply the load on the dependency. Outermost, so that every attempt goes
//!    through the breaker and the bulkhead again.
//! 2. **Per-attempt timeout** (the retry policy's `attempt_timeout`): bounds each attempt, so
//!    one hung attempt does not eat the whole budget of time and a timed-out attempt can be
//!    retried.
//! 3. **Circuit breaker**: sees every attempt's outcome. Inside the retry layer, so a retry of
//!    a dead dependency is refused at once (and the retry layer does not retry a refusal);
//!    local rejections by the bulkhead below are ignored (they say nothing about the
//!    dependency's health). The payment breaker also counts slow answers (slower than
//!    `Tuning::slow_call_duration`, which includes the short wait for a bulkhead permit): a
//!    payment that answers, but too slowly, trips it too.
//! 4. **Bulkhead**, innermost: caps the calls in flight to this dependency, so a slow one
//!    holds only its own compartment. Innermost, so that only calls that are really about to
//!    be sent hold a permit (a call refused by the breaker never takes one). The permit is
//!    taken inside the call ([`Bulkhead::run`]) rather than with the bulkhead's tower layer:
//!    a tower layer reserves its permit in `poll_ready`, which the breaker's `poll_ready`
//!    forwards before the breaker decides, so a call the open breaker then refuses would
//!    still have waited for a full bulkhead and been counted among its rejections.
//!
//! # Payment replicas
//!
//! Payment runs as two replicas. Below the bulkhead, staunch-outlier's [`Balancer`] sends
//! each attempt to the less loaded of the replicas and ejects one that answers 5xx or fails
//! to connect `consecutive_failures` times in a row (3 here) for `base_ejection_time` (the
//! breaker's open duration) times the times it was ejected, never both at once. A retry goes
//! through the balancer again, so when one replica fails, its calls are retried on the
//! other, its share of the traffic drops to almost nothing, and the payment breaker, which
//! judges the dependency as a whole, stays closed. When both fail, one is ejected, the other
//! carries the calls and fails them, and the breaker opens as it does with one replica.
//!
//! # Payment pending
//!
//! With [`OrderService::accept_pending`] on, a charge that payment's stack refuses at once
//! (its breaker open, its bulkhead full) is not a failed order: staunch-fallback's policy
//! answers it, the order is accepted as `payment_pending`, and a second saga
//! (`order-charge`, id `{order}-charge`) takes it over: it holds the reservation, charges
//! with patient retries once payment answers again, and ships; if the charge is refused for
//! good it releases the stock. Started from the charge step with an id derived from the
//! order, so a step run again after a crash finds the same saga.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use staunch::bulkhead::Bulkhead;
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Event};
use staunch::core::Rejection;
use staunch::fallback::{Answer, Answered, FallbackPolicy};
use staunch::idempotency::{IDEMPOTENCY_KEY, IdempotencyKey, IdempotencyKeyLayer, REPLAYED};
use staunch::outlier::Balancer;
use staunch::retry::{RetryBudget, RetryLayer, RetryPolicy};
use staunch::saga::{
    ListFilter, Phase, SagaDefinition, SagaEngine, SagaOutcome, SqliteStore, Step, StepContext,
    StepError, StepErrorKind, StepRetry, idempotency_key,
};
use staunch::{Backoff, ConfigError, GrpcStatus, HttpStatus, Jitter, StackStatus, rejection_of};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::shipping::{
    CancelShipment, Channel, ChannelError, CreateShipment, REPLAYED as GRPC_REPLAYED,
    ShippingClient,
};

/// Any error, boxed: what every staunch layer returns.
pub(crate) use staunch::BoxError;

/// An HTTP client wrapped in the staunch stack (and what the stack wraps: a plain client, or
/// the balancer over payment's replicas).
pub(crate) type HttpClient = BoxCloneSyncService<reqwest::Request, reqwest::Response, BoxError>;

/// One replica of a dependency: requests sent to its address, counted.
type Replica = BoxCloneSyncService<reqwest::Request, reqwest::Response, reqwest::Error>;

/// Payment's replicas behind outlier ejection, keyed by address.
type Replicas = Balancer<String, Replica, HttpStatus>;

/// A client whose requests (whatever host their URL names) go to `addr`, counting them in
/// `sent`.
fn replica(client: reqwest::Client, addr: SocketAddr, sent: Arc<AtomicU64>) -> Replica {
    BoxCloneSyncService::new(tower::service_fn(move |mut req: reqwest::Request| {
        let url = req.url_mut();
        // Both set an `http://` URL's host; they can fail only for URLs without one.
        let _ = url.set_ip_host(addr.ip());
        let _ = url.set_port(Some(addr.port()));
        sent.fetch_add(1, Ordering::Relaxed);
        client.execute(req)
    }))
}

/// A plain client, as the innermost service of a stack.
fn direct(client: reqwest::Client) -> HttpClient {
    BoxCloneSyncService::new(tower::service_fn(move |req: reqwest::Request| {
        let call = client.execute(req);
        async move { call.await.map_err(BoxError::from) }
    }))
}

/// One payment replica, as the status page and the story see it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReplicaStatus {
    /// Its address.
    pub(crate) addr: String,
    /// `active` or `ejected`.
    pub(crate) state: &'static str,
    /// Times ejected so far.
    pub(crate) times_ejected: u32,
    /// Attempts sent to it so far.
    pub(crate) sent: u64,
}

/// Marks an order refused by an open breaker (in the saga's error message).
pub(crate) const FAILED_FAST: &str = "[breaker open]";
/// Marks an order refused by a full bulkhead.
pub(crate) const REJECTED: &str = "[bulkhead full]";

/// The knobs of the client stacks; the story shortens them for tests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// Per-attempt timeout of every client.
    pub(crate) attempt_timeout: Duration,
    /// How long a tripped breaker stays open before probing.
    pub(crate) open_duration: Duration,
    /// A payment charge slower than this counts as slow for the payment breaker (well above
    /// a healthy charge, below the delay of a payment in trouble).
    pub(crate) slow_call_duration: Duration,
    /// Concurrent payment calls.
    pub(crate) payment_concurrency: usize,
    /// How long a payment call may wait for a permit.
    pub(crate) payment_wait: Duration,
}

/// One dependency's guards: the handles the status page and the story read.
#[derive(Debug, Clone)]
pub(crate) struct Guards {
    /// The dependency.
    pub(crate) name: &'static str,
    /// Its breaker.
    pub(crate) breaker: CircuitBreaker,
    /// Its bulkhead.
    pub(crate) bulkhead: Bulkhead,
    /// Its retry policy (and budget).
    pub(crate) retry: RetryPolicy,
}

impl Guards {
    fn new(
        name: &'static str,
        tuning: &Tuning,
        concurrency: usize,
        wait: Duration,
        slow_call: Option<Duration>,
    ) -> Result<Self, ConfigError> {
        let mut breaker = CircuitBreaker::builder(name)
            .failure_rate_threshold(50.0)
            .count_window(20)
            .minimum_calls(10)
            .open_duration(tuning.open_duration)
            // More probes than the payment bulkhead has permits: a half-open breaker in front
            // of a slow dependency fills the bulkhead, which rejects the excess (a rejected
            // probe tells nothing and hands its slot to the next call).
            .permitted_calls_in_half_open(8)
            .event_capacity(4096);
        if let Some(threshold) = slow_call {
            // Slow answers are a symptom too: half the calls in the window slower than the
            // threshold trip the breaker, and slow probes re-open it.
            breaker = breaker
                .slow_call_duration(threshold)
                .slow_call_rate_threshold(50.0);
        }
        let breaker = breaker.build()?;
        let bulkhead = Bulkhead::builder(name)
            .max_concurrent(concurrency)
            .max_wait(wait)
            .max_queued(64)
            .build()?;
        let retry = RetryPolicy::builder()
            .name(name)
            .max_attempts(3)
            .backoff(
                Backoff::exponential(Duration::from_millis(20))
                    .jitter(Jitter::Full)
                    .max_delay(Duration::from_millis(200))
                    .build()?,
            )
            .attempt_timeout(tuning.attempt_timeout)
            .max_total_time(tuning.attempt_timeout * 3)
            // The default budget, spelled out: retries add at most 20% to the calls, plus 10
            // per second, over a 10 s window.
            .budget(
                RetryBudget::builder()
                    .ratio(0.2)
                    .min_per_sec(10)
                    .ttl(Duration::from_secs(10))
                    .build()?,
            )
            .build()?;
        Ok(Self {
            name,
            breaker,
            bulkhead,
            retry,
        })
    }

    /// Wraps `send` (a plain client, or the balancer over replicas) in the stack (see the
    /// module docs for the order).
    fn http(&self, send: HttpClient) -> HttpClient {
        let bulkhead = self.bulkhead.clone();
        let service = ServiceBuilder::new()
            .layer(RetryLayer::new(self.retry.clone()))
            // The breaker ignores the bulkhead's rejections (`BulkheadFull` in the error).
            .layer(
                CircuitBreakerLayer::new(self.breaker.clone()).with_classifier(HttpStatus::new()),
            )
            .service_fn(move |req: reqwest::Request| {
                // The permit is taken in the call, once the breaker has let it through (see
                // the module docs).
                let call = bulkhead.run(send.clone().oneshot(req));
                async move {
                    match call.await {
                        Ok(answer) => answer,
                        Err(full) => Err(BoxError::from(full)),
                    }
                }
            });
        BoxCloneSyncService::new(service)
    }

    /// Wraps a tonic channel in the breaker and the bulkhead; retries and per-attempt
    /// timeouts are applied around each call with [`RetryPolicy::retry`] (a tonic request
    /// body cannot be replayed by a layer).
    fn grpc(&self, channel: tonic::transport::Channel) -> Channel {
        let bulkhead = self.bulkhead.clone();
        let service = ServiceBuilder::new()
            .map_err(ChannelError)
            // Sends the `IdempotencyKey` each call carries in its extensions as the
            // `idempotency-key` metadata.
            .layer(IdempotencyKeyLayer)
            .layer(
                CircuitBreakerLayer::new(self.breaker.clone()).with_classifier(GrpcStatus::new()),
            )
            .service_fn(move |req: http::Request<tonic::body::Body>| {
                let mut channel = channel.clone();
                let call = bulkhead.run(async move {
                    channel.ready().await?;
                    channel.call(req).await
                });
                async move {
                    match call.await {
                        Ok(answer) => answer.map_err(BoxError::from),
                        Err(full) => Err(BoxError::from(full)),
                    }
                }
            });
        BoxCloneSyncService::new(service)
    }

    /// The JSON the status page shows: the stack's status as staunch serializes it.
    pub(crate) fn status(&self) -> Value {
        let status = StackStatus::of(self.name, &self.breaker, &self.bulkhead, &self.retry);
        serde_json::to_value(status).unwrap_or(Value::Null)
    }
}

/// A breaker state change, as the status page and the story see it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Transition {
    /// Milliseconds since the order service started.
    pub(crate) at_ms: u64,
    /// The breaker.
    pub(crate) breaker: String,
    /// From state.
    pub(crate) from: &'static str,
    /// To state.
    pub(crate) to: &'static str,
    /// Why.
    pub(crate) reason: &'static str,
}

/// One step call of a saga, timed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepTrace {
    step: String,
    phase: &'static str,
    start_ms: u64,
    duration_ms: f64,
    ok: bool,
    error: Option<String>,
}

/// A saga, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SagaTrace {
    saga_id: String,
    started_ms: u64,
    outcome: Option<String>,
    steps: Vec<StepTrace>,
}

/// The state an order saga carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OrderState {
    order_id: String,
    sku: String,
    qty: u64,
    amount_cents: u64,
    reservation: Option<String>,
    charge: Option<String>,
    shipment: Option<String>,
    /// Accepted as payment pending: the id of the saga that charges it later.
    #[serde(default)]
    pending: Option<String>,
}

/// Everything the saga steps use.
#[derive(Debug)]
struct Deps {
    epoch: Instant,
    inventory_url: String,
    payment_url: String,
    inventory: HttpClient,
    payment: HttpClient,
    /// The balancer under `payment` and `refunds`, and the attempts sent to each replica.
    replicas: Replicas,
    sent: Vec<(String, Arc<AtomicU64>)>,
    refunds: HttpClient,
    shipping: ShippingClient,
    guards: Vec<Guards>,
    traces: Mutex<Traces>,
    repeats: Repeats,
    /// Answers a charge payment's stack refused at once (see "Payment pending").
    pending: FallbackPolicy<Option<reqwest::Response>>,
    /// Whether such a charge makes the order payment pending (else it fails).
    accept_pending: AtomicBool,
    /// The engine and the later-charge saga, for the charge step to start it.
    engine: OnceLock<SagaEngine>,
    later: OnceLock<SagaDefinition<OrderState>>,
}

/// Repeated deliveries of a key that a participant answered without running it again.
#[derive(Debug, Default)]
struct Repeats {
    /// Answered with the reply recorded for the key (`idempotent-replayed: true`).
    replayed: AtomicU64,
    /// Refused while the first delivery of the key still ran, or its killed process's lease
    /// had not ended (409 from the layer, `ABORTED` from shipping).
    in_flight: AtomicU64,
}

#[derive(Debug, Default)]
struct Traces {
    by_id: HashMap<String, SagaTrace>,
    recent: VecDeque<String>,
    /// Latency of every successful inventory reservation, drained by the story per phase.
    reserve_latencies: Vec<Duration>,
    /// Every step call (step, latency), drained by the dashboard's sampler; bounded.
    calls: Vec<(String, Duration)>,
}

/// At most this many step calls wait for the dashboard's sampler (which drains them every
/// second); beyond, the oldest are dropped.
const CALLS: usize = 16_384;

const RECENT: usize = 40;

impl Deps {
    fn ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn traces(&self) -> MutexGuard<'_, Traces> {
        self.traces.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self, saga_id: &str) {
        let mut t = self.traces();
        t.by_id.insert(
            saga_id.to_owned(),
            SagaTrace {
                saga_id: saga_id.to_owned(),
                started_ms: self.ms(),
                outcome: None,
                steps: Vec::new(),
            },
        );
        t.recent.push_back(saga_id.to_owned());
        while t.recent.len() > RECENT {
            if let Some(old) = t.recent.pop_front() {
                t.by_id.remove(&old);
            }
        }
    }

    /// Runs one step call and records it.
    async fn traced<T>(
        &self,
        ctx: &StepContext,
        call: impl Future<Output = Result<T, StepError>>,
    ) -> Result<T, StepError> {
        let start = Instant::now();
        let start_ms = self.ms();
        let result = call.await;
        let took = start.elapsed();
        let mut t = self.traces();
        if ctx.step() == "reserve" && ctx.phase() == Phase::Action && result.is_ok() {
            t.reserve_latencies.push(took);
        }
        if t.calls.len() >= CALLS {
            t.calls.drain(..CALLS / 2);
        }
        t.calls.push((ctx.step().to_owned(), took));
        if let Some(trace) = t.by_id.get_mut(ctx.saga_id()) {
            trace.steps.push(StepTrace {
                step: ctx.step().to_owned(),
                phase: ctx.phase().as_str(),
                start_ms,
                duration_ms: took.as_secs_f64() * 1000.0,
                ok: result.is_ok(),
                error: result.as_ref().err().map(ToString::to_string),
            });
        }
        result
    }

    /// POSTs JSON through a guarded client with the step's idempotency key; a 2xx answer's
    /// body, or the step error.
    async fn post(
        &self,
        client: &HttpClient,
        url: String,
        key: &IdempotencyKey,
        body: &Value,
    ) -> Result<Value, StepError> {
        let response = client
            .clone()
            .oneshot(json_request(&url, key, body)?)
            .await
            .map_err(|err| call_error(&url, &err))?;
        self.read(&url, response).await
    }

    /// A charge through payment's stack: its body, or `None` when the stack refused the call
    /// at once (breaker open, bulkhead full) and the pending policy answered it.
    async fn charge_or_pending(
        &self,
        url: String,
        key: &IdempotencyKey,
        body: &Value,
    ) -> Result<Option<Value>, StepError> {
        let call = self.payment.clone().oneshot(json_request(&url, key, body)?);
        let answer = Answer::function(|_, _| None);
        match self
            .pending
            .call(async move { call.await.map(Some) }, &answer)
            .await
        {
            Ok(Answered::Primary(Some(response))) => self.read(&url, response).await.map(Some),
            Ok(_) => Ok(None),
            Err(err) => Err(call_error(&url, &err)),
        }
    }

    /// A participant's answer: a 2xx answer's body, or the step error.
    async fn read(&self, url: &str, response: reqwest::Response) -> Result<Value, StepError> {
        let status = response.status();
        if response.headers().contains_key(REPLAYED) {
            self.repeats.replayed.fetch_add(1, Ordering::Relaxed);
        }
        // The participants answer JSON; the idempotency layer in front of them answers its
        // refusals in plain text.
        let from_layer = !response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else if status == reqwest::StatusCode::CONFLICT && from_layer {
            // Another delivery of this key still holds it (running, or left by a process
            // that was killed, until its lease ends): it may or may not take effect.
            self.repeats.in_flight.fetch_add(1, Ordering::Relaxed);
            Err(StepError::new(
                StepErrorKind::Timeout,
                format!("in doubt: {url}: {}", String::from_utf8_lossy(&bytes)),
            ))
        } else if status.is_server_error() {
            // The participants' contract: an error answer changed nothing. A server error
            // may pass (the client's retries gave up on it).
            Err(StepError::retryable(format!(
                "{url} answered {status}: {}",
                body["error"]
            )))
        } else {
            Err(StepError::fail(format!(
                "{url} answered {status}: {}",
                body["error"]
            )))
        }
    }
}

/// A JSON POST to `url` carrying the step's idempotency key.
fn json_request(
    url: &str,
    key: &IdempotencyKey,
    body: &Value,
) -> Result<reqwest::Request, StepError> {
    let mut request = reqwest::Request::new(
        reqwest::Method::POST,
        url.parse()
            .map_err(|e| StepError::fail(format!("bad url {url}: {e}")))?,
    );
    let headers = request.headers_mut();
    // A reqwest request has no extensions for `IdempotencyKeyLayer` to read: the key goes in
    // as the header directly (an sf-string, as the layer would send it).
    headers.insert(IDEMPOTENCY_KEY, key.header_value());
    headers.insert(
        "content-type",
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    *request.body_mut() = Some(body.to_string().into());
    Ok(request)
}

/// The step call's idempotency key, as staunch-idempotency's client side sends it.
fn step_key(ctx: &StepContext) -> Result<IdempotencyKey, StepError> {
    IdempotencyKey::new(ctx.idempotency_key())
        .map_err(|e| StepError::fail(format!("idempotency key {:?}: {e}", ctx.idempotency_key())))
}

impl Deps {
    /// Counts a shipping reply replayed from its record.
    fn count_grpc_replay(&self, metadata: &tonic::metadata::MetadataMap) {
        if metadata.contains_key(GRPC_REPLAYED) {
            self.repeats.replayed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a shipping call refused because its key was still in flight.
    fn count_grpc_refusal(&self, err: &(dyn std::error::Error + 'static)) {
        let mut source = Some(err);
        while let Some(e) = source {
            if let Some(status) = e.downcast_ref::<tonic::Status>() {
                if status.code() == tonic::Code::Aborted {
                    self.repeats.in_flight.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            source = e.source();
        }
    }
}

/// The step error for a call that got no answer.
fn call_error(what: &str, err: &BoxError) -> StepError {
    match rejection_of(&**err) {
        Some(Rejection::BreakerOpen(_)) => StepError::fail(format!("{FAILED_FAST} {what}: {err}")),
        Some(Rejection::BulkheadFull(_)) => StepError::fail(format!("{REJECTED} {what}: {err}")),
        // A timeout or a lost connection: the call may or may not have landed. The saga
        // compensates an in-doubt step too, by its idempotency key.
        _ => StepError::new(StepErrorKind::Timeout, format!("in doubt: {what}: {err}")),
    }
}

/// The retry policies of the steps.
struct Retries {
    /// The clients retry already: the saga runs each action once and compensates at once.
    once: StepRetry,
    /// Compensations must get through: patient retries.
    patient: StepRetry,
    /// A later charge waits for payment to answer again: about a minute of attempts.
    later: StepRetry,
}

impl Retries {
    fn new() -> Result<Self, ConfigError> {
        let backoff = |base: u64, max: u64| {
            Backoff::exponential(Duration::from_millis(base))
                .jitter(Jitter::Full)
                .max_delay(Duration::from_millis(max))
                .build()
        };
        Ok(Self {
            once: StepRetry::new(1),
            patient: StepRetry::new(20).backoff(backoff(50, 1000)?),
            later: StepRetry::new(60).backoff(backoff(100, 2000)?),
        })
    }
}

/// Reserves stock; released by the compensation.
fn reserve_step(deps: &Arc<Deps>, r: &Retries) -> Step<OrderState> {
    let d = Arc::clone(deps);
    let reserve = Step::new("reserve", move |mut o: OrderState, ctx: StepContext| {
        let d = Arc::clone(&d);
        async move {
            let key = step_key(&ctx)?;
            let body = json!({ "order_id": o.order_id, "sku": o.sku, "qty": o.qty });
            let url = format!("{}/reservations", d.inventory_url);
            d.traced(&ctx, d.post(&d.inventory, url, &key, &body))
                .await?;
            o.reservation = Some(key.as_str().to_owned());
            Ok(o)
        }
    });
    let d = Arc::clone(deps);
    reserve
        .compensate(move |mut o: OrderState, ctx: StepContext| {
            let d = Arc::clone(&d);
            async move {
                // The action's key, also when the action was in doubt and `o` never got it.
                let action = idempotency_key(ctx.saga_id(), ctx.step(), Phase::Action);
                d.release(&ctx, action).await?;
                o.reservation = None;
                Ok(o)
            }
        })
        .retry(r.once)
        .compensation_retry(r.patient)
}

/// Charges the order. In the order saga (`later` false) a charge payment's stack refuses at
/// once may make the order payment pending (see the module docs); in the later-charge saga
/// every refusal is retried until payment answers.
fn charge_step(deps: &Arc<Deps>, r: &Retries, later: bool) -> Step<OrderState> {
    let d = Arc::clone(deps);
    let charge = Step::new("charge", move |mut o: OrderState, ctx: StepContext| {
        let d = Arc::clone(&d);
        async move {
            let key = step_key(&ctx)?;
            let body = json!({ "order_id": o.order_id, "amount_cents": o.amount_cents });
            let url = format!("{}/charges", d.payment_url);
            if later {
                // Refused at once or in doubt: wait for payment (the saga's backoff), again.
                d.traced(&ctx, d.post(&d.payment, url, &key, &body))
                    .await
                    .map_err(|e| {
                        if refused(&e) {
                            StepError::retryable(e.message())
                        } else {
                            e
                        }
                    })?;
            } else if d.accept_pending.load(Ordering::Relaxed) {
                let charged = d.traced(&ctx, d.charge_or_pending(url, &key, &body));
                if charged.await?.is_none() {
                    o.pending = Some(d.charge_later(&o).await?);
                    return Ok(o);
                }
            } else {
                d.traced(&ctx, d.post(&d.payment, url, &key, &body)).await?;
            }
            o.charge = Some(key.as_str().to_owned());
            Ok(o)
        }
    });
    let d = Arc::clone(deps);
    let retry = if later { r.later } else { r.once };
    charge
        .compensate(move |mut o: OrderState, ctx: StepContext| {
            let d = Arc::clone(&d);
            async move {
                let action = idempotency_key(ctx.saga_id(), ctx.step(), Phase::Action);
                let body = json!({ "charge_key": action });
                let url = format!("{}/refunds", d.payment_url);
                let key = step_key(&ctx)?;
                d.traced(&ctx, d.post(&d.refunds, url, &key, &body))
                    .await
                    .map_err(|e| StepError::retryable(e.message()))?;
                o.charge = None;
                Ok(o)
            }
        })
        .retry(retry)
        .compensation_retry(r.patient)
}

/// Whether a step error is a refusal by a guard (breaker open, bulkhead full).
fn refused(e: &StepError) -> bool {
    e.message().contains(FAILED_FAST) || e.message().contains(REJECTED)
}

/// Ships the order; cancelled by the compensation. An order left payment pending is shipped
/// by the later-charge saga instead.
fn ship_step(deps: &Arc<Deps>, r: &Retries) -> Step<OrderState> {
    let d = Arc::clone(deps);
    let ship = Step::new("ship", move |mut o: OrderState, ctx: StepContext| {
        let d = Arc::clone(&d);
        async move {
            if o.pending.is_some() {
                return Ok(o);
            }
            let key = step_key(&ctx)?;
            let message = CreateShipment {
                order_id: o.order_id.clone(),
                sku: o.sku.clone(),
                qty: o.qty,
            };
            let shipping = d.shipping.clone();
            let policy = d.guards[3].retry.clone();
            let call = async {
                let shipment = policy
                    .retry(|| shipping.create(message.clone(), &key))
                    .await
                    .map_err(|err| {
                        d.count_grpc_refusal(&*err);
                        call_error("shipping.Create", &err)
                    })?;
                d.count_grpc_replay(shipment.metadata());
                Ok(shipment)
            };
            let shipment = d.traced(&ctx, call).await?;
            o.shipment = Some(shipment.into_inner().shipment_id);
            Ok(o)
        }
    });
    let d = Arc::clone(deps);
    ship.compensate(move |mut o: OrderState, ctx: StepContext| {
        let d = Arc::clone(&d);
        async move {
            let message = CancelShipment {
                shipment_key: idempotency_key(ctx.saga_id(), ctx.step(), Phase::Action),
            };
            let key = step_key(&ctx)?;
            let call = async {
                let cancelled = d.shipping.cancel(message, &key).await.map_err(|s| {
                    d.count_grpc_refusal(&s);
                    StepError::retryable(format!("shipping.Cancel: {s}"))
                })?;
                d.count_grpc_replay(cancelled.metadata());
                Ok(cancelled)
            };
            d.traced(&ctx, call).await?;
            o.shipment = None;
            Ok(o)
        }
    })
    .retry(r.once)
    .compensation_retry(r.patient)
}

/// The order saga (reserve, charge, ship) and the later-charge saga of an order accepted as
/// payment pending (hold the order's reservation, charge, ship).
fn saga_definitions(
    deps: &Arc<Deps>,
) -> Result<(SagaDefinition<OrderState>, SagaDefinition<OrderState>), ConfigError> {
    let r = Retries::new()?;
    let order = SagaDefinition::builder("order", 1)
        .step(reserve_step(deps, &r))
        .step(charge_step(deps, &r, false))
        .step(ship_step(deps, &r))
        .build()?;
    let d = Arc::clone(deps);
    // The reservation was made by the order saga (which completed): this saga owns it, and
    // releases it if the charge is refused for good.
    let hold = Step::new(
        "hold",
        |o: OrderState, _ctx: StepContext| async move { Ok(o) },
    )
    .compensate(move |mut o: OrderState, ctx: StepContext| {
        let d = Arc::clone(&d);
        async move {
            let reservation = idempotency_key(&o.order_id, "reserve", Phase::Action);
            d.release(&ctx, reservation).await?;
            o.reservation = None;
            Ok(o)
        }
    })
    .retry(r.once)
    .compensation_retry(r.patient);
    let later = SagaDefinition::builder(LATER, 1)
        .step(hold)
        .step(charge_step(deps, &r, true))
        .step(ship_step(deps, &r))
        .build()?;
    Ok((order, later))
}

/// The later-charge saga's definition name.
const LATER: &str = "order-charge";

impl Deps {
    /// Releases the reservation made with `reservation_key`, with the step's own key.
    async fn release(&self, ctx: &StepContext, reservation_key: String) -> Result<(), StepError> {
        let body = json!({ "reservation_key": reservation_key });
        let url = format!("{}/releases", self.inventory_url);
        let key = step_key(ctx)?;
        self.traced(ctx, self.post(&self.inventory, url, &key, &body))
            .await
            .map_err(|e| StepError::retryable(e.message()))?;
        Ok(())
    }

    /// Starts (or, run again, finds) the saga that charges `order` later; its id.
    async fn charge_later(&self, order: &OrderState) -> Result<String, StepError> {
        let (Some(engine), Some(later)) = (self.engine.get(), self.later.get()) else {
            return Err(StepError::fail("the later-charge saga is not set up"));
        };
        let id = format!("{}-charge", order.order_id);
        let mut state = order.clone();
        state.pending = None;
        engine
            .start(later, id.as_str(), state)
            .await
            .map_err(|e| StepError::retryable(format!("cannot queue the charge: {e}")))?;
        Ok(id)
    }
}

/// What placing an order came to.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Placed {
    /// The order (and saga) id.
    pub(crate) order_id: String,
    /// `completed`, `payment_pending` (accepted, charged later), `compensated`, `failed_fast`
    /// (payment breaker open), `rejected` (payment bulkhead full) or `stuck`.
    pub(crate) outcome: &'static str,
    /// The step that failed, if any.
    pub(crate) failed_step: Option<String>,
    /// Its error.
    pub(crate) error: Option<String>,
}

impl Placed {
    /// What the saga `order_id` came to.
    fn of(order_id: String, outcome: SagaOutcome<OrderState>) -> Self {
        match outcome {
            SagaOutcome::Completed(o) => Placed {
                order_id,
                outcome: if o.pending.is_some() {
                    "payment_pending"
                } else {
                    "completed"
                },
                failed_step: None,
                error: None,
            },
            SagaOutcome::Compensated {
                failed_step, error, ..
            } => Placed {
                order_id,
                outcome: if error.contains(FAILED_FAST) {
                    "failed_fast"
                } else if error.contains(REJECTED) {
                    "rejected"
                } else {
                    "compensated"
                },
                failed_step: Some(failed_step),
                error: Some(error),
            },
            SagaOutcome::Stuck { step, error, .. } => Placed {
                order_id,
                outcome: "stuck",
                failed_step: Some(step),
                error: Some(error),
            },
            other => Placed {
                order_id,
                outcome: "stuck",
                failed_step: None,
                error: Some(format!("{other:?}")),
            },
        }
    }
}

/// The order service.
#[derive(Debug, Clone)]
pub(crate) struct OrderService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: SagaEngine,
    definition: SagaDefinition<OrderState>,
    later: SagaDefinition<OrderState>,
    deps: Arc<Deps>,
    next: AtomicU64,
    transitions: Arc<Mutex<Vec<Transition>>>,
    db: PathBuf,
}

impl OrderService {
    /// Connects to the participants (payment's replicas balanced) and opens the saga log at
    /// `db`.
    pub(crate) async fn start(
        tuning: Tuning,
        inventory: SocketAddr,
        payment: &[SocketAddr],
        shipping: SocketAddr,
        db: PathBuf,
    ) -> Result<Self, BoxError> {
        let inventory_guards =
            Guards::new("inventory", &tuning, 32, Duration::from_millis(50), None)?;
        let payment_guards = Guards::new(
            "payment",
            &tuning,
            tuning.payment_concurrency,
            tuning.payment_wait,
            Some(tuning.slow_call_duration),
        )?;
        // Refunds get their own compartment and breaker: a payment outage must not stop the
        // compensations that undo its charges.
        let refund_guards =
            Guards::new("payment-refunds", &tuning, 8, Duration::from_secs(1), None)?;
        let shipping_guards =
            Guards::new("shipping", &tuning, 16, Duration::from_millis(50), None)?;

        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{shipping}"))?.connect_lazy();

        let sent: Vec<(String, Arc<AtomicU64>)> = payment
            .iter()
            .map(|addr| (addr.to_string(), Arc::new(AtomicU64::new(0))))
            .collect();
        let replicas: Replicas = Balancer::builder("payment")
            .endpoints(payment.iter().zip(&sent).map(|(addr, (key, n))| {
                (key.clone(), replica(client.clone(), *addr, Arc::clone(n)))
            }))
            // Envoy's consecutive_5xx: 5xx answers and connection failures count.
            .classifier(HttpStatus::empty().failures(500..=599))
            .consecutive_failures(3)
            .base_ejection_time(tuning.open_duration)
            .max_ejection_percent(50)
            .seed(11)
            .build()?;
        let to_replicas = BoxCloneSyncService::new(replicas.clone());

        let epoch = Instant::now();
        let transitions = Arc::new(Mutex::new(Vec::new()));
        let guards = vec![
            inventory_guards.clone(),
            payment_guards.clone(),
            refund_guards.clone(),
            shipping_guards.clone(),
        ];
        for g in &guards {
            let mut events = g.breaker.subscribe();
            let log = Arc::clone(&transitions);
            tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(Event::StateChanged {
                            breaker,
                            from,
                            to,
                            reason,
                        }) => log
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(Transition {
                                at_ms: epoch.elapsed().as_millis() as u64,
                                breaker: breaker.to_string(),
                                from: from.as_str(),
                                to: to.as_str(),
                                reason: reason.as_str(),
                            }),
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
        let deps = Arc::new(Deps {
            epoch,
            inventory_url: format!("http://{inventory}"),
            // A name, not an address: the balancer sends each request to a replica.
            payment_url: "http://payment.invalid".to_owned(),
            inventory: inventory_guards.http(direct(client)),
            payment: payment_guards.http(to_replicas.clone()),
            refunds: refund_guards.http(to_replicas),
            replicas,
            sent,
            shipping: ShippingClient::new(shipping_guards.grpc(channel)),
            guards,
            traces: Mutex::new(Traces::default()),
            repeats: Repeats::default(),
            // The pending policy answers the refusals of payment's guards (every staunch
            // rejection), nothing else: a charge that ran and failed is a failed order.
            pending: FallbackPolicy::builder("payment-pending").build()?,
            accept_pending: AtomicBool::new(false),
            engine: OnceLock::new(),
            later: OnceLock::new(),
        });
        let (definition, later) = saga_definitions(&deps)?;
        let store = SqliteStore::open(&db).await?;
        let engine = SagaEngine::new(store);
        engine.register(&definition)?;
        engine.register(&later)?;
        let _ = deps.engine.set(engine.clone());
        let _ = deps.later.set(later.clone());
        // A saga log from an earlier run: resume what it left unfinished (each interrupted
        // step runs again with its idempotency key), and number new orders after the old ones.
        let recovered = engine.recover().await?;
        if !recovered.resumed.is_empty() || !recovered.quarantined.is_empty() {
            println!(
                "saga log {}: resumed {:?}, quarantined {:?}",
                db.display(),
                recovered.resumed,
                recovered.quarantined
            );
        }
        let known = engine
            .list(&ListFilter::all().definition("order"))
            .await?
            .len() as u64;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                definition,
                later,
                deps,
                next: AtomicU64::new(known + 1),
                transitions,
                db,
            }),
        })
    }

    /// The saga log's file.
    pub(crate) fn db(&self) -> &std::path::Path {
        &self.inner.db
    }

    /// The guards of each dependency: inventory, payment, payment-refunds, shipping.
    pub(crate) fn guards(&self) -> &[Guards] {
        &self.inner.deps.guards
    }

    /// Breaker transitions so far.
    pub(crate) fn transitions(&self) -> Vec<Transition> {
        self.inner
            .transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Milliseconds since the service started (the clock of [`Transition::at_ms`]).
    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.deps.ms()
    }

    /// Repeated deliveries answered by a participant without running them again so far:
    /// (replayed from the record, refused while the key was in flight).
    pub(crate) fn repeats(&self) -> (u64, u64) {
        let r = &self.inner.deps.repeats;
        (
            r.replayed.load(Ordering::Relaxed),
            r.in_flight.load(Ordering::Relaxed),
        )
    }

    /// Takes the latencies of the successful inventory reservations since the last call.
    pub(crate) fn take_reserve_latencies(&self) -> Vec<Duration> {
        std::mem::take(&mut self.inner.deps.traces().reserve_latencies)
    }

    /// Takes the step calls (step name, latency) since the last call: what the dashboard's
    /// sampler turns into latency percentiles per dependency.
    pub(crate) fn take_step_latencies(&self) -> Vec<(String, Duration)> {
        std::mem::take(&mut self.inner.deps.traces().calls)
    }

    /// The counters of the payment-pending fallback policy (see "Payment pending").
    pub(crate) fn fallback_metrics(&self) -> staunch::fallback::FallbackMetrics {
        self.inner.deps.pending.metrics()
    }

    /// Places one order: runs its saga to the end.
    pub(crate) async fn place(
        &self,
        sku: &str,
        qty: u64,
        amount_cents: u64,
    ) -> Result<Placed, BoxError> {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let order_id = format!("order-{n:05}");
        let state = OrderState {
            order_id: order_id.clone(),
            sku: sku.to_owned(),
            qty,
            amount_cents,
            reservation: None,
            charge: None,
            shipment: None,
            pending: None,
        };
        self.inner.deps.begin(&order_id);
        let handle = self
            .inner
            .engine
            .start(&self.inner.definition, order_id.as_str(), state)
            .await?;
        let outcome = handle.outcome().await?;
        let placed = Placed::of(order_id, outcome);
        if let Some(trace) = self.inner.deps.traces().by_id.get_mut(&placed.order_id) {
            trace.outcome = Some(placed.outcome.to_owned());
        }
        Ok(placed)
    }

    /// What every order in the log came to, waiting for those still running (after a
    /// restart: those [`start`](Self::start) resumed), and for every later charge of an
    /// order accepted as payment pending: `(orders, later charges)`.
    pub(crate) async fn settle(&self) -> Result<(Vec<Placed>, Vec<Placed>), BoxError> {
        let mut settled = (Vec::new(), Vec::new());
        for (definition, into) in [
            (&self.inner.definition, &mut settled.0),
            (&self.inner.later, &mut settled.1),
        ] {
            let filter = ListFilter::all().definition(definition.name());
            for saga in self.inner.engine.list(&filter).await? {
                let outcome = self
                    .inner
                    .engine
                    .outcome(definition, saga.saga_id.as_str())
                    .await?;
                into.push(Placed::of(saga.saga_id, outcome));
            }
        }
        Ok(settled)
    }

    /// Whether a charge payment's stack refuses at once makes the order payment pending
    /// (charged later by a saga of its own) instead of failing it.
    pub(crate) fn accept_pending(&self, on: bool) {
        self.inner.deps.accept_pending.store(on, Ordering::Relaxed);
    }

    /// Payment's replicas: each one's state in the balancer and the attempts sent to it.
    pub(crate) fn replicas(&self) -> Vec<ReplicaStatus> {
        let deps = &self.inner.deps;
        let states = deps.replicas.status();
        deps.sent
            .iter()
            .map(|(addr, sent)| {
                let state = states.iter().find(|s| &s.key == addr);
                ReplicaStatus {
                    addr: addr.clone(),
                    state: match state {
                        Some(s) if s.state.is_ejected() => "ejected",
                        _ => "active",
                    },
                    times_ejected: state.map_or(0, |s| s.times_ejected),
                    sent: sent.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// `GET /circuit-status`.
    pub(crate) fn status(&self) -> Value {
        let deps: Vec<Value> = self.guards().iter().map(Guards::status).collect();
        let m = self.inner.engine.metrics();
        json!({
            "now_ms": self.now_ms(),
            "dependencies": deps,
            "payment_replicas": self.replicas(),
            "transitions": self.transitions(),
            "sagas": {
                "started": m.started,
                "completed": m.completed,
                "compensated": m.compensated,
                "stuck": m.stuck,
                "in_flight": m.in_flight,
                "step_attempts": m.step_attempts,
                "step_failures": m.step_failures,
            },
        })
    }

    /// The recent sagas with their step timelines, newest first.
    pub(crate) fn recent(&self) -> Vec<SagaTrace> {
        let t = self.inner.deps.traces();
        t.recent
            .iter()
            .rev()
            .filter_map(|id| t.by_id.get(id).cloned())
            .collect()
    }

    /// `GET /sagas/{id}`: the durable log, and the timed step calls when still in memory.
    pub(crate) async fn saga(&self, id: &str) -> Result<Option<Value>, BoxError> {
        let Some(timeline) = self.inner.engine.inspect(id).await? else {
            return Ok(None);
        };
        let log: Vec<Value> = timeline
            .entries
            .iter()
            .map(|entry| match &entry.event {
                Ok(event) => json!({ "seq": entry.seq, "event": event }),
                Err(err) => json!({ "seq": entry.seq, "error": err.to_string() }),
            })
            .collect();
        let steps = self.inner.deps.traces().by_id.get(id).cloned();
        Ok(Some(json!({
            "saga_id": timeline.summary.saga_id,
            "definition": timeline.summary.definition,
            "version": timeline.summary.version,
            "status": timeline.summary.status.as_str(),
            "log": log,
            "trace": steps,
        })))
    }

    /// The HTTP routes: `POST /orders`, `GET /circuit-status`, `GET /sagas`,
    /// `GET /sagas/{id}`, and the saga engine's operator endpoint under
    /// `/ops` (`GET /ops/sagas?status=stuck`, `POST /ops/sagas/{id}/cancel` with
    /// `{"actor": .., "reason": ..}`, and so on: see `staunch::saga::http`).
    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route("/orders", post(place))
            .route("/circuit-status", get(status))
            .route("/sagas", get(recent))
            .route("/sagas/{id}", get(saga))
            .with_state(self.clone())
            .nest(
                "/ops",
                staunch::saga::http::router(self.inner.engine.clone()),
            )
    }
}

#[derive(Deserialize)]
struct PlaceReq {
    sku: String,
    qty: u64,
    amount_cents: u64,
}

async fn place(
    State(orders): State<OrderService>,
    Json(req): Json<PlaceReq>,
) -> (StatusCode, Json<Value>) {
    match orders.place(&req.sku, req.qty, req.amount_cents).await {
        Ok(placed) => {
            let status = if placed.outcome == "completed" {
                StatusCode::CREATED
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            (status, Json(json!(placed)))
        }
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": err.to_string() })),
        ),
    }
}

async fn status(State(orders): State<OrderService>) -> Json<Value> {
    Json(orders.status())
}

async fn recent(State(orders): State<OrderService>) -> Json<Value> {
    Json(json!(orders.recent()))
}

async fn saga(
    State(orders): State<OrderService>,
    Path(id): Path<String>,
) -> (StatusCode, Json<Value>) {
    match orders.saga(&id).await {
        Ok(Some(timeline)) => (StatusCode::OK, Json(timeline)),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such saga" })),
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": err.to_string() })),
        ),
    }
}
