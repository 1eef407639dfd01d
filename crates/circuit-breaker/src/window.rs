//! The sliding window: which recent calls failed or were slow, count- or time-based.
//!
//! Successes are counted in the lanes (see `lane.rs`); this module keeps the rest. A count
//! window stores the *position* of each failure or slow call in the sequence of calls since
//! the window was reset: the position is the number of calls recorded so far (the sum of the
//! lanes' successes plus the events before it), so "the last N calls" is exact at the moment a
//! failure is evaluated, without recording anything shared for a success. A time window keeps
//! buckets of events tagged with their generation and epoch; an expired bucket is simply
//! ignored and overwritten by the next epoch that maps to it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::SlidingWindow;

/// What the window holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// Bucket width and count of a time window, and the tags that name a bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeGeometry {
    pub(crate) bucket_nanos: u64,
    pub(crate) buckets: u64,
}

const EPOCH_BITS: u32 = 40;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;
const GENERATION_MASK: u64 = (1 << (63 - EPOCH_BITS)) - 1;

impl TimeGeometry {
    pub(crate) fn new(duration: Duration, buckets: u32) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self {
            bucket_nanos: (nanos / u64::from(buckets)).max(1),
            buckets: u64::from(buckets),
        }
    }

    pub(crate) fn epoch(self, nanos_since_base: u64) -> u64 {
        (nanos_since_base / self.bucket_nanos) & EPOCH_MASK
    }

    /// Tag of `epoch` in `generation` (the top bit stays clear, so no tag is `ROTATING`).
    pub(crate) fn tag(generation: u64, epoch: u64) -> u64 {
        ((generation & GENERATION_MASK) << EPOCH_BITS) | (epoch & EPOCH_MASK)
    }

    /// A short fingerprint of `tag` (the low 4 bits of its generation and 16 of its epoch)
    /// that fits beside a count in one word: two tags a bucket holds one after the other
    /// differ in it unless 16 transitions or 65,536 epochs passed in between.
    pub(crate) fn stamp(tag: u64) -> u64 {
        (((tag >> EPOCH_BITS) & 0xF) << 16) | (tag & 0xFFFF)
    }

    /// Oldest and newest epoch of the window ending at `now_epoch`.
    pub(crate) fn span(self, now_epoch: u64) -> (u64, u64) {
        (now_epoch.saturating_sub(self.buckets - 1), now_epoch)
    }

    /// `current` is the same generation as `tag` and a later epoch.
    pub(crate) fn is_newer(current: u64, tag: u64) -> bool {
        current >> EPOCH_BITS == tag >> EPOCH_BITS && (current & EPOCH_MASK) > (tag & EPOCH_MASK)
    }

    pub(crate) fn in_window(tag: u64, generation: u64, oldest: u64, newest: u64) -> bool {
        tag >> EPOCH_BITS == generation & GENERATION_MASK
            && (oldest..=newest).contains(&(tag & EPOCH_MASK))
    }

    pub(crate) fn index(self, epoch: u64) -> usize {
        (epoch % self.buckets) as usize
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    position: u64,
    failure: bool,
    slow: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EventBucket {
    tag: Option<u64>,
    calls: u64,
    failures: u64,
    slow: u64,
}

/// The failure and slow-call side of the window; lives under the breaker's slow-path lock.
#[derive(Debug)]
pub(crate) enum Window {
    Count {
        size: u64,
        /// Failures and slow calls still in the window, oldest first.
        events: VecDeque<Event>,
        /// The lanes' success total when the window was reset.
        base: u64,
        /// Events recorded since the reset.
        recorded: u64,
        failures: u64,
        slow: u64,
    },
    Time {
        geometry: TimeGeometry,
        buckets: Vec<EventBucket>,
    },
}

impl Window {
    pub(crate) fn new(config: SlidingWindow) -> Self {
        match config {
            SlidingWindow::Count { size } => Window::Count {
                size: u64::from(size),
                // Grows (on the failure path only) up to the window's size at most.
                events: VecDeque::with_capacity(size.min(4096) as usize),
                base: 0,
                recorded: 0,
                failures: 0,
                slow: 0,
            },
            SlidingWindow::Time { duration, buckets } => {
                let geometry = TimeGeometry::new(duration, buckets);
                Window::Time {
                    geometry,
                    buckets: vec![EventBucket::default(); buckets as usize],
                }
            }
        }
    }

    /// Empties the window. `lane_successes` is the lanes' success total right now (count
    /// windows measure positions from it); time windows are emptied by the new generation.
    pub(crate) fn reset(&mut self, lane_successes: u64) {
        match self {
            Window::Count {
                events,
                base,
                recorded,
                failures,
                slow,
                ..
            } => {
                events.clear();
                *base = lane_successes;
                *recorded = 0;
                *failures = 0;
                *slow = 0;
            }
            Window::Time { buckets, .. } => buckets.fill(EventBucket::default()),
        }
    }

    /// Records a failure and/or slow call. `lane_successes` is the lanes' success total (count
    /// windows), `generation` and `now_epoch` place it in a time window.
    pub(crate) fn record(
        &mut self,
        failure: bool,
        is_slow: bool,
        lane_successes: u64,
        generation: u64,
        now_epoch: u64,
    ) {
        match self {
            Window::Count {
                events,
                base,
                recorded,
                failures,
                slow,
                size,
            } => {
                *recorded += 1;
                let position = lane_successes.wrapping_sub(*base) + *recorded;
                if events.len() as u64 == *size
                    && let Some(old) = events.pop_front()
                {
                    *failures -= u64::from(old.failure);
                    *slow -= u64::from(old.slow);
                }
                events.push_back(Event {
                    position,
                    failure,
                    slow: is_slow,
                });
                *failures += u64::from(failure);
                *slow += u64::from(is_slow);
            }
            Window::Time { geometry, buckets } => {
                let tag = TimeGeometry::tag(generation, now_epoch);
                let bucket = &mut buckets[geometry.index(now_epoch)];
                if bucket.tag != Some(tag) {
                    *bucket = EventBucket {
                        tag: Some(tag),
                        ..EventBucket::default()
                    };
                }
                bucket.calls += 1;
                bucket.failures += u64::from(failure);
                bucket.slow += u64::from(is_slow);
            }
        }
    }

    /// What the window holds, given the successes counted in the lanes: their total since ever
    /// (count windows) or within the window's span (time windows, summed by the caller).
    pub(crate) fn counts(
        &mut self,
        lane_successes: u64,
        generation: u64,
        now_epoch: u64,
    ) -> Counts {
        match self {
            Window::Count {
                size,
                events,
                base,
                recorded,
                failures,
                slow,
            } => {
                let total = lane_successes.wrapping_sub(*base) + *recorded;
                while let Some(old) = events.front()
                    && old.position + *size <= total
                {
                    *failures -= u64::from(old.failure);
                    *slow -= u64::from(old.slow);
                    events.pop_front();
                }
                Counts {
                    calls: total.min(*size),
                    failures: *failures,
                    slow: *slow,
                }
            }
            Window::Time { geometry, buckets } => {
                let (oldest, newest) = geometry.span(now_epoch);
                let mut counts = Counts {
                    calls: lane_successes,
                    ..Counts::default()
                };
                for b in buckets.iter() {
                    if let Some(tag) = b.tag
                        && TimeGeometry::in_window(tag, generation, oldest, newest)
                    {
                        counts.calls += b.calls;
                        counts.failures += b.failures;
                        counts.slow += b.slow;
                    }
                }
                counts
            }
        }
    }

    pub(crate) fn geometry(&self) -> Option<TimeGeometry> {
        match self {
            Window::Count { .. } => None,
            Window::Time { geometry, .. } => Some(*geometry),
        }
    }
}
