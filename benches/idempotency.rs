//! What the idempotency layer costs per request on a loopback axum server with a reqwest
//! client, per store, for a first request (a new key: the store marks it, the handler runs,
//! the response is stored) and a repeat (the stored response is replayed; the handler is not
//! called).
//!
//! `cargo bench -p staunch-benches --bench idempotency`. Each row is one caller sending
//! `POST /charges` with a 64-byte JSON body, one request at a time over a kept-alive
//! connection, and reading the answer (`201`, the body echoed); the server and the client
//! share one runtime of two worker threads. Rows:
//!
//! - `no layer`: the route without the layer, the floor under every other row;
//! - `memory/no key`: the layer in front, a request without a key (passes through);
//! - `memory/first`, `memory/repeat`: [`MemoryStore`];
//! - `sqlite/first`, `sqlite/repeat`: [`SqliteStore`] on a file in the temp directory (WAL,
//!   `synchronous = NORMAL`, as a service would run it; a first request commits twice);
//! - `postgres/first`, `postgres/repeat`: [`PostgresStore`] in a fresh schema on the loopback
//!   server at `STAUNCH_TEST_POSTGRES_URL` (skipped with a note when it is not set).
#![allow(clippy::disallowed_types, clippy::print_stdout, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use staunch_idempotency::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use staunch_idempotency::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use staunch_idempotency::sqlx::{self, Connection};
use staunch_idempotency::{
    Idempotency, IdempotencyLayer, IdempotencyStore, MemoryStore, PostgresStore, SqliteStore,
};

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The request body: 64 bytes of JSON.
const BODY: &str = r#"{"order_id":"o-123456","amount":250,"currency":"EUR","note":"ab"}"#;

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("benchmark runtime")
}

/// `POST /charges`: 201 with the body echoed as JSON.
fn route() -> Router {
    Router::new().route(
        "/charges",
        post(|body: Bytes| async move {
            (
                http::StatusCode::CREATED,
                [(http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }),
    )
}

/// Serves `app` on a loopback port of `rt`.
fn serve(rt: &tokio::runtime::Runtime, app: Router) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("server") });
        addr
    })
}

/// One request, with `key` if any; checks the answer.
async fn send(client: &reqwest::Client, url: &str, key: Option<&str>, replayed: bool) {
    let mut request = client.post(url).body(BODY);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("an answer");
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers().contains_key("idempotent-replayed"),
        replayed
    );
    assert_eq!(response.bytes().await.expect("a body").len(), BODY.len());
}

#[derive(Clone, Copy)]
enum Kind {
    NoKey,
    First,
    Repeat,
}

/// A row: `iters` requests of `kind`, one at a time, timed on the client.
fn row(group: &mut Group<'_>, rt: &tokio::runtime::Runtime, name: &str, app: Router, kind: Kind) {
    let url = format!("http://{}/charges", serve(rt, app));
    let client = reqwest::Client::new();
    let repeated = format!("repeat-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed));
    if let Kind::Repeat = kind {
        rt.block_on(send(&client, &url, Some(&repeated), false));
    }
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    match kind {
                        Kind::NoKey => send(&client, &url, None, false).await,
                        Kind::First => {
                            let key = format!("first-{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed));
                            send(&client, &url, Some(&key), false).await;
                        }
                        Kind::Repeat => send(&client, &url, Some(&repeated), true).await,
                    }
                }
                start.elapsed()
            })
        });
    });
}

/// The first-request and repeat rows of one store.
fn store_rows<St: IdempotencyStore>(
    group: &mut Group<'_>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: &St,
) {
    let app = || route().layer(IdempotencyLayer::new(store.clone(), Idempotency::default()));
    row(group, rt, &format!("{name}/first"), app(), Kind::First);
    row(group, rt, &format!("{name}/repeat"), app(), Kind::Repeat);
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("idempotency");
    row(&mut group, &rt, "no layer", route(), Kind::NoKey);

    let memory = rt.block_on(async { MemoryStore::new() });
    let layered = route().layer(IdempotencyLayer::new(
        memory.clone(),
        Idempotency::default(),
    ));
    row(&mut group, &rt, "memory/no key", layered, Kind::NoKey);
    store_rows(&mut group, &rt, "memory", &memory);

    let path = std::env::temp_dir().join(format!(
        "staunch-idempotency-bench-{}.db",
        std::process::id()
    ));
    let sqlite = rt.block_on(async {
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .expect("sqlite pool");
        SqliteStore::open(pool).await.expect("sqlite store")
    });
    store_rows(&mut group, &rt, "sqlite", &sqlite);
    drop(sqlite);
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }

    match std::env::var("STAUNCH_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => postgres_rows(&mut group, &rt, &url),
        _ => println!("idempotency/postgres/*: skipped (STAUNCH_TEST_POSTGRES_URL is not set)"),
    }
    group.finish();
}

/// The PostgreSQL rows, in a schema of their own, dropped afterwards.
fn postgres_rows(group: &mut Group<'_>, rt: &tokio::runtime::Runtime, url: &str) {
    let schema = format!("staunch_idem_bench_{}", std::process::id());
    let store = rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("postgres connection");
        let sql = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("schema");
        let options: PgConnectOptions = url.parse().expect("postgres url");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.options([("search_path", schema.as_str())]))
            .await
            .expect("postgres pool");
        PostgresStore::open(pool).await.expect("postgres store")
    });
    store_rows(group, rt, "postgres", &store);
    drop(store);
    rt.block_on(async {
        if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await;
        }
    });
}

criterion_group!(idempotency, benches);
criterion_main!(idempotency);
