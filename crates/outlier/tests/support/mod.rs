//! In-process replicas for the balancer's tests: each answers with its name, or fails, or
//! hangs, as the test says, and counts the calls it got.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use staunch_outlier::BoxError;
use tower::Service;

#[derive(Debug, Default)]
pub struct Behaviour {
    pub failing: AtomicBool,
    pub hanging: AtomicBool,
    pub panicking: AtomicBool,
    pub not_ready: AtomicBool,
    pub hits: AtomicUsize,
}

/// A replica called `name`.
#[derive(Debug, Clone)]
pub struct Replica {
    pub name: &'static str,
    pub behaviour: Arc<Behaviour>,
}

impl Replica {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            behaviour: Arc::default(),
        }
    }

    pub fn fail(&self, on: bool) {
        self.behaviour.failing.store(on, Ordering::SeqCst);
    }

    pub fn hang(&self, on: bool) {
        self.behaviour.hanging.store(on, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.behaviour.hits.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0} failed")]
pub struct ReplicaFailed(pub &'static str);

impl Service<()> for Replica {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.behaviour.not_ready.load(Ordering::SeqCst) {
            return Poll::Ready(Err(Box::new(ReplicaFailed(self.name))));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let b = Arc::clone(&self.behaviour);
        let name = self.name;
        b.hits.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if b.hanging.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            assert!(!b.panicking.load(Ordering::SeqCst), "{name} panicked");
            if b.failing.load(Ordering::SeqCst) {
                Err(Box::new(ReplicaFailed(name)) as BoxError)
            } else {
                Ok(name)
            }
        })
    }
}

/// Three replicas "a", "b", "c".
pub fn replicas() -> [Replica; 3] {
    [Replica::new("a"), Replica::new("b"), Replica::new("c")]
}
