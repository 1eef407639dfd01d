//! Shared test helpers: an inner "dependency" that records its concurrency.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts calls running inside the dependency, and the highest count ever seen.
#[derive(Debug, Clone, Default)]
pub struct Gauge {
    current: Arc<AtomicUsize>,
    high_water: Arc<AtomicUsize>,
    entered: Arc<AtomicUsize>,
}

impl Gauge {
    pub fn enter(&self) -> GaugeGuard {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.high_water.fetch_max(now, Ordering::SeqCst);
        self.entered.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(self.clone())
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::SeqCst)
    }

    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

/// Leaves the gauge when dropped (also when the call is cancelled).
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::SeqCst);
    }
}
