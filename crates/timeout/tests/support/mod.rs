//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// Counts calls, and drops of futures that had not finished (cancellations).
#[derive(Debug, Default, Clone)]
pub struct Probe {
    calls: Arc<AtomicUsize>,
    dropped_unfinished: Arc<AtomicUsize>,
}

impl Probe {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn dropped_unfinished(&self) -> usize {
        self.dropped_unfinished.load(Ordering::SeqCst)
    }

    /// Wraps `fut`, counting the call now and a drop before completion later.
    pub fn watch<F: Future>(&self, fut: F) -> Watched<F> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Watched {
            fut: Box::pin(fut),
            done: false,
            dropped_unfinished: Arc::clone(&self.dropped_unfinished),
        }
    }
}

/// A future that records whether it was dropped before finishing.
pub struct Watched<F> {
    fut: Pin<Box<F>>,
    done: bool,
    dropped_unfinished: Arc<AtomicUsize>,
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let out = self.fut.as_mut().poll(cx);
        if out.is_ready() {
            self.done = true;
        }
        out
    }
}

impl<F> Drop for Watched<F> {
    fn drop(&mut self) {
        if !self.done {
            self.dropped_unfinished.fetch_add(1, Ordering::SeqCst);
        }
    }
}
