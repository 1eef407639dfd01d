//! A bounded map of per-key entries that makes room for a new key by evicting the least
//! recently used entry among those the caller says are evictable.
//!
//! "Recently" is measured in new keys, not in time: a clock advances when a key that was not
//! found is added, and a lookup stamps its entry with the clock (lookups between the same two
//! new keys tie). So the hot path is one relaxed
//! load of the clock (written only when a key is added) and, when the stamp is behind, one
//! relaxed store to the entry; it reads no time and takes no lock of its own.
//!
//! Finding what to evict reads every entry, so one search is amortized over many new keys:
//! it keeps the `max / 8` oldest evictable entries as candidates for the next new keys (each
//! candidate is checked again when its turn comes, and skipped if it was used since or is no
//! longer evictable), and after a search that found nothing, the next `max / 8` new keys go to
//! the overflow entry without searching again. A flood of new keys therefore costs amortized
//! constant work per key, whether or not the entries can be evicted. Below 16 entries every
//! new key searches and the choice is exact.
//!
//! Shared by the per-key breakers and the partitioned bulkhead; not meant for use elsewhere,
//! and not covered by semver.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

/// The entries, behind the caller's lock: lookups need `&self`, adding a key `&mut self`.
#[derive(Debug)]
pub struct Entries<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Advances when a key is added.
    clock: AtomicU64,
    max: usize,
    /// The oldest evictable entries found by the last search, with the stamp each had then,
    /// the oldest last.
    candidates: Vec<(u64, K)>,
    /// New keys left to send to the overflow entry before searching again.
    skip: usize,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    /// The clock at the entry's last lookup.
    used: AtomicU64,
}

/// Where a key that was not found went.
#[derive(Debug)]
pub enum Added<'a, K, V> {
    /// It got an entry of its own, after evicting `evicted` if the map was full (handed back
    /// so that the caller can drop it after releasing its lock).
    Inserted {
        value: &'a V,
        evicted: Option<(K, V)>,
    },
    /// The map is full and nothing in it may be evicted.
    Full,
}

impl<K, V> Entries<K, V> {
    pub fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            clock: AtomicU64::new(0),
            max,
            candidates: Vec::new(),
            skip: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// How many candidates one search keeps (at least one), and how many new keys skip the
    /// search after a search that found nothing: `max / 8`, or none below 16 entries, where
    /// every new key searches.
    fn batch(&self) -> usize {
        match self.max / 8 {
            0 | 1 => 0,
            n => n,
        }
    }
}

impl<K: Hash + Eq + Clone, V> Entries<K, V> {
    /// The entry of `key`, without marking it used.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|e| &e.value)
    }

    /// The entry of `key`, marked used.
    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        let entry = self.map.get(key)?;
        let now = self.clock.load(Ordering::Relaxed);
        // Only a stale stamp is written, so a hot key's cache line stays shared.
        if entry.used.load(Ordering::Relaxed) != now {
            entry.used.store(now, Ordering::Relaxed);
        }
        Some(&entry.value)
    }

    /// Adds `key` (which the caller just failed to find) with the value `make` builds,
    /// evicting the least recently used entry for which `evictable` holds if the map is full.
    pub fn add(
        &mut self,
        key: &K,
        make: impl FnOnce() -> V,
        evictable: impl Fn(&V) -> bool,
    ) -> Added<'_, K, V> {
        // The clock moves before and after the key is added, so that the new entry is newer
        // than every lookup before it and older than every lookup after it.
        let clock = self.clock.get_mut();
        *clock = clock.wrapping_add(1);
        let now = *clock;
        *clock = clock.wrapping_add(1);
        let mut evicted = None;
        if self.map.len() >= self.max {
            match self.take_candidate(&evictable) {
                Some(entry) => evicted = Some(entry),
                None => return Added::Full,
            }
        }
        let entry = self.map.entry(key.clone()).or_insert_with(|| Entry {
            value: make(),
            used: AtomicU64::new(now),
        });
        Added::Inserted {
            value: &entry.value,
            evicted,
        }
    }

    /// Removes the oldest entry that may be evicted and returns it, searching again
    /// when the candidates run out (unless the last search found nothing and new keys are
    /// still skipping the search).
    fn take_candidate(&mut self, evictable: &impl Fn(&V) -> bool) -> Option<(K, V)> {
        if self.max == 0 {
            return None;
        }
        loop {
            while let Some((stamp, key)) = self.candidates.pop() {
                let still = self.map.get(&key).is_some_and(|e| {
                    e.used.load(Ordering::Relaxed) == stamp && evictable(&e.value)
                });
                if still {
                    return self.map.remove(&key).map(|entry| (key, entry.value));
                }
            }
            if self.skip > 0 {
                self.skip -= 1;
                return None;
            }
            let batch = self.batch().max(1);
            let mut found: Vec<(u64, &K)> = self
                .map
                .iter()
                .filter(|(_, e)| evictable(&e.value))
                .map(|(k, e)| (e.used.load(Ordering::Relaxed), k))
                .collect();
            if found.is_empty() {
                self.skip = self.batch();
                return None;
            }
            if found.len() > batch {
                found.select_nth_unstable_by_key(batch, |&(stamp, _)| stamp);
                found.truncate(batch);
            }
            // The oldest last, so that `pop` takes it first.
            found.sort_unstable_by_key(|&(stamp, _)| std::cmp::Reverse(stamp));
            self.candidates = found.into_iter().map(|(s, k)| (s, k.clone())).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Added, Entries};

    /// Adds `key` with the keys in `busy` not evictable: `Ok(evicted key)`, or `Err(())`
    /// when the map is full.
    fn add(entries: &mut Entries<u32, u32>, key: u32, busy: &[u32]) -> Result<Option<u32>, ()> {
        match entries.add(&key, || key, |v| !busy.contains(v)) {
            Added::Inserted { evicted, .. } => Ok(evicted.map(|(k, _)| k)),
            Added::Full => Err(()),
        }
    }

    #[test]
    fn the_least_recently_used_evictable_entry_makes_room() {
        let mut entries = Entries::new(3);
        for key in 0..3 {
            assert_eq!(add(&mut entries, key, &[]), Ok(None));
        }
        // 0 is used again after 1 and 2 were added; 1 is busy.
        assert!(entries.get(&0).is_some());
        assert_eq!(add(&mut entries, 3, &[1]), Ok(Some(2)));
        assert_eq!(add(&mut entries, 4, &[1]), Ok(Some(0)));
        assert_eq!(add(&mut entries, 5, &[1, 3, 4]), Err(()));
        assert_eq!(entries.len(), 3);
    }

    #[test]
    fn candidates_used_since_the_search_are_skipped() {
        let mut entries = Entries::new(16);
        for key in 0..16 {
            assert_eq!(add(&mut entries, key, &[]), Ok(None));
        }
        // The search keeps 0 and 1 (16 / 8) as candidates and evicts 0.
        assert_eq!(add(&mut entries, 16, &[]), Ok(Some(0)));
        assert!(entries.get(&1).is_some());
        // 1 was used since: skipped, and the next search finds 2.
        assert_eq!(add(&mut entries, 17, &[]), Ok(Some(2)));
    }

    #[test]
    fn a_fruitless_search_is_not_repeated_for_the_next_new_keys() {
        let mut entries = Entries::new(16);
        for key in 0..16 {
            assert_eq!(add(&mut entries, key, &[]), Ok(None));
        }
        let all: Vec<u32> = (0..16).collect();
        assert_eq!(add(&mut entries, 16, &all), Err(()));
        // Two new keys (16 / 8) skip the search even though 0 is now evictable.
        assert_eq!(add(&mut entries, 17, &[]), Err(()));
        assert_eq!(add(&mut entries, 18, &[]), Err(()));
        assert_eq!(add(&mut entries, 19, &[]), Ok(Some(0)));
    }

    #[test]
    fn below_16_entries_a_fruitless_search_is_repeated_for_the_next_key() {
        let mut entries = Entries::new(15);
        for key in 0..15 {
            assert_eq!(add(&mut entries, key, &[]), Ok(None));
        }
        let all: Vec<u32> = (0..15).collect();
        assert_eq!(add(&mut entries, 15, &all), Err(()));
        assert_eq!(add(&mut entries, 16, &[]), Ok(Some(0)));
    }

    #[test]
    fn a_bound_of_zero_adds_nothing() {
        let mut entries = Entries::new(0);
        assert_eq!(add(&mut entries, 1, &[]), Err(()));
        assert_eq!(entries.len(), 0);
    }
}
