//! Leases: claiming sagas nobody drives, taking one for an operator, and the heartbeat.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::Row;

use super::{Inner, db, summary_from_row};
use crate::error::StoreError;
use crate::store::SagaSummary;

/// Claims up to `limit` running or compensating sagas with no owner, an expired lease, or a
/// lease of this owner that this store does not hold (left by a previous process with the
/// same owner id). Rows another instance is claiming at the same moment are skipped, not
/// waited for. Each claim bumps the lease version, fencing the previous owner.
pub(super) async fn claim_resumable(
    inner: &Inner,
    limit: usize,
) -> Result<Vec<SagaSummary>, StoreError> {
    let held: Vec<String> = inner.held().keys().map(ToString::to_string).collect();
    let rows = sqlx::query(
        "WITH c AS (
            SELECT saga_id FROM staunch_sagas
            WHERE status IN ('running', 'compensating')
              AND (lease_owner IS NULL OR lease_expires_at < now()
                   OR (lease_owner = $1 AND NOT (saga_id = ANY($2))))
            ORDER BY saga_id
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        )
        UPDATE staunch_sagas s
        SET lease_owner = $1, lease_version = s.lease_version + 1,
            lease_expires_at = now() + $4 * interval '1 millisecond'
        FROM c WHERE s.saga_id = c.saga_id
        RETURNING s.saga_id, s.definition, s.version, s.status, s.note, s.lease_version,
            (EXTRACT(EPOCH FROM s.created_at) * 1000)::bigint AS created_ms,
            (EXTRACT(EPOCH FROM s.updated_at) * 1000)::bigint AS updated_ms,
            (EXTRACT(EPOCH FROM s.stuck_since) * 1000)::bigint AS stuck_ms",
    )
    .bind(&*inner.owner)
    .bind(&held)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(inner.ttl_ms())
    .fetch_all(&inner.pool)
    .await
    .map_err(db)?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let summary = summary_from_row(row)?;
        let lease: i64 = row.try_get("lease_version").map_err(db)?;
        tracing::debug!(saga_id = %summary.saga_id, lease, owner = %inner.owner, "saga lease claimed");
        inner
            .held()
            .insert(Arc::from(summary.saga_id.as_str()), lease);
        claimed.push(summary);
    }
    claimed.sort_by(|a, b| a.saga_id.cmp(&b.saga_id));
    Ok(claimed)
}

/// Takes the lease of a saga no runner drives (not running or compensating, or its lease
/// expired, or it is this owner's and not held here), for an operator action.
pub(super) async fn acquire(inner: &Inner, saga_id: &str) -> Result<(), StoreError> {
    if inner.held().contains_key(saga_id) {
        return Ok(());
    }
    let row = sqlx::query(
        "UPDATE staunch_sagas
         SET lease_owner = $1, lease_version = lease_version + 1,
             lease_expires_at = now() + $3 * interval '1 millisecond'
         WHERE saga_id = $2
           AND (status NOT IN ('running', 'compensating') OR lease_owner IS NULL
                OR lease_expires_at < now() OR lease_owner = $1)
         RETURNING lease_version",
    )
    .bind(&*inner.owner)
    .bind(saga_id)
    .bind(inner.ttl_ms())
    .fetch_optional(&inner.pool)
    .await
    .map_err(db)?;
    match row {
        Some(row) => {
            let lease: i64 = row.try_get(0).map_err(db)?;
            inner.held().insert(Arc::from(saga_id), lease);
            Ok(())
        }
        None => Err(StoreError::LeaseLost {
            saga_id: saga_id.to_owned(),
        }),
    }
}

/// Renews every lease this store holds, every `interval`, in one statement; a lease found
/// taken over is dropped from the held set so the next append fails fast. Ends when the
/// store is dropped.
pub(super) async fn heartbeat(inner: Weak<Inner>, interval: Duration) {
    loop {
        // A sleep, not an interval: a huge TTL (and so interval) saturates instead of
        // overflowing the next tick's instant.
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = renew(&inner).await {
            tracing::warn!(error = %e, owner = %inner.owner, "saga lease renewal failed");
        }
    }
}

async fn renew(inner: &Inner) -> Result<(), StoreError> {
    let (ids, versions): (Vec<String>, Vec<i64>) = inner
        .held()
        .iter()
        .filter(|(_, v)| **v != super::CREATING)
        .map(|(id, v)| (id.to_string(), *v))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    // Rows locked by a writer are skipped, not waited for (the heartbeat never takes part in
    // a deadlock): the writer's append extends their lease anyway.
    let rows = sqlx::query(
        "WITH h AS (
            SELECT * FROM unnest($1::text[], $2::bigint[]) AS t(saga_id, lease)
        ), l AS (
            SELECT s.saga_id, s.lease_owner = $3 AND s.lease_version = h.lease AS ours,
                s.request IS NOT NULL AS asked
            FROM h JOIN staunch_sagas s ON s.saga_id = h.saga_id
            FOR UPDATE OF s SKIP LOCKED
        ), renewed AS (
            UPDATE staunch_sagas s
            SET lease_expires_at = now() + $4 * interval '1 millisecond'
            FROM l WHERE s.saga_id = l.saga_id AND l.ours
        )
        SELECT saga_id, ours FROM l WHERE NOT ours OR (ours AND asked)",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(&*inner.owner)
    .bind(inner.ttl_ms())
    .fetch_all(&inner.pool)
    .await
    .map_err(db)?;
    if rows.is_empty() {
        return Ok(());
    }
    let snapshot: std::collections::HashMap<String, i64> = ids.into_iter().zip(versions).collect();
    let mut held = inner.held();
    for row in &rows {
        let id: String = row.try_get(0).map_err(db)?;
        let ours: Option<bool> = row.try_get(1).map_err(db)?;
        if ours == Some(true) {
            // An operator's request for a saga this instance drives: its runner reads it at
            // its next step boundary.
            inner.requested().insert(id);
            continue;
        }
        // Only if unchanged since the snapshot: a lease taken meanwhile stays.
        if held.get(id.as_str()) == snapshot.get(&id) {
            tracing::debug!(saga_id = %id, owner = %inner.owner, "saga lease lost");
            held.remove(id.as_str());
        }
    }
    Ok(())
}
