//! The participants' SQLite files: each service keeps its business tables and
//! staunch-idempotency's records (the table `staunch_idempotency`) in one file, so that a
//! handler's write and the reply stored for its `Idempotency-Key` commit in one transaction.
//!
//! A handler behind [`Db::layer`] gets the request's [`Claim`] from the layer, opens a
//! transaction with [`Db::begin`], writes, and answers with [`Db::reply`], which records the
//! reply in that transaction (`SqliteStore::finish_in`) and commits. A process killed before
//! the commit leaves neither the write nor the reply (its key is free again once the lease
//! ends); killed after it, the repeat gets the recorded reply. Either way a key takes effect
//! at most once, and the saga's redelivery makes it exactly once.

use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use staunch::idempotency::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use staunch::idempotency::sqlx::{self, Sqlite, SqlitePool, Transaction};
use staunch::idempotency::{
    Claim, IDEMPOTENCY_KEY, Idempotency, IdempotencyLayer, SqliteStore, StoreError, StoredResponse,
    parse_key,
};

/// Any error, boxed.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a key stays held by a request that has not answered. Longer than the slowest
/// charge the story plays (1.5 s), and short enough that a key left in flight by a killed
/// process is free again well before the saga's patient compensations give up. A request
/// that outlives it anyway cannot record a second effect: its transaction's `finish_in`
/// finds the key taken over and rolls back.
pub(crate) const LEASE: Duration = Duration::from_secs(3);

/// How long replies are kept for repeats.
pub(crate) const TTL: Duration = Duration::from_hours(24);

/// A business transaction.
pub(crate) type Tx = Transaction<'static, Sqlite>;

/// One participant's database and the idempotency records in it.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    /// The pool, shared by the handlers and the idempotency store.
    pub(crate) pool: SqlitePool,
    /// The idempotency store on that pool.
    pub(crate) store: SqliteStore,
    settings: Idempotency,
}

impl Db {
    /// Opens (or creates) the file at `path`, runs `schema` (`CREATE TABLE IF NOT EXISTS`
    /// statements), and opens the idempotency store in the same file.
    ///
    /// WAL with `synchronous = NORMAL`: a commit survives the process being killed (the
    /// restart test's SIGKILL), not a power cut; `FULL` would add an fsync per commit.
    pub(crate) async fn open(path: &Path, schema: &[&'static str]) -> Result<Self, BoxError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        for statement in schema {
            sqlx::query(*statement).execute(&pool).await?;
        }
        let store = SqliteStore::open(pool.clone()).await?;
        let settings = Idempotency::builder()
            .require_key(true)
            .lease(LEASE)
            .ttl(TTL)
            .build()?;
        Ok(Self {
            pool,
            store,
            settings,
        })
    }

    /// The idempotency layer every mutating route sits behind: a key is required, the first
    /// request with it runs, repeats get its reply (`idempotent-replayed: true`), a repeat
    /// while it runs gets 409 (text, not JSON; `ABORTED` over gRPC), and a 5xx (a transient
    /// gRPC status) is not kept, so a retry runs again.
    pub(crate) fn layer(&self) -> IdempotencyLayer<SqliteStore> {
        IdempotencyLayer::new(self.store.clone(), self.settings.clone())
    }

    /// Begins a write transaction. `IMMEDIATE` takes SQLite's write lock at once, so a
    /// handler's reads and writes see no other writer in between (a deferred transaction
    /// that reads and then writes can fail to upgrade its lock under WAL).
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Records `status` and `body` as the reply to `claim`'s key in `tx`, commits, and
    /// answers with them. If the lease ran out and another request took the key, nothing
    /// is committed and the answer is a 503 (not kept, so the client's retry reaches the
    /// request that now holds the key).
    pub(crate) async fn reply(
        &self,
        mut tx: Tx,
        claim: &Claim,
        status: StatusCode,
        body: &Value,
    ) -> Response {
        let stored = StoredResponse::new(status, Bytes::from(body.to_string())).with_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self.store.finish_in(&mut tx, claim, &stored).await {
            Ok(()) => {}
            Err(StoreError::LeaseLost { .. }) => {
                // Dropping `tx` rolls the write back.
                return failed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the key's lease ran out; retry",
                );
            }
            Err(err) => return failed(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        }
        if let Err(err) = tx.commit().await {
            return failed(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string());
        }
        (stored.status, stored.headers, stored.body).into_response()
    }
}

/// A failure that changed nothing (the transaction, if any, is rolled back): a 5xx, which
/// the layer does not keep.
pub(crate) fn failed(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// The 500 answer to a database error before the commit.
pub(crate) fn db_error(err: &sqlx::Error) -> Response {
    failed(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
}

/// The request's `Idempotency-Key` as the client sent it (the layer in front has checked
/// it; the [`Claim`] holds it scoped, as stored). The participants name the effect by it, so
/// that a compensation can find the effect by the action's key.
pub(crate) fn request_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|value| parse_key(value.as_bytes(), usize::MAX).ok())
}

/// The 400 answer to a request without a key (the layer answers it first).
pub(crate) fn missing_key() -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": "the Idempotency-Key header is required" })),
    )
        .into_response()
}
