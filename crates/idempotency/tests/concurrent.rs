//! 100 concurrent repeats of one key, from a reqwest client to an axum server on loopback:
//! exactly one reaches the handler, on every store.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use staunch_idempotency::{Idempotency, IdempotencyStore, MemoryStore};

async fn hundred_repeats<St: IdempotencyStore>(store: St) {
    let calls = Arc::new(AtomicUsize::new(0));
    // Repeats wait for the first, so every one of them gets the same answer.
    let settings = Idempotency::builder()
        .in_flight_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let addr = support::serve(support::app(store, settings, calls.clone())).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/charges");
    let requests = (0..100).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let r = client
                .post(url)
                .header("idempotency-key", "\"order-1:charge:action\"")
                .body("42")
                .send()
                .await
                .unwrap();
            let replayed = r.headers().contains_key("idempotent-replayed");
            (r.status().as_u16(), replayed, r.text().await.unwrap())
        })
    });
    let mut replays = 0;
    for request in requests.collect::<Vec<_>>() {
        let (status, replayed, body) = request.await.unwrap();
        assert_eq!((status, body.as_str()), (201, "charged 42 #1"));
        replays += usize::from(replayed);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "exactly one reached the handler"
    );
    assert_eq!(replays, 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_runs_one_of_100_concurrent_repeats() {
    hundred_repeats(MemoryStore::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_runs_one_of_100_concurrent_repeats() {
    let (pool, _file) = support::sqlite_pool("concurrent").await;
    let store = staunch_idempotency::SqliteStore::open(pool).await.unwrap();
    hundred_repeats(store).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_runs_one_of_100_concurrent_repeats() {
    let Some((pool, _schema)) = support::pg_pool("concurrent").await else {
        return;
    };
    let store = staunch_idempotency::PostgresStore::open(pool)
        .await
        .unwrap();
    hundred_repeats(store).await;
}

/// 20 concurrent takeovers of a key whose lease has ended (a crashed holder): exactly one
/// starts, the others see it in flight.
async fn twenty_takeovers<St: IdempotencyStore>(store: St) {
    use staunch_idempotency::{Begin, Claim, Fingerprint};
    let claim = |n: u8| Claim::new("k".into(), Fingerprint([n; 32]), Duration::from_mins(1));
    let crashed = claim(0);
    assert_eq!(
        store
            .begin(&crashed, Duration::from_millis(50))
            .await
            .unwrap(),
        Begin::Started
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tries = (1..=20).map(|n| {
        let store = store.clone();
        tokio::spawn(async move { store.begin(&claim(n), Duration::from_mins(1)).await })
    });
    let mut started = 0;
    for found in tries.collect::<Vec<_>>() {
        match found.await.unwrap().unwrap() {
            Begin::Started => started += 1,
            Begin::InFlight { fingerprint } => assert_ne!(fingerprint, Fingerprint([0; 32])),
            other @ Begin::Finished { .. } => panic!("{other:?}"),
        }
    }
    assert_eq!(started, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_lets_one_of_20_take_over_an_expired_key() {
    twenty_takeovers(MemoryStore::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_lets_one_of_20_take_over_an_expired_key() {
    let (pool, _file) = support::sqlite_pool("takeover").await;
    let store = staunch_idempotency::SqliteStore::open(pool).await.unwrap();
    twenty_takeovers(store).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_lets_one_of_20_take_over_an_expired_key() {
    let Some((pool, _schema)) = support::pg_pool("takeover").await else {
        return;
    };
    let store = staunch_idempotency::PostgresStore::open(pool)
        .await
        .unwrap();
    twenty_takeovers(store).await;
}
