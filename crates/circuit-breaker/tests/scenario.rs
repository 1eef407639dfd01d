//! A real axum server on loopback that starts failing, called through a real
//! `reqwest::Client` wrapped in the layer: the breaker opens, calls fail fast without reaching
//! the server, and it closes again once the server has recovered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::routing::get;
use staunch_circuit_breaker::{BreakerOpen, CircuitBreaker, CircuitBreakerLayer, State};
use staunch_core::HttpStatus;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[derive(Default)]
struct Payment {
    hits: AtomicUsize,
    failing: AtomicBool,
}

async fn pay(AxumState(payment): AxumState<Arc<Payment>>) -> StatusCode {
    payment.hits.fetch_add(1, Ordering::SeqCst);
    if payment.failing.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn serve(payment: Arc<Payment>) -> String {
    let app = Router::new().route("/pay", get(pay)).with_state(payment);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/pay")
}

#[tokio::test]
async fn breaker_opens_on_500s_fails_fast_and_closes_after_recovery() {
    let payment = Arc::new(Payment::default());
    let url = serve(payment.clone()).await;
    // Long enough that the 20 rejected calls below cannot outlast it, even on a loaded machine.
    let open_for = Duration::from_millis(500);
    let breaker = CircuitBreaker::builder("payment")
        .count_window(10)
        .minimum_calls(5)
        .failure_rate_threshold(50.0)
        .permitted_calls_in_half_open(3)
        .open_duration(open_for)
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).with_classifier(HttpStatus::new()))
        .service_fn(move |req: reqwest::Request| client.execute(req));
    let request = || reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
    let hits = || payment.hits.load(Ordering::SeqCst);

    // Healthy.
    for _ in 0..5 {
        let response = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!((hits(), breaker.state()), (5, State::Closed));

    // The server starts failing: 500s go through (as responses) until half the window failed.
    payment.failing.store(true, Ordering::SeqCst);
    for _ in 0..5 {
        let response = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(response.status(), 500);
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(hits(), 10);

    // Open: calls fail fast and never reach the server.
    for _ in 0..20 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap_err();
        let open = err
            .downcast_ref::<BreakerOpen>()
            .expect("a rejection, not a transport error");
        assert_eq!(open.name(), "payment");
        assert!(open.retry_after().is_some_and(|d| d <= open_for));
    }
    assert_eq!(hits(), 10, "no request reached the server while open");
    assert_eq!(breaker.snapshot().rejected_calls, 20);

    // The server recovers; after the open duration the probes find out and the breaker closes.
    payment.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(open_for + Duration::from_millis(50)).await;
    for _ in 0..3 {
        let response = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(hits(), 13);
    for _ in 0..10 {
        svc.ready().await.unwrap().call(request()).await.unwrap();
    }
    assert_eq!((hits(), breaker.state()), (23, State::Closed));
}

#[tokio::test]
async fn a_failing_probe_reopens_without_flooding_the_server() {
    let payment = Arc::new(Payment::default());
    payment.failing.store(true, Ordering::SeqCst);
    let url = serve(payment.clone()).await;
    let breaker = CircuitBreaker::builder("payment")
        .count_window(4)
        .minimum_calls(4)
        .permitted_calls_in_half_open(1)
        .open_duration(Duration::from_millis(100))
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let svc = CircuitBreakerLayer::new(breaker.clone())
        .with_classifier(HttpStatus::new())
        .layer(tower::service_fn(move |req: reqwest::Request| {
            client.execute(req)
        }));
    let call = || {
        svc.clone().oneshot(reqwest::Request::new(
            reqwest::Method::GET,
            url.parse().unwrap(),
        ))
    };
    for _ in 0..4 {
        call().await.unwrap();
    }
    assert_eq!(breaker.state(), State::Open);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // 10 concurrent calls while half-open: one probe reaches the server.
    let results = futures::future::join_all((0..10).map(|_| call())).await;
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 9);
    assert_eq!(payment.hits.load(Ordering::SeqCst), 5);
    assert_eq!(breaker.state(), State::Open, "the probe got a 500");
}
