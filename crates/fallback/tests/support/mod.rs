//! Shared helpers: services that count their calls and answer as told.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use staunch_core::BoxError;
use tower::{Service, service_fn};

/// Counts calls.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A service answering `Ok(n)` for even `n` and an I/O error for odd `n`.
pub fn evens(
    calls: Calls,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |n: u32| {
        calls.add();
        async move {
            if n.is_multiple_of(2) {
                Ok(n)
            } else {
                Err(Box::new(std::io::Error::other(format!("odd {n}"))) as BoxError)
            }
        }
    })
}

/// A service that fails every call with `error()`.
pub fn failing<T: Send + 'static>(
    error: impl Fn() -> BoxError + Clone + Send + 'static,
) -> impl Service<u32, Response = T, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |_: u32| {
        let error = error.clone();
        async move { Err::<T, _>(error()) }
    })
}
