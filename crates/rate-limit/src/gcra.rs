//! The generic cell rate algorithm: one atomic word per limited key, no lock, no timer.
//!
//! GCRA keeps a *theoretical arrival time* (`tat`): the moment at which the bucket would be
//! empty again if no call came. A call at `now` is allowed when `tat - tolerance <= now`,
//! and moves `tat` to `max(tat, now) + interval`. `interval` is the time one permit takes
//! to come back (`period / count`) and `tolerance` is `interval × (burst - 1)`: a full
//! bucket lets `burst` calls through at once, then one per `interval`. It is the leaky
//! bucket with nothing to refill: a compare-and-swap on one `u64`.
//!
//! A call that may wait *reserves* the next free slot (it moves `tat` as if it had been
//! let through) and sleeps until that slot starts; if it is dropped before, it gives the
//! slot back ([`Cell::refund`]). Waiting therefore needs no queue: the order of the
//! reservations is the order of the calls.
//!
//! Server hints act on the same word: "retry after `d`" moves `tat` so the next permit
//! comes at `now + d`; "`r` calls left in `t`" sets a slower interval (and no burst) until
//! `t` has passed, so the calls that remain are spread over the window.
//!
//! Times are nanoseconds since the limiter's creation on tokio's clock, so the algorithm is
//! exact under paused time. Every sum saturates: no duration, however large, panics.

use crate::sync::{AtomicU64, Ordering};

/// How fast permits come back, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    /// The time one permit takes to come back (≥ 1).
    pub(crate) interval: u64,
    /// `interval × (burst - 1)`: how far ahead of now the bucket may run.
    pub(crate) tolerance: u64,
}

/// What one call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// A permit now.
    Now,
    /// A slot reserved `wait` nanoseconds from now, worth `interval` (to give back on drop).
    Later { wait: u64, interval: u64 },
    /// No permit within the allowed wait; the next one is `retry_after` nanoseconds away.
    Refused { retry_after: u64 },
}

/// The state of one limited key.
#[derive(Debug, Default)]
pub(crate) struct Cell {
    /// The theoretical arrival time.
    tat: AtomicU64,
    /// A slower interval asked for by the server, in force until `hint_until`.
    hint_interval: AtomicU64,
    /// When the server's slower interval ends (0: no hint).
    hint_until: AtomicU64,
}

impl Cell {
    /// A full bucket.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The interval and tolerance in force at `now`.
    #[inline]
    fn quota_at(&self, now: u64, quota: Quota) -> Quota {
        if self.hint_until.load(Ordering::Relaxed) > now {
            Quota {
                interval: quota
                    .interval
                    .max(self.hint_interval.load(Ordering::Relaxed)),
                tolerance: 0,
            }
        } else {
            quota
        }
    }

    /// Takes a permit at `now`, or reserves one at most `max_wait` nanoseconds away.
    #[inline]
    pub(crate) fn take(&self, now: u64, quota: Quota, max_wait: u64) -> Take {
        let Quota {
            interval,
            tolerance,
        } = self.quota_at(now, quota);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let base = tat.max(now);
            let allowed_at = base.saturating_sub(tolerance);
            let wait = allowed_at.saturating_sub(now);
            if wait > max_wait {
                return Take::Refused { retry_after: wait };
            }
            let next = base.saturating_add(interval);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if wait == 0 => return Take::Now,
                Ok(_) => return Take::Later { wait, interval },
                Err(actual) => tat = actual,
            }
        }
    }

    /// Gives back a slot reserved by [`take`](Self::take) and not used (the call was dropped
    /// while it waited).
    pub(crate) fn refund(&self, now: u64, interval: u64) {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            if tat <= now {
                // The reservation's time has passed: nothing is left to give back.
                return;
            }
            let back = tat.saturating_sub(interval).max(now);
            match self
                .tat
                .compare_exchange_weak(tat, back, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => tat = actual,
            }
        }
    }

    /// No permit before `now + wait` (a server's `Retry-After`).
    pub(crate) fn block_for(&self, now: u64, wait: u64, quota: Quota) {
        // `tat - tolerance` is when the next call is allowed; after the block the bucket is
        // empty and refills at the normal rate.
        let until = now.saturating_add(wait).saturating_add(quota.tolerance);
        self.tat.fetch_max(until, Ordering::AcqRel);
    }

    /// Spreads `remaining` calls over the next `window` nanoseconds (a server's quota
    /// header), if that is slower than the configured rate. `remaining == 0` blocks for
    /// the window.
    pub(crate) fn slow_down(&self, now: u64, remaining: u64, window: u64, quota: Quota) {
        if remaining == 0 {
            self.block_for(now, window, quota);
            return;
        }
        let interval = window / remaining;
        if interval <= quota.interval {
            return;
        }
        self.hint_interval.store(interval, Ordering::Relaxed);
        self.hint_until
            .store(now.saturating_add(window), Ordering::Relaxed);
    }

    /// `true` when the bucket is full and no hint is in force: forgetting this key loses
    /// nothing.
    pub(crate) fn is_idle(&self, now: u64) -> bool {
        self.tat.load(Ordering::Acquire) <= now && self.hint_until.load(Ordering::Relaxed) <= now
    }

    /// When the next call would be allowed, as nanoseconds from `now` (0: now).
    pub(crate) fn wait_at(&self, now: u64, quota: Quota) -> u64 {
        let Quota { tolerance, .. } = self.quota_at(now, quota);
        self.tat
            .load(Ordering::Acquire)
            .max(now)
            .saturating_sub(tolerance)
            .saturating_sub(now)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn quota(interval: u64, burst: u64) -> Quota {
        Quota {
            interval,
            tolerance: interval * (burst - 1),
        }
    }

    #[test]
    fn a_full_bucket_lets_the_burst_through_then_one_per_interval() {
        let cell = Cell::new();
        let q = quota(10 * MS, 3);
        let now = 1_000 * MS;
        for _ in 0..3 {
            assert_eq!(cell.take(now, q, 0), Take::Now);
        }
        assert_eq!(
            cell.take(now, q, 0),
            Take::Refused {
                retry_after: 10 * MS
            }
        );
        assert_eq!(cell.take(now + 10 * MS, q, 0), Take::Now);
        assert!(matches!(
            cell.take(now + 10 * MS, q, 0),
            Take::Refused { .. }
        ));
    }

    #[test]
    fn a_wait_reserves_the_next_slot_and_a_refund_gives_it_back() {
        let cell = Cell::new();
        let q = quota(10 * MS, 1);
        assert_eq!(cell.take(0, q, 0), Take::Now);
        assert_eq!(
            cell.take(0, q, 25 * MS),
            Take::Later {
                wait: 10 * MS,
                interval: 10 * MS
            }
        );
        assert_eq!(
            cell.take(0, q, 25 * MS),
            Take::Later {
                wait: 20 * MS,
                interval: 10 * MS
            }
        );
        assert_eq!(
            cell.take(0, q, 25 * MS),
            Take::Refused {
                retry_after: 30 * MS
            }
        );
        cell.refund(0, 10 * MS);
        assert_eq!(
            cell.take(0, q, 25 * MS),
            Take::Later {
                wait: 20 * MS,
                interval: 10 * MS
            }
        );
    }

    #[test]
    fn huge_values_saturate() {
        let cell = Cell::new();
        let q = Quota {
            interval: u64::MAX,
            tolerance: u64::MAX,
        };
        assert_eq!(cell.take(u64::MAX, q, u64::MAX), Take::Now);
        assert_eq!(cell.take(u64::MAX, q, u64::MAX), Take::Now);
        cell.block_for(u64::MAX, u64::MAX, q);
        cell.slow_down(u64::MAX, 1, u64::MAX, q);
        cell.refund(u64::MAX, u64::MAX);
        let _ = cell.wait_at(0, q);
    }

    #[test]
    fn a_quota_hint_spreads_the_remaining_calls_over_its_window() {
        let cell = Cell::new();
        let q = quota(MS, 100);
        // 4 calls left in the next 100 ms: one per 25 ms, no burst.
        cell.slow_down(0, 4, 100 * MS, q);
        assert_eq!(cell.take(0, q, 0), Take::Now);
        assert_eq!(
            cell.take(0, q, 0),
            Take::Refused {
                retry_after: 25 * MS
            }
        );
        assert_eq!(cell.take(25 * MS, q, 0), Take::Now);
        // The window has passed: the configured rate and burst are back.
        assert!(!cell.is_idle(99 * MS));
        for _ in 0..50 {
            assert_eq!(cell.take(200 * MS, q, 0), Take::Now);
        }
    }

    #[test]
    fn a_retry_after_hint_blocks_until_it_passes() {
        let cell = Cell::new();
        let q = quota(MS, 10);
        cell.block_for(0, 500 * MS, q);
        assert_eq!(
            cell.take(0, q, 0),
            Take::Refused {
                retry_after: 500 * MS
            }
        );
        assert_eq!(cell.take(500 * MS, q, 0), Take::Now);
        assert!(matches!(cell.take(500 * MS, q, 0), Take::Refused { .. }));
    }
}
