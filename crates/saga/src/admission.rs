//! Admission control: how many sagas one engine runs at once (in total and per definition),
//! and the bounded queue of `start` calls waiting for room.
//!
//! Every runner holds a [`Permit`] for as long as its task lives, whoever spawned it
//! (`start`, recovery, an operator action), so the caps bound what the dependencies see after
//! a restart as well as in steady state. The permits are plain tokio semaphore permits: a
//! waiter that is dropped leaves the queue, a permit that is dropped frees its slot.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The caps of one engine; `None` means unlimited (and costs nothing per saga).
#[derive(Debug, Default)]
pub(crate) struct Admission {
    engine: Option<Arc<Semaphore>>,
    per_definition: HashMap<Arc<str>, Arc<Semaphore>>,
    max_queued: usize,
    queued: AtomicUsize,
}

/// Room for one running saga: held by its task, released when the task ends.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Permit {
    _definition: Option<OwnedSemaphorePermit>,
    _engine: Option<OwnedSemaphorePermit>,
}

/// The queue of waiting starts is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull {
    pub(crate) queued: usize,
}

/// Counts one queued start until dropped (also when the waiting future is cancelled).
struct InQueue<'a>(&'a AtomicUsize);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub(crate) fn new(
        engine: Option<usize>,
        per_definition: impl IntoIterator<Item = (Arc<str>, usize)>,
        max_queued: usize,
    ) -> Self {
        Self {
            engine: engine.map(|n| Arc::new(Semaphore::new(n))),
            per_definition: per_definition
                .into_iter()
                .map(|(name, n)| (name, Arc::new(Semaphore::new(n))))
                .collect(),
            max_queued,
            queued: AtomicUsize::new(0),
        }
    }

    /// Room left under the engine-wide cap (`usize::MAX` without one).
    pub(crate) fn available(&self) -> usize {
        self.engine
            .as_ref()
            .map_or(usize::MAX, |s| s.available_permits())
    }

    /// Room for one saga of `definition` for a `start`: at once, after a wait in the
    /// bounded queue, or refused when the queue is full.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped waiter holds nothing and leaves the queue.
    pub(crate) async fn admit_queued(&self, definition: &str) -> Result<Permit, QueueFull> {
        if let Some(permit) = self.try_admit(definition) {
            return Ok(permit);
        }
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        let _in_queue = InQueue(&self.queued);
        if queued >= self.max_queued {
            return Err(QueueFull { queued });
        }
        Ok(self.wait(definition).await)
    }

    /// Room for one saga of `definition` for recovery or an operator action: they wait
    /// their turn outside the start queue (one waiter per pass or action).
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped waiter holds nothing.
    pub(crate) async fn admit(&self, definition: &str) -> Permit {
        match self.try_admit(definition) {
            Some(permit) => permit,
            None => self.wait(definition).await,
        }
    }

    /// Room now, if there is (always, without caps).
    fn try_admit(&self, definition: &str) -> Option<Permit> {
        let per_definition = self.per_definition.get(definition);
        if per_definition.is_none() && self.engine.is_none() {
            return Some(Permit::default());
        }
        // Both or neither: a caller that has to wait must not hold one slot meanwhile.
        let definition = match per_definition {
            Some(s) => Some(Arc::clone(s).try_acquire_owned().ok()?),
            None => None,
        };
        let engine = match &self.engine {
            Some(s) => Some(Arc::clone(s).try_acquire_owned().ok()?),
            None => None,
        };
        Some(Permit {
            _definition: definition,
            _engine: engine,
        })
    }

    /// Waits for the definition's cap first, then the engine's, so a saga held back by its
    /// definition takes no engine-wide slot from the others. The semaphores are never
    /// closed, so acquiring only ever waits.
    async fn wait(&self, definition: &str) -> Permit {
        let definition = match self.per_definition.get(definition) {
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => None,
        };
        let engine = match &self.engine {
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => None,
        };
        Permit {
            _definition: definition,
            _engine: engine,
        }
    }
}
