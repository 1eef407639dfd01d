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
    assert!(
        err.to_string()
            .starts_with("gave up after 1 attempt (retry budget exhausted): "),
        "{err}"
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
