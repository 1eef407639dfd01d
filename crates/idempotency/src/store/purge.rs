//! The background purge: one task per store, which ends as soon as its store is dropped.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

/// Held by a store's shared state; dropping it (with the last clone of the store) wakes the
/// purge task, which then ends at once instead of at its next tick.
#[derive(Debug)]
pub(crate) struct PurgeTask {
    _stop: oneshot::Sender<()>,
}

impl PurgeTask {
    /// Spawns a task that calls `purge` every `interval` while `inner` is alive, if a tokio
    /// runtime is running (otherwise no task: records then go when `purge` is called).
    ///
    /// The task holds only a `Weak`, so it never keeps the store alive; it upgrades it for
    /// the length of one purge.
    pub(crate) fn spawn<T, F, Fut>(
        inner: Weak<T>,
        stop: oneshot::Receiver<()>,
        interval: Duration,
        purge: F,
    ) where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut stop = stop;
            // `timeout` elapsing is the tick; the receiver finishing is the store's drop.
            while tokio::time::timeout(interval, &mut stop).await.is_err() {
                let Some(inner) = inner.upgrade() else { return };
                purge(inner).await;
            }
        });
    }

    /// A stop handle and its receiver, to build before the shared state exists.
    pub(crate) fn channel() -> (PurgeTask, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (PurgeTask { _stop: tx }, rx)
    }
}
