//! Never more than `max_concurrent` in flight, and no permit ever leaks: random durations,
//! random cancellation (while waiting and while running) and random resizes, through the
//! engine and through the tower layer.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use staunch_bulkhead::{Bulkhead, BulkheadFull};
use support::Gauge;
use tokio::time::sleep;
use tower::{Layer, ServiceExt, service_fn};

#[derive(Debug, Clone)]
struct Call {
    start_ms: u64,
    run_ms: u64,
    /// Give up (drop the future) after this long, if set.
    cancel_after_ms: Option<u64>,
    through_layer: bool,
}

fn call() -> impl Strategy<Value = Call> {
    (
        0u64..30,
        0u64..40,
        prop::option::weighted(0.4, 0u64..60),
        any::<bool>(),
    )
        .prop_map(|(start_ms, run_ms, cancel_after_ms, through_layer)| Call {
            start_ms,
            run_ms,
            cancel_after_ms,
            through_layer,
        })
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    rejected: usize,
    cancelled: usize,
}

async fn run_scenario(
    max_concurrent: usize,
    max_wait_ms: u64,
    max_queued: usize,
    resize: Option<(u64, usize)>,
    calls: Vec<Call>,
) -> (Bulkhead, Gauge, Tally) {
    let bulkhead = Bulkhead::builder("stress")
        .max_concurrent(max_concurrent)
        .max_wait(Duration::from_millis(max_wait_ms))
        .max_queued(max_queued)
        .build()
        .unwrap();
    let gauge = Gauge::default();
    let inner = {
        let gauge = gauge.clone();
        service_fn(move |ms: u64| {
            let gauge = gauge.clone();
            async move {
                let _inside = gauge.enter();
                sleep(Duration::from_millis(ms)).await;
                Ok::<_, std::io::Error>(ms)
            }
        })
    };
    let svc = bulkhead.layer().layer(inner);
    if let Some((at, limit)) = resize {
        let b = bulkhead.clone();
        tokio::spawn(async move {
            sleep(Duration::from_millis(at)).await;
            b.set_max_concurrent(limit).unwrap();
        });
    }
    let mut tasks = Vec::new();
    for c in calls {
        let b = bulkhead.clone();
        let svc = svc.clone();
        let gauge = gauge.clone();
        let task = tokio::spawn(async move {
            sleep(Duration::from_millis(c.start_ms)).await;
            if c.through_layer {
                svc.oneshot(c.run_ms).await.map(drop).map_err(|e| {
                    assert!(e.is::<BulkheadFull>(), "only rejections fail: {e}");
                })
            } else {
                b.run(async {
                    let _inside = gauge.enter();
                    sleep(Duration::from_millis(c.run_ms)).await;
                })
                .await
                .map_err(drop)
            }
        });
        // Cancellation from outside: the future is dropped without being polled again,
        // whether it is waiting, was just granted a permit, or is running.
        if let Some(ms) = c.cancel_after_ms {
            let abort = task.abort_handle();
            tokio::spawn(async move {
                sleep(Duration::from_millis(c.start_ms + ms)).await;
                abort.abort();
            });
        }
        tasks.push(task);
    }
    let mut tally = Tally::default();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => tally.ok += 1,
            Ok(Err(())) => tally.rejected += 1,
            Err(e) if e.is_cancelled() => tally.cancelled += 1,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    (bulkhead, gauge, tally)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn concurrency_never_exceeds_the_limit_and_no_permit_leaks(
        max_concurrent in 1usize..5,
        max_wait_ms in prop::sample::select(vec![0u64, 5, 20, 100]),
        max_queued in 0usize..6,
        resize in prop::option::of((0u64..60, 1usize..5)),
        calls in prop::collection::vec(call(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let n = calls.len();
        let (bulkhead, gauge, tally) = rt.block_on(run_scenario(
            max_concurrent, max_wait_ms, max_queued, resize, calls,
        ));
        let bound = max_concurrent.max(resize.map_or(0, |(_, l)| l));
        prop_assert!(gauge.high_water() <= bound,
            "high water {} over limit {}", gauge.high_water(), bound);
        prop_assert_eq!(tally.ok + tally.rejected + tally.cancelled, n);
        prop_assert_eq!(bulkhead.metrics().rejections(), tally.rejected as u64);
        prop_assert!(gauge.entered() >= tally.ok);
        // Every permit is back and nobody is left in the queue.
        prop_assert_eq!(gauge.current(), 0);
        prop_assert_eq!(bulkhead.in_flight(), 0);
        prop_assert_eq!(bulkhead.metrics().queued, 0);
        let limit = bulkhead.max_concurrent();
        let permits: Vec<_> = (0..limit).map(|_| bulkhead.try_acquire()).collect();
        prop_assert!(permits.iter().all(Result::is_ok), "all {} permits are free", limit);
        prop_assert!(bulkhead.try_acquire().is_err());
    }
}

/// The same on a multi-threaded runtime in real time: permits handed between threads.
#[test]
fn multi_threaded_stress_keeps_the_bound_and_leaks_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // xorshift, seeded: the same schedule of durations and cancellations every run.
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let calls: Vec<Call> = (0..400)
        .map(|_| Call {
            start_ms: next(20),
            run_ms: next(3),
            cancel_after_ms: (next(3) == 0).then(|| next(4)),
            through_layer: next(2) == 0,
        })
        .collect();
    let (bulkhead, gauge, tally) = rt.block_on(run_scenario(3, 2, 8, None, calls));
    assert!(gauge.high_water() <= 3, "high water {}", gauge.high_water());
    assert_eq!(tally.ok + tally.rejected + tally.cancelled, 400);
    assert!(tally.ok > 0);
    assert_eq!(bulkhead.in_flight(), 0);
    assert_eq!(bulkhead.metrics().queued, 0);
    assert_eq!(gauge.current(), 0);
}
