//! Three real axum replicas on loopback and a reqwest client through the balancer: a replica
//! answering 500 loses its traffic once ejected and gets it back after the ejection time; a
//! replica that refuses connections is ejected the same way; with every replica failing, only
//! the configured share is ejected; a call dropped mid-flight leaves no count behind.
//!
//! Real sockets need real time, so ejection times are short and every wait is bounded: the
//! tests sleep until the instant the balancer's status reports, never for a guessed while.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use staunch_core::HttpStatus;
use staunch_outlier::{Balancer, BoxError};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};

/// One replica: answers `status` (0 means: hang for a minute), counts its requests.
#[derive(Debug, Default)]
struct Replica {
    status: AtomicU16,
    hits: AtomicUsize,
}

impl Replica {
    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn handler(State(replica): State<Arc<Replica>>) -> (StatusCode, &'static str) {
    replica.hits.fetch_add(1, Ordering::SeqCst);
    match replica.status.load(Ordering::SeqCst) {
        0 => {
            tokio::time::sleep(Duration::from_mins(1)).await;
            (StatusCode::OK, "late")
        }
        status => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            "answer",
        ),
    }
}

async fn serve() -> (String, Arc<Replica>) {
    let replica = Arc::new(Replica::default());
    replica.answer(200);
    let app = Router::new()
        .route("/", get(handler))
        .with_state(Arc::clone(&replica));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, replica)
}

/// The service that calls one replica: `GET {url}/`.
fn endpoint(
    client: &reqwest::Client,
    url: &str,
) -> impl Service<(), Response = reqwest::Response, Error = reqwest::Error, Future: Send>
+ Clone
+ Send
+ 'static {
    let client = client.clone();
    let url = format!("{url}/");
    service_fn(move |()| client.get(url.clone()).send())
}

async fn call<S>(b: &mut S) -> Result<reqwest::Response, BoxError>
where
    S: Service<(), Response = reqwest::Response, Error = BoxError>,
{
    b.ready().await?.call(()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answering_500_loses_its_traffic_until_its_time_has_passed() {
    let client = reqwest::Client::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(serve().await);
    }
    let mut b = Balancer::builder("replicas")
        .endpoints(
            replicas
                .iter()
                .map(|(url, _)| (url.clone(), endpoint(&client, url))),
        )
        .classifier(HttpStatus::empty().failures(500..=599))
        .consecutive_failures(3)
        .base_ejection_time(Duration::from_secs(1))
        .max_ejection_percent(50)
        .seed(11)
        .build()
        .unwrap();
    let (bad_url, bad) = &replicas[1];
    bad.answer(500);

    // Bounded: three failures in a row on "bad" come within a few hundred calls.
    for _ in 0..300 {
        if b.endpoint(bad_url).unwrap().state.is_ejected() {
            break;
        }
        call(&mut b).await.unwrap();
    }
    let until = b
        .endpoint(bad_url)
        .unwrap()
        .ejected_until()
        .expect("ejected");
    let before = bad.hits();
    for _ in 0..30 {
        assert_eq!(call(&mut b).await.unwrap().status(), 200);
    }
    assert!(
        Instant::now() < until,
        "the calls outlasted the ejection; the count is moot"
    );
    assert_eq!(bad.hits(), before, "an ejected replica got calls");
    for (_, r) in [&replicas[0], &replicas[2]] {
        assert!(r.hits() > 0);
    }

    // Healed, and back once the time the status gave has passed.
    bad.answer(200);
    tokio::time::sleep_until(until).await;
    for _ in 0..60 {
        assert_eq!(call(&mut b).await.unwrap().status(), 200);
    }
    assert!(
        bad.hits() - before >= 5,
        "{} calls after return",
        bad.hits() - before
    );
    let status = b.endpoint(bad_url).unwrap();
    assert!(!status.state.is_ejected());
    assert_eq!(status.times_ejected, 1);
    assert_eq!(b.metrics().returns, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refusing_connections_is_ejected() {
    let client = reqwest::Client::new();
    let (a_url, a) = serve().await;
    let (b_url, _b) = serve().await;
    // A port nobody listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut b = Balancer::builder("dead")
        .endpoint(a_url.clone(), endpoint(&client, &a_url))
        .endpoint(b_url.clone(), endpoint(&client, &b_url))
        .endpoint(dead_url.clone(), endpoint(&client, &dead_url))
        .classifier(HttpStatus::empty().failures(500..=599))
        .consecutive_failures(2)
        .base_ejection_time(Duration::from_secs(30))
        .seed(4)
        .build()
        .unwrap();
    let mut refused = 0;
    for _ in 0..100 {
        match call(&mut b).await {
            Ok(res) => assert_eq!(res.status(), 200),
            Err(err) => {
                assert!(
                    err.downcast_ref::<reqwest::Error>()
                        .is_some_and(reqwest::Error::is_connect),
                    "{err}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 2, "two refused connections in a row eject it");
    assert!(b.endpoint(&dead_url).unwrap().state.is_ejected());
    assert!(a.hits() > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_failing_only_the_share_is_ejected() {
    let client = reqwest::Client::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let (url, r) = serve().await;
        r.answer(503);
        replicas.push((url, r));
    }
    let mut b = Balancer::builder("outage")
        .endpoints(
            replicas
                .iter()
                .map(|(url, _)| (url.clone(), endpoint(&client, url))),
        )
        .classifier(HttpStatus::empty().failures(500..=599))
        .consecutive_failures(2)
        .base_ejection_time(Duration::from_secs(30))
        .max_ejection_percent(67)
        .seed(8)
        .build()
        .unwrap();
    for _ in 0..100 {
        assert_eq!(call(&mut b).await.unwrap().status(), 503);
        let out = b.status().iter().filter(|s| s.state.is_ejected()).count();
        assert!(out <= 2, "{out} of 3 ejected with 67 %");
    }
    let status = b.status();
    assert_eq!(status.iter().filter(|s| s.state.is_ejected()).count(), 2);
    // The one left in carries every call.
    let left = status.iter().find(|s| !s.state.is_ejected()).unwrap();
    let (_, r) = replicas.iter().find(|(url, _)| *url == left.key).unwrap();
    let before = r.hits();
    for _ in 0..10 {
        call(&mut b).await.unwrap();
    }
    assert_eq!(r.hits(), before + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_mid_flight_leaves_no_count_behind() {
    let client = reqwest::Client::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let (url, r) = serve().await;
        r.answer(0);
        replicas.push((url, r));
    }
    let mut b = Balancer::builder("hung")
        .endpoints(
            replicas
                .iter()
                .map(|(url, _)| (url.clone(), endpoint(&client, url))),
        )
        .classifier(HttpStatus::empty().failures(500..=599))
        .seed(6)
        .build()
        .unwrap();
    for _ in 0..6 {
        let res = tokio::time::timeout(Duration::from_millis(50), call(&mut b)).await;
        assert!(res.is_err(), "a hung replica answered");
    }
    let status = b.status();
    assert!(status.iter().all(|s| s.in_flight == 0), "{status:?}");
    assert!(status.iter().all(|s| s.consecutive_failures == 0));
}
