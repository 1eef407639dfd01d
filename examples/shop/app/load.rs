//! A steady stream of orders for the serving shop: `rate` orders a second (0: none), a
//! seeded mix of SKUs and quantities, each placed through [`OrderService::place`]. At most
//! [`MAX_IN_FLIGHT`] orders run at once; a tick that finds them all busy skips its order
//! (counted), so a slow payment cannot pile up unbounded work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::order::OrderService;

/// The SKUs the driver orders (the shop stocks each).
pub(crate) const SKUS: [&str; 3] = ["widget", "gadget", "gizmo"];

/// The highest rate the driver accepts, orders per second.
pub(crate) const MAX_RATE: f64 = 200.0;

/// Orders running at once, at most.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// The driver's handle: set the rate, read what it did.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Orders per second, as `f64` bits.
    rate: AtomicU64,
    placed: AtomicU64,
    skipped: AtomicU64,
}

/// A rate outside `0..=MAX_RATE`, or not a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BadRate(pub(crate) f64);

impl std::fmt::Display for BadRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "per_second: {} is not a rate between 0 and {MAX_RATE} orders per second",
            self.0
        )
    }
}

impl std::error::Error for BadRate {}

/// A small seeded generator (xorshift64*): the same seed, the same mix of orders.
#[derive(Debug, Clone)]
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Load {
    /// Starts the driver for `orders`, stopped (rate 0), its mix seeded with `seed`.
    pub(crate) fn start(orders: OrderService, seed: u64) -> Self {
        let load = Self {
            inner: Arc::new(Shared {
                rate: AtomicU64::new(0f64.to_bits()),
                placed: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
            }),
        };
        let shared = Arc::downgrade(&load.inner);
        tokio::spawn(async move {
            let mut mix = Mix(seed | 1);
            let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            while let Some(shared) = shared.upgrade() {
                let rate = f64::from_bits(shared.rate.load(Ordering::Relaxed));
                if rate <= 0.0 {
                    drop(shared);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    shared.skipped.fetch_add(1, Ordering::Relaxed);
                    drop(shared);
                    tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
                    continue;
                };
                let r = mix.next();
                let sku = SKUS[(r % 3) as usize];
                let qty = (r >> 8) % 3 + 1;
                let orders = orders.clone();
                shared.placed.fetch_add(1, Ordering::Relaxed);
                drop(shared);
                tokio::spawn(async move {
                    let _ = orders.place(sku, qty, qty * 1999).await;
                    drop(slot);
                });
                tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
            }
        });
        load
    }

    /// Sets the rate, orders per second (0 stops).
    pub(crate) fn set_rate(&self, per_second: f64) -> Result<(), BadRate> {
        if !(0.0..=MAX_RATE).contains(&per_second) {
            return Err(BadRate(per_second));
        }
        self.inner
            .rate
            .store(per_second.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// The rate in force, orders per second.
    pub(crate) fn rate(&self) -> f64 {
        f64::from_bits(self.inner.rate.load(Ordering::Relaxed))
    }

    /// Orders started so far, and ticks skipped because [`MAX_IN_FLIGHT`] orders ran.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.inner.placed.load(Ordering::Relaxed),
            self.inner.skipped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_seeded() {
        let a: Vec<u64> = std::iter::repeat_with({
            let mut m = Mix(7);
            move || m.next()
        })
        .take(5)
        .collect();
        let b: Vec<u64> = std::iter::repeat_with({
            let mut m = Mix(7);
            move || m.next()
        })
        .take(5)
        .collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }
}
