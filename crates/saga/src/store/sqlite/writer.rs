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

/// Rows per multi-row statement (3 or 8 parameters each; well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 500;

/// Most scheduler yields spent gathering one batch.
const MAX_GATHER_YIELDS: usize = 8;

/// Cache entries kept before the cache is dropped and reloaded on demand.
const MAX_CACHED: usize = 1_000_000;

pub(super) enum Request {
    Create(NewSaga, oneshot::Sender<Result<Created, StoreError>>),
    Append(Append, oneshot::Sender<Result<(), StoreError>>),
    Quarantine(Arc<str>, String, oneshot::Sender<Result<(), StoreError>>),
}

impl Request {
    fn saga_id(&self) -> &Arc<str> {
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

/// What one request comes to if its batch commits.
enum Outcome {
    Created,
    Exists,
    Done,
    Refused(StoreError),
}

impl Request {
    fn answer(self, outcome: Outcome) {
        match (self, outcome) {
            (Self::Create(_, r), Outcome::Created | Outcome::Done) => {
                drop(r.send(Ok(Created::New)));
            }
            (Self::Create(_, r), Outcome::Exists) => drop(r.send(Ok(Created::Exists))),
            (Self::Create(_, r), Outcome::Refused(e)) => drop(r.send(Err(e))),
            (Self::Append(_, r) | Self::Quarantine(_, _, r), Outcome::Refused(e)) => {
                drop(r.send(Err(e)));
            }
            (Self::Append(_, r) | Self::Quarantine(_, _, r), _) => drop(r.send(Ok(()))),
        }
    }

    fn fail(self, e: &StoreError) {
        self.answer(Outcome::Refused(StoreError::Database(e.to_string())));
    }
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
///
/// A batch whose transaction fails is retried one request per transaction, so a row only
/// one saga's request can break (a constraint, a value the database refuses) fails that
/// request alone: one saga's bad row never fails another's append.
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
        let requests = std::mem::replace(&mut batch, Vec::with_capacity(max_batch));
        match commit(&mut conn, &mut cache, &requests).await {
            Ok(outcomes) => {
                for (request, outcome) in requests.into_iter().zip(outcomes) {
                    request.answer(outcome);
                }
            }
            Err(e) if requests.len() > 1 => {
                tracing::warn!(error = %e, requests = requests.len(), "saga store batch failed; committing its requests one by one");
                for request in requests {
                    let one = [request];
                    let result = commit(&mut conn, &mut cache, &one).await;
                    let [request] = one;
                    match result.map(|mut o| o.pop()) {
                        Ok(Some(outcome)) => request.answer(outcome),
                        Ok(None) => request.fail(&StoreError::Closed),
                        Err(e) => {
                            tracing::error!(error = %e, saga_id = %request.saga_id(), "saga store request failed");
                            request.fail(&e);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "saga store batch failed");
                for request in requests {
                    request.fail(&e);
                }
            }
        }
    }
}

/// Plans and commits `requests` in one transaction; the cache changes only if it commits.
async fn commit(
    conn: &mut SqliteConnection,
    cache: &mut HashMap<Arc<str>, Option<Known>>,
    requests: &[Request],
) -> Result<Vec<Outcome>, StoreError> {
    let broken = fill_cache(conn, cache, requests).await?;
    let mut overlay: HashMap<Arc<str>, Option<Known>> = HashMap::new();
    let mut summaries: HashMap<Arc<str>, SummaryRow> = HashMap::new();
    let mut events: Vec<(Arc<str>, u64, &str)> = Vec::new();
    let mut quarantines: Vec<(&str, &str)> = Vec::new();
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        // The request's own id: no copy per request.
        let id = Arc::clone(request.saga_id());
        let known = overlay
            .get(&id)
            .or_else(|| cache.get(&id))
            .cloned()
            .flatten();
        match request {
            Request::Create(new, _) => {
                if known.is_some() || broken.contains_key(&id) {
                    outcomes.push(Outcome::Exists);
                    continue;
                }
                let n = new.events.len() as u64;
                for (i, payload) in (0u64..).zip(&new.events) {
                    events.push((Arc::clone(&id), i, payload.as_str()));
                }
                summaries.insert(
                    Arc::clone(&id),
                    SummaryRow {
                        definition: Arc::clone(&new.definition),
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
                outcomes.push(Outcome::Created);
            }
            Request::Append(append, _) => {
                if let Some(why) = broken.get(&id) {
                    outcomes.push(Outcome::Refused(StoreError::Database(format!(
                        "saga `{id}` cannot be appended to: {why}"
                    ))));
                    continue;
                }
                let Some(known) = known.filter(|k| k.next_seq == append.first_seq) else {
                    let actual = overlay
                        .get(&id)
                        .or_else(|| cache.get(&id))
                        .and_then(|k| k.as_ref().map(|k| k.next_seq));
                    outcomes.push(Outcome::Refused(StoreError::Conflict {
                        saga_id: id.to_string(),
                        expected: append.first_seq,
                        actual,
                    }));
                    continue;
                };
                let Some(n) = append.first_seq.checked_add(append.events.len() as u64) else {
                    outcomes.push(Outcome::Refused(StoreError::Conflict {
                        saga_id: id.to_string(),
                        expected: append.first_seq,
                        actual: Some(known.next_seq),
                    }));
                    continue;
                };
                for (seq, payload) in (append.first_seq..).zip(&append.events) {
                    events.push((Arc::clone(&id), seq, payload.as_str()));
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
                        note: append.note.clone(),
                    }),
                );
                outcomes.push(Outcome::Done);
            }
            Request::Quarantine(saga_id, reason, _) => {
                // The cache entry goes: a quarantined saga is not appended to.
                overlay.remove(&id);
                cache.remove(&id);
                quarantines.push((saga_id, reason));
                outcomes.push(Outcome::Done);
            }
        }
    }
    write_batch(conn, &events, &summaries, &quarantines)
        .await
        .map_err(db)?;
    for (id, known) in overlay {
        if known.as_ref().is_some_and(|k| forgotten(k.status)) {
            cache.remove(&id);
        } else {
            cache.insert(id, known);
        }
    }
    // Nor is one loaded for this batch (a create of a saga that ended long ago): `purge` may
    // delete it beside the writer, and a stale entry would then refuse its id.
    for request in requests {
        let id = request.saga_id();
        if cache
            .get(id)
            .is_some_and(|k| k.as_ref().is_some_and(|k| forgotten(k.status)))
        {
            cache.remove(id);
        }
    }
    Ok(outcomes)
}

/// Whether the cache lets go of a saga in `status`: it is not appended to again (by this
/// writer's callers), and [`purge`](crate::SagaStore::purge) may delete it.
fn forgotten(status: SagaStatus) -> bool {
    status.is_terminal() || status == SagaStatus::Quarantined
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

/// Loads what the cache does not know about the sagas of a batch. Returns the sagas whose
/// stored rows cannot be used (a sequence number with no next one, a value of the wrong
/// type), with why: their requests are refused, the others go on.
async fn fill_cache(
    conn: &mut SqliteConnection,
    cache: &mut HashMap<Arc<str>, Option<Known>>,
    batch: &[Request],
) -> Result<HashMap<Arc<str>, String>, StoreError> {
    let mut broken = HashMap::new();
    let mut missing: Vec<&str> = batch
        .iter()
        .filter(|r| !matches!(r, Request::Quarantine(..)))
        .map(|r| &**r.saga_id())
        .filter(|id| !cache.contains_key(*id))
        .collect();
    if missing.is_empty() {
        return Ok(broken);
    }
    missing.sort_unstable();
    missing.dedup();
    for chunk in missing.chunks(ROWS_PER_STATEMENT) {
        // MAX(seq), not MAX(seq) + 1: SQLite turns an integer overflow into a REAL. Each
        // seq is read as an integer, exactly as `load` reads it, so the writer and the
        // engine agree on where a log with a crafted REAL or TEXT seq ends.
        let sql = format!(
            "SELECT s.saga_id, s.status, s.note, \
             (SELECT MAX(CAST(e.seq AS INTEGER)) FROM staunch_saga_events e \
              WHERE e.saga_id = s.saga_id) \
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
            let Ok(id) = row.try_get::<String, _>(0) else {
                continue;
            };
            let id: Arc<str> = Arc::from(id);
            match known_from_row(&row) {
                Ok(known) => {
                    cache.insert(id, Some(known));
                }
                Err(why) => {
                    tracing::warn!(saga_id = %id, why, "saga row cannot be used by the writer");
                    cache.remove(&id);
                    broken.insert(id, why);
                }
            }
        }
    }
    Ok(broken)
}

fn known_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Known, String> {
    let status: String = row.try_get(1).map_err(|e| e.to_string())?;
    let max: Option<i64> = row
        .try_get(3)
        .map_err(|e| format!("its highest sequence number is not an integer ({e})"))?;
    let next_seq = match max {
        None => 0,
        Some(max) => max
            .checked_add(1)
            .and_then(|next| u64::try_from(next).ok())
            .ok_or_else(|| format!("its highest sequence number {max} has no next one"))?,
    };
    Ok(Known {
        next_seq,
        status: SagaStatus::parse(&status).unwrap_or(SagaStatus::Quarantined),
        note: row.try_get(2).map_err(|e| e.to_string())?,
    })
}

async fn write_batch(
    conn: &mut SqliteConnection,
    events: &[(Arc<str>, u64, &str)],
    summaries: &HashMap<Arc<str>, SummaryRow>,
    quarantines: &[(&str, &str)],
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
            query = query.bind(&**id).bind((*seq).cast_signed()).bind(*payload);
        }
        query.execute(&mut *tx).await?;
    }
    let rows: Vec<_> = summaries.iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO staunch_sagas (saga_id, definition, version, status, note, updated_at_ms, \
             created_at_ms, stuck_since_ms) \
             VALUES {} ON CONFLICT (saga_id) DO UPDATE SET status = excluded.status, \
             note = excluded.note, updated_at_ms = excluded.updated_at_ms, \
             stuck_since_ms = CASE WHEN excluded.status = 'stuck' \
             THEN COALESCE(staunch_sagas.stuck_since_ms, excluded.updated_at_ms) END",
            placeholders(chunk.len(), 8)
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
                .bind(now)
                .bind(now)
                .bind((row.status == SagaStatus::Stuck).then_some(now));
        }
        query.execute(&mut *tx).await?;
    }
    for (id, reason) in quarantines {
        sqlx::query(
            "UPDATE staunch_sagas SET status = ?, note = ?, updated_at_ms = ?, stuck_since_ms = NULL \
             WHERE saga_id = ?",
        )
        .bind(SagaStatus::Quarantined.as_str())
        .bind(*reason)
        .bind(now)
        .bind(*id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
