//! Property tests: arbitrary (corrupted) saga logs fed to recovery, on the memory store and
//! on SQLite files. Recovery never panics, never aborts, never hangs; every saga it claims is
//! resumed (and then ends or gets stuck) or quarantined; no row is ever deleted; and a
//! healthy saga in the same store finishes.
//!
//! Case counts keep CI short: `STAUNCH_FUZZ_CASES` (default 2000) cases on the memory store
//! with several corrupted sagas each, and a twentieth of that on SQLite files, each file
//! holding 24 corrupted sagas.

mod support;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::value::RawValue;
use staunch_saga::{
    MemoryStore, NewSaga, ParallelGroup, Phase, SagaDefinition, SagaEngine, SagaError, SagaEvent,
    SagaOutcome, SagaStatus, SagaStore, StepErrorKind,
};
use support::{Script, Trail, calls, step, trail};

const DEF: &str = "fuzz";

/// Six steps: compensatable, a parallel group of two, compensatable, pivot, retriable.
fn definition() -> SagaDefinition<Trail> {
    let calls = calls();
    SagaDefinition::builder(DEF, 1)
        .step(step("s0", Script::Ok, Some(Script::Ok), &calls))
        .parallel(
            ParallelGroup::new("g")
                .step(step("m1", Script::Ok, Some(Script::Ok), &calls))
                .step(step("m2", Script::Ok, Some(Script::Ok), &calls))
                .merge(|mut acc: Trail, m: Trail| {
                    acc.done.extend(m.done);
                    acc
                }),
        )
        .step(step("s3", Script::Ok, Some(Script::Ok), &calls))
        .step(step("s4", Script::Ok, None, &calls).pivot())
        .step(step("s5", Script::Ok, None, &calls).retriable())
        .build()
        .unwrap()
}

fn cases() -> u32 {
    std::env::var("STAUNCH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn raw_trail() -> Box<RawValue> {
    serde_json::value::to_raw_value(&trail()).unwrap()
}

/// A state that is JSON but not a `Trail`.
fn raw_alien() -> Box<RawValue> {
    serde_json::value::to_raw_value(&42).unwrap()
}

fn started(definition: &str, version: u32) -> SagaEvent {
    SagaEvent::Started {
        definition: definition.into(),
        version,
        input: raw_trail(),
        started_at_ms: 0,
        trace: None,
    }
}

/// The log of a full forward run; its prefixes are valid unfinished sagas.
fn canonical() -> Vec<SagaEvent> {
    let ss = |step| SagaEvent::StepStarted { step, attempt: 1 };
    let sc = |step, member: bool| SagaEvent::StepCompleted {
        step,
        state: raw_trail(),
        member: member.then(raw_trail),
    };
    vec![
        started(DEF, 1),
        ss(0),
        sc(0, false),
        ss(1),
        ss(2),
        sc(1, true),
        sc(2, true),
        ss(3),
        sc(3, false),
        ss(4),
        sc(4, false),
        ss(5),
        sc(5, false),
        SagaEvent::Completed,
    ]
}

/// A stored next-attempt time: none, now-ish, or absurd.
fn retry_at() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()])
}

fn step_index() -> impl Strategy<Value = u32> {
    prop_oneof![
        12 => 0u32..6,
        2 => 6u32..10,
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
}

fn attempt() -> impl Strategy<Value = u32> {
    prop_oneof![
        10 => 1u32..4,
        1 => Just(0u32),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
}

fn kind() -> impl Strategy<Value = StepErrorKind> {
    prop_oneof![
        Just(StepErrorKind::Retryable),
        Just(StepErrorKind::Business),
        Just(StepErrorKind::Timeout),
        Just(StepErrorKind::Panicked),
        Just(StepErrorKind::Deadline),
        Just(StepErrorKind::Interrupted),
        Just(StepErrorKind::Cancelled),
        Just(StepErrorKind::Unstorable),
    ]
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![Just(Phase::Action), Just(Phase::Compensate)]
}

fn state() -> impl Strategy<Value = Box<RawValue>> {
    prop_oneof![8 => Just(()).prop_map(|()| raw_trail()), 1 => Just(()).prop_map(|()| raw_alien())]
}

/// Any event, with values mostly in range and sometimes at the limits.
fn event() -> impl Strategy<Value = SagaEvent> {
    prop_oneof![
        4 => (step_index(), attempt()).prop_map(|(step, attempt)| SagaEvent::StepStarted { step, attempt }),
        3 => (step_index(), state(), proptest::option::of(state()))
            .prop_map(|(step, state, member)| SagaEvent::StepCompleted { step, state, member }),
        3 => (step_index(), attempt(), kind(), retry_at()).prop_map(|(step, attempt, kind, retry_at_ms)| SagaEvent::StepFailed {
            step, attempt, kind, error: "e".into(), retry_at_ms
        }),
        2 => step_index().prop_map(|failed_step| SagaEvent::CompensationBegan { failed_step, error: "e".into() }),
        2 => (step_index(), attempt()).prop_map(|(step, attempt)| SagaEvent::CompensationStarted { step, attempt }),
        2 => (step_index(), state()).prop_map(|(step, state)| SagaEvent::CompensationCompleted { step, state }),
        2 => (step_index(), attempt(), kind(), retry_at()).prop_map(|(step, attempt, kind, retry_at_ms)| SagaEvent::CompensationFailed {
            step, attempt, kind, error: "e".into(), retry_at_ms
        }),
        1 => Just(SagaEvent::CancelBegan { reason: "r".into(), actor: "a".into() }),
        1 => Just(SagaEvent::Paused { actor: "a".into() }),
        1 => Just(SagaEvent::Resumed { actor: "a".into() }),
        1 => Just(SagaEvent::Cancelled { reason: "r".into() }),
        2 => (step_index(), phase()).prop_map(|(step, phase)| SagaEvent::Stuck { step, phase, error: "e".into() }),
        1 => step_index().prop_map(|step| SagaEvent::OperatorRetried { step, actor: "op".into() }),
        1 => step_index().prop_map(|step| SagaEvent::OperatorSkipped { step, actor: String::new() }),
        1 => Just(SagaEvent::OperatorResolved { note: "n".into(), actor: "op".into() }),
        1 => Just(SagaEvent::Completed),
        1 => step_index().prop_map(|failed_step| SagaEvent::Compensated { failed_step, error: "e".into() }),
        1 => prop_oneof![Just(started(DEF, 1)), Just(started(DEF, 2)), Just(started("other", 1))],
    ]
}

/// A row that does not decode.
fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("{not json".to_owned()),
        Just(r#"{"v":2,"e":{"completed":null}}"#.to_owned()),
        Just(r#"{"v":1,"e":{"step_started":{"step":-1,"attempt":1}}}"#.to_owned()),
        Just(r#"{"v":1,"e":{"no_such_event":{}}}"#.to_owned()),
        "[ -~]{0,24}",
    ]
}

/// One change to a log.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, SagaEvent),
    Insert(usize, SagaEvent),
    Remove(usize),
    Garbage(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), event()).prop_map(|(i, e)| Mutation::Replace(i, e)),
        3 => (any::<usize>(), event()).prop_map(|(i, e)| Mutation::Insert(i, e)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => (any::<usize>(), garbage()).prop_map(|(i, g)| Mutation::Garbage(i, g)),
    ]
}

/// A corrupted log as rows: a prefix of a valid run (or of arbitrary events), mutated.
fn log() -> impl Strategy<Value = (Vec<String>, bool)> {
    let base = prop_oneof![
        3 => (1usize..14).prop_map(|n| canonical()[..n].to_vec()),
        1 => proptest::collection::vec(event(), 0..10).prop_map(|mut v| {
            v.insert(0, started(DEF, 1));
            v
        }),
    ];
    (
        base,
        proptest::collection::vec(mutation(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(events, mutations, compensating)| {
            let mut rows: Vec<String> = events.iter().map(SagaEvent::encode).collect();
            for m in mutations {
                let len = rows.len();
                match m {
                    Mutation::Replace(i, e) if len > 0 => rows[i % len] = e.encode(),
                    Mutation::Insert(i, e) => rows.insert(i % (len + 1), e.encode()),
                    Mutation::Remove(i) if len > 0 => {
                        rows.remove(i % len);
                    }
                    Mutation::Garbage(i, g) if len > 0 => rows[i % len] = g,
                    _ => {}
                }
            }
            (rows, compensating)
        })
}

fn status(compensating: bool) -> SagaStatus {
    if compensating {
        SagaStatus::Compensating
    } else {
        SagaStatus::Running
    }
}

fn healthy_rows() -> Vec<String> {
    canonical()[..2].iter().map(SagaEvent::encode).collect()
}

/// Recovers every saga of `store` and checks the properties. `lens` holds each corrupted
/// saga's id and row count.
async fn recover_and_check(
    store: &dyn SagaStore,
    engine: &SagaEngine,
    def: &SagaDefinition<Trail>,
    lens: &[(String, usize)],
    wait: Duration,
) -> Result<(), TestCaseError> {
    let report = tokio::time::timeout(wait, engine.recover())
        .await
        .map_err(|_| TestCaseError::fail("recover hung"))?
        .map_err(|e| TestCaseError::fail(format!("recover failed: {e}")))?;
    prop_assert!(report.already_running.is_empty(), "{report:?}");
    prop_assert!(
        report.resumed.iter().any(|id| id == "healthy"),
        "{report:?}"
    );
    for id in &report.resumed {
        let handle = match engine.start(def, id.as_str(), trail()).await {
            Ok(handle) => handle,
            // Finished already and then found quarantined, or a settled log that does not
            // replay: an error, never a panic.
            Err(SagaError::Quarantined { .. } | SagaError::Load { .. }) => continue,
            Err(e) => return Err(TestCaseError::fail(format!("{id}: start failed: {e}"))),
        };
        let Ok(outcome) = tokio::time::timeout(wait, handle.outcome()).await else {
            let log = store.load(id).await;
            return Err(TestCaseError::fail(format!(
                "{id}: the saga hung; log: {log:?}"
            )));
        };
        if let Err(SagaError::Panicked { message, .. }) = &outcome {
            return Err(TestCaseError::fail(format!(
                "{id}: a corrupt log reached a panic: {message}"
            )));
        }
        if id == "healthy" {
            prop_assert!(
                matches!(outcome, Ok(SagaOutcome::Completed(_))),
                "healthy: {outcome:?}"
            );
        }
    }
    for (id, len) in lens {
        let log = store.load(id).await.unwrap().unwrap();
        prop_assert!(log.events.len() >= *len, "{id}: rows were deleted");
        if log.summary.status.is_resumable() {
            // Only a saga whose runner stopped on a store error stays resumable; the memory
            // and SQLite stores here do not fail.
            return Err(TestCaseError::fail(format!(
                "{id} is still {} after recovery",
                log.summary.status
            )));
        }
    }
    let again = engine.recover().await.unwrap();
    prop_assert!(
        again.already_running.is_empty() && again.resumed.is_empty(),
        "{again:?}"
    );
    Ok(())
}

#[test]
fn recovery_of_corrupted_logs_on_the_memory_store() {
    let def = definition();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(log(), 1..5);
    runner
        .run(&strategy, |logs| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let store = MemoryStore::new();
                let mut lens = Vec::new();
                for (i, (rows, compensating)) in logs.iter().enumerate() {
                    let id = format!("bad-{i}");
                    store
                        .create(NewSaga::new(
                            Arc::from(id.as_str()),
                            Arc::from(DEF),
                            1,
                            status(*compensating),
                            rows.clone(),
                        ))
                        .await
                        .unwrap();
                    lens.push((id, rows.len()));
                }
                store
                    .create(NewSaga::new(
                        Arc::from("healthy"),
                        Arc::from(DEF),
                        1,
                        SagaStatus::Running,
                        healthy_rows(),
                    ))
                    .await
                    .unwrap();
                let engine = SagaEngine::new(store.clone());
                engine.register(&def).unwrap();
                recover_and_check(&store, &engine, &def, &lens, Duration::from_hours(1)).await
            })
        })
        .unwrap();
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use staunch_saga::SqliteStore;
    use staunch_saga::sqlx::{self, Connection};

    /// A change to a saga's rows that only a database file can hold.
    #[derive(Debug, Clone)]
    enum RowDamage {
        None,
        /// A gap: the row is deleted.
        Gap(usize),
        /// A sequence number that is not the row's position.
        Seq(usize, i64),
        /// A non-integer sequence number.
        RealSeq(usize),
        /// Bytes that are not UTF-8.
        NotUtf8(usize),
        /// A payload of another SQLite type.
        IntegerPayload(usize),
        /// A summary row the engine cannot use: the statement changes `staunch_sagas`.
        Summary(&'static str),
        /// A saga id that is not UTF-8, in the summary and every event row.
        IdNotUtf8,
    }

    /// Damage to a saga's summary row (`?` is the saga id).
    const SUMMARY_DAMAGE: &[&str] = &[
        "UPDATE staunch_sagas SET version = 'one' WHERE saga_id = ?",
        "UPDATE staunch_sagas SET version = version + 0.5 WHERE saga_id = ?",
        "UPDATE staunch_sagas SET version = 1099511627776 WHERE saga_id = ?",
        "UPDATE staunch_sagas SET version = -1 WHERE saga_id = ?",
        "UPDATE staunch_sagas SET note = CAST(COALESCE(note, '') AS BLOB) || X'FF' WHERE saga_id = ?",
        "UPDATE staunch_sagas SET note = X'00FF' WHERE saga_id = ?",
        "UPDATE staunch_sagas SET definition = CAST(definition AS BLOB) || X'C3' WHERE saga_id = ?",
        "UPDATE staunch_sagas SET definition = 17 WHERE saga_id = ?",
        "UPDATE staunch_sagas SET status = CAST(status AS BLOB) || X'FF' WHERE saga_id = ?",
        "UPDATE staunch_sagas SET status = 'hibernating' WHERE saga_id = ?",
        "UPDATE staunch_sagas SET status = 3 WHERE saga_id = ?",
        "UPDATE staunch_sagas SET status = CAST(status AS BLOB) WHERE saga_id = ?",
        "UPDATE staunch_sagas SET definition = CAST(definition AS BLOB) WHERE saga_id = ?",
    ];

    fn damage() -> impl Strategy<Value = RowDamage> {
        prop_oneof![
            2 => Just(RowDamage::None),
            2 => any::<usize>().prop_map(RowDamage::Gap),
            1 => (any::<usize>(), prop_oneof![Just(i64::MAX), Just(-5i64), Just(1_000i64)])
                .prop_map(|(i, s)| RowDamage::Seq(i, s)),
            1 => any::<usize>().prop_map(RowDamage::RealSeq),
            2 => any::<usize>().prop_map(RowDamage::NotUtf8),
            1 => any::<usize>().prop_map(RowDamage::IntegerPayload),
            3 => proptest::sample::select(SUMMARY_DAMAGE).prop_map(RowDamage::Summary),
            1 => Just(RowDamage::IdNotUtf8),
        ]
    }

    async fn apply(conn: &mut sqlx::SqliteConnection, id: &str, len: usize, d: &RowDamage) {
        match d {
            RowDamage::Summary(sql) => {
                sqlx::query(*sql)
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                return;
            }
            RowDamage::IdNotUtf8 => {
                for table in ["staunch_sagas", "staunch_saga_events"] {
                    let sql = format!(
                        "UPDATE {table} SET saga_id = CAST(saga_id AS BLOB) || X'FF' \
                         WHERE saga_id = ?"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                }
                return;
            }
            _ => {}
        }
        if len == 0 {
            return;
        }
        let seq = |i: &usize| i64::try_from(i % len).unwrap();
        let q = match d {
            RowDamage::None | RowDamage::Summary(_) | RowDamage::IdNotUtf8 => return,
            RowDamage::Gap(i) => {
                sqlx::query("DELETE FROM staunch_saga_events WHERE saga_id = ? AND seq = ?")
                    .bind(id)
                    .bind(seq(i))
            }
            RowDamage::Seq(i, s) => sqlx::query(
                "UPDATE OR IGNORE staunch_saga_events SET seq = ? WHERE saga_id = ? AND seq = ?",
            )
            .bind(*s)
            .bind(id)
            .bind(seq(i)),
            RowDamage::RealSeq(i) => sqlx::query(
                "UPDATE staunch_saga_events SET seq = seq + 0.5 WHERE saga_id = ? AND seq = ?",
            )
            .bind(id)
            .bind(seq(i)),
            RowDamage::NotUtf8(i) => sqlx::query(
                "UPDATE staunch_saga_events SET payload = CAST(payload AS BLOB) || X'FF' \
                 WHERE saga_id = ? AND seq = ?",
            )
            .bind(id)
            .bind(seq(i)),
            RowDamage::IntegerPayload(i) => sqlx::query(
                "UPDATE staunch_saga_events SET payload = 7 WHERE saga_id = ? AND seq = ?",
            )
            .bind(id)
            .bind(seq(i)),
        };
        q.execute(&mut *conn).await.unwrap();
    }

    /// Per row deleted by damage, the check allows one row fewer.
    fn kept(len: usize, d: &RowDamage) -> usize {
        match d {
            RowDamage::Gap(_) if len > 0 => len - 1,
            _ => len,
        }
    }

    /// Each kind of unusable summary row, alone beside a healthy saga: listing works and shows
    /// it quarantined with a note, recovery resumes the healthy saga, which completes.
    #[tokio::test]
    async fn an_unusable_summary_row_is_listed_quarantined_and_fails_nothing_else() {
        let def = definition();
        let damages = SUMMARY_DAMAGE
            .iter()
            .map(|sql| RowDamage::Summary(sql))
            .chain([RowDamage::IdNotUtf8]);
        for damage in damages {
            let dir = support::TempDir::new("summary");
            let path = dir.file("s.db");
            let store = SqliteStore::open(&path).await.unwrap();
            for id in ["damaged", "healthy"] {
                let new = NewSaga::new(
                    Arc::from(id),
                    Arc::from(DEF),
                    1,
                    SagaStatus::Running,
                    healthy_rows(),
                );
                store.create(new).await.unwrap();
            }
            drop(store);
            let url = format!("sqlite://{}", path.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            apply(&mut conn, "damaged", 2, &damage).await;
            conn.close().await.unwrap();

            let store = SqliteStore::open(&path).await.unwrap();
            let all = store.list(&staunch_saga::ListFilter::all()).await.unwrap();
            assert_eq!(all.len(), 2, "{damage:?}: {all:?}");
            let engine = SagaEngine::new(store.clone());
            engine.register(&def).unwrap();
            let report = engine.recover().await.unwrap();
            assert_eq!(report.resumed, ["healthy"], "{damage:?}: {report:?}");
            let all = store.list(&staunch_saga::ListFilter::all()).await.unwrap();
            assert_eq!(
                all[0].status,
                SagaStatus::Quarantined,
                "{damage:?}: {all:?}"
            );
            assert!(all[0].note.is_some(), "{damage:?}: {all:?}");
            let quarantined = store
                .list(&staunch_saga::ListFilter::status(SagaStatus::Quarantined))
                .await
                .unwrap();
            assert_eq!(quarantined.len(), 1, "{damage:?}: {quarantined:?}");
            let outcome = engine
                .start(&def, "healthy", trail())
                .await
                .unwrap()
                .outcome()
                .await;
            assert!(
                matches!(outcome, Ok(SagaOutcome::Completed(_))),
                "{damage:?}: {outcome:?}"
            );
        }
    }

    #[test]
    fn recovery_of_corrupted_logs_on_sqlite_files() {
        let def = definition();
        let mut runner = TestRunner::new(Config {
            cases: (cases() / 20).max(1),
            failure_persistence: None,
            max_shrink_iters: std::env::var("STAUNCH_FUZZ_SHRINK")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
            ..Config::default()
        });
        let strategy = proptest::collection::vec((log(), damage()), 24);
        runner
            .run(&strategy, |sagas| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let dir = support::TempDir::new("fuzz");
                    let path = dir.file("s.db");
                    let open = || {
                        SqliteStore::builder(&path)
                            .synchronous(staunch_saga::SqliteSynchronous::Off)
                            .open()
                    };
                    let store = open().await.unwrap();
                    for (i, ((rows, compensating), _)) in sagas.iter().enumerate() {
                        let new = NewSaga::new(
                            Arc::from(format!("bad-{i:02}").as_str()),
                            Arc::from(DEF),
                            1,
                            status(*compensating),
                            rows.clone(),
                        );
                        store.create(new).await.unwrap();
                    }
                    let new = NewSaga::new(
                        Arc::from("healthy"),
                        Arc::from(DEF),
                        1,
                        SagaStatus::Running,
                        healthy_rows(),
                    );
                    store.create(new).await.unwrap();
                    drop(store);
                    let url = format!("sqlite://{}", path.display());
                    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                    let mut lens = Vec::new();
                    for (i, ((rows, _), d)) in sagas.iter().enumerate() {
                        let id = format!("bad-{i:02}");
                        apply(&mut conn, &id, rows.len(), d).await;
                        // A saga whose id was damaged cannot be loaded by its old id.
                        if !matches!(d, RowDamage::IdNotUtf8) {
                            lens.push((id, kept(rows.len(), d)));
                        }
                    }
                    conn.close().await.unwrap();
                    let store = open().await.unwrap();
                    let engine = SagaEngine::new(store.clone());
                    engine.register(&def).unwrap();
                    recover_and_check(&store, &engine, &def, &lens, Duration::from_secs(10))
                        .await?;
                    // Every summary still lists (none is lost, none fails the listing), none
                    // is left resumable, and an unusable summary says why.
                    let all = store.list(&staunch_saga::ListFilter::all()).await;
                    let all = all.map_err(|e| TestCaseError::fail(format!("list failed: {e}")))?;
                    prop_assert_eq!(all.len(), sagas.len() + 1);
                    for ((_, d), summary) in sagas.iter().zip(&all) {
                        prop_assert!(!summary.status.is_resumable(), "{summary:?}");
                        if matches!(d, RowDamage::Summary(_) | RowDamage::IdNotUtf8) {
                            prop_assert_eq!(summary.status, SagaStatus::Quarantined);
                            prop_assert!(summary.note.is_some(), "{summary:?}");
                        }
                    }
                    let quarantined = store
                        .list(&staunch_saga::ListFilter::status(SagaStatus::Quarantined))
                        .await
                        .map_err(|e| TestCaseError::fail(format!("list failed: {e}")))?;
                    let damaged = sagas
                        .iter()
                        .filter(|(_, d)| matches!(d, RowDamage::Summary(_) | RowDamage::IdNotUtf8))
                        .count();
                    prop_assert!(quarantined.len() >= damaged, "{quarantined:?}");
                    Ok(())
                })
            })
            .unwrap();
    }
}

/// The same logs written through the PostgreSQL store's writer (its group commit and lease
/// bookkeeping), with the damage only a database can hold (gaps, foreign sequence numbers).
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use staunch_saga::sqlx::{self, Connection};

    #[derive(Debug, Clone)]
    enum RowDamage {
        None,
        /// A gap: the row is deleted.
        Gap(usize),
        /// A sequence number that is not the row's position.
        Seq(usize, i64),
        /// The summary names another definition than the log's first row.
        Definition,
    }

    fn damage() -> impl Strategy<Value = RowDamage> {
        prop_oneof![
            3 => Just(RowDamage::None),
            2 => any::<usize>().prop_map(RowDamage::Gap),
            1 => (any::<usize>(), prop_oneof![Just(i64::MAX), Just(-5i64), Just(1_000i64)])
                .prop_map(|(i, s)| RowDamage::Seq(i, s)),
            1 => Just(RowDamage::Definition),
        ]
    }

    async fn apply(
        conn: &mut sqlx::PgConnection,
        schema: &str,
        id: &str,
        len: usize,
        d: &RowDamage,
    ) -> usize {
        let seq = |i: &usize| i64::try_from(i % len.max(1)).unwrap();
        let (sql, kept) = match d {
            RowDamage::None => return len,
            RowDamage::Gap(_) | RowDamage::Seq(..) if len == 0 => return len,
            RowDamage::Gap(i) => (
                format!(
                    "DELETE FROM {schema}.staunch_saga_events WHERE saga_id = $1 AND seq = {}",
                    seq(i)
                ),
                len - 1,
            ),
            RowDamage::Seq(i, s) => (
                format!(
                    "UPDATE {schema}.staunch_saga_events SET seq = {s} \
                     WHERE saga_id = $1 AND seq = {} AND NOT EXISTS \
                     (SELECT 1 FROM {schema}.staunch_saga_events WHERE saga_id = $1 AND seq = {s})",
                    seq(i)
                ),
                len,
            ),
            RowDamage::Definition => (
                format!(
                    "UPDATE {schema}.staunch_sagas SET definition = 'other' WHERE saga_id = $1"
                ),
                len,
            ),
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .execute(&mut *conn)
            .await
            .unwrap();
        kept
    }

    #[test]
    fn recovery_of_corrupted_logs_written_through_postgres() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let Some((store, guard)) =
            rt.block_on(support::pg::store("corrupt_logs", Duration::from_secs(30)))
        else {
            return;
        };
        let conn = rt
            .block_on(sqlx::PgConnection::connect(&guard.url))
            .unwrap();
        let conn = tokio::sync::Mutex::new(conn);
        let def = definition();
        let mut runner = TestRunner::new(Config {
            cases: (cases() / 20).max(1),
            failure_persistence: None,
            max_shrink_iters: 32,
            ..Config::default()
        });
        let strategy = proptest::collection::vec((log(), damage()), 1..6);
        let schema = guard.schema.clone();
        runner
            .run(&strategy, |sagas| {
                rt.block_on(async {
                    let mut conn = conn.lock().await;
                    let truncate =
                        format!("TRUNCATE {schema}.staunch_sagas, {schema}.staunch_saga_events");
                    sqlx::query(sqlx::AssertSqlSafe(truncate))
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                    let mut ids = Vec::new();
                    for (i, ((rows, compensating), _)) in sagas.iter().enumerate() {
                        let id = format!("bad-{i}");
                        let new = NewSaga::new(
                            Arc::from(id.as_str()),
                            Arc::from(DEF),
                            1,
                            status(*compensating),
                            rows.clone(),
                        );
                        store.create(new).await.unwrap();
                        ids.push(id);
                    }
                    let new = NewSaga::new(
                        Arc::from("healthy"),
                        Arc::from(DEF),
                        1,
                        SagaStatus::Running,
                        healthy_rows(),
                    );
                    store.create(new).await.unwrap();
                    // Written by an instance that then let go of them, as after a crash.
                    for id in ids.iter().map(String::as_str).chain(["healthy"]) {
                        store.release(id);
                    }
                    let mut lens = Vec::new();
                    for (id, ((rows, _), d)) in ids.into_iter().zip(&sagas) {
                        let kept = apply(&mut conn, &schema, &id, rows.len(), d).await;
                        lens.push((id, kept));
                    }
                    let engine = SagaEngine::new(store.clone());
                    engine.register(&def).unwrap();
                    recover_and_check(&store, &engine, &def, &lens, Duration::from_secs(10)).await
                })
            })
            .unwrap();
    }
}
