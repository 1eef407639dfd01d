//! Model-based property test of the retry state machine: for any sequence of attempt
//! outcomes, the layer makes exactly the attempts a tiny reference model makes, spaced by the
//! backoff, and returns the outcome of the last one, annotated exactly when retries ran out.
//! Attempts finish at once or after a wait (pending on their first poll), with or without a
//! per-attempt timer armed, so the first attempt's fast path and its hand-over to the timed
//! path are both covered.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use staunch_core::BreakerOpen;
use staunch_retry::{GiveUpReason, RetryLayer};
use support::{BoxError, gave_up, is_annotated, policy, reasons, response_gave_up};
use tower::{Layer, ServiceExt};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Ok,
    Unavailable,    // 503: retryable response
    NotFound,       // 404: final response
    ConnectRefused, // retryable error
    BadInput,       // final error
    Rejected,       // breaker open: never retried
}

impl Outcome {
    fn retryable(self) -> bool {
        matches!(self, Outcome::Unavailable | Outcome::ConnectRefused)
    }
}

/// The reference model: attempts made before the call returns (the last scripted outcome
/// repeats when the script runs out).
fn model(outcomes: &[Outcome], max_attempts: usize) -> usize {
    let last = outcomes[outcomes.len() - 1];
    let mut made = 0;
    for o in outcomes
        .iter()
        .chain(std::iter::repeat(&last))
        .take(max_attempts)
    {
        made += 1;
        if !o.retryable() {
            break;
        }
    }
    made
}

proptest! {
    #[test]
    fn attempts_match_the_model(
        outcomes in proptest::collection::vec(
            prop_oneof![
                Just(Outcome::Ok),
                Just(Outcome::Unavailable),
                Just(Outcome::NotFound),
                Just(Outcome::ConnectRefused),
                Just(Outcome::BadInput),
                Just(Outcome::Rejected),
            ],
            1..8,
        ),
        waits in proptest::collection::vec(any::<bool>(), 8),
        timed in any::<bool>(),
        max_attempts in 1u32..6,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let expected = model(&outcomes, max_attempts as usize);
        // The last scripted outcome repeats when the script runs out.
        let last = *outcomes.last().unwrap();
        rt.block_on(async move {
            let r = reasons();
            let mut policy = policy(&r).max_attempts(max_attempts);
            if timed {
                // Longer than any attempt's wait: armed, never firing.
                policy = policy.attempt_timeout(Duration::from_secs(1));
            }
            let policy = policy.build().unwrap();
            // Attempt `i` waits `WAIT` before answering when `waits[i]` (the last entry
            // repeats), and answers on its first poll otherwise.
            const WAIT: Duration = Duration::from_millis(10);
            let waits = Arc::new(waits);
            let script = Arc::new(Mutex::new(outcomes.iter().copied().collect::<VecDeque<_>>()));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (s, log, w) = (Arc::clone(&script), Arc::clone(&seen), Arc::clone(&waits));
            let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: http::Request<String>| {
                let o = s.lock().unwrap().pop_front().unwrap_or(last);
                let mut log = log.lock().unwrap();
                let wait = w[log.len().min(w.len() - 1)];
                log.push(o);
                async move {
                    if wait {
                        tokio::time::sleep(WAIT).await;
                    }
                    let status = match o {
                        Outcome::Ok => 200,
                        Outcome::Unavailable => 503,
                        Outcome::NotFound => 404,
                        Outcome::ConnectRefused => {
                            return Err::<http::Response<()>, BoxError>(
                                std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
                            );
                        }
                        Outcome::BadInput => return Err("bad input".into()),
                        Outcome::Rejected => {
                            return Err(Box::new(BreakerOpen::new(Arc::from("dep"), None)));
                        }
                    };
                    Ok(support::response(status, &[]))
                }
            }));
            let start = tokio::time::Instant::now();
            let result = svc.oneshot(support::get()).await;
            let seen = seen.lock().unwrap().clone();
            prop_assert_eq!(seen.len(), expected);
            // Constant 100 ms backoff between attempts, plus the attempts' own waits.
            let waited = (0..expected).filter(|&i| waits[i.min(waits.len() - 1)]).count() as u32;
            prop_assert_eq!(
                start.elapsed(),
                Duration::from_millis(100) * (expected as u32 - 1) + WAIT * waited
            );
            let final_outcome = *seen.last().unwrap();
            // Annotated when the last outcome was still retryable and retries were made
            // (the budget is unlimited: only `max_attempts` ends them).
            let exhausted = final_outcome.retryable() && expected > 1;
            let annotation = exhausted.then_some((expected as u32, GiveUpReason::MaxAttempts));
            match (final_outcome, result) {
                (Outcome::Ok, Ok(res)) => {
                    prop_assert_eq!(res.status(), 200);
                    prop_assert_eq!(response_gave_up(&res), None);
                }
                (Outcome::Unavailable, Ok(res)) => {
                    prop_assert_eq!(res.status(), 503);
                    prop_assert_eq!(response_gave_up(&res), annotation);
                }
                (Outcome::NotFound, Ok(res)) => {
                    prop_assert_eq!(res.status(), 404);
                    prop_assert_eq!(response_gave_up(&res), None);
                }
                (Outcome::ConnectRefused, Err(e)) => {
                    if exhausted {
                        let (got, last) = gave_up(&e);
                        prop_assert_eq!(Some(got), annotation);
                        prop_assert!(last.is::<std::io::Error>());
                    } else {
                        prop_assert!(e.is::<std::io::Error>());
                    }
                }
                (Outcome::BadInput, Err(e)) => prop_assert_eq!(e.to_string(), "bad input"),
                (Outcome::Rejected, Err(e)) => {
                    prop_assert!(e.is::<BreakerOpen>());
                    prop_assert!(!is_annotated(&e));
                }
                (o, r) => prop_assert!(false, "outcome {:?} returned {:?}", o, r.map(|r| r.status())),
            }
            Ok(())
        })?;
    }
}
