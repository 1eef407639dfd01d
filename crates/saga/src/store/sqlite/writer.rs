//! The group-commit writer: one task, one connection, one transaction per batch of requests.
//!
//! Requests queue on a channel while a batch commits; the writer then takes all of them (up
//! to `max_batch`), checks each append's sequence number against its cache, writes every log
//! row with a few multi-row `INSERT`s and every summary that changed with a few multi-row
//! upserts, commits once, and answers each requester only after the commit returned. A
//! summary row is written when a saga is created and when its status or note changes, not
//! on every append: most transitions cost only their log rows.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::store::{Append, Created, NewSaga, SagaStatus};

/// Rows per multi-row statement (3 or 6 parameters each; well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 500;

/// Most scheduler yields spent gathering one batch.
const MAX_GATHER_YIELDS: usize = 8;

/// Cache entries kept before the cache is dropped and reloaded on demand.
const MAX_CACHED: usize = 1_000_000;

pub(super) enum Request {
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

/// What the writer knows of a saga: its next sequence number and current summary.
#[derive(Clone, PartialEq, Eq)]
struct Known {
    next_seq: u64,
    status: SagaStatus,
    note: Option<String>,
}

/// What one request turned into, before the commit says whether it happened.
enum Planned {
    Created(oneshot::Sender<Result<Created, StoreError>>),
    Exists(oneshot::Sender<Result<Created, StoreError>>),
    Done(oneshot::Sender<Result<(), StoreError>>),
    Refused(oneshot::Sender<Result<(), StoreError>>, StoreError),
}

/// A summary row to insert (create) or update (status change).
struct SummaryRow {
    definition: Arc<str>,
    version: u32,
    status: SagaStatus,
    note: Option<String>,
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

pub(super) fn placeholders(rows: usize, columns: usize) -> String {
    let one = if columns == 1 {
        "?".to_owned()
    } else {
        format!("({})", vec!["?"; columns].join(","))
    };
    vec![one; rows].join(",")
}

/// Runs until every sender is dropped.
pub(super) async fn writer(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Request>,
    max_batch: usize,
) {
    // `None`: the saga does not exist. Finished sagas are evicted.
    let mut cache: HashMap<Arc<str>, Option<Known>> = HashMap::new();
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        gather(&mut rx, &mut batch, max_batch).await;
        if cache.len() > MAX_CACHED {
            cache.clear();
        }
        if let Err(e) = fill_cache(&mut conn, &mut cache, &batch).await {
            fail_all(batch.drain(..), &e);
            continue;
        }
        let mut overlay: HashMap<Arc<str>, Option<Known>> = HashMap::new();
        let mut summaries: HashMap<Arc<str>, SummaryRow> = HashMap::new();
        let mut events: Vec<(Arc<str>, u64, String)> = Vec::new();
        let mut quarantines: Vec<(String, String)> = Vec::new();
        let mut planned = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            let id: Arc<str> = Arc::from(request.saga_id());
            let known = overlay
                .get(&id)
                .or_else(|| cache.get(&id))
                .cloned()
                .flatten();
            match request {
                Request::Create(new, reply) => {
                    if known.is_some() {
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
                            definition: new.definition,
                            version: new.version,
                            status: new.status,
                            note: None,
                        },
                    );
                    overlay.insert(
                        id,
                        Some(Known {
                            next_seq: n,
                            status: new.status,
                            note: None,
                        }),
                    );
                    planned.push(Planned::Created(reply));
                }
                Request::Append(append, reply) => {
                    let Some(known) = known.filter(|k| k.next_seq == append.first_seq) else {
                        let actual = overlay
                            .get(&id)
                            .or_else(|| cache.get(&id))
                            .and_then(|k| k.as_ref().map(|k| k.next_seq));
                        planned.push(Planned::Refused(
                            reply,
                            StoreError::Conflict {
                                saga_id: id.to_string(),
                                expected: append.first_seq,
                                actual,
                            },
                        ));
                        continue;
                    };
                    let n = append.first_seq + append.events.len() as u64;
                    for (i, payload) in append.events.into_iter().enumerate() {
                        events.push((Arc::clone(&id), append.first_seq + i as u64, payload));
                    }
                    if known.status != append.status || known.note != append.note {
                        let row = summaries.entry(Arc::clone(&id)).or_insert(SummaryRow {
                            definition: Arc::from(""),
                            version: 0,
                            status: append.status,
                            note: None,
                        });
                        row.status = append.status;
                        row.note.clone_from(&append.note);
                    }
                    overlay.insert(
                        id,
                        Some(Known {
                            next_seq: n,
                            status: append.status,
                            note: append.note,
                        }),
                    );
                    planned.push(Planned::Done(reply));
                }
                Request::Quarantine(saga_id, reason, reply) => {
                    // The cache entry goes: a quarantined saga is not appended to.
                    overlay.remove(&id);
                    cache.remove(&id);
                    quarantines.push((saga_id, reason));
                    planned.push(Planned::Done(reply));
                }
            }
        }
        match write_batch(&mut conn, &events, &summaries, &quarantines).await {
            Ok(()) => {
                for (id, known) in overlay {
                    if known.as_ref().is_some_and(|k| k.status.is_terminal()) {
                        cache.remove(&id);
                    } else {
                        cache.insert(id, known);
                    }
                }
                for p in planned {
                    match p {
                        Planned::Created(r) => drop(r.send(Ok(Created::New))),
                        Planned::Exists(r) => drop(r.send(Ok(Created::Exists))),
                        Planned::Done(r) => drop(r.send(Ok(()))),
                        Planned::Refused(r, e) => drop(r.send(Err(e))),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "saga store batch failed");
                // The transaction rolled back: nothing of this batch happened.
                for p in planned {
                    let err = StoreError::Database(e.to_string());
                    match p {
                        Planned::Created(r) | Planned::Exists(r) => drop(r.send(Err(err))),
                        Planned::Done(r) | Planned::Refused(r, _) => drop(r.send(Err(err))),
                    }
                }
            }
        }
    }
}

/// Lets appenders that are about to send (typically the runners the previous commit just
/// answered) join this batch: yields to the scheduler while each yield brings new requests.
/// Costs nothing when requests stop coming, and saves a whole fsync per request it catches.
async fn gather(rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>, max_batch: usize) {
    for _ in 0..MAX_GATHER_YIELDS {
        if batch.len() >= max_batch {
            return;
        }
        tokio::task::yield_now().await;
        let before = batch.len();
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if batch.len() == before {
            return;
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

/// Loads what the cache does not know about the sagas of a batch.
async fn fill_cache(
    conn: &mut SqliteConnection,
    cache: &mut HashMap<Arc<str>, Option<Known>>,
    batch: &[Request],
) -> Result<(), StoreError> {
    let mut missing: Vec<&str> = batch
        .iter()
        .filter(|r| !matches!(r, Request::Quarantine(..)))
        .map(Request::saga_id)
        .filter(|id| !cache.contains_key(*id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    missing.dedup();
    for chunk in missing.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT s.saga_id, s.status, s.note, \
             COALESCE((SELECT MAX(e.seq) + 1 FROM staunch_saga_events e WHERE e.saga_id = s.saga_id), 0) \
             FROM staunch_sagas s WHERE s.saga_id IN ({})",
            placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for id in chunk {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&mut *conn).await.map_err(db)?;
        for id in chunk {
            cache.insert(Arc::from(*id), None);
        }
        for row in rows {
            let id: String = row.try_get(0).map_err(db)?;
            let status: String = row.try_get(1).map_err(db)?;
            let next: i64 = row.try_get(3).map_err(db)?;
            let known = Known {
                next_seq: next.cast_unsigned(),
                status: SagaStatus::parse(&status).unwrap_or(SagaStatus::Quarantined),
                note: row.try_get(2).map_err(db)?,
            };
            cache.insert(Arc::from(id), Some(known));
        }
    }
    Ok(())
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
        let mut query =
            sqlx::query(AssertSqlSafe(sql)).persistent(chunk.len() == ROWS_PER_STATEMENT);
        for (id, seq, payload) in chunk {
            query = query
                .bind(&**id)
                .bind((*seq).cast_signed())
                .bind(payload.as_str());
        }
        query.execute(&mut *tx).await?;
    }
    let rows: Vec<_> = summaries.iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO staunch_sagas (saga_id, definition, version, status, note, updated_at_ms) \
             VALUES {} ON CONFLICT (saga_id) DO UPDATE SET status = excluded.status, \
             note = excluded.note, updated_at_ms = excluded.updated_at_ms",
            placeholders(chunk.len(), 6)
        );
        let mut query =
            sqlx::query(AssertSqlSafe(sql)).persistent(chunk.len() == ROWS_PER_STATEMENT);
        for (id, row) in chunk {
            query = query
                .bind(&***id)
                .bind(&*row.definition)
                .bind(i64::from(row.version))
                .bind(row.status.as_str())
                .bind(row.note.as_deref())
                .bind(now);
        }
        query.execute(&mut *tx).await?;
    }
    for (id, reason) in quarantines {
        sqlx::query(
            "UPDATE staunch_sagas SET status = ?, note = ?, updated_at_ms = ? WHERE saga_id = ?",
        )
        .bind(SagaStatus::Quarantined.as_str())
        .bind(reason.as_str())
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
