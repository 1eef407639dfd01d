//! Cancel, pause and resume, and backoffs that survive a restart: on the memory store under
//! paused time, on a real SQLite file across engines, and (with
//! `STAUNCH_TEST_POSTGRES_URL`) across two PostgreSQL instances.

mod support;

use std::sync::Arc;
use std::time::Duration;

use staunch_core::{Backoff, Jitter};
use staunch_saga::{
    LifecycleAction, MemoryStore, NewSaga, Phase, Refusal, SagaDefinition, SagaEngine, SagaError,
    SagaEvent, SagaOutcome, SagaStatus, SagaStore, Step, StepRetry,
};
#[cfg_attr(not(feature = "sqlite"), allow(unused_imports))]
use support::{Calls, Script, TempDir, Trail, calls, seen, step, trail};
use tokio::sync::Semaphore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A step whose action waits for a permit of `gate` before it succeeds; each call recorded.
fn gated(name: &str, gate: &Arc<Semaphore>, calls: &Calls) -> Step<Trail> {
    let gate = Arc::clone(gate);
    let (record, _) = support::scripted(name, Phase::Action, Script::Ok, calls);
    let record = Arc::new(record);
    let (comp, _) = support::scripted(name, Phase::Compensate, Script::Ok, calls);
    Step::new(name, move |t: Trail, ctx| {
        let gate = Arc::clone(&gate);
        let record = Arc::clone(&record);
        async move {
            gate.acquire().await.unwrap().forget();
            record(t, ctx).await
        }
    })
    .compensate(comp)
}

/// `s0` (done at once), `s1` (waits for the gate), `s2`: every step compensatable.
fn three_steps(name: &str, gate: &Arc<Semaphore>, calls: &Calls) -> SagaDefinition<Trail> {
    SagaDefinition::builder(name, 1)
        .step(step("s0", Script::Ok, Some(Script::Ok), calls))
        .step(gated("s1", gate, calls))
        .step(step("s2", Script::Ok, Some(Script::Ok), calls))
        .build()
        .unwrap()
}

/// Lets the runtime run everything that is ready (paused time: no timer fires).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

fn refusal(result: Result<(), SagaError>) -> (LifecycleAction, Refusal) {
    match result {
        Err(SagaError::Refused { action, reason, .. }) => (action, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn events(engine: &SagaEngine, id: &str) -> Vec<SagaEvent> {
    engine
        .inspect(id)
        .await
        .unwrap()
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.event.unwrap())
        .collect()
}

#[test]
fn a_cancel_lets_the_step_in_flight_finish_then_compensates_in_reverse_and_ends_cancelled() {
    runtime().block_on(async {
        let calls = calls();
        let gate = Arc::new(Semaphore::new(0));
        let def = three_steps("order", &gate, &calls);
        let engine = SagaEngine::new(MemoryStore::new());
        let handle = engine.start(&def, "o-1", trail()).await.unwrap();
        settle().await;
        assert_eq!(seen(&calls), ["s0:action"]);
        engine
            .cancel("o-1", "customer changed their mind", "support:ana")
            .await
            .unwrap();
        // The step in flight is not interrupted: it finishes, and is compensated too.
        gate.add_permits(1);
        let outcome = handle.outcome().await.unwrap();
        let SagaOutcome::Cancelled { reason, state } = outcome else {
            panic!("expected cancelled, got {outcome:?}");
        };
        assert_eq!(reason, "customer changed their mind");
        assert_eq!(
            state.done,
            ["s0:action", "s1:action", "s1:compensate", "s0:compensate"]
        );
        assert_eq!(
            seen(&calls),
            ["s0:action", "s1:action", "s1:compensate", "s0:compensate"]
        );
        let summary = &engine
            .list(&staunch_saga::ListFilter::default())
            .await
            .unwrap()[0];
        assert_eq!(summary.status, SagaStatus::Cancelled);
        let log = events(&engine, "o-1").await;
        assert!(log.iter().any(|e| matches!(e,
            SagaEvent::CancelBegan { reason, actor }
                if reason == "customer changed their mind" && actor == "support:ana")));
        assert!(matches!(log.last(), Some(SagaEvent::Cancelled { .. })));
        assert_eq!(engine.metrics().cancelled, 1);
        assert_eq!(engine.metrics().compensated, 0);
        // The handle by id gives the same outcome afterwards.
        let again = engine.outcome(&def, "o-1").await.unwrap();
        assert!(matches!(again, SagaOutcome::Cancelled { .. }), "{again:?}");
        // Cancelled is final.
        let (action, reason) = refusal(engine.cancel("o-1", "again", "ops").await);
        assert_eq!(action, LifecycleAction::Cancel);
        assert_eq!(reason, Refusal::Finished(SagaStatus::Cancelled));
    });
}

#[test]
fn a_cancel_stops_a_retry_waiting_out_its_backoff_at_once() {
    runtime().block_on(async {
        let calls = calls();
        let slow = StepRetry::new(10).backoff(
            Backoff::constant(Duration::from_mins(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        );
        let (flaky, _) = support::scripted("s1", Phase::Action, Script::AlwaysRetry, &calls);
        let def = SagaDefinition::builder("flaky", 1)
            .step(step("s0", Script::Ok, Some(Script::Ok), &calls))
            .step(Step::new("s1", flaky).retry(slow))
            .build()
            .unwrap();
        let engine = SagaEngine::new(MemoryStore::new());
        let started = tokio::time::Instant::now();
        let handle = engine.start(&def, "f-1", trail()).await.unwrap();
        settle().await;
        engine
            .cancel("f-1", "dependency down", "ops")
            .await
            .unwrap();
        let outcome = handle.outcome().await.unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Cancelled { .. }),
            "{outcome:?}"
        );
        // No 10-minute wait: the backoff was cut short by the cancel.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(seen(&calls), ["s0:action", "s1:action", "s0:compensate"]);
    });
}

#[test]
fn cancel_pause_and_resume_refuse_what_does_not_apply_with_typed_errors() {
    runtime().block_on(async {
        let calls = calls();
        let gate = Arc::new(Semaphore::new(0));
        let pivoted = SagaDefinition::builder("pivoted", 1)
            .step(step("charge", Script::Ok, None, &calls).pivot())
            .step(gated("ship", &gate, &calls).retriable())
            .build()
            .unwrap();
        let engine = SagaEngine::new(MemoryStore::new());
        // Unknown sagas.
        assert!(matches!(
            engine.cancel("nope", "r", "a").await,
            Err(SagaError::NotFound(_))
        ));
        assert!(matches!(
            engine.pause("nope", "a").await,
            Err(SagaError::NotFound(_))
        ));
        assert!(matches!(
            engine.resume("nope", "a").await,
            Err(SagaError::NotFound(_))
        ));
        // Past the pivot, a saga only goes forward.
        let handle = engine.start(&pivoted, "p-1", trail()).await.unwrap();
        settle().await;
        let (_, reason) = refusal(engine.cancel("p-1", "too late", "ops").await);
        assert_eq!(
            reason,
            Refusal::PivotPassed {
                step: "charge".into()
            }
        );
        // Resume of a saga that is not paused.
        let (action, reason) = refusal(engine.resume("p-1", "ops").await);
        assert_eq!(action, LifecycleAction::Resume);
        assert_eq!(reason, Refusal::NotPaused(SagaStatus::Running));
        // A pause asked twice.
        engine.pause("p-1", "ops").await.unwrap();
        let (_, reason) = refusal(engine.pause("p-1", "ops").await);
        assert_eq!(reason, Refusal::AlreadyPaused);
        gate.add_permits(1);
        settle().await;
        // Finished sagas.
        let done = SagaDefinition::builder("done", 1)
            .step(step("s0", Script::Ok, Some(Script::Ok), &calls))
            .build()
            .unwrap();
        engine
            .start(&done, "d-1", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        let (_, reason) = refusal(engine.cancel("d-1", "r", "a").await);
        assert_eq!(reason, Refusal::Finished(SagaStatus::Completed));
        let (_, reason) = refusal(engine.pause("d-1", "a").await);
        assert_eq!(reason, Refusal::Finished(SagaStatus::Completed));
        // A compensating saga is already rolling back; a stuck one waits for an operator.
        let stuck = SagaDefinition::builder("stuck", 1)
            .step(step("s0", Script::Ok, Some(Script::Fail), &calls))
            .step(step("s1", Script::Fail, None, &calls))
            .build()
            .unwrap();
        engine
            .start(&stuck, "s-1", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        let (_, reason) = refusal(engine.cancel("s-1", "r", "a").await);
        assert_eq!(reason, Refusal::Stuck);
        drop(handle);
    });
}

#[test]
fn two_concurrent_cancels_compensate_once() {
    runtime().block_on(async {
        let calls = calls();
        let gate = Arc::new(Semaphore::new(0));
        let def = three_steps("order", &gate, &calls);
        let engine = SagaEngine::new(MemoryStore::new());
        let handle = engine.start(&def, "o-2", trail()).await.unwrap();
        settle().await;
        let (a, b) = tokio::join!(
            engine.cancel("o-2", "first", "a"),
            engine.cancel("o-2", "second", "b")
        );
        assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
        for r in [a, b] {
            if let Err(e) = r {
                assert_eq!(refusal(Err(e)).1, Refusal::AlreadyCancelled);
            }
        }
        // Later cancels see the first one.
        let (_, reason) = refusal(engine.cancel("o-2", "third", "c").await);
        assert_eq!(reason, Refusal::AlreadyCancelled);
        gate.add_permits(1);
        let outcome = handle.outcome().await.unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Cancelled { .. }),
            "{outcome:?}"
        );
        let log = events(&engine, "o-2").await;
        let began = log
            .iter()
            .filter(|e| matches!(e, SagaEvent::CancelBegan { .. }))
            .count();
        assert_eq!(began, 1);
        let compensations = seen(&calls)
            .iter()
            .filter(|c| c.ends_with(":compensate"))
            .count();
        assert_eq!(compensations, 2);
    });
}

#[test]
fn a_paused_saga_holds_at_the_step_boundary_is_left_by_recovery_and_resumes_where_it_was() {
    runtime().block_on(async {
        let calls = calls();
        let gate = Arc::new(Semaphore::new(0));
        let def = three_steps("order", &gate, &calls);
        let engine = SagaEngine::new(MemoryStore::new());
        engine.register(&def).unwrap();
        let handle = engine.start(&def, "o-3", trail()).await.unwrap();
        settle().await;
        engine.pause("o-3", "ops:bo").await.unwrap();
        gate.add_permits(1);
        settle().await;
        // s1 finished; s2 has not started.
        assert_eq!(seen(&calls), ["s0:action", "s1:action"]);
        let summary = engine
            .list(&staunch_saga::ListFilter::default())
            .await
            .unwrap()
            .remove(0);
        assert_eq!(summary.status, SagaStatus::Paused);
        assert_eq!(engine.metrics().paused, 1);
        assert_eq!(engine.metrics().in_flight, 0);
        // Recovery leaves it alone.
        let report = engine.recover().await.unwrap();
        assert!(report.resumed.is_empty(), "{report:?}");
        settle().await;
        assert_eq!(seen(&calls).len(), 2);
        // The handle is still waiting.
        let waiting = tokio::spawn(handle.outcome());
        settle().await;
        assert!(!waiting.is_finished());
        engine.resume("o-3", "ops:bo").await.unwrap();
        let outcome = waiting.await.unwrap().unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
        assert_eq!(seen(&calls), ["s0:action", "s1:action", "s2:action"]);
        let log = events(&engine, "o-3").await;
        assert!(
            log.iter()
                .any(|e| matches!(e, SagaEvent::Paused { actor } if actor == "ops:bo"))
        );
        assert!(
            log.iter()
                .any(|e| matches!(e, SagaEvent::Resumed { actor } if actor == "ops:bo"))
        );
        let (_, reason) = refusal(engine.resume("o-3", "ops").await);
        assert_eq!(reason, Refusal::NotPaused(SagaStatus::Completed));
    });
}

#[test]
fn a_paused_saga_can_be_cancelled_and_compensates() {
    runtime().block_on(async {
        let calls = calls();
        let gate = Arc::new(Semaphore::new(0));
        let def = three_steps("order", &gate, &calls);
        let engine = SagaEngine::new(MemoryStore::new());
        let handle = engine.start(&def, "o-4", trail()).await.unwrap();
        settle().await;
        engine.pause("o-4", "ops").await.unwrap();
        gate.add_permits(1);
        settle().await;
        // A pause of a paused saga, a cancel of it: the cancel wins and resumes it here.
        engine.cancel("o-4", "given up", "ops").await.unwrap();
        let outcome = handle.outcome().await.unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Cancelled { ref reason, .. } if reason == "given up"),
            "{outcome:?}"
        );
        assert_eq!(
            seen(&calls),
            ["s0:action", "s1:action", "s1:compensate", "s0:compensate"]
        );
    });
}

#[test]
fn a_pause_while_compensating_holds_the_compensation() {
    runtime().block_on(async {
        let calls = calls();
        let gate = Arc::new(Semaphore::new(0));
        let (gated_comp, _) = support::scripted("s1", Phase::Compensate, Script::Ok, &calls);
        let gated_comp = Arc::new(gated_comp);
        let g = Arc::clone(&gate);
        let def = SagaDefinition::builder("rollback", 1)
            .step(step("s0", Script::Ok, Some(Script::Ok), &calls))
            .step(
                step("s1", Script::Ok, None, &calls).compensate(move |t: Trail, ctx| {
                    let g = Arc::clone(&g);
                    let c = Arc::clone(&gated_comp);
                    async move {
                        g.acquire().await.unwrap().forget();
                        let mut t = c(t, ctx).await?;
                        t.done.push("s1 undone".into());
                        Ok(t)
                    }
                }),
            )
            .step(step("s2", Script::Fail, None, &calls))
            .build()
            .unwrap();
        let engine = SagaEngine::new(MemoryStore::new());
        let handle = engine.start(&def, "r-1", trail()).await.unwrap();
        settle().await;
        engine.pause("r-1", "ops").await.unwrap();
        gate.add_permits(1);
        settle().await;
        let summary = engine
            .list(&staunch_saga::ListFilter::default())
            .await
            .unwrap()
            .remove(0);
        assert_eq!(summary.status, SagaStatus::Paused);
        // Cancel does not apply: it is rolling back already.
        let (_, reason) = refusal(engine.cancel("r-1", "r", "a").await);
        assert_eq!(reason, Refusal::Compensating);
        engine.resume("r-1", "ops").await.unwrap();
        let outcome = handle.outcome().await.unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Compensated { .. }),
            "{outcome:?}"
        );
        assert_eq!(seen(&calls).last().unwrap(), "s0:compensate");
    });
}

/// The rows of a saga of `definition` whose first step failed and was to be retried at
/// `retry_at_ms`, when the process stopped.
fn backed_off_rows(definition: &str, retry_at_ms: u64) -> Vec<String> {
    vec![
        SagaEvent::Started {
            definition: definition.into(),
            version: 1,
            input: serde_json::value::to_raw_value(&trail()).unwrap(),
            started_at_ms: 0,
            trace: None,
        }
        .encode(),
        SagaEvent::StepStarted {
            step: 0,
            attempt: 1,
        }
        .encode(),
        serde_json::from_value::<SagaEvent>(serde_json::json!({
            "step_failed": {
                "step": 0, "attempt": 1, "kind": "retryable",
                "error": "unavailable", "retry_at_ms": retry_at_ms
            }
        }))
        .unwrap()
        .encode(),
    ]
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One step that records when each attempt ran.
fn timed(calls: &Calls, cap: Option<Duration>) -> SagaDefinition<Trail> {
    let mut backoff = Backoff::constant(Duration::from_secs(30)).jitter(Jitter::None);
    if let Some(cap) = cap {
        backoff = backoff.max_delay(cap);
    }
    let (a, _) = support::scripted("s0", Phase::Action, Script::Ok, calls);
    SagaDefinition::builder("timed", 1)
        .step(Step::new("s0", a).retry(StepRetry::new(5).backoff(backoff.build().unwrap())))
        .build()
        .unwrap()
}

#[test]
fn a_resumed_saga_waits_out_the_backoff_its_log_recorded_before_the_next_attempt() {
    runtime().block_on(async {
        let calls = calls();
        let def = timed(&calls, None);
        let store = MemoryStore::new();
        store
            .create(NewSaga::new(
                Arc::from("b-1"),
                Arc::from("timed"),
                1,
                SagaStatus::Running,
                backed_off_rows("timed", now_ms() + 20_000),
            ))
            .await
            .unwrap();
        let engine = SagaEngine::new(store);
        engine.register(&def).unwrap();
        let t0 = tokio::time::Instant::now();
        engine.recover().await.unwrap();
        let outcome = engine.outcome(&def, "b-1").await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
        let at = calls.lock().unwrap()[0].at;
        let waited = at - t0;
        assert!(
            waited >= Duration::from_secs(19) && waited <= Duration::from_secs(21),
            "{waited:?}"
        );
        assert_eq!(calls.lock().unwrap()[0].attempt, 2);
    });
}

#[test]
fn a_stored_backoff_far_in_the_future_is_cut_to_the_steps_cap() {
    runtime().block_on(async {
        let calls = calls();
        let def = timed(&calls, Some(Duration::from_mins(1)));
        let store = MemoryStore::new();
        store
            .create(NewSaga::new(
                Arc::from("b-2"),
                Arc::from("timed"),
                1,
                SagaStatus::Running,
                backed_off_rows("timed", u64::MAX),
            ))
            .await
            .unwrap();
        let engine = SagaEngine::new(store);
        engine.register(&def).unwrap();
        let t0 = tokio::time::Instant::now();
        engine.recover().await.unwrap();
        let outcome = engine.outcome(&def, "b-2").await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
        let waited = calls.lock().unwrap()[0].at - t0;
        assert!(waited <= Duration::from_secs(61), "{waited:?}");
    });
}

#[test]
fn a_retry_backoff_is_written_to_the_log_with_the_failure() {
    runtime().block_on(async {
        let calls = calls();
        let (a, _) = support::scripted("s0", Phase::Action, Script::RetryThen(1), &calls);
        let def = SagaDefinition::builder("logged", 1)
            .step(
                Step::new("s0", a).retry(
                    StepRetry::new(3).backoff(
                        Backoff::constant(Duration::from_secs(5))
                            .jitter(Jitter::None)
                            .build()
                            .unwrap(),
                    ),
                ),
            )
            .build()
            .unwrap();
        let engine = SagaEngine::new(MemoryStore::new());
        let before = now_ms();
        engine
            .start(&def, "l-1", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        let log = events(&engine, "l-1").await;
        let retry_at = log
            .iter()
            .find_map(|e| match e {
                SagaEvent::StepFailed { retry_at_ms, .. } => *retry_at_ms,
                _ => None,
            })
            .expect("the failure records its retry time");
        assert!(
            retry_at >= before + 5_000 && retry_at <= now_ms() + 5_000,
            "{retry_at}"
        );
    });
}

// --- durable across restarts: a real SQLite file ---------------------------------------

#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
fn mt_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Started while s1 ran (the process stopped there): the rows a crash leaves.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
async fn crashed_on_s1(store: &dyn SagaStore, id: &str) {
    let input = serde_json::value::to_raw_value(&trail()).unwrap();
    let mut t = trail();
    t.done.push("s0:action".into());
    let rows = vec![
        SagaEvent::Started {
            definition: "order".into(),
            version: 1,
            input,
            started_at_ms: 0,
            trace: None,
        }
        .encode(),
        SagaEvent::StepStarted {
            step: 0,
            attempt: 1,
        }
        .encode(),
        serde_json::json!({"v": 1, "e": {"step_completed": {"step": 0, "state": t}}}).to_string(),
        SagaEvent::StepStarted {
            step: 1,
            attempt: 1,
        }
        .encode(),
    ];
    store
        .create(NewSaga::new(
            Arc::from(id),
            Arc::from("order"),
            1,
            SagaStatus::Running,
            rows,
        ))
        .await
        .unwrap();
}

#[cfg(feature = "sqlite")]
#[test]
fn a_cancel_and_a_pause_stored_before_recovery_are_carried_out_by_the_next_engine_on_sqlite() {
    mt_runtime().block_on(async {
        let dir = TempDir::new("cancel");
        let path = dir.file("sagas.db");
        let calls = calls();
        let gate = Arc::new(Semaphore::new(100));
        let def = three_steps("order", &gate, &calls);
        {
            let store = staunch_saga::SqliteStore::open(&path).await.unwrap();
            crashed_on_s1(&store, "c-1").await;
            crashed_on_s1(&store, "c-2").await;
            // An engine that has not recovered yet: the requests are stored, nothing runs.
            let engine = SagaEngine::new(store);
            engine.register(&def).unwrap();
            engine.cancel("c-1", "fraud check", "risk").await.unwrap();
            engine.pause("c-2", "ops").await.unwrap();
        }
        // The next process.
        let store = staunch_saga::SqliteStore::open(&path).await.unwrap();
        let engine = SagaEngine::new(store);
        engine.register(&def).unwrap();
        let report = engine.recover().await.unwrap();
        assert_eq!(report.resumed.len(), 2, "{report:?}");
        let outcome = engine.outcome(&def, "c-1").await.unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Cancelled { ref reason, .. } if reason == "fraud check"),
            "{outcome:?}"
        );
        // c-2 paused at its first boundary (after the interrupted s1 ran again).
        let paused = support::listed(&engine, SagaStatus::Paused, Duration::from_millis(5)).await;
        assert_eq!(paused[0].saga_id, "c-2");
        drop(engine);
        // Another restart: still paused, recovery leaves it. (In one process the old
        // engine's tasks may hold the store a moment longer.)
        let store = staunch_saga::SqliteStore::builder(&path)
            .lock_wait(Duration::from_secs(10))
            .open()
            .await
            .unwrap();
        let engine = SagaEngine::new(store);
        engine.register(&def).unwrap();
        let report = engine.recover().await.unwrap();
        assert!(report.resumed.is_empty(), "{report:?}");
        engine.resume("c-2", "ops").await.unwrap();
        let outcome = engine.outcome(&def, "c-2").await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
    });
}

// --- PostgreSQL: a cancel made on another instance ---------------------------------------

#[cfg(feature = "postgres")]
#[test]
fn a_cancel_made_on_another_postgres_instance_is_seen_by_the_owner_within_a_heartbeat() {
    mt_runtime().block_on(async {
        let ttl = Duration::from_millis(1500);
        let Some((store_a, guard)) = support::pg::store("cancel_remote", ttl).await else {
            return;
        };
        let store_b = support::pg::another(&guard, ttl).await;
        let calls = calls();
        let gate = Arc::new(Semaphore::new(0));
        let def = three_steps("order", &gate, &calls);
        let a = SagaEngine::new(store_a);
        let b = SagaEngine::new(store_b);
        b.register(&def).unwrap();
        let handle = a.start(&def, "pg-1", trail()).await.unwrap();
        // s0 done, s1 waiting for the gate.
        while seen(&calls).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Instance b asks; instance a drives the saga.
        b.cancel("pg-1", "from b", "ops").await.unwrap();
        let asked = tokio::time::Instant::now();
        // a's heartbeat (every ttl/3) sees it; then s1 finishes and a compensates.
        tokio::time::sleep(ttl).await;
        gate.add_permits(1);
        let outcome = handle.outcome().await.unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Cancelled { ref reason, .. } if reason == "from b"),
            "{outcome:?}"
        );
        assert!(asked.elapsed() < ttl * 3, "{:?}", asked.elapsed());
        assert_eq!(
            seen(&calls),
            ["s0:action", "s1:action", "s1:compensate", "s0:compensate"]
        );
        // Pause on b, resume on b: the lease was let go, any instance may resume.
        let gate2 = Arc::new(Semaphore::new(0));
        let def2 = three_steps("order2", &gate2, &calls);
        b.register(&def2).unwrap();
        let _h = a.start(&def2, "pg-2", trail()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.pause("pg-2", "ops").await.unwrap();
        tokio::time::sleep(ttl).await;
        gate2.add_permits(1);
        let paused = support::listed(&b, SagaStatus::Paused, Duration::from_millis(20)).await;
        assert_eq!(paused[0].saga_id, "pg-2");
        b.resume("pg-2", "ops").await.unwrap();
        let outcome = b.outcome(&def2, "pg-2").await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
    });
}

// --- small frictions: a step that says "in doubt", a context for unit tests ---------------

#[test]
fn a_step_in_doubt_is_retried_and_compensated_when_its_retries_run_out() {
    runtime().block_on(async {
        let calls = calls();
        let (c1, _) = support::scripted("s1", Phase::Compensate, Script::Ok, &calls);
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let a = Arc::clone(&attempts);
        let def = SagaDefinition::builder("doubt", 1)
            .step(step("s0", Script::Ok, Some(Script::Ok), &calls))
            .step(
                Step::new("s1", move |_t: Trail, _| {
                    a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {
                        Err(staunch_saga::StepError::in_doubt(
                            "connection reset after send",
                        ))
                    }
                })
                .retry(support::fast_retry(3))
                .compensate(c1),
            )
            .build()
            .unwrap();
        let engine = SagaEngine::new(MemoryStore::new());
        let outcome = engine
            .start(&def, "i-1", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Compensated { .. }),
            "{outcome:?}"
        );
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 3);
        // The step whose effect is unknown is compensated too, before s0.
        assert_eq!(
            seen(&calls),
            ["s0:action", "s1:compensate", "s0:compensate"]
        );
    });
}

#[test]
fn a_step_function_can_be_called_alone_with_a_context_built_in_the_test() {
    runtime().block_on(async {
        let calls = calls();
        let (f, _) = support::scripted("reserve", Phase::Action, Script::Ok, &calls);
        let ctx = staunch_saga::StepContext::new("order-7", "reserve", Phase::Action, 2);
        assert_eq!(ctx.saga_id(), "order-7");
        assert_eq!(ctx.attempt(), 2);
        assert_eq!(
            ctx.idempotency_key(),
            staunch_saga::idempotency_key("order-7", "reserve", Phase::Action)
        );
        let out = f(trail(), ctx).await.unwrap();
        assert_eq!(out.done, ["reserve:action"]);
        assert_eq!(calls.lock().unwrap()[0].attempt, 2);
    });
}

/// `s0`, then `s1` (waits for the gate; aborts on cancel), then `s2`.
fn aborting(name: &str, gate: &Arc<Semaphore>, calls: &Calls) -> SagaDefinition<Trail> {
    SagaDefinition::builder(name, 1)
        .step(step("s0", Script::Ok, Some(Script::Ok), calls))
        .step(gated("s1", gate, calls).on_cancel(staunch_saga::OnCancel::Abort))
        .step(step("s2", Script::Ok, Some(Script::Ok), calls))
        .build()
        .unwrap()
}

#[test]
fn a_step_that_aborts_on_cancel_is_dropped_mid_attempt_and_compensated_as_in_doubt() {
    runtime().block_on(async {
        let calls = calls();
        // The gate never opens: only the abort ends the attempt.
        let gate = Arc::new(Semaphore::new(0));
        let def = aborting("order", &gate, &calls);
        let engine = SagaEngine::new(MemoryStore::new());
        let handle = engine.start(&def, "o-abort", trail()).await.unwrap();
        settle().await;
        assert_eq!(seen(&calls), ["s0:action"]);
        engine
            .cancel("o-abort", "customer changed their mind", "support:ana")
            .await
            .unwrap();
        let outcome = handle.outcome().await.unwrap();
        let SagaOutcome::Cancelled { state, .. } = outcome else {
            panic!("expected cancelled, got {outcome:?}");
        };
        // `s1`'s action never finished, yet its effect is unknown: compensated first.
        assert_eq!(
            seen(&calls),
            ["s0:action", "s1:compensate", "s0:compensate"]
        );
        assert_eq!(state.done, ["s0:action", "s1:compensate", "s0:compensate"]);
        let log = events(&engine, "o-abort").await;
        assert!(
            log.iter().any(|e| matches!(
                e,
                SagaEvent::StepFailed {
                    step: 1,
                    kind: staunch_saga::StepErrorKind::Cancelled,
                    ..
                }
            )),
            "{log:?}"
        );
        // The gate's waiter went with the dropped attempt.
        gate.add_permits(1);
        settle().await;
        assert_eq!(gate.available_permits(), 1);
    });
}

#[test]
fn a_pause_does_not_abort_a_step_that_aborts_on_cancel() {
    runtime().block_on(async {
        let calls = calls();
        let gate = Arc::new(Semaphore::new(0));
        let def = aborting("order", &gate, &calls);
        let engine = SagaEngine::new(MemoryStore::new());
        let handle = engine.start(&def, "o-pause", trail()).await.unwrap();
        settle().await;
        engine.pause("o-pause", "ops").await.unwrap();
        settle().await;
        // Still in the attempt: it finishes, then the saga holds.
        assert_eq!(seen(&calls), ["s0:action"]);
        gate.add_permits(1);
        settle().await;
        assert_eq!(seen(&calls), ["s0:action", "s1:action"]);
        let paused = engine
            .list(&staunch_saga::ListFilter::status(SagaStatus::Paused))
            .await
            .unwrap();
        assert_eq!(paused.len(), 1);
        engine.resume("o-pause", "ops").await.unwrap();
        let outcome = handle.outcome().await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
    });
}

#[test]
fn abort_on_cancel_needs_a_compensation_and_a_step_of_its_own() {
    let calls = calls();
    let (action, _) = support::scripted("s0", Phase::Action, Script::Ok, &calls);
    let err = SagaDefinition::<Trail>::builder("order", 1)
        .step(Step::new("s0", action).on_cancel(staunch_saga::OnCancel::Abort))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "saga.order.steps[0].on_cancel", "{err}");
    let err = SagaDefinition::<Trail>::builder("order", 1)
        .parallel(
            staunch_saga::ParallelGroup::new("both")
                .step(
                    step("a", Script::Ok, Some(Script::Ok), &calls)
                        .on_cancel(staunch_saga::OnCancel::Abort),
                )
                .step(step("b", Script::Ok, Some(Script::Ok), &calls)),
        )
        .build()
        .unwrap_err();
    assert!(err.field().ends_with("on_cancel"), "{err}");
}

#[test]
fn resumed_group_members_each_wait_out_the_backoff_their_log_recorded() {
    runtime().block_on(async {
        let calls = calls();
        let backoff = Backoff::constant(Duration::from_secs(30))
            .jitter(Jitter::None)
            .build()
            .unwrap();
        let member = |name: &str| {
            let (a, _) = support::scripted(name, Phase::Action, Script::Ok, &calls);
            Step::new(name, a).retry(StepRetry::new(5).backoff(backoff))
        };
        let def = SagaDefinition::builder("grouped", 1)
            .parallel(
                staunch_saga::ParallelGroup::new("both")
                    .step(member("a"))
                    .step(member("b")),
            )
            .build()
            .unwrap();
        let failed = |step: u32, retry_at_ms: u64| {
            serde_json::from_value::<SagaEvent>(serde_json::json!({
                "step_failed": {
                    "step": step, "attempt": 1, "kind": "retryable",
                    "error": "unavailable", "retry_at_ms": retry_at_ms
                }
            }))
            .unwrap()
            .encode()
        };
        let mut rows = backed_off_rows("grouped", 0);
        rows.truncate(1);
        rows.extend([
            SagaEvent::StepStarted {
                step: 0,
                attempt: 1,
            }
            .encode(),
            SagaEvent::StepStarted {
                step: 1,
                attempt: 1,
            }
            .encode(),
            failed(0, now_ms() + 20_000),
            failed(1, now_ms() + 5_000),
        ]);
        let store = MemoryStore::new();
        store
            .create(NewSaga::new(
                Arc::from("g-1"),
                Arc::from("grouped"),
                1,
                SagaStatus::Running,
                rows,
            ))
            .await
            .unwrap();
        let engine = SagaEngine::new(store);
        engine.register(&def).unwrap();
        let t0 = tokio::time::Instant::now();
        engine.recover().await.unwrap();
        let outcome = engine.outcome(&def, "g-1").await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
        let calls = calls.lock().unwrap();
        let at = |step: &str| {
            let call = calls.iter().find(|c| c.step == step).unwrap();
            assert_eq!(call.attempt, 2);
            call.at - t0
        };
        let (a, b) = (at("a"), at("b"));
        assert!(
            a >= Duration::from_secs(19) && a <= Duration::from_secs(21),
            "{a:?}"
        );
        assert!(
            b >= Duration::from_secs(4) && b <= Duration::from_secs(6),
            "{b:?}"
        );
    });
}
