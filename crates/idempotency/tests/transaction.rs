//! Exactly once with the handler's own database: the response is recorded in the handler's
//! transaction (`finish_in`), so the business write and the record commit together or not at
//! all.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::Extension;
use axum::routing::post;
use axum::{Router, body::Body};
use staunch_idempotency::{Claim, Idempotency, IdempotencyLayer, StoredResponse};

/// The handler fails after its write and the record, before commit, while `fail` is set.
macro_rules! transactional_test {
    ($name:ident, $feature:literal, $setup:expr, $store:ty, $table:literal) => {
        #[cfg(feature = $feature)]
        #[tokio::test]
        async fn $name() {
            use staunch_idempotency::sqlx::{self, Row};
            let Some((pool, _guard)) = $setup else { return };
            sqlx::query($table).execute(&pool).await.unwrap();
            let store = <$store>::open(pool.clone()).await.unwrap();
            let fail = Arc::new(AtomicBool::new(true));
            let calls = Arc::new(AtomicUsize::new(0));
            let app = {
                let (st, pool, fail, calls) =
                    (store.clone(), pool.clone(), fail.clone(), calls.clone());
                Router::new()
                    .route(
                        "/charges",
                        post(
                            move |Extension(claim): Extension<Claim>, body: String| async move {
                                calls.fetch_add(1, Ordering::SeqCst);
                                let mut tx = pool.begin().await.unwrap();
                                sqlx::query("INSERT INTO charges (amount) VALUES ($1)")
                                    .bind(body.parse::<i64>().unwrap())
                                    .execute(&mut *tx)
                                    .await
                                    .unwrap();
                                let response = StoredResponse::new(
                                    http::StatusCode::CREATED,
                                    format!("charged {body}"),
                                );
                                st.finish_in(&mut *tx, &claim, &response).await.unwrap();
                                if fail.load(Ordering::SeqCst) {
                                    // A crash here: the transaction is never committed.
                                    drop(tx);
                                    return (
                                        http::StatusCode::INTERNAL_SERVER_ERROR,
                                        "crashed".to_owned(),
                                    );
                                }
                                tx.commit().await.unwrap();
                                (
                                    response.status,
                                    String::from_utf8(response.body.to_vec()).unwrap(),
                                )
                            },
                        ),
                    )
                    .layer(IdempotencyLayer::new(store.clone(), Idempotency::default()))
            };
            let count = |table: &'static str| {
                let pool = pool.clone();
                async move {
                    let n: i64 =
                        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                            .fetch_one(&pool)
                            .await
                            .unwrap()
                            .get(0);
                    n
                }
            };
            let req = || -> http::Request<Body> {
                support::post_with_key(Some("order-7:charge:action"), "250")
            };

            // A failure between the business write and the commit leaves neither.
            assert_eq!(support::send(&app, req()).await.0, 500);
            assert_eq!(count("charges").await, 0);
            assert_eq!(
                count("staunch_idempotency").await,
                0,
                "no record, not even in flight"
            );

            // The retry runs, commits both, and every repeat replays.
            fail.store(false, Ordering::SeqCst);
            assert_eq!(
                support::send(&app, req()).await,
                (201, false, "charged 250".into())
            );
            for _ in 0..3 {
                assert_eq!(
                    support::send(&app, req()).await,
                    (201, true, "charged 250".into())
                );
            }
            assert_eq!(count("charges").await, 1, "charged exactly once");
            assert_eq!(calls.load(Ordering::SeqCst), 2);

            // A restarted process (a new store on the same database) still replays.
            drop(app);
            drop(store);
            let reopened = <$store>::open(pool.clone()).await.unwrap();
            let app = support::app(
                reopened,
                Idempotency::default(),
                Arc::new(AtomicUsize::new(0)),
            );
            let replay = support::send(&app, req()).await;
            assert_eq!(
                (replay.0, replay.1, replay.2.as_str()),
                (201, true, "charged 250")
            );
            assert_eq!(count("charges").await, 1);
        }
    };
}

transactional_test!(
    sqlite_business_write_and_record_commit_together,
    "sqlite",
    Some(support::sqlite_pool("tx").await),
    staunch_idempotency::SqliteStore,
    "CREATE TABLE charges (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL)"
);

transactional_test!(
    postgres_business_write_and_record_commit_together,
    "postgres",
    support::pg_pool("tx").await,
    staunch_idempotency::PostgresStore,
    "CREATE TABLE charges (id BIGSERIAL PRIMARY KEY, amount BIGINT NOT NULL)"
);
