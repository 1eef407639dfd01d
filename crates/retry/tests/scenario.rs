//! A real axum server on loopback that fails the first two calls, called through
//! `reqwest::Client` wrapped in the retry layer.
#![cfg(feature = "reqwest")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use staunch_core::{Backoff, Jitter};
use staunch_retry::{GiveUp, GiveUpReason, RetryExhausted, RetryLayer, RetryPolicy};
use tower::{Layer, ServiceExt};

/// Serves `/flaky` (503 for the first two calls, then 200) and `/orders` (always 503).
async fn server(hits: Arc<AtomicU32>) -> std::net::SocketAddr {
    async fn flaky(State(hits): State<Arc<AtomicU32>>) -> (StatusCode, &'static str) {
        if hits.fetch_add(1, Ordering::SeqCst) < 2 {
            (StatusCode::SERVICE_UNAVAILABLE, "try again")
        } else {
            (StatusCode::OK, "in stock")
        }
    }
    async fn orders(State(hits): State<Arc<AtomicU32>>) -> StatusCode {
        hits.fetch_add(1, Ordering::SeqCst);
        StatusCode::SERVICE_UNAVAILABLE
    }
    let app = Router::new()
        .route("/flaky", get(flaky))
        .route("/orders", post(orders))
        .with_state(hits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn policy() -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(3)
        .backoff(
            Backoff::exponential(Duration::from_millis(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .max_total_time(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn reqwest_through_the_layer_succeeds_on_the_third_attempt() {
    let hits = Arc::new(AtomicU32::new(0));
    let addr = server(Arc::clone(&hits)).await;
    let client = reqwest::Client::new();
    let policy = policy();
    let svc =
        RetryLayer::new(policy.clone()).layer(tower::service_fn(move |req: reqwest::Request| {
            let client = client.clone();
            async move { client.execute(req).await }
        }));
    let req = reqwest::Request::new(
        reqwest::Method::GET,
        format!("http://{addr}/flaky").parse().unwrap(),
    );
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "in stock");
    assert_eq!(hits.load(Ordering::SeqCst), 3, "the server saw three calls");
    assert_eq!(policy.metrics().retries, 2);
}

#[tokio::test]
async fn a_post_through_reqwest_is_sent_once_unless_it_has_an_idempotency_key() {
    let hits = Arc::new(AtomicU32::new(0));
    let addr = server(Arc::clone(&hits)).await;
    let client = reqwest::Client::new();
    let svc = RetryLayer::new(policy()).layer(tower::service_fn(move |req: reqwest::Request| {
        let client = client.clone();
        async move { client.execute(req).await }
    }));
    let url = format!("http://{addr}/orders");
    let plain = reqwest::Client::new()
        .post(&url)
        .body("{}")
        .build()
        .unwrap();
    let res = svc.clone().oneshot(plain).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(
        res.extensions().get::<GiveUp>().is_none(),
        "never retried: untouched"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let keyed = reqwest::Client::new()
        .post(&url)
        .header("Idempotency-Key", "order-7")
        .body("{}")
        .build()
        .unwrap();
    let res = svc.oneshot(keyed).await.unwrap();
    assert_eq!(res.status(), 503);
    let gave_up = res.extensions().get::<GiveUp>().expect("the give-up");
    assert_eq!(
        (gave_up.attempts, gave_up.reason),
        (3, GiveUpReason::MaxAttempts)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_returned() {
    // Bind and drop a listener: connecting to its port is refused.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let client = reqwest::Client::new();
    let policy = policy();
    let svc =
        RetryLayer::new(policy.clone()).layer(tower::service_fn(move |req: reqwest::Request| {
            let client = client.clone();
            async move { client.execute(req).await }
        }));
    let req = reqwest::Request::new(
        reqwest::Method::GET,
        format!("http://{addr}/").parse().unwrap(),
    );
    let err = svc.oneshot(req).await.unwrap_err();
    let gave_up = err
        .downcast_ref::<RetryExhausted>()
        .expect("the reqwest error, annotated");
    assert_eq!(
        (gave_up.attempts(), gave_up.reason()),
        (3, GiveUpReason::MaxAttempts)
    );
    let last = gave_up
        .last()
        .downcast_ref::<reqwest::Error>()
        .expect("the reqwest error, as reqwest returned it");
    assert!(last.is_connect());
    assert_eq!(policy.metrics().retries, 2);
}
