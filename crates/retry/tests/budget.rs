//! The retry budget bounds retries against a dependency that always fails.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use staunch_retry::{GiveUpReason, RetryBudget, RetryLayer, RetryPolicy};
use support::{BoxError, constant, gave_up, reasons};
use tower::{Layer, Service, ServiceExt};

fn failing(
    calls: &Arc<AtomicU64>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + use<> {
    let calls = Arc::clone(calls);
    tower::service_fn(move |_: u32| {
        calls.fetch_add(1, Ordering::Relaxed);
        async {
            Err::<u32, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_thousand_failing_requests_make_at_most_ratio_times_requests_plus_reserve_retries() {
    // ratio 0.2, 10 retries/s reserve over a 10 s window: at most 0.2 * 1000 + 10 * 10 = 300.
    let budget = RetryBudget::builder()
        .ratio(0.2)
        .min_per_sec(10)
        .ttl(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = reasons();
    let log = Arc::clone(&r);
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(constant(1))
        .budget(budget.clone())
        .on_give_up(move |g| log.lock().unwrap().push(g.reason))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let svc = RetryLayer::new(policy.clone()).layer(failing(&calls));
    let start = tokio::time::Instant::now();
    let mut refused = 0;
    for i in 0..1000 {
        let err = svc.clone().oneshot(i).await.unwrap_err();
        // Every call ends annotated: its retries ran out, or the budget refused one.
        let ((attempts, reason), last) = gave_up(&err);
        assert!(
            last.is::<std::io::Error>(),
            "the original error is the source"
        );
        match reason {
            GiveUpReason::MaxAttempts => assert_eq!(attempts, 3),
            GiveUpReason::BudgetExhausted => {
                assert!((1..3).contains(&attempts));
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // 1000 requests and 300 retries take 0.3 s of backoff: all inside one window.
    assert!(start.elapsed() < Duration::from_secs(1));
    let retries = calls.load(Ordering::Relaxed) - 1000;
    assert_eq!(
        retries, 300,
        "exactly the bound: the budget is used up, never exceeded"
    );
    let m = policy.metrics();
    assert_eq!((m.requests, m.retries), (1000, 300));
    assert_eq!(m.budget_left, Some(0));
    // Exhaustion is observable: counted, and reported with its reason.
    assert!(m.budget_exhausted > 0);
    let exhausted = r
        .lock()
        .unwrap()
        .iter()
        .filter(|g| **g == GiveUpReason::BudgetExhausted)
        .count() as u64;
    assert_eq!(exhausted, m.budget_exhausted);
    assert_eq!(
        refused, m.budget_exhausted,
        "each refusal is annotated as such"
    );

    // Still exhausted: a new failing request is not retried, and says why.
    let before = calls.load(Ordering::Relaxed);
    let err = svc.clone().oneshot(0).await.unwrap_err();
    assert_eq!(calls.load(Ordering::Relaxed) - before, 1);
    assert_eq!(gave_up(&err).0, (1, GiveUpReason::BudgetExhausted));
    assert_eq!(
        err.to_string(),
        "gave up after 1 attempt (retry budget exhausted)"
    );

    // After the window the old requests and retries expired: the reserve is back.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(budget.remaining(), Some(100));
    let before = calls.load(Ordering::Relaxed);
    svc.clone().oneshot(0).await.unwrap_err();
    assert_eq!(calls.load(Ordering::Relaxed) - before, 3, "retried again");
}

#[tokio::test(start_paused = true)]
async fn one_budget_is_shared_by_clones_and_by_policies_given_the_same_handle() {
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .ttl(Duration::from_secs(4))
        .build()
        .unwrap();
    let a = RetryPolicy::builder()
        .budget(budget.clone())
        .backoff(constant(1))
        .build()
        .unwrap();
    let b = RetryPolicy::builder()
        .budget(budget.clone())
        .backoff(constant(1))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let sa = RetryLayer::new(a).layer(failing(&calls));
    let sb = RetryLayer::new(b).layer(failing(&calls));
    // Reserve: 4 retries in total, whoever takes them.
    sa.clone().oneshot(0).await.unwrap_err(); // 2 retries
    sb.clone().oneshot(0).await.unwrap_err(); // 2 retries
    sa.oneshot(0).await.unwrap_err(); // none left
    sb.oneshot(0).await.unwrap_err();
    assert_eq!(calls.load(Ordering::Relaxed), 4 + 4);
    assert_eq!(budget.withdrawn(), 4);
    assert_eq!(budget.requests(), 4);
}

#[derive(Debug, Clone)]
enum Op {
    Deposit(u8),
    Withdraw,
}

proptest! {
    /// Within one window the budget admits a retry exactly when the reference model does:
    /// `used < floor(ratio * requests) + reserve`.
    #[test]
    fn withdrawals_match_the_model_within_a_window(
        ratio in 0.0f64..2.0,
        min_per_sec in 0u32..5,
        ops in proptest::collection::vec(
            prop_oneof![(1u8..20).prop_map(Op::Deposit), Just(Op::Withdraw)],
            0..200,
        ),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let budget = RetryBudget::builder()
                .ratio(ratio)
                .min_per_sec(min_per_sec)
                .ttl(Duration::from_secs(10))
                .build()
                .unwrap();
            let reserve = u64::from(min_per_sec) * 10;
            let (mut deposits, mut used) = (0u64, 0u64);
            for op in ops {
                match op {
                    Op::Deposit(n) => {
                        for _ in 0..n {
                            budget.deposit();
                        }
                        deposits += u64::from(n);
                    }
                    Op::Withdraw => {
                        let allowed = (ratio * deposits as f64).floor() as u64 + reserve;
                        let expect = used < allowed;
                        prop_assert_eq!(budget.try_withdraw(), expect);
                        if expect {
                            used += 1;
                        }
                        prop_assert_eq!(budget.remaining(), Some(
                            ((ratio * deposits as f64).floor() as u64 + reserve).saturating_sub(used)
                        ));
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// Issue 16, item 4: `healthy` requests spaced `gap` apart, then 100 calls that always fail
/// (three attempts allowed, 1 ms backoff), through the layer with the default budget.
/// `read_every` reads the metrics every that many healthy requests (0: never). Returns the
/// retries the outage got and the budget left after it.
async fn retries_after_history(healthy: u32, gap: Duration, read_every: u32) -> (u64, u64) {
    let policy = RetryPolicy::builder()
        .max_attempts(3)
        .backoff(constant(1))
        .build()
        .unwrap();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let (is_down, counter) = (Arc::clone(&down), Arc::clone(&calls));
    let svc = RetryLayer::new(policy.clone()).layer(tower::service_fn(move |_: u32| {
        counter.fetch_add(1, Ordering::Relaxed);
        let fail = is_down.load(Ordering::Relaxed);
        async move {
            if fail {
                Err::<u32, BoxError>(
                    std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
                )
            } else {
                Ok(1)
            }
        }
    }));
    for i in 0..healthy {
        svc.clone().oneshot(i).await.unwrap();
        if read_every > 0 && i % read_every == 0 {
            let _ = policy.metrics();
        }
        tokio::time::advance(gap).await;
    }
    down.store(true, Ordering::Relaxed);
    let before = calls.load(Ordering::Relaxed);
    for i in 0..100 {
        svc.clone().oneshot(i).await.unwrap_err();
    }
    let retries = calls.load(Ordering::Relaxed) - before - 100;
    let left = policy.metrics().budget_left.unwrap();
    (retries, left)
}

/// The same scenario against tower's `TpsBudget` with the same settings (10 s, 10 per
/// second, 20%), which dates every deposit with the clock: the reference.
async fn tower_retries_after_history(healthy: u32, gap: Duration) -> u64 {
    use tower::retry::budget::{Budget, TpsBudget};
    let budget = TpsBudget::new(Duration::from_secs(10), 10, 0.2);
    for _ in 0..healthy {
        budget.deposit();
        tokio::time::advance(gap).await;
    }
    let mut retries = 0;
    for _ in 0..100 {
        budget.deposit();
        for _ in 0..2 {
            if !budget.withdraw() {
                break;
            }
            retries += 1;
            tokio::time::advance(Duration::from_millis(1)).await;
        }
    }
    retries
}

#[tokio::test(start_paused = true)]
async fn an_unread_budget_credits_only_the_last_window_of_history() {
    // 100 s of healthy traffic (1000 requests), then an outage. Only the last 10 s of the
    // history earn retries: about 100 requests, 20 retries, plus 20 for the 100 failing
    // requests and the reserve of 100. Crediting the whole history would allow 200.
    let reference = tower_retries_after_history(1000, Duration::from_millis(100)).await;
    assert!((135..=145).contains(&reference), "tower: {reference}");
    for read_every in [0, 1, 10, 100] {
        let (retries, left) =
            retries_after_history(1000, Duration::from_millis(100), read_every).await;
        // Never looser than tower's; stricter by at most the credit of one bucket (tower's
        // window holds up to eleven tenths of its TTL, ours ten) and of 16 requests dated
        // early (see the budget module docs): 0.2 * (10 + 16), 5 retries.
        assert!(
            retries <= reference && retries + 5 >= reference,
            "read every {read_every}: {retries} retries, tower {reference}"
        );
        assert!(left <= 3, "read every {read_every}: {left} left");
    }
}

#[tokio::test(start_paused = true)]
async fn a_budget_read_or_not_holds_the_same_window() {
    // 4000 requests, 20 per second, over 200 s: about 200 in the last window.
    let gap = Duration::from_millis(50);
    let reference = tower_retries_after_history(4000, gap).await;
    assert!((155..=165).contains(&reference), "tower: {reference}");
    let unread = retries_after_history(4000, gap, 0).await.0;
    let read = retries_after_history(4000, gap, 7).await.0;
    // Within 0.2 * (20 + 16), 7 retries, as above.
    assert!(
        unread <= reference && unread + 7 >= reference,
        "{unread} vs tower {reference}"
    );
    assert!(
        read <= reference && read + 7 >= reference,
        "{read} vs tower {reference}"
    );
}
