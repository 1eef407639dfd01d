//! The PostgreSQL store, for many instances of a service sharing one database.
//!
//! Every unfinished saga is owned by one instance through a lease (owner id, expiry, lease
//! version). Appends go through writer tasks that batch the requests of concurrent sagas into
//! one statement and one transaction (group commit); the statement checks each append's
//! sequence number and lease version against the saga's row, so an instance whose lease was
//! taken over cannot write. A heartbeat task renews the leases this instance holds; recovery
//! claims expired ones with `FOR UPDATE SKIP LOCKED`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use super::{
    Append, Created, ListFilter, NewSaga, SagaLog, SagaStatus, SagaStore, SagaSummary, StoredEvent,
    ms_from_time, time_from_ms,
};
use crate::error::StoreError;
use staunch_core::ConfigError;

mod lease;
mod writer;

use writer::Request;

/// The lease version recorded while this store is creating the saga.
const CREATING: i64 = 0;

/// The schema version this build creates and reads.
const SCHEMA_VERSION: i32 = 3;

/// Migrations by target version; each runs once, in order, in one transaction.
const MIGRATIONS: &[(i32, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE staunch_sagas (
            saga_id TEXT PRIMARY KEY,
            definition TEXT NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            note TEXT,
            next_seq BIGINT NOT NULL,
            lease_owner TEXT,
            lease_version BIGINT NOT NULL DEFAULT 0,
            lease_expires_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
            "CREATE INDEX staunch_sagas_status ON staunch_sagas (status, saga_id)",
            "CREATE INDEX staunch_sagas_resumable ON staunch_sagas (lease_expires_at)
            WHERE status IN ('running', 'compensating')",
            "CREATE TABLE staunch_saga_events (
            saga_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (saga_id, seq)
        )",
        ],
    ),
    // Operators' cancel and pause requests, read by the owner at step boundaries.
    (2, &["ALTER TABLE staunch_sagas ADD COLUMN request TEXT"]),
    // Summary timestamps (a saga's creation time is unknown for rows written before) and
    // the index `purge` reads.
    (
        3,
        &[
            "ALTER TABLE staunch_sagas ADD COLUMN created_at TIMESTAMPTZ",
            "ALTER TABLE staunch_sagas ALTER COLUMN created_at SET DEFAULT now()",
            "ALTER TABLE staunch_sagas ADD COLUMN stuck_since TIMESTAMPTZ",
            "UPDATE staunch_sagas SET stuck_since = updated_at WHERE status = 'stuck'",
            "CREATE INDEX staunch_sagas_ended ON staunch_sagas (status, updated_at)",
        ],
    ),
];

/// The summary columns every read selects, timestamps as milliseconds since the epoch.
pub(super) const SUMMARY_COLUMNS: &str = "saga_id, definition, version, status, note, \
     (EXTRACT(EPOCH FROM created_at) * 1000)::bigint AS created_ms, \
     (EXTRACT(EPOCH FROM updated_at) * 1000)::bigint AS updated_ms, \
     (EXTRACT(EPOCH FROM stuck_since) * 1000)::bigint AS stuck_ms";

/// Opens a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresStoreBuilder {
    url: String,
    schema: Option<String>,
    owner: Option<String>,
    lease_ttl: Duration,
    heartbeat: Option<Duration>,
    max_connections: u32,
    writers: usize,
    max_batch: usize,
}

impl PostgresStoreBuilder {
    /// Keeps the tables in this schema (created if missing) instead of the connection's
    /// default search path: several applications, or tests, can share one database.
    /// Letters, digits and `_`, not starting with a digit, at most 63 characters.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// This instance's owner id, written into the leases it takes (default: a fresh id per
    /// store). A stable id (e.g. the pod name) lets a restarted instance resume its own
    /// sagas at once instead of after their leases expire; two live instances must never
    /// share one.
    pub fn owner_id(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// How long a lease lasts without renewal (default 15 s): a dead instance's sagas are
    /// taken over after at most this long (plus the claiming instance's recovery interval).
    /// Any duration of at least 100 ms works; the recorded expiry saturates at 100 years.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How often the heartbeat renews this instance's leases (default a third of the TTL).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// Pool size (default 8).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Writer tasks committing batches concurrently (default 1). One writer makes the biggest
    /// batches, which is what a busy database wants (per-transaction cost dominates); more
    /// writers cut latency when the database has cores to spare.
    pub fn writers(mut self, n: usize) -> Self {
        self.writers = n;
        self
    }

    /// Most requests committed in one transaction (default 1024).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    fn validate(&self) -> Result<Duration, ConfigError> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                "url",
                "must be a PostgreSQL URL (postgres://user@host/db)",
            ));
        }
        if let Some(schema) = &self.schema {
            let valid = !schema.is_empty()
                && schema.len() <= 63
                && !schema.starts_with(|c: char| c.is_ascii_digit())
                && schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ConfigError::new(
                    "schema",
                    "must be 1-63 ASCII letters, digits or `_`, not starting with a digit",
                ));
            }
        }
        if self.owner.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new("owner_id", "must not be empty"));
        }
        if self.lease_ttl < Duration::from_millis(100) {
            return Err(ConfigError::new("lease_ttl", "must be at least 100 ms"));
        }
        let heartbeat = self.heartbeat.unwrap_or(self.lease_ttl / 3);
        if heartbeat.is_zero() || heartbeat >= self.lease_ttl {
            return Err(ConfigError::new(
                "heartbeat_interval",
                "must be greater than zero and shorter than lease_ttl",
            ));
        }
        if self.max_connections < 2 {
            return Err(ConfigError::new("max_connections", "must be at least 2"));
        }
        if self.writers == 0 || self.writers as u32 >= self.max_connections {
            return Err(ConfigError::new(
                "writers",
                "must be at least 1 and fewer than max_connections",
            ));
        }
        if self.max_batch == 0 {
            return Err(ConfigError::new("max_batch", "must be at least 1"));
        }
        Ok(heartbeat)
    }

    /// Connects, creates the schema and tables (or migrates them) and starts the writer and
    /// heartbeat tasks.
    ///
    /// Errors: [`StoreError::Config`] for an invalid setting or URL, a database error, or a
    /// database whose schema is newer than this build.
    pub async fn open(self) -> Result<PostgresStore, StoreError> {
        let heartbeat = self
            .validate()
            .map_err(|e| StoreError::Config(e.within("postgres_store")))?;
        let mut options = PgConnectOptions::from_str(&self.url).map_err(|e| {
            StoreError::Config(
                ConfigError::new("url", format!("must be a PostgreSQL URL ({e})"))
                    .within("postgres_store"),
            )
        })?;
        if let Some(schema) = &self.schema {
            // Created before the pool exists: every pooled connection searches it first.
            let mut conn = sqlx::PgConnection::connect_with(&options)
                .await
                .map_err(db)?;
            let sql = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
            let created = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await;
            // Two instances creating it at once: the loser sees a unique violation.
            if let Err(e) = created
                && !is_unique_violation(&e)
            {
                return Err(db(e));
            }
            conn.close().await.map_err(db)?;
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .connect_with(options)
            .await
            .map_err(db)?;
        migrate(&pool).await?;
        let owner: Arc<str> = Arc::from(self.owner.unwrap_or_else(fresh_owner_id));
        let (tx, rx) = mpsc::channel(self.max_batch * 4);
        let inner = Arc::new(Inner {
            pool,
            tx,
            owner,
            ttl: self.lease_ttl,
            schema: self.schema,
            held: Mutex::new(HashMap::new()),
            requested: Mutex::default(),
        });
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..self.writers {
            tokio::spawn(writer::writer(
                Arc::downgrade(&inner),
                inner.pool.clone(),
                Arc::clone(&rx),
                self.max_batch,
            ));
        }
        tokio::spawn(lease::heartbeat(Arc::downgrade(&inner), heartbeat));
        Ok(PostgresStore { inner })
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|c| c == "23505" || c == "42P06")
}

/// `host-pid-nanos-counter`: unique per store within a process and across restarts.
fn fresh_owner_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "pid{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(super) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The PostgreSQL store. Cheap to clone; its writer and heartbeat tasks stop when the last
/// clone is dropped.
///
/// Each instance of a service opens its own store on the shared database and runs
/// [`SagaEngine::spawn_recovery`](crate::SagaEngine::spawn_recovery): sagas it starts are
/// leased to it; when it dies, its leases expire after [`lease_ttl`](PostgresStoreBuilder::lease_ttl)
/// and another instance's recovery claims and resumes them. An instance that was merely
/// paused past its lease gets [`StoreError::LeaseLost`] on its next append and stops
/// driving the saga.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// let store = staunch_saga::PostgresStore::builder("postgres://app@db/app")
///     .schema("sagas")
///     .lease_ttl(Duration::from_secs(15))
///     .open()
///     .await?;
/// let engine = staunch_saga::SagaEngine::new(store);
/// // register definitions, then:
/// let _recovery = engine.spawn_recovery(Duration::from_secs(5));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pool: PgPool,
    tx: mpsc::Sender<Request>,
    owner: Arc<str>,
    ttl: Duration,
    schema: Option<String>,
    /// Sagas whose lease this instance holds, with the lease version (the fencing token).
    held: Mutex<HashMap<Arc<str>, i64>>,
    /// Sagas held here for which the heartbeat found an operator's request stored.
    requested: Mutex<std::collections::HashSet<String>>,
}

impl Inner {
    pub(super) fn held(&self) -> MutexGuard<'_, HashMap<Arc<str>, i64>> {
        // Held only for single map operations.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn requested(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.requested
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lease TTL in milliseconds, saturated at [`MAX_LEASE_MS`]: PostgreSQL cannot add
    /// an interval of `i64::MAX` milliseconds to a timestamp.
    pub(super) fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).map_or(MAX_LEASE_MS, |ms| ms.min(MAX_LEASE_MS))
    }
}

/// The longest lease the database is asked to record: 100 years (any longer TTL saturates
/// to it; both mean "until released").
const MAX_LEASE_MS: i64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// Text as PostgreSQL can store it: `text` columns refuse NUL, so a summary note (the log
/// row keeps the exact message, JSON-escaped) has each NUL replaced by U+FFFD.
pub(super) fn storable_note(note: &str) -> std::borrow::Cow<'_, str> {
    if note.contains('\0') {
        std::borrow::Cow::Owned(note.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(note)
    }
}

/// Removes a "being created" lease mark unless disarmed (by taking `id`).
struct CreatingGuard<'a> {
    inner: &'a Inner,
    id: Option<Arc<str>>,
}

impl Drop for CreatingGuard<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut held = self.inner.held();
            if held.get(&id) == Some(&CREATING) {
                held.remove(&id);
            }
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("owner", &self.inner.owner)
            .field("schema", &self.inner.schema)
            .field("lease_ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// A builder for the database at `url` (e.g. `postgres://user@host/db`) with the defaults.
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            schema: None,
            owner: None,
            lease_ttl: Duration::from_secs(15),
            heartbeat: None,
            max_connections: 8,
            writers: 1,
            max_batch: 1024,
        }
    }

    /// Opens the database at `url` with the defaults.
    pub async fn open(url: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(url).open().await
    }

    /// This instance's owner id, as written into its leases.
    pub fn owner_id(&self) -> &str {
        &self.inner.owner
    }

    /// The connection pool (for inspection, or to drop the schema in tests).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// How many sagas this instance holds the lease of.
    pub fn held_leases(&self) -> usize {
        self.inner.held().len()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(db)?;
    // Instances opening at once take turns (the lock is per schema, released at commit).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.staunch_saga'))")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query("CREATE TABLE IF NOT EXISTS staunch_saga_schema (version INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let current: i32 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM staunch_saga_schema")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Database(format!(
            "the saga database has schema version {current}; this build knows up to {SCHEMA_VERSION}"
        )));
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        for statement in *statements {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        sqlx::query("INSERT INTO staunch_saga_schema (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tracing::debug!(version, "postgres saga store schema migrated");
    }
    tx.commit().await.map_err(db)
}

pub(super) fn summary_from_row(row: &PgRow) -> Result<SagaSummary, StoreError> {
    let status: String = row.try_get("status").map_err(db)?;
    let version: i32 = row.try_get("version").map_err(db)?;
    Ok(SagaSummary {
        saga_id: row.try_get("saga_id").map_err(db)?,
        definition: row.try_get("definition").map_err(db)?,
        version: u32::try_from(version).unwrap_or(u32::MAX),
        status: SagaStatus::parse(&status).unwrap_or(SagaStatus::Quarantined),
        note: row.try_get("note").map_err(db)?,
        created_at: time_from_ms(row.try_get("created_ms").map_err(db)?),
        updated_at: time_from_ms(row.try_get("updated_ms").map_err(db)?),
        stuck_since: time_from_ms(row.try_get("stuck_ms").map_err(db)?),
    })
}

impl SagaStore for PostgresStore {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        Box::pin(async move {
            let id = Arc::clone(&saga.saga_id);
            // Held (as version 0: "being created", which the heartbeat skips) before the row
            // exists, so recovery of this instance never claims a saga it is creating.
            let fresh = !self.inner.held().contains_key(&id);
            if fresh {
                self.inner.held().insert(Arc::clone(&id), CREATING);
            }
            // Undoes the mark if this future is dropped before the answer (a saga created
            // anyway is then claimed by recovery once its first lease expires).
            let mut guard = CreatingGuard {
                inner: &self.inner,
                id: fresh.then(|| Arc::clone(&id)),
            };
            let result = self.request(|tx| Request::Create(saga, tx)).await;
            if let Some(id) = guard.id.take() {
                let mut held = self.inner.held();
                if matches!(result, Ok(Created::New)) {
                    held.insert(id, 1);
                } else {
                    held.remove(&id);
                }
            }
            result
        })
    }

    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let lease = self.inner.held().get(&append.saga_id).copied();
            let id = Arc::clone(&append.saga_id);
            let terminal = append.status.is_terminal();
            let result = self
                .request(|tx| Request::Append(append, lease.unwrap_or(-1), tx))
                .await;
            match &result {
                Ok(()) if terminal => {
                    self.inner.held().remove(&id);
                }
                Err(StoreError::LeaseLost { .. }) => {
                    self.inner.held().remove(&id);
                }
                _ => {}
            }
            result
        })
    }

    fn load<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<Option<SagaLog>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.inner.pool.begin().await.map_err(db)?;
            // One snapshot for the summary and the rows.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let sql = format!("SELECT {SUMMARY_COLUMNS} FROM staunch_sagas WHERE saga_id = $1");
            let Some(row) = sqlx::query(AssertSqlSafe(sql))
                .bind(saga_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
            else {
                return Ok(None);
            };
            let summary = summary_from_row(&row)?;
            let rows = sqlx::query(
                "SELECT seq, payload FROM staunch_saga_events WHERE saga_id = $1 ORDER BY seq",
            )
            .bind(saga_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            let events = rows
                .iter()
                .map(|row| {
                    let seq: i64 = row.try_get(0).map_err(db)?;
                    Ok(StoredEvent::new(
                        seq.cast_unsigned(),
                        row.try_get(1).map_err(db)?,
                    ))
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(Some(SagaLog { summary, events }))
        })
    }

    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
            let sql = format!(
                "SELECT {SUMMARY_COLUMNS} FROM staunch_sagas
                 WHERE (cardinality($1::text[]) = 0 OR status = ANY($1))
                   AND ($2::text IS NULL OR definition = $2)
                 ORDER BY saga_id COLLATE \"C\" LIMIT $3"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(&statuses)
                .bind(filter.definition.as_deref())
                .bind(filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)))
                .fetch_all(&self.inner.pool)
                .await
                .map_err(db)?;
            rows.iter().map(summary_from_row).collect()
        })
    }

    fn quarantine<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE staunch_sagas SET status = $1, note = $2, lease_owner = NULL,
                 lease_expires_at = NULL, updated_at = now(), stuck_since = NULL
                 WHERE saga_id = $3",
            )
            .bind(SagaStatus::Quarantined.as_str())
            .bind(storable_note(reason))
            .bind(saga_id)
            .execute(&self.inner.pool)
            .await
            .map_err(db)?;
            self.inner.held().remove(saga_id);
            Ok(())
        })
    }

    fn claim_resumable(&self, limit: usize) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(lease::claim_resumable(&self.inner, limit))
    }

    fn acquire<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(lease::acquire(&self.inner, saga_id))
    }

    fn release(&self, saga_id: &str) {
        self.inner.held().remove(saga_id);
    }

    fn lease_ttl(&self) -> Option<Duration> {
        Some(self.inner.ttl)
    }

    fn set_request<'a>(
        &'a self,
        saga_id: &'a str,
        request: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query("UPDATE staunch_sagas SET request = $1 WHERE saga_id = $2")
                .bind(request.map(storable_note))
                .bind(saga_id)
                .execute(&self.inner.pool)
                .await
                .map_err(db)?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn request<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT request FROM staunch_sagas WHERE saga_id = $1")
                .bind(saga_id)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(db)?;
            match row {
                Some(row) => row.try_get(0).map_err(db),
                None => Ok(None),
            }
        })
    }

    fn request_seen(&self, saga_id: &str) -> bool {
        self.inner.requested().remove(saga_id)
    }

    fn purge<'a>(
        &'a self,
        before: SystemTime,
        statuses: &'a [SagaStatus],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            if statuses.is_empty() || limit == 0 {
                return Ok(Vec::new());
            }
            let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            // One statement: the summaries go (locked, so a concurrent purge skips them) and
            // their rows with them, atomically. Only sagas nobody holds a lease on: an ended
            // one has none; a quarantined one lost it when it was quarantined.
            let rows = sqlx::query(
                "WITH gone AS (
                    DELETE FROM staunch_sagas WHERE saga_id IN (
                        SELECT saga_id FROM staunch_sagas
                        WHERE status = ANY($1) AND updated_at < to_timestamp($2 / 1000.0)
                          AND lease_owner IS NULL
                        ORDER BY status, updated_at LIMIT $3
                        FOR UPDATE SKIP LOCKED)
                    RETURNING saga_id
                ), rows AS (
                    DELETE FROM staunch_saga_events e USING gone WHERE e.saga_id = gone.saga_id
                )
                SELECT saga_id FROM gone",
            )
            .bind(&statuses)
            .bind(ms_from_time(before))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db)?;
            rows.iter()
                .map(|row| row.try_get::<String, _>(0).map_err(db))
                .collect()
        })
    }
}
