//! Partitioned bulkheads: keys are isolated, the global cap holds, unknown keys are bounded.

mod support;

use std::time::Duration;

use staunch_bulkhead::{
    BulkheadFull, BulkheadFullReason, PartitionedBulkhead, PartitionedBulkheadLayer,
};
use support::Gauge;
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// Requests are `(tenant, milliseconds of work)`.
fn tenant_service(
    bulkhead: PartitionedBulkhead<&'static str>,
    gauge: Gauge,
) -> impl Service<(&'static str, u64), Response = u64, Error = staunch_bulkhead::BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    let inner = service_fn(move |(_, ms): (&'static str, u64)| {
        let gauge = gauge.clone();
        async move {
            let _inside = gauge.enter();
            sleep(Duration::from_millis(ms)).await;
            Ok::<_, std::io::Error>(ms)
        }
    });
    PartitionedBulkheadLayer::new(bulkhead, |req: &(&'static str, u64)| req.0).layer(inner)
}

#[tokio::test(start_paused = true)]
async fn saturating_one_key_does_not_delay_another() {
    let tenants = PartitionedBulkhead::builder("search")
        .partition("noisy", 2)
        .partition("quiet", 2)
        .global_limit(10)
        .max_wait(Duration::from_secs(5))
        .max_queued(100)
        .build()
        .unwrap();
    let gauge = Gauge::default();
    let svc = tenant_service(tenants.clone(), gauge.clone());
    // The noisy tenant floods its partition with slow calls: 2 run, 8 wait.
    let flood: Vec<_> = (0..10)
        .map(|_| tokio::spawn(svc.clone().oneshot(("noisy", 1_000))))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(tenants.partition(&"noisy").in_flight(), 2);
    assert_eq!(tenants.partition(&"noisy").metrics().queued, 8);
    assert_eq!(
        gauge.current(),
        2,
        "waiting calls have not reached the dependency"
    );
    // The quiet tenant's calls run at once, with their normal latency.
    for _ in 0..3 {
        let start = Instant::now();
        assert_eq!(svc.clone().oneshot(("quiet", 10)).await.unwrap(), 10);
        assert_eq!(start.elapsed(), 10 * MS);
    }
    // The noisy calls all finish eventually: 5 rounds of 2 at 1s each.
    let start = Instant::now();
    for f in flood {
        f.await.unwrap().unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_millis(4_970));
    assert_eq!(gauge.high_water(), 3, "2 noisy + 1 quiet");
    assert_eq!(tenants.global().unwrap().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_global_cap_holds_across_keys() {
    let tenants = PartitionedBulkhead::builder("search")
        .default_limit(2)
        .global_limit(3)
        .build()
        .unwrap();
    let gauge = Gauge::default();
    let svc = tenant_service(tenants.clone(), gauge.clone());
    let calls: Vec<_> = ["a", "a", "b", "b", "c", "c"]
        .into_iter()
        .map(|k| tokio::spawn(svc.clone().oneshot((k, 100))))
        .collect();
    let mut ok = 0;
    let mut global_rejections = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                let full = e.downcast_ref::<BulkheadFull>().unwrap();
                assert_eq!(full.name(), "search[global]");
                assert_eq!(full.reason(), BulkheadFullReason::NoPermit);
                global_rejections += 1;
            }
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(global_rejections, 3);
    assert_eq!(gauge.high_water(), 3);
    // A rejection by the global cap gave the key's permit back.
    for key in ["a", "b", "c"] {
        assert_eq!(tenants.partition(&key).in_flight(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_shares_one_deadline_between_key_and_global_stages() {
    let tenants = PartitionedBulkhead::builder("search")
        .default_limit(1)
        .global_limit(1)
        .max_wait(100 * MS)
        .build()
        .unwrap();
    let held_global_by_b = tenants.try_acquire(&"b").unwrap();
    // "a" has its key permit but the global one is held by "b" for longer than max_wait.
    let start = Instant::now();
    let err = tenants.acquire(&"a").await.unwrap_err();
    assert_eq!(start.elapsed(), 100 * MS);
    assert_eq!(err.reason(), BulkheadFullReason::WaitTimedOut(100 * MS));
    assert_eq!(
        tenants.partition(&"a").in_flight(),
        0,
        "key permit given back"
    );

    // Key wait of 60ms, then the global stage only has the 40ms that are left.
    let held_key = tenants.partition(&"a").try_acquire().unwrap();
    let releaser = tokio::spawn(async move {
        sleep(60 * MS).await;
        drop(held_key);
    });
    let start = Instant::now();
    let err = tenants.acquire(&"a").await.unwrap_err();
    assert_eq!(start.elapsed(), 100 * MS, "not 60 + 100");
    assert_eq!(err.name(), "search[global]");
    releaser.await.unwrap();
    drop(held_global_by_b);
}

#[tokio::test(start_paused = true)]
async fn unknown_keys_get_lazily_created_partitions_up_to_a_bound() {
    let tenants = PartitionedBulkhead::builder("hosts")
        .partition("api", 5)
        .default_limit(1)
        .max_partitions(2)
        .build()
        .unwrap();
    assert_eq!(tenants.partition(&"api").max_concurrent(), 5);
    // Kept handles pin `x` and `y`: they cannot be evicted for `z` and `w`.
    let x = tenants.partition(&"x");
    let y = tenants.partition(&"y");
    assert_eq!(x.name(), "hosts[\"x\"]");
    assert_eq!(y.name(), "hosts[\"y\"]");
    assert_eq!(tenants.partition(&"z").name(), "hosts[overflow]");
    assert_eq!(tenants.partition(&"w").name(), "hosts[overflow]");
    let _z = tenants.try_acquire(&"z").unwrap();
    assert!(
        tenants.try_acquire(&"w").is_err(),
        "overflow keys share one partition"
    );
    assert!(tenants.try_acquire(&"x").is_ok());
}

#[test]
fn invalid_partition_settings_fail_at_build() {
    let e = PartitionedBulkhead::builder("t")
        .partition("a", 0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "t.partitions[\"a\"].max_concurrent");
    let e = PartitionedBulkhead::builder("t")
        .partition("a", 1)
        .partition("a", 2)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "t.partitions[\"a\"]");
    let e = PartitionedBulkhead::<&str>::builder("t")
        .global_limit(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "t.global_limit");
    let e = PartitionedBulkhead::<&str>::builder("t")
        .default_limit(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "t.default_limit");
}

#[tokio::test(start_paused = true)]
async fn cancelled_partitioned_calls_release_every_permit() {
    let tenants = PartitionedBulkhead::builder("search")
        .default_limit(1)
        .global_limit(2)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let gauge = Gauge::default();
    let svc = tenant_service(tenants.clone(), gauge.clone());
    // Running: holds a key permit and a global permit.
    let running_a = tokio::spawn(svc.clone().oneshot(("a", 60_000)));
    let running_b = tokio::spawn(svc.clone().oneshot(("b", 60_000)));
    tokio::task::yield_now().await;
    assert_eq!(tenants.global().unwrap().in_flight(), 2);
    // Waiting on its key (a is busy), and waiting on the global cap (c's key is free).
    let waiting_key = tokio::spawn(svc.clone().oneshot(("a", 1)));
    let waiting_global = tokio::spawn(svc.clone().oneshot(("c", 1)));
    tokio::task::yield_now().await;
    assert_eq!(tenants.partition(&"a").metrics().queued, 1);
    assert_eq!(
        tenants.partition(&"c").in_flight(),
        1,
        "c holds its key permit"
    );
    assert_eq!(tenants.global().unwrap().metrics().queued, 1);
    for t in [waiting_key, waiting_global, running_a, running_b] {
        t.abort();
        let _ = t.await;
    }
    for key in ["a", "b", "c"] {
        assert_eq!(tenants.partition(&key).in_flight(), 0, "{key}");
        assert_eq!(tenants.partition(&key).metrics().queued, 0, "{key}");
    }
    assert_eq!(tenants.global().unwrap().in_flight(), 0);
    assert_eq!(tenants.global().unwrap().metrics().queued, 0);
    assert_eq!(gauge.current(), 0);
    assert_eq!(
        gauge.entered(),
        2,
        "the waiting calls never reached the dependency"
    );
}

#[test]
fn many_configured_keys_each_get_their_own_limit() {
    // Past a handful of keys the lookup switches from a scan to a hash map.
    for n in [3usize, 20] {
        let mut builder = PartitionedBulkhead::builder("hosts").default_limit(1);
        for k in 0..n {
            builder = builder.partition(k, k + 2);
        }
        let hosts = builder.build().unwrap();
        for k in 0..n {
            assert_eq!(hosts.partition(&k).max_concurrent(), k + 2);
            assert_eq!(hosts.partition(&k).name(), format!("hosts[{k}]"));
        }
        assert_eq!(hosts.partition(&n).max_concurrent(), 1, "unconfigured key");
    }
}
