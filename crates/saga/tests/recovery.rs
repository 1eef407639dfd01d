//! Recovery from a log left by a process that stopped mid-saga: interrupted attempts,
//! idempotency keys, unknown definitions and corrupt rows.
//!
//! A "crash" here drops the tokio runtime the first engine ran on, which cancels its tasks at
//! whatever await point they were; the real process kill is in `tests/crash.rs`.

mod support;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use staunch_saga::{
    Append, Created, ListFilter, LoadError, MemoryStore, NewSaga, OnInterrupted, Phase,
    SagaDefinition, SagaEngine, SagaError, SagaEvent, SagaLog, SagaOutcome, SagaStatus, SagaStore,
    SagaSummary, Step, StepError, StoreError,
};
use support::{Calls, Script, Trail, calls, fast_retry, scripted, seen, step, trail};

#[cfg(feature = "sqlite")]
/// A real-time runtime: sqlx's pool timers must not be fast-forwarded by a paused clock.
fn real_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A 3-step definition whose middle step's action and compensation scripts can be switched.
struct Flow {
    def: SagaDefinition<Trail>,
    calls: Calls,
    action: Arc<std::sync::Mutex<Script>>,
    compensation: Arc<std::sync::Mutex<Script>>,
}

fn flow(name: &str, version: u32, on_interrupted: OnInterrupted, last: Script) -> Flow {
    let calls = calls();
    let (a, action) = scripted("charge", Phase::Action, Script::Ok, &calls);
    let (c, compensation) = scripted("charge", Phase::Compensate, Script::Ok, &calls);
    let def = SagaDefinition::builder(name, version)
        .step(step("reserve", Script::Ok, Some(Script::Ok), &calls))
        .step(
            Step::new("charge", a)
                .compensate(c)
                .retry(fast_retry(3))
                .compensation_retry(fast_retry(3))
                .on_interrupted(on_interrupted),
        )
        .step(step("ship", last, None, &calls))
        .build()
        .unwrap();
    Flow {
        def,
        calls,
        action,
        compensation,
    }
}

/// Starts `id` on a runtime that is dropped once `calls` has `n` entries.
fn crash_after(
    store: &MemoryStore,
    def: &SagaDefinition<Trail>,
    calls: &Calls,
    id: &str,
    n: usize,
) {
    let rt = runtime();
    rt.block_on(async {
        let engine = SagaEngine::new(store.clone());
        let _handle = engine.start(def, id, trail()).await.unwrap();
        while calls.lock().unwrap().len() < n {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    });
    drop(rt);
}

#[test]
fn an_interrupted_action_reruns_with_the_same_idempotency_key() {
    let store = MemoryStore::new();
    let f = flow("rerun", 1, OnInterrupted::Rerun, Script::Ok);
    *f.action.lock().unwrap() = Script::Hang;
    crash_after(&store, &f.def, &f.calls, "r1", 2);
    assert_eq!(seen(&f.calls), ["reserve:action", "charge:action"]);

    *f.action.lock().unwrap() = Script::Ok;
    runtime().block_on(async {
        let engine = SagaEngine::new(store.clone());
        engine.register(&f.def).unwrap();
        // `start` before recovery resumes the unfinished saga itself; recovery leaves it.
        let handle = engine.start(&f.def, "r1", trail()).await.unwrap();
        let report = engine.recover().await.unwrap();
        assert!(report.resumed.is_empty(), "{report:?}");
        let outcome = handle.outcome().await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
    });
    assert_eq!(
        seen(&f.calls),
        [
            "reserve:action",
            "charge:action",
            "charge:action",
            "ship:action"
        ]
    );
    let charges: Vec<_> = f
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.step == "charge")
        .map(|c| (c.key.clone(), c.attempt))
        .collect();
    assert_eq!(
        charges,
        [
            ("r1:charge:action".to_owned(), 1),
            ("r1:charge:action".to_owned(), 2)
        ]
    );
}

#[test]
fn an_interrupted_action_configured_to_compensate_is_compensated_with_the_steps_before_it() {
    let store = MemoryStore::new();
    let f = flow("comp", 1, OnInterrupted::Compensate, Script::Ok);
    *f.action.lock().unwrap() = Script::Hang;
    crash_after(&store, &f.def, &f.calls, "c1", 2);
    runtime().block_on(async {
        let engine = SagaEngine::new(store.clone());
        engine.register(&f.def).unwrap();
        engine.recover().await.unwrap();
        let outcome = engine
            .start(&f.def, "c1", trail())
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
        assert_eq!(failed_step, "charge");
        assert!(error.contains("stopped"), "{error}");
    });
    assert_eq!(
        seen(&f.calls),
        [
            "reserve:action",
            "charge:action",
            "charge:compensate",
            "reserve:compensate"
        ]
    );
}

#[test]
fn an_interrupted_action_configured_to_go_stuck_waits_for_an_operator() {
    let store = MemoryStore::new();
    let f = flow("stuck", 1, OnInterrupted::Stuck, Script::Ok);
    *f.action.lock().unwrap() = Script::Hang;
    crash_after(&store, &f.def, &f.calls, "s1", 2);
    *f.action.lock().unwrap() = Script::Ok;
    runtime().block_on(async {
        let engine = SagaEngine::new(store.clone());
        engine.register(&f.def).unwrap();
        engine.recover().await.unwrap();
        let outcome = engine.start(&f.def, "s1", trail()).await.unwrap().outcome().await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Stuck { ref step, phase: Phase::Action, .. } if step == "charge"));
        assert_eq!(engine.stuck().await.unwrap()[0].saga_id, "s1");
        let o = engine.retry_stuck(&f.def, "s1", "test").await.unwrap().outcome().await.unwrap();
        assert!(matches!(o, SagaOutcome::Completed(_)), "{o:?}");
    });
    let keys: Vec<_> = f
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| (c.key.clone(), c.attempt))
        .collect();
    assert_eq!(keys[1], ("s1:charge:action".to_owned(), 1));
    assert_eq!(keys[2], ("s1:charge:action".to_owned(), 2));
}

#[test]
fn an_interrupted_compensation_reruns_with_the_same_key() {
    let store = MemoryStore::new();
    let f = flow("comp-crash", 1, OnInterrupted::Rerun, Script::Fail);
    *f.compensation.lock().unwrap() = Script::Hang;
    // reserve, charge, ship (fails), charge:compensate (hangs)
    crash_after(&store, &f.def, &f.calls, "cc", 4);
    *f.compensation.lock().unwrap() = Script::Ok;
    runtime().block_on(async {
        let engine = SagaEngine::new(store.clone());
        engine.register(&f.def).unwrap();
        assert_eq!(engine.recover().await.unwrap().resumed, ["cc"]);
        let outcome = engine
            .start(&f.def, "cc", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Compensated { .. }),
            "{outcome:?}"
        );
    });
    let comp: Vec<_> = f
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.phase == Phase::Compensate)
        .map(|c| (c.step.clone(), c.key.clone(), c.attempt))
        .collect();
    assert_eq!(
        comp,
        [
            ("charge".to_owned(), "cc:charge:compensate".to_owned(), 1),
            ("charge".to_owned(), "cc:charge:compensate".to_owned(), 2),
            ("reserve".to_owned(), "cc:reserve:compensate".to_owned(), 1),
        ]
    );
}

#[test]
fn unknown_definitions_and_corrupt_rows_are_quarantined_and_the_rest_recovers() {
    let store = MemoryStore::new();
    let f = flow("quarantine", 1, OnInterrupted::Rerun, Script::Ok);
    *f.action.lock().unwrap() = Script::Hang;
    let old = flow("retired", 7, OnInterrupted::Rerun, Script::Ok);
    *old.action.lock().unwrap() = Script::Hang;
    crash_after(&store, &f.def, &f.calls, "good", 2);
    crash_after(&store, &f.def, &f.calls, "corrupt", 4);
    crash_after(&store, &old.def, &old.calls, "unknown", 2);
    assert!(store.corrupt_row("corrupt", 2, "{not json"));
    *f.action.lock().unwrap() = Script::Ok;

    runtime().block_on(async {
        let engine = SagaEngine::new(store.clone());
        engine.register(&f.def).unwrap();
        let report = engine.recover().await.unwrap();
        assert_eq!(report.resumed, ["good"]);
        let mut q = report.quarantined.clone();
        q.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(q[0].0, "corrupt");
        assert!(
            matches!(q[0].1, LoadError::Corrupt { seq: 2, .. }),
            "{:?}",
            q[0].1
        );
        assert_eq!(q[1].0, "unknown");
        assert_eq!(
            q[1].1,
            LoadError::UnknownDefinition {
                name: "retired".into(),
                version: 7
            }
        );
        let good = engine
            .start(&f.def, "good", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(matches!(good, SagaOutcome::Completed(_)));

        let quarantined = engine
            .list(&ListFilter::status(SagaStatus::Quarantined))
            .await
            .unwrap();
        assert_eq!(quarantined.len(), 2);
        assert!(
            quarantined[1]
                .note
                .as_deref()
                .unwrap()
                .contains("not registered")
        );
        // Nothing is deleted: the corrupt row is still there, shown with its error.
        let timeline = engine.inspect("corrupt").await.unwrap().unwrap();
        assert_eq!(timeline.entries.len(), 4);
        assert!(timeline.entries[2].event.is_err());
        assert!(matches!(
            timeline.entries[3].event,
            Ok(SagaEvent::StepStarted { step: 1, .. })
        ));
        assert!(matches!(
            engine.start(&f.def, "corrupt", trail()).await,
            Err(SagaError::Quarantined { .. })
        ));
        // A second recovery leaves quarantined sagas alone.
        let again = engine.recover().await.unwrap();
        assert!(again.resumed.is_empty() && again.quarantined.is_empty());
        assert_eq!(engine.metrics().quarantined, 2);
    });
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_recovers_after_the_runtime_and_its_writer_die_mid_saga() {
    let dir = support::TempDir::new("recovery");
    let path = dir.file("sagas.db");
    let f = flow("sqlite-crash", 1, OnInterrupted::Rerun, Script::Ok);
    *f.action.lock().unwrap() = Script::Hang;
    let rt = real_runtime();
    rt.block_on(async {
        let engine = SagaEngine::new(staunch_saga::SqliteStore::open(&path).await.unwrap());
        for i in 0..5 {
            let _ = engine
                .start(&f.def, format!("q{i}"), trail())
                .await
                .unwrap();
        }
        while f.calls.lock().unwrap().len() < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    });
    drop(rt);
    *f.action.lock().unwrap() = Script::Ok;
    real_runtime().block_on(async {
        let store = staunch_saga::SqliteStore::open(&path).await.unwrap();
        let engine = SagaEngine::new(store.clone());
        engine.register(&f.def).unwrap();
        let report = engine.recover().await.unwrap();
        assert_eq!(report.resumed.len(), 5);
        for i in 0..5 {
            let o = engine
                .start(&f.def, format!("q{i}"), trail())
                .await
                .unwrap()
                .outcome()
                .await
                .unwrap();
            assert!(matches!(o, SagaOutcome::Completed(_)));
        }
        let log = staunch_saga::SagaStore::load(&store, "q3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(log.summary.status, SagaStatus::Completed);
    });
    let charge_keys: Vec<_> = f
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.step == "charge" && c.key == "q3:charge:action")
        .map(|c| c.attempt)
        .collect();
    assert_eq!(charge_keys, [1, 2]);
}

#[test]
fn a_saga_recovered_after_its_deadline_compensates_the_interrupted_step_too() {
    let store = MemoryStore::new();
    let calls = calls();
    let (charge, charge_switch) = scripted("charge", Phase::Action, Script::Hang, &calls);
    let (refund, _) = scripted("charge", Phase::Compensate, Script::Ok, &calls);
    let charge = Arc::new(charge);
    let refund = Arc::new(refund);
    let build = |deadline: Option<std::time::Duration>| {
        let (c, r) = (Arc::clone(&charge), Arc::clone(&refund));
        let mut b = SagaDefinition::builder("late", 1)
            .step(step("reserve", Script::Ok, Some(Script::Ok), &calls))
            .step(Step::new("charge", move |t, ctx| c(t, ctx)).compensate(move |t, ctx| r(t, ctx)));
        if let Some(d) = deadline {
            b = b.deadline(d);
        }
        b.build().unwrap()
    };
    crash_after(&store, &build(None), &calls, "late-1", 2);
    // The deadline is measured on the wall clock from the saga's start, across restarts.
    #[allow(clippy::disallowed_methods)] // real time must pass; nothing async is running
    std::thread::sleep(std::time::Duration::from_millis(20));
    *charge_switch.lock().unwrap() = Script::Ok;
    let def = build(Some(std::time::Duration::from_millis(1)));
    runtime().block_on(async {
        let engine = SagaEngine::new(store.clone());
        engine.register(&def).unwrap();
        engine.recover().await.unwrap();
        let o = engine
            .start(&def, "late-1", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(
            matches!(o, SagaOutcome::Compensated { ref error, .. } if error.contains("deadline")),
            "{o:?}"
        );
    });
    // The interrupted charge may have happened: it is refunded, not re-run.
    assert_eq!(
        seen(&calls),
        [
            "reserve:action",
            "charge:action",
            "charge:compensate",
            "reserve:compensate"
        ]
    );
}

#[test]
fn the_recovery_loop_resumes_stopped_sagas_and_does_not_spin_on_running_ones() {
    let store = MemoryStore::new();
    let f = flow("loop", 1, OnInterrupted::Rerun, Script::Ok);
    *f.action.lock().unwrap() = Script::Hang;
    crash_after(&store, &f.def, &f.calls, "l1", 2);
    runtime().block_on(async {
        let engine = SagaEngine::new(store.clone());
        engine.register(&f.def).unwrap();
        // More sagas in flight here than one recovery pass claims, all hanging in `charge`:
        // a store without leases lists them on every pass.
        let mut hanging = Vec::new();
        for n in 0..300 {
            hanging.push(
                engine
                    .start(&f.def, format!("h{n:03}"), trail())
                    .await
                    .unwrap(),
            );
        }
        while f.calls.lock().unwrap().len() < 2 + 300 * 2 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let handle = engine.start(&f.def, "l1", trail()).await.unwrap();
        *f.action.lock().unwrap() = Script::Ok;
        let recovery = engine.spawn_recovery(std::time::Duration::from_secs(1));
        // The loop's first pass resumes the stopped saga; later passes find only sagas this
        // engine runs (the test would hang if a pass never yielded).
        let outcome = handle.outcome().await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert_eq!(engine.metrics().resumed, 1);
        assert_eq!(engine.metrics().in_flight, 300, "the others still hang");
        drop(recovery);
        drop(hanging);
    });
}

// --- a saga listed while running and finished before recovery claims it -------------------

/// A memory store whose `claim_resumable` lists the unfinished sagas, tells the test, then
/// waits for the test before returning them: the listed sagas finish in between.
#[derive(Debug, Clone, Default)]
struct SlowClaim {
    inner: MemoryStore,
    listed: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Notify>,
    passes: Arc<std::sync::atomic::AtomicU32>,
}

impl SagaStore for SlowClaim {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        self.inner.create(saga)
    }
    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.append(append)
    }
    fn load<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<Option<SagaLog>, StoreError>> {
        self.inner.load(saga_id)
    }
    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<SagaSummary>, StoreError>> {
        self.inner.list(filter)
    }
    fn quarantine<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.quarantine(saga_id, reason)
    }
    fn claim_resumable(&self, limit: usize) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(async move {
            self.passes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let listed = self.inner.claim_resumable(limit).await?;
            self.listed.notify_one();
            self.gate.notified().await;
            Ok(listed)
        })
    }
}

/// A one-step definition whose step waits for a permit of `gate`, then succeeds or fails;
/// with `stuck_compensation` a first step's compensation fails for good.
fn gated(
    name: &str,
    gate: &Arc<tokio::sync::Semaphore>,
    succeed: bool,
    stuck_compensation: bool,
) -> SagaDefinition<Trail> {
    let calls = calls();
    let first = if stuck_compensation {
        Script::Fail
    } else {
        Script::Ok
    };
    let gate = Arc::clone(gate);
    SagaDefinition::builder(name, 1)
        .step(step("first", Script::Ok, Some(first), &calls).compensation_retry(fast_retry(1)))
        .step(Step::new("wait", move |t: Trail, _| {
            let gate = Arc::clone(&gate);
            async move {
                gate.acquire().await.unwrap().forget();
                if succeed {
                    Ok(t)
                } else {
                    Err(StepError::fail("declined"))
                }
            }
        }))
        .build()
        .unwrap()
}

#[test]
fn a_saga_that_finishes_between_listing_and_claiming_is_counted_once() {
    runtime().block_on(async {
        let store = SlowClaim::default();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let defs = [
            gated("done", &gate, true, false),
            gated("undone", &gate, false, false),
            gated("stuck", &gate, false, true),
        ];
        let engine = SagaEngine::new(store.clone());
        let mut handles = Vec::new();
        for def in &defs {
            handles.push(engine.start(def, def.name(), trail()).await.unwrap());
        }
        // The pass lists the three while they run ...
        let pass = tokio::spawn({
            let engine = engine.clone();
            async move { engine.recover().await }
        });
        store.listed.notified().await;
        // ... they finish ...
        gate.add_permits(3);
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.outcome().await.unwrap());
        }
        assert!(matches!(outcomes[0], SagaOutcome::Completed(_)));
        assert!(matches!(outcomes[1], SagaOutcome::Compensated { .. }));
        assert!(matches!(outcomes[2], SagaOutcome::Stuck { .. }));
        // ... and only then does the pass claim them.
        store.gate.notify_one();
        let report = pass.await.unwrap().unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(report.resumed.is_empty(), "{report:?}");
        assert_eq!(report.settled, ["done", "stuck", "undone"]);
        let m = engine.metrics();
        assert_eq!(
            (m.started, m.completed, m.compensated, m.stuck, m.resumed),
            (3, 1, 1, 1, 0),
            "{m:?}"
        );
        assert_eq!(m.in_flight, 0);
        // Their summaries are untouched and every settled outcome is still readable.
        assert_eq!(engine.stuck().await.unwrap().len(), 1);
        for def in &defs {
            let log = store.load(def.name()).await.unwrap().unwrap();
            assert!(!log.summary.status.is_resumable(), "{:?}", log.summary);
            let again = engine.start(def, def.name(), trail()).await.unwrap();
            assert!(again.outcome().await.is_ok());
        }
        assert_eq!(engine.metrics(), m, "reading outcomes counts nothing");
    });
}

#[cfg(feature = "sqlite")]
#[test]
fn the_recovery_loop_beside_healthy_sagas_on_sqlite_counts_each_saga_once() {
    let dir = support::TempDir::new("recount");
    let path = dir.file("sagas.db");
    let calls = calls();
    let def = support::linear("recount", &[Script::Ok, Script::Ok, Script::Ok], &calls);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let engine = SagaEngine::new(staunch_saga::SqliteStore::open(&path).await.unwrap());
            engine.register(&def).unwrap();
            let recovery = engine.spawn_recovery(std::time::Duration::from_millis(1));
            let mut handles = Vec::new();
            for n in 0..320 {
                handles.push(
                    engine
                        .start(&def, format!("r{n:03}"), trail())
                        .await
                        .unwrap(),
                );
            }
            for h in handles {
                let outcome = h.outcome().await.unwrap();
                assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
            }
            // Let passes that listed the last sagas finish.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            recovery.stop().await;
            let m = engine.metrics();
            assert_eq!((m.started, m.completed, m.resumed), (320, 320, 0), "{m:?}");
            assert_eq!(m.in_flight, 0);
        });
}

#[test]
fn stopping_the_recovery_loop_waits_for_the_pass_under_way_and_starts_no_other() {
    use std::sync::atomic::Ordering::SeqCst;
    runtime().block_on(async {
        let store = SlowClaim::default();
        let engine = SagaEngine::new(store.clone());
        let recovery = engine.spawn_recovery(std::time::Duration::from_secs(1));
        store.listed.notified().await;
        let stopping = tokio::spawn(recovery.stop());
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        assert!(!stopping.is_finished(), "stop waits for the pass under way");
        store.gate.notify_one();
        stopping.await.unwrap();
        assert_eq!(store.passes.load(SeqCst), 1);
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        assert_eq!(store.passes.load(SeqCst), 1, "no pass after stop");
    });
}
