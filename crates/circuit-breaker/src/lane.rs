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
use crate::sync::{self, spin_loop};
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
///
/// A success adds to the bucket when it holds the call's tag, and takes the bucket over
/// (rotates it) when it holds an older epoch: the rotating thread marks the tag `ROTATING`,
/// resets the count to its own call and publishes the new tag. The count word carries the
/// [stamp](TimeGeometry::stamp) of the tag it counts for, so that an add that raced with a
/// rotation (it read the old tag, the count was reset before it added) sees that it landed
/// under another tag and takes itself back. The loom models in `lane/loom_model.rs` check
/// that every success is counted once under its own tag, or reported as not counted.
#[derive(Debug, Default)]
pub(crate) struct TimeBucket {
    /// [`TimeGeometry::tag`] of the bucket's generation and epoch, or `ROTATING`.
    tag: sync::AtomicU64,
    /// `stamp << COUNT_BITS | count`: the successes counted for the tag whose stamp it is.
    count: sync::AtomicU64,
}

const ROTATING: u64 = u64::MAX;

/// Bits of a bucket's count: 17 trillion successes of one lane in one bucket.
const COUNT_BITS: u32 = 44;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// How often a success looks again at a bucket that another thread is rotating before it
/// gives up on the bucket. A rotation is two stores, so a few spins are enough unless the
/// rotating thread was preempted in between, and then waiting for it would stall an async
/// worker for as long as the scheduler keeps it off the CPU. Small under loom, so that the
/// models reach the give-up path.
#[cfg(not(loom))]
const ROTATION_SPINS: u32 = 64;
#[cfg(loom)]
const ROTATION_SPINS: u32 = 1;

/// What [`TimeBucket::add`] did with a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// Counted in the bucket.
    Counted,
    /// Dropped: the bucket moved to a later epoch, so the call is older than the window.
    Stale,
    /// Not counted: another thread was rotating the bucket and did not finish within
    /// `ROTATION_SPINS` spins. The caller counts the success elsewhere.
    Busy,
}

fn stamp_of(word: u64) -> u64 {
    word >> COUNT_BITS
}

impl TimeBucket {
    /// Adds one success to the bucket of `tag`, taking the bucket over when it still holds an
    /// older epoch. Never waits for another thread for more than `ROTATION_SPINS` spins.
    pub(crate) fn add(&self, tag: u64) -> Added {
        let stamp = TimeGeometry::stamp(tag);
        let mut spins = 0;
        loop {
            let current = self.tag.load(Ordering::Acquire);
            if current == tag {
                let before = self.count.fetch_add(1, Ordering::Relaxed);
                if stamp_of(before) == stamp {
                    return Added::Counted;
                }
                // The bucket was rotated between the two loads: the add went to a later
                // epoch's count, which must not have it.
                self.take_back(before + 1);
                return Added::Stale;
            }
            if current == ROTATING {
                if spins == ROTATION_SPINS {
                    return Added::Busy;
                }
                spins += 1;
                spin_loop();
                continue;
            }
            if TimeGeometry::is_newer(current, tag) {
                return Added::Stale;
            }
            // Claim the bucket, reset it to our call, then publish the new tag: a writer that
            // sees the new tag only ever adds to the fresh count.
            if self
                .tag
                .compare_exchange(current, ROTATING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // A swap rather than a store: every write of the count is then a
                // read-modify-write, one chain in which each reads the one before (what the
                // stamps rely on). The cost is the same on the rare rotation path, and loom
                // models such a chain exactly (a plain relaxed store it may order after a
                // read-modify-write that it must precede).
                self.count
                    .swap((stamp << COUNT_BITS) | 1, Ordering::Relaxed);
                self.tag.store(tag, Ordering::Release);
                return Added::Counted;
            }
        }
    }

    /// Subtracts an add that landed in the count `word` of another tag, unless the bucket
    /// was rotated again since (which discarded that count, the add with it).
    fn take_back(&self, mut word: u64) {
        let stamp = stamp_of(word);
        while stamp_of(word) == stamp {
            // The add is in `word`, so its count is at least 1.
            match self.count.compare_exchange_weak(
                word,
                word - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => word = actual,
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
        let word = self.count.load(Ordering::Relaxed);
        // A rotation after the tag was read pairs it with a later epoch's count.
        if stamp_of(word) == TimeGeometry::stamp(tag) {
            word & COUNT_MASK
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

#[cfg(all(test, loom))]
mod loom_model;

#[cfg(all(test, not(loom)))]
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

    #[tokio::test(start_paused = true)]
    async fn a_success_does_not_wait_for_a_rotation_that_never_finishes() {
        let breaker = CircuitBreaker::builder("stuck")
            .time_window(std::time::Duration::from_secs(10), 10)
            .minimum_calls(3)
            .build()
            .unwrap();
        breaker.try_acquire().unwrap().failure();
        // A rotator preempted halfway through every bucket of this thread's lane.
        for bucket in &breaker.lane().buckets {
            bucket
                .tag
                .store(super::ROTATING, std::sync::atomic::Ordering::Release);
        }
        breaker.try_acquire().unwrap().success();
        breaker.try_acquire().unwrap().success();
        let snapshot = breaker.snapshot();
        // Counted once each, in the locked window: the failure rate is a third.
        assert_eq!(snapshot.calls_in_window, 3);
        assert_eq!(snapshot.failures_in_window, 1);
        assert_eq!(snapshot.successful_calls, 2);
        assert_eq!(breaker.state(), State::Closed);
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
