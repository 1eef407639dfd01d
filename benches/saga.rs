//! Saga throughput: 3-step sagas with ~200 bytes of state whose steps return at once, per
//! store, reported as sagas/s (criterion `Throughput::Elements`).
//!
//! - `memory`: the engine's own cost (encoding, replay bookkeeping, tasks, handles).
//! - `sqlite_full_256`: SQLite with `synchronous=FULL`, 256 sagas in flight, group commit.
//! - `sqlite_raw_same_rows`: the floor under the previous line: the same kind of file (WAL,
//!   `synchronous=FULL`) appending the same rows (two log rows per saga per transition, four
//!   transitions per saga, plus the summary row inserted by the first and updated by the
//!   last) in the same batches of 256 sagas, with raw sqlx and no engine.
//! - `sqlite_rusqlite_same_rows`: the same rows in the same batches and statements on the
//!   same file, through `rusqlite` on the bench's own blocking thread (no async runtime, no
//!   hop to a driver thread per statement): what the driver's per-statement cost is.
//! - `sqlite_start_cap_256` and `sqlite_recover_20k_cap_256`: an engine capped at 256
//!   running sagas (`max_running`), first starting 20 000 sagas (250 callers), then resuming
//!   20 000 unfinished ones (each crashed in its first step) from a fresh file with
//!   `recover()`: the rate at which a restart works through a backlog, beside the start rate
//!   under the same cap.
//! - `postgres_256` (feature `postgres`, needs `STAUNCH_TEST_POSTGRES_URL`; skipped with a
//!   note otherwise): the same sagas on a `PostgresStore` (leases, fenced group-commit
//!   appends) in a fresh schema on the loopback server.
//! - `postgres_raw_same_rows`: the floor under it: the same log rows and summary rows
//!   (inserted by the first transition, updated by each) for 256 sagas, one transaction per
//!   transition, with plain array inserts and updates: no fencing, no engine.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use staunch::saga::sqlx::{self, Connection};
use staunch::saga::{
    MemoryStore, NewSaga, SagaDefinition, SagaEngine, SagaEvent, SagaOutcome, SagaStatus,
    SagaStore, SqliteStore, Step, StepError,
};

const CONCURRENCY: usize = 256;
const MEMORY_SAGAS: usize = 4096;
const SQLITE_SAGAS: usize = CONCURRENCY * 8;
const BACKLOG: usize = 20_000;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn definition() -> SagaDefinition<String> {
    let pass = |s: String, _ctx| async move { Ok::<_, StepError>(s) };
    SagaDefinition::builder("bench", 1)
        .step(Step::new("reserve", pass).compensate(pass))
        .step(Step::new("charge", pass).compensate(pass))
        .step(Step::new("ship", pass))
        .build()
        .expect("valid definition")
}

/// Runs `total` sagas, `concurrency` at a time, and checks every one completed.
async fn run(engine: &SagaEngine, def: &SagaDefinition<String>, total: usize, concurrency: usize) {
    let state = "s".repeat(200);
    let per_task = total / concurrency;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (engine, def, state) = (engine.clone(), def.clone(), state.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let id = format!("bench-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
                let handle = engine.start(&def, id, state.clone()).await.expect("start");
                let outcome = handle.outcome().await.expect("outcome");
                assert!(matches!(outcome, SagaOutcome::Completed(_)));
            }
        }));
    }
    for t in tasks {
        t.await.expect("saga task");
    }
}

/// A fresh SQLite file holding `BACKLOG` sagas that crashed while their first step ran.
async fn backlog(path: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(path).await.expect("open sqlite store");
    let input = serde_json::value::to_raw_value(&"s".repeat(200)).expect("input");
    let rows = vec![
        SagaEvent::Started {
            definition: "bench".into(),
            version: 1,
            input,
            started_at_ms: 0,
        }
        .encode(),
        SagaEvent::StepStarted {
            step: 0,
            attempt: 1,
        }
        .encode(),
    ];
    let creates = (0..BACKLOG).map(|n| {
        store.create(NewSaga::new(
            format!("crashed-{n:05}").into(),
            "bench".into(),
            1,
            SagaStatus::Running,
            rows.clone(),
        ))
    });
    for created in futures::future::join_all(creates).await {
        created.expect("create");
    }
    store
}

/// Recovers `BACKLOG` crashed sagas under a cap of 256 and waits for every outcome.
async fn recover_backlog(store: SqliteStore, def: &SagaDefinition<String>) {
    let engine = SagaEngine::builder(store)
        .max_running(CONCURRENCY)
        .build()
        .expect("engine");
    engine.register(def).expect("register");
    let report = engine.recover().await.expect("recover");
    assert_eq!(report.resumed.len(), BACKLOG);
    let outcomes = report
        .resumed
        .iter()
        .map(|id| engine.outcome(def, id.as_str()));
    for outcome in futures::future::join_all(outcomes).await {
        assert!(matches!(
            outcome.expect("outcome"),
            SagaOutcome::Completed(_)
        ));
    }
}

/// Removes a database file and its WAL files (best effort).
fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", "-lock"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("staunch-saga-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// One transition's rows for `sagas` sagas, written the way the store's writer does.
async fn raw_batch(
    conn: &mut sqlx::SqliteConnection,
    ids: &[String],
    round: u64,
    payloads: &[String; 2],
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    let rows = vec!["(?,?,?)"; ids.len() * 2].join(",");
    let sql = format!("INSERT INTO staunch_saga_events (saga_id, seq, payload) VALUES {rows}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for id in ids {
        for (k, p) in payloads.iter().enumerate() {
            q = q
                .bind(id.as_str())
                .bind((round * 2 + k as u64).cast_signed())
                .bind(p.as_str());
        }
    }
    q.execute(&mut *tx).await?;
    if round != 0 && round != 3 {
        // The store writes a summary only when a saga is created or changes status.
        return tx.commit().await;
    }
    let rows = vec!["(?,?,?,?,?,?)"; ids.len()].join(",");
    let sql = format!(
        "INSERT INTO staunch_sagas (saga_id, definition, version, status, note, updated_at_ms) \
         VALUES {rows} ON CONFLICT (saga_id) DO UPDATE SET status = excluded.status, note = excluded.note, \
         updated_at_ms = excluded.updated_at_ms"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for id in ids {
        q = q
            .bind(id.as_str())
            .bind("bench")
            .bind(1_i64)
            .bind(if round == 0 { "running" } else { "completed" })
            .bind(None::<String>)
            .bind(0_i64);
    }
    q.execute(&mut *tx).await?;
    tx.commit().await
}

/// [`raw_batch`] through `rusqlite`, on the calling thread.
fn rusqlite_batch(
    conn: &mut rusqlite::Connection,
    ids: &[String],
    round: u64,
    payloads: &[String; 2],
) -> rusqlite::Result<()> {
    use rusqlite::ToSql;
    let tx = conn.transaction()?;
    let rows = vec!["(?,?,?)"; ids.len() * 2].join(",");
    let sql = format!("INSERT INTO staunch_saga_events (saga_id, seq, payload) VALUES {rows}");
    let seqs = [(round * 2).cast_signed(), (round * 2 + 1).cast_signed()];
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(ids.len() * 6);
    for id in ids {
        for (seq, p) in seqs.iter().zip(payloads) {
            params.extend([id as &dyn ToSql, seq, p]);
        }
    }
    tx.execute(&sql, params.as_slice())?;
    if round == 0 || round == 3 {
        let rows = vec!["(?,?,?,?,?,?)"; ids.len()].join(",");
        let sql = format!(
            "INSERT INTO staunch_sagas (saga_id, definition, version, status, note, updated_at_ms) \
             VALUES {rows} ON CONFLICT (saga_id) DO UPDATE SET status = excluded.status, note = excluded.note, \
             updated_at_ms = excluded.updated_at_ms"
        );
        let status = if round == 0 { "running" } else { "completed" };
        let mut params: Vec<&dyn ToSql> = Vec::with_capacity(ids.len() * 6);
        for id in ids {
            params.extend([
                id as &dyn ToSql,
                &"bench",
                &1_i64,
                &status,
                &rusqlite::types::Null,
                &0_i64,
            ]);
        }
        tx.execute(&sql, params.as_slice())?;
    }
    tx.commit()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let def = definition();
    let dir = temp_dir();
    let mut group = c.benchmark_group("saga");
    group.sample_size(10);

    group.throughput(Throughput::Elements(MEMORY_SAGAS as u64));
    group.bench_function("memory", |b| {
        b.iter(|| {
            rt.block_on(async {
                // A fresh store per batch keeps the map (and memory) from growing.
                let engine = SagaEngine::new(MemoryStore::new());
                run(&engine, &def, MEMORY_SAGAS, CONCURRENCY).await;
            });
        });
    });

    let path = dir.join("sagas.db");
    let engine = rt.block_on(async {
        SagaEngine::new(SqliteStore::open(&path).await.expect("open sqlite store"))
    });
    group.throughput(Throughput::Elements(SQLITE_SAGAS as u64));
    group.bench_function("sqlite_full_256", |b| {
        b.iter(|| rt.block_on(run(&engine, &def, SQLITE_SAGAS, CONCURRENCY)));
    });
    drop(engine);

    // A backlog: the start rate under a cap, then a restart working through 20 000.
    group.throughput(Throughput::Elements(BACKLOG as u64));
    group.bench_function("sqlite_start_cap_256", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            for _ in 0..iters {
                let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                let capped = dir.join(format!("capped-{n}.db"));
                rt.block_on(async {
                    let engine = SagaEngine::builder(
                        SqliteStore::open(&capped).await.expect("open sqlite store"),
                    )
                    .max_running(CONCURRENCY)
                    .build()
                    .expect("engine");
                    let t0 = tokio::time::Instant::now();
                    run(&engine, &def, BACKLOG, 250).await;
                    spent += t0.elapsed();
                });
                remove_db(&capped);
            }
            spent
        });
    });
    group.bench_function("sqlite_recover_20k_cap_256", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            for _ in 0..iters {
                // A fresh file each time (its WAL files go with it below).
                let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                let path = dir.join(format!("backlog-{n}.db"));
                rt.block_on(async {
                    let store = backlog(&path).await;
                    let t0 = tokio::time::Instant::now();
                    recover_backlog(store, &def).await;
                    spent += t0.elapsed();
                });
                remove_db(&path);
            }
            spent
        });
    });

    // Representative payloads: a state-carrying row and a small one, as the engine writes.
    let state = "s".repeat(200);
    let payloads = [
        format!(r#"{{"v":1,"e":{{"step_completed":{{"step":0,"state":"{state}"}}}}}}"#),
        r#"{"v":1,"e":{"step_started":{"step":1,"attempt":1}}}"#.to_owned(),
    ];
    let mut conn = rt.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        sqlx::ConnectOptions::connect(&options)
            .await
            .expect("raw connection")
    });
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    group.bench_function("sqlite_raw_same_rows", |b| {
        b.iter(|| {
            rt.block_on(async {
                let ids: Vec<String> = (0..CONCURRENCY)
                    .map(|_| format!("raw-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)))
                    .collect();
                for round in 0..4 {
                    raw_batch(&mut conn, &ids, round, &payloads)
                        .await
                        .expect("raw batch");
                }
            });
        });
    });
    let mut lite = rusqlite::Connection::open(&path).expect("rusqlite connection");
    lite.pragma_update(None, "journal_mode", "WAL")
        .expect("WAL");
    lite.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous=FULL");
    group.bench_function("sqlite_rusqlite_same_rows", |b| {
        b.iter(|| {
            let ids: Vec<String> = (0..CONCURRENCY)
                .map(|_| format!("lite-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)))
                .collect();
            for round in 0..4 {
                rusqlite_batch(&mut lite, &ids, round, &payloads).expect("rusqlite batch");
            }
        });
    });
    drop(lite);
    #[cfg(feature = "postgres")]
    postgres::benches(&mut group, &rt, &def, &payloads);
    group.finish();
    drop(conn);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::atomic::Ordering;

    use criterion::measurement::WallTime;
    use criterion::{BenchmarkGroup, Throughput};
    use staunch::saga::sqlx::{self, Connection, PgConnection};
    use staunch::saga::{PostgresStore, SagaDefinition, SagaEngine};

    use super::{CONCURRENCY, NEXT_ID, run};

    const SAGAS: usize = CONCURRENCY * 8;

    pub(super) fn benches(
        group: &mut BenchmarkGroup<'_, WallTime>,
        rt: &tokio::runtime::Runtime,
        def: &SagaDefinition<String>,
        payloads: &[String; 2],
    ) {
        let Ok(url) = std::env::var("STAUNCH_TEST_POSTGRES_URL") else {
            println!("saga/postgres_*: skipped (STAUNCH_TEST_POSTGRES_URL is not set)");
            return;
        };
        let schema = format!("staunch_bench_{}", std::process::id());
        let engine = rt.block_on(async {
            let store = PostgresStore::builder(url.as_str())
                .schema(&schema)
                .open()
                .await
                .expect("open postgres store");
            SagaEngine::new(store)
        });
        group.throughput(Throughput::Elements(SAGAS as u64));
        group.bench_function("postgres_256", |b| {
            b.iter(|| rt.block_on(run(&engine, def, SAGAS, CONCURRENCY)));
        });
        drop(engine);

        let mut conn = rt.block_on(async {
            let mut conn = PgConnection::connect(&url).await.expect("raw connection");
            let sql = format!("SET search_path TO {schema}");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("search path");
            conn
        });
        group.throughput(Throughput::Elements(CONCURRENCY as u64));
        group.bench_function("postgres_raw_same_rows", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let ids: Vec<String> = (0..CONCURRENCY)
                        .map(|_| format!("raw-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)))
                        .collect();
                    for round in 0..4 {
                        raw_batch(&mut conn, &ids, round, payloads)
                            .await
                            .expect("raw batch");
                    }
                });
            });
        });
        rt.block_on(async {
            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
        });
    }

    /// One transition's rows for every saga of `ids`: two log rows each, and the summary row
    /// inserted (first transition) or updated (the others), in one transaction.
    async fn raw_batch(
        conn: &mut PgConnection,
        ids: &[String],
        round: i64,
        payloads: &[String; 2],
    ) -> Result<(), sqlx::Error> {
        let mut tx = conn.begin().await?;
        let (mut e_ids, mut e_seqs, mut e_payloads) = (Vec::new(), Vec::new(), Vec::new());
        for id in ids {
            for (k, p) in payloads.iter().enumerate() {
                e_ids.push(id.as_str());
                e_seqs.push(round * 2 + i64::from(k == 1));
                e_payloads.push(p.as_str());
            }
        }
        sqlx::query(
            "INSERT INTO staunch_saga_events (saga_id, seq, payload)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])",
        )
        .bind(&e_ids)
        .bind(&e_seqs)
        .bind(&e_payloads)
        .execute(&mut *tx)
        .await?;
        let status = if round == 3 { "completed" } else { "running" };
        if round == 0 {
            sqlx::query(
                "INSERT INTO staunch_sagas (saga_id, definition, version, status, next_seq,
                                            lease_owner, lease_version, lease_expires_at)
                 SELECT id, 'bench', 1, $2, 2, 'raw', 1, now() + interval '15 seconds'
                 FROM unnest($1::text[]) AS t(id)",
            )
            .bind(ids)
            .bind(status)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE staunch_sagas SET next_seq = next_seq + 2, status = $2,
                     lease_expires_at = now() + interval '15 seconds', updated_at = now()
                 WHERE saga_id = ANY($1)",
            )
            .bind(ids)
            .bind(status)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
