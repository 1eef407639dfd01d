//! Hedging with paused time: a slow first attempt loses to a fast hedge, and is cancelled.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use staunch_retry::{HedgeDelay, HedgeLayer, RetryBudget, RetryPolicy};
use support::{BoxError, DropFlag};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_fast_hedge_wins_and_the_slow_first_attempt_is_cancelled() {
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let layer = HedgeLayer::new(
        policy.clone(),
        HedgeDelay::Fixed(Duration::from_millis(100)),
    )
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let first_dropped = Arc::new(AtomicBool::new(false));
    let (c, flag) = (Arc::clone(&calls), Arc::clone(&first_dropped));
    let svc = layer.layer(tower::service_fn(move |_: u32| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let guard = (n == 0).then(|| DropFlag(Arc::clone(&flag)));
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(guard);
                Ok::<_, BoxError>("first")
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok("hedge")
            }
        }
    }));
    let start = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), "hedge");
    assert_eq!(start.elapsed(), Duration::from_millis(110));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        first_dropped.load(Ordering::SeqCst),
        "the loser was dropped"
    );
    assert_eq!(policy.metrics().hedges, 1);
}

#[tokio::test(start_paused = true)]
async fn a_fast_first_attempt_sends_no_hedge() {
    let policy = RetryPolicy::builder().build().unwrap();
    let layer = HedgeLayer::new(
        policy.clone(),
        HedgeDelay::Fixed(Duration::from_millis(100)),
    )
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let svc = layer.layer(tower::service_fn(move |x: u32| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, BoxError>(x)
        }
    }));
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(policy.metrics().hedges, 0);
    assert_eq!(policy.metrics().requests, 1);
    // Stacked over a retry layer on the same budget, the hedge layer need not count requests.
    let quiet = HedgeLayer::new(
        policy.clone(),
        HedgeDelay::Fixed(Duration::from_millis(100)),
    )
    .unwrap()
    .count_requests(false)
    .layer(tower::service_fn(
        |x: u32| async move { Ok::<_, BoxError>(x) },
    ));
    quiet.oneshot(1).await.unwrap();
    assert_eq!(policy.metrics().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn hedges_draw_on_the_retry_budget() {
    // No reserve and no ratio: the budget never allows a hedge.
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(0)
        .build()
        .unwrap();
    let policy = RetryPolicy::builder().budget(budget).build().unwrap();
    let layer =
        HedgeLayer::new(policy.clone(), HedgeDelay::Fixed(Duration::from_millis(10))).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let svc = layer.layer(tower::service_fn(move |x: u32| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<_, BoxError>(x)
        }
    }));
    let start = Instant::now();
    assert_eq!(svc.oneshot(3).await.unwrap(), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(policy.metrics().budget_exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_waits_for_the_other_and_both_failing_returns_an_error() {
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let layer = HedgeLayer::new(policy, HedgeDelay::Fixed(Duration::from_millis(100))).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    // The first attempt fails after 200 ms (the hedge is already out), the hedge succeeds at 400.
    let svc = layer.layer(tower::service_fn(move |_: u32| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err::<&str, BoxError>("first failed".into())
            } else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok("hedge")
            }
        }
    }));
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "hedge");
    assert_eq!(start.elapsed(), Duration::from_millis(400));

    let failing = HedgeLayer::new(
        RetryPolicy::builder()
            .budget(RetryBudget::unlimited())
            .build()
            .unwrap(),
        HedgeDelay::Fixed(Duration::from_millis(10)),
    )
    .unwrap()
    .layer(tower::service_fn(|_: u32| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err::<u32, BoxError>("down".into())
    }));
    let err = failing.oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "down");
}

#[tokio::test(start_paused = true)]
async fn the_percentile_delay_follows_observed_latency() {
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let layer = HedgeLayer::new(
        policy.clone(),
        HedgeDelay::Percentile {
            percentile: 0.9,
            fallback: Duration::from_secs(10),
            min_samples: 32,
        },
    )
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let svc = layer.layer(tower::service_fn(move |slow: bool| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            let d = if slow { 1000 } else { 20 };
            tokio::time::sleep(Duration::from_millis(d)).await;
            Ok::<_, BoxError>(d)
        }
    }));
    // 64 fast calls teach it that p90 is about 20 ms; no hedge is sent for them.
    for _ in 0..64 {
        svc.clone().oneshot(false).await.unwrap();
    }
    assert_eq!(policy.metrics().hedges, 0);
    // A slow call is hedged after ~20-25 ms, not after the 10 s fallback; the hedge (also
    // slow here) does not beat it, but it was sent.
    let before = calls.load(Ordering::SeqCst);
    svc.clone().oneshot(true).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst) - before, 2);
    assert_eq!(policy.metrics().hedges, 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_hedged_call_cancels_both_attempts() {
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let layer = HedgeLayer::new(policy, HedgeDelay::Fixed(Duration::from_millis(10))).unwrap();
    let live = Arc::new(AtomicU32::new(0));
    let started = Arc::new(AtomicU32::new(0));
    let (l, s) = (Arc::clone(&live), Arc::clone(&started));
    let mut svc = layer.layer(tower::service_fn(move |_: u32| {
        l.fetch_add(1, Ordering::SeqCst);
        s.fetch_add(1, Ordering::SeqCst);
        let l = Arc::clone(&l);
        async move {
            // Decrements `live` when this attempt is dropped, finished or not.
            struct Done(Arc<AtomicU32>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _done = Done(l);
            tokio::time::sleep(Duration::from_mins(1)).await;
            Ok::<u32, BoxError>(0)
        }
    }));
    let fut = svc.ready().await.unwrap().call(1);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), fut)
            .await
            .is_err()
    );
    assert_eq!(started.load(Ordering::SeqCst), 2, "the hedge was sent");
    assert_eq!(live.load(Ordering::SeqCst), 0, "both attempts were dropped");
}

/// An inner service that counts its clones; the first call of all is slow, the others fast.
struct Counted {
    clones: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: Arc::clone(&self.clones),
            calls: Arc::clone(&self.calls),
        }
    }
}

impl Service<u32> for Counted {
    type Response = u32;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, x: u32) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let wait = if n == 0 { 500 } else { 10 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok(x)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_hedge_goes_through_a_clone_of_the_service_that_made_the_call() {
    let policy = RetryPolicy::builder()
        .budget(RetryBudget::unlimited())
        .build()
        .unwrap();
    let clones = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let inner = Counted {
        clones: Arc::clone(&clones),
        calls: Arc::clone(&calls),
    };
    let layer = HedgeLayer::new(policy, HedgeDelay::Fixed(Duration::from_millis(100))).unwrap();
    let mut svc = layer.layer(inner);
    // Building the layer keeps no clone of the service.
    assert_eq!(clones.load(Ordering::SeqCst), 0);

    // A call that may hedge clones the service making it; the slow first attempt is hedged
    // through that clone, which wins.
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 1);
    assert_eq!(start.elapsed(), Duration::from_millis(110));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(clones.load(Ordering::SeqCst), 1);

    // Every call that may hedge takes its clone, hedged or not.
    for i in 0..10 {
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 12);
    assert_eq!(clones.load(Ordering::SeqCst), 11);

    // A clone of the layer clones the inner service once and shares the policy.
    let mut other = svc.clone();
    assert_eq!(clones.load(Ordering::SeqCst), 12);
    other.ready().await.unwrap().call(5).await.unwrap();
    assert_eq!(svc.policy().metrics().requests, 12);
    assert_eq!(svc.policy().metrics().hedges, 1);

    // A call that cannot hedge (the policy makes one attempt) clones nothing.
    let once = RetryPolicy::builder().max_attempts(1).build().unwrap();
    let mut single = HedgeLayer::new(once, HedgeDelay::Fixed(Duration::from_millis(100)))
        .unwrap()
        .layer(Counted {
            clones: Arc::clone(&clones),
            calls: Arc::clone(&calls),
        });
    let before = clones.load(Ordering::SeqCst);
    single.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(clones.load(Ordering::SeqCst), before);
}
