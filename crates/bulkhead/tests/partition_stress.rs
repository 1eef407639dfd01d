//! Randomized partitions: per-key limits and the global cap hold at every instant, and every
//! permit is back at the end, with random durations and random cancellation.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use staunch_bulkhead::{BulkheadFull, PartitionedBulkhead, PartitionedBulkheadLayer};
use support::Gauge;
use tokio::time::sleep;
use tower::{Layer, ServiceExt, service_fn};

const KEYS: usize = 3;

#[derive(Debug, Clone)]
struct Call {
    key: usize,
    start_ms: u64,
    run_ms: u64,
    cancel_after_ms: Option<u64>,
}

fn call() -> impl Strategy<Value = Call> {
    (
        0..KEYS,
        0u64..30,
        0u64..40,
        prop::option::weighted(0.3, 0u64..60),
    )
        .prop_map(|(key, start_ms, run_ms, cancel_after_ms)| Call {
            key,
            start_ms,
            run_ms,
            cancel_after_ms,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn key_limits_and_the_global_cap_hold_and_nothing_leaks(
        limits in prop::collection::vec(1usize..4, KEYS),
        global in 1usize..6,
        max_wait_ms in prop::sample::select(vec![0u64, 10, 50]),
        calls in prop::collection::vec(call(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let mut builder = PartitionedBulkhead::builder("p")
            .global_limit(global)
            .max_wait(Duration::from_millis(max_wait_ms));
        for (k, l) in limits.iter().enumerate() {
            builder = builder.partition(k, *l);
        }
        let tenants = builder.build().unwrap();
        let total = Gauge::default();
        let per_key: Vec<Gauge> = (0..KEYS).map(|_| Gauge::default()).collect();
        rt.block_on(async {
            let inner = {
                let total = total.clone();
                let per_key = per_key.clone();
                service_fn(move |(key, ms): (usize, u64)| {
                    let inside = (total.enter(), per_key[key].enter());
                    async move {
                        sleep(Duration::from_millis(ms)).await;
                        drop(inside);
                        Ok::<_, std::io::Error>(())
                    }
                })
            };
            let svc = PartitionedBulkheadLayer::new(tenants.clone(), |req: &(usize, u64)| req.0)
                .layer(inner);
            let mut tasks = Vec::new();
            for c in calls {
                let svc = svc.clone();
                let task = tokio::spawn(async move {
                    sleep(Duration::from_millis(c.start_ms)).await;
                    if let Err(e) = svc.oneshot((c.key, c.run_ms)).await {
                        assert!(e.is::<BulkheadFull>(), "only rejections fail: {e}");
                    }
                });
                if let Some(ms) = c.cancel_after_ms {
                    let abort = task.abort_handle();
                    tokio::spawn(async move {
                        sleep(Duration::from_millis(c.start_ms + ms)).await;
                        abort.abort();
                    });
                }
                tasks.push(task);
            }
            for t in tasks {
                if let Err(e) = t.await
                    && !e.is_cancelled()
                {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        });
        prop_assert!(total.high_water() <= global, "{} > global {}", total.high_water(), global);
        for k in 0..KEYS {
            prop_assert!(per_key[k].high_water() <= limits[k]);
            prop_assert_eq!(tenants.partition(&k).in_flight(), 0);
            prop_assert_eq!(tenants.partition(&k).metrics().queued, 0);
        }
        prop_assert_eq!(tenants.global().unwrap().in_flight(), 0);
        prop_assert_eq!(tenants.global().unwrap().metrics().queued, 0);
        prop_assert_eq!(total.current(), 0);
    }
}
