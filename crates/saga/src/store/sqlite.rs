//! The embedded default store: one SQLite file, WAL, `synchronous=FULL`, group commit.
//!
//! All writes go through one writer task that owns one connection. It takes every request
//! queued while the previous batch was committing, writes them with a few multi-row
//! statements in one transaction, commits once (one fsync for the whole batch) and only then
//! answers each appender. Reads use a separate small pool; WAL lets them run beside the
//! writer. Sequence numbers are checked by the writer against a cache of each unfinished
//! saga's next sequence number, so a store file must be opened by one process at a time.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous as SqlxSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use super::{
    Append, Created, ListFilter, NewSaga, SagaLog, SagaStatus, SagaStore, SagaSummary,
    StoredEvent,
};
use crate::error::StoreError;
use staunch_core::ConfigError;

/// The schema version this build creates and reads.
const SCHEMA_VERSION: i64 = 1;

/// Migrations by target version; each runs once, in order, in one transaction.
const MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE staunch_sagas (
            saga_id TEXT PRIMARY KEY NOT NULL,
            definition TEXT NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL,
            note TEXT,
            next_seq INTEGER NOT NULL,
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
)];

/// Rows per multi-row statement (3 or 7 parameters each; well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 500;

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

    /// How long a statement waits for a lock held by another connection (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens (creating if needed) the file, migrates the schema and starts the writer task.
    ///
    /// Errors: a [`ConfigError`] for a zero batch or pool size (as
    /// [`StoreError::Database`] naming the field), a database error, or a file whose schema
    /// is newer than this build.
    pub async fn open(self) -> Result<SqliteStore, StoreError> {
        if self.max_batch == 0 {
            return Err(config(ConfigError::new("max_batch", "must be at least 1")));
        }
        if self.read_connections == 0 {
            return Err(config(ConfigError::new("read_connections", "must be at least 1")));
        }
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
            .busy_timeout(self.busy_timeout);
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
            }),
        })
    }
}

fn config(e: ConfigError) -> StoreError {
    StoreError::Database(e.within("sqlite_store").to_string())
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The SQLite store. Cheap to clone; the writer task stops when the last clone is dropped.
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
            sqlx::query(*statement).execute(&mut *tx).await.map_err(db)?;
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

enum Request {
    Create(NewSaga, oneshot::Sender<Result<Created, StoreError>>),
    Append(Append, oneshot::Sender<Result<(), StoreError>>),
    Quarantine(String, String, oneshot::Sender<Result<(), StoreError>>),
}

impl Request {
    fn saga_id(&self) -> &str {
        match self {
            Self::Create(n, _) => &n.saga_id,
            Self::Append(a, _) => &a.saga_id,
            Self::Quarantine(id, _, _) => id,
        }
    }
}

/// What one request turned into, before the commit says whether it happened.
enum Planned {
    Created(oneshot::Sender<Result<Created, StoreError>>),
    Exists(oneshot::Sender<Result<Created, StoreError>>),
    Appended(oneshot::Sender<Result<(), StoreError>>),
    Refused(oneshot::Sender<Result<(), StoreError>>, StoreError),
    Quarantined(oneshot::Sender<Result<(), StoreError>>),
}

/// The upserted summary of one saga in a batch.
struct SummaryRow {
    definition: String,
    version: u32,
    status: SagaStatus,
    note: Option<String>,
    next_seq: u64,
}

async fn writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Request>, max_batch: usize) {
    // Next sequence number of sagas this writer has seen and that are not finished. `None`:
    // the saga does not exist.
    let mut seqs: HashMap<Arc<str>, Option<u64>> = HashMap::new();
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        if let Err(e) = fill_cache(&mut conn, &mut seqs, &batch).await {
            fail_all(batch.drain(..), &e);
            continue;
        }
        let mut overlay: HashMap<Arc<str>, Option<u64>> = HashMap::new();
        let mut summaries: HashMap<Arc<str>, SummaryRow> = HashMap::new();
        let mut events: Vec<(Arc<str>, u64, String)> = Vec::new();
        let mut quarantines: Vec<(String, String)> = Vec::new();
        let mut planned = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            let id: Arc<str> = Arc::from(request.saga_id());
            let next = overlay
                .get(&id)
                .or_else(|| seqs.get(&id))
                .copied()
                .flatten();
            match request {
                Request::Create(new, reply) => {
                    if next.is_some() {
                        planned.push(Planned::Exists(reply));
                        continue;
                    }
                    let n = new.events.len() as u64;
                    for (i, payload) in new.events.into_iter().enumerate() {
                        events.push((Arc::clone(&id), i as u64, payload));
                    }
                    summaries.insert(
                        Arc::clone(&id),
                        SummaryRow {
                            definition: new.definition.to_string(),
                            version: new.version,
                            status: new.status,
                            note: None,
                            next_seq: n,
                        },
                    );
                    overlay.insert(id, Some(n));
                    planned.push(Planned::Created(reply));
                }
                Request::Append(append, reply) => {
                    if next != Some(append.first_seq) {
                        planned.push(Planned::Refused(
                            reply,
                            StoreError::Conflict {
                                saga_id: id.to_string(),
                                expected: append.first_seq,
                                actual: next,
                            },
                        ));
                        continue;
                    }
                    let n = append.first_seq + append.events.len() as u64;
                    for (i, payload) in append.events.into_iter().enumerate() {
                        events.push((Arc::clone(&id), append.first_seq + i as u64, payload));
                    }
                    let row = summaries.entry(Arc::clone(&id)).or_insert(SummaryRow {
                        definition: String::new(),
                        version: 0,
                        status: append.status,
                        note: None,
                        next_seq: n,
                    });
                    row.status = append.status;
                    row.note = append.note;
                    row.next_seq = n;
                    overlay.insert(id, Some(n));
                    planned.push(Planned::Appended(reply));
                }
                Request::Quarantine(saga_id, reason, reply) => {
                    quarantines.push((saga_id, reason));
                    planned.push(Planned::Quarantined(reply));
                }
            }
        }
        let written = write_batch(&mut conn, &events, &summaries, &quarantines).await;
        match written {
            Ok(()) => {
                for (id, next) in overlay {
                    let finished = summaries
                        .get(&id)
                        .is_some_and(|s| s.status.is_terminal());
                    if finished {
                        seqs.remove(&id);
                    } else {
                        seqs.insert(id, next);
                    }
                }
                for p in planned {
                    match p {
                        Planned::Created(r) => drop(r.send(Ok(Created::New))),
                        Planned::Exists(r) => drop(r.send(Ok(Created::Exists))),
                        Planned::Appended(r) | Planned::Quarantined(r) => drop(r.send(Ok(()))),
                        Planned::Refused(r, e) => drop(r.send(Err(e))),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "saga store batch failed");
                for p in planned {
                    let err = || StoreError::Database(e.to_string());
                    match p {
                        Planned::Created(r) | Planned::Exists(r) => drop(r.send(Err(err()))),
                        Planned::Appended(r) | Planned::Quarantined(r) | Planned::Refused(r, _) => {
                            drop(r.send(Err(err())));
                        }
                    }
                }
            }
        }
        if seqs.len() > 1_000_000 {
            // Bounded memory: the cache is reloaded from the file on a miss.
            seqs.clear();
        }
    }
}

fn fail_all(requests: impl Iterator<Item = Request>, e: &StoreError) {
    for request in requests {
        let err = StoreError::Database(e.to_string());
        match request {
            Request::Create(_, r) => drop(r.send(Err(err))),
            Request::Append(_, r) | Request::Quarantine(_, _, r) => drop(r.send(Err(err))),
        }
    }
}

/// Loads the next sequence number of every saga in the batch that the cache does not know.
async fn fill_cache(
    conn: &mut SqliteConnection,
    seqs: &mut HashMap<Arc<str>, Option<u64>>,
    batch: &[Request],
) -> Result<(), StoreError> {
    let mut missing: Vec<&str> = batch
        .iter()
        .filter(|r| !matches!(r, Request::Quarantine(..)))
        .map(Request::saga_id)
        .filter(|id| !seqs.contains_key(*id))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    for chunk in missing.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT saga_id, next_seq FROM staunch_sagas WHERE saga_id IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for id in chunk {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&mut *conn).await.map_err(db)?;
        for id in chunk {
            seqs.insert(Arc::from(*id), None);
        }
        for row in rows {
            let id: String = row.try_get(0).map_err(db)?;
            let next: i64 = row.try_get(1).map_err(db)?;
            seqs.insert(Arc::from(id), Some(next as u64));
        }
    }
    Ok(())
}

fn placeholders(rows: usize, columns: usize) -> String {
    let one = format!("({})", vec!["?"; columns].join(","));
    if columns == 1 {
        return vec!["?"; rows].join(",");
    }
    vec![one; rows].join(",")
}

async fn write_batch(
    conn: &mut SqliteConnection,
    events: &[(Arc<str>, u64, String)],
    summaries: &HashMap<Arc<str>, SummaryRow>,
    quarantines: &[(String, String)],
) -> Result<(), sqlx::Error> {
    let now = crate::runner::now_ms().cast_signed();
    let mut tx = conn.begin().await?;
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO staunch_saga_events (saga_id, seq, payload) VALUES {}",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(chunk.len() == ROWS_PER_STATEMENT);
        for (id, seq, payload) in chunk {
            query = query.bind(&**id).bind((*seq).cast_signed()).bind(payload.as_str());
        }
        query.execute(&mut *tx).await?;
    }
    let rows: Vec<_> = summaries.iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO staunch_sagas (saga_id, definition, version, status, note, next_seq, updated_at_ms) VALUES {} \
             ON CONFLICT (saga_id) DO UPDATE SET status = excluded.status, note = excluded.note, \
             next_seq = excluded.next_seq, updated_at_ms = excluded.updated_at_ms",
            placeholders(chunk.len(), 7)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(chunk.len() == ROWS_PER_STATEMENT);
        for (id, row) in chunk {
            query = query
                .bind(&***id)
                .bind(row.definition.as_str())
                .bind(i64::from(row.version))
                .bind(row.status.as_str())
                .bind(row.note.as_deref())
                .bind(row.next_seq.cast_signed())
                .bind(now);
        }
        query.execute(&mut *tx).await?;
    }
    for (id, reason) in quarantines {
        sqlx::query("UPDATE staunch_sagas SET status = ?, note = ?, updated_at_ms = ? WHERE saga_id = ?")
            .bind(SagaStatus::Quarantined.as_str())
            .bind(reason.as_str())
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

fn summary_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<SagaSummary, StoreError> {
    let status: String = row.try_get("status").map_err(db)?;
    let version: i64 = row.try_get("version").map_err(db)?;
    Ok(SagaSummary {
        saga_id: row.try_get("saga_id").map_err(db)?,
        definition: row.try_get("definition").map_err(db)?,
        version: u32::try_from(version).unwrap_or(u32::MAX),
        status: SagaStatus::parse(&status).unwrap_or(SagaStatus::Quarantined),
        note: row.try_get("note").map_err(db)?,
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
            let Some(row) = sqlx::query(
                "SELECT saga_id, definition, version, status, note FROM staunch_sagas WHERE saga_id = ?",
            )
            .bind(saga_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            else {
                return Ok(None);
            };
            let summary = summary_from_row(&row)?;
            let rows = sqlx::query(
                "SELECT seq, payload FROM staunch_saga_events WHERE saga_id = ? ORDER BY seq",
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
                    // Bytes, not text: a row that is not UTF-8 must reach the engine as an
                    // undecodable row (and get the saga quarantined), not fail the read.
                    let payload: Vec<u8> = row.try_get(1).map_err(db)?;
                    Ok(StoredEvent {
                        seq: seq as u64,
                        payload: String::from_utf8(payload)
                            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    })
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
            let mut sql = String::from(
                "SELECT saga_id, definition, version, status, note FROM staunch_sagas WHERE 1 = 1",
            );
            if !filter.statuses.is_empty() {
                sql.push_str(" AND status IN (");
                sql.push_str(&placeholders(filter.statuses.len(), 1));
                sql.push(')');
            }
            if filter.definition.is_some() {
                sql.push_str(" AND definition = ?");
            }
            sql.push_str(" ORDER BY saga_id");
            if filter.limit.is_some() {
                sql.push_str(" LIMIT ?");
            }
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for status in &filter.statuses {
                query = query.bind(status.as_str());
            }
            if let Some(d) = &filter.definition {
                query = query.bind(d.as_str());
            }
            if let Some(limit) = filter.limit {
                query = query.bind(i64::try_from(limit).unwrap_or(i64::MAX));
            }
            let rows = query.fetch_all(&self.inner.reader).await.map_err(db)?;
            rows.iter().map(summary_from_row).collect()
        })
    }

    fn quarantine<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.request(|tx| Request::Quarantine(saga_id.to_owned(), reason.to_owned(), tx)))
    }
}
