//! [`SqliteStore`]: keys in a table of the handler's own SQLite database.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::{
    BEGIN_ATTEMPTS, Begin, Claim, DEFAULT_PURGE_INTERVAL, IdempotencyStore, PurgeTask, RawRow,
    StoreError, after_ms, db, now_ms, outcome_columns,
};
use crate::record::{Outcome, StoredResponse};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS staunch_idempotency (
    key TEXT PRIMARY KEY NOT NULL,
    fingerprint BLOB NOT NULL,
    token INTEGER NOT NULL,
    state INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    status INTEGER,
    headers BLOB,
    body BLOB,
    trailers BLOB
)";

const CREATE_INDEX: &str = "CREATE INDEX IF NOT EXISTS staunch_idempotency_expiry
    ON staunch_idempotency (expires_at)";

/// Tables made before trailers were kept get the column; their rows read as having none.
const HAS_TRAILERS: &str =
    "SELECT COUNT(*) FROM pragma_table_info('staunch_idempotency') WHERE name = 'trailers'";
const ADD_TRAILERS: &str = "ALTER TABLE staunch_idempotency ADD COLUMN trailers BLOB";

const BEGIN: &str = "INSERT INTO staunch_idempotency (key, fingerprint, token, state, expires_at)
    VALUES (?1, ?2, ?3, 0, ?4)
    ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, token = excluded.token,
        state = 0, expires_at = excluded.expires_at, status = NULL, headers = NULL, body = NULL,
        trailers = NULL
    WHERE staunch_idempotency.expires_at <= ?5
    RETURNING token";

const READ: &str =
    "SELECT fingerprint, state, status, headers, body, trailers FROM staunch_idempotency
    WHERE key = ?1 AND expires_at > ?2";

const FINISH: &str = "UPDATE staunch_idempotency
    SET state = ?1, status = ?2, headers = ?3, body = ?4, expires_at = ?5,
        trailers = ?8
    WHERE key = ?6 AND token = ?7 AND state = 0";

const RELEASE: &str = "DELETE FROM staunch_idempotency WHERE key = ?1 AND token = ?2 AND state = 0";

const PURGE: &str = "DELETE FROM staunch_idempotency WHERE expires_at <= ?1";

/// Keys in the table `staunch_idempotency` of a SQLite database, through the pool you pass
/// (the handler's own, so that [`finish_in`](Self::finish_in) can record a response in the
/// handler's transaction). Survives restarts; expiry follows the wall clock. Clones share the
/// pool; the background purge ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: SqlitePool,
    _purge: PurgeTask,
}

impl SqliteStore {
    /// Creates the table if missing and starts the purge (every minute).
    pub async fn open(pool: SqlitePool) -> Result<Self, StoreError> {
        Self::open_with_purge_interval(pool, DEFAULT_PURGE_INTERVAL).await
    }

    /// As [`open`](Self::open), purging every `interval` (at least 1 ms).
    pub async fn open_with_purge_interval(
        pool: SqlitePool,
        interval: Duration,
    ) -> Result<Self, StoreError> {
        sqlx::query(CREATE).execute(&pool).await.map_err(db)?;
        sqlx::query(CREATE_INDEX).execute(&pool).await.map_err(db)?;
        add_trailers(&pool).await?;
        let (task, stop) = PurgeTask::channel();
        let inner = Arc::new(Inner { pool, _purge: task });
        PurgeTask::spawn(
            Arc::downgrade(&inner),
            stop,
            interval.max(Duration::from_millis(1)),
            |inner: Arc<Inner>| async move {
                if let Err(e) = purge(&inner.pool).await {
                    tracing::warn!(error = %e, "idempotency purge failed");
                }
            },
        );
        Ok(SqliteStore { inner })
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// Records `response` as `claim`'s outcome on `conn`, which should be the handler's open
    /// transaction (`&mut *tx`): the record then commits with the handler's writes or not
    /// at all. Return the same response from the handler.
    ///
    /// Errors with [`StoreError::LeaseLost`] if the claim no longer holds its key (the lease
    /// ended and another request took it): roll back. Once it succeeds the claim is
    /// [marked recorded](Claim::mark_recorded), so the layer does not write the reply again;
    /// if the handler rolls back after all, it must answer with a response the layer does
    /// not store (a 5xx by default), which frees the key.
    pub async fn finish_in(
        &self,
        conn: &mut SqliteConnection,
        claim: &Claim,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        finish(conn, claim, &Outcome::Stored(response.clone()), claim.ttl()).await?;
        // The layer then leaves the record to this transaction.
        claim.mark_recorded();
        Ok(())
    }
}

/// Adds the `trailers` column to a table from before it existed (another process opening the
/// same file may add it first).
async fn add_trailers(pool: &SqlitePool) -> Result<(), StoreError> {
    let has = || async {
        let n: i64 = sqlx::query_scalar(HAS_TRAILERS)
            .fetch_one(pool)
            .await
            .map_err(db)?;
        Ok::<_, StoreError>(n > 0)
    };
    if has().await? {
        return Ok(());
    }
    match sqlx::query(ADD_TRAILERS).execute(pool).await {
        Ok(_) => Ok(()),
        Err(_) if has().await? => Ok(()),
        Err(e) => Err(db(e)),
    }
}

async fn finish(
    conn: &mut SqliteConnection,
    claim: &Claim,
    outcome: &Outcome,
    ttl: Duration,
) -> Result<(), StoreError> {
    let columns = outcome_columns(outcome);
    let done = sqlx::query(FINISH)
        .bind(columns.state)
        .bind(columns.status)
        .bind(columns.headers)
        .bind(columns.body)
        .bind(after_ms(now_ms(), ttl))
        .bind(claim.key())
        .bind(claim.token())
        .bind(columns.trailers)
        .execute(conn)
        .await
        .map_err(db)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::LeaseLost {
            key: claim.key().to_owned(),
        });
    }
    Ok(())
}

async fn purge(pool: &SqlitePool) -> Result<u64, StoreError> {
    let done = sqlx::query(PURGE)
        .bind(now_ms())
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}

impl IdempotencyStore for SqliteStore {
    async fn begin(&self, claim: &Claim, lease: Duration) -> Result<Begin, StoreError> {
        let pool = &self.inner.pool;
        for _ in 0..BEGIN_ATTEMPTS {
            let now = now_ms();
            let started = sqlx::query(BEGIN)
                .bind(claim.key())
                .bind(&claim.fingerprint().0[..])
                .bind(claim.token())
                .bind(after_ms(now, lease))
                .bind(now)
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            if started.is_some() {
                return Ok(Begin::Started);
            }
            let row = sqlx::query(READ)
                .bind(claim.key())
                .bind(now)
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            if let Some(row) = row {
                let raw = RawRow {
                    fingerprint: row.try_get(0).map_err(db)?,
                    state: row.try_get(1).map_err(db)?,
                    status: row.try_get(2).map_err(db)?,
                    headers: row.try_get(3).map_err(db)?,
                    body: row.try_get(4).map_err(db)?,
                    trailers: row.try_get(5).map_err(db)?,
                };
                return raw.decode(claim.key());
            }
            // Freed or expired between the two statements: try again.
        }
        Ok(Begin::InFlight {
            fingerprint: claim.fingerprint(),
        })
    }

    async fn finish(
        &self,
        claim: &Claim,
        outcome: &Outcome,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.inner.pool.acquire().await.map_err(db)?;
        finish(&mut conn, claim, outcome, ttl).await
    }

    async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        sqlx::query(RELEASE)
            .bind(claim.key())
            .bind(claim.token())
            .execute(&self.inner.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn purge(&self) -> Result<u64, StoreError> {
        purge(&self.inner.pool).await
    }
}
