//! The tower layers, over in-process services and a real HTTP server on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use staunch_rate_limit::{
    HttpHints, KeyPanicked, KeyedRateLimitLayer, KeyedRateLimiter, RateLimitLayer, RateLimited,
    RateLimiter,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn counting() -> (
    Arc<AtomicUsize>,
    impl Service<u32, Response = u32, Error = std::io::Error, Future: Send> + Clone,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let svc = service_fn(move |n: u32| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(n) }
    });
    (calls, svc)
}

#[tokio::test(start_paused = true)]
async fn a_refused_call_never_reaches_the_service() {
    let limiter = RateLimiter::builder("dep")
        .rate(1, Duration::from_secs(1))
        .build()
        .unwrap();
    let (calls, inner) = counting();
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter.clone()))
        .service(inner);
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 1);
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    let limited = err
        .downcast_ref::<RateLimited>()
        .expect("a RateLimited rejection");
    assert_eq!(limited.retry_after(), Duration::from_secs(1));
    assert!(staunch_core::rejection_of(&*err).is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(limiter.metrics().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_is_sent_when_its_slot_comes() {
    let limiter = RateLimiter::builder("dep")
        .rate(1, Duration::from_millis(100))
        .max_wait(Duration::from_millis(250))
        .build()
        .unwrap();
    let (calls, inner) = counting();
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter))
        .service(inner);
    let start = Instant::now();
    let mut pending = Vec::new();
    for n in 0..3 {
        pending.push(svc.ready().await.unwrap().call(n));
    }
    // Only the first went in; the others wait in their futures.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mut at = Vec::new();
    for f in pending {
        f.await.unwrap();
        at.push(start.elapsed());
    }
    assert_eq!(at, [0, 100, 200].map(Duration::from_millis).to_vec());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Two more wait 100 and 200 ms; a third would wait 300 ms (> 250): refused at once.
    let a = svc.ready().await.unwrap().call(7);
    let b = svc.ready().await.unwrap().call(8);
    let err = svc.ready().await.unwrap().call(9).await.unwrap_err();
    assert!(err.is::<RateLimited>());
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (7, 8));
    assert_eq!(start.elapsed(), Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_dropped_is_never_sent_and_gives_its_slot_back() {
    let limiter = RateLimiter::builder("dep")
        .rate(1, Duration::from_millis(100))
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let (calls, inner) = counting();
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter.clone()))
        .service(inner);
    svc.ready().await.unwrap().call(0).await.unwrap();
    let mut waiting = Box::pin(svc.ready().await.unwrap().call(1));
    assert!((&mut waiting).now_or_never().is_none());
    assert_eq!(limiter.wait_time(), Duration::from_millis(200));
    drop(waiting);
    assert_eq!(limiter.wait_time(), Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_key_extractor_fails_its_call_and_nothing_else() {
    let limiter: KeyedRateLimiter<u32> = RateLimiter::builder("tenants")
        .rate(1, Duration::from_secs(1))
        .build_keyed()
        .unwrap();
    let (calls, inner) = counting();
    let layer = KeyedRateLimitLayer::new(limiter, |n: &u32| {
        assert!(*n != 13, "no tenant 13");
        *n
    });
    let mut svc = ServiceBuilder::new().layer(layer).service(inner);
    let err = svc.ready().await.unwrap().call(13).await.unwrap_err();
    let panicked = err.downcast_ref::<KeyPanicked>().expect("KeyPanicked");
    assert!(panicked.message().contains("no tenant 13"), "{err}");
    assert!(err.to_string().contains("`tenants`"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    svc.ready().await.unwrap().call(1).await.unwrap();
    svc.ready().await.unwrap().call(2).await.unwrap();
    assert!(svc.ready().await.unwrap().call(1).await.is_err());
}

#[test]
fn the_futures_are_send_and_the_common_one_is_small() {
    let limiter = RateLimiter::builder("dep")
        .rate(1, Duration::from_secs(1))
        .build()
        .unwrap();
    let (_, inner) = counting();
    let mut svc = RateLimitLayer::new(limiter).layer(inner);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let inner_size = {
        let (_, mut raw) = counting();
        std::mem::size_of_val(&raw.call(0))
    };
    let fut = svc.call(0);
    fn send<T: Send>(_: &T) {}
    send(&fut);
    // The waiting state is boxed: the future is the inner one plus a few words.
    assert!(
        std::mem::size_of_val(&fut) <= inner_size + 48,
        "{} vs {inner_size}",
        std::mem::size_of_val(&fut)
    );
}

mod http {
    use super::*;

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    /// A server that answers 429 with `Retry-After: 2` while `limited` is set, else 200.
    async fn server(limited: Arc<AtomicUsize>, hits: Arc<AtomicUsize>) -> String {
        let app = Router::new().route(
            "/",
            get(move || {
                let limited = Arc::clone(&limited);
                let hits = Arc::clone(&hits);
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let mut headers = HeaderMap::new();
                    if limited.load(Ordering::SeqCst) > 0 {
                        limited.fetch_sub(1, Ordering::SeqCst);
                        headers.insert("retry-after", "2".parse().unwrap());
                        (StatusCode::TOO_MANY_REQUESTS, headers)
                    } else {
                        headers.insert("ratelimit", "\"default\";r=50;t=1".parse().unwrap());
                        (StatusCode::OK, headers)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn a_429_from_a_real_server_stops_calls_until_its_retry_after() {
        let limited = Arc::new(AtomicUsize::new(1));
        let hits = Arc::new(AtomicUsize::new(0));
        let url = server(Arc::clone(&limited), Arc::clone(&hits)).await;
        let client = reqwest::Client::new();
        let limiter = RateLimiter::builder("server")
            .rate(1000, Duration::from_secs(1))
            .build()
            .unwrap();
        let send = service_fn(move |req: reqwest::Request| {
            let client = client.clone();
            async move { client.execute(req).await.map(::http::Response::from) }
        });
        let mut svc = ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter.clone()).hints(HttpHints))
            .service(send);
        let request = || reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
        let first = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(first.status(), 429);
        // The server said "2 seconds": the next call is refused locally, never sent.
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap_err();
        let limited_err = err.downcast_ref::<RateLimited>().expect("RateLimited");
        assert!(limited_err.retry_after() > Duration::from_millis(1500));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(limiter.metrics().hints, 1);
    }

    #[tokio::test]
    async fn a_quota_header_paces_the_calls_the_server_still_accepts() {
        let hits = Arc::new(AtomicUsize::new(0));
        let url = server(Arc::new(AtomicUsize::new(0)), Arc::clone(&hits)).await;
        let client = reqwest::Client::new();
        let limiter = RateLimiter::builder("server")
            .rate(10_000, Duration::from_secs(1))
            .build()
            .unwrap();
        let send = service_fn(move |req: reqwest::Request| {
            let client = client.clone();
            async move { client.execute(req).await.map(::http::Response::from) }
        });
        let mut svc = ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter.clone()).hints(HttpHints))
            .service(send);
        let request = || reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
        svc.ready().await.unwrap().call(request()).await.unwrap();
        // 50 left in the next second: one per 20 ms from now on, though the limiter allows
        // 10 000/s with a burst of 10 000.
        limiter.try_acquire().unwrap();
        let wait = limiter.try_acquire().unwrap_err().retry_after();
        assert!(
            wait > Duration::from_millis(10) && wait <= Duration::from_millis(20),
            "{wait:?}"
        );
    }
}
