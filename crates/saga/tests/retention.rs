//! Retention: `purge` of ended (and, when asked, quarantined) sagas, the retention policy the
//! recovery loop runs, and the summary timestamps both read; on memory and a real SQLite file
//! (the store contract covers each store's `purge` on PostgreSQL too).

mod support;

use std::time::{Duration, SystemTime};

use staunch_saga::{
    ListFilter, MemoryStore, SagaEngine, SagaError, SagaOutcome, SagaStatus, SagaStore,
};
use support::{Script, calls, linear, seen, trail};

/// A second from now: everything ended so far ended before it.
fn soon() -> SystemTime {
    SystemTime::now() + Duration::from_secs(1)
}

async fn ids(engine: &SagaEngine) -> Vec<String> {
    engine
        .list(&ListFilter::all())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.saga_id)
        .collect()
}

#[tokio::test]
async fn purge_refuses_a_status_that_has_not_ended_and_deletes_nothing() {
    let engine = SagaEngine::new(MemoryStore::new());
    let calls = calls();
    let def = linear("order", &[Script::Ok], &calls);
    engine
        .start(&def, "done", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    for status in [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Stuck,
        SagaStatus::Paused,
    ] {
        let err = engine
            .purge(soon(), &[SagaStatus::Completed, status])
            .await
            .unwrap_err();
        assert!(
            matches!(err, SagaError::NotPurgeable { status: s } if s == status),
            "{err}"
        );
        assert!(err.to_string().contains(status.as_str()), "{err}");
    }
    assert_eq!(ids(&engine).await, ["done"]);
    assert_eq!(engine.metrics().purged, 0);
    // Nothing to delete is not an error.
    assert_eq!(engine.purge(soon(), &[]).await.unwrap(), 0);
}

#[tokio::test]
async fn purged_sagas_are_gone_and_their_ids_start_afresh() {
    let engine = SagaEngine::new(MemoryStore::new());
    let calls = calls();
    let ok = linear("order", &[Script::Ok, Script::Ok], &calls);
    let fails = linear("order-fails", &[Script::Ok, Script::Fail], &calls);
    for i in 0..3 {
        let out = engine
            .start(&ok, format!("ok-{i}"), trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(matches!(out, SagaOutcome::Completed(_)));
    }
    let out = engine
        .start(&fails, "rolled-back", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(matches!(out, SagaOutcome::Compensated { .. }), "{out:?}");
    // Only completed ones, and only those ended before the cutoff.
    let before_any = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
    assert_eq!(
        engine
            .purge(before_any, &[SagaStatus::Completed])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        engine
            .purge(soon(), &[SagaStatus::Completed])
            .await
            .unwrap(),
        3
    );
    assert_eq!(engine.metrics().purged, 3);
    assert_eq!(ids(&engine).await, ["rolled-back"]);
    assert!(engine.inspect("ok-0").await.unwrap().is_none());
    assert!(matches!(
        engine.outcome(&ok, "ok-0").await,
        Err(SagaError::NotFound(_))
    ));
    // A start with a purged id runs a new saga: the steps run again.
    let before = seen(&calls).len();
    engine
        .start(&ok, "ok-0", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert_eq!(seen(&calls).len(), before + 2);
}

#[tokio::test(start_paused = true)]
async fn stuck_and_quarantined_sagas_go_only_when_asked_and_a_resolved_one_has_ended() {
    let engine = SagaEngine::new(MemoryStore::new());
    let calls = calls();
    // The second step fails, and so does the first's compensation: stuck.
    let mut b = staunch_saga::SagaDefinition::builder("stuck", 1);
    b = b.step(support::step("s0", Script::Ok, Some(Script::Fail), &calls));
    b = b.step(support::step("s1", Script::Fail, Some(Script::Ok), &calls));
    let def = b.build().unwrap();
    let handle = engine.start(&def, "stuck-1", trail()).await.unwrap();
    let out = handle.outcome().await;
    assert!(
        matches!(
            out,
            Err(SagaError::Load { .. }) | Ok(SagaOutcome::Stuck { .. })
        ),
        "{out:?}"
    );
    let summary = &engine.stuck().await.unwrap()[0];
    assert!(summary.stuck_since.is_some(), "{summary:?}");
    assert!(summary.created_at <= summary.stuck_since);
    // The ended statuses leave it alone.
    assert_eq!(engine.purge(soon(), &SagaStatus::ENDED).await.unwrap(), 0);
    engine
        .resolve("stuck-1", "refunded by hand", "ops@example.com")
        .await
        .unwrap();
    let resolved = &engine
        .list(&ListFilter::status(SagaStatus::Resolved))
        .await
        .unwrap()[0];
    assert_eq!(resolved.stuck_since, None);
    assert_eq!(engine.purge(soon(), &SagaStatus::ENDED).await.unwrap(), 1);
    // Quarantined: only when named.
    let store = engine.store();
    store
        .create(staunch_saga::NewSaga::new(
            "broken".into(),
            "stuck".into(),
            1,
            SagaStatus::Running,
            vec!["not an event".into()],
        ))
        .await
        .unwrap();
    store
        .quarantine("broken", "row 0 does not decode")
        .await
        .unwrap();
    assert_eq!(engine.purge(soon(), &SagaStatus::ENDED).await.unwrap(), 0);
    assert_eq!(
        engine
            .purge(soon(), &[SagaStatus::Quarantined])
            .await
            .unwrap(),
        1
    );
    assert!(ids(&engine).await.is_empty());
}

#[test]
fn a_retention_policy_is_refused_by_field_when_it_would_purge_what_has_not_ended() {
    let build = |b: staunch_saga::SagaEngineBuilder| b.build().map(drop).unwrap_err();
    let store = MemoryStore::new;
    let err = build(SagaEngine::builder(store()).retention(Duration::ZERO));
    assert_eq!(err.field(), "retention", "{err}");
    for status in [
        SagaStatus::Stuck,
        SagaStatus::Quarantined,
        SagaStatus::Running,
        SagaStatus::Paused,
        SagaStatus::Compensating,
    ] {
        let err = build(
            SagaEngine::builder(store())
                .retention(Duration::from_hours(24))
                .retention_statuses([SagaStatus::Completed, status]),
        );
        assert_eq!(err.field(), "retention_statuses", "{err}");
        assert!(err.to_string().contains(status.as_str()), "{err}");
    }
    let err = build(SagaEngine::builder(store()).retention_statuses([SagaStatus::Completed]));
    assert_eq!(err.field(), "retention_statuses", "{err}");
    // Any non-zero keep works, however long.
    SagaEngine::builder(store())
        .retention(Duration::MAX)
        .build()
        .unwrap();
}

/// Waits (bounded) until `engine` has purged `n` sagas.
#[cfg(feature = "sqlite")]
async fn purged(engine: &SagaEngine, n: u64) {
    for _ in 0..500 {
        if engine.metrics().purged >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("purged {} of {n}", engine.metrics().purged);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recovery_loop_purges_ended_sagas_older_than_the_policy_on_a_sqlite_file() {
    let dir = support::TempDir::new("retention");
    let path = dir.file("sagas.db");
    let calls = calls();
    let ok = linear("order", &[Script::Ok], &calls);
    let fails = linear("order-fails", &[Script::Fail], &calls);
    let keep = Duration::from_millis(200);
    {
        let engine = SagaEngine::builder(staunch_saga::SqliteStore::open(&path).await.unwrap())
            .retention(keep)
            .retention_statuses([SagaStatus::Completed])
            .build()
            .unwrap();
        engine.register(&ok).unwrap();
        for i in 0..20 {
            engine
                .start(&ok, format!("old-{i:02}"), trail())
                .await
                .unwrap()
                .outcome()
                .await
                .unwrap();
        }
        engine
            .start(&fails, "old-compensated", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
    }
    // Past the retention of what was started above (wall clock: the store's timestamps).
    tokio::time::sleep(keep + Duration::from_millis(50)).await;
    let engine = SagaEngine::builder(staunch_saga::SqliteStore::open(&path).await.unwrap())
        .retention(keep)
        .retention_statuses([SagaStatus::Completed])
        .build()
        .unwrap();
    engine.register(&ok).unwrap();
    engine.register(&fails).unwrap();
    engine
        .start(&ok, "new", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let recovery = engine.spawn_recovery(Duration::from_millis(10));
    purged(&engine, 20).await;
    recovery.stop().await;
    // The fresh one is kept, and so is the compensated one (not in the policy's statuses).
    assert_eq!(ids(&engine).await, ["new", "old-compensated"]);
    assert_eq!(engine.metrics().purged, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_purge_refuses_it_by_name() {
    /// A store that keeps the trait's default `purge`.
    #[derive(Debug, Clone, Default)]
    struct NoPurge(MemoryStore);
    impl SagaStore for NoPurge {
        fn create(
            &self,
            saga: staunch_saga::NewSaga,
        ) -> futures_util::future::BoxFuture<
            '_,
            Result<staunch_saga::Created, staunch_saga::StoreError>,
        > {
            self.0.create(saga)
        }
        fn append(
            &self,
            append: staunch_saga::Append,
        ) -> futures_util::future::BoxFuture<'_, Result<(), staunch_saga::StoreError>> {
            self.0.append(append)
        }
        fn load<'a>(
            &'a self,
            saga_id: &'a str,
        ) -> futures_util::future::BoxFuture<
            'a,
            Result<Option<staunch_saga::SagaLog>, staunch_saga::StoreError>,
        > {
            self.0.load(saga_id)
        }
        fn list<'a>(
            &'a self,
            filter: &'a ListFilter,
        ) -> futures_util::future::BoxFuture<
            'a,
            Result<Vec<staunch_saga::SagaSummary>, staunch_saga::StoreError>,
        > {
            self.0.list(filter)
        }
        fn quarantine<'a>(
            &'a self,
            saga_id: &'a str,
            reason: &'a str,
        ) -> futures_util::future::BoxFuture<'a, Result<(), staunch_saga::StoreError>> {
            self.0.quarantine(saga_id, reason)
        }
    }
    let engine = SagaEngine::builder(NoPurge::default())
        .retention(Duration::from_millis(1))
        .build()
        .unwrap();
    let err = engine.purge(soon(), &SagaStatus::ENDED).await.unwrap_err();
    assert!(
        matches!(
            err,
            SagaError::Store(staunch_saga::StoreError::Unsupported { .. })
        ),
        "{err}"
    );
    // The recovery loop with that policy logs the failure and goes on.
    let recovery = engine.spawn_recovery(Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(20)).await;
    recovery.stop().await;
}
