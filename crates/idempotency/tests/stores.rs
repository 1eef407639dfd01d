//! The SQL stores: leases, TTLs, purge and damaged rows, the same checks on each.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use staunch_idempotency::{
    Begin, Claim, Fingerprint, Idempotency, IdempotencyStore, Outcome, StoreError, StoredResponse,
};

fn claim(key: &str, byte: u8) -> Claim {
    Claim::new(
        key.into(),
        Fingerprint([byte; 32]),
        Duration::from_millis(300),
    )
}

/// Lease, finish, replay, TTL, purge, release and a stale token, through the trait.
async fn lifecycle<St: IdempotencyStore>(store: St) {
    let first = claim("k", 1);
    assert_eq!(
        store
            .begin(&first, Duration::from_millis(200))
            .await
            .unwrap(),
        Begin::Started
    );
    let repeat = claim("k", 1);
    assert_eq!(
        store.begin(&repeat, Duration::from_mins(1)).await.unwrap(),
        Begin::InFlight {
            fingerprint: Fingerprint([1; 32])
        }
    );
    // The lease lapses (a crashed holder): the key is taken over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let takeover = claim("k", 2);
    assert_eq!(
        store
            .begin(&takeover, Duration::from_mins(1))
            .await
            .unwrap(),
        Begin::Started
    );
    // The first holder's late finish is refused as a lost lease (not swallowed) and records
    // nothing; its late release does nothing.
    let late = Outcome::Stored(StoredResponse::new(http::StatusCode::OK, "late"));
    let lost = store.finish(&first, &late, Duration::from_mins(1)).await;
    assert!(
        matches!(&lost, Err(StoreError::LeaseLost { key }) if key == "k"),
        "{lost:?}"
    );
    store.release(&first).await.unwrap();
    // Trailers (gRPC's status travels there) are kept with the rest.
    let response = StoredResponse::new(http::StatusCode::CREATED, "ok")
        .with_header(
            http::header::LOCATION,
            http::HeaderValue::from_static("/c/1"),
        )
        .with_trailer(
            http::HeaderName::from_static("grpc-status"),
            http::HeaderValue::from_static("0"),
        )
        .with_trailer(
            http::HeaderName::from_static("x-trailing"),
            http::HeaderValue::from_static("a"),
        );
    store
        .finish(
            &takeover,
            &Outcome::Stored(response.clone()),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .begin(&claim("k", 9), Duration::from_mins(1))
            .await
            .unwrap(),
        Begin::Finished {
            fingerprint: Fingerprint([2; 32]),
            outcome: Outcome::Stored(response)
        }
    );
    // Released keys are free at once; finished ones after their TTL, and purged.
    let other = claim("other", 3);
    store.begin(&other, Duration::from_mins(1)).await.unwrap();
    store.release(&other).await.unwrap();
    assert_eq!(
        store
            .begin(&claim("other", 4), Duration::from_millis(1))
            .await
            .unwrap(),
        Begin::Started
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.purge().await.unwrap(), 2);
    assert_eq!(
        store
            .begin(&claim("k", 5), Duration::from_mins(1))
            .await
            .unwrap(),
        Begin::Started
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_lifecycle() {
    let (pool, _file) = support::sqlite_pool("lifecycle").await;
    lifecycle(staunch_idempotency::SqliteStore::open(pool).await.unwrap()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_lifecycle() {
    let Some((pool, _schema)) = support::pg_pool("lifecycle").await else {
        return;
    };
    lifecycle(
        staunch_idempotency::PostgresStore::open(pool)
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn memory_lifecycle() {
    lifecycle(staunch_idempotency::MemoryStore::new()).await;
}

/// Damaged rows, each answered 500 naming the damage, never a panic.
const DAMAGE: &[(&str, &str)] = &[
    (
        "UPDATE staunch_idempotency SET fingerprint = X'00'",
        "fingerprint",
    ),
    ("UPDATE staunch_idempotency SET status = 42", "status"),
    ("UPDATE staunch_idempotency SET status = NULL", "status"),
    (
        "UPDATE staunch_idempotency SET headers = X'0001'",
        "headers",
    ),
    ("UPDATE staunch_idempotency SET body = NULL", "body"),
    ("UPDATE staunch_idempotency SET state = 7", "state"),
    (
        "UPDATE staunch_idempotency SET trailers = X'0001'",
        "trailers",
    ),
];

/// A finished row as written before trailers were kept, in a table without the column: the
/// store adds the column when it opens, and the row reads back with no trailers.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn old_row_reads_back<St: IdempotencyStore>(store: St) {
    let found = store
        .begin(&claim("0::old", 1), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        found,
        Begin::Finished {
            fingerprint: Fingerprint([1; 32]),
            outcome: Outcome::Stored(StoredResponse::new(http::StatusCode::CREATED, "old")),
        }
    );
    // New rows keep their trailers in the same table.
    let new = claim("0::new", 2);
    store.begin(&new, Duration::from_secs(5)).await.unwrap();
    let reply = StoredResponse::grpc(b"reply");
    store
        .finish(
            &new,
            &Outcome::Stored(reply.clone()),
            Duration::from_mins(1),
        )
        .await
        .unwrap();
    let found = store
        .begin(&claim("0::new", 2), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        found,
        Begin::Finished {
            fingerprint: Fingerprint([2; 32]),
            outcome: Outcome::Stored(reply),
        }
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_sqlite_table_from_before_trailers_is_migrated_and_its_rows_read() {
    use staunch_idempotency::sqlx;
    let (pool, _file) = support::sqlite_pool("old").await;
    sqlx::query(
        "CREATE TABLE staunch_idempotency (key TEXT PRIMARY KEY NOT NULL,
            fingerprint BLOB NOT NULL, token INTEGER NOT NULL, state INTEGER NOT NULL,
            expires_at INTEGER NOT NULL, status INTEGER, headers BLOB, body BLOB)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO staunch_idempotency VALUES ('0::old', ?, 1, 1, ?, 201, X'', 'old')")
        .bind(vec![1u8; 32])
        .bind(i64::MAX)
        .execute(&pool)
        .await
        .unwrap();
    let store = staunch_idempotency::SqliteStore::open(pool.clone())
        .await
        .unwrap();
    old_row_reads_back(store).await;
    // Opening again finds the column there.
    staunch_idempotency::SqliteStore::open(pool).await.unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_table_from_before_trailers_is_migrated_and_its_rows_read() {
    use staunch_idempotency::sqlx;
    let Some((pool, _schema)) = support::pg_pool("old").await else {
        return;
    };
    sqlx::query(
        "CREATE TABLE staunch_idempotency (key TEXT PRIMARY KEY NOT NULL,
            fingerprint BYTEA NOT NULL, token BIGINT NOT NULL, state BIGINT NOT NULL,
            expires_at BIGINT NOT NULL, status BIGINT, headers BYTEA, body BYTEA)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO staunch_idempotency VALUES ('0::old', $1, 1, 1, $2, 201, $3, $4)")
        .bind(vec![1u8; 32])
        .bind(i64::MAX)
        .bind(Vec::<u8>::new())
        .bind(b"old".to_vec())
        .execute(&pool)
        .await
        .unwrap();
    let store = staunch_idempotency::PostgresStore::open(pool.clone())
        .await
        .unwrap();
    old_row_reads_back(store).await;
    staunch_idempotency::PostgresStore::open(pool)
        .await
        .unwrap();
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_damaged_sqlite_row_is_refused_with_500() {
    use staunch_idempotency::sqlx;
    for (damage, what) in DAMAGE {
        let (pool, _file) = support::sqlite_pool("damage").await;
        let store = staunch_idempotency::SqliteStore::open(pool.clone())
            .await
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let app = support::app(store.clone(), Idempotency::default(), calls.clone());
        assert_eq!(
            support::send(&app, support::post_with_key(Some("k"), "1"))
                .await
                .0,
            201
        );
        sqlx::query(sqlx::AssertSqlSafe(damage.to_string()))
            .execute(&pool)
            .await
            .unwrap();
        let (status, _, body) = support::send(&app, support::post_with_key(Some("k"), "1")).await;
        assert_eq!(status, 500, "{damage}");
        assert!(body.contains("damaged"), "{body}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "never run again on a damaged record"
        );
        let Err(StoreError::Corrupt { key, what: found }) =
            store.begin(&claim("0::k", 0), Duration::from_secs(1)).await
        else {
            panic!("{damage}: not reported as damage");
        };
        assert_eq!(key, "0::k");
        assert!(found.contains(what), "{damage}: {found}");
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_damaged_postgres_row_is_refused_with_500() {
    use staunch_idempotency::sqlx;
    for (damage, _) in DAMAGE {
        let Some((pool, _schema)) = support::pg_pool("damage").await else {
            return;
        };
        let store = staunch_idempotency::PostgresStore::open(pool.clone())
            .await
            .unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let app = support::app(store.clone(), Idempotency::default(), calls.clone());
        assert_eq!(
            support::send(&app, support::post_with_key(Some("k"), "1"))
                .await
                .0,
            201
        );
        let damage = damage
            .replace("X'00'", "'\\x00'::bytea")
            .replace("X'0001'", "'\\x0001'::bytea");
        sqlx::query(sqlx::AssertSqlSafe(damage.clone()))
            .execute(&pool)
            .await
            .unwrap();
        let (status, _, _) = support::send(&app, support::post_with_key(Some("k"), "1")).await;
        assert_eq!(status, 500, "{damage}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn the_sqlite_purge_task_ends_when_the_store_is_dropped() {
    let (pool, _file) = support::sqlite_pool("purge").await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let store = staunch_idempotency::SqliteStore::open_with_purge_interval(
        pool.clone(),
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    let alive = metrics.num_alive_tasks();
    assert!(alive > before);
    let c = claim("k", 1);
    store.begin(&c, Duration::from_millis(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left: i64 = sqlx_count(&pool).await;
    assert_eq!(left, 0, "purged in the background");
    drop(store);
    for _ in 0..100 {
        if metrics.num_alive_tasks() < alive {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the purge task outlived its store");
}

#[cfg(feature = "sqlite")]
async fn sqlx_count(pool: &staunch_idempotency::sqlx::SqlitePool) -> i64 {
    use staunch_idempotency::sqlx::Row;
    staunch_idempotency::sqlx::query("SELECT COUNT(*) FROM staunch_idempotency")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}
