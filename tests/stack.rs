//! The full stack: what each layer's place in it means for a call. Paused time throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use staunch::bulkhead::Bulkhead;
use staunch::circuit_breaker::{CircuitBreaker, State};
use staunch::core::BulkheadFullReason;
use staunch::retry::{GiveUpReason, RetryPolicy};
use staunch::timeout::{Elapsed, TimeLimit};
use staunch::{
    BackoffConfig, BackoffStrategy, BoxError, BreakerOpen, BudgetConfig, Error, JitterConfig,
    ServiceBuilderExt, StackConfig, WindowConfig,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type Request = http::Request<String>;
type Response = http::Response<String>;

fn get() -> Request {
    http::Request::get("http://127.0.0.1/stock")
        .body(String::new())
        .unwrap()
}

fn response(status: u16) -> Response {
    http::Response::builder()
        .status(status)
        .body(String::new())
        .unwrap()
}

/// A constant backoff without jitter, so waits are exact.
fn constant(delay: Duration) -> BackoffConfig {
    let mut backoff = BackoffConfig::new(BackoffStrategy::Constant, delay);
    backoff.jitter = Some(JitterConfig::None);
    backoff
}

/// A stack whose breaker trips after `trip_after` failures in a row and that makes up to
/// `attempts` attempts, 10 ms apart.
fn config(trip_after: u32, attempts: u32) -> StackConfig {
    let mut config = StackConfig::default();
    config.breaker.consecutive_failures = Some(trip_after);
    config.breaker.sliding_window = Some(WindowConfig::Count { size: 100 });
    config.retry.max_attempts = Some(attempts);
    config.retry.backoff = Some(constant(Duration::from_millis(10)));
    config
}

#[tokio::test(start_paused = true)]
async fn a_breaker_open_rejection_is_not_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let inner = service_fn(move |_: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::io::Error>(response(503)) }
    });
    // The first 503 trips the breaker (one failure in a row is enough here); the retry that
    // follows meets the open breaker and stops, though 5 attempts were allowed.
    let (mut client, handle) = staunch::http::client("payment", inner, &config(1, 5)).unwrap();

    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    let Error::BreakerOpen(open) = err else {
        panic!("expected the breaker's rejection, got {err:?}");
    };
    assert_eq!(open.name(), "payment");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the dependency saw one call"
    );
    let retry = handle.retry().metrics();
    assert_eq!(
        retry.retries, 1,
        "one retry, which the breaker refused: then no more"
    );

    // Forced open: nothing reaches the dependency and nothing is retried.
    handle.breaker().force_open();
    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.retry().metrics().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_rejection_is_not_retried_nor_counted_by_the_breaker() {
    let calls = Arc::new(AtomicU32::new(0));
    let release = Arc::new(Notify::new());
    let (counter, gate) = (Arc::clone(&calls), Arc::clone(&release));
    let inner = service_fn(move |_: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        let gate = Arc::clone(&gate);
        async move {
            gate.notified().await;
            Ok::<_, std::io::Error>(response(200))
        }
    });
    let mut config = config(1, 5);
    config.bulkhead.max_concurrent = Some(1);
    config.attempt_timeout = Some(Duration::from_mins(1));
    config.timeout = Some(Duration::from_mins(2));
    let (client, handle) = staunch::http::client("inventory", inner, &config).unwrap();

    // The first call takes the only permit and waits.
    let mut first = client.clone();
    let running = tokio::spawn(async move { first.ready().await?.call(get()).await });
    tokio::task::yield_now().await;
    assert_eq!(handle.bulkhead().in_flight(), 1);

    let mut second = client.clone();
    let err = second.ready().await.unwrap().call(get()).await.unwrap_err();
    let Error::BulkheadFull(full) = err else {
        panic!("expected the bulkhead's rejection, got {err:?}");
    };
    assert_eq!(full.reason(), BulkheadFullReason::NoPermit);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the rejected call never ran"
    );
    assert_eq!(handle.retry().metrics().retries, 0, "and was not retried");
    // The breaker trips after one failure, yet a full bulkhead is local load, not the
    // dependency failing: it stays closed.
    assert_eq!(handle.breaker().state(), State::Closed);

    release.notify_one();
    assert_eq!(running.await.unwrap().unwrap().status(), 200);
    assert_eq!(handle.bulkhead().in_flight(), 0);
}

/// The same stack of the layer crates' own layers (retry -> breaker -> bulkhead), without the
/// preset or `TypedErrorsLayer`: the breaker layer ignores rejections from further in by
/// default, and every error is a `BoxError` to downcast.
#[tokio::test(start_paused = true)]
async fn a_stack_of_the_crates_layers_neither_counts_nor_retries_a_full_bulkhead() {
    use staunch::bulkhead::BulkheadLayer;
    use staunch::circuit_breaker::CircuitBreakerLayer;
    use staunch::retry::RetryLayer;
    use staunch::{BulkheadFull, HttpStatus};

    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let inner = service_fn(move |req: Request| {
        let gate = Arc::clone(&gate);
        async move {
            if req.uri().path() == "/hang" {
                gate.notified().await;
                return Ok(response(200));
            }
            Err::<Response, _>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            ))
        }
    });
    let breaker = CircuitBreaker::builder("inventory")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let bulkhead = Bulkhead::builder("inventory")
        .max_concurrent(1)
        .build()
        .unwrap();
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(
            staunch::Backoff::constant(Duration::from_millis(10))
                .jitter(staunch::Jitter::None)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(policy.clone()))
        .layer(CircuitBreakerLayer::new(breaker.clone()).with_classifier(HttpStatus::new()))
        .layer(BulkheadLayer::new(bulkhead.clone()))
        .service(inner);

    // The first call takes the only permit and waits.
    let hang = http::Request::get("http://127.0.0.1/hang")
        .body(String::new())
        .unwrap();
    let running = tokio::spawn(client.clone().oneshot(hang));
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.in_flight(), 1);

    for _ in 0..3 {
        let err: BoxError = client.clone().oneshot(get()).await.unwrap_err();
        let full = err
            .downcast_ref::<BulkheadFull>()
            .expect("the bulkhead's rejection, boxed as it is");
        assert_eq!(full.reason(), BulkheadFullReason::NoPermit);
    }
    assert_eq!(policy.metrics().retries, 0, "a rejection is not retried");
    let snapshot = breaker.snapshot();
    assert_eq!(
        snapshot.state,
        State::Closed,
        "local load, not a failing dependency"
    );
    assert_eq!(snapshot.failed_calls, 0);

    release.notify_one();
    assert_eq!(running.await.unwrap().unwrap().status(), 200);

    // Whereas a failure of the dependency is counted: it trips this breaker at once, the
    // retry meets the boxed `BreakerOpen` and stops there.
    let err = client.oneshot(get()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().map(BreakerOpen::name),
        Some("inventory"),
        "{err}"
    );
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.snapshot().failed_calls, 1);
    assert_eq!(policy.metrics().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_triggers_a_retry() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    // The first attempt hangs; the second answers at once.
    let inner = service_fn(move |_: Request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<_, std::io::Error>(response(200))
        }
    });
    let mut config = config(100, 3);
    config.attempt_timeout = Some(Duration::from_millis(100));
    config.timeout = Some(Duration::from_secs(1));
    let (mut client, handle) = staunch::http::client("search", inner, &config).unwrap();

    let start = Instant::now();
    let res = client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // 100 ms for the hung attempt, 10 ms of backoff, then an immediate answer.
    assert_eq!(start.elapsed(), Duration::from_millis(110));
    assert_eq!(handle.retry().metrics().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_stops_the_retries() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let inner = service_fn(move |_: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(response(200))
        }
    });
    let mut config = config(100, 10);
    config.attempt_timeout = Some(Duration::from_millis(100));
    config.timeout = Some(Duration::from_millis(250));
    let (mut client, _handle) = staunch::http::client("search", inner, &config).unwrap();

    let start = Instant::now();
    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    // Attempts start at 0, 110 and 220 ms; the third is cut at the 250 ms deadline, though
    // ten attempts were allowed.
    let Error::RetriesExhausted {
        attempts,
        reason,
        ref last,
    } = err
    else {
        panic!("expected the retries to run out, got {err:?}");
    };
    assert_eq!((attempts, reason), (3, GiveUpReason::Deadline));
    assert!(matches!(**last, Error::Elapsed(_)), "{last:?}");
    assert!(matches!(err.last(), Error::Elapsed(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn a_call_that_pends_arms_one_timer_for_the_whole_stack() {
    // The inner future pends once, then answers.
    let inner = service_fn(|_: Request| async {
        tokio::task::yield_now().await;
        Ok::<_, std::io::Error>(response(200))
    });
    let mut config = config(100, 3);
    config.attempt_timeout = Some(Duration::from_millis(100));
    config.timeout = Some(Duration::from_secs(1));
    let (mut client, handle) = staunch::http::client("search", inner, &config).unwrap();
    let attempt = handle.attempt_timeout();

    let mut call = Box::pin(client.ready().await.unwrap().call(get()));
    assert!(futures::poll!(call.as_mut()).is_pending());
    // The attempt's limit holds the one timer; the retry knows that limit cuts the attempt
    // before its overall deadline, so it arms none of its own (`staunch-retry`'s `cut` tests
    // show the machine's side).
    assert_eq!(attempt.waiting(), 1);
    let policy = format!("{:?}", handle.retry());
    assert!(policy.contains("attempts_cut_by: Some(100ms)"), "{policy}");
    assert_eq!(call.await.unwrap().status(), 200);
    assert_eq!(attempt.waiting(), 0);
    assert_eq!(attempt.metrics().map(|m| m.timers_armed), Some(1));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_the_overall_deadline_is_cut_exactly_at_it() {
    // The attempt limit (100 ms) would end the third attempt after the stack's 250 ms: the
    // retry times that attempt itself, and the call ends at 250 ms exactly.
    let inner = service_fn(|_: Request| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(response(200))
    });
    let mut config = config(100, 10);
    config.attempt_timeout = Some(Duration::from_millis(100));
    config.timeout = Some(Duration::from_millis(250));
    let (mut client, handle) = staunch::http::client("search", inner, &config).unwrap();
    let start = Instant::now();
    let mut request = get();
    // A longer limit of the request's own: the retry reads it as the attempt limit does.
    request
        .extensions_mut()
        .insert(staunch::timeout::TimeoutOverride(Duration::from_secs(5)));
    let err = client
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Elapsed(_)), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(handle.attempt_timeout().waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_counts_timed_out_attempts_as_failures() {
    // The per-attempt timeout sits inside the breaker: a hung attempt is a failure it sees,
    // not a cancellation it ignores.
    let inner = service_fn(|_: Request| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(response(200))
    });
    let mut config = config(1, 1);
    config.attempt_timeout = Some(Duration::from_millis(50));
    let (mut client, handle) = staunch::http::client("slow", inner, &config).unwrap();

    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    let Error::Elapsed(elapsed) = err else {
        panic!("expected a timeout, got {err:?}");
    };
    assert_eq!(elapsed.limit(), Duration::from_millis(50));
    assert_eq!(handle.breaker().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_for_a_permit_at_most_max_wait_and_is_not_retried() {
    // Waiting for a permit happens while the stack gets ready (as in tower's
    // `ConcurrencyLimit`), bounded by the bulkhead's own `max_wait`; the refusal is final.
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let inner = service_fn(move |_: Request| {
        let gate = Arc::clone(&gate);
        async move {
            gate.notified().await;
            Ok::<_, std::io::Error>(response(200))
        }
    });
    let mut config = config(100, 5);
    config.bulkhead.max_concurrent = Some(1);
    config.bulkhead.max_wait = Some(Duration::from_millis(50));
    config.attempt_timeout = Some(Duration::from_secs(1));
    let (client, handle) = staunch::http::client("db", inner, &config).unwrap();

    let mut first = client.clone();
    let running = tokio::spawn(async move { first.ready().await?.call(get()).await });
    tokio::task::yield_now().await;

    let mut second = client.clone();
    let start = Instant::now();
    let err = match second.ready().await {
        Ok(ready) => ready.call(get()).await.unwrap_err(),
        Err(err) => err,
    };
    let Error::BulkheadFull(full) = err else {
        panic!("expected the bulkhead's rejection, got {err:?}");
    };
    assert_eq!(
        full.reason(),
        BulkheadFullReason::WaitTimedOut(Duration::from_millis(50))
    );
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(handle.retry().metrics().retries, 0);

    release.notify_one();
    assert_eq!(running.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_backoff_wait_holds_no_bulkhead_permit() {
    // Retry sits outside the bulkhead: between attempts the call holds no permit, so a
    // dependency that is failing does not also starve the calls that could succeed.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let inner = service_fn(move |_: Request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(response(if n == 0 { 503 } else { 200 })) }
    });
    let mut config = config(100, 2);
    config.retry.backoff = Some(constant(Duration::from_secs(1)));
    config.bulkhead.max_concurrent = Some(1);
    let (client, handle) = staunch::http::client("ledger", inner, &config).unwrap();

    let mut first = client.clone();
    let retrying = tokio::spawn(async move { first.ready().await?.call(get()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the first attempt failed; waiting"
    );
    assert_eq!(
        handle.bulkhead().in_flight(),
        0,
        "no permit held while waiting"
    );

    let mut second = client.clone();
    let res = second.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), 200, "another call ran meanwhile");
    assert_eq!(retrying.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn the_builder_extension_builds_the_same_stack() {
    let breaker = CircuitBreaker::builder("ext")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let policy = RetryPolicy::builder().max_attempts(4).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    // tower's `full` feature is on in these tests: its inherent `ServiceBuilder` methods
    // (`retry`, `timeout`, ...) must not shadow any of the trait's.
    let builder = ServiceBuilder::new().typed_errors::<std::io::Error>();
    let builder = builder.retry_policy(policy.clone());
    let builder = builder.circuit_breaker(breaker.clone());
    let builder = builder.time_limit(TimeLimit::new(Duration::from_millis(100)).unwrap());
    let mut svc = builder
        .bulkhead(Bulkhead::builder("ext").build().unwrap())
        .service(service_fn(move |_: Request| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err::<Response, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) }
        }));

    let err = svc.ready().await.unwrap().call(get()).await.unwrap_err();
    // The error is typed: the first attempt's error tripped the breaker, the retry met it.
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn errors_convert_from_and_into_box_error() {
    let open: BoxError = Box::new(BreakerOpen::new(Arc::from("payment"), None));
    let err = Error::<std::io::Error>::from_box(open);
    assert!(err.is_rejection());
    assert!(err.into_box_error().is::<BreakerOpen>());

    let elapsed: BoxError = Box::new(Elapsed::new(Duration::from_secs(1)));
    let err = Error::<std::io::Error>::from_box(elapsed);
    assert!(matches!(err, Error::Elapsed(e) if e.limit() == Duration::from_secs(1)));

    let inner: BoxError = Box::new(std::io::Error::other("reset"));
    let err = Error::<std::io::Error>::from_box(inner);
    assert_eq!(
        err.inner().map(ToString::to_string).as_deref(),
        Some("reset")
    );

    let other: BoxError = "something else".into();
    assert!(matches!(
        Error::<std::io::Error>::from_box(other),
        Error::Other(_)
    ));

    // Boxed again (`?` into a BoxError), a rejection is still found by the retry layer.
    let err: Error<std::io::Error> = Error::BreakerOpen(BreakerOpen::new(Arc::from("x"), None));
    let boxed: BoxError = Box::new(err);
    assert!(staunch::rejection_of(&*boxed).is_some());
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_mid_flight_releases_its_permit() {
    let inner = service_fn(|_: Request| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(response(200))
    });
    let mut config = config(100, 3);
    config.bulkhead.max_concurrent = Some(1);
    let (client, handle) = staunch::http::client("cancel", inner, &config).unwrap();

    let mut first = client.clone();
    let call = tokio::spawn(async move { first.ready().await?.call(get()).await });
    tokio::task::yield_now().await;
    assert_eq!(handle.bulkhead().in_flight(), 1);
    call.abort();
    let _ = call.await;
    assert_eq!(handle.bulkhead().in_flight(), 0, "the permit came back");
    // Nor did the cancelled call count against the dependency.
    assert_eq!(handle.breaker().snapshot().state, State::Closed);

    // Dropped while ready but before `call`: the next caller is not blocked.
    let mut second = client.clone();
    let _ready = second.ready().await.unwrap();
    drop(second);
    let mut third = client.clone();
    let waiting = tokio::time::timeout(Duration::from_millis(10), third.ready()).await;
    assert!(
        waiting.is_ok(),
        "a dropped reservation must not keep the permit"
    );
}

#[tokio::test]
async fn a_reqwest_client_against_a_real_server() {
    use axum::http::StatusCode;
    use axum::routing::get as route;

    let hits = Arc::new(AtomicU32::new(0));
    let flaky_hits = Arc::clone(&hits);
    let down_hits = Arc::new(AtomicU32::new(0));
    let down_counter = Arc::clone(&down_hits);
    let app = axum::Router::new()
        .route(
            "/flaky",
            route(move || {
                let n = flaky_hits.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .route(
            "/down",
            route(move || {
                down_counter.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::INTERNAL_SERVER_ERROR }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let inner = staunch::http::reqwest(reqwest::Client::new());
    let mut config = config(3, 3);
    config.attempt_timeout = Some(Duration::from_secs(10));
    config.timeout = Some(Duration::from_secs(30));
    let (mut client, handle) = staunch::http::client("real", inner, &config).unwrap();
    let request = |path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .body(String::new())
            .unwrap()
    };

    // A 503 is retried; the second attempt succeeds.
    let res = client
        .ready()
        .await
        .unwrap()
        .call(request("/flaky"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // A 500 is not retried (it is not transient), but the breaker counts it: three in a row
    // open it, and the fourth call never reaches the server.
    for _ in 0..3 {
        let res = client
            .ready()
            .await
            .unwrap()
            .call(request("/down"))
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
    }
    assert_eq!(down_hits.load(Ordering::SeqCst), 3);
    assert_eq!(handle.breaker().state(), State::Open);
    let err = client
        .ready()
        .await
        .unwrap()
        .call(request("/down"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");
    assert_eq!(down_hits.load(Ordering::SeqCst), 3);

    // A request reqwest cannot send (no host) fails with reqwest's own error, not retried.
    handle.breaker().reset();
    let err = client
        .ready()
        .await
        .unwrap()
        .call(http::Request::get("/relative").body(String::new()).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.inner().is_some_and(reqwest::Error::is_builder),
        "{err:?}"
    );
    assert_eq!(
        handle.retry().metrics().retries,
        1,
        "only the 503 was retried"
    );
}

#[tokio::test(start_paused = true)]
async fn the_grpc_channel_counts_grpc_failures_and_rejects_with_unavailable() {
    // A channel whose answers carry a `grpc-status` header (trailers-only responses).
    let code = Arc::new(AtomicU32::new(5)); // NOT_FOUND: an answer, not a failure
    let current = Arc::clone(&code);
    let channel = service_fn(move |_: http::Request<String>| {
        let code = current.load(Ordering::SeqCst);
        async move {
            Ok::<_, std::io::Error>(
                http::Response::builder()
                    .header("grpc-status", code.to_string())
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    let (mut channel, handle) = staunch::grpc::channel("shipping", channel, &config(2, 1)).unwrap();
    for _ in 0..3 {
        channel.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert_eq!(handle.breaker().state(), State::Closed);

    code.store(14, Ordering::SeqCst); // UNAVAILABLE
    for _ in 0..2 {
        channel.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert_eq!(handle.breaker().state(), State::Open);
    let err = channel
        .ready()
        .await
        .unwrap()
        .call(get())
        .await
        .unwrap_err();
    // What a generated client returns: a `Status` with gRPC's code for "back off", the
    // rejection as its source.
    let status = err.downcast::<tonic::Status>().expect("a tonic::Status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        matches!(
            staunch::rejection_of(&*status),
            Some(staunch::Rejection::BreakerOpen(_))
        ),
        "{status:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_is_reported_as_such() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let inner = service_fn(move |_: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<Response, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) }
    });
    let mut no_budget = config(100, 3);
    // No retry allowed at all: the budget refuses the first one.
    let mut budget = BudgetConfig::default();
    budget.ratio = Some(0.0);
    budget.min_per_sec = Some(0);
    no_budget.retry.budget = Some(budget);
    let (mut client, handle) = staunch::http::client("ledger", inner, &no_budget).unwrap();

    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    let Error::BudgetExhausted { attempts, last } = err else {
        panic!("expected the budget's refusal, got {err:?}");
    };
    assert_eq!(attempts, 1);
    assert_eq!(
        last.inner().map(std::io::Error::kind),
        Some(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.retry().metrics().budget_exhausted, 1);

    // With retries allowed, running out of attempts is reported with the count.
    let counter = Arc::clone(&calls);
    let inner = service_fn(move |_: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<Response, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) }
    });
    let (mut client, _) = staunch::http::client("ledger", inner, &config(100, 3)).unwrap();
    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::RetriesExhausted {
                attempts: 3,
                reason: GiveUpReason::MaxAttempts,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(err.last(), Error::Inner(_)));
    assert!(
        err.to_string()
            .starts_with("gave up after 3 attempts (max_attempts)"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_give_up_is_reported_when_the_retries_ran_on_another_task() {
    use staunch::retry::{RetryBudget, RetryLayer};
    use staunch::{Backoff, Jitter, TypedErrorsLayer};
    use tower::Layer;

    // A policy built by hand, with no hook: the retry layer's own error says it gave up.
    let backoff = Backoff::constant(Duration::from_millis(10))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let failing = service_fn(|_: Request| async {
        Err::<Response, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    });
    // The retries run on a task of their own; the error is classified on the caller's.
    let on_another_task = |policy: RetryPolicy| {
        let retry = RetryLayer::new(policy).layer(failing);
        TypedErrorsLayer::<std::io::Error>::new().layer(service_fn(move |req: Request| {
            let retry = retry.clone();
            async move { tokio::spawn(retry.oneshot(req)).await.unwrap() }
        }))
    };

    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(backoff)
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let err = on_another_task(policy).oneshot(get()).await.unwrap_err();
    let Error::RetriesExhausted {
        attempts,
        reason,
        ref last,
    } = err
    else {
        panic!("expected the retries to run out, got {err:?}");
    };
    assert_eq!((attempts, reason), (3, GiveUpReason::MaxAttempts));
    assert_eq!(
        last.inner().map(std::io::Error::kind),
        Some(std::io::ErrorKind::ConnectionReset)
    );

    let no_budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(0)
        .build()
        .unwrap();
    let policy = RetryPolicy::builder()
        .backoff(backoff)
        .budget(no_budget)
        .build()
        .unwrap();
    let err = on_another_task(policy).oneshot(get()).await.unwrap_err();
    let Error::BudgetExhausted { attempts, last } = err else {
        panic!("expected the budget's refusal, got {err:?}");
    };
    assert_eq!(attempts, 1);
    assert!(matches!(*last, Error::Inner(_)), "{last:?}");

    // Converted back into a boxed error and classified again, it is the same give-up.
    let err = Error::<std::io::Error>::BudgetExhausted { attempts, last };
    let again = Error::<std::io::Error>::from_box(err.into_box_error());
    assert!(
        matches!(again, Error::BudgetExhausted { attempts: 1, ref last } if last.inner().is_some()),
        "{again:?}"
    );
}

/// Every message of an error's report (the error, then each source), as a reporter prints it.
fn report(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut messages = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        messages.push(e.to_string());
        current = e.source();
    }
    messages
}

#[test]
fn an_error_report_says_each_thing_once() {
    let io = || std::io::Error::other("connection reset by peer");
    let errors: Vec<Error<std::io::Error>> = vec![
        Error::Inner(io()),
        Error::BreakerOpen(BreakerOpen::new(Arc::from("payment"), None)),
        Error::from_box(Box::new(staunch::BulkheadFull::new(
            Arc::from("payment"),
            4,
            BulkheadFullReason::NoPermit,
        ))),
        Error::Elapsed(Elapsed::new(Duration::from_secs(2))),
        Error::RetriesExhausted {
            attempts: 3,
            reason: GiveUpReason::MaxAttempts,
            last: Box::new(Error::Elapsed(Elapsed::new(Duration::from_millis(500)))),
        },
        Error::BudgetExhausted {
            attempts: 1,
            last: Box::new(Error::Inner(io())),
        },
        Error::Other("something else".into()),
    ];
    for err in &errors {
        let messages = report(err);
        for (i, message) in messages.iter().enumerate() {
            for later in &messages[i + 1..] {
                assert!(
                    !message.contains(later.as_str()),
                    "{err:?}: `{message}` repeats its source `{later}`"
                );
            }
        }
    }
    // Nothing is lost on the way: the cause is in the report.
    let retried = &errors[4];
    assert_eq!(
        report(retried),
        [
            "gave up after 3 attempts (max_attempts)",
            "call cancelled by a time limit",
            "call timed out after 500ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_dependency_surfaces_as_retries_exhausted_whose_last_is_elapsed() {
    let inner = service_fn(|_: Request| async {
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(response(200))
    });
    let mut config = config(100, 3);
    config.attempt_timeout = Some(Duration::from_millis(100));
    config.timeout = Some(Duration::from_secs(5));
    let (mut client, _) = staunch::http::client("search", inner, &config).unwrap();
    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    assert!(
        matches!(err, Error::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    // What the README matches on.
    assert!(
        matches!(err.last(), Error::Elapsed(e) if e.limit() == Duration::from_millis(100)),
        "{err:?}"
    );
}
