//! [`MemoryStore`]: keys in a process-local map, for tests and single-process services that
//! accept forgetting every key on restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::{Begin, Claim, DEFAULT_PURGE_INTERVAL, IdempotencyStore, PurgeTask, StoreError};
use crate::record::{Fingerprint, Outcome};

/// Keys in memory: lost on restart, so it cannot give exactly-once across a crash; use the
/// SQLite or PostgreSQL store for that. Expiry follows tokio's clock (paused time in tests
/// moves it). Clones share the map.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    entries: Mutex<HashMap<String, Entry>>,
    _purge: PurgeTask,
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    token: i64,
    /// The lease's end while in flight, the TTL's end once finished.
    expires: Instant,
    outcome: Option<Outcome>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store, purged every minute in the background when created inside a tokio
    /// runtime (the task ends when the last clone is dropped).
    pub fn new() -> Self {
        Self::with_purge_interval(DEFAULT_PURGE_INTERVAL)
    }

    /// An empty store purged every `interval` (a zero interval is read as one millisecond).
    pub fn with_purge_interval(interval: Duration) -> Self {
        let (purge, stop) = PurgeTask::channel();
        let inner = Arc::new(Inner {
            entries: Mutex::new(HashMap::new()),
            _purge: purge,
        });
        PurgeTask::spawn(
            Arc::downgrade(&inner),
            stop,
            interval.max(Duration::from_millis(1)),
            |inner: Arc<Inner>| async move {
                purge_expired(&mut lock(&inner), Instant::now());
            },
        );
        MemoryStore { inner }
    }

    /// How many keys it holds (in flight or finished, expired ones until purged).
    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The map stays consistent across a panic elsewhere (every change is one insert or remove),
/// so a poisoned lock is taken as is.
fn lock(inner: &Inner) -> MutexGuard<'_, HashMap<String, Entry>> {
    inner
        .entries
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn purge_expired(entries: &mut HashMap<String, Entry>, now: Instant) -> u64 {
    let before = entries.len();
    entries.retain(|_, e| e.expires > now);
    (before - entries.len()) as u64
}

impl IdempotencyStore for MemoryStore {
    async fn begin(&self, claim: &Claim, lease: Duration) -> Result<Begin, StoreError> {
        let now = Instant::now();
        let mut entries = lock(&self.inner);
        if let Some(e) = entries.get(claim.key())
            && e.expires > now
        {
            return Ok(match &e.outcome {
                None => Begin::InFlight {
                    fingerprint: e.fingerprint,
                },
                Some(outcome) => Begin::Finished {
                    fingerprint: e.fingerprint,
                    outcome: outcome.clone(),
                },
            });
        }
        entries.insert(
            claim.key().to_owned(),
            Entry {
                fingerprint: claim.fingerprint(),
                token: claim.token(),
                expires: staunch_core::instant_after(now, lease),
                outcome: None,
            },
        );
        Ok(Begin::Started)
    }

    async fn finish(
        &self,
        claim: &Claim,
        outcome: &Outcome,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut entries = lock(&self.inner);
        if let Some(e) = entries.get_mut(claim.key())
            && e.token == claim.token()
            && e.outcome.is_none()
        {
            e.outcome = Some(outcome.clone());
            e.expires = staunch_core::instant_after(Instant::now(), ttl);
            return Ok(());
        }
        Err(StoreError::LeaseLost {
            key: claim.key().to_owned(),
        })
    }

    async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        let mut entries = lock(&self.inner);
        if entries
            .get(claim.key())
            .is_some_and(|e| e.token == claim.token() && e.outcome.is_none())
        {
            entries.remove(claim.key());
        }
        Ok(())
    }

    async fn purge(&self) -> Result<u64, StoreError> {
        Ok(purge_expired(&mut lock(&self.inner), Instant::now()))
    }
}
