//! Permits: the right to make one call, and the duty to report how it went.
// The hot path is a handful of instructions around one atomic operation; measured, it
// ran 2-3x slower when these small functions stayed calls (and moved permits through memory).
#![allow(clippy::inline_always)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_utils::CachePadded;
use staunch_core::Outcome;
use tokio::time::Instant;

use crate::core::{lane_epoch, nanos};
use crate::lane::{Added, Lane, WARMING};
use crate::state::Word;
use crate::window::TimeGeometry;

const NOT_TIMED: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Closed or metrics-only: the outcome goes into the sliding window.
    Window,
    /// A half-open probe: the outcome decides between closed and open.
    Probe,
    /// Disabled breaker: nothing is recorded.
    Free,
}

/// Leave to make one call through a [`CircuitBreaker`](crate::CircuitBreaker), from
/// [`try_acquire`](crate::CircuitBreaker::try_acquire).
///
/// Report the call's outcome with [`record`](Self::record) (or [`success`](Self::success) /
/// [`failure`](Self::failure)). A permit dropped without a report counts as a cancelled call:
/// [`Outcome::Ignored`] unless set otherwise with [`cancelled_as`](Self::cancelled_as). An
/// ignored half-open probe gives its slot back, so another call can probe.
///
/// A result reported after the breaker changed state (the call started in an older state) is
/// discarded.
#[must_use = "a permit records nothing unless its outcome is reported; dropping it counts as a cancelled call"]
pub struct Permit {
    // Every field is a whole word: byte-sized fields next to each other made the compiler
    // shuffle them with partial loads and stores, which stalled store forwarding on the hot
    // path. `None` once the outcome was reported.
    lane: Option<Arc<CachePadded<Lane>>>,
    word: Word,
    /// When the call started, in ns since the lane's base, or `NOT_TIMED`.
    start: u64,
    /// `Kind` in the low byte, the outcome of a drop without report in the next.
    flags: u64,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("state", &self.word.state())
            .field("probe", &self.is_probe())
            .field("reported", &self.lane.is_none())
            .finish_non_exhaustive()
    }
}

const fn outcome_code(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Success => 0,
        Outcome::Failure => 1,
        Outcome::Ignored => 2,
    }
}

const fn outcome_from(code: u64) -> Outcome {
    match code {
        0 => Outcome::Success,
        1 => Outcome::Failure,
        _ => Outcome::Ignored,
    }
}

impl Permit {
    #[inline(always)]
    pub(crate) fn new(lane: &Arc<CachePadded<Lane>>, word: Word, kind: Kind) -> Self {
        // The clock is read only when the call's duration matters.
        let start = if lane.slow_nanos.is_some() && kind != Kind::Free {
            start_time(lane)
        } else {
            NOT_TIMED
        };
        Self {
            lane: Some(Arc::clone(lane)),
            word,
            start,
            flags: kind as u64 | (outcome_code(Outcome::Ignored) << 8),
        }
    }

    #[inline(always)]
    fn kind(&self) -> Kind {
        match self.flags & 0xFF {
            0 => Kind::Window,
            1 => Kind::Probe,
            _ => Kind::Free,
        }
    }

    /// Sets what a drop without a report counts as (default [`Outcome::Ignored`]).
    #[inline(always)]
    pub fn cancelled_as(mut self, outcome: Outcome) -> Self {
        self.flags = (self.flags & 0xFF) | (outcome_code(outcome) << 8);
        self
    }

    /// `true` for a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.kind() == Kind::Probe
    }

    /// Reports the call's outcome.
    #[inline(always)]
    pub fn record(mut self, outcome: Outcome) {
        self.report(outcome);
    }

    /// Reports the outcome in place; the permit then does nothing more (not even on drop).
    #[inline(always)]
    pub(crate) fn report(&mut self, outcome: Outcome) {
        if let Some(lane) = self.lane.take() {
            self.count(&lane, outcome);
        }
    }

    /// Reports a success.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// Reports a failure.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    #[inline(always)]
    fn count(&self, lane: &Lane, outcome: Outcome) {
        // The common case inline: a closed-state success, no clock, count window.
        if outcome == Outcome::Success && self.kind() == Kind::Window && lane.plain {
            let hot = &*lane.hot;
            if hot.state.load(Ordering::Acquire) != self.word.0 {
                return; // from an older state: discarded
            }
            if hot.consecutive.load(Ordering::Relaxed) == 0 {
                lane.successes.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.finish_slow(lane, outcome);
    }

    #[inline(never)]
    fn finish_slow(&self, lane: &Lane, outcome: Outcome) {
        match self.kind() {
            Kind::Free => {}
            Kind::Window => {
                if outcome == Outcome::Ignored {
                    return;
                }
                let hot = &lane.hot;
                if hot.state.load(Ordering::Acquire) != self.word.0 {
                    return; // from an older state: discarded
                }
                let (is_slow, now) = self.timing(lane);
                if outcome == Outcome::Success && !is_slow {
                    let consecutive = hot.consecutive.load(Ordering::Relaxed);
                    if consecutive & !WARMING != 0 {
                        hot.consecutive.fetch_and(WARMING, Ordering::Relaxed);
                    }
                    lane.successes.fetch_add(1, Ordering::Relaxed);
                    let mut added = Added::Counted;
                    if let Some(geometry) = lane.time {
                        let now = now.unwrap_or_else(Instant::now);
                        let epoch = lane_epoch(geometry, lane, now);
                        added = lane.buckets[geometry.index(epoch)]
                            .add(TimeGeometry::tag(self.word.generation(), epoch));
                    }
                    if added == Added::Busy {
                        // Another thread is rotating the bucket (perhaps preempted halfway):
                        // count the call in the locked window instead of waiting for it.
                        if let Some(core) = lane.core.upgrade() {
                            core.on_uncounted_success(self.word);
                        }
                    } else if consecutive & WARMING != 0
                        && let Some(core) = lane.core.upgrade()
                    {
                        core.on_warming_success(self.word);
                    }
                } else if let Some(core) = lane.core.upgrade() {
                    core.on_event(self.word, outcome == Outcome::Failure, is_slow);
                }
            }
            Kind::Probe => {
                let (is_slow, _) = self.timing(lane);
                if let Some(core) = lane.core.upgrade() {
                    core.on_probe(self.word, outcome, is_slow && outcome != Outcome::Ignored);
                }
            }
        }
    }

    /// Whether the call was slow, and the time it ended if the clock was read.
    fn timing(&self, lane: &Lane) -> (bool, Option<Instant>) {
        match lane.slow_nanos {
            Some(threshold) if self.start != NOT_TIMED => {
                let now = Instant::now();
                let end = nanos(now.saturating_duration_since(lane.base));
                (end.saturating_sub(self.start) >= threshold, Some(now))
            }
            _ => (false, None),
        }
    }
}

#[inline(never)]
fn start_time(lane: &Lane) -> u64 {
    nanos(Instant::now().saturating_duration_since(lane.base))
}

impl Drop for Permit {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(lane) = self.lane.take() {
            self.count(&lane, outcome_from(self.flags >> 8));
        }
    }
}
