//! Postgres test helpers: each test gets its own schema, dropped at the end, so tests run in
//! parallel and re-runs on the same database never see each other's rows.
#![cfg(feature = "postgres")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use staunch_saga::PostgresStore;
use staunch_saga::sqlx::{self, Connection};

pub const URL_VAR: &str = "STAUNCH_TEST_POSTGRES_URL";

/// The test database URL, or `None` (with a note on stderr) when the variable is unset.
pub fn url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipping {test}: {URL_VAR} is not set (no PostgreSQL to test against)");
            None
        }
    }
}

/// A schema name unique to this test run.
pub fn schema(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "staunch_t_{tag}_{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos % 0xffff_ffff
    )
}

/// Drops its schema when dropped (from a helper thread: drop cannot await).
#[derive(Debug)]
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A store in a fresh schema, with a short lease TTL; `None` when Postgres is not configured.
pub async fn store(test: &str, ttl: Duration) -> Option<(PostgresStore, SchemaGuard)> {
    let url = url(test)?;
    let schema = schema(test);
    let guard = SchemaGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let store = PostgresStore::builder(url)
        .schema(&schema)
        .lease_ttl(ttl)
        .open()
        .await
        .expect("open postgres store");
    Some((store, guard))
}

/// A second store (another instance: its own pool and owner id) on the same schema.
pub async fn another(guard: &SchemaGuard, ttl: Duration) -> PostgresStore {
    PostgresStore::builder(guard.url.clone())
        .schema(&guard.schema)
        .lease_ttl(ttl)
        .open()
        .await
        .expect("open second postgres store")
}
