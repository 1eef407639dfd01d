//! SQLite specifics: settings, schema versioning, persistence across reopen, corrupt rows.
#![cfg(feature = "sqlite")]

mod support;

use std::time::Duration;

use staunch_saga::sqlx::{self, Connection, Row};
use staunch_saga::{
    ListFilter, LoadError, SagaEngine, SagaOutcome, SagaStatus, SagaStore, SqliteStore,
    SqliteSynchronous,
};
use support::{Script, calls, linear, trail};

async fn raw(path: &std::path::Path) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", path.display());
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}

#[tokio::test]
async fn opens_in_wal_mode_with_synchronous_full_and_records_the_schema_version() {
    let dir = support::TempDir::new("settings");
    let path = dir.file("s.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut conn = raw(&path).await;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
    let version: i64 = sqlx::query("SELECT MAX(version) FROM staunch_saga_schema")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 3);
    drop(store);
    // Reopening does not migrate twice.
    let _store = SqliteStore::open(&path).await.unwrap();
    let rows: i64 = sqlx::query("SELECT COUNT(*) FROM staunch_saga_schema")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
    // The builder validates its settings.
    let err = SqliteStore::builder(dir.file("x.db"))
        .max_batch(0)
        .open()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, staunch_saga::StoreError::Config(c) if c.field() == "sqlite_store.max_batch"),
        "{err}"
    );
    let _off = SqliteStore::builder(dir.file("y.db"))
        .synchronous(SqliteSynchronous::Off)
        .open()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_file_of_the_previous_schema_gains_timestamps_and_its_ended_sagas_can_be_purged() {
    let dir = support::TempDir::new("v2");
    let path = dir.file("s.db");
    {
        // The schema as version 2 wrote it, with a stuck and a completed saga.
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for statement in [
            "CREATE TABLE staunch_saga_schema (version INTEGER NOT NULL)",
            "INSERT INTO staunch_saga_schema (version) VALUES (1), (2)",
            "CREATE TABLE staunch_sagas (saga_id TEXT PRIMARY KEY NOT NULL, definition TEXT NOT NULL, \
             version INTEGER NOT NULL, status TEXT NOT NULL, note TEXT, \
             updated_at_ms INTEGER NOT NULL, request TEXT) WITHOUT ROWID",
            "CREATE INDEX staunch_sagas_status ON staunch_sagas (status, saga_id)",
            "CREATE TABLE staunch_saga_events (saga_id TEXT NOT NULL, seq INTEGER NOT NULL, \
             payload TEXT NOT NULL, PRIMARY KEY (saga_id, seq)) WITHOUT ROWID",
            "INSERT INTO staunch_sagas VALUES ('old-stuck', 'order', 1, 'stuck', 'refund failed', 5000, NULL), \
             ('old-done', 'order', 1, 'completed', NULL, 6000, NULL)",
            "INSERT INTO staunch_saga_events VALUES ('old-stuck', 0, 'x'), ('old-done', 0, 'y')",
        ] {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let listed = store.list(&ListFilter::all()).await.unwrap();
    let at = |ms| Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    assert_eq!(listed.len(), 2);
    let (done, stuck) = (&listed[0], &listed[1]);
    // Creation times were not kept before; a stuck saga is stuck since its last change.
    assert_eq!(
        (done.created_at, done.updated_at, done.stuck_since),
        (None, at(6000), None)
    );
    assert_eq!(
        (stuck.created_at, stuck.updated_at, stuck.stuck_since),
        (None, at(5000), at(5000))
    );
    let gone = store
        .purge(std::time::SystemTime::now(), &SagaStatus::ENDED, 10)
        .await
        .unwrap();
    assert_eq!(gone, ["old-done"]);
    assert!(store.load("old-done").await.unwrap().is_none());
    assert!(store.load("old-stuck").await.unwrap().is_some());
}

#[tokio::test]
async fn a_file_with_a_newer_schema_is_refused() {
    let dir = support::TempDir::new("newer");
    let path = dir.file("s.db");
    drop(SqliteStore::open(&path).await.unwrap());
    let mut conn = raw(&path).await;
    sqlx::query("INSERT INTO staunch_saga_schema (version) VALUES (99)")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[tokio::test]
async fn sagas_persist_across_reopen() {
    let dir = support::TempDir::new("reopen");
    let path = dir.file("s.db");
    let calls = calls();
    let def = linear("persist", &[Script::Ok, Script::Fail], &calls);
    {
        let engine = SagaEngine::new(SqliteStore::open(&path).await.unwrap());
        let o = engine
            .start(&def, "p1", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(matches!(o, SagaOutcome::Compensated { .. }));
    }
    let engine = SagaEngine::new(SqliteStore::open(&path).await.unwrap());
    let list = engine
        .list(&ListFilter::status(SagaStatus::Compensated))
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let timeline = engine.inspect("p1").await.unwrap().unwrap();
    assert!(timeline.entries.iter().all(|e| e.event.is_ok()));
    // Starting it again returns the stored outcome without running anything.
    let before = calls.lock().unwrap().len();
    let o = engine
        .start(&def, "p1", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Compensated { ref failed_step, .. } if failed_step == "s1"));
    assert_eq!(calls.lock().unwrap().len(), before);
}

#[tokio::test]
async fn a_corrupt_row_in_the_file_quarantines_only_its_saga() {
    let dir = support::TempDir::new("corrupt");
    let path = dir.file("s.db");
    let calls = calls();
    let def = linear("rows", &[Script::Ok, Script::Ok], &calls);
    let store = SqliteStore::open(&path).await.unwrap();
    // Two unfinished sagas, written as a crashed process would have left them.
    for id in ["bad", "fine"] {
        let engine = SagaEngine::new(store.clone());
        let _ = engine
            .start(&def, id, trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
    }
    let mut conn = raw(&path).await;
    sqlx::query("UPDATE staunch_sagas SET status = 'running'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM staunch_saga_events WHERE seq >= 4")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE staunch_saga_events SET payload = X'FFFE00' WHERE saga_id = 'bad' AND seq = 1",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(store);

    let store = SqliteStore::open(&path).await.unwrap();
    let engine = SagaEngine::new(store.clone());
    engine.register(&def).unwrap();
    let report = engine.recover().await.unwrap();
    assert_eq!(report.resumed, ["fine"]);
    assert_eq!(report.quarantined.len(), 1);
    assert!(matches!(
        report.quarantined[0].1,
        LoadError::Corrupt { seq: 1, .. }
    ));
    let o = engine
        .start(&def, "fine", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(o, SagaOutcome::Completed(_)));
    let bad = store.load("bad").await.unwrap().unwrap();
    assert_eq!(bad.summary.status, SagaStatus::Quarantined);
    assert_eq!(bad.events.len(), 4, "nothing is deleted");
}

#[tokio::test]
async fn a_second_store_on_the_same_file_is_refused_until_the_first_is_gone() {
    let dir = support::TempDir::new("lock");
    let path = dir.file("s.db");
    let first = SqliteStore::open(&path).await.unwrap();
    let clone = first.clone();
    let err = SqliteStore::open(&path).await.unwrap_err();
    let staunch_saga::StoreError::InUse { path: p, lock } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(p, &path);
    assert_eq!(lock, &dir.file("s.db-lock"));
    assert!(
        err.to_string().contains("one engine per SQLite file"),
        "{err}"
    );
    // An engine over it refuses the same way: the error comes from opening the store.
    drop(first);
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(staunch_saga::StoreError::InUse { .. })
    ));
    // Once the last clone is gone, the file opens again at once; another file beside it was
    // never affected.
    drop(clone);
    let other = SqliteStore::open(dir.file("t.db")).await.unwrap();
    let again = SqliteStore::open(&path).await.unwrap();
    // `lock_wait`: an open waits for the holder to let go (here, a task dropping it).
    let waiting = SqliteStore::builder(&path).lock_wait(Duration::from_secs(30));
    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(again);
    });
    let started = tokio::time::Instant::now();
    let reopened = waiting.open().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(40));
    holder.await.unwrap();
    // Without it (or past it), `InUse` as before.
    let err = SqliteStore::builder(&path)
        .lock_wait(Duration::from_millis(30))
        .open()
        .await
        .unwrap_err();
    assert!(
        matches!(err, staunch_saga::StoreError::InUse { .. }),
        "{err}"
    );
    drop((reopened, other));
}

/// The lock belongs to the process: a child holding the file keeps this process out, and
/// its SIGKILL frees the file at once (the operating system drops the lock).
#[tokio::test]
async fn a_store_held_by_another_process_is_refused_and_freed_by_its_kill() {
    if let Ok(path) = std::env::var("STAUNCH_SAGA_LOCK_HOLDER") {
        let store = SqliteStore::open(&path).await.unwrap();
        std::fs::write(format!("{path}.ready"), b"1").unwrap();
        std::future::pending::<()>().await;
        drop(store);
        return;
    }
    let dir = support::TempDir::new("lock-proc");
    let path = dir.file("s.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_store_held_by_another_process_is_refused_and_freed_by_its_kill",
            "--nocapture",
        ])
        .env("STAUNCH_SAGA_LOCK_HOLDER", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = dir.file("s.db.ready");
    for _ in 0..3000 {
        if ready.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(ready.exists(), "the holder never opened the file");
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(staunch_saga::StoreError::InUse { .. })
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    drop(store);
}
