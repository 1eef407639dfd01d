//! The HTTP layer: a real axum server on loopback answering the chosen responses to reqwest,
//! and in-process checks of the response it makes.
#![cfg(feature = "http")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use staunch_fault::{BoxError, FaultConfig, FaultInjected, FaultInjector, HttpFaultLayer};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// A payment server whose charges go through `injector`; returns its address and the
/// number of charges its handler ran.
async fn payment_server(injector: FaultInjector) -> (String, Arc<AtomicUsize>) {
    let charged = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&charged);
    let app = Router::new()
        .route(
            "/charges",
            post(move || {
                let seen = Arc::clone(&seen);
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::CREATED, "charged")
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                // An abort fails the call; a server answers it somehow.
                .layer(HandleErrorLayer::new(|err: BoxError| async move {
                    (StatusCode::BAD_GATEWAY, err.to_string())
                }))
                .layer(HttpFaultLayer::new(injector)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/charges"), charged)
}

#[tokio::test]
async fn a_loopback_server_answers_the_chosen_500_and_503_to_reqwest() {
    let injector = FaultInjector::builder("payment")
        .error(1.0, 500)
        .error_body("card network down")
        .seed(1)
        .build()
        .unwrap();
    let (url, charged) = payment_server(injector.clone()).await;
    let client = reqwest::Client::new();

    let res = client.post(&url).send().await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "card network down");
    assert_eq!(charged.load(Ordering::SeqCst), 0, "the handler never ran");

    injector
        .set(
            FaultConfig::none()
                .with_error(1.0, 503)
                .with_error_body("try later"),
        )
        .unwrap();
    let res = client.post(&url).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.text().await.unwrap(), "try later");

    injector.disable();
    let res = client.post(&url).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.text().await.unwrap(), "charged");
    assert_eq!(charged.load(Ordering::SeqCst), 1);

    injector.set(FaultConfig::none().with_abort(1.0)).unwrap();
    let res = client.post(&url).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert!(res.text().await.unwrap().contains("aborted"));
    assert_eq!(charged.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_error_preset_over_loopback_fails_its_share_of_charges() {
    let injector = FaultConfig::error()
        .with_seed(2024)
        .build("payment")
        .unwrap();
    let (url, charged) = payment_server(injector.clone()).await;
    let client = reqwest::Client::new();
    let mut failed = 0;
    for _ in 0..200 {
        match client.post(&url).send().await.unwrap().status().as_u16() {
            500 => failed += 1,
            201 => {}
            other => panic!("status {other}"),
        }
    }
    // 70 % of 200, within about 4 standard deviations (6.5 calls each).
    assert!((114..=166).contains(&failed), "{failed} of 200");
    assert_eq!(charged.load(Ordering::SeqCst), 200 - failed);
    assert_eq!(injector.metrics().errors, failed as u64);
}

#[tokio::test(start_paused = true)]
async fn an_injected_response_says_it_was_injected() {
    let injector = FaultInjector::builder("payment")
        .error(1.0, 503)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(HttpFaultLayer::new(injector))
        .service(service_fn(|_: http::Request<()>| async {
            Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from("real"))))
        }));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let fault = res.extensions().get::<FaultInjected>().expect("marked");
    assert_eq!(fault.status(), Some(503));
    assert!(
        res.headers().get("content-type").is_none(),
        "no body, no type"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
}
