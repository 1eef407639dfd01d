//! loom models of a lane's time bucket: successes recorded while other threads rotate the
//! bucket to a later epoch, checked for counts lost, doubled or moved to another epoch, and
//! for the path that gives up on a rotation instead of waiting for it.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p staunch-circuit-breaker --lib loom`.

use std::sync::Arc;

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

use super::{Added, TimeBucket};
use crate::window::TimeGeometry;

/// The bucket's epochs: `NEXT` maps to the same bucket one window later.
const EPOCH: u64 = 3;
const NEXT: u64 = EPOCH + 8;

fn tag(epoch: u64) -> u64 {
    TimeGeometry::tag(1, epoch)
}

fn read(bucket: &TimeBucket, epoch: u64) -> u64 {
    bucket.read(1, epoch, epoch)
}

/// Successes of one epoch, counted in the bucket or (when it gave up on a rotation) beside it.
#[derive(Default)]
struct Tally {
    counted: AtomicU64,
    elsewhere: AtomicU64,
}

impl Tally {
    fn record(&self, bucket: &TimeBucket, epoch: u64) {
        match bucket.add(tag(epoch)) {
            Added::Counted => self.counted.fetch_add(1, Ordering::Relaxed),
            Added::Busy => self.elsewhere.fetch_add(1, Ordering::Relaxed),
            Added::Stale => 0,
        };
    }
}

#[test]
fn loom_racing_rotations_count_each_success_once_in_its_own_epoch() {
    loom::model(|| {
        let bucket = Arc::new(TimeBucket::default());
        // The bucket holds two successes of the older epoch.
        assert_eq!(bucket.add(tag(EPOCH)), Added::Counted);
        assert_eq!(bucket.add(tag(EPOCH)), Added::Counted);
        let next = Arc::new(Tally::default());
        // A late success of the older epoch races with two of the next one.
        let late = {
            let bucket = Arc::clone(&bucket);
            thread::spawn(move || bucket.add(tag(EPOCH)))
        };
        let other = {
            let (bucket, next) = (Arc::clone(&bucket), Arc::clone(&next));
            thread::spawn(move || next.record(&bucket, NEXT))
        };
        next.record(&bucket, NEXT);
        // Counted (in the older epoch, before the rotation), stale or busy: any is right, as
        // long as the next epoch's count does not have it.
        late.join().unwrap();
        other.join().unwrap();

        let counted = next.counted.load(Ordering::Relaxed);
        let elsewhere = next.elsewhere.load(Ordering::Relaxed);
        assert_eq!(
            counted + elsewhere,
            2,
            "a success of the next epoch was lost"
        );
        // Only the next epoch's counted successes, not the older epoch's.
        assert_eq!(read(&bucket, NEXT), counted);
        assert_eq!(
            read(&bucket, EPOCH),
            0,
            "the older epoch is still in the bucket"
        );
    });
}

#[test]
fn loom_a_reader_never_pairs_an_epoch_with_another_epochs_count() {
    loom::model(|| {
        let bucket = Arc::new(TimeBucket::default());
        assert_eq!(bucket.add(tag(EPOCH)), Added::Counted);
        assert_eq!(bucket.add(tag(EPOCH)), Added::Counted);
        let rotate = {
            let bucket = Arc::clone(&bucket);
            thread::spawn(move || bucket.add(tag(NEXT)))
        };
        let older = read(&bucket, EPOCH);
        let newer = read(&bucket, NEXT);
        assert!(older == 0 || older == 2, "older epoch read as {older}");
        assert!(newer <= 1, "next epoch read as {newer}");
        assert_eq!(rotate.join().unwrap(), Added::Counted);
        assert_eq!(read(&bucket, NEXT), 1);
    });
}
