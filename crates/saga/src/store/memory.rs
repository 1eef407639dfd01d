//! An in-process store for tests and benchmarks: same contract, no durability.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures_util::future::{BoxFuture, FutureExt, ready};

use super::{
    Append, Created, ListFilter, NewSaga, SagaLog, SagaStatus, SagaStore, SagaSummary, StoredEvent,
};
use crate::error::StoreError;

/// Keeps logs in memory. Clones share the same logs.
///
/// For tests: it follows the [`SagaStore`] contract exactly (atomic create, sequence-checked
/// appends) but loses everything when the process ends.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<BTreeMap<Arc<str>, Entry>>>,
}

#[derive(Debug)]
struct Entry {
    summary: SagaSummary,
    events: Vec<String>,
    request: Option<String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written (every mutation
        // is a single push or assignment after the checks), so the poison flag is ignored.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Overwrites one row in place (for tests of corrupt-log handling).
    ///
    /// Returns whether the row existed.
    pub fn corrupt_row(&self, saga_id: &str, seq: u64, payload: impl Into<String>) -> bool {
        let mut map = self.lock();
        match map
            .get_mut(saga_id)
            .and_then(|e| e.events.get_mut(seq as usize))
        {
            Some(row) => {
                *row = payload.into();
                true
            }
            None => false,
        }
    }
}

impl SagaStore for MemoryStore {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        let mut map = self.lock();
        let created = if map.contains_key(&saga.saga_id) {
            Created::Exists
        } else {
            map.insert(
                Arc::clone(&saga.saga_id),
                Entry {
                    summary: {
                        let now = Some(SystemTime::now());
                        let mut summary = SagaSummary::new(
                            &*saga.saga_id,
                            &*saga.definition,
                            saga.version,
                            saga.status,
                        );
                        summary.created_at = now;
                        summary.updated_at = now;
                        summary.stuck_since = now.filter(|_| saga.status == SagaStatus::Stuck);
                        summary
                    },
                    events: saga.events,
                    request: None,
                },
            );
            Created::New
        };
        ready(Ok(created)).boxed()
    }

    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut map = self.lock();
        let result = match map.get_mut(&append.saga_id) {
            Some(entry) if entry.events.len() as u64 == append.first_seq => {
                entry.events.extend(append.events);
                let summary = &mut entry.summary;
                if summary.status != append.status || summary.note != append.note {
                    let now = SystemTime::now();
                    summary.updated_at = Some(now);
                    summary.stuck_since = match append.status {
                        SagaStatus::Stuck => summary.stuck_since.or(Some(now)),
                        _ => None,
                    };
                }
                summary.status = append.status;
                summary.note = append.note;
                Ok(())
            }
            other => Err(StoreError::Conflict {
                saga_id: append.saga_id.to_string(),
                expected: append.first_seq,
                actual: other.map(|e| e.events.len() as u64),
            }),
        };
        ready(result).boxed()
    }

    fn load<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<Option<SagaLog>, StoreError>> {
        let map = self.lock();
        let log = map.get(saga_id).map(|e| SagaLog {
            summary: e.summary.clone(),
            events: e
                .events
                .iter()
                .enumerate()
                .map(|(i, p)| StoredEvent::new(i as u64, p.clone()))
                .collect(),
        });
        ready(Ok(log)).boxed()
    }

    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<SagaSummary>, StoreError>> {
        let map = self.lock();
        let list = map
            .values()
            .filter(|e| filter.matches(&e.summary))
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(|e| e.summary.clone())
            .collect();
        ready(Ok(list)).boxed()
    }

    fn quarantine<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(saga_id) {
            e.summary.status = SagaStatus::Quarantined;
            e.summary.note = Some(reason.to_owned());
            e.summary.updated_at = Some(SystemTime::now());
            e.summary.stuck_since = None;
        }
        ready(Ok(())).boxed()
    }

    fn set_request<'a>(
        &'a self,
        saga_id: &'a str,
        request: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut map = self.lock();
        let found = map
            .get_mut(saga_id)
            .map(|e| e.request = request.map(str::to_owned));
        ready(Ok(found.is_some())).boxed()
    }

    fn request<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let request = self.lock().get(saga_id).and_then(|e| e.request.clone());
        ready(Ok(request)).boxed()
    }

    fn purge<'a>(
        &'a self,
        before: SystemTime,
        statuses: &'a [SagaStatus],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let mut map = self.lock();
        let gone: Vec<Arc<str>> = map
            .iter()
            .filter(|(_, e)| {
                statuses.contains(&e.summary.status)
                    && e.summary.updated_at.is_some_and(|at| at < before)
            })
            .map(|(id, _)| Arc::clone(id))
            .take(limit)
            .collect();
        for id in &gone {
            map.remove(id);
        }
        ready(Ok(gone.iter().map(ToString::to_string).collect())).boxed()
    }
}
