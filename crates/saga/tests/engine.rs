//! The engine against the memory store: forward, compensation, step kinds, retries, panics,
//! the operator API, idempotent start, deadline, inspection.

mod support;

use std::time::Duration;

use staunch_saga::{
    ListFilter, MemoryStore, Phase, SagaDefinition, SagaEngine, SagaError, SagaEvent, SagaOutcome,
    SagaStatus, Step, StepErrorKind,
};
use support::{Script, calls, fast_retry, linear, scripted, seen, step, trail};

fn engine() -> SagaEngine {
    SagaEngine::new(MemoryStore::new())
}

#[tokio::test(start_paused = true)]
async fn happy_path_runs_every_step_in_order_and_completes() {
    let calls = calls();
    let def = linear("happy", &[Script::Ok, Script::Ok, Script::Ok], &calls);
    let engine = engine();
    let outcome = engine
        .start(&def, "h-1", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let SagaOutcome::Completed(state) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(state.done, ["s0:action", "s1:action", "s2:action"]);
    assert_eq!(seen(&calls), ["s0:action", "s1:action", "s2:action"]);
    let m = engine.metrics();
    assert_eq!((m.started, m.completed, m.compensated), (1, 1, 0));
    tokio::task::yield_now().await;
    assert_eq!(engine.metrics().in_flight, 0);
    assert_eq!(m.step_attempts, 3);
    let timeline = engine.inspect("h-1").await.unwrap().unwrap();
    assert_eq!(timeline.summary.status, SagaStatus::Completed);
    assert!(matches!(
        timeline.entries[0].event,
        Ok(SagaEvent::Started { .. })
    ));
    assert!(matches!(
        timeline.entries.last().unwrap().event,
        Ok(SagaEvent::Completed)
    ));
    assert_eq!(timeline.entries.len(), 8);
}

#[tokio::test(start_paused = true)]
async fn failure_at_each_position_compensates_exactly_the_completed_steps_in_reverse() {
    for n in 1..=4usize {
        for fail_at in 0..n {
            let calls = calls();
            let actions: Vec<Script> = (0..n)
                .map(|i| {
                    if i == fail_at {
                        Script::Fail
                    } else {
                        Script::Ok
                    }
                })
                .collect();
            let def = linear(&format!("pos-{n}-{fail_at}"), &actions, &calls);
            let engine = engine();
            let outcome = engine
                .start(&def, format!("p-{n}-{fail_at}"), trail())
                .await
                .unwrap()
                .outcome()
                .await
                .unwrap();
            let SagaOutcome::Compensated {
                failed_step,
                error,
                state,
            } = outcome
            else {
                panic!("{outcome:?}")
            };
            assert_eq!(failed_step, format!("s{fail_at}"));
            assert!(error.contains("declined"), "{error}");
            let mut expected: Vec<String> = (0..=fail_at).map(|i| format!("s{i}:action")).collect();
            expected.extend((0..fail_at).rev().map(|i| format!("s{i}:compensate")));
            assert_eq!(seen(&calls), expected, "n={n} fail_at={fail_at}");
            // Compensations see (and may update) the current state.
            assert_eq!(state.done.len(), 2 * fail_at);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn steps_without_compensation_are_skipped_during_rollback() {
    let calls = calls();
    let def = SagaDefinition::builder("nocomp", 1)
        .step(step("a", Script::Ok, Some(Script::Ok), &calls))
        .step(step("b", Script::Ok, None, &calls))
        .step(step("c", Script::Fail, Some(Script::Ok), &calls))
        .build()
        .unwrap();
    let outcome = engine()
        .start(&def, "n", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(outcome, SagaOutcome::Compensated { .. }));
    assert_eq!(
        seen(&calls),
        ["a:action", "b:action", "c:action", "a:compensate"]
    );
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_the_backoff_delays() {
    let calls = calls();
    let def = SagaDefinition::builder("retry", 1)
        .step(step(
            "flaky",
            Script::RetryThen(2),
            Some(Script::Ok),
            &calls,
        ))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let outcome = engine()
        .start(&def, "r", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(outcome, SagaOutcome::Completed(_)));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Constant 10 ms backoff, no jitter, paused clock: attempts are exactly 10 ms apart.
    assert_eq!(calls[0].at - start, Duration::ZERO);
    assert_eq!(calls[1].at - calls[0].at, Duration::from_millis(10));
    assert_eq!(calls[2].at - calls[1].at, Duration::from_millis(10));
    // Same idempotency key on every attempt.
    assert!(calls.iter().all(|c| c.key == "r:flaky:action"));
}

#[tokio::test(start_paused = true)]
async fn retries_exhausted_compensate_and_business_failures_are_not_retried() {
    let calls = calls();
    let def = SagaDefinition::builder("exhaust", 1)
        .step(step("a", Script::Ok, Some(Script::Ok), &calls))
        .step(step("b", Script::AlwaysRetry, Some(Script::Ok), &calls))
        .build()
        .unwrap();
    let outcome = engine()
        .start(&def, "e", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(
        matches!(outcome, SagaOutcome::Compensated { ref failed_step, .. } if failed_step == "b")
    );
    assert_eq!(
        seen(&calls),
        [
            "a:action",
            "b:action",
            "b:action",
            "b:action",
            "a:compensate"
        ]
    );

    let calls2 = support::calls();
    let def = linear("biz", &[Script::Ok, Script::Fail], &calls2);
    engine()
        .start(&def, "b", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert_eq!(seen(&calls2), ["s0:action", "s1:action", "s0:compensate"]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_step_is_a_failure_of_that_step_not_of_the_engine() {
    let calls = calls();
    let def = linear("panic", &[Script::Ok, Script::Panic, Script::Ok], &calls);
    let engine = engine();
    let outcome = engine
        .start(&def, "pa", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let SagaOutcome::Compensated {
        failed_step, error, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed_step, "s1");
    assert!(error.contains("exploded"), "{error}");
    assert_eq!(seen(&calls), ["s0:action", "s1:action", "s0:compensate"]);
    let timeline = engine.inspect("pa").await.unwrap().unwrap();
    assert!(timeline.entries.iter().any(|e| matches!(
        e.event,
        Ok(SagaEvent::StepFailed {
            kind: StepErrorKind::Panicked,
            ..
        })
    )));
    // The engine still runs other sagas.
    let ok = linear("after-panic", &[Script::Ok], &support::calls());
    let o = engine
        .start(&ok, "pa-2", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Completed(_)));
}

#[tokio::test(start_paused = true)]
async fn per_attempt_timeout_cancels_a_hanging_attempt_and_compensates_it_as_in_doubt() {
    let calls = calls();
    let (hang, _) = scripted("slow", Phase::Action, Script::Hang, &calls);
    let (undo, _) = scripted("slow", Phase::Compensate, Script::Ok, &calls);
    let def = SagaDefinition::builder("timeout", 1)
        .step(step("a", Script::Ok, Some(Script::Ok), &calls))
        .step(
            Step::new("slow", hang)
                .compensate(undo)
                .retry(fast_retry(2).timeout(Duration::from_millis(50))),
        )
        .build()
        .unwrap();
    let outcome = engine()
        .start(&def, "t", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(
        matches!(outcome, SagaOutcome::Compensated { ref error, .. } if error.contains("timed out"))
    );
    // The timed-out step's effect is unknown, so it is compensated too, before `a`.
    assert_eq!(
        seen(&calls),
        [
            "a:action",
            "slow:action",
            "slow:action",
            "slow:compensate",
            "a:compensate"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn after_the_pivot_the_saga_only_moves_forward() {
    let calls = calls();
    let (ship, _) = scripted("ship", Phase::Action, Script::RetryThen(5), &calls);
    let def = SagaDefinition::builder("pivot", 1)
        .step(step("reserve", Script::Ok, Some(Script::Ok), &calls))
        .step(step("charge", Script::Ok, None, &calls).pivot())
        .step(Step::new("ship", ship).retriable().retry(fast_retry(10)))
        .build()
        .unwrap();
    let outcome = engine()
        .start(&def, "pv", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
    let s = seen(&calls);
    assert_eq!(s.iter().filter(|c| *c == "ship:action").count(), 6);
    assert!(!s.iter().any(|c| c.ends_with("compensate")));
}

#[tokio::test(start_paused = true)]
async fn a_failing_pivot_compensates_the_steps_before_it() {
    let calls = calls();
    let def = SagaDefinition::builder("pivot-fail", 1)
        .step(step("reserve", Script::Ok, Some(Script::Ok), &calls))
        .step(step("charge", Script::Fail, None, &calls).pivot())
        .step(step("ship", Script::Ok, None, &calls).retriable())
        .build()
        .unwrap();
    let outcome = engine()
        .start(&def, "pf", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(
        matches!(outcome, SagaOutcome::Compensated { ref failed_step, .. } if failed_step == "charge")
    );
    assert_eq!(
        seen(&calls),
        ["reserve:action", "charge:action", "reserve:compensate"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_retriable_step_retries_business_failures_and_goes_stuck_after_the_pivot_when_capped() {
    let calls = calls();
    let def = SagaDefinition::builder("retriable-stuck", 1)
        .step(step("charge", Script::Ok, None, &calls).pivot())
        .step(
            step("ship", Script::Fail, None, &calls)
                .retriable()
                .retry(fast_retry(4)),
        )
        .build()
        .unwrap();
    let engine = engine();
    let outcome = engine
        .start(&def, "rs", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let SagaOutcome::Stuck { step, phase, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((step.as_str(), phase), ("ship", Phase::Action));
    assert_eq!(
        seen(&calls).iter().filter(|c| *c == "ship:action").count(),
        4
    );
    // Operator skips the forward step: the saga completes.
    let o = engine
        .skip_stuck(&def, "rs", "ops")
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Completed(_)), "{o:?}");
}

#[tokio::test(start_paused = true)]
async fn compensation_failure_makes_the_saga_stuck_then_operator_retry_finishes_it() {
    let calls = calls();
    let (refund, switch) = scripted("charge", Phase::Compensate, Script::AlwaysRetry, &calls);
    let (charge, _) = scripted("charge", Phase::Action, Script::Ok, &calls);
    let def = SagaDefinition::builder("refund", 1)
        .step(step("reserve", Script::Ok, Some(Script::Ok), &calls))
        .step(
            Step::new("charge", charge)
                .compensate(refund)
                .compensation_retry(fast_retry(2)),
        )
        .step(step("ship", Script::Fail, None, &calls))
        .build()
        .unwrap();
    let engine = engine();
    engine.register(&def).unwrap();
    let outcome = engine
        .start(&def, "st", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let SagaOutcome::Stuck { step, phase, error } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((step.as_str(), phase), ("charge", Phase::Compensate));
    assert!(error.contains("unavailable"));
    let stuck = engine.stuck().await.unwrap();
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].saga_id, "st");
    assert_eq!(stuck[0].status, SagaStatus::Stuck);
    assert_eq!(engine.metrics().stuck, 1);
    // reserve was not compensated yet: compensation stops at the stuck step.
    assert!(!seen(&calls).contains(&"reserve:compensate".to_owned()));

    *switch.lock().unwrap() = Script::Ok;
    let o = engine
        .retry_stuck(&def, "st", "ops")
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Compensated { ref failed_step, .. } if failed_step == "ship"));
    let s = seen(&calls);
    assert_eq!(
        &s[s.len() - 2..],
        ["charge:compensate", "reserve:compensate"]
    );
    let refund_calls: Vec<_> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.phase == Phase::Compensate && c.step == "charge")
        .map(|c| (c.key.clone(), c.attempt))
        .collect();
    // Same key on every attempt, attempts keep counting across the operator retry.
    assert_eq!(
        refund_calls,
        [
            ("st:charge:compensate".to_owned(), 1),
            ("st:charge:compensate".to_owned(), 2),
            ("st:charge:compensate".to_owned(), 3)
        ]
    );
    let timeline = engine.inspect("st").await.unwrap().unwrap();
    assert!(
        timeline
            .entries
            .iter()
            .any(|e| matches!(e.event, Ok(SagaEvent::OperatorRetried { step: 1, ref actor }) if actor == "ops"))
    );
    assert!(engine.stuck().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn operator_skip_continues_compensation_and_resolve_ends_the_saga() {
    let calls = calls();
    let def = SagaDefinition::builder("skip", 1)
        .step(step("reserve", Script::Ok, Some(Script::Ok), &calls))
        .step(step("charge", Script::Ok, Some(Script::Fail), &calls))
        .step(step("ship", Script::Fail, None, &calls))
        .build()
        .unwrap();
    let engine = engine();
    let o = engine
        .start(&def, "sk", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Stuck { .. }));
    // A business failure in a compensation is not retried.
    assert_eq!(
        seen(&calls)
            .iter()
            .filter(|c| *c == "charge:compensate")
            .count(),
        1
    );
    let o = engine
        .skip_stuck(&def, "sk", "ops")
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Compensated { .. }));
    assert_eq!(seen(&calls).last().unwrap(), "reserve:compensate");
    assert!(matches!(
        engine.skip_stuck(&def, "sk", "ops").await,
        Err(SagaError::NotStuck {
            status: SagaStatus::Compensated,
            ..
        })
    ));

    let o = engine
        .start(&def, "rv", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Stuck { .. }));
    engine
        .resolve("rv", "refunded by hand, ticket 42", "alice")
        .await
        .unwrap();
    let summary = &engine
        .list(&ListFilter::status(SagaStatus::Resolved))
        .await
        .unwrap()[0];
    assert_eq!(summary.saga_id, "rv");
    assert_eq!(summary.note.as_deref(), Some("refunded by hand, ticket 42"));
    let timeline = engine.inspect("rv").await.unwrap().unwrap();
    assert!(timeline.entries.iter().any(|e| matches!(
        e.event,
        Ok(SagaEvent::OperatorResolved { ref actor, .. }) if actor == "alice"
    )));
    // Starting a resolved saga again returns its outcome, it does not run again.
    let o = engine
        .start(&def, "rv", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Resolved { ref note } if note.contains("42")));
    assert_eq!(engine.metrics().resolved, 1);
}

#[tokio::test(start_paused = true)]
async fn start_is_idempotent_on_the_saga_id() {
    let calls = calls();
    let def = linear("idem", &[Script::Ok, Script::Ok], &calls);
    let engine = engine();
    let h1 = engine.start(&def, "same", trail()).await.unwrap();
    let h2 = engine.start(&def, "same", trail()).await.unwrap();
    let (a, b) = (h1.outcome().await.unwrap(), h2.outcome().await.unwrap());
    assert_eq!(a, b);
    let h3 = engine.start(&def, "same", trail()).await.unwrap();
    assert_eq!(h3.outcome().await.unwrap(), a);
    assert_eq!(seen(&calls), ["s0:action", "s1:action"]);
    assert_eq!(engine.metrics().started, 1);
    let other = linear("other-def", &[Script::Ok], &calls);
    assert!(matches!(
        engine.start(&other, "same", trail()).await,
        Err(SagaError::DefinitionMismatch { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn the_saga_deadline_starts_compensation() {
    let calls = calls();
    let (hang, _) = scripted("wait", Phase::Action, Script::Hang, &calls);
    let def = SagaDefinition::builder("deadline", 1)
        .step(step("a", Script::Ok, Some(Script::Ok), &calls))
        .step(Step::new("wait", hang))
        .deadline(Duration::from_secs(30))
        .build()
        .unwrap();
    let engine = engine();
    let start = tokio::time::Instant::now();
    let handle = engine.start(&def, "d", trail()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(engine.metrics().in_flight, 1);
    let o = handle.outcome().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    let SagaOutcome::Compensated {
        failed_step, error, ..
    } = o
    else {
        panic!("{o:?}")
    };
    assert_eq!(failed_step, "wait");
    assert!(error.contains("deadline"), "{error}");
    assert_eq!(seen(&calls).last().unwrap(), "a:compensate");
}

#[tokio::test(start_paused = true)]
async fn list_filters_by_status_and_definition() {
    let calls = calls();
    let ok = linear("list-ok", &[Script::Ok], &calls);
    let bad = linear("list-bad", &[Script::Fail], &calls);
    let engine = engine();
    for i in 0..3 {
        engine
            .start(&ok, format!("ok-{i}"), trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
    }
    engine
        .start(&bad, "bad-0", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let completed = engine
        .list(&ListFilter::status(SagaStatus::Completed))
        .await
        .unwrap();
    assert_eq!(
        completed
            .iter()
            .map(|s| s.saga_id.as_str())
            .collect::<Vec<_>>(),
        ["ok-0", "ok-1", "ok-2"]
    );
    let bad_list = engine
        .list(&ListFilter::all().definition("list-bad"))
        .await
        .unwrap();
    assert_eq!(bad_list.len(), 1);
    assert_eq!(bad_list[0].status, SagaStatus::Compensated);
    assert_eq!(
        engine
            .list(&ListFilter::all().limit(2))
            .await
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn invalid_definitions_are_config_errors_naming_the_field() {
    let c = calls();
    let e = SagaDefinition::<support::Trail>::builder("empty", 1)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "saga.empty.steps");
    let e = SagaDefinition::builder("dup", 1)
        .step(step("a", Script::Ok, None, &c))
        .step(step("a", Script::Ok, None, &c))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "saga.dup.steps[1].name");
    let e = SagaDefinition::builder("after-pivot", 1)
        .step(step("p", Script::Ok, None, &c).pivot())
        .step(step("x", Script::Ok, None, &c))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "saga.after-pivot.steps[1].kind");
    let e = SagaDefinition::builder("pivot-comp", 1)
        .step(step("p", Script::Ok, Some(Script::Ok), &c).pivot())
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "saga.pivot-comp.steps[0].compensation");
    let e = SagaDefinition::builder("zero", 1)
        .step(step("a", Script::Ok, None, &c).retry(staunch_saga::StepRetry::new(0)))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "saga.zero.steps[0].retry.max_attempts");
    let e = SagaDefinition::builder("colon", 1)
        .step(step("a:b", Script::Ok, None, &c))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "saga.colon.steps[0].name");
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SagaEngine>();
    check::<SagaDefinition<support::Trail>>();
    check::<staunch_saga::SagaHandle<support::Trail>>();
    check::<MemoryStore>();
    #[cfg(feature = "sqlite")]
    check::<staunch_saga::SqliteStore>();
    #[cfg(feature = "postgres")]
    check::<staunch_saga::PostgresStore>();
    #[cfg(feature = "postgres")]
    check::<staunch_saga::PostgresStoreBuilder>();
    check::<staunch_saga::ParallelGroup<support::Trail>>();
    check::<staunch_saga::RecoveryLoop>();
    check::<SagaError>();
    check::<staunch_saga::StepContext>();
    check::<SagaOutcome<support::Trail>>();
}

/// A memory store whose next `create` never finishes (a store stalled mid-write).
#[derive(Debug, Clone, Default)]
struct StallingStore {
    inner: MemoryStore,
    stall_next_create: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl staunch_saga::SagaStore for StallingStore {
    fn create(
        &self,
        saga: staunch_saga::NewSaga,
    ) -> futures_util::future::BoxFuture<'_, Result<staunch_saga::Created, staunch_saga::StoreError>>
    {
        if self
            .stall_next_create
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Box::pin(std::future::pending());
        }
        self.inner.create(saga)
    }
    fn append(
        &self,
        append: staunch_saga::Append,
    ) -> futures_util::future::BoxFuture<'_, Result<(), staunch_saga::StoreError>> {
        self.inner.append(append)
    }
    fn load<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Option<staunch_saga::SagaLog>, staunch_saga::StoreError>,
    > {
        self.inner.load(saga_id)
    }
    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Vec<staunch_saga::SagaSummary>, staunch_saga::StoreError>,
    > {
        self.inner.list(filter)
    }
    fn quarantine<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), staunch_saga::StoreError>> {
        self.inner.quarantine(saga_id, reason)
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_start_leaves_nothing_behind_and_can_be_repeated() {
    let calls = calls();
    let def = linear("cancel", &[Script::Ok], &calls);
    let store = StallingStore::default();
    store
        .stall_next_create
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let engine = SagaEngine::new(store.clone());
    let cancelled =
        tokio::time::timeout(Duration::from_secs(1), engine.start(&def, "c", trail())).await;
    assert!(cancelled.is_err(), "the stalled start should time out");
    assert!(seen(&calls).is_empty());
    // The dropped start released its claim on the id: a new start runs the saga.
    let handle = engine.start(&def, "c", trail()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), handle.outcome())
        .await
        .expect("the saga runs instead of waiting on a stale claim")
        .unwrap();
    assert!(matches!(outcome, SagaOutcome::Completed(_)));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_does_not_stop_the_saga() {
    let calls = calls();
    let def = linear("detached", &[Script::RetryThen(1), Script::Ok], &calls);
    let engine = engine();
    drop(engine.start(&def, "dh", trail()).await.unwrap());
    while engine
        .list(&ListFilter::status(SagaStatus::Completed))
        .await
        .unwrap()
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen(&calls), ["s0:action", "s0:action", "s1:action"]);
}

#[tokio::test(start_paused = true)]
async fn every_transition_is_in_the_store_before_the_next_call_starts() {
    use staunch_saga::SagaStore;
    let store = MemoryStore::new();
    let probe = |store: MemoryStore, step: u32| {
        move |t: support::Trail, ctx: staunch_saga::StepContext| {
            let store = store.clone();
            async move {
                let log = store.load(ctx.saga_id()).await.unwrap().unwrap();
                let events: Vec<SagaEvent> = log
                    .events
                    .iter()
                    .map(|e| SagaEvent::decode(e.seq, &e.payload).unwrap())
                    .collect();
                // This attempt's start is durable, and so is the previous step's result.
                assert!(
                    matches!(
                        events.last(),
                        Some(SagaEvent::StepStarted { step: s, attempt }) if *s == step && *attempt == ctx.attempt()
                    ),
                    "{events:?}"
                );
                if step > 0 {
                    assert!(events.iter().any(
                        |e| matches!(e, SagaEvent::StepCompleted { step: s, .. } if *s == step - 1)
                    ));
                }
                Ok(t)
            }
        }
    };
    let def = SagaDefinition::builder("durable-order", 1)
        .step(Step::new("a", probe(store.clone(), 0)))
        .step(Step::new("b", probe(store.clone(), 1)))
        .step(Step::new("c", probe(store.clone(), 2)))
        .build()
        .unwrap();
    let engine = SagaEngine::new(store.clone());
    let o = engine
        .start(&def, "dur", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Completed(_)), "{o:?}");
    let log = store.load("dur").await.unwrap().unwrap();
    assert_eq!(log.summary.status, SagaStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn starting_a_running_id_with_another_definition_is_refused() {
    let calls = calls();
    let (hang, _) = scripted("slow", Phase::Action, Script::Hang, &calls);
    let slow = SagaDefinition::builder("slow", 1)
        .step(Step::new("slow", hang))
        .build()
        .unwrap();
    let other = linear("other", &[Script::Ok], &calls);
    let engine = engine();
    let _running = engine.start(&slow, "busy", trail()).await.unwrap();
    assert!(matches!(
        engine.start(&other, "busy", trail()).await,
        Err(SagaError::DefinitionMismatch { ref definition, version: 1, .. }) if definition == "slow"
    ));
    // The same definition gets the running saga's handle.
    assert!(engine.start(&slow, "busy", trail()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_retriable_step_without_a_policy_has_no_attempt_limit() {
    let calls = calls();
    let (ship, _) = scripted("ship", Phase::Action, Script::RetryThen(25), &calls);
    let def = SagaDefinition::builder("unlimited", 1)
        .step(step("charge", Script::Ok, None, &calls).pivot())
        .step(Step::new("ship", ship).retriable())
        .build()
        .unwrap();
    let o = engine()
        .start(&def, "u", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Completed(_)), "{o:?}");
    assert_eq!(
        seen(&calls).iter().filter(|c| *c == "ship:action").count(),
        26
    );
}

#[test]
#[allow(deprecated)]
fn the_former_retry_policy_name_is_a_deprecated_alias_of_step_retry() {
    let policy: staunch_saga::RetryPolicy = staunch_saga::StepRetry::new(2);
    assert_eq!(policy.max_attempts(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn registering_another_shape_under_the_same_name_and_version_is_refused() {
    let calls = calls();
    let engine = engine();
    let two = linear("reg", &[Script::Ok, Script::Ok], &calls);
    engine.register(&two).unwrap();
    // The same definition again, or one rebuilt with the same shape, replaces it.
    engine.register(&two).unwrap();
    engine
        .register(&linear("reg", &[Script::Ok, Script::Ok], &calls))
        .unwrap();
    // A step more, under the same version: refused, naming the difference.
    let three = linear("reg", &[Script::Ok, Script::Ok, Script::Ok], &calls);
    let err = engine.register(&three).unwrap_err();
    let SagaError::DefinitionConflict {
        definition,
        version,
        difference,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((definition.as_str(), *version), ("reg", 1));
    assert!(difference.contains("not 3"), "{difference}");
    // A renamed step, and another state type, are refused too.
    let renamed = SagaDefinition::builder("reg", 1)
        .step(step("s0", Script::Ok, Some(Script::Ok), &calls))
        .step(step("other", Script::Ok, Some(Script::Ok), &calls))
        .build()
        .unwrap();
    assert!(matches!(
        engine.register(&renamed),
        Err(SagaError::DefinitionConflict { ref difference, .. }) if difference.contains("other")
    ));
    let typed = SagaDefinition::<u32>::builder("reg", 1)
        .step(Step::new("s0", |n: u32, _| async move { Ok(n) }))
        .step(Step::new("s1", |n: u32, _| async move { Ok(n) }))
        .build()
        .unwrap();
    assert!(matches!(
        engine.register(&typed),
        Err(SagaError::DefinitionConflict { ref difference, .. }) if difference.contains("u32")
    ));
    // `start` refuses a conflicting definition as well, and writes nothing.
    assert!(matches!(
        engine.start(&three, "reg-1", trail()).await,
        Err(SagaError::DefinitionConflict { .. })
    ));
    assert!(engine.inspect("reg-1").await.unwrap().is_none());
    // A new version is fine.
    let three_v2 = SagaDefinition::builder("reg", 2)
        .step(step("s0", Script::Ok, Some(Script::Ok), &calls))
        .build()
        .unwrap();
    engine.register(&three_v2).unwrap();
}

#[tokio::test(start_paused = true)]
async fn operator_actions_record_who_acted_and_check_the_definition() {
    let calls = calls();
    let def = linear("who", &[Script::Ok, Script::Fail], &calls);
    let engine = engine();
    let outcome = engine
        .start(&def, "who-1", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    // A business failure with a compensation that succeeds: compensated, not stuck.
    assert!(
        matches!(outcome, SagaOutcome::Compensated { .. }),
        "{outcome:?}"
    );
    let other = linear("not-who", &[Script::Ok], &calls);
    assert!(matches!(
        engine.retry_stuck(&other, "who-1", "bob").await,
        Err(SagaError::DefinitionMismatch { .. })
    ));
    assert!(matches!(
        engine.skip_stuck(&def, "who-1", "bob").await,
        Err(SagaError::NotStuck { .. })
    ));
    assert!(matches!(
        engine.resolve("nobody", "n", "bob").await,
        Err(SagaError::NotFound(_))
    ));
}
