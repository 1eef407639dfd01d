//! Partitioned bulkheads: one limit per key (tenant, downstream host, route), with a default
//! for keys not configured and an optional global cap across all keys.
//!
//! A single bulkhead protects the caller from one slow dependency. When one dependency serves
//! many tenants, or one client talks to many hosts, a single limit lets the noisiest key take
//! every permit. A partitioned bulkhead gives each key its own [`Bulkhead`], so saturating one
//! key never delays another, and a global cap bounds the total.
//!
//! A call takes its key's permit first and the global permit second, so calls queued on a
//! saturated key hold no global permit while they wait.

mod service;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use staunch_core::{BulkheadFull, ConfigError};

pub use self::service::{
    PartitionedBulkheadLayer, PartitionedBulkheadService, PartitionedResponseFuture,
};
use crate::acquire::Acquire;
use crate::bulkhead::{Bulkhead, Permit};
use crate::config::{DEFAULT_MAX_CONCURRENT, validate_limit};
use staunch_core::entries::{Added, Entries};

/// A bulkhead per key, with a default limit and an optional global cap; build one with
/// [`PartitionedBulkhead::builder`]. Clones share the partitions.
///
/// Partitions for keys without a configured limit are created on first use with the
/// default limit, up to `max_partitions` of them.
///
/// # Bounded, by evicting idle partitions
///
/// When a new key arrives and `max_partitions` partitions exist, the least recently used
/// *idle* created partition is evicted and the new key gets a fresh partition of its own. A
/// partition is idle when nothing but the partitioned bulkhead refers to it: no permit of it
/// is held, no call waits for one, and no [`Bulkhead`] handle of it (from
/// [`partition`](Self::partition) or [`find_partition`](Self::find_partition)) is kept. So a
/// key's calls always count against one partition: a partition is never replaced while a
/// permit of it is out, and a permit released later goes back to the partition it came from.
/// Configured partitions are never evicted. Evicting a partition forgets its rejection
/// counters and any limit set on it with
/// [`set_max_concurrent`](Bulkhead::set_max_concurrent); if the key comes back it starts with
/// a fresh partition and the default limit (configure the key for a limit that lasts).
///
/// "Least recently used" counts calls, not time: taking a key's partition stamps it with a
/// clock that moves when a key is added. Finding an idle partition reads every partition, so
/// one search keeps the `max_partitions / 8` oldest idle ones for the next new keys (each
/// checked again before it goes), and after a search that found none idle, the next
/// `max_partitions / 8` new keys use the overflow partition without searching. Below 16
/// partitions every new key searches.
///
/// # The overflow partition
///
/// Only when no created partition is idle does a new key share the overflow partition (with
/// the default limit, named `name[overflow]`), so a flood of distinct keys while every
/// partition is busy cannot grow memory without bound. If [`overflow`](Self::overflow) sees
/// traffic, many keys are busy at once and `max_partitions` is too low.
///
/// ```
/// use staunch_bulkhead::PartitionedBulkhead;
///
/// let tenants = PartitionedBulkhead::builder("search")
///     .partition("big-customer", 8)
///     .default_limit(2)
///     .global_limit(20)
///     .build()?;
/// let a = tenants.try_acquire(&"small-customer")?;
/// let b = tenants.try_acquire(&"small-customer")?;
/// // The small tenant is at its limit; the big one is not affected.
/// assert!(tenants.try_acquire(&"small-customer").is_err());
/// assert!(tenants.try_acquire(&"big-customer").is_ok());
/// # drop((a, b));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PartitionedBulkhead<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    name: Arc<str>,
    /// Keys with a configured limit: fixed at build, read without a lock. A handful of keys
    /// (the usual per-downstream setup) is scanned linearly, which beats hashing the key.
    configured: Configured<K>,
    /// Partitions created on first use for other keys.
    created: RwLock<Entries<K, Bulkhead>>,
    default_limit: usize,
    overflow: Bulkhead,
    global: Option<Bulkhead>,
    max_wait: Duration,
    max_queued: Option<usize>,
}

/// Up to this many configured keys are found by a linear scan instead of a hash lookup.
const LINEAR_SCAN_MAX: usize = 8;

enum Configured<K> {
    Few(Vec<(K, Bulkhead)>),
    Many(HashMap<K, Bulkhead>),
}

impl<K> Clone for PartitionedBulkhead<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for PartitionedBulkhead<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedBulkhead")
            .field("name", &self.inner.name)
            .field("default_limit", &self.inner.default_limit)
            .field("global", &self.inner.global)
            .finish()
    }
}

impl<K> PartitionedBulkhead<K>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// Starts configuring a partitioned bulkhead called `name`.
    pub fn builder(name: impl Into<Arc<str>>) -> PartitionedBulkheadBuilder<K> {
        PartitionedBulkheadBuilder {
            name: name.into(),
            partitions: Vec::new(),
            default_limit: DEFAULT_MAX_CONCURRENT,
            global_limit: None,
            max_partitions: 1024,
            max_wait: Duration::ZERO,
            max_queued: None,
        }
    }

    /// The name shared by the partitions (each is named `name[key]`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The bulkhead of `key`, creating it with the default limit on first use (evicting an
    /// idle partition when `max_partitions` exist), or the overflow partition when none is
    /// idle. Counts as a use of the key; the handle keeps its partition from being evicted
    /// while you hold it.
    pub fn partition(&self, key: &K) -> Bulkhead {
        let inner = &*self.inner;
        if let Some(b) = inner.configured(key) {
            return b.clone();
        }
        if let Some(b) = inner.read().get(key) {
            return b.clone();
        }
        let mut partitions = inner
            .created
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = partitions.get(key) {
            return b.clone();
        }
        let make = || {
            make_partition(
                &inner.name,
                &format!("{key:?}"),
                inner.default_limit,
                inner.max_wait,
                inner.max_queued,
            )
        };
        let (partition, evicted) = match partitions.add(key, make, is_idle) {
            Added::Inserted { value, evicted } => (value.clone(), evicted),
            Added::Full => {
                drop(partitions);
                tracing::trace!(bulkhead = %inner.name, key = ?key, "every bulkhead partition is busy; key shares the overflow partition");
                return inner.overflow.clone();
            }
        };
        drop(partitions);
        // Dropped (and logged) outside the lock.
        if let Some((evicted, _)) = evicted {
            tracing::debug!(bulkhead = %inner.name, evicted = ?evicted, key = ?key, "idle bulkhead partition evicted for a new key");
        }
        tracing::debug!(bulkhead = %partition.name(), limit = inner.default_limit, "bulkhead partition created");
        partition
    }

    /// The bulkhead of `key` if it has one now (configured or created), without creating one
    /// or counting as a use.
    pub fn find_partition(&self, key: &K) -> Option<Bulkhead> {
        let inner = &*self.inner;
        match inner.configured(key) {
            Some(b) => Some(b.clone()),
            None => inner.read().peek(key).cloned(),
        }
    }

    /// How many partitions were created on first use and exist now (configured partitions
    /// and the overflow partition not included); at most `max_partitions`.
    pub fn created_partitions(&self) -> usize {
        self.inner.read().len()
    }

    /// The partition shared by new keys while every created partition is busy.
    pub fn overflow(&self) -> &Bulkhead {
        &self.inner.overflow
    }

    /// The global cap across all keys, if configured.
    pub fn global(&self) -> Option<&Bulkhead> {
        self.inner.global.as_ref()
    }

    /// Takes a permit for `key` (and a global one) if both are free; never waits.
    pub fn try_acquire(&self, key: &K) -> Result<PartitionPermit, BulkheadFull> {
        let partition = self.partition(key);
        let permit = partition.try_acquire()?;
        let global = match &self.inner.global {
            Some(g) => Some(g.try_acquire()?),
            None => None,
        };
        Ok(PartitionPermit { permit, global })
    }

    /// Like `try_acquire` but counts no rejection (the caller goes on to wait).
    pub(crate) fn try_acquire_quiet(&self, key: &K) -> Option<PartitionPermit> {
        let partition = self.partition(key);
        if !partition.inner.permits.try_acquire() {
            return None;
        }
        let permit = Permit::new(&partition);
        let global = match &self.inner.global {
            Some(g) if g.inner.permits.try_acquire() => Some(Permit::new(g)),
            Some(_) => return None,
            None => None,
        };
        Some(PartitionPermit { permit, global })
    }

    /// Waits (at most `max_wait` in total, FIFO within each bulkhead) for a permit for `key`
    /// and then for a global one.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future releases whatever it holds or gives up its place in the queue.
    pub fn acquire(&self, key: &K) -> PartitionAcquire {
        PartitionAcquire {
            stage: Stage::Key(self.partition(key).acquire()),
            global: self.inner.global.clone(),
        }
    }

    pub(crate) fn max_wait(&self) -> Duration {
        self.inner.max_wait
    }
}

impl<K: Hash + Eq> Inner<K> {
    fn configured(&self, key: &K) -> Option<&Bulkhead> {
        match &self.configured {
            Configured::Few(list) => list.iter().find(|(k, _)| k == key).map(|(_, b)| b),
            Configured::Many(map) => map.get(key),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Entries<K, Bulkhead>> {
        self.created.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a created partition may be evicted: nothing else refers to it (no permit, no
/// waiting call, no handle: each holds a reference), so it has nothing in flight.
fn is_idle(partition: &Bulkhead) -> bool {
    Arc::strong_count(&partition.inner) == 1 && partition.in_flight() == 0
}

fn make_partition(
    name: &str,
    label: &str,
    limit: usize,
    max_wait: Duration,
    max_queued: Option<usize>,
) -> Bulkhead {
    Bulkhead::from_parts(
        Arc::from(format!("{name}[{label}]")),
        limit,
        max_wait,
        max_queued.unwrap_or(limit),
        None,
    )
}

/// Configures a [`PartitionedBulkhead`].
///
/// Defaults: `default_limit` 25, no global cap, `max_partitions` 1024 lazily created
/// partitions, `max_wait` zero (fail fast), `max_queued` equal to each partition's limit.
#[derive(Debug, Clone)]
#[must_use = "call `build()` to get a partitioned bulkhead"]
pub struct PartitionedBulkheadBuilder<K> {
    name: Arc<str>,
    partitions: Vec<(K, usize)>,
    default_limit: usize,
    global_limit: Option<usize>,
    max_partitions: usize,
    max_wait: Duration,
    max_queued: Option<usize>,
}

impl<K> PartitionedBulkheadBuilder<K>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// Gives `key` its own limit.
    pub fn partition(mut self, key: K, max_concurrent: usize) -> Self {
        self.partitions.push((key, max_concurrent));
        self
    }

    /// The limit of each key without a configured one (default 25).
    pub fn default_limit(mut self, max_concurrent: usize) -> Self {
        self.default_limit = max_concurrent;
        self
    }

    /// Caps the calls in flight across all keys together (default: no cap).
    pub fn global_limit(mut self, max_concurrent: usize) -> Self {
        self.global_limit = Some(max_concurrent);
        self
    }

    /// How many partitions may exist at once for unconfigured keys (default 1024); past it, a
    /// new key evicts the least recently used idle one, or shares the overflow partition while
    /// none is idle.
    pub fn max_partitions(mut self, n: usize) -> Self {
        self.max_partitions = n;
        self
    }

    /// How long a call may wait for its permits, in total (default zero: never wait).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How many calls may wait in each partition (and for the global cap).
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = Some(n);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<PartitionedBulkhead<K>, ConfigError> {
        let name = Arc::clone(&self.name);
        self.validate().map_err(|e| e.within(&name))?;
        let make = |label: &str, limit: usize| {
            make_partition(&name, label, limit, self.max_wait, self.max_queued)
        };
        let overflow = make("overflow", self.default_limit);
        let global = self.global_limit.map(|g| make("global", g));
        let mut map = HashMap::with_capacity(self.partitions.len());
        for (key, limit) in &self.partitions {
            map.insert(key.clone(), make(&format!("{key:?}"), *limit));
        }
        Ok(PartitionedBulkhead {
            inner: Arc::new(Inner {
                configured: if map.len() <= LINEAR_SCAN_MAX {
                    Configured::Few(map.into_iter().collect())
                } else {
                    Configured::Many(map)
                },
                created: RwLock::new(Entries::new(self.max_partitions)),
                name,
                default_limit: self.default_limit,
                overflow,
                global,
                max_wait: self.max_wait,
                max_queued: self.max_queued,
            }),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        validate_limit("default_limit", self.default_limit)?;
        if let Some(g) = self.global_limit {
            validate_limit("global_limit", g)?;
        }
        if self.max_partitions == 0 {
            return Err(ConfigError::new("max_partitions", "must be at least 1"));
        }
        for (i, (key, limit)) in self.partitions.iter().enumerate() {
            validate_limit("max_concurrent", *limit)
                .map_err(|e| e.within(&format!("partitions[{key:?}]")))?;
            if self.partitions[..i].iter().any(|(k, _)| k == key) {
                return Err(ConfigError::new(
                    format!("partitions[{key:?}]"),
                    "is configured twice",
                ));
            }
        }
        Ok(())
    }
}

/// The permits of one partitioned call: its key's, and the global one if there is a cap.
#[must_use = "the permit is released as soon as it is dropped"]
#[derive(Debug)]
pub struct PartitionPermit {
    permit: Permit,
    global: Option<Permit>,
}

impl PartitionPermit {
    /// The key's permit.
    pub fn partition(&self) -> &Permit {
        &self.permit
    }

    /// The global permit, when the bulkhead has a global cap.
    pub fn global(&self) -> Option<&Permit> {
        self.global.as_ref()
    }
}

/// Waits for a partition's permit, then the global one; from [`PartitionedBulkhead::acquire`].
///
/// # Cancel safety
///
/// Dropping it releases any permit it holds and gives up its place in any queue.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct PartitionAcquire {
    stage: Stage,
    global: Option<Bulkhead>,
}

#[derive(Debug)]
enum Stage {
    Key(Acquire),
    Global(Option<Permit>, Acquire),
    Done,
}

impl Future for PartitionAcquire {
    type Output = Result<PartitionPermit, BulkheadFull>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.stage {
                Stage::Key(acquire) => {
                    let permit = match ready!(Pin::new(&mut *acquire).poll(cx)) {
                        Ok(p) => p,
                        Err(full) => {
                            this.stage = Stage::Done;
                            return Poll::Ready(Err(full));
                        }
                    };
                    let Some(global) = &this.global else {
                        this.stage = Stage::Done;
                        return Poll::Ready(Ok(PartitionPermit {
                            permit,
                            global: None,
                        }));
                    };
                    // The global wait ends when the key's wait would have.
                    let deadline = acquire.deadline();
                    this.stage =
                        Stage::Global(Some(permit), Acquire::new(global.clone(), deadline));
                }
                Stage::Global(permit, acquire) => {
                    let result = ready!(Pin::new(acquire).poll(cx));
                    let permit = permit.take();
                    this.stage = Stage::Done;
                    return Poll::Ready(match (result, permit) {
                        (Ok(global), Some(permit)) => Ok(PartitionPermit {
                            permit,
                            global: Some(global),
                        }),
                        (Err(full), _) => Err(full),
                        (Ok(_), None) => panic!("`PartitionAcquire` polled after completion"),
                    });
                }
                Stage::Done => panic!("`PartitionAcquire` polled after completion"),
            }
        }
    }
}
