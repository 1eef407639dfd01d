//! Lanes: per-thread shards of the hot counters, so that concurrent successful calls never
//! write to the same cache line.
//!
//! A successful call in the closed state is the overwhelmingly common case, and a success can
//! never trip a breaker (it only lowers the failure rate). So a success only bumps a counter in
//! the calling thread's lane; failures and slow calls take the slow path and read the sum of
//! the lanes when they evaluate the window. Each lane is its own cache-line-aligned allocation
//! that the call's permit holds an `Arc` reference to, taken per call as tower does (a permit
//! may outlive the breaker); the lane refers to its breaker weakly, so a permit never keeps a
//! dropped breaker alive.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use crossbeam_utils::CachePadded;
use tokio::time::Instant;

use crate::core::Core;
use crate::window::TimeGeometry;

/// The breaker state every call reads; written only on transitions, so it stays shared in
/// every core's cache while the breaker is steady.
#[derive(Debug)]
pub(crate) struct Hot {
    /// The state [`Word`](crate::state::Word).
    pub(crate) state: AtomicU64,
    /// Failures in a row, plus the [`WARMING`] bit while the window holds fewer than
    /// `minimum_calls` calls. Zero in the steady state, so a success only reads it; when it is
    /// not zero the success takes the slow path (to reset the count, or because a success may
    /// be the call that brings the window to `minimum_calls` with a failure rate over the
    /// threshold).
    pub(crate) consecutive: AtomicU64,
    /// Open state: when the breaker may go half-open, in ns since `Core::base`.
    pub(crate) open_until: AtomicU64,
    /// Half-open: `generation << 32 | probes admitted`.
    pub(crate) probes: AtomicU64,
    /// Half-open: when the probes are given up on, in ns since `Core::base`.
    pub(crate) half_open_until: AtomicU64,
}

/// The bit of [`Hot::consecutive`] set while the window is below `minimum_calls`.
pub(crate) const WARMING: u64 = 1 << 63;

/// One shard of the hot counters.
#[derive(Debug)]
pub(crate) struct Lane {
    /// The breaker's core, for the slow path. Weak, so that lanes (held by in-flight permits)
    /// never keep a dropped breaker alive or form a cycle with it.
    pub(crate) core: Weak<Core>,
    pub(crate) hot: Arc<CachePadded<Hot>>,
    /// Successful calls recorded in a closed (or metrics-only) state, ever.
    pub(crate) successes: AtomicU64,
    /// Calls rejected, ever.
    pub(crate) rejections: AtomicU64,
    /// Time-window breakers: successes per bucket, tagged with generation and epoch.
    pub(crate) buckets: Box<[TimeBucket]>,
    pub(crate) time: Option<TimeGeometry>,
    pub(crate) slow_nanos: Option<u64>,
    /// Neither slow-call timing nor a time window: a success is one counter bump.
    pub(crate) plain: bool,
    /// The breaker's time origin (time windows count epochs from it).
    pub(crate) base: Instant,
}

/// A bucket of successes in one lane of a time window.
#[derive(Debug, Default)]
pub(crate) struct TimeBucket {
    /// [`TimeGeometry::tag`] of the bucket's generation and epoch, or `ROTATING`.
    pub(crate) tag: AtomicU64,
    pub(crate) count: AtomicU64,
}

const ROTATING: u64 = u64::MAX;

impl TimeBucket {
    /// Adds one success to the bucket of `tag`, taking the bucket over when it still holds an
    /// older epoch. A stale tag (the bucket already moved past it) drops the count: the call
    /// is older than the window.
    pub(crate) fn add(&self, tag: u64) {
        loop {
            let current = self.tag.load(Ordering::Acquire);
            if current == tag {
                self.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if current == ROTATING {
                std::hint::spin_loop();
                continue;
            }
            if TimeGeometry::is_newer(current, tag) {
                return;
            }
            // Claim the bucket, zero it with our call in it, then publish the new tag: a
            // writer that sees the new tag only ever adds to the fresh count.
            if self
                .tag
                .compare_exchange(current, ROTATING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.count.store(1, Ordering::Relaxed);
                self.tag.store(tag, Ordering::Release);
                return;
            }
        }
    }

    /// The count if the bucket holds `tag`'s generation and an epoch within the window.
    pub(crate) fn read(&self, generation_tag: u64, oldest_epoch: u64, newest_epoch: u64) -> u64 {
        let tag = self.tag.load(Ordering::Acquire);
        if tag == ROTATING
            || !TimeGeometry::in_window(tag, generation_tag, oldest_epoch, newest_epoch)
        {
            return 0;
        }
        let count = self.count.load(Ordering::Relaxed);
        // A rotation between the two loads would pair the old tag with the new count.
        if self.tag.load(Ordering::Acquire) == tag {
            count
        } else {
            0
        }
    }
}

/// How many lanes a breaker gets: two per core (so threads rarely share one), a power of
/// two between 2 and 64.
pub(crate) fn lane_count() -> usize {
    // Asking the OS reads cgroup files: once per process is enough.
    static LANES: OnceLock<usize> = OnceLock::new();
    *LANES.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(4, std::num::NonZero::get);
        (cores * 2).next_power_of_two().clamp(2, 64)
    })
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// A small number for the current thread, handed out round-robin on first use, so that
/// threads spread evenly over the lanes.
#[inline]
pub(crate) fn thread_index() -> usize {
    THREAD_INDEX.with(|cell| {
        let index = cell.get();
        if index != usize::MAX {
            return index;
        }
        let index = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
        cell.set(index);
        index
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{CircuitBreaker, State};

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::builder("lanes").build().unwrap()
    }

    #[test]
    fn a_permit_holds_its_lane_only_until_it_reports() {
        let breaker = breaker();
        let lane = Arc::clone(breaker.lane());
        // The breaker's reference and ours.
        assert_eq!(Arc::strong_count(&lane), 2);
        let permit = breaker.try_acquire().unwrap();
        assert_eq!(Arc::strong_count(&lane), 3);
        permit.success();
        assert_eq!(Arc::strong_count(&lane), 2);
        // Dropping an unreported permit (a cancelled call) lets go of it too.
        drop(breaker.try_acquire().unwrap());
        assert_eq!(Arc::strong_count(&lane), 2);
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.snapshot().successful_calls, 1);
    }

    #[test]
    fn a_permit_that_outlives_its_breaker_frees_the_lane() {
        let breaker = breaker();
        let lane = Arc::downgrade(breaker.lane());
        let permit = breaker.try_acquire().unwrap();
        drop(breaker);
        assert_eq!(lane.strong_count(), 1);
        permit.failure();
        assert!(lane.upgrade().is_none());
    }

    #[test]
    fn breakers_taking_turns_on_one_thread_count_every_call() {
        let (a, b) = (breaker(), breaker());
        for _ in 0..100 {
            a.try_acquire().unwrap().success();
            b.try_acquire().unwrap().success();
        }
        assert_eq!(a.snapshot().successful_calls, 100);
        assert_eq!(b.snapshot().successful_calls, 100);
        // Nothing but each breaker holds its lane between calls.
        assert_eq!(Arc::strong_count(a.lane()), 1);
        assert_eq!(Arc::strong_count(b.lane()), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_breaker_leaves_nothing_alive_on_worker_threads() {
        let breaker = breaker();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let breaker = breaker.clone();
                tokio::spawn(async move {
                    let mut used = Vec::new();
                    for _ in 0..100 {
                        // The lane of the worker thread that makes this call.
                        used.push(Arc::downgrade(breaker.lane()));
                        let call = breaker.call(async {
                            tokio::task::yield_now().await;
                            Ok::<_, std::io::Error>(())
                        });
                        call.await.unwrap();
                    }
                    used
                })
            })
            .collect();
        let mut lanes = Vec::new();
        for task in tasks {
            lanes.extend(task.await.unwrap());
        }
        assert_eq!(breaker.snapshot().successful_calls, 800);
        drop(breaker);
        // The workers are still running: a reference one of them kept would still be alive.
        assert!(
            lanes.iter().all(|lane| lane.upgrade().is_none()),
            "a lane outlived its breaker"
        );
    }
}
