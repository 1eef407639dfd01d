//! Outcome by id, the order of register / recover / start, and admission control: caps on
//! running sagas, the bounded start queue, and recovery paced by the caps.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use staunch_saga::{
    MemoryStore, NewSaga, SagaDefinition, SagaEngine, SagaError, SagaEvent, SagaOutcome,
    SagaStatus, SagaStore, Step,
};
use support::{Trail, trail};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// How many step calls run at once, and the most ever seen.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    calls: AtomicUsize,
}

/// One step that counts itself in the gauge while it runs `pause` (yields when zero).
fn counted(name: &str, gauge: &Arc<Gauge>, pause: Duration) -> SagaDefinition<Trail> {
    let g = Arc::clone(gauge);
    SagaDefinition::builder(name, 1)
        .step(Step::new("work", move |t: Trail, _| {
            let g = Arc::clone(&g);
            async move {
                let now = g.now.fetch_add(1, SeqCst) + 1;
                g.max.fetch_max(now, SeqCst);
                if pause.is_zero() {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                } else {
                    tokio::time::sleep(pause).await;
                }
                g.now.fetch_sub(1, SeqCst);
                g.calls.fetch_add(1, SeqCst);
                Ok(t)
            }
        }))
        .build()
        .unwrap()
}

/// The rows of a saga of `definition` that crashed while its first step ran.
fn crashed_rows(definition: &str) -> Vec<String> {
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
    ]
}

async fn crashed(store: &dyn SagaStore, definition: &str, ids: impl Iterator<Item = String>) {
    let rows = crashed_rows(definition);
    let creates = ids.map(|id| {
        store.create(NewSaga::new(
            Arc::from(id),
            Arc::from(definition),
            1,
            SagaStatus::Running,
            rows.clone(),
        ))
    });
    for r in futures_util::future::join_all(creates).await {
        r.unwrap();
    }
}

// --- outcome by id --------------------------------------------------------------------------

#[test]
fn outcome_by_id_waits_for_a_running_saga_and_returns_a_settled_one() {
    runtime().block_on(async {
        let gauge = Arc::new(Gauge::default());
        let def = counted("byid", &gauge, Duration::from_secs(1));
        let engine = SagaEngine::new(MemoryStore::new());
        let _ = engine.start(&def, "a", trail()).await.unwrap();
        // Running here: the handle hears the runner.
        let outcome = engine.outcome(&def, "a").await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
        // Settled: at once, from the store.
        let again = engine
            .handle(&def, "a")
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert_eq!(again, outcome);
        // Another engine over the same store, never having run it.
        let other = SagaEngine::new(engine.store().clone());
        assert_eq!(other.outcome(&def, "a").await.unwrap(), outcome);
    });
}

#[test]
fn outcome_of_an_unknown_id_or_another_definition_is_a_typed_error() {
    runtime().block_on(async {
        let gauge = Arc::new(Gauge::default());
        let def = counted("known", &gauge, Duration::ZERO);
        let other = counted("other", &gauge, Duration::ZERO);
        let engine = SagaEngine::new(MemoryStore::new());
        assert!(matches!(
            engine.outcome(&def, "nope").await,
            Err(SagaError::NotFound(id)) if id == "nope"
        ));
        engine.start(&def, "k", trail()).await.unwrap();
        assert!(matches!(
            engine.handle(&other, "k").await,
            Err(SagaError::DefinitionMismatch { definition, .. }) if definition == "known"
        ));
        engine.outcome(&def, "k").await.unwrap();
        assert!(matches!(
            engine.handle(&other, "k").await,
            Err(SagaError::DefinitionMismatch { .. })
        ));
        let hostile = "\u{0}'; drop table sagas; --".repeat(1000);
        assert!(matches!(
            engine.outcome(&def, hostile.as_str()).await,
            Err(SagaError::NotFound(_))
        ));
    });
}

#[test]
fn a_handle_before_recovery_polls_and_settles_once_recovery_resumes_the_saga() {
    runtime().block_on(async {
        let store = MemoryStore::new();
        crashed(&store, "late", ["l1".to_owned()].into_iter()).await;
        let gauge = Arc::new(Gauge::default());
        let def = counted("late", &gauge, Duration::ZERO);
        let engine = SagaEngine::new(store);
        engine.register(&def).unwrap();
        let handle = engine.handle(&def, "l1").await.unwrap();
        let waiting = tokio::spawn(handle.outcome());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiting.is_finished(), "nothing drives it yet");
        let report = engine.recover().await.unwrap();
        assert_eq!(report.resumed, ["l1"]);
        // The ids of a report are what `handle` takes.
        let by_report = engine
            .handle(&def, report.resumed[0].as_str())
            .await
            .unwrap();
        let outcome = waiting.await.unwrap().unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)));
        assert_eq!(by_report.outcome().await.unwrap(), outcome);
        assert_eq!(gauge.calls.load(SeqCst), 1);
    });
}

#[test]
fn a_dropped_outcome_future_leaves_nothing_behind() {
    runtime().block_on(async {
        let store = MemoryStore::new();
        crashed(&store, "drop", ["d1".to_owned()].into_iter()).await;
        let gauge = Arc::new(Gauge::default());
        let def = counted("drop", &gauge, Duration::ZERO);
        let engine = SagaEngine::new(store);
        engine.register(&def).unwrap();
        for _ in 0..100 {
            let waiting = engine.outcome(&def, "d1");
            assert!(
                tokio::time::timeout(Duration::from_secs(1), waiting)
                    .await
                    .is_err()
            );
        }
        // Nothing kept a claim on the saga: recovery resumes it and it completes.
        assert_eq!(engine.recover().await.unwrap().resumed, ["d1"]);
        let outcome = engine.outcome(&def, "d1").await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)));
    });
}

// --- the order of register, recover, start ---------------------------------------------------

#[test]
fn start_before_recovery_resumes_the_unfinished_saga_itself() {
    runtime().block_on(async {
        let store = MemoryStore::new();
        crashed(&store, "order", ["o1".to_owned()].into_iter()).await;
        let gauge = Arc::new(Gauge::default());
        let def = counted("order", &gauge, Duration::ZERO);
        let engine = SagaEngine::new(store);
        // start -> (no recover at all): the saga is resumed by start.
        let outcome = engine
            .start(&def, "o1", trail())
            .await
            .unwrap()
            .outcome()
            .await;
        assert!(
            matches!(outcome, Ok(SagaOutcome::Completed(_))),
            "{outcome:?}"
        );
        // A later recovery finds nothing to do and runs nothing twice.
        let report = engine.recover().await.unwrap();
        assert!(
            report.resumed.is_empty() && report.settled.is_empty(),
            "{report:?}"
        );
        assert_eq!(gauge.calls.load(SeqCst), 1);
        assert_eq!(engine.metrics().resumed, 1);
    });
}

#[test]
fn recover_before_any_register_is_refused_and_quarantines_nothing() {
    runtime().block_on(async {
        let store = MemoryStore::new();
        crashed(&store, "first", ["f1".to_owned()].into_iter()).await;
        let engine = SagaEngine::new(store);
        assert!(matches!(
            engine.recover().await,
            Err(SagaError::NothingRegistered)
        ));
        assert!(
            engine
                .list(&staunch_saga::ListFilter::status(SagaStatus::Quarantined))
                .await
                .unwrap()
                .is_empty()
        );
        // register -> recover -> start: the usual order.
        let gauge = Arc::new(Gauge::default());
        let def = counted("first", &gauge, Duration::ZERO);
        engine.register(&def).unwrap();
        assert_eq!(engine.recover().await.unwrap().resumed, ["f1"]);
        let outcome = engine
            .start(&def, "f1", trail())
            .await
            .unwrap()
            .outcome()
            .await;
        assert!(matches!(outcome, Ok(SagaOutcome::Completed(_))));
        assert_eq!(gauge.calls.load(SeqCst), 1);
    });
}

// --- admission control ------------------------------------------------------------------------

#[test]
fn the_builder_refuses_zero_and_huge_caps_by_name() {
    let engine = |b: staunch_saga::SagaEngineBuilder| b.build().unwrap_err().to_string();
    let store = MemoryStore::new;
    assert!(engine(SagaEngine::builder(store()).max_running(0)).contains("`max_running`"));
    assert!(engine(SagaEngine::builder(store()).max_running(usize::MAX)).contains("`max_running`"));
    let e = engine(SagaEngine::builder(store()).max_running_for("pay", 0));
    assert!(e.contains("`pay.max_running_for`"), "{e}");
    assert!(
        engine(SagaEngine::builder(store()).outcome_poll_interval(Duration::ZERO))
            .contains("`outcome_poll_interval`")
    );
    assert!(
        SagaEngine::builder(store())
            .max_running(1 << 20)
            .max_queued(usize::MAX)
            .build()
            .is_ok()
    );
}

#[test]
fn starts_beyond_the_cap_wait_and_a_full_queue_is_refused() {
    runtime().block_on(async {
        let gauge = Arc::new(Gauge::default());
        let def = counted("capped", &gauge, Duration::from_secs(1));
        let engine = SagaEngine::builder(MemoryStore::new())
            .max_running(2)
            .max_queued(3)
            .build()
            .unwrap();
        let mut handles = Vec::new();
        for i in 0..2 {
            handles.push(engine.start(&def, format!("c{i}"), trail()).await.unwrap());
        }
        // Three starts wait; the sixth is refused and writes nothing.
        let waiting: Vec<_> = (2..5)
            .map(|i| {
                let (engine, def) = (engine.clone(), def.clone());
                tokio::spawn(async move { engine.start(&def, format!("c{i}"), trail()).await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(matches!(
            engine.start(&def, "c5", trail()).await,
            Err(SagaError::Overloaded { queued: 3, .. })
        ));
        assert!(engine.inspect("c5").await.unwrap().is_none());
        for w in waiting {
            handles.push(w.await.unwrap().unwrap());
        }
        for h in handles {
            assert!(matches!(h.outcome().await, Ok(SagaOutcome::Completed(_))));
        }
        assert_eq!(gauge.max.load(SeqCst), 2);
        assert_eq!(gauge.calls.load(SeqCst), 5);
    });
}

#[test]
fn a_cancelled_waiting_start_leaves_the_queue_and_writes_nothing() {
    runtime().block_on(async {
        let gauge = Arc::new(Gauge::default());
        let def = counted("cancel", &gauge, Duration::from_secs(1));
        let engine = SagaEngine::builder(MemoryStore::new())
            .max_running(1)
            .max_queued(1)
            .build()
            .unwrap();
        let first = engine.start(&def, "x0", trail()).await.unwrap();
        for _ in 0..10 {
            let start = engine.start(&def, "x1", trail());
            assert!(
                tokio::time::timeout(Duration::from_millis(10), start)
                    .await
                    .is_err()
            );
        }
        assert!(engine.inspect("x1").await.unwrap().is_none());
        // The queue has room again, and the id was not left claimed.
        first.outcome().await.unwrap();
        let h = engine.start(&def, "x1", trail()).await.unwrap();
        assert!(matches!(h.outcome().await, Ok(SagaOutcome::Completed(_))));
    });
}

#[test]
fn a_per_definition_cap_holds_one_definition_back_and_not_the_others() {
    runtime().block_on(async {
        let slow = Arc::new(Gauge::default());
        let fast = Arc::new(Gauge::default());
        let pay = counted("pay", &slow, Duration::from_secs(10));
        let ship = counted("ship", &fast, Duration::from_secs(1));
        let engine = SagaEngine::builder(MemoryStore::new())
            .max_running(10)
            .max_running_for("pay", 1)
            .build()
            .unwrap();
        let p0 = engine.start(&pay, "p0", trail()).await.unwrap();
        let e = engine.clone();
        let p1 = tokio::spawn({
            let pay = pay.clone();
            async move { e.start(&pay, "p1", trail()).await.unwrap().outcome().await }
        });
        let s: Vec<_> = futures_util::future::join_all(
            (0..5).map(|i| engine.start(&ship, format!("s{i}"), trail())),
        )
        .await;
        for h in s {
            h.unwrap().outcome().await.unwrap();
        }
        assert!(!p1.is_finished());
        p0.outcome().await.unwrap();
        p1.await.unwrap().unwrap();
        assert_eq!(slow.max.load(SeqCst), 1);
        assert_eq!(fast.max.load(SeqCst), 5);
    });
}

#[test]
fn recovery_on_a_store_without_leases_is_paced_by_the_cap() {
    runtime().block_on(async {
        let store = MemoryStore::new();
        crashed(&store, "paced", (0..200).map(|i| format!("r{i:03}"))).await;
        let gauge = Arc::new(Gauge::default());
        let def = counted("paced", &gauge, Duration::from_millis(100));
        let engine = SagaEngine::builder(store).max_running(7).build().unwrap();
        engine.register(&def).unwrap();
        let report = engine.recover().await.unwrap();
        assert_eq!(report.resumed.len(), 200);
        for id in &report.resumed {
            let outcome = engine.outcome(&def, id.as_str()).await.unwrap();
            assert!(matches!(outcome, SagaOutcome::Completed(_)));
        }
        assert_eq!(gauge.max.load(SeqCst), 7);
        assert_eq!(gauge.calls.load(SeqCst), 200);
    });
}

/// 20 000 unfinished sagas on a real SQLite file, recovered under a cap of 32: never more
/// than 32 in flight, all finish. Prints the recovery rate.
#[cfg(feature = "sqlite")]
#[test]
fn twenty_thousand_unfinished_sagas_on_sqlite_recover_under_the_cap() {
    use staunch_saga::{SqliteStore, SqliteSynchronous};
    const N: usize = 20_000;
    const CAP: usize = 32;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = support::TempDir::new("paced");
    let path = dir.file("paced.db");
    rt.block_on(async {
        let store = SqliteStore::builder(&path)
            .synchronous(SqliteSynchronous::Normal)
            .open()
            .await
            .unwrap();
        let ids: Vec<String> = (0..N).map(|i| format!("saga-{i:05}")).collect();
        for chunk in ids.chunks(2_000) {
            crashed(&store, "bulk", chunk.iter().cloned()).await;
        }
        drop(store);
        // A restart: a new store and engine over the same file.
        let store = SqliteStore::builder(&path)
            .synchronous(SqliteSynchronous::Normal)
            .open()
            .await
            .unwrap();
        let gauge = Arc::new(Gauge::default());
        let def = counted("bulk", &gauge, Duration::ZERO);
        let engine = SagaEngine::builder(store).max_running(CAP).build().unwrap();
        engine.register(&def).unwrap();
        let began = tokio::time::Instant::now();
        let report = engine.recover().await.unwrap();
        assert_eq!(report.resumed.len(), N);
        while gauge.calls.load(SeqCst) < N || engine.metrics().completed < N as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = began.elapsed();
        eprintln!(
            "recovered {N} sagas under a cap of {CAP} in {elapsed:?}: {:.0} sagas/s",
            N as f64 / elapsed.as_secs_f64()
        );
        assert!(gauge.max.load(SeqCst) <= CAP, "{gauge:?}");
        assert!(gauge.max.load(SeqCst) > 1, "{gauge:?}");
        let left = engine
            .list(&staunch_saga::ListFilter::status(SagaStatus::Running))
            .await
            .unwrap();
        assert!(left.is_empty(), "{} still running", left.len());
        let last = engine.outcome(&def, ids[N - 1].as_str()).await.unwrap();
        assert!(matches!(last, SagaOutcome::Completed(_)));
    });
}

/// On a SQLite file across a restart: a handle by id taken before anything resumes the saga
/// polls the file, and `start` of the same id resumes it; both see one outcome.
#[cfg(feature = "sqlite")]
#[test]
fn after_a_restart_on_sqlite_start_resumes_and_a_handle_by_id_settles() {
    use staunch_saga::SqliteStore;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = support::TempDir::new("restart");
    let path = dir.file("restart.db");
    rt.block_on(async {
        let store = SqliteStore::open(&path).await.unwrap();
        crashed(&store, "restart", ["s-1".to_owned()].into_iter()).await;
        drop(store);
        let gauge = Arc::new(Gauge::default());
        let def = counted("restart", &gauge, Duration::from_millis(50));
        let engine = SagaEngine::builder(SqliteStore::open(&path).await.unwrap())
            .outcome_poll_interval(Duration::from_millis(10))
            .build()
            .unwrap();
        let by_id = engine.handle(&def, "s-1").await.unwrap();
        let waiting = tokio::spawn(by_id.outcome());
        let started = engine.start(&def, "s-1", trail()).await.unwrap();
        let outcome = started.outcome().await.unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)));
        assert_eq!(waiting.await.unwrap().unwrap(), outcome);
        assert_eq!(gauge.calls.load(SeqCst), 1);
        let report = engine.recover().await.unwrap();
        assert!(report.resumed.is_empty(), "{report:?}");
    });
}

#[test]
fn the_new_public_types_are_send_sync_and_unpin() {
    fn check<T: Send + Sync + Unpin>() {}
    check::<staunch_saga::SagaEngineBuilder>();
    check::<staunch_saga::SagaHandle<Trail>>();
    check::<SagaEngine>();
}
