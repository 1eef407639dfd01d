//! The client side: a key from the request's extensions goes out as the header, and the retry
//! layer then retries the POST; the server behind the idempotency layer runs it once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use http::Request;
use staunch_idempotency::{Idempotency, IdempotencyKey, IdempotencyKeyLayer, MemoryStore};
use staunch_retry::{RetryLayer, RetryPolicy};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_keyed_post_is_retried_and_runs_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = support::app(MemoryStore::new(), Idempotency::default(), calls.clone());
    // The network loses the first answer: the server ran, the client saw a 503.
    let lost = Arc::new(AtomicUsize::new(0));
    let network = tower::service_fn(move |req: Request<String>| {
        let (server, lost) = (server.clone(), lost.clone());
        async move {
            let req = req.map(Body::from);
            let response = server.oneshot(req).await.unwrap();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let status = if lost.fetch_add(1, Ordering::SeqCst) == 0 {
                503
            } else {
                response.status().as_u16()
            };
            Ok::<_, std::io::Error>(
                http::Response::builder()
                    .status(status)
                    .header("x-replayed", replayed.to_string())
                    .body(())
                    .unwrap(),
            )
        }
    });
    let policy = RetryPolicy::builder().max_attempts(3).build().unwrap();
    let client = ServiceBuilder::new()
        .layer(IdempotencyKeyLayer)
        .layer(RetryLayer::new(policy))
        .service(network);
    let mut req = Request::post("http://payment/charges")
        .body(String::from("250"))
        .unwrap();
    req.extensions_mut()
        .insert(IdempotencyKey::new("order-7:charge:action").unwrap());
    let response = tokio::time::timeout(Duration::from_mins(1), client.clone().oneshot(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["x-replayed"],
        "true",
        "the retry got the stored answer"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "charged once");

    // Without a key the POST is sent once.
    let req = Request::post("http://payment/charges")
        .body(String::from("1"))
        .unwrap();
    let response = client.oneshot(req).await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
