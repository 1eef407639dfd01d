//! Group commit for Postgres: writer tasks share one request queue; each takes every request
//! queued while it was busy (up to `max_batch`), writes the batch with a couple of
//! array-parameter statements in one transaction, commits once, and only then answers.
//!
//! An append's statement updates the saga's row only if its sequence number and lease still
//! match (the fencing check, in the same statement as the rows it guards) and inserts the log
//! rows of exactly the appends whose update matched.
//!
//! Deadlocks: a batch waits only for rows of its own sagas. The heartbeat and claims skip
//! locked rows instead of waiting, operator actions lock one row, and a saga has one append
//! in flight at a time (its runner awaits each), so two batches never wait for each other
//! unless a caller races appends to the same sagas from several tasks; then Postgres aborts
//! one batch, whose appends fail with a database error and are retried by recovery.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Inner, storable_note};
use crate::error::StoreError;
use crate::store::{Append, Created, NewSaga, SagaStatus};

/// Most scheduler yields spent gathering one batch.
const MAX_GATHER_YIELDS: usize = 8;

pub(super) enum Request {
    Create(NewSaga, oneshot::Sender<Result<Created, StoreError>>),
    /// An append with the lease version this store holds (-1: none).
    Append(Append, i64, oneshot::Sender<Result<(), StoreError>>),
}

pub(super) async fn writer(
    inner: Weak<Inner>,
    pool: PgPool,
    rx: Arc<Mutex<mpsc::Receiver<Request>>>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            gather(&mut rx, &mut batch, max_batch).await;
        }
        // The owner id and TTL live in the store; a writer outliving it has nothing to do.
        let Some((owner, ttl_ms)) = inner.upgrade().map(|i| (Arc::clone(&i.owner), i.ttl_ms()))
        else {
            return;
        };
        let requests = std::mem::take(&mut batch);
        write(&pool, &owner, ttl_ms, requests).await;
    }
}

/// Lets appenders that are about to send join this batch (see the SQLite writer).
async fn gather(rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>, max_batch: usize) {
    for _ in 0..MAX_GATHER_YIELDS {
        let before = batch.len();
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if batch.len() >= max_batch || (batch.len() == before && before > 1) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

type CreateReply = oneshot::Sender<Result<Created, StoreError>>;
type AppendReply = oneshot::Sender<Result<(), StoreError>>;

/// Writes a batch in one transaction. When that fails and the batch holds more than one
/// request, each is retried in its own transaction (creates first, then appends in request
/// order), so a value only one saga's request can break fails that request alone: one
/// saga's bad row never fails another's append.
async fn write(pool: &PgPool, owner: &str, ttl_ms: i64, requests: Vec<Request>) {
    let mut creates = Vec::new();
    let mut appends = Vec::new();
    for r in requests {
        match r {
            Request::Create(n, reply) => creates.push((n, reply)),
            Request::Append(a, lease, reply) => appends.push((a, lease, reply)),
        }
    }
    let result = write_one_transaction(pool, owner, ttl_ms, &creates, &appends).await;
    match result {
        Ok((created, outcomes)) => answer(creates, appends, created, outcomes),
        Err(e) if creates.len() + appends.len() > 1 => {
            tracing::warn!(error = %e, "postgres saga store batch failed; writing its requests one by one");
            for create in creates {
                let one = vec![create];
                match write_one_transaction(pool, owner, ttl_ms, &one, &[]).await {
                    Ok((created, _)) => answer(one, Vec::new(), created, Vec::new()),
                    Err(e) => fail(one, Vec::new(), &e),
                }
            }
            for append in appends {
                let one = vec![append];
                match write_one_transaction(pool, owner, ttl_ms, &[], &one).await {
                    Ok((_, outcomes)) => answer(Vec::new(), one, Vec::new(), outcomes),
                    Err(e) => fail(Vec::new(), one, &e),
                }
            }
        }
        Err(e) => fail(creates, appends, &e),
    }
}

type Creates = Vec<(NewSaga, CreateReply)>;
type Appends = Vec<(Append, i64, AppendReply)>;

async fn write_one_transaction(
    pool: &PgPool,
    owner: &str,
    ttl_ms: i64,
    creates: &[(NewSaga, CreateReply)],
    appends: &[(Append, i64, AppendReply)],
) -> Result<(Vec<bool>, Vec<Result<(), StoreError>>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let created = write_creates(&mut tx, owner, ttl_ms, creates).await?;
    let outcomes = write_appends(&mut tx, owner, ttl_ms, appends).await?;
    tx.commit().await?;
    Ok((created, outcomes))
}

fn answer(
    creates: Creates,
    appends: Appends,
    created: Vec<bool>,
    outcomes: Vec<Result<(), StoreError>>,
) {
    for ((_, reply), new) in creates.into_iter().zip(created) {
        let _ = reply.send(Ok(if new { Created::New } else { Created::Exists }));
    }
    for ((_, _, reply), outcome) in appends.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

fn fail(creates: Creates, appends: Appends, e: &sqlx::Error) {
    tracing::error!(error = %e, "postgres saga store write failed");
    for (_, reply) in creates {
        let _ = reply.send(Err(db_str(e)));
    }
    for (_, _, reply) in appends {
        let _ = reply.send(Err(db_str(e)));
    }
}

fn db_str(e: &sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Inserts the new sagas (leased to `owner`) and their first rows; returns, per create,
/// whether it was new. A repeated id within the batch is new at most once.
async fn write_creates(
    tx: &mut Transaction<'static, Postgres>,
    owner: &str,
    ttl_ms: i64,
    creates: &[(NewSaga, CreateReply)],
) -> Result<Vec<bool>, sqlx::Error> {
    if creates.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    let (mut ids, mut defs, mut versions, mut statuses, mut counts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut e_ids, mut e_seqs, mut e_payloads) = (Vec::new(), Vec::new(), Vec::new());
    for (n, _) in creates {
        if !seen.insert(&*n.saga_id) {
            continue;
        }
        ids.push(&*n.saga_id);
        defs.push(&*n.definition);
        versions.push(i32::try_from(n.version).unwrap_or(i32::MAX));
        statuses.push(n.status.as_str());
        counts.push((n.events.len() as u64).cast_signed());
        for (i, payload) in n.events.iter().enumerate() {
            e_ids.push(&*n.saga_id);
            e_seqs.push((i as u64).cast_signed());
            e_payloads.push(payload.as_str());
        }
    }
    let rows = sqlx::query(
        "WITH ins AS (
            INSERT INTO staunch_sagas (saga_id, definition, version, status, next_seq,
                                       lease_owner, lease_version, lease_expires_at)
            SELECT t.saga_id, t.definition, t.version, t.status, t.n,
                   $6, 1, now() + $7 * interval '1 millisecond'
            FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[])
                 AS t(saga_id, definition, version, status, n)
            ORDER BY t.saga_id
            ON CONFLICT (saga_id) DO NOTHING
            RETURNING saga_id
        ), ev AS (
            INSERT INTO staunch_saga_events (saga_id, seq, payload)
            SELECT e.saga_id, e.seq, e.payload
            FROM unnest($8::text[], $9::bigint[], $10::text[]) AS e(saga_id, seq, payload)
            WHERE e.saga_id IN (SELECT saga_id FROM ins)
        )
        SELECT saga_id FROM ins",
    )
    .bind(&ids)
    .bind(&defs)
    .bind(&versions)
    .bind(&statuses)
    .bind(&counts)
    .bind(owner)
    .bind(ttl_ms)
    .bind(&e_ids)
    .bind(&e_seqs)
    .bind(&e_payloads)
    .fetch_all(&mut **tx)
    .await?;
    let mut new: HashSet<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    Ok(creates
        .iter()
        .map(|(n, _)| new.remove(&*n.saga_id))
        .collect())
}

/// Writes the appends in rounds (a saga appears at most once per round, in request order);
/// returns each append's result.
async fn write_appends(
    tx: &mut Transaction<'static, Postgres>,
    owner: &str,
    ttl_ms: i64,
    appends: &[(Append, i64, AppendReply)],
) -> Result<Vec<Result<(), StoreError>>, sqlx::Error> {
    let mut outcomes: Vec<Option<Result<(), StoreError>>> = Vec::new();
    outcomes.resize_with(appends.len(), || None);
    let mut remaining: Vec<usize> = (0..appends.len()).collect();
    let mut failed = Vec::new();
    while !remaining.is_empty() {
        let mut in_round = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = remaining
            .iter()
            .partition(|&&i| in_round.insert(&*appends[i].0.saga_id));
        remaining = later;
        let ok = append_round(tx, owner, ttl_ms, appends, &round).await?;
        for i in round {
            if ok.contains(&i) {
                outcomes[i] = Some(Ok(()));
            } else {
                failed.push(i);
            }
        }
    }
    if !failed.is_empty() {
        // Why they failed, as the rows stand now (rare: races and lost leases).
        let ids: Vec<&str> = failed.iter().map(|&i| &*appends[i].0.saga_id).collect();
        let rows = sqlx::query(
            "SELECT s.saga_id, s.next_seq, s.lease_owner, s.lease_version
             FROM unnest($1::text[]) AS x(saga_id) JOIN staunch_sagas s ON s.saga_id = x.saga_id",
        )
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
        let mut now: HashMap<String, (i64, Option<String>, i64)> = HashMap::new();
        for r in rows {
            now.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
        }
        for i in failed {
            let (append, lease, _) = &appends[i];
            let saga_id = append.saga_id.to_string();
            outcomes[i] = Some(Err(match now.get(&saga_id) {
                None => StoreError::Conflict {
                    saga_id,
                    expected: append.first_seq,
                    actual: None,
                },
                Some((_, o, v)) if o.as_deref() != Some(owner) || v != lease => {
                    StoreError::LeaseLost { saga_id }
                }
                Some((next, _, _)) => StoreError::Conflict {
                    saga_id,
                    expected: append.first_seq,
                    actual: Some(next.cast_unsigned()),
                },
            }));
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Err(StoreError::Closed)))
        .collect())
}

/// One statement: fenced, sequence-checked summary updates, then the log rows of the appends
/// whose update matched. Returns the indexes that were written.
async fn append_round(
    tx: &mut Transaction<'static, Postgres>,
    owner: &str,
    ttl_ms: i64,
    appends: &[(Append, i64, AppendReply)],
    round: &[usize],
) -> Result<HashSet<usize>, sqlx::Error> {
    let mut idx = Vec::with_capacity(round.len());
    let (mut ids, mut leases, mut firsts, mut counts, mut statuses, mut notes) = (
        Vec::with_capacity(round.len()),
        Vec::with_capacity(round.len()),
        Vec::with_capacity(round.len()),
        Vec::with_capacity(round.len()),
        Vec::with_capacity(round.len()),
        Vec::with_capacity(round.len()),
    );
    let mut terminal = Vec::with_capacity(round.len());
    let (mut e_idx, mut e_seqs, mut e_payloads) = (Vec::new(), Vec::new(), Vec::new());
    for &i in round {
        let (a, lease, _) = &appends[i];
        let i = i32::try_from(i).unwrap_or(i32::MAX);
        idx.push(i);
        ids.push(&*a.saga_id);
        leases.push(*lease);
        firsts.push(a.first_seq.cast_signed());
        counts.push((a.events.len() as u64).cast_signed());
        statuses.push(a.status.as_str());
        notes.push(a.note.as_deref().map(|n| storable_note(n).into_owned()));
        // A paused saga lets its lease go too: any instance may resume it.
        terminal.push(
            a.status.is_terminal()
                || a.status == SagaStatus::Quarantined
                || a.status == SagaStatus::Paused,
        );
        for (k, payload) in a.events.iter().enumerate() {
            e_idx.push(i);
            e_seqs.push((a.first_seq + k as u64).cast_signed());
            e_payloads.push(payload.as_str());
        }
    }
    let rows = sqlx::query(
        "WITH input AS (
            SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                                 $6::text[], $7::text[], $8::bool[])
                AS t(idx, saga_id, lease, first_seq, n, status, note, terminal)
        ), ok AS (
            UPDATE staunch_sagas s
            SET next_seq = s.next_seq + i.n, status = i.status, note = i.note,
                stuck_since = CASE WHEN i.status = 'stuck'
                    THEN COALESCE(s.stuck_since, now()) END,
                lease_owner = CASE WHEN i.terminal THEN NULL ELSE s.lease_owner END,
                lease_expires_at = CASE WHEN i.terminal THEN NULL
                    ELSE now() + $9 * interval '1 millisecond' END,
                updated_at = now()
            FROM input i
            WHERE s.saga_id = i.saga_id
              AND s.next_seq = i.first_seq
              AND s.lease_owner = $10 AND s.lease_version = i.lease
            RETURNING i.idx, i.saga_id
        ), ev AS (
            INSERT INTO staunch_saga_events (saga_id, seq, payload)
            SELECT ok.saga_id, e.seq, e.payload
            FROM unnest($11::int[], $12::bigint[], $13::text[]) AS e(idx, seq, payload)
            JOIN ok ON ok.idx = e.idx
        )
        SELECT idx FROM ok",
    )
    .bind(&idx)
    .bind(&ids)
    .bind(&leases)
    .bind(&firsts)
    .bind(&counts)
    .bind(&statuses)
    .bind(&notes)
    .bind(&terminal)
    .bind(ttl_ms)
    .bind(owner)
    .bind(&e_idx)
    .bind(&e_seqs)
    .bind(&e_payloads)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| r.try_get::<i32, _>(0).map(|i| i as usize))
        .collect()
}
