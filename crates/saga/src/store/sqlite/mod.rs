//! The embedded default store: one SQLite file, WAL, `synchronous=FULL`, group commit.
//!
//! All writes go through one writer task that owns one connection. It takes every request
//! queued while the previous batch was committing, writes them with a few multi-row
//! statements in one transaction, commits once (one fsync for the whole batch) and only then
//! answers each appender. Reads use a separate small pool; WAL lets them run beside the
//! writer. Sequence numbers are checked by the writer against a cache of each unfinished
//! saga's next sequence number and status, so a store file must be opened by one process at a time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous as SqlxSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use super::{
    Append, Created, ListFilter, NewSaga, SagaLog, SagaStatus, SagaStore, SagaSummary, StoredEvent,
    ms_from_time, time_from_ms,
};

mod writer;

use crate::error::StoreError;
use staunch_core::ConfigError;
use writer::{Request, placeholders, writer};

/// The schema version this build creates and reads.
const SCHEMA_VERSION: i64 = 3;

/// Migrations by target version; each runs once, in order, in one transaction.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE staunch_sagas (
            saga_id TEXT PRIMARY KEY NOT NULL,
            definition TEXT NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            note TEXT,
            updated_at_ms INTEGER NOT NULL
        ) WITHOUT ROWID",
            "CREATE INDEX staunch_sagas_status ON staunch_sagas (status, saga_id)",
            "CREATE TABLE staunch_saga_events (
            saga_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (saga_id, seq)
        ) WITHOUT ROWID",
        ],
    ),
    // Operators' cancel and pause requests, read by the runner at step boundaries.
    (2, &["ALTER TABLE staunch_sagas ADD COLUMN request TEXT"]),
    // Summary timestamps (a saga's creation time is unknown for rows written before) and
    // the index `purge` reads.
    (
        3,
        &[
            "ALTER TABLE staunch_sagas ADD COLUMN created_at_ms INTEGER",
            "ALTER TABLE staunch_sagas ADD COLUMN stuck_since_ms INTEGER",
            "UPDATE staunch_sagas SET stuck_since_ms = updated_at_ms WHERE status = 'stuck'",
            "CREATE INDEX staunch_sagas_ended ON staunch_sagas (status, updated_at_ms)",
        ],
    ),
];

/// The longest `lock_wait` taken as given (longer waits are cut to it: about a year).
const MAX_LOCK_WAIT: Duration = Duration::from_hours(24 * 365);

/// The longest busy timeout SQLite can take (`i32::MAX` milliseconds).
const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// How hard SQLite syncs on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SqliteSynchronous {
    /// fsync on every commit: survives power loss. The default.
    #[default]
    Full,
    /// In WAL mode, survives a process crash but a power loss may drop the last commits.
    Normal,
    /// No fsync: for tests only.
    Off,
}

/// Opens a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    synchronous: SqliteSynchronous,
    max_batch: usize,
    read_connections: u32,
    busy_timeout: Duration,
    lock_wait: Duration,
}

impl SqliteStoreBuilder {
    /// Sync mode (default [`SqliteSynchronous::Full`]).
    pub fn synchronous(mut self, synchronous: SqliteSynchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Most requests committed in one transaction (default 1024).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Connections for reads (default 4).
    pub fn read_connections(mut self, n: u32) -> Self {
        self.read_connections = n;
        self
    }

    /// How long a statement waits for a lock held by another connection (default 5 s). Any
    /// duration works: SQLite counts it in `i32` milliseconds, so it saturates at about 24.8
    /// days.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How long `open` waits for another store on the file to let go of it before failing
    /// with [`StoreError::InUse`] (default: zero, fail at once). For a restart within one
    /// process: the engine dropped, its tasks may hold their clones of the store a moment
    /// longer while they wind down.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Opens (creating if needed) the file, migrates the schema and starts the writer task.
    ///
    /// One store per file: while a clone of this store is alive (an engine and its running
    /// sagas hold clones), opening the same file again, in this process or another, fails
    /// with [`StoreError::InUse`]. The lock is an OS lock on the file
    /// `<path>-lock`, released by the operating system when the process exits, also on a
    /// crash, so a restarted process opens the file again at once.
    ///
    /// Errors: [`StoreError::Config`] for a zero batch or pool size; [`StoreError::InUse`];
    /// a database error, or a file whose schema is newer than this build.
    pub async fn open(self) -> Result<SqliteStore, StoreError> {
        if self.max_batch == 0 {
            return Err(config(ConfigError::new("max_batch", "must be at least 1")));
        }
        if self.read_connections == 0 {
            return Err(config(ConfigError::new(
                "read_connections",
                "must be at least 1",
            )));
        }
        let deadline = tokio::time::Instant::now() + self.lock_wait.min(MAX_LOCK_WAIT);
        let lock = loop {
            match lock(&self.path) {
                Err(StoreError::InUse { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                taken => break taken?,
            }
        };
        let sync = match self.synchronous {
            SqliteSynchronous::Full => SqlxSynchronous::Full,
            SqliteSynchronous::Normal => SqlxSynchronous::Normal,
            SqliteSynchronous::Off => SqlxSynchronous::Off,
        };
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(self.busy_timeout.min(MAX_BUSY_TIMEOUT));
        let mut conn = options.connect().await.map_err(db)?;
        migrate(&mut conn).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(self.read_connections)
            .connect_with(options.create_if_missing(false))
            .await
            .map_err(db)?;
        let (tx, rx) = mpsc::channel(self.max_batch * 4);
        tokio::spawn(writer(conn, rx, self.max_batch));
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                tx,
                reader,
                path: self.path,
                _lock: lock,
            }),
        })
    }
}

/// Takes the exclusive lock that makes this store the only one on `path`: an OS lock on a
/// file beside the database (not on the database itself, which SQLite locks in its own way),
/// released when the returned file is closed or the process exits.
fn lock(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push("-lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Database(format!(
                "cannot open the lock file `{}`: {e}",
                lock_path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: path.to_path_buf(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Database(format!(
            "cannot lock `{}`: {e}",
            lock_path.display()
        ))),
    }
}

fn config(e: ConfigError) -> StoreError {
    StoreError::Config(e.within("sqlite_store"))
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The SQLite store. Cheap to clone; the writer task stops when the last clone is dropped.
///
/// It does real file I/O on sqlx's worker threads, so use it under a real-time runtime: with
/// tokio's paused clock (`start_paused`) the read pool's acquire timeout is fast-forwarded
/// while a connection is still opening. Paused-time tests belong with [`MemoryStore`](crate::MemoryStore).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("staunch-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let store = staunch_saga::SqliteStore::open(dir.join("sagas.db")).await?;
/// let engine = staunch_saga::SagaEngine::new(store);
/// let report = engine.recover().await?;
/// assert!(report.resumed.is_empty());
/// # drop(engine);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Request>,
    reader: SqlitePool,
    path: PathBuf,
    /// Held while any clone lives: one store per database file. Released when the last
    /// clone is dropped, even though the writer may still commit a batch queued by a
    /// cancelled call: SQLite's own locking orders that against a store opened next.
    _lock: std::fs::File,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// A builder for the file at `path` with the defaults.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            synchronous: SqliteSynchronous::Full,
            max_batch: 1024,
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
            lock_wait: Duration::ZERO,
        }
    }

    /// Opens the file at `path` with the defaults (WAL, `synchronous=FULL`).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::builder(path).open().await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
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

async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS staunch_saga_schema (version INTEGER NOT NULL)")
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM staunch_saga_schema")
        .fetch_one(&mut *conn)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Database(format!(
            "the saga database has schema version {current}; this build knows up to {SCHEMA_VERSION}"
        )));
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let mut tx = conn.begin().await.map_err(db)?;
        for statement in *statements {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        sqlx::query("INSERT INTO staunch_saga_schema (version) VALUES (?)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        tracing::debug!(version, "saga store schema migrated");
    }
    Ok(())
}

/// The summary columns, read so that no stored value fails the read: SQLite columns hold any
/// type, so text is read as bytes (and checked for UTF-8) and a version that is not an integer
/// reads as `NULL`. [`summary_from_row`] turns what cannot be used into a quarantined summary;
/// a timestamp that is not an integer reads as unknown.
const SUMMARY_COLUMNS: &str = "CAST(saga_id AS BLOB), CAST(definition AS BLOB), \
     CASE WHEN typeof(version) = 'integer' THEN version END, CAST(status AS BLOB), \
     CAST(note AS BLOB), typeof(saga_id), typeof(definition), typeof(status), typeof(note), \
     CASE WHEN typeof(created_at_ms) = 'integer' THEN created_at_ms END, \
     CASE WHEN typeof(updated_at_ms) = 'integer' THEN updated_at_ms END, \
     CASE WHEN typeof(stuck_since_ms) = 'integer' THEN stuck_since_ms END";

/// A summary row as the engine can use it. A row with a field that cannot be read (text that
/// is not UTF-8, a version that is not a `u32`, an unknown status) is reported as
/// [`SagaStatus::Quarantined`] with a note naming the fields, so it is never resumed, an
/// operator sees it, and it fails nothing else; the stored row is left untouched.
fn summary_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<SagaSummary, StoreError> {
    let mut damage: Vec<&str> = Vec::new();
    // Text stored as another SQLite type (a BLOB, a number) reads as bytes but never matches
    // the text the filters and lookups bind, so it is damage too.
    let mut text = |index: usize, kind_index: usize, nullable: bool, field: &'static str| {
        let kind: String = row.try_get(kind_index).map_err(db)?;
        if kind != "text" && !(nullable && kind == "null") {
            damage.push(field);
        }
        let bytes: Option<Vec<u8>> = row.try_get(index).map_err(db)?;
        Ok::<_, StoreError>(bytes.map(|bytes| match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                damage.push(field);
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        }))
    };
    let saga_id = text(0, 5, false, "saga_id is not UTF-8 text")?.unwrap_or_default();
    let definition = text(1, 6, false, "definition is not UTF-8 text")?.unwrap_or_default();
    let status = text(3, 7, false, "status is not UTF-8 text")?.unwrap_or_default();
    let note = text(4, 8, true, "note is not UTF-8 text")?;
    let version: Option<i64> = row.try_get(2).map_err(db)?;
    let version = version
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or_else(|| {
            damage.push("version is not an integer from 0 to 4294967295");
            0
        });
    let status = SagaStatus::parse(&status).unwrap_or_else(|| {
        damage.push("status is not a saga status");
        SagaStatus::Quarantined
    });
    let time = |index: usize| -> Result<_, StoreError> {
        Ok(time_from_ms(
            row.try_get::<Option<i64>, _>(index).map_err(db)?,
        ))
    };
    let (created_at, updated_at, stuck_since) = (time(9)?, time(10)?, time(11)?);
    if damage.is_empty() {
        return Ok(SagaSummary {
            saga_id,
            definition,
            version,
            status,
            note,
            created_at,
            updated_at,
            stuck_since,
        });
    }
    let mut why = format!("the summary row cannot be used: {}", damage.join("; "));
    if let Some(note) = note {
        why.push_str("; stored note: ");
        why.push_str(&note);
    }
    Ok(SagaSummary {
        saga_id,
        definition,
        version,
        status: SagaStatus::Quarantined,
        note: Some(why),
        created_at,
        updated_at,
        stuck_since: None,
    })
}

impl SagaStore for SqliteStore {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        Box::pin(self.request(|tx| Request::Create(saga, tx)))
    }

    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.request(|tx| Request::Append(append, tx)))
    }

    fn load<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<Option<SagaLog>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.inner.reader.acquire().await.map_err(db)?;
            let mut tx = conn.begin().await.map_err(db)?;
            let sql = format!("SELECT {SUMMARY_COLUMNS} FROM staunch_sagas WHERE saga_id = ?");
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
                // SQLite columns hold any type: a crafted REAL or TEXT sequence number reads
                // as an integer (a truncated or zero one breaks the sequence rule and
                // quarantines the saga), a payload of any type as bytes (checked for UTF-8):
                // one bad row never fails the read.
                "SELECT CAST(seq AS INTEGER), CAST(payload AS BLOB) FROM staunch_saga_events \
                 WHERE saga_id = ? ORDER BY seq",
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
                    // Bytes, not text: a row that is not UTF-8 must reach the engine flagged
                    // (and get the saga quarantined), neither fail the read nor be altered.
                    let payload: Vec<u8> = row.try_get(1).map_err(db)?;
                    Ok(StoredEvent::from_bytes(seq.cast_unsigned(), payload))
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
            // A row whose summary cannot be used reads as quarantined whatever its stored
            // status (see `summary_from_row`), so the status filter is applied to the rows as
            // read; the database narrows the candidates first where that cannot lose one.
            let wants_quarantined = filter.statuses.contains(&SagaStatus::Quarantined);
            let push_statuses = !filter.statuses.is_empty() && !wants_quarantined;
            let push_limit = filter.statuses.is_empty();
            let mut sql = format!("SELECT {SUMMARY_COLUMNS} FROM staunch_sagas WHERE 1 = 1");
            if push_statuses {
                sql.push_str(" AND status IN (");
                sql.push_str(&placeholders(filter.statuses.len(), 1));
                sql.push(')');
            }
            if filter.definition.is_some() {
                sql.push_str(" AND definition = ?");
            }
            sql.push_str(" ORDER BY saga_id");
            let limit = filter.limit.filter(|_| push_limit);
            if limit.is_some() {
                sql.push_str(" LIMIT ?");
            }
            let mut query = sqlx::query(AssertSqlSafe(sql));
            if push_statuses {
                for status in &filter.statuses {
                    query = query.bind(status.as_str());
                }
            }
            if let Some(d) = &filter.definition {
                query = query.bind(d.as_str());
            }
            if let Some(limit) = limit {
                query = query.bind(i64::try_from(limit).unwrap_or(i64::MAX));
            }
            // Streamed, so a filtered listing stops at its limit instead of reading the table.
            let mut rows = query.fetch(&self.inner.reader);
            let mut summaries = Vec::new();
            while filter.limit.is_none_or(|limit| summaries.len() < limit) {
                let Some(row) = rows.try_next().await.map_err(db)? else {
                    break;
                };
                let summary = summary_from_row(&row)?;
                if filter.statuses.is_empty() || filter.statuses.contains(&summary.status) {
                    summaries.push(summary);
                }
            }
            Ok(summaries)
        })
    }

    fn quarantine<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (saga_id, reason) = (Arc::from(saga_id), reason.to_owned());
        Box::pin(self.request(move |tx| Request::Quarantine(saga_id, reason, tx)))
    }

    fn set_request<'a>(
        &'a self,
        saga_id: &'a str,
        request: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        // Beside the writer, on a pool connection: the writer's cache holds no request, and
        // SQLite serializes the two writers (the busy timeout covers the wait).
        Box::pin(async move {
            let done = sqlx::query("UPDATE staunch_sagas SET request = ? WHERE saga_id = ?")
                .bind(request)
                .bind(saga_id)
                .execute(&self.inner.reader)
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
            // Read as bytes: a stored value that is not UTF-8 text reads lossily (and then
            // does not decode as a request, which the engine ignores), never as an error.
            let row =
                sqlx::query("SELECT CAST(request AS BLOB) FROM staunch_sagas WHERE saga_id = ?")
                    .bind(saga_id)
                    .fetch_optional(&self.inner.reader)
                    .await
                    .map_err(db)?;
            let bytes: Option<Vec<u8>> = match row {
                Some(row) => row.try_get(0).map_err(db)?,
                None => None,
            };
            Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
        })
    }

    fn purge<'a>(
        &'a self,
        before: SystemTime,
        statuses: &'a [SagaStatus],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        // Beside the writer, on a pool connection, as `set_request`: SQLite serializes the
        // two, and the writer keeps no ended or quarantined saga in its cache (see
        // `writer::commit`), so none it knows of can go.
        Box::pin(async move {
            if statuses.is_empty() || limit == 0 {
                return Ok(Vec::new());
            }
            // The same sagas for both statements: the first one takes the write lock, so
            // nothing changes in between. Events first, so no log row outlives its summary.
            let chosen = format!(
                "SELECT saga_id FROM staunch_sagas WHERE status IN ({}) AND updated_at_ms < ? \
                 ORDER BY status, updated_at_ms LIMIT ?",
                placeholders(statuses.len(), 1)
            );
            let bind = |sql: String| {
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for status in statuses {
                    query = query.bind(status.as_str());
                }
                query
                    .bind(ms_from_time(before))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            };
            let mut tx = self.inner.reader.begin().await.map_err(db)?;
            bind(format!(
                "DELETE FROM staunch_saga_events WHERE saga_id IN ({chosen})"
            ))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            let rows = bind(format!(
                "DELETE FROM staunch_sagas WHERE saga_id IN ({chosen}) \
                 RETURNING CAST(saga_id AS BLOB)"
            ))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            rows.iter()
                .map(|row| {
                    let id: Vec<u8> = row.try_get(0).map_err(db)?;
                    Ok(String::from_utf8_lossy(&id).into_owned())
                })
                .collect()
        })
    }
}
