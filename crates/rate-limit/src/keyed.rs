//! [`KeyedRateLimiter`]: the same rate for each key (per host, per tenant), separately.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use staunch_core::{ConfigError, RateLimited};

use crate::gcra::{Cell, Take};
use crate::hint::RateHint;
use crate::limiter::{
    Acquire, Clock, Counters, RateLimitMetrics, RateLimiterBuilder, Refund, RefundTarget,
    Reservation, Settings, apply,
};

/// Shards of the key map: calls for different keys rarely take the same lock.
const SHARDS: usize = 16;

/// How often a full shard looks for idle keys to forget (nanoseconds of the limiter's
/// clock): at most once a millisecond, so a burst of new keys on a full shard does not scan
/// it on every call.
const SWEEP_EVERY: u64 = 1_000_000;

struct Shard<K> {
    cells: HashMap<K, Arc<Cell>, RandomState>,
    next_sweep: u64,
}

struct Inner<K> {
    name: Arc<str>,
    settings: Settings,
    clock: Clock,
    hasher: RandomState,
    per_shard: usize,
    shards: Box<[Mutex<Shard<K>>]>,
    /// The bucket shared by keys that find their shard full of busy keys.
    overflow: Arc<Cell>,
    counters: Counters,
}

/// A rate limiter that keeps one bucket per key: per host, per tenant, per user.
///
/// Each key gets the rate and burst of the builder; keys do not share permits. The keys
/// remembered are bounded ([`max_keys`](RateLimiterBuilder::max_keys)): a key whose bucket
/// is full again is forgotten when room is needed (forgetting it loses nothing: a new
/// bucket is full too), and while every remembered key is busy, new keys share one extra
/// bucket at the same rate, so the cap never lets a flood of new keys past the limit.
/// Memory stays bounded whatever keys callers send.
///
/// ```
/// use std::time::Duration;
/// use staunch_rate_limit::{KeyedRateLimiter, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // Built by `RateLimiter::builder(..)`, finished with `build_keyed`.
/// let per_tenant: KeyedRateLimiter<String> = RateLimiter::builder("api")
///     .rate(1, Duration::from_secs(1))
///     .build_keyed()
///     .unwrap();
/// assert!(per_tenant.try_acquire(&"acme".to_string()).is_ok());
/// assert!(per_tenant.try_acquire(&"acme".to_string()).is_err());
/// assert!(per_tenant.try_acquire(&"globex".to_string()).is_ok());
/// # }
/// ```
pub struct KeyedRateLimiter<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", &self.inner.name)
            .field("count", &self.inner.settings.count)
            .field("per", &self.inner.settings.per)
            .field("burst", &self.inner.settings.burst)
            .field("max_keys", &(self.inner.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl RateLimiterBuilder {
    /// Builds a [`KeyedRateLimiter`]: the rate and burst apply to each key separately.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), and for a zero `max_keys`.
    pub fn build_keyed<K: Hash + Eq>(self) -> Result<KeyedRateLimiter<K>, ConfigError> {
        #[cfg(feature = "metrics")]
        staunch_core::telemetry::describe_metrics();
        let settings = self.settings()?;
        let per_shard = self.keys().div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    cells: HashMap::default(),
                    next_sweep: 0,
                })
            })
            .collect();
        Ok(KeyedRateLimiter {
            inner: Arc::new(Inner {
                name: self.name(),
                settings,
                clock: Clock::new(),
                hasher: RandomState::new(),
                per_shard,
                shards,
                overflow: Arc::new(Cell::new()),
                counters: Counters::default(),
            }),
        })
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Takes a permit for `key` if one is free now; never waits.
    ///
    /// # Errors
    ///
    /// [`RateLimited`] when `key` has no free permit.
    pub fn try_acquire(&self, key: &K) -> Result<(), RateLimited> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let take = self.with_cell(key, now, |cell| cell.take(now, inner.settings.quota, 0));
        match take {
            Take::Refused { retry_after } => Err(inner.counters.reject(&inner.name, retry_after)),
            Take::Now | Take::Later { .. } => Ok(()),
        }
    }

    /// Takes a permit for `key`, waiting for it up to `max_wait`.
    ///
    /// # Errors
    ///
    /// [`RateLimited`] (at once) when `key`'s next free permit is further away than
    /// `max_wait`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves gives the reserved slot back.
    pub fn acquire(&self, key: &K) -> Acquire {
        Acquire::new(self.reserve(key, true))
    }

    /// A slot for `key`; with `refundable`, a permit free now comes with its refund too (for
    /// an `Acquire` that may be dropped before it is polled).
    pub(crate) fn reserve(&self, key: &K, refundable: bool) -> Reservation {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let (take, cell) = self.with_cell(key, now, |cell| {
            let take = cell.take(now, inner.settings.quota, inner.settings.max_wait);
            let keep = match take {
                Take::Later { .. } => Some(Arc::clone(cell)),
                Take::Now if refundable => Some(Arc::clone(cell)),
                Take::Now | Take::Refused { .. } => None,
            };
            (take, keep)
        });
        match (take, cell) {
            (Take::Now, Some(cell)) => Reservation::Now(Some(Refund::new(
                RefundTarget::Keyed(cell, inner.clock),
                inner.settings.quota.interval,
            ))),
            (Take::Later { wait, interval }, Some(cell)) => {
                inner.counters.delay(&inner.name, wait);
                Reservation::Later {
                    at: Clock::after(wait),
                    refund: Refund::new(RefundTarget::Keyed(cell, inner.clock), interval),
                }
            }
            (Take::Refused { retry_after }, _) => {
                Reservation::Refused(inner.counters.reject(&inner.name, retry_after))
            }
            _ => Reservation::Now(None),
        }
    }

    /// Applies a server's hint to `key`'s bucket.
    pub fn observe(&self, key: &K, hint: RateHint) {
        let inner = &*self.inner;
        let now = inner.clock.now();
        self.with_cell(key, now, |cell| {
            apply(cell, now, hint, inner.settings.quota);
        });
        inner.counters.hint(&inner.name, hint);
    }

    /// How long until a call for `key` would get a permit (zero: now).
    pub fn wait_time(&self, key: &K) -> Duration {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let nanos = self.with_cell(key, now, |cell| cell.wait_at(now, inner.settings.quota));
        Duration::from_nanos(nanos)
    }

    /// How many keys the limiter remembers now (at most `max_keys`).
    pub fn keys(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).cells.len()).sum()
    }

    /// A snapshot of the counters (all keys together).
    pub fn metrics(&self) -> RateLimitMetrics {
        self.inner.counters.snapshot()
    }

    /// Runs `f` on `key`'s bucket (made if new, or the shared overflow bucket when the
    /// key's shard is full of busy keys), under the shard's lock.
    fn with_cell<T>(&self, key: &K, now: u64, f: impl FnOnce(&Arc<Cell>) -> T) -> T {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        // The high bits: the map itself hashes with its own state, from the low bits.
        let index = (hash >> 58) as usize % SHARDS;
        let mut shard = lock(&inner.shards[index]);
        if let Some(cell) = shard.cells.get(key) {
            return f(cell);
        }
        if shard.cells.len() >= inner.per_shard && now >= shard.next_sweep {
            shard.next_sweep = now.saturating_add(SWEEP_EVERY);
            shard.cells.retain(|_, cell| !cell.is_idle(now));
        }
        if shard.cells.len() >= inner.per_shard {
            return f(&inner.overflow);
        }
        let cell = shard
            .cells
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Cell::new()));
        f(cell)
    }
}

/// Locks a shard; a panic elsewhere while it was held left nothing half-done (every update
/// is one atomic or one map operation), so a poisoned lock is used as it is.
fn lock<K>(shard: &Mutex<Shard<K>>) -> MutexGuard<'_, Shard<K>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}
