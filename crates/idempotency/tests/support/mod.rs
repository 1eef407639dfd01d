//! Shared helpers: a counting handler, a loopback server, SQLite files and PostgreSQL schemas.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Request, Response};
use http_body_util::BodyExt;
use staunch_idempotency::{Idempotency, IdempotencyLayer, IdempotencyStore};
use tower::ServiceExt;

/// A route `/charges` that counts its calls and answers 201 with `charged <body>`.
pub fn app<St: IdempotencyStore>(
    store: St,
    settings: Idempotency,
    calls: Arc<AtomicUsize>,
) -> Router {
    Router::new()
        .route(
            "/charges",
            post(move |body: String| async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                (
                    http::StatusCode::CREATED,
                    [("content-type", "text/plain"), ("x-call", "1")],
                    format!("charged {body} #{n}"),
                )
            }),
        )
        .layer(IdempotencyLayer::new(store, settings))
}

pub fn post_with_key(key: Option<&str>, body: &str) -> Request<Body> {
    let mut b = Request::post("/charges");
    if let Some(key) = key {
        b = b.header("idempotency-key", key);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

/// Sends `req` through `app`; status, the `idempotent-replayed` header and the body.
pub async fn send(app: &Router, req: Request<Body>) -> (u16, bool, String) {
    let response: Response<Body> = app.clone().oneshot(req).await.unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        replayed,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Serves `app` on a loopback port until the runtime ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "staunch_idem_{tag}_{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos % 0xffff_ffff
    )
}

/// A SQLite file in the temp directory, removed on drop.
#[cfg(feature = "sqlite")]
pub struct SqliteFile {
    pub path: std::path::PathBuf,
}

#[cfg(feature = "sqlite")]
impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(feature = "sqlite")]
pub async fn sqlite_pool(tag: &str) -> (staunch_idempotency::sqlx::SqlitePool, SqliteFile) {
    use staunch_idempotency::sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    };
    let path = std::env::temp_dir().join(format!("{}.db", unique(tag)));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    (pool, SqliteFile { path })
}

#[cfg(feature = "postgres")]
pub const URL_VAR: &str = "STAUNCH_TEST_POSTGRES_URL";

/// Drops its schema when dropped.
#[cfg(feature = "postgres")]
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

#[cfg(feature = "postgres")]
impl Drop for SchemaGuard {
    fn drop(&mut self) {
        use staunch_idempotency::sqlx::{self, Connection};
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

/// A pool on a fresh schema, or `None` (with the reason printed) without PostgreSQL.
#[cfg(feature = "postgres")]
pub async fn pg_pool(tag: &str) -> Option<(staunch_idempotency::sqlx::PgPool, SchemaGuard)> {
    use staunch_idempotency::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use staunch_idempotency::sqlx::{self, Connection};
    use std::str::FromStr;
    let url = match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!("skipping {tag}: {URL_VAR} is not set (no PostgreSQL to test against)");
            return None;
        }
    };
    let schema = unique(tag);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    Some((pool, SchemaGuard { url, schema }))
}
