//! The layer's answers, on the memory store with paused time.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::Request;
use staunch_idempotency::{
    Begin, Claim, Idempotency, IdempotencyLayer, IdempotencyStore, MemoryStore, Outcome, Oversized,
    StoreError,
};
use support::{app, post_with_key, send};

fn settings() -> Idempotency {
    Idempotency::default()
}

#[tokio::test(start_paused = true)]
async fn a_repeat_gets_the_stored_response_without_reaching_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(MemoryStore::new(), settings(), calls.clone());
    let first = send(&app, post_with_key(Some("\"k1\""), "10")).await;
    assert_eq!(first, (201, false, "charged 10 #1".into()));
    // A bare key is the same key.
    let again = send(&app, post_with_key(Some("k1"), "10")).await;
    assert_eq!(again, (201, true, "charged 10 #1".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Stored headers are replayed, the others not.
    let response = tower::ServiceExt::oneshot(app.clone(), post_with_key(Some("k1"), "10"))
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert!(response.headers().get("x-call").is_none());
    // Another key runs.
    assert_eq!(
        send(&app, post_with_key(Some("k2"), "10")).await.2,
        "charged 10 #2"
    );
    // No key, not required: passes through every time.
    assert_eq!(send(&app, post_with_key(None, "1")).await.2, "charged 1 #3");
    assert_eq!(send(&app, post_with_key(None, "1")).await.2, "charged 1 #4");
}

#[tokio::test(start_paused = true)]
async fn a_key_reused_for_another_request_is_422() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(MemoryStore::new(), settings(), calls.clone());
    send(&app, post_with_key(Some("k"), "10")).await;
    let other = send(&app, post_with_key(Some("k"), "11")).await;
    assert_eq!(other.0, 422);
    assert!(other.2.contains("different request"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn missing_and_bad_keys_are_400_with_a_reason() {
    let calls = Arc::new(AtomicUsize::new(0));
    let required = Idempotency::builder()
        .require_key(true)
        .max_key_len(8)
        .build()
        .unwrap();
    let app = app(MemoryStore::new(), required, calls.clone());
    for (key, reason) in [
        (None, "needs an Idempotency-Key"),
        (Some("\"\""), "must not be empty"),
        (Some("123456789"), "longer than"),
        (Some("\"unterminated"), "quoted string"),
    ] {
        let (status, _, body) = send(&app, post_with_key(key, "1")).await;
        assert_eq!(status, 400, "{key:?}");
        assert!(body.contains(reason), "{key:?}: {body}");
    }
    let non_ascii = Request::post("/charges")
        .header(
            "idempotency-key",
            http::HeaderValue::from_bytes(b"cl\xc3\xa9").unwrap(),
        )
        .body(Body::from("1"))
        .unwrap();
    let (status, _, body) = send(&app, non_ascii).await;
    assert_eq!((status, body.contains("printable ASCII")), (400, true));
    let twice = Request::post("/charges")
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .body(Body::from("1"))
        .unwrap();
    assert_eq!(send(&app, twice).await.0, 400);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A handler that blocks until released, to hold a key in flight.
fn gated_app(
    store: MemoryStore,
    settings: Idempotency,
    gate: Arc<tokio::sync::Semaphore>,
    calls: Arc<AtomicUsize>,
) -> Router {
    Router::new()
        .route(
            "/charges",
            post(move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _permit = gate.acquire().await.unwrap();
                "done"
            }),
        )
        .layer(IdempotencyLayer::new(store, settings))
}

#[tokio::test(start_paused = true)]
async fn a_repeat_in_flight_is_409_or_waits_for_the_first() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let app = gated_app(MemoryStore::new(), settings(), gate.clone(), calls.clone());
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_with_key(Some("k"), "")).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let (status, _, body) = send(&app, post_with_key(Some("k"), "")).await;
    assert_eq!(
        (status, body.contains("still being processed")),
        (409, true)
    );
    gate.add_permits(1);
    assert_eq!(first.await.unwrap(), (200, false, "done".into()));

    // With a wait: the repeat gets the first's response once it finishes.
    let waiting = Idempotency::builder()
        .in_flight_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let app = gated_app(MemoryStore::new(), waiting, gate.clone(), calls.clone());
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_with_key(Some("k"), "")).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let repeat = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_with_key(Some("k"), "")).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    gate.add_permits(1);
    assert!(!first.await.unwrap().1);
    assert_eq!(repeat.await.unwrap(), (200, true, "done".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_not_stored_so_a_retry_runs_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = Router::new()
        .route(
            "/charges",
            post(move || async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    (http::StatusCode::SERVICE_UNAVAILABLE, "down")
                } else {
                    (http::StatusCode::NOT_FOUND, "no such card")
                }
            }),
        )
        .layer(IdempotencyLayer::new(MemoryStore::new(), settings()));
    assert_eq!(send(&app, post_with_key(Some("k"), "")).await.0, 503);
    assert_eq!(
        send(&app, post_with_key(Some("k"), "")).await,
        (404, false, "no such card".into())
    );
    // 4xx is stored by default.
    assert_eq!(
        send(&app, post_with_key(Some("k"), "")).await,
        (404, true, "no such card".into())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_response_over_the_cap_is_sent_whole_but_not_replayed() {
    for (oversized, repeat_status, runs) in [
        (Oversized::RefuseRepeats, 409, 1),
        (Oversized::Reprocess, 201, 2),
    ] {
        let calls = Arc::new(AtomicUsize::new(0));
        let s = Idempotency::builder()
            .max_stored_body(5)
            .oversized(oversized)
            .build()
            .unwrap();
        let app = app(MemoryStore::new(), s, calls.clone());
        let first = send(&app, post_with_key(Some("k"), "0123456789")).await;
        assert_eq!(first, (201, false, "charged 0123456789 #1".into()));
        let repeat = send(&app, post_with_key(Some("k"), "0123456789")).await;
        assert_eq!(repeat.0, repeat_status, "{oversized:?}");
        assert!(!repeat.1);
        assert_eq!(calls.load(Ordering::SeqCst), runs);
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_body_over_the_cap_is_413() {
    let calls = Arc::new(AtomicUsize::new(0));
    let s = Idempotency::builder().max_request_body(4).build().unwrap();
    let app = app(MemoryStore::new(), s, calls.clone());
    assert_eq!(send(&app, post_with_key(Some("k"), "12345")).await.0, 413);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// A store whose every call fails.
#[derive(Debug, Clone)]
struct Down;

fn down() -> StoreError {
    StoreError::Database("connection refused".into())
}

impl IdempotencyStore for Down {
    async fn begin(&self, _: &Claim, _: Duration) -> Result<Begin, StoreError> {
        Err(down())
    }
    async fn finish(&self, _: &Claim, _: &Outcome, _: Duration) -> Result<(), StoreError> {
        Err(down())
    }
    async fn release(&self, _: &Claim) -> Result<(), StoreError> {
        Err(down())
    }
    async fn purge(&self) -> Result<u64, StoreError> {
        Err(down())
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_failure_refuses_with_503_and_never_runs_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let s = Idempotency::builder()
        .retry_after(Duration::from_secs(3))
        .build()
        .unwrap();
    let app = app(Down, s, calls.clone());
    let response = tower::ServiceExt::oneshot(app, post_with_key(Some("k"), "1"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn keys_are_scoped_per_tenant() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let by_tenant = |parts: &http::request::Parts| {
        parts
            .headers
            .get("x-tenant")?
            .to_str()
            .ok()
            .map(str::to_owned)
    };
    let app = Router::new()
        .route(
            "/charges",
            post(move || async move { counter.fetch_add(1, Ordering::SeqCst).to_string() }),
        )
        .layer(IdempotencyLayer::new(MemoryStore::new(), settings()).with_scope(by_tenant));
    let req = |tenant: Option<&str>| {
        let mut b = Request::post("/charges").header("idempotency-key", "k");
        if let Some(t) = tenant {
            b = b.header("x-tenant", t);
        }
        b.body(Body::empty()).unwrap()
    };
    assert_eq!(send(&app, req(Some("a"))).await.2, "0");
    assert_eq!(send(&app, req(Some("b"))).await.2, "1");
    assert_eq!(send(&app, req(Some("a"))).await, (200, true, "0".into()));
    assert_eq!(send(&app, req(None)).await.0, 400);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_in_flight_mark_lapses_with_its_lease_and_records_with_their_ttl() {
    let calls = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let s = Idempotency::builder()
        .lease(Duration::from_secs(10))
        .ttl(Duration::from_secs(100))
        .build()
        .unwrap();
    let app = app(store.clone(), s.clone(), calls.clone());
    // A crashed process left this mark: same key, same request, never finished.
    let fingerprint = staunch_idempotency::Fingerprint::of(
        staunch_idempotency::FingerprintParts::default(),
        &http::Method::POST,
        &"/charges".parse().unwrap(),
        b"1",
    );
    let crashed = Claim::new("0::k".into(), fingerprint, s.ttl());
    assert_eq!(
        store.begin(&crashed, s.lease()).await.unwrap(),
        Begin::Started
    );
    assert_eq!(send(&app, post_with_key(Some("k"), "1")).await.0, 409);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(send(&app, post_with_key(Some("k"), "1")).await.0, 201);
    assert!(send(&app, post_with_key(Some("k"), "1")).await.1);
    tokio::time::advance(Duration::from_secs(101)).await;
    assert_eq!(store.purge().await.unwrap(), 1);
    assert!(store.is_empty());
    assert_eq!(
        send(&app, post_with_key(Some("k"), "1")).await,
        (201, false, "charged 1 #2".into())
    );
}

#[tokio::test(start_paused = true)]
async fn the_background_purge_runs_and_ends_when_the_store_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let store = MemoryStore::with_purge_interval(Duration::from_secs(1));
    assert_eq!(metrics.num_alive_tasks(), before + 1);
    let claim = Claim::new(
        "k".into(),
        staunch_idempotency::Fingerprint([0; 32]),
        Duration::from_secs(1),
    );
    store
        .begin(&claim, Duration::from_millis(500))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(store.is_empty(), "purged in the background");
    drop(store);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "the purge task ended with its store"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_frees_its_key() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::new();
    let app = gated_app(store.clone(), settings(), gate.clone(), calls.clone());
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_with_key(Some("k"), "")).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(store.len(), 1);
    first.abort();
    let _ = first.await;
    tokio::task::yield_now().await;
    assert!(store.is_empty(), "the key was freed");
    gate.add_permits(1);
    assert_eq!(
        send(&app, post_with_key(Some("k"), "")).await,
        (200, false, "done".into())
    );
}

#[test]
fn public_types_are_send_sync_unpin() {
    fn check<T: Send + Sync + Unpin>() {}
    check::<MemoryStore>();
    check::<IdempotencyLayer<MemoryStore>>();
    check::<Idempotency>();
    check::<Claim>();
}
