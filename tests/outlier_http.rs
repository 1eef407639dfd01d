//! Retry over the outlier balancer over three real axum replicas, each behind its own
//! circuit breaker, with a reqwest client: one replica answering 503 costs the callers
//! nothing (each of its answers is retried on another replica), is ejected after its failures
//! in a row, and gets no attempt while it is out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use staunch::HttpStatus;
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use staunch::core::Backoff;
use staunch::outlier::Balancer;
use staunch::retry::{RetryLayer, RetryPolicy};
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

#[derive(Debug, Default)]
struct Replica {
    status: AtomicU16,
    hits: AtomicUsize,
}

async fn handler(State(replica): State<Arc<Replica>>) -> StatusCode {
    replica.hits.fetch_add(1, Ordering::SeqCst);
    StatusCode::from_u16(replica.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
}

async fn serve() -> (String, Arc<Replica>) {
    let replica = Arc::new(Replica::default());
    replica.status.store(200, Ordering::SeqCst);
    let app = Router::new()
        .route("/", get(handler))
        .with_state(Arc::clone(&replica));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_lands_on_another_replica_and_the_sick_one_is_ejected() {
    let client = reqwest::Client::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(serve().await);
    }
    let endpoint = |url: &str| {
        let (client, url) = (client.clone(), url.to_owned());
        let breaker = CircuitBreaker::builder(url.clone()).build().unwrap();
        CircuitBreakerLayer::new(breaker)
            .with_classifier(HttpStatus::new())
            .layer(service_fn(move |()| client.get(url.clone()).send()))
    };
    let balancer = Balancer::builder("replicas")
        .endpoints(replicas.iter().map(|(url, _)| (url.clone(), endpoint(url))))
        .classifier(HttpStatus::empty().failures(500..=599))
        .consecutive_failures(3)
        .base_ejection_time(Duration::from_secs(30))
        .seed(12)
        .build()
        .unwrap();
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(1)).build().unwrap())
        .build()
        .unwrap();
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(balancer.clone());
    let (sick_url, sick) = &replicas[1];
    sick.status.store(503, Ordering::SeqCst);

    for _ in 0..100 {
        let res = client.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(res.status(), 200, "a caller saw the sick replica's answer");
    }
    let status = balancer.endpoint(sick_url).unwrap();
    assert!(status.state.is_ejected(), "{status:?}");
    assert_eq!(status.times_ejected, 1);
    // It was tried until its third failure in a row, and not once after.
    assert_eq!(sick.hits.load(Ordering::SeqCst), 3);
    let healthy: usize = [&replicas[0], &replicas[2]]
        .iter()
        .map(|(_, r)| r.hits.load(Ordering::SeqCst))
        .sum();
    assert_eq!(healthy, 100);
}
