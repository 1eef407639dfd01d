//! Partitions past `max_partitions`: idle partitions are evicted for new keys; partitions with
//! permits out (or waiters, or kept handles) are kept; the overflow partition takes new keys
//! only while no partition is idle.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use staunch_bulkhead::{PartitionPermit, PartitionedBulkhead};

/// One permit per tenant, the default bound of 1024 created partitions, and a global cap
/// high enough never to bind.
fn tenants() -> PartitionedBulkhead<u32> {
    PartitionedBulkhead::builder("t")
        .default_limit(1)
        .global_limit(100_000)
        .build()
        .unwrap()
}

fn global_in_flight(tenants: &PartitionedBulkhead<u32>) -> usize {
    tenants.global().unwrap().in_flight()
}

#[test]
fn a_new_tenant_after_1024_idle_ones_gets_its_own_capacity() {
    let tenants = tenants();
    for key in 0..1024 {
        drop(tenants.try_acquire(&key).unwrap());
    }
    assert_eq!(tenants.created_partitions(), 1024);
    // Held at once: with one permit per partition, sharing the overflow would refuse all but one.
    let held: Vec<PartitionPermit> = (10_000..11_000)
        .map(|key| tenants.try_acquire(&key).expect("a partition of its own"))
        .collect();
    assert_eq!(
        tenants.created_partitions(),
        1024,
        "never more than the bound"
    );
    assert_eq!(tenants.overflow().in_flight(), 0);
    for (key, permit) in (10_000..).zip(&held) {
        assert_eq!(permit.partition().bulkhead().name(), format!("t[{key}]"));
    }
    assert!((0..1000).all(|key| tenants.find_partition(&key).is_none()));
    assert!((1000..1024).all(|key| tenants.find_partition(&key).is_some()));
    assert_eq!(global_in_flight(&tenants), 1000);
    drop(held);
    assert_eq!(global_in_flight(&tenants), 0);
}

#[test]
fn a_partition_with_a_permit_out_is_kept_and_takes_its_permit_back() {
    let tenants = tenants();
    let held = tenants.try_acquire(&0).unwrap();
    for key in 1..=2000 {
        drop(tenants.try_acquire(&key).unwrap());
    }
    assert_eq!(tenants.created_partitions(), 1024);
    let partition = tenants
        .find_partition(&0)
        .expect("kept while its permit is out");
    assert_eq!(partition.in_flight(), 1);
    assert!(
        tenants.try_acquire(&0).is_err(),
        "the key's calls still count against the partition holding its permit"
    );
    drop(partition);

    // Released after 2000 other tenants passed: it goes back to its own partition.
    drop(held);
    let partition = tenants.find_partition(&0).unwrap();
    assert_eq!(partition.in_flight(), 0);
    assert_eq!(partition.metrics().rejected_no_permit, 1);
    assert_eq!(global_in_flight(&tenants), 0);
    drop(partition);

    // Idle now: new tenants evict it in its turn.
    for key in 5000..6024 {
        drop(tenants.try_acquire(&key).unwrap());
    }
    assert!(tenants.find_partition(&0).is_none());
    assert_eq!(tenants.created_partitions(), 1024);
    assert_eq!(tenants.overflow().metrics().in_flight, 0);
}

#[test]
fn a_permit_outliving_a_handle_and_its_partitioned_bulkhead_is_released_cleanly() {
    let tenants = tenants();
    let held = tenants.try_acquire(&0).unwrap();
    let global = tenants.global().unwrap().clone();
    for key in 1..=2000 {
        drop(tenants.try_acquire(&key).unwrap());
    }
    drop(tenants);
    assert_eq!(global.in_flight(), 1);
    assert_eq!(held.partition().bulkhead().in_flight(), 1);
    drop(held);
    assert_eq!(global.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_partition_with_a_waiting_call_is_kept() {
    let tenants = PartitionedBulkhead::builder("t")
        .default_limit(1)
        .max_partitions(4)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let held = tenants.try_acquire(&0).unwrap();
    let waiting = tenants.acquire(&0);
    drop(held);
    for key in 1..=8 {
        drop(tenants.try_acquire(&key).unwrap());
    }
    assert!(
        tenants.find_partition(&0).is_some(),
        "kept for its waiting call"
    );
    let permit = waiting.await.unwrap();
    assert_eq!(permit.partition().bulkhead().name(), "t[0]");
}

#[test]
fn the_overflow_partition_takes_new_keys_only_while_no_partition_is_idle() {
    let tenants = PartitionedBulkhead::builder("t")
        .partition(99, 3)
        .default_limit(1)
        .max_partitions(4)
        .build()
        .unwrap();
    let mut held: Vec<PartitionPermit> = (0..4).map(|k| tenants.try_acquire(&k).unwrap()).collect();
    let shared = tenants.try_acquire(&100).unwrap();
    assert_eq!(shared.partition().bulkhead().name(), "t[overflow]");
    assert!(
        tenants.try_acquire(&101).is_err(),
        "one overflow permit, taken"
    );

    // A kept handle pins its partition just as a permit does.
    let pinned = held[2].partition().bulkhead().clone();
    drop(held.remove(2));
    assert!(
        tenants.try_acquire(&102).is_err(),
        "still every partition busy"
    );
    drop(pinned);
    let own = tenants.try_acquire(&102).unwrap();
    assert_eq!(own.partition().bulkhead().name(), "t[102]");
    assert!(tenants.find_partition(&2).is_none());
    // Configured partitions are not counted and never evicted.
    assert_eq!(tenants.created_partitions(), 4);
    assert_eq!(tenants.find_partition(&99).unwrap().max_concurrent(), 3);
    drop((held, shared, own));
}

// A model at a bound of 4 (every new key searches, so the choice is exact up to ties): which
// keys have a partition, their use stamps, permits held and rejections counted.

const LIMIT: usize = 4;
const PER_KEY: usize = 2;
const GLOBAL: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    /// Takes a permit for `key` and holds it.
    Hold(u32),
    /// Takes a permit for `key` and releases it at once.
    Touch(u32),
    /// Releases the `n`-th held permit (modulo their number).
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..8u32).prop_map(Op::Hold),
        2 => (0..8u32).prop_map(Op::Touch),
        3 => any::<usize>().prop_map(Op::Release),
    ]
}

#[derive(Debug, Default, Clone)]
struct ModelPartition {
    stamp: u64,
    held: usize,
    rejected: u64,
}

#[derive(Debug, Default)]
struct Model {
    clock: u64,
    partitions: HashMap<u32, ModelPartition>,
    overflow: ModelPartition,
    global: ModelPartition,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    Own(u32),
    Overflow,
}

impl Model {
    fn route(&mut self, key: u32, evicted: Option<u32>) -> Result<Route, TestCaseError> {
        if let Some(p) = self.partitions.get_mut(&key) {
            p.stamp = self.clock;
            return Ok(Route::Own(key));
        }
        self.clock += 1;
        let now = self.clock;
        self.clock += 1;
        if self.partitions.len() >= LIMIT {
            let oldest = self
                .partitions
                .values()
                .filter(|p| p.held == 0)
                .map(|p| p.stamp)
                .min();
            let Some(oldest) = oldest else {
                prop_assert_eq!(evicted, None, "nothing was idle");
                return Ok(Route::Overflow);
            };
            let Some(evicted) = evicted else {
                return Err(TestCaseError::fail(format!(
                    "an idle partition (stamp {oldest}) was there but {key} went to the overflow"
                )));
            };
            let gone = self.partitions.remove(&evicted);
            prop_assert!(
                gone.as_ref()
                    .is_some_and(|p| p.held == 0 && p.stamp == oldest),
                "evicted {evicted} ({gone:?}), not one of the least recently used idle ones"
            );
        } else {
            prop_assert_eq!(evicted, None);
        }
        self.partitions.insert(
            key,
            ModelPartition {
                stamp: now,
                ..ModelPartition::default()
            },
        );
        Ok(Route::Own(key))
    }

    fn partition(&mut self, route: Route) -> &mut ModelPartition {
        match route {
            Route::Own(key) => self
                .partitions
                .get_mut(&key)
                .expect("routed to an existing key"),
            Route::Overflow => &mut self.overflow,
        }
    }

    /// Takes a permit as `try_acquire` does: the key's first, then the global one (giving the
    /// key's back if the global cap is full). `true` when both were free.
    fn acquire(&mut self, route: Route) -> bool {
        if self.partition(route).held >= PER_KEY {
            self.partition(route).rejected += 1;
            return false;
        }
        if self.global.held >= GLOBAL {
            self.global.rejected += 1;
            return false;
        }
        self.partition(route).held += 1;
        self.global.held += 1;
        true
    }

    fn release(&mut self, route: Route) {
        self.partition(route).held -= 1;
        self.global.held -= 1;
    }
}

fn keys(tenants: &PartitionedBulkhead<u32>) -> Vec<u32> {
    (0..8)
        .filter(|k| tenants.find_partition(k).is_some())
        .collect()
}

fn check(tenants: &PartitionedBulkhead<u32>, model: &Model) -> Result<(), TestCaseError> {
    prop_assert!(tenants.created_partitions() <= LIMIT);
    prop_assert_eq!(tenants.created_partitions(), model.partitions.len());
    let mut expected: Vec<u32> = model.partitions.keys().copied().collect();
    expected.sort_unstable();
    prop_assert_eq!(keys(tenants), expected);
    let pairs = model
        .partitions
        .iter()
        .map(|(k, p)| (tenants.find_partition(k).unwrap(), p))
        .chain([
            (tenants.overflow().clone(), &model.overflow),
            (tenants.global().unwrap().clone(), &model.global),
        ]);
    for (real, p) in pairs {
        let metrics = real.metrics();
        prop_assert_eq!(metrics.in_flight, p.held, "{}", real.name());
        prop_assert_eq!(metrics.rejected_no_permit, p.rejected, "{}", real.name());
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let tenants = PartitionedBulkhead::builder("t")
        .default_limit(PER_KEY)
        .global_limit(GLOBAL)
        .max_partitions(LIMIT)
        .build()
        .unwrap();
    let mut model = Model::default();
    let mut held: Vec<(Route, PartitionPermit)> = Vec::new();
    for op in ops {
        match op {
            Op::Hold(key) | Op::Touch(key) => {
                let before = keys(&tenants);
                let result = tenants.try_acquire(&key);
                let evicted = before
                    .into_iter()
                    .find(|k| tenants.find_partition(k).is_none());
                let route = model.route(key, evicted)?;
                prop_assert_eq!(result.is_ok(), model.acquire(route));
                if let Ok(permit) = result {
                    if matches!(op, Op::Hold(_)) {
                        held.push((route, permit));
                    } else {
                        drop(permit);
                        model.release(route);
                    }
                }
            }
            Op::Release(n) => {
                if held.is_empty() {
                    continue;
                }
                let (route, permit) = held.remove(n % held.len());
                drop(permit);
                model.release(route);
            }
        }
        check(&tenants, &model)?;
    }
    drop(held);
    prop_assert_eq!(tenants.global().unwrap().in_flight(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn eviction_keeps_partitions_with_permits_out_and_every_count(ops in proptest::collection::vec(op(), 1..100)) {
        run(ops)?;
    }
}
