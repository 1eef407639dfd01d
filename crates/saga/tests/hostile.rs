//! Hostile input through the public API (issue 15): durations at their limits, saga logs
//! that break the rules, panics inside a saga's task, outputs that cannot be stored, and
//! one saga's bad rows next to healthy sagas. Every case stops (at most) that saga, never
//! the engine, and leaves every row in place.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use staunch_saga::{
    Append, Created, ListFilter, LoadError, LogRule, MemoryStore, NewSaga, ParallelGroup, Phase,
    SagaDefinition, SagaEngine, SagaError, SagaEvent, SagaLog, SagaOutcome, SagaStatus, SagaStore,
    SagaSummary, Step, StepError, StepErrorKind, StepRetry, StoreError,
};
use support::{Script, Trail, calls, linear, seen, trail};

fn raw(trail: &Trail) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(trail).unwrap()
}

fn started(definition: &str) -> SagaEvent {
    SagaEvent::Started {
        definition: definition.into(),
        version: 1,
        input: raw(&trail()),
        started_at_ms: 0,
        trace: None,
    }
}

/// Writes a crafted log through the store's public API, as a running saga.
async fn seed(store: &dyn SagaStore, id: &str, definition: &str, events: &[SagaEvent]) {
    let new = NewSaga::new(
        Arc::from(id),
        Arc::from(definition),
        1,
        SagaStatus::Running,
        events.iter().map(SagaEvent::encode).collect(),
    );
    assert_eq!(store.create(new).await.unwrap(), Created::New);
}

/// A healthy unfinished saga: step 0 started, no result (recovery runs it again).
async fn seed_healthy(store: &dyn SagaStore, id: &str, definition: &str) {
    seed(
        store,
        id,
        definition,
        &[
            started(definition),
            SagaEvent::StepStarted {
                step: 0,
                attempt: 1,
            },
        ],
    )
    .await;
}

async fn completes(engine: &SagaEngine, def: &SagaDefinition<Trail>, id: &str) {
    let handle = engine.start(def, id, trail()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_mins(1), handle.outcome())
        .await
        .expect("the healthy saga finishes")
        .unwrap();
    assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
}

fn rule_of(report: &staunch_saga::RecoveryReport, id: &str) -> Option<(u64, LogRule)> {
    report
        .quarantined
        .iter()
        .find(|(s, _)| s == id)
        .and_then(|(_, e)| match e {
            LoadError::Invalid { seq, rule, .. } => Some((*seq, *rule)),
            _ => None,
        })
}

// --- durations -------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_saga_deadline_of_duration_max_is_usable() {
    let calls = calls();
    let (a, _) = support::scripted("only", Phase::Action, Script::Ok, &calls);
    let def = SagaDefinition::builder("forever", 1)
        .step(
            Step::new("only", a).retry(
                StepRetry::new(2).timeout(Duration::MAX).backoff(
                    staunch_core::Backoff::constant(Duration::MAX)
                        .build()
                        .unwrap(),
                ),
            ),
        )
        .deadline(Duration::MAX)
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let engine = SagaEngine::new(store.clone());
    let outcome = engine
        .start(&def, "f-1", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(outcome, SagaOutcome::Completed(_)));
    // Resumed from a log too (the deadline is measured from the stored start).
    seed_healthy(&store, "f-2", "forever").await;
    let report = engine.recover().await.unwrap();
    assert_eq!(report.resumed, ["f-2"]);
    completes(&engine, &def, "f-2").await;
}

#[tokio::test(start_paused = true)]
async fn a_recovery_loop_with_a_zero_interval_runs_passes() {
    let def = linear("zero", &[Script::Ok], &calls());
    let store = MemoryStore::new();
    let engine = SagaEngine::new(store.clone());
    engine.register(&def).unwrap();
    let _loop = engine.spawn_recovery(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(5)).await;
    seed_healthy(&store, "z-1", "zero").await;
    let seen_done = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let s = store.load("z-1").await.unwrap().unwrap().summary.status;
            if s == SagaStatus::Completed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(seen_done.is_ok(), "the loop resumed the saga");
}

// --- logs that break the rules ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_step_index_far_beyond_the_definition_quarantines_without_allocating() {
    let def = linear("idx", &[Script::Ok, Script::Ok], &calls());
    let store = MemoryStore::new();
    seed(
        &store,
        "huge",
        "idx",
        &[
            started("idx"),
            SagaEvent::StepStarted {
                step: u32::MAX,
                attempt: 1,
            },
        ],
    )
    .await;
    seed_healthy(&store, "ok", "idx").await;
    let engine = SagaEngine::new(store.clone());
    engine.register(&def).unwrap();
    let report = engine.recover().await.unwrap();
    assert_eq!(rule_of(&report, "huge"), Some((1, LogRule::StepIndex)));
    assert_eq!(report.resumed, ["ok"]);
    completes(&engine, &def, "ok").await;
    let huge = store.load("huge").await.unwrap().unwrap();
    assert_eq!(huge.summary.status, SagaStatus::Quarantined);
    assert!(huge.summary.note.unwrap().contains("row 1"));
    assert_eq!(huge.events.len(), 2, "every row is kept");
}

#[tokio::test(start_paused = true)]
async fn stored_step_indexes_and_counters_out_of_range_quarantine_their_saga() {
    let def = linear("bad", &[Script::Ok, Script::Ok], &calls());
    let store = MemoryStore::new();
    let s0 = |attempt| SagaEvent::StepStarted { step: 0, attempt };
    let cases: Vec<(&str, Vec<SagaEvent>, u64, LogRule)> = vec![
        (
            "stuck-42",
            vec![
                started("bad"),
                s0(1),
                SagaEvent::Stuck {
                    step: 42,
                    phase: Phase::Action,
                    error: "x".into(),
                },
            ],
            2,
            LogRule::StepIndex,
        ),
        (
            "began-4e9",
            vec![
                started("bad"),
                s0(1),
                SagaEvent::StepFailed {
                    step: 0,
                    attempt: 1,
                    kind: StepErrorKind::Business,
                    error: "no".into(),
                    retry_at_ms: None,
                },
                SagaEvent::CompensationBegan {
                    failed_step: 4_000_000_000,
                    error: "no".into(),
                },
            ],
            3,
            LogRule::StepIndex,
        ),
        (
            "attempt-max",
            vec![
                started("bad"),
                s0(u32::MAX),
                SagaEvent::StepFailed {
                    step: 0,
                    attempt: u32::MAX,
                    kind: StepErrorKind::Retryable,
                    error: "again".into(),
                    retry_at_ms: None,
                },
            ],
            1,
            LogRule::AttemptCounter,
        ),
        (
            "comp-attempt-max",
            vec![
                started("bad"),
                s0(1),
                SagaEvent::StepCompleted {
                    step: 0,
                    state: raw(&trail()),
                    member: None,
                },
                SagaEvent::StepStarted {
                    step: 1,
                    attempt: 1,
                },
                SagaEvent::StepFailed {
                    step: 1,
                    attempt: 1,
                    kind: StepErrorKind::Business,
                    error: "no".into(),
                    retry_at_ms: None,
                },
                SagaEvent::CompensationBegan {
                    failed_step: 1,
                    error: "no".into(),
                },
                SagaEvent::CompensationStarted {
                    step: 0,
                    attempt: u32::MAX,
                },
            ],
            6,
            LogRule::AttemptCounter,
        ),
        (
            "two-terminals",
            vec![started("bad"), SagaEvent::Completed, SagaEvent::Completed],
            2,
            LogRule::TerminalLast,
        ),
        ("no-started", vec![s0(1)], 0, LogRule::StartedFirst),
    ];
    for (id, events, _, _) in &cases {
        seed(&store, id, "bad", events).await;
    }
    seed_healthy(&store, "zz-ok", "bad").await;
    let engine = SagaEngine::new(store.clone());
    engine.register(&def).unwrap();
    let report = engine.recover().await.unwrap();
    for (id, events, seq, rule) in &cases {
        assert_eq!(
            rule_of(&report, id),
            Some((*seq, *rule)),
            "{id}: {report:?}"
        );
        let log = store.load(id).await.unwrap().unwrap();
        assert_eq!(log.summary.status, SagaStatus::Quarantined, "{id}");
        assert_eq!(log.events.len(), events.len(), "{id}: every row is kept");
    }
    assert_eq!(report.resumed, ["zz-ok"]);
    completes(&engine, &def, "zz-ok").await;
    // The engine forgot them: nothing is "already running", nothing resumes again.
    let again = engine.recover().await.unwrap();
    assert!(
        again.already_running.is_empty() && again.resumed.is_empty(),
        "{again:?}"
    );
}

// --- panics inside a saga's task --------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_panicking_merge_marks_the_saga_stuck_and_resolves_its_handle() {
    let calls = calls();
    let group = ParallelGroup::new("both")
        .step(support::step("left", Script::Ok, Some(Script::Ok), &calls))
        .step(support::step("right", Script::Ok, Some(Script::Ok), &calls))
        .merge(|_acc: Trail, _m: Trail| panic!("merge exploded"));
    let def = SagaDefinition::builder("merging", 1)
        .parallel(group)
        .build()
        .unwrap();
    let engine = SagaEngine::new(MemoryStore::new());
    let handle = engine.start(&def, "m-1", trail()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_mins(1), handle.outcome())
        .await
        .expect("the handle resolves");
    match outcome {
        Err(SagaError::Panicked { saga_id, message }) => {
            assert_eq!(saga_id, "m-1");
            assert!(message.contains("merge exploded"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let stuck = engine.stuck().await.unwrap();
    assert_eq!(stuck.len(), 1);
    assert!(stuck[0].note.as_deref().unwrap().contains("merge exploded"));
    let report = engine.recover().await.unwrap();
    assert!(report.already_running.is_empty() && report.resumed.is_empty());
    // A new handle for the id sees the stuck saga.
    let again = engine.start(&def, "m-1", trail()).await.unwrap();
    assert!(matches!(
        again.outcome().await.unwrap(),
        SagaOutcome::Stuck { .. }
    ));
}

/// A memory store whose `append` panics once, on the `n`th call.
#[derive(Debug, Clone, Default)]
struct PanickyStore {
    inner: MemoryStore,
    appends: Arc<AtomicU32>,
    panic_at: u32,
}

impl SagaStore for PanickyStore {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        self.inner.create(saga)
    }
    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(n != self.panic_at, "store exploded");
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
}

#[tokio::test(start_paused = true)]
async fn a_panicking_store_marks_the_saga_and_resolves_its_handle() {
    let calls = calls();
    let def = linear("panicky", &[Script::Ok, Script::Ok], &calls);
    let store = PanickyStore {
        panic_at: 1,
        ..PanickyStore::default()
    };
    let engine = SagaEngine::new(store.clone());
    let handle = engine.start(&def, "p-1", trail()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_mins(1), handle.outcome())
        .await
        .expect("the handle resolves");
    assert!(
        matches!(&outcome, Err(SagaError::Panicked { message, .. }) if message.contains("store exploded")),
        "{outcome:?}"
    );
    let stuck = engine.stuck().await.unwrap();
    assert_eq!(stuck.len(), 1, "an operator sees it");
    let report = engine.recover().await.unwrap();
    assert!(report.already_running.is_empty() && report.resumed.is_empty());
    // The action ran once; only the operator runs it again.
    assert_eq!(seen(&calls), ["s0:action"]);
    let retried = engine.retry_stuck(&def, "p-1", "test").await.unwrap();
    assert!(matches!(
        retried.outcome().await.unwrap(),
        SagaOutcome::Completed(_)
    ));
}

// --- outputs that cannot be stored ------------------------------------------------------

/// A state that refuses to serialize once poisoned.
#[derive(Clone, Debug, Default, Deserialize)]
struct Picky {
    n: u32,
    poison: bool,
}

impl Serialize for Picky {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        if self.poison {
            return Err(serde::ser::Error::custom("poisoned state"));
        }
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Picky", 2)?;
        st.serialize_field("n", &self.n)?;
        st.serialize_field("poison", &self.poison)?;
        st.end()
    }
}

#[tokio::test(start_paused = true)]
async fn an_action_output_that_cannot_be_stored_is_stuck_and_never_rerun_silently() {
    let runs = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let def = SagaDefinition::<Picky>::builder("picky", 1)
        .step(Step::new("poison", move |mut p: Picky, _| {
            r.fetch_add(1, Ordering::SeqCst);
            async move {
                p.poison = true;
                Ok(p)
            }
        }))
        .build()
        .unwrap();
    let engine = SagaEngine::new(MemoryStore::new());
    let outcome = engine
        .start(&def, "k-1", Picky::default())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    match outcome {
        SagaOutcome::Stuck { step, phase, error } => {
            assert_eq!((step.as_str(), phase), ("poison", Phase::Action));
            assert!(error.contains("poisoned state"), "{error}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(engine.stuck().await.unwrap().len(), 1);
    let report = engine.recover().await.unwrap();
    assert!(report.resumed.is_empty(), "{report:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the action ran once");
}

#[tokio::test(start_paused = true)]
async fn a_compensation_output_that_cannot_be_stored_is_stuck() {
    let runs = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let def = SagaDefinition::<Picky>::builder("picky-comp", 1)
        .step(
            Step::new("first", |mut p: Picky, _| async move {
                p.n += 1;
                Ok(p)
            })
            .compensate(move |mut p: Picky, _| {
                r.fetch_add(1, Ordering::SeqCst);
                async move {
                    p.poison = true;
                    Ok(p)
                }
            }),
        )
        .step(Step::new("second", |_p: Picky, _| async move {
            Err::<Picky, _>(StepError::fail("declined"))
        }))
        .build()
        .unwrap();
    let engine = SagaEngine::new(MemoryStore::new());
    let outcome = engine
        .start(&def, "kc-1", Picky::default())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(
        matches!(&outcome, SagaOutcome::Stuck { step, phase: Phase::Compensate, .. } if step == "first"),
        "{outcome:?}"
    );
    let report = engine.recover().await.unwrap();
    assert!(report.resumed.is_empty());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

// --- recovery releases every claim --------------------------------------------------------

/// A memory store whose `quarantine` fails, recording every release; `load` of the saga
/// named in `hang` never finishes.
#[derive(Debug, Clone, Default)]
struct NoQuarantine {
    inner: MemoryStore,
    released: Arc<Mutex<Vec<String>>>,
    fail: Arc<AtomicBool>,
    hang: Arc<Mutex<Option<String>>>,
}

impl NoQuarantine {
    /// The sagas that completed (the memory store answers at once).
    fn completed_ids(&self) -> Vec<String> {
        use futures_util::FutureExt;
        let filter = staunch_saga::ListFilter::status(SagaStatus::Completed);
        self.inner
            .list(&filter)
            .now_or_never()
            .and_then(Result::ok)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.saga_id)
            .collect()
    }
}

impl SagaStore for NoQuarantine {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        self.inner.create(saga)
    }
    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.append(append)
    }
    fn load<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<Option<SagaLog>, StoreError>> {
        if self.hang.lock().unwrap().as_deref() == Some(saga_id) {
            return Box::pin(std::future::pending());
        }
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
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Database("disk full".into())) });
        }
        self.inner.quarantine(saga_id, reason)
    }
    fn release(&self, saga_id: &str) {
        self.released.lock().unwrap().push(saga_id.to_owned());
    }
}

/// Which of `ids` the store was given back and has not seen resumed since (sorted): a saga
/// resumed and completed is released by its runner too, so those that completed are left out
/// by the caller's count of completions.
fn given_back(store: &NoQuarantine, ids: &[&str]) -> Vec<String> {
    let released = store.released.lock().unwrap();
    let completed = store.completed_ids();
    let mut back: Vec<String> = ids
        .iter()
        .filter(|id| released.iter().any(|r| r == *id) && !completed.contains(&id.to_string()))
        .map(|id| (*id).to_owned())
        .collect();
    back.sort();
    back
}

#[tokio::test(start_paused = true)]
async fn a_failing_quarantine_releases_every_claimed_saga() {
    let def = linear("rel", &[Script::Ok], &calls());
    let store = NoQuarantine::default();
    store.fail.store(true, Ordering::SeqCst);
    seed(
        &store,
        "a-bad",
        "rel",
        &[
            started("rel"),
            SagaEvent::StepStarted {
                step: 7,
                attempt: 1,
            },
        ],
    )
    .await;
    seed_healthy(&store, "b-ok", "rel").await;
    seed_healthy(&store, "c-ok", "rel").await;
    let engine = SagaEngine::new(store.clone());
    engine.register(&def).unwrap();
    assert!(engine.recover().await.is_err());
    // The pass works on up to 16 sagas at once: the healthy ones it resumed before the
    // failure run on; every other claim (the failing one's included) is given back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let released = given_back(&store, &["b-ok", "c-ok"]);
    assert!(store.released.lock().unwrap().contains(&"a-bad".to_owned()));
    assert_eq!(engine.metrics().completed as usize + released.len(), 2);
    // Nothing is left claimed in memory: the next pass (quarantine working again) does the rest.
    store.fail.store(false, Ordering::SeqCst);
    let report = engine.recover().await.unwrap();
    assert_eq!(report.resumed, released);
    assert_eq!(rule_of(&report, "a-bad"), Some((1, LogRule::StepIndex)));
}

#[tokio::test(start_paused = true)]
async fn a_failing_quarantine_gives_back_the_claims_before_and_after_it() {
    let def = linear("rel-mid", &[Script::Ok], &calls());
    let store = NoQuarantine::default();
    store.fail.store(true, Ordering::SeqCst);
    seed_healthy(&store, "a-ok", "rel-mid").await;
    seed(
        &store,
        "b-bad",
        "rel-mid",
        &[
            started("rel-mid"),
            SagaEvent::StepStarted {
                step: 9,
                attempt: 1,
            },
        ],
    )
    .await;
    seed_healthy(&store, "c-ok", "rel-mid").await;
    let engine = SagaEngine::new(store.clone());
    engine.register(&def).unwrap();
    assert!(engine.recover().await.is_err());
    // `a-ok` was resumed before the failure and completes; of the others, what the pass had
    // not resumed is given back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let released = given_back(&store, &["a-ok", "c-ok"]);
    assert!(!released.contains(&"a-ok".to_owned()), "{released:?}");
    assert!(store.released.lock().unwrap().contains(&"b-bad".to_owned()));
    assert_eq!(engine.metrics().completed as usize + released.len(), 2);
    store.fail.store(false, Ordering::SeqCst);
    let report = engine.recover().await.unwrap();
    assert_eq!(report.resumed, released);
    assert_eq!(rule_of(&report, "b-bad"), Some((1, LogRule::StepIndex)));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_recovery_pass_gives_back_every_claim() {
    let def = linear("cancel", &[Script::Ok], &calls());
    let store = NoQuarantine::default();
    *store.hang.lock().unwrap() = Some("b-hang".into());
    seed_healthy(&store, "a-ok", "cancel").await;
    seed_healthy(&store, "b-hang", "cancel").await;
    seed_healthy(&store, "c-ok", "cancel").await;
    let engine = SagaEngine::new(store.clone());
    engine.register(&def).unwrap();
    let pass = tokio::spawn({
        let engine = engine.clone();
        async move { engine.recover().await }
    });
    // `a-ok` is resumed (and completes); the pass then waits on `b-hang`'s log (and may
    // have resumed `c-ok`, loaded beside it).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!pass.is_finished());
    pass.abort();
    assert!(pass.await.unwrap_err().is_cancelled());
    let released = given_back(&store, &["a-ok", "b-hang", "c-ok"]);
    assert!(released.contains(&"b-hang".to_owned()), "{released:?}");
    assert!(!released.contains(&"a-ok".to_owned()), "{released:?}");
    // Nothing is left claimed in the engine either: the next pass resumes what was given back.
    *store.hang.lock().unwrap() = None;
    let report = engine.recover().await.unwrap();
    assert_eq!(report.resumed, released);
    assert!(report.already_running.is_empty(), "{report:?}");
}

// --- SQLite: crafted rows in a real file ----------------------------------------------------

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use staunch_saga::SqliteStore;
    use staunch_saga::sqlx::{self, Connection};

    async fn raw_conn(path: &std::path::Path) -> sqlx::SqliteConnection {
        let url = format!("sqlite://{}", path.display());
        sqlx::SqliteConnection::connect(&url).await.unwrap()
    }

    #[tokio::test]
    async fn a_busy_timeout_of_duration_max_is_usable() {
        let dir = support::TempDir::new("busy-max");
        let store = SqliteStore::builder(dir.file("s.db"))
            .busy_timeout(Duration::MAX)
            .open()
            .await
            .unwrap();
        let def = linear("busy", &[Script::Ok], &calls());
        let engine = SagaEngine::new(store);
        completes(&engine, &def, "b-1").await;
    }

    #[tokio::test]
    async fn a_gap_in_the_sequence_quarantines_the_saga() {
        let dir = support::TempDir::new("gap");
        let path = dir.file("s.db");
        let def = linear("gap", &[Script::Ok, Script::Ok], &calls());
        let store = SqliteStore::open(&path).await.unwrap();
        seed(
            &store,
            "gap",
            "gap",
            &[
                started("gap"),
                SagaEvent::StepStarted {
                    step: 0,
                    attempt: 1,
                },
                SagaEvent::StepCompleted {
                    step: 0,
                    state: raw(&trail()),
                    member: None,
                },
                SagaEvent::StepStarted {
                    step: 1,
                    attempt: 1,
                },
            ],
        )
        .await;
        seed_healthy(&store, "ok", "gap").await;
        drop(store);
        let mut conn = raw_conn(&path).await;
        sqlx::query("DELETE FROM staunch_saga_events WHERE saga_id = 'gap' AND seq = 2")
            .execute(&mut conn)
            .await
            .unwrap();
        let store = SqliteStore::open(&path).await.unwrap();
        let engine = SagaEngine::new(store.clone());
        engine.register(&def).unwrap();
        let report = engine.recover().await.unwrap();
        assert_eq!(
            rule_of(&report, "gap"),
            Some((3, LogRule::Sequence)),
            "{report:?}"
        );
        assert_eq!(report.resumed, ["ok"]);
        completes(&engine, &def, "ok").await;
        let gap = store.load("gap").await.unwrap().unwrap();
        assert_eq!(gap.summary.status, SagaStatus::Quarantined);
        assert_eq!(gap.events.len(), 3, "every row is kept");
        let again = engine.recover().await.unwrap();
        assert!(again.resumed.is_empty() && again.quarantined.is_empty());
    }

    #[tokio::test]
    async fn a_sequence_number_at_i64_max_fails_only_its_own_append() {
        let dir = support::TempDir::new("seq-max");
        let path = dir.file("s.db");
        let store = SqliteStore::open(&path).await.unwrap();
        for id in ["huge", "fine"] {
            seed_healthy(&store, id, "seqmax").await;
        }
        drop(store);
        let mut conn = raw_conn(&path).await;
        sqlx::query(
            "UPDATE staunch_saga_events SET seq = 9223372036854775807 \
             WHERE saga_id = 'huge' AND seq = 1",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let store = SqliteStore::open(&path).await.unwrap();
        let row = SagaEvent::StepFailed {
            step: 0,
            attempt: 1,
            kind: StepErrorKind::Retryable,
            error: "x".into(),
            retry_at_ms: None,
        }
        .encode();
        let append =
            |id: &str| Append::new(Arc::from(id), 2, vec![row.clone()], SagaStatus::Running);
        // Both in one group commit.
        let (huge, fine) = tokio::join!(store.append(append("huge")), store.append(append("fine")));
        assert!(huge.is_err(), "{huge:?}");
        fine.unwrap();
        assert_eq!(store.load("fine").await.unwrap().unwrap().events.len(), 3);
        // Recovery quarantines the broken one and leaves the other alone.
        let def = linear("seqmax", &[Script::Ok], &calls());
        let engine = SagaEngine::new(store.clone());
        engine.register(&def).unwrap();
        let report = engine.recover().await.unwrap();
        // The row found where row 1 belongs is named.
        assert_eq!(
            rule_of(&report, "huge"),
            Some((i64::MAX as u64, LogRule::Sequence)),
            "{report:?}"
        );
        assert_eq!(report.resumed, ["fine"]);
        completes(&engine, &def, "fine").await;
    }

    #[tokio::test]
    async fn a_row_the_database_refuses_fails_only_its_own_append() {
        let dir = support::TempDir::new("refused");
        let path = dir.file("s.db");
        let store = SqliteStore::open(&path).await.unwrap();
        for id in ["doomed", "fine"] {
            seed_healthy(&store, id, "refused").await;
        }
        let mut conn = raw_conn(&path).await;
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON staunch_saga_events \
             WHEN NEW.saga_id = 'doomed' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let row = SagaEvent::StepFailed {
            step: 0,
            attempt: 1,
            kind: StepErrorKind::Retryable,
            error: "x".into(),
            retry_at_ms: None,
        }
        .encode();
        let append =
            |id: &str| Append::new(Arc::from(id), 2, vec![row.clone()], SagaStatus::Running);
        let (doomed, fine) =
            tokio::join!(store.append(append("doomed")), store.append(append("fine")));
        assert!(doomed.is_err(), "{doomed:?}");
        fine.unwrap();
        assert_eq!(store.load("fine").await.unwrap().unwrap().events.len(), 3);
        assert_eq!(store.load("doomed").await.unwrap().unwrap().events.len(), 2);
    }

    #[tokio::test]
    async fn invalid_utf8_inside_a_stored_state_quarantines_the_saga() {
        let dir = support::TempDir::new("utf8");
        let path = dir.file("s.db");
        let store = SqliteStore::open(&path).await.unwrap();
        seed_healthy(&store, "bad", "utf8").await;
        seed_healthy(&store, "ok", "utf8").await;
        drop(store);
        let mut t = trail();
        t.note = "AB".into();
        let mut bytes = SagaEvent::Started {
            definition: "utf8".into(),
            version: 1,
            input: raw(&t),
            started_at_ms: 0,
            trace: None,
        }
        .encode()
        .into_bytes();
        let at = bytes.windows(2).position(|w| w == b"AB").unwrap();
        bytes[at] = 0xff;
        let mut conn = raw_conn(&path).await;
        sqlx::query("UPDATE staunch_saga_events SET payload = ? WHERE saga_id = 'bad' AND seq = 0")
            .bind(bytes)
            .execute(&mut conn)
            .await
            .unwrap();
        let store = SqliteStore::open(&path).await.unwrap();
        let def = linear("utf8", &[Script::Ok], &calls());
        let engine = SagaEngine::new(store.clone());
        engine.register(&def).unwrap();
        let report = engine.recover().await.unwrap();
        assert_eq!(report.resumed, ["ok"]);
        match &report.quarantined[..] {
            [(id, LoadError::Corrupt { seq: 0, reason })] => {
                assert_eq!(id, "bad");
                assert!(reason.contains("UTF-8"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        completes(&engine, &def, "ok").await;
        assert_eq!(store.load("bad").await.unwrap().unwrap().events.len(), 2);
    }
}

// --- PostgreSQL: durations at their limits, one saga's bad value in a shared batch ---------

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    #[tokio::test]
    async fn a_lease_ttl_of_duration_max_is_usable() {
        let Some((store, _guard)) = support::pg::store("ttl_max", Duration::MAX).await else {
            return;
        };
        let def = linear("ttlmax", &[Script::Ok, Script::Ok], &calls());
        let engine = SagaEngine::new(store.clone());
        completes(&engine, &def, "t-1").await;
        // Recovery claims with the same saturated expiry.
        seed_healthy(&store, "t-2", "ttlmax").await;
        store.release("t-2");
        let report = engine.recover().await.unwrap();
        assert!(
            report.resumed.is_empty() || report.resumed == ["t-2"],
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn a_nul_in_one_sagas_note_fails_no_other_append() {
        let Some((store, _guard)) = support::pg::store("nul_note", Duration::from_secs(15)).await
        else {
            return;
        };
        for id in ["nul", "fine"] {
            seed_healthy(&store, id, "nul").await;
        }
        let row = SagaEvent::Stuck {
            step: 0,
            phase: Phase::Action,
            error: "bad\0byte".into(),
        }
        .encode();
        let append = |id: &str, note: &str| {
            Append::new(Arc::from(id), 2, vec![row.clone()], SagaStatus::Stuck)
                .with_note(Some(note.to_owned()))
        };
        let (nul, fine) = tokio::join!(
            store.append(append("nul", "bad\0byte")),
            store.append(append("fine", "plain"))
        );
        fine.unwrap();
        // The note is a summary: its NUL is replaced (the log row keeps the exact message).
        nul.unwrap();
        let log = store.load("nul").await.unwrap().unwrap();
        assert_eq!(log.summary.status, SagaStatus::Stuck);
        assert_eq!(log.summary.note.as_deref(), Some("bad\u{fffd}byte"));
        assert_eq!(log.events.len(), 3);
        // The quarantine reason too.
        store.quarantine("nul", "why\0not").await.unwrap();
        // A value the database refuses in one create (a NUL in the definition name) fails
        // that create alone, not the others of its batch.
        let new = |id: &str, definition: &str| {
            NewSaga::new(
                Arc::from(id),
                Arc::from(definition),
                1,
                SagaStatus::Running,
                vec![started("nul").encode()],
            )
        };
        let (bad, good) = tokio::join!(
            store.create(new("bad-def", "nul\0def")),
            store.create(new("good-def", "nul"))
        );
        assert!(bad.is_err(), "{bad:?}");
        assert_eq!(good.unwrap(), Created::New);
    }
}
