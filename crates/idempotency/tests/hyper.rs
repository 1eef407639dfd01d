//! The layer under a bare hyper server (no axum router): `Incoming` mapped to a body buildable
//! from bytes, a plain tower service inside.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use staunch_idempotency::{Idempotency, IdempotencyLayer, MemoryStore};
use tower::ServiceBuilder;

#[tokio::test]
async fn a_hyper_server_replays_repeats() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = ServiceBuilder::new()
        .map_request(|req: Request<Incoming>| req.map(axum::body::Body::new))
        .layer(IdempotencyLayer::new(
            MemoryStore::new(),
            Idempotency::default(),
        ))
        .service(tower::service_fn(move |req: Request<axum::body::Body>| {
            let counter = counter.clone();
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let text = format!("{} #{n}", String::from_utf8_lossy(&body));
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let client = reqwest::Client::new();
    for replayed in [false, true, true] {
        let r = client
            .post(format!("http://{addr}/pay"))
            .header("idempotency-key", "\"k\"")
            .body("7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers().contains_key("idempotent-replayed"), replayed);
        assert_eq!(r.text().await.unwrap(), "7 #1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
