//! Calls a layer answers itself, without calling inward: a call whose deadline had passed is
//! refused as a rejection that no layer counts or retries, and no layer that answers a call
//! itself leaves a reservation of a layer further in (a bulkhead's permit) behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use staunch::bulkhead::{Bulkhead, BulkheadLayer, PartitionedBulkhead, PartitionedBulkheadLayer};
use staunch::circuit_breaker::{
    CircuitBreaker, CircuitBreakerLayer, KeyedCircuitBreakerLayer, State,
};
use staunch::timeout::{Deadline, Elapsed, PropagateDeadlineLayer, TimeLimit, TimeoutLayer};
use staunch::{
    BreakerOpen, DeadlineConfig, DeadlineExpired, Error, OutgoingDeadlineConfig, Rejection,
    StackConfig, WindowConfig, rejection_of,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

type Request = http::Request<String>;

/// A real server on loopback that counts the requests it answers (200 on `/ok`).
async fn server() -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/ok",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

/// A stack whose breaker opens after three failures in a row, with three attempts per call
/// and a bulkhead of one.
fn config() -> StackConfig {
    let mut config = StackConfig::default();
    config.breaker.consecutive_failures = Some(3);
    config.breaker.sliding_window = Some(WindowConfig::Count { size: 100 });
    config.retry.max_attempts = Some(3);
    config.bulkhead.max_concurrent = Some(1);
    config.attempt_timeout = Some(Duration::from_secs(10));
    config.timeout = Some(Duration::from_secs(30));
    config
}

fn get(addr: std::net::SocketAddr, deadline: Option<Deadline>) -> Request {
    let mut req = http::Request::get(format!("http://{addr}/ok"))
        .body(String::new())
        .unwrap();
    if let Some(deadline) = deadline {
        req.extensions_mut().insert(deadline);
    }
    req
}

#[tokio::test]
async fn an_expired_deadline_is_refused_uncounted_and_not_retried() {
    let (addr, hits) = server().await;
    let inner = staunch::http::reqwest(reqwest::Client::new());
    let (mut client, handle) = staunch::http::client("ledger", inner, &config()).unwrap();

    for _ in 0..2 {
        let expired = Deadline::at(Instant::now());
        let err = client
            .ready()
            .await
            .unwrap()
            .call(get(addr, Some(expired)))
            .await
            .unwrap_err();
        let Error::DeadlineExpired(refused) = &err else {
            panic!("expected a DeadlineExpired rejection, got {err:?}");
        };
        assert_eq!(refused.name(), Some("ledger"), "named after the stack");
        assert!(err.is_rejection());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was sent");
    let breaker = handle.breaker().snapshot();
    assert_eq!(
        (breaker.failed_calls, breaker.state),
        (0, State::Closed),
        "a call that never reached the dependency is not counted: {breaker:?}"
    );
    assert_eq!(handle.retry().metrics().retries, 0, "nor retried");
    let timeouts = handle.attempt_timeout().metrics().unwrap();
    assert_eq!((timeouts.elapsed, timeouts.refused), (0, 2));

    // The next healthy call goes through.
    let res = client
        .ready()
        .await
        .unwrap()
        .call(get(addr, None))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_deadline_within_the_margin_is_not_sent_nor_counted() {
    let (addr, hits) = server().await;
    let mut config = config();
    let mut outgoing = OutgoingDeadlineConfig::default();
    outgoing.margin = Some(Duration::from_mins(1));
    let mut deadline = DeadlineConfig::default();
    deadline.outgoing = Some(outgoing);
    config.deadline = Some(deadline);
    let inner = staunch::http::reqwest(reqwest::Client::new());
    let (mut client, handle) = staunch::http::client("ledger", inner, &config).unwrap();

    // Five seconds left, all of it margin: the propagation layer does not send the request.
    for _ in 0..4 {
        let err = client
            .ready()
            .await
            .unwrap()
            .call(get(addr, Some(Deadline::after(Duration::from_secs(5)))))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::DeadlineExpired(_)),
            "expected a DeadlineExpired rejection, got {err:?}"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let breaker = handle.breaker().snapshot();
    assert_eq!((breaker.failed_calls, breaker.state), (0, State::Closed));
    assert_eq!(handle.retry().metrics().retries, 0);
    assert_eq!(handle.bulkhead().metrics().in_flight, 0);
}

#[tokio::test]
async fn a_refused_call_leaves_no_bulkhead_permit_behind() {
    let (addr, hits) = server().await;
    let inner = staunch::http::reqwest(reqwest::Client::new());
    let (mut client, handle) = staunch::http::client("ledger", inner, &config()).unwrap();

    let err = client
        .ready()
        .await
        .unwrap()
        .call(get(addr, Some(Deadline::at(Instant::now()))))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeadlineExpired(_)), "{err:?}");
    assert_eq!(
        handle.bulkhead().metrics().in_flight,
        0,
        "nothing runs, so nothing holds the bulkhead's one permit"
    );
    // Another caller (a clone, as each request handler has) gets the permit.
    let mut other = client.clone();
    let res = other
        .ready()
        .await
        .unwrap()
        .call(get(addr, None))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

// Each staunch layer that can answer a call itself, over a bulkhead of one.

fn bulkhead_of_one() -> Bulkhead {
    Bulkhead::builder("dep").max_concurrent(1).build().unwrap()
}

fn ok_service()
-> impl Service<Request, Response = &'static str, Error = std::io::Error, Future: Send> + Clone {
    service_fn(|_: Request| async { Ok::<_, std::io::Error>("done") })
}

fn expired_request() -> Request {
    let mut req = http::Request::new(String::new());
    req.extensions_mut().insert(Deadline::at(Instant::now()));
    req
}

#[tokio::test(start_paused = true)]
async fn a_timeout_refusing_an_expired_call_gives_back_the_bulkhead_permit() {
    let bulkhead = bulkhead_of_one();
    let limit = TimeLimit::new(Duration::from_secs(1)).unwrap();
    let mut svc = TimeoutLayer::from_limit(limit)
        .layer(BulkheadLayer::new(bulkhead.clone()).layer(ok_service()));
    svc.ready().await.unwrap();
    assert_eq!(bulkhead.metrics().in_flight, 1, "reserved by poll_ready");
    let err = svc.call(expired_request()).await.unwrap_err();
    assert!(err.is::<DeadlineExpired>(), "{err:?}");
    assert!(!err.is::<Elapsed>());
    assert_eq!(bulkhead.metrics().in_flight, 0);
    // The handle is usable again.
    let done = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(String::new()))
        .await;
    assert_eq!(done.unwrap(), "done");
}

#[tokio::test(start_paused = true)]
async fn deadline_propagation_refusing_a_call_gives_back_the_bulkhead_permit() {
    let bulkhead = bulkhead_of_one();
    let mut svc = PropagateDeadlineLayer::http()
        .layer(BulkheadLayer::new(bulkhead.clone()).layer(ok_service()));
    svc.ready().await.unwrap();
    assert_eq!(bulkhead.metrics().in_flight, 1);
    let err = svc.call(expired_request()).await.unwrap_err();
    assert!(err.is::<DeadlineExpired>(), "{err:?}");
    assert_eq!(bulkhead.metrics().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_rejecting_in_call_gives_back_the_bulkhead_permit() {
    let bulkhead = bulkhead_of_one();
    let breaker = CircuitBreaker::builder("dep").build().unwrap();
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .layer(BulkheadLayer::new(bulkhead.clone()).layer(ok_service()));
    // Closed when polled ready, so the bulkhead reserved; opened (by another task, say)
    // before the call.
    svc.ready().await.unwrap();
    assert_eq!(bulkhead.metrics().in_flight, 1);
    breaker.force_open();
    let err = svc
        .call(http::Request::new(String::new()))
        .await
        .unwrap_err();
    assert!(err.is::<BreakerOpen>(), "{err:?}");
    assert_eq!(bulkhead.metrics().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_breaker_rejecting_gives_back_the_bulkhead_permit() {
    let bulkhead = bulkhead_of_one();
    let layer = KeyedCircuitBreakerLayer::new(
        CircuitBreaker::builder("dep").build_config().unwrap(),
        8,
        |r: &Request| r.uri().path().to_owned(),
    );
    let registry = layer.registry();
    let mut svc = layer.layer(BulkheadLayer::new(bulkhead.clone()).layer(ok_service()));
    registry.breaker_for(&"/".to_owned()).force_open();
    svc.ready().await.unwrap();
    assert_eq!(bulkhead.metrics().in_flight, 1);
    let err = svc
        .call(http::Request::new(String::new()))
        .await
        .unwrap_err();
    assert!(err.is::<BreakerOpen>(), "{err:?}");
    assert_eq!(bulkhead.metrics().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_bulkhead_turning_a_call_away_gives_back_the_inner_permit() {
    let inner_bulkhead = bulkhead_of_one();
    let partitions = PartitionedBulkhead::<String>::builder("tenants")
        .default_limit(1)
        .build()
        .unwrap();
    let held = partitions.try_acquire(&"acme".to_owned()).unwrap();
    let mut svc = PartitionedBulkheadLayer::new(partitions, |_: &Request| "acme".to_owned())
        .layer(BulkheadLayer::new(inner_bulkhead.clone()).layer(ok_service()));
    svc.ready().await.unwrap();
    assert_eq!(inner_bulkhead.metrics().in_flight, 1);
    let err = svc
        .call(http::Request::new(String::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(rejection_of(&*err), Some(Rejection::BulkheadFull(f)) if f.name().contains("tenants")),
        "{err:?}"
    );
    assert_eq!(inner_bulkhead.metrics().in_flight, 0);
    drop(held);
}

/// An error of a client's own that carries a refusal as its source (a layer further in, say,
/// whose error the client wraps).
#[derive(Debug)]
struct Wrapped(DeadlineExpired);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request failed")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[tokio::test(start_paused = true)]
async fn the_retry_layer_never_retries_a_call_that_was_not_sent() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let inner = service_fn(move |_: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<http::Response<String>, _>(Wrapped(DeadlineExpired::new(None))) }
    });
    let (mut client, handle) = staunch::http::client("ledger", inner, &config()).unwrap();
    let err = client
        .ready()
        .await
        .unwrap()
        .call(http::Request::get("/").body(String::new()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Inner(Wrapped(_))), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one attempt, not three");
    assert_eq!(handle.retry().metrics().retries, 0);
    assert_eq!(handle.breaker().snapshot().failed_calls, 0);
}

#[test]
fn deadline_expired_is_a_staunch_error_of_its_own() {
    let refused = DeadlineExpired::new(Some(Arc::from("ledger")));
    let err = Error::<std::io::Error>::from_box(Box::new(refused.clone()));
    assert!(matches!(&err, Error::DeadlineExpired(e) if *e == refused));
    assert!(err.is_rejection());
    assert!(err.to_string().contains("not sent"), "{err}");
    // It prints its summary and returns the rejection as its source (not both in Display).
    let source = std::error::Error::source(&err).expect("the rejection");
    assert!(source.is::<DeadlineExpired>());
    let boxed = err.into_box_error();
    assert!(boxed.is::<DeadlineExpired>());
    assert!(matches!(
        Error::<std::io::Error>::from_box(boxed),
        Error::DeadlineExpired(_)
    ));
    // gRPC: the caller's deadline is exceeded.
    let status = staunch::grpc::status_of(Box::new(refused));
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert!(matches!(
        rejection_of(&status),
        Some(Rejection::DeadlineExpired(_))
    ));
}
