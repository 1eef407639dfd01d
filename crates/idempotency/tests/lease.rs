//! The layer's write after the handler: skipped when the handler recorded its reply in its
//! own transaction (`finish_in`), and a lost lease reported rather than swallowed.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use staunch_idempotency::{
    Begin, Claim, Idempotency, IdempotencyLayer, IdempotencyStore, MemoryStore, Outcome, StoreError,
};
use support::{post_with_key, send};

/// A store that counts the layer's `finish` calls and keeps what each returned.
#[derive(Debug, Clone)]
struct Counting<St> {
    inner: St,
    finishes: Arc<Mutex<Vec<Result<(), String>>>>,
}

impl<St> Counting<St> {
    fn new(inner: St) -> Self {
        Counting {
            inner,
            finishes: Arc::default(),
        }
    }

    fn finishes(&self) -> Vec<Result<(), String>> {
        self.finishes.lock().unwrap().clone()
    }
}

impl<St: IdempotencyStore> IdempotencyStore for Counting<St> {
    async fn begin(&self, claim: &Claim, lease: Duration) -> Result<Begin, StoreError> {
        self.inner.begin(claim, lease).await
    }
    async fn finish(
        &self,
        claim: &Claim,
        outcome: &Outcome,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let done = self.inner.finish(claim, outcome, ttl).await;
        let seen = match &done {
            Ok(()) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        self.finishes.lock().unwrap().push(seen);
        done
    }
    async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        self.inner.release(claim).await
    }
    async fn purge(&self) -> Result<u64, StoreError> {
        self.inner.purge().await
    }
}

/// `/charges` records its reply with `finish_in` in its transaction; `/plain` does not.
macro_rules! finish_in_test {
    ($name:ident, $feature:literal, $setup:expr, $store:ty) => {
        #[cfg(feature = $feature)]
        #[tokio::test]
        async fn $name() {
            use axum::extract::Extension;
            use staunch_idempotency::StoredResponse;
            let Some((pool, _guard)) = $setup else { return };
            let store = <$store>::open(pool.clone()).await.unwrap();
            let counting = Counting::new(store.clone());
            let app = Router::new()
                .route(
                    "/charges",
                    post(move |Extension(claim): Extension<Claim>| async move {
                        let mut tx = pool.begin().await.unwrap();
                        let response = StoredResponse::new(http::StatusCode::CREATED, "charged");
                        store.finish_in(&mut *tx, &claim, &response).await.unwrap();
                        assert!(claim.is_recorded());
                        tx.commit().await.unwrap();
                        (http::StatusCode::CREATED, "charged")
                    }),
                )
                .route("/plain", post(|| async { "plain" }))
                .layer(IdempotencyLayer::new(
                    counting.clone(),
                    Idempotency::default(),
                ));
            let req = || support::post_with_key(Some("k1"), "");
            assert_eq!(send(&app, req()).await, (201, false, "charged".into()));
            assert_eq!(send(&app, req()).await, (201, true, "charged".into()));
            assert!(
                counting.finishes().is_empty(),
                "the layer wrote the reply again: {:?}",
                counting.finishes()
            );

            // Without `finish_in`, the layer writes the reply once.
            let plain = http::Request::post("/plain")
                .header("idempotency-key", "k2")
                .body(axum::body::Body::empty())
                .unwrap();
            assert_eq!(send(&app, plain).await, (200, false, "plain".into()));
            assert_eq!(counting.finishes(), vec![Ok(())]);
        }
    };
}

finish_in_test!(
    sqlite_finish_in_leaves_the_layer_nothing_to_write,
    "sqlite",
    Some(support::sqlite_pool("finish_in").await),
    staunch_idempotency::SqliteStore
);

finish_in_test!(
    postgres_finish_in_leaves_the_layer_nothing_to_write,
    "postgres",
    support::pg_pool("finish_in").await,
    staunch_idempotency::PostgresStore
);

/// Collects what the tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_is_reported_and_the_response_still_sent() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);

    let store = Counting::new(MemoryStore::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let settings = Idempotency::builder()
        .lease(Duration::from_secs(1))
        .build()
        .unwrap();
    let app = {
        let (gate, calls) = (gate.clone(), calls.clone());
        Router::new()
            .route(
                "/charges",
                post(move || async move {
                    // The first call outlives its lease; the second answers at once.
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == 1 {
                        let _permit = gate.acquire().await.unwrap();
                    }
                    format!("call {n}")
                }),
            )
            .layer(IdempotencyLayer::new(store.clone(), settings))
    };
    let slow = tokio::spawn({
        let app = app.clone();
        async move { send(&app, post_with_key(Some("k"), "")).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The lease has ended: a repeat takes the key over and runs.
    assert_eq!(
        send(&app, post_with_key(Some("k"), "")).await,
        (200, false, "call 2".into())
    );
    gate.add_permits(1);
    // The slow one's client still gets its answer...
    assert_eq!(slow.await.unwrap(), (200, false, "call 1".into()));
    // ...but its record was refused as a lost lease, and the log says so.
    let finishes = store.finishes();
    assert_eq!(finishes.len(), 2);
    assert_eq!(finishes[0], Ok(()));
    assert!(
        finishes[1]
            .as_ref()
            .is_err_and(|e| e.contains("no longer held")),
        "{finishes:?}"
    );
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("WARN") && log.contains("lease lost") && log.contains("0::k"),
        "{log}"
    );
    // The record is the one that took the key over.
    assert_eq!(
        send(&app, post_with_key(Some("k"), "")).await,
        (200, true, "call 2".into())
    );
}
