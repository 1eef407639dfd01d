//! Adaptive limits against a simulated dependency whose latency grows past a knee, with
//! paused time: the limit settles near the knee, stays within its bounds, and falls when
//! latency or failures rise.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use staunch_bulkhead::{AdaptiveLimit, Bulkhead};
use support::Gauge;
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt, service_fn};

const KNEE: usize = 8;
const CLIENTS: usize = 40;

/// The dependency: 10ms per call up to `KNEE` concurrent calls, then latency grows in
/// proportion (work queues inside it). `slowdown` multiplies latency; `failing` fails calls.
#[derive(Clone, Default)]
struct Dependency {
    gauge: Gauge,
    failing: Arc<AtomicBool>,
    slowdown: Arc<AtomicU64>,
}

impl Dependency {
    fn latency(&self, concurrency: usize) -> Duration {
        let base = Duration::from_millis(10) * self.slowdown.load(Ordering::SeqCst).max(1) as u32;
        let over = concurrency.max(KNEE) as u32;
        base * over / KNEE as u32
    }
}

/// Drives `CLIENTS` closed-loop clients through `bulkhead` until `until`, sampling the limit
/// every 50ms.
async fn drive(bulkhead: &Bulkhead, dep: &Dependency, until: Instant) -> Vec<usize> {
    let inner = {
        let dep = dep.clone();
        service_fn(move |()| {
            let dep = dep.clone();
            async move {
                let inside = dep.gauge.enter();
                let latency = dep.latency(dep.gauge.current());
                sleep(latency).await;
                drop(inside);
                if dep.failing.load(Ordering::SeqCst) {
                    Err(std::io::Error::other("overloaded"))
                } else {
                    Ok(())
                }
            }
        })
    };
    let svc = bulkhead.layer().layer(inner);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    if svc.clone().oneshot(()).await.is_err() {
                        // Rejected or failed: back off a little, as a real client would.
                        sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();
    let mut limits = Vec::new();
    while Instant::now() < until {
        sleep(Duration::from_millis(50)).await;
        limits.push(bulkhead.max_concurrent());
    }
    for c in clients {
        c.await.unwrap();
    }
    limits
}

fn bulkhead(limit: impl Into<AdaptiveLimit>, initial: usize) -> Bulkhead {
    Bulkhead::builder("adaptive")
        .max_concurrent(initial)
        .max_wait(Duration::from_secs(10))
        .max_queued(CLIENTS)
        .adaptive(limit)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn vegas_converges_near_the_knee_and_backs_off_when_latency_or_failures_rise() {
    let b = bulkhead(
        AdaptiveLimit::vegas()
            .min_limit(2)
            .max_limit(64)
            .alpha(2.0)
            .beta(4.0),
        2,
    );
    let dep = Dependency::default();
    let start = Instant::now();

    // From a limit of 2, it climbs while latency stays at the no-load level...
    let limits = drive(&b, &dep, start + Duration::from_secs(10)).await;
    assert!(limits.iter().all(|l| (2..=64).contains(l)));
    let settled = &limits[limits.len() / 2..];
    // ...and settles just past the knee: queue estimate `L - KNEE` between alpha and beta,
    // apart from the short no-load probes that halve it for one round.
    let off = settled
        .iter()
        .filter(|l| !(KNEE..=KNEE + 5).contains(l))
        .count();
    assert!(off * 10 <= settled.len(), "knee {KNEE}: {settled:?}");
    assert!(settled.iter().all(|l| *l >= KNEE / 2), "{settled:?}");
    assert!(dep.gauge.high_water() <= 64);
    let before = *limits.last().unwrap();

    // The dependency gets slower at every concurrency: the limit must not grow, and falls.
    dep.slowdown.store(2, Ordering::SeqCst);
    let limits = drive(&b, &dep, Instant::now() + Duration::from_millis(500)).await;
    assert!(
        limits.iter().min().unwrap() < &before,
        "latency rose, limit should fall from {before}: {limits:?}"
    );
    dep.slowdown.store(1, Ordering::SeqCst);

    // Failures: the limit falls to its floor and no further.
    dep.failing.store(true, Ordering::SeqCst);
    let limits = drive(&b, &dep, Instant::now() + Duration::from_secs(5)).await;
    assert!(limits.iter().all(|l| *l >= 2));
    assert_eq!(*limits.last().unwrap(), 2, "{limits:?}");
}

#[tokio::test(start_paused = true)]
async fn aimd_grows_to_the_latency_threshold_and_drops_to_the_floor_on_failures() {
    // Latency passes 15ms once concurrency exceeds 12 (= 1.5 x knee).
    let b = bulkhead(
        AdaptiveLimit::aimd()
            .min_limit(3)
            .max_limit(30)
            .latency_threshold(Duration::from_millis(15)),
        3,
    );
    let dep = Dependency::default();
    let limits = drive(&b, &dep, Instant::now() + Duration::from_secs(10)).await;
    assert!(limits.iter().all(|l| (3..=30).contains(l)), "{limits:?}");
    let settled = &limits[limits.len() / 2..];
    // The threshold is crossed past 12 concurrent calls: the limit saw-tooths just above.
    for &l in settled {
        assert!(
            (KNEE..=2 * KNEE).contains(&l),
            "settled limit {l}: {settled:?}"
        );
    }
    assert!(dep.gauge.high_water() <= 30);

    dep.failing.store(true, Ordering::SeqCst);
    let limits = drive(&b, &dep, Instant::now() + Duration::from_secs(5)).await;
    assert!(limits.iter().all(|l| *l >= 3), "{limits:?}");
    assert_eq!(*limits.last().unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_idle_limit_does_not_grow() {
    let b = bulkhead(AdaptiveLimit::aimd().max_limit(100), 10);
    // One call at a time: the limit is never used, so successes do not raise it.
    for _ in 0..50 {
        b.run(sleep(Duration::from_millis(1))).await.unwrap();
    }
    assert_eq!(b.max_concurrent(), 10);
    // A manual resize must respect the bounds.
    assert!(b.set_max_concurrent(101).is_err());
    b.set_max_concurrent(20).unwrap();
    assert_eq!(b.max_concurrent(), 20);
}
