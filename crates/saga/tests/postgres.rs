//! Many instances on one PostgreSQL database: fencing of an instance whose lease was taken
//! over, and takeover of a dead instance's sagas (a dropped runtime, and a child process
//! killed with `SIGKILL`). Real time (sqlx does not run under tokio's paused clock) with a
//! 1 s lease TTL. Skipped when `STAUNCH_TEST_POSTGRES_URL` is unset.
#![cfg(feature = "postgres")]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use staunch_saga::sqlx;
use staunch_saga::{
    Append, ListFilter, SagaDefinition, SagaEngine, SagaError, SagaOutcome, SagaStatus, SagaStore,
    Step, StepContext, StepError, StoreError,
};
use support::pg;
use tokio::sync::Semaphore;

const TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    n: usize,
}

/// The participants' view: every call by idempotency key, and the effects they applied
/// (deduplicated by key, as a payment service does).
#[derive(Default, Debug)]
struct Ledger {
    calls: HashMap<String, u32>,
    /// (engine, key) of every call, in order.
    callers: Vec<(&'static str, String)>,
    applied: HashSet<String>,
}

type Shared = Arc<Mutex<Ledger>>;

fn effect(ledger: &Shared, engine: &'static str, ctx: &StepContext) {
    let key = ctx.idempotency_key();
    let mut l = ledger.lock().unwrap();
    *l.calls.entry(key.clone()).or_default() += 1;
    l.callers.push((engine, key.clone()));
    l.applied.insert(key);
}

/// reserve -> charge -> ship; `ship` declines orders whose number is a multiple of 4. On
/// engine `who`, `charge` applies its effect and then waits for `gate` (when given): the
/// instance stalls, or dies, after the effect and before the log knows.
fn definition(
    ledger: &Shared,
    who: &'static str,
    gate: Option<Arc<Semaphore>>,
) -> SagaDefinition<Order> {
    let l = |ledger: &Shared| Arc::clone(ledger);
    let (l1, l2, l3, l4, l5) = (l(ledger), l(ledger), l(ledger), l(ledger), l(ledger));
    SagaDefinition::builder("checkout", 1)
        .step(
            Step::new("reserve", move |o: Order, ctx| {
                effect(&l1, who, &ctx);
                async move { Ok(o) }
            })
            .compensate(move |o: Order, ctx| {
                effect(&l2, who, &ctx);
                async move { Ok(o) }
            }),
        )
        .step(
            Step::new("charge", move |o: Order, ctx| {
                effect(&l3, who, &ctx);
                let gate = gate.clone();
                async move {
                    if let Some(gate) = gate {
                        let _permit = gate.acquire().await;
                    }
                    Ok(o)
                }
            })
            .compensate(move |o: Order, ctx| {
                effect(&l4, who, &ctx);
                async move { Ok(o) }
            }),
        )
        .step(Step::new("ship", move |o: Order, ctx| {
            effect(&l5, who, &ctx);
            async move {
                if o.n.is_multiple_of(4) {
                    Err(StepError::fail("address rejected"))
                } else {
                    Ok(o)
                }
            }
        }))
        .build()
        .unwrap()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Expires every lease of the schema, as if its owner had stopped renewing.
async fn expire_leases(store: &staunch_saga::PostgresStore) {
    sqlx::query("UPDATE staunch_sagas SET lease_expires_at = now() - interval '1 second' WHERE lease_owner IS NOT NULL")
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_lease_was_taken_over_gets_lease_lost_and_stops() {
    let Some((store_a, guard)) = pg::store("fence", TTL).await else {
        return;
    };
    let store_b = pg::another(&guard, TTL).await;
    assert_ne!(store_a.owner_id(), store_b.owner_id());
    let ledger = Shared::default();
    let gate = Arc::new(Semaphore::new(0));
    let def_a = definition(&ledger, "a", Some(Arc::clone(&gate)));
    let def_b = definition(&ledger, "b", None);
    let engine_a = SagaEngine::new(store_a.clone());
    let engine_b = SagaEngine::new(store_b.clone());
    engine_b.register(&def_b).unwrap();

    let handle_a = engine_a.start(&def_a, "f-1", Order { n: 1 }).await.unwrap();
    let charged = || {
        ledger
            .lock()
            .unwrap()
            .calls
            .contains_key("f-1:charge:action")
    };
    wait_for("A to charge", Duration::from_secs(10), charged).await;

    // A stalls past its lease (simulated by expiring it); B's recovery takes the saga.
    let mut taken = false;
    for _ in 0..50 {
        expire_leases(&store_b).await;
        let report = engine_b.recover().await.unwrap();
        if report.resumed == ["f-1"] {
            taken = true;
            break;
        }
    }
    assert!(taken, "B never claimed the expired lease");
    let handle_b = engine_b.start(&def_b, "f-1", Order { n: 1 }).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle_b.outcome())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");

    // A's heartbeat finds the lease taken and stops renewing it.
    wait_for(
        "A's heartbeat to see the lease gone",
        Duration::from_secs(10),
        || store_a.held_leases() == 0,
    )
    .await;
    // A wakes up: its next append is fenced; it stops without marking anything.
    gate.add_permits(1);
    let err = tokio::time::timeout(Duration::from_secs(10), handle_a.outcome())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, SagaError::LeaseLost { ref saga_id } if saga_id == "f-1"),
        "{err}"
    );
    assert_eq!(engine_a.metrics().leases_lost, 1);
    assert_eq!(store_a.held_leases(), 0);

    // The store says so directly too, whatever the sequence number.
    let log = store_a.load("f-1").await.unwrap().unwrap();
    let next = log.events.len() as u64;
    let err = store_a
        .append(Append::new(
            Arc::from("f-1"),
            next,
            vec!["{}".into()],
            SagaStatus::Running,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");

    // The log is B's: completed, nothing appended after, and A never went past `charge`.
    let after = store_b.load("f-1").await.unwrap().unwrap();
    assert_eq!(after.summary.status, SagaStatus::Completed);
    assert_eq!(after.events.len(), log.events.len());
    let l = ledger.lock().unwrap();
    assert_eq!(
        l.calls["f-1:charge:action"], 2,
        "A's call and B's re-run, same key"
    );
    let ship: Vec<_> = l
        .callers
        .iter()
        .filter(|(_, k)| k.starts_with("f-1:ship"))
        .collect();
    assert_eq!(ship, [&("b", "f-1:ship:action".to_owned())]);
    assert!(!l.calls.keys().any(|k| k.ends_with(":compensate")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_take_the_lease_of_a_stuck_saga_from_another_instance() {
    let Some((store_a, guard)) = pg::store("operator", TTL).await else {
        return;
    };
    let store_b = pg::another(&guard, TTL).await;
    let def = SagaDefinition::<u32>::builder("transfer", 1)
        .step(
            Step::new("debit", |n, _| async move { Ok(n) })
                .compensate(|_n, _| async move { Err(StepError::fail("ledger locked")) })
                .compensation_retry(staunch_saga::StepRetry::new(1)),
        )
        .step(Step::new("credit", |_n, _| async move {
            Err::<u32, _>(StepError::fail("account closed"))
        }))
        .build()
        .unwrap();
    let engine_a = SagaEngine::new(store_a);
    let outcome = engine_a
        .start(&def, "t-1", 5)
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(outcome, SagaOutcome::Stuck { .. }), "{outcome:?}");
    // Another instance resolves it at once: the stuck saga's lease is free to take.
    let engine_b = SagaEngine::new(store_b);
    engine_b.register(&def).unwrap();
    engine_b
        .resolve("t-1", "reversed by hand", "test")
        .await
        .unwrap();
    let s = engine_b.inspect("t-1").await.unwrap().unwrap().summary;
    assert_eq!(s.status, SagaStatus::Resolved);
}

#[test]
fn a_dead_instances_sagas_are_taken_over_within_the_lease_ttl() {
    const SAGAS: usize = 40;
    let Some(url) = pg::url("takeover") else {
        return;
    };
    let schema = pg::schema("takeover");
    let guard = pg::SchemaGuard { url, schema };
    let ledger = Shared::default();

    // Instance A: its own runtime and pool. It starts every saga, each charges and stalls,
    // then the whole runtime is dropped at once: no release, no more heartbeats.
    let rt_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt_a.block_on(async {
        let store = pg::another(&guard, TTL).await;
        let engine = SagaEngine::new(store);
        let def = definition(&ledger, "a", Some(Arc::new(Semaphore::new(0))));
        for n in 0..SAGAS {
            engine
                .start(&def, format!("o-{n:03}"), Order { n })
                .await
                .unwrap();
        }
        let all_charged = || {
            let l = ledger.lock().unwrap();
            (0..SAGAS).all(|n| l.calls.contains_key(&format!("o-{n:03}:charge:action")))
        };
        wait_for(
            "A to charge everything",
            Duration::from_secs(20),
            all_charged,
        )
        .await;
    });
    rt_a.shutdown_background();

    // Instance B: recovery loop; everything of A's must settle within the TTL plus slack.
    let rt_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt_b.block_on(async {
        let died = tokio::time::Instant::now();
        let store = pg::another(&guard, TTL).await;
        let engine = SagaEngine::new(store.clone());
        engine.register(&definition(&ledger, "b", None)).unwrap();
        let _recovery = engine.spawn_recovery(Duration::from_millis(200));
        let settled = loop {
            let open = engine
                .list(&ListFilter {
                    statuses: vec![SagaStatus::Running, SagaStatus::Compensating],
                    ..ListFilter::default()
                })
                .await
                .unwrap();
            if open.is_empty() {
                break died.elapsed();
            }
            assert!(
                died.elapsed() < TTL + Duration::from_secs(15),
                "{} sagas still open",
                open.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("takeover of {SAGAS} sagas settled {settled:?} after instance A died");
        assert_eq!(engine.metrics().resumed, SAGAS as u64);

        let all = engine.list(&ListFilter::all()).await.unwrap();
        assert_eq!(all.len(), SAGAS);
        let l = ledger.lock().unwrap();
        for s in all {
            let n: usize = s.saga_id[2..].parse().unwrap();
            let key = |step: &str, phase: &str| format!("{}:{step}:{phase}", s.saga_id);
            // Every effect happened, once: the second charge call was absorbed by its key.
            assert_eq!(l.calls[&key("reserve", "action")], 1, "{}", s.saga_id);
            assert_eq!(l.calls[&key("charge", "action")], 2, "{}", s.saga_id);
            assert_eq!(l.calls[&key("ship", "action")], 1, "{}", s.saga_id);
            let refunded = l.applied.contains(&key("charge", "compensate"));
            let released = l.applied.contains(&key("reserve", "compensate"));
            if n.is_multiple_of(4) {
                assert_eq!(s.status, SagaStatus::Compensated, "{}", s.saga_id);
                assert!(
                    refunded && released,
                    "{}: charge and reserve undone",
                    s.saga_id
                );
                assert_eq!(l.calls[&key("charge", "compensate")], 1);
            } else {
                assert_eq!(s.status, SagaStatus::Completed, "{}", s.saga_id);
                assert!(!refunded && !released, "{}: nothing undone", s.saga_id);
            }
            // Nothing was run by A after it died, nothing by B before A's lease expired
            // except the re-run of the stalled charge.
            let by_a: Vec<_> = l
                .callers
                .iter()
                .filter(|(who, k)| *who == "a" && k.starts_with(&format!("{}:", s.saga_id)))
                .map(|(_, k)| k.as_str())
                .collect();
            assert_eq!(by_a, [key("reserve", "action"), key("charge", "action")]);
        }
        drop(engine);
        drop(store);
    });
    drop(rt_b);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_running_saga_with_its_owner() {
    let Some((store_a, guard)) = pg::store("heartbeat", TTL).await else {
        return;
    };
    let store_b = pg::another(&guard, TTL).await;
    let ledger = Shared::default();
    let l = Arc::clone(&ledger);
    // A step that runs for 2.5 lease TTLs, in a parallel group with a quick one.
    let def = SagaDefinition::<Order>::builder("slow", 1)
        .parallel(
            staunch_saga::ParallelGroup::new("work")
                .step(Step::new("long", move |o: Order, ctx| {
                    effect(&l, "a", &ctx);
                    async move {
                        tokio::time::sleep(TTL * 5 / 2).await;
                        Ok(o)
                    }
                }))
                .step(Step::new("quick", |o: Order, _| async move { Ok(o) })),
        )
        .build()
        .unwrap();
    let engine_a = SagaEngine::new(store_a.clone());
    let engine_b = SagaEngine::new(store_b);
    engine_b.register(&def).unwrap();
    let recovery_b = engine_b.spawn_recovery(Duration::from_millis(100));
    let outcome = engine_a
        .start(&def, "long-1", Order { n: 1 })
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
    drop(recovery_b);
    assert_eq!(engine_b.metrics().resumed, 0, "B never took the saga");
    assert_eq!(ledger.lock().unwrap().calls["long-1:long:action"], 1);
    assert_eq!(store_a.held_leases(), 0, "released at the terminal append");
}

#[tokio::test]
async fn invalid_builder_settings_are_config_errors_naming_the_field() {
    let cases = [
        (
            staunch_saga::PostgresStore::builder("postgres://x@127.0.0.1:1/x").schema("a-b"),
            "postgres_store.schema",
        ),
        (
            staunch_saga::PostgresStore::builder("postgres://x@127.0.0.1:1/x")
                .lease_ttl(Duration::from_secs(1))
                .heartbeat_interval(Duration::from_secs(1)),
            "postgres_store.heartbeat_interval",
        ),
        (
            staunch_saga::PostgresStore::builder("postgres://x@127.0.0.1:1/x")
                .lease_ttl(Duration::from_millis(10)),
            "postgres_store.lease_ttl",
        ),
        (
            staunch_saga::PostgresStore::builder("postgres://x@127.0.0.1:1/x")
                .max_connections(4)
                .writers(4),
            "postgres_store.writers",
        ),
        (
            staunch_saga::PostgresStore::builder("postgres://x@127.0.0.1:1/x").max_batch(0),
            "postgres_store.max_batch",
        ),
        (
            staunch_saga::PostgresStore::builder("postgres://x@127.0.0.1:1/x").owner_id(""),
            "postgres_store.owner_id",
        ),
        (
            staunch_saga::PostgresStore::builder("mysql://x@127.0.0.1:1/x"),
            "postgres_store.url",
        ),
    ];
    for (builder, field) in cases {
        let err = builder.open().await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Config(c) if c.field() == field),
            "{field}: {err}"
        );
    }
}

// ---- The process variant: instance A is a child process killed with SIGKILL. ----

const SCHEMA_VAR: &str = "STAUNCH_SAGA_TAKEOVER_SCHEMA";
const KILL_SAGAS: usize = 24;

/// Participants that record into tables of the test schema, so both processes share them:
/// `calls` gets a row per call, `effects` the effects applied (deduplicated by key).
async fn db_effect(pool: &sqlx::PgPool, who: &str, ctx: &StepContext) -> Result<(), StepError> {
    let key = ctx.idempotency_key();
    let mut tx = pool.begin().await.map_err(StepError::retryable)?;
    sqlx::query("INSERT INTO calls (key, who) VALUES ($1, $2)")
        .bind(&key)
        .bind(who)
        .execute(&mut *tx)
        .await
        .map_err(StepError::retryable)?;
    sqlx::query("INSERT INTO effects (key) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&key)
        .execute(&mut *tx)
        .await
        .map_err(StepError::retryable)?;
    tx.commit().await.map_err(StepError::retryable)
}

/// The same flow as [`definition`], with database participants; `charge` hangs after its
/// effect when `hang`.
fn db_definition(pool: &sqlx::PgPool, who: &'static str, hang: bool) -> SagaDefinition<Order> {
    let p = |pool: &sqlx::PgPool| pool.clone();
    let (p1, p2, p3, p4, p5) = (p(pool), p(pool), p(pool), p(pool), p(pool));
    SagaDefinition::builder("checkout", 1)
        .step(
            Step::new("reserve", move |o: Order, ctx| {
                let p = p1.clone();
                async move { db_effect(&p, who, &ctx).await.map(|()| o) }
            })
            .compensate(move |o: Order, ctx| {
                let p = p2.clone();
                async move { db_effect(&p, who, &ctx).await.map(|()| o) }
            }),
        )
        .step(
            Step::new("charge", move |o: Order, ctx| {
                let p = p3.clone();
                async move {
                    db_effect(&p, who, &ctx).await?;
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok(o)
                }
            })
            .compensate(move |o: Order, ctx| {
                let p = p4.clone();
                async move { db_effect(&p, who, &ctx).await.map(|()| o) }
            }),
        )
        .step(Step::new("ship", move |o: Order, ctx| {
            let p = p5.clone();
            async move {
                db_effect(&p, who, &ctx).await?;
                if o.n.is_multiple_of(4) {
                    Err(StepError::fail("address rejected"))
                } else {
                    Ok(o)
                }
            }
        }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_sigkilled_instances_sagas_are_taken_over_within_the_lease_ttl"]
async fn takeover_worker() {
    // Only meaningful as the child of the test below (it hangs until killed).
    let (Ok(url), Ok(schema)) = (std::env::var(pg::URL_VAR), std::env::var(SCHEMA_VAR)) else {
        eprintln!("takeover_worker: not started by its parent test; nothing to do");
        return;
    };
    let store = staunch_saga::PostgresStore::builder(url)
        .schema(schema)
        .lease_ttl(TTL)
        .open()
        .await
        .unwrap();
    let def = db_definition(store.pool(), "a", true);
    let engine = SagaEngine::new(store);
    for n in 0..KILL_SAGAS {
        engine
            .start(&def, format!("k-{n:03}"), Order { n })
            .await
            .unwrap();
    }
    // Stay alive (every saga hangs in `charge`) until killed.
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_instances_sagas_are_taken_over_within_the_lease_ttl() {
    let Some((store, guard)) = pg::store("sigkill", TTL).await else {
        return;
    };
    for sql in [
        "CREATE TABLE calls (key TEXT NOT NULL, who TEXT NOT NULL)",
        "CREATE TABLE effects (key TEXT PRIMARY KEY)",
    ] {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "takeover_worker", "--nocapture", "--ignored"])
        .env(SCHEMA_VAR, &guard.schema)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let charges = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM calls WHERE key LIKE '%:charge:action'")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    let start = tokio::time::Instant::now();
    while charges().await < i64::try_from(KILL_SAGAS).unwrap() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "worker never charged everything"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let died = tokio::time::Instant::now();

    let engine = SagaEngine::new(store.clone());
    engine
        .register(&db_definition(store.pool(), "b", false))
        .unwrap();
    let recovery = engine.spawn_recovery(Duration::from_millis(200));
    loop {
        let open = engine
            .list(&ListFilter {
                statuses: vec![SagaStatus::Running, SagaStatus::Compensating],
                ..ListFilter::default()
            })
            .await
            .unwrap();
        if open.is_empty() {
            break;
        }
        assert!(
            died.elapsed() < TTL + Duration::from_secs(15),
            "{} sagas still open",
            open.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("takeover after SIGKILL settled in {:?}", died.elapsed());
    drop(recovery);

    let calls: Vec<(String, String)> = sqlx::query_as("SELECT key, who FROM calls")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let effects: HashSet<String> = sqlx::query_scalar("SELECT key FROM effects")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    let all = engine.list(&ListFilter::all()).await.unwrap();
    assert_eq!(all.len(), KILL_SAGAS);
    for s in all {
        let n: usize = s.saga_id[2..].parse().unwrap();
        let key = |step: &str, phase: &str| format!("{}:{step}:{phase}", s.saga_id);
        let count = |k: &str, who: &str| calls.iter().filter(|(c, w)| c == k && w == who).count();
        // A ran reserve and charge; B re-ran only the interrupted charge (same key), then
        // went on. Every effect is applied once (the effects table is keyed).
        assert_eq!(count(&key("reserve", "action"), "a"), 1);
        assert_eq!(count(&key("reserve", "action"), "b"), 0);
        assert_eq!(count(&key("charge", "action"), "a"), 1);
        assert_eq!(count(&key("charge", "action"), "b"), 1);
        assert_eq!(count(&key("ship", "action"), "b"), 1);
        assert!(effects.contains(&key("charge", "action")));
        let undone = effects.contains(&key("charge", "compensate"))
            && effects.contains(&key("reserve", "compensate"));
        if n.is_multiple_of(4) {
            assert_eq!(s.status, SagaStatus::Compensated, "{}", s.saga_id);
            assert!(undone, "{}: charge and reserve refunded", s.saga_id);
        } else {
            assert_eq!(s.status, SagaStatus::Completed, "{}", s.saga_id);
            assert!(
                !effects.contains(&key("charge", "compensate")),
                "{}",
                s.saga_id
            );
        }
    }
    assert!(calls.iter().all(|(_, who)| *who == "a" || *who == "b"));
    assert_eq!(
        calls.iter().filter(|(_, w)| w == "a").count(),
        KILL_SAGAS * 2,
        "A did nothing but reserve and charge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_opening_at_once_share_one_migrated_schema_and_a_newer_one_is_refused() {
    let Some(url) = pg::url("migrate") else {
        return;
    };
    let guard = pg::SchemaGuard {
        url,
        schema: pg::schema("migrate"),
    };
    // Four instances open a fresh schema at the same moment: one migrates, all succeed.
    let opens = (0..4).map(|_| pg::another(&guard, TTL));
    let stores = futures_util::future::join_all(opens).await;
    let versions: Vec<i32> = sqlx::query_scalar("SELECT version FROM staunch_saga_schema")
        .fetch_all(stores[0].pool())
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3]);
    // They all see one database.
    let engine = SagaEngine::new(stores[1].clone());
    let def = SagaDefinition::<u32>::builder("noop", 1)
        .step(Step::new("s", |n, _| async move { Ok(n) }))
        .build()
        .unwrap();
    engine
        .start(&def, "m-1", 1)
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let seen = stores[3].load("m-1").await.unwrap().unwrap();
    assert_eq!(seen.summary.status, SagaStatus::Completed);
    // A database migrated by a newer build is refused, not reinterpreted.
    sqlx::query("INSERT INTO staunch_saga_schema (version) VALUES (99)")
        .execute(stores[0].pool())
        .await
        .unwrap();
    let err = staunch_saga::PostgresStore::builder(guard.url.clone())
        .schema(&guard.schema)
        .open()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_create_leaves_no_lease_behind_and_its_saga_is_claimable() {
    let Some((store, _guard)) = pg::store("cancel", TTL).await else {
        return;
    };
    let new = staunch_saga::NewSaga::new(
        Arc::from("c-1"),
        Arc::from("order"),
        1,
        SagaStatus::Running,
        vec!["e0".into()],
    );
    // Polled once (the request is queued), then dropped.
    assert!(
        futures_util::FutureExt::now_or_never(store.create(new)).is_none(),
        "a database round trip cannot finish on the first poll"
    );
    assert_eq!(store.held_leases(), 0);
    // The writer may still have created it: then recovery here claims it at once (its
    // lease names this owner, and this store does not hold it).
    let mut exists = false;
    for _ in 0..25 {
        exists = store.load("c-1").await.unwrap().is_some();
        if exists {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let claimed = store.claim_resumable(10).await.unwrap();
    if exists {
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].saga_id, "c-1");
        assert_eq!(store.held_leases(), 1);
    } else {
        assert!(claimed.is_empty());
    }
}

/// A handle by id (and a `start` of the same id) on an instance that does not drive the saga
/// polls the store: it settles once the owner finishes, and nothing runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_on_another_instance_polls_until_the_owner_finishes() {
    let Some((store_a, guard)) = pg::store("byid", Duration::from_secs(30)).await else {
        return;
    };
    let store_b = pg::another(&guard, Duration::from_secs(30)).await;
    let gate = Arc::new(Semaphore::new(0));
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (g, r) = (Arc::clone(&gate), Arc::clone(&runs));
    let def = SagaDefinition::<u32>::builder("remote", 1)
        .step(Step::new("wait", move |n, _| {
            let (g, r) = (Arc::clone(&g), Arc::clone(&r));
            async move {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = g.acquire().await.map(tokio::sync::SemaphorePermit::forget);
                Ok(n + 1)
            }
        }))
        .build()
        .unwrap();
    let engine_a = SagaEngine::new(store_a);
    let owner = engine_a.start(&def, "r-1", 1).await.unwrap();
    let engine_b = SagaEngine::builder(store_b)
        .outcome_poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let by_id = engine_b.handle(&def, "r-1").await.unwrap();
    // `start` on the instance that does not hold the lease does not run it again.
    let started = engine_b.start(&def, "r-1", 99).await.unwrap();
    let waiting = tokio::spawn(async move { (by_id.outcome().await, started.outcome().await) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    gate.add_permits(1);
    assert!(matches!(
        owner.outcome().await,
        Ok(SagaOutcome::Completed(2))
    ));
    let (a, b) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the polling handles settle within a few poll intervals")
        .unwrap();
    assert!(matches!(a, Ok(SagaOutcome::Completed(2))), "{a:?}");
    assert!(matches!(b, Ok(SagaOutcome::Completed(2))), "{b:?}");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(matches!(
        engine_b.outcome(&def, "r-2").await,
        Err(SagaError::NotFound(_))
    ));
}

/// Recovery on a leased store claims no more sagas than the cap has room for; a dead
/// instance's sagas are taken over in paced passes and all finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_under_a_cap_claims_only_what_fits() {
    let Some((_store, guard)) = pg::store("paced", TTL).await else {
        return;
    };
    // A dead instance: its runtime is dropped with 40 sagas mid-step.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let hang = SagaDefinition::<u32>::builder("paced", 1)
                    .step(Step::new("work", |_n, _| {
                        std::future::pending::<Result<u32, StepError>>()
                    }))
                    .build()
                    .unwrap();
                let engine_a = SagaEngine::new(pg::another(&guard, TTL).await);
                for i in 0..40 {
                    engine_a.start(&hang, format!("p-{i:02}"), i).await.unwrap();
                }
            });
        });
    });
    let now = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (n, m) = (Arc::clone(&now), Arc::clone(&max));
    let work = SagaDefinition::<u32>::builder("paced", 1)
        .step(Step::new("work", move |x, _| {
            let (n, m) = (Arc::clone(&n), Arc::clone(&m));
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                m.fetch_max(n.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                n.fetch_sub(1, SeqCst);
                Ok(x)
            }
        }))
        .build()
        .unwrap();
    let engine_b = SagaEngine::builder(pg::another(&guard, TTL).await)
        .max_running(4)
        .build()
        .unwrap();
    engine_b.register(&work).unwrap();
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;
    let first = engine_b.recover().await.unwrap();
    assert!(first.resumed.len() <= 4, "{first:?}");
    let recovery = engine_b.spawn_recovery(Duration::from_millis(50));
    wait_for("all 40 completed", Duration::from_secs(30), || {
        engine_b.metrics().completed == 40
    })
    .await;
    recovery.stop().await;
    assert!(max.load(std::sync::atomic::Ordering::SeqCst) <= 4);
}
