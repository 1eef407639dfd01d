//! The HTTP preset and the reqwest adapter with a real reqwest client on loopback: a server
//! that closes the connection without answering, a server hint that would pass the caller's
//! deadline, and the adapter sending every request where reqwest itself would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use staunch::retry::{GiveUp, GiveUpReason};
use staunch::timeout::Deadline;
use staunch::{BackoffConfig, BackoffStrategy, Error, JitterConfig, StackConfig};
use tokio::io::AsyncReadExt;
use tower::{Service, ServiceExt};

fn config(attempts: u32) -> StackConfig {
    let mut config = StackConfig::default();
    config.retry.max_attempts = Some(attempts);
    let mut backoff = BackoffConfig::new(BackoffStrategy::Constant, Duration::from_millis(10));
    backoff.jitter = Some(JitterConfig::None);
    config.retry.backoff = Some(backoff);
    config.attempt_timeout = Some(Duration::from_secs(10));
    config.timeout = Some(Duration::from_secs(30));
    config
}

/// A server that accepts each connection, reads the request head and closes the connection
/// without a byte of answer; counts the requests it read.
async fn closes_without_answering() -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                // Dropping the stream closes the connection with a FIN, not a reset.
                drop(stream);
            });
        }
    });
    (addr, requests)
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_retried_for_a_get_not_for_a_post() {
    let (addr, requests) = closes_without_answering().await;
    let inner = staunch::http::reqwest(reqwest::Client::new());
    let (mut client, _handle) = staunch::http::client("closing", inner, &config(3)).unwrap();

    // A GET is idempotent: the closed connection is the same transient failure as a reset,
    // retried until the attempts run out.
    let get = http::Request::get(format!("http://{addr}/stock"))
        .body(String::new())
        .unwrap();
    let err = client.ready().await.unwrap().call(get).await.unwrap_err();
    assert_eq!(requests.load(Ordering::SeqCst), 3, "{err:?}");
    let Error::RetriesExhausted {
        attempts, reason, ..
    } = &err
    else {
        panic!("expected RetriesExhausted, got {err:?}");
    };
    assert_eq!((*attempts, *reason), (3, GiveUpReason::MaxAttempts));
    assert!(matches!(err.last(), Error::Inner(_)), "{err:?}");

    // A POST without an Idempotency-Key may have been acted on: sent once, its error as it is.
    requests.store(0, Ordering::SeqCst);
    let post = http::Request::post(format!("http://{addr}/orders"))
        .body(String::from("{}"))
        .unwrap();
    let err = client.ready().await.unwrap().call(post).await.unwrap_err();
    assert_eq!(requests.load(Ordering::SeqCst), 1, "{err:?}");
    assert!(matches!(err, Error::Inner(_)), "{err:?}");
}

#[tokio::test]
async fn a_retry_after_past_the_callers_deadline_returns_the_503_at_once() {
    use axum::http::{StatusCode, header};
    use axum::routing::get as route;

    let hits = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/busy",
        route(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "5")],
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let inner = staunch::http::reqwest(reqwest::Client::new());
    let (mut client, _handle) = staunch::http::client("busy", inner, &config(3)).unwrap();
    let mut req = http::Request::get(format!("http://{addr}/busy"))
        .body(String::new())
        .unwrap();
    // Two seconds left, and the server asks for five: no retry can be made in time.
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(2)));
    let started = tokio::time::Instant::now();
    let res = client.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        res.extensions()
            .get::<GiveUp>()
            .map(|g| (g.attempts, g.reason)),
        Some((1, GiveUpReason::Deadline))
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "returned without waiting: {:?}",
        started.elapsed()
    );
}

/// A server answering every request with what it received: method, request target and host.
async fn echo() -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(
        |method: http::Method, uri: http::Uri, headers: http::HeaderMap| async move {
            let host = headers
                .get("host")
                .map(|h| h.to_str().unwrap_or("?").to_owned());
            format!("{method} {uri} {}", host.unwrap_or_default())
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The adapter remembers the URLs it converted; whatever it remembers, each request reaches
/// the server exactly as reqwest's own `send` sends it, also from clones used at once.
#[tokio::test]
async fn the_adapter_sends_every_request_where_reqwest_itself_sends_it() {
    let (a, b) = (echo().await, echo().await);
    let paths = [
        "/",
        "/orders",
        "/orders",
        "/orders?id=1",
        "/orders?id=2",
        "/orders/7/../8",
        "/a%2Fb",
        "/%7euser",
        "/x?",
        "/x?q=%20&r",
        "/orders",
        "/",
        "/~!$&'()*+,;=:@",
    ];
    // Runs of one origin (each path after the previous one), then other origins, so each
    // way of converting is taken: a repeat, a new path or query, a new origin.
    let origins = [
        a.to_string(),
        format!("localhost:{}", a.port()),
        b.to_string(),
    ];
    let uris: Vec<String> = origins
        .iter()
        .flat_map(|origin| {
            paths
                .iter()
                .map(move |path| format!("http://{origin}{path}"))
        })
        .collect();
    let client = reqwest::Client::new();
    let adapter = staunch::http::reqwest::<String>(client.clone());
    let read = |res: http::Response<reqwest::Body>| async move {
        use http_body_util::BodyExt;
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    for round in 0..2 {
        let mut calls = Vec::new();
        for uri in &uris {
            let mut adapter = adapter.clone();
            let (client, uri) = (client.clone(), uri.clone());
            calls.push(tokio::spawn(async move {
                let request = http::Request::get(uri.as_str())
                    .body(String::new())
                    .unwrap();
                let sent = adapter.ready().await.unwrap().call(request).await.unwrap();
                let by_reqwest = client.get(uri.as_str()).send().await.unwrap();
                let by_reqwest: http::Response<reqwest::Body> = by_reqwest.into();
                (uri, sent, by_reqwest)
            }));
            if round == 0 {
                // One at a time first, so every conversion goes through the memory.
                let (uri, sent, by_reqwest) = calls.pop().unwrap().await.unwrap();
                assert_eq!(read(sent).await, read(by_reqwest).await, "{uri}");
            }
        }
        for call in calls {
            let (uri, sent, by_reqwest) = call.await.unwrap();
            assert_eq!(read(sent).await, read(by_reqwest).await, "{uri}");
        }
    }
}
