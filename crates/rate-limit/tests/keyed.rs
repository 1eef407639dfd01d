//! Keyed limiters: a bucket per key, bounded memory, shared overflow.

use std::time::Duration;

use staunch_rate_limit::{KeyedRateLimiter, RateHint, RateLimiter};
use tokio::time::advance;

fn keyed(max_keys: usize) -> KeyedRateLimiter<u64> {
    RateLimiter::builder("tenants")
        .rate(1, Duration::from_secs(1))
        .max_keys(max_keys)
        .build_keyed()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_bucket() {
    let l = keyed(100);
    l.try_acquire(&1).unwrap();
    l.try_acquire(&2).unwrap();
    assert_eq!(
        l.try_acquire(&1).unwrap_err().retry_after(),
        Duration::from_secs(1)
    );
    advance(Duration::from_secs(1)).await;
    l.try_acquire(&1).unwrap();
    assert_eq!(l.keys(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_new_keys_stays_within_the_key_cap_and_the_rate() {
    let l = keyed(64);
    let mut admitted = 0;
    for key in 0..100_000u64 {
        if l.try_acquire(&key).is_ok() {
            admitted += 1;
        }
        assert!(l.keys() <= 64, "keys: {}", l.keys());
    }
    // The remembered keys got their permit each, the rest shared one bucket (one permit).
    assert_eq!(admitted, 64 + 1);
    // Once their buckets are full again, the keys are forgotten to make room: the cap is
    // split over 16 shards of 4 keys, and each shard takes 4 new keys again.
    advance(Duration::from_secs(2)).await;
    let admitted = (1_000_000..1_001_000u64)
        .filter(|key| l.try_acquire(key).is_ok())
        .count();
    assert!((64..=65).contains(&admitted), "admitted {admitted}");
    assert!(l.keys() <= 64);
}

#[tokio::test(start_paused = true)]
async fn a_hint_slows_its_key_only() {
    let l = keyed(100);
    l.observe(&7, RateHint::RetryAfter(Duration::from_secs(30)));
    assert_eq!(
        l.try_acquire(&7).unwrap_err().retry_after(),
        Duration::from_secs(30)
    );
    l.try_acquire(&8).unwrap();
    assert_eq!(l.wait_time(&7), Duration::from_secs(30));
    assert_eq!(l.metrics().hints, 1);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_waiter_dropped_gives_its_slot_back() {
    let l: KeyedRateLimiter<&'static str> = RateLimiter::builder("k")
        .rate(1, Duration::from_millis(10))
        .max_wait(Duration::from_millis(100))
        .build_keyed()
        .unwrap();
    l.try_acquire(&"a").unwrap();
    let waiting = l.acquire(&"a");
    assert_eq!(l.wait_time(&"a"), Duration::from_millis(20));
    drop(waiting);
    assert_eq!(l.wait_time(&"a"), Duration::from_millis(10));
    let start = tokio::time::Instant::now();
    l.acquire(&"a").await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(10));
}

#[derive(PartialEq, Eq, Clone, Debug)]
struct Hostile(u32);

impl std::hash::Hash for Hostile {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        assert!(self.0 != 13, "unlucky key");
        self.0.hash(state);
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_hash_panics_leaves_the_limiter_working() {
    let l: KeyedRateLimiter<Hostile> = RateLimiter::builder("k")
        .rate(1, Duration::from_secs(1))
        .build_keyed()
        .unwrap();
    let l2 = l.clone();
    let panicked = std::thread::spawn(move || l2.try_acquire(&Hostile(13))).join();
    assert!(panicked.is_err());
    for key in 0..10 {
        l.try_acquire(&Hostile(key)).unwrap();
    }
}
