//! A small latency histogram for percentile hedging delays.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const OCTAVES: usize = 40;
const SUB: usize = 4;

/// A small histogram of latencies (microseconds, 4 buckets per power of two) and the delay
/// derived from it, recomputed every 32 observations.
pub(crate) struct Latency {
    buckets: [AtomicU64; OCTAVES * SUB],
    count: AtomicU64,
    delay_nanos: AtomicU64,
    percentile: f64,
    min_samples: u64,
}

impl fmt::Debug for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latency")
            .field("percentile", &self.percentile)
            .field("delay", &self.delay())
            .finish_non_exhaustive()
    }
}

impl Latency {
    pub(crate) fn new(percentile: f64, fallback: Duration, min_samples: u64) -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            // A fallback beyond 584 years is as good as never: saturate rather than truncate.
            delay_nanos: AtomicU64::new(u64::try_from(fallback.as_nanos()).unwrap_or(u64::MAX)),
            percentile,
            min_samples,
        }
    }

    pub(crate) fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    fn index(micros: u64) -> usize {
        if micros < SUB as u64 {
            return micros as usize;
        }
        let octave = 63 - micros.leading_zeros() as usize; // >= 2
        let sub = ((micros >> (octave - 2)) & 0b11) as usize;
        ((octave - 1) * SUB + sub).min(OCTAVES * SUB - 1)
    }

    /// The upper edge of bucket `i`, in microseconds.
    fn upper(i: usize) -> u64 {
        if i < SUB {
            return i as u64 + 1;
        }
        let octave = i / SUB + 1;
        let sub = (i % SUB) as u64;
        ((SUB as u64 + sub + 1) << (octave - 2)).max(1)
    }

    pub(crate) fn record(&self, latency: Duration) {
        let micros = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.buckets[Self::index(micros)].fetch_add(1, Ordering::Relaxed);
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.min_samples && n.is_multiple_of(32) {
            self.recompute();
        }
    }

    fn recompute(&self) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return;
        }
        let target = (total as f64 * self.percentile).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                let nanos = Self::upper(i).saturating_mul(1000);
                self.delay_nanos.store(nanos, Ordering::Relaxed);
                break;
            }
        }
        // Halve old counts now and then, so the percentile follows the recent latency.
        if total > 10_000 {
            for b in &self.buckets {
                let v = b.load(Ordering::Relaxed);
                b.store(v / 2, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotone_and_cover_their_values() {
        let mut last = 0;
        for micros in [
            0u64, 1, 3, 4, 5, 7, 8, 100, 1000, 12_345, 1_000_000, 60_000_000,
        ] {
            let i = Latency::index(micros);
            assert!(i >= last, "{micros}");
            last = i;
            assert!(
                Latency::upper(i) > micros,
                "{micros} -> {i} -> {}",
                Latency::upper(i)
            );
        }
    }

    #[test]
    fn percentile_follows_observations() {
        let l = Latency::new(0.9, Duration::from_secs(1), 10);
        for _ in 0..90 {
            l.record(Duration::from_millis(1));
        }
        for _ in 0..6 {
            l.record(Duration::from_millis(100));
        }
        // 96 samples: recomputed at 32, 64 and 96; p90 is within the 1 ms bucket.
        let d = l.delay();
        assert!(
            d >= Duration::from_millis(1) && d < Duration::from_millis(2),
            "{d:?}"
        );
    }
}
