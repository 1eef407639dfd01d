//! The operator endpoint over a real loopback server: listing, a timeline, and every action
//! with who acted recorded in the log; bad requests and refusals as JSON errors.
#![cfg(feature = "http")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use staunch_saga::{
    MemoryStore, SagaDefinition, SagaEngine, SagaEvent, SagaOutcome, Step, StepError, StepRetry,
};
use tokio::sync::Semaphore;

async fn serve(engine: SagaEngine) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().nest("/ops", staunch_saga::http::router(engine));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/ops")
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

async fn post(url: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap(),
    )
}

/// Two steps; the second waits for a permit of `gate`, so a test holds the saga there.
fn gated(gate: &Arc<Semaphore>) -> SagaDefinition<u32> {
    let gate = Arc::clone(gate);
    SagaDefinition::builder("gated", 1)
        .step(
            Step::new("reserve", |n: u32, _| async move { Ok(n + 1) })
                .compensate(|n: u32, _| async move { Ok(n + 100) }),
        )
        .step(
            Step::new("charge", move |n: u32, _| {
                let gate = Arc::clone(&gate);
                async move {
                    gate.acquire().await.unwrap().forget();
                    Ok(n + 1)
                }
            })
            .compensate(|n: u32, _| async move { Ok(n) }),
        )
        .step(Step::new("ship", |n: u32, _| async move { Ok(n + 1) }))
        .build()
        .unwrap()
}

fn actors(engine_log: &staunch_saga::SagaTimeline) -> Vec<String> {
    engine_log
        .entries
        .iter()
        .filter_map(|e| match &e.event {
            Ok(
                SagaEvent::CancelBegan { actor, .. }
                | SagaEvent::Paused { actor }
                | SagaEvent::Resumed { actor }
                | SagaEvent::OperatorRetried { actor, .. }
                | SagaEvent::OperatorSkipped { actor, .. }
                | SagaEvent::OperatorResolved { actor, .. },
            ) => Some(actor.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn lists_inspects_and_answers_json_errors() {
    let engine = SagaEngine::new(MemoryStore::new());
    let gate = Arc::new(Semaphore::new(10));
    let def = gated(&gate);
    engine
        .start(&def, "done-1", 1)
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let base = serve(engine.clone()).await;

    let (status, all) = get(&format!("{base}/sagas")).await;
    assert_eq!(status, 200);
    assert_eq!(all[0]["saga_id"], "done-1");
    assert_eq!(all[0]["status"], "completed");
    assert_eq!(all[0]["definition"], "gated");
    // Times in milliseconds since the epoch; not stuck, so no `stuck_since_ms`.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let created = all[0]["created_at_ms"].as_u64().unwrap();
    assert!(created <= now_ms && created + 60_000 > now_ms, "{created}");
    assert!(all[0]["updated_at_ms"].as_u64().unwrap() >= created);
    assert!(all[0]["stuck_since_ms"].is_null());
    let (_, none) = get(&format!("{base}/sagas?status=stuck")).await;
    assert_eq!(none, json!([]));
    let (_, by_def) = get(&format!("{base}/sagas?definition=gated&limit=1")).await;
    assert_eq!(by_def.as_array().unwrap().len(), 1);

    let (status, t) = get(&format!("{base}/sagas/done-1")).await;
    assert_eq!(status, 200);
    assert_eq!(t["summary"]["status"], "completed");
    let entries = t["entries"].as_array().unwrap();
    assert_eq!(entries[0]["seq"], 0);
    assert!(entries[0]["event"]["started"].is_object(), "{t}");

    let (status, e) = get(&format!("{base}/sagas?status=sleepy")).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("bad_request")));
    assert!(
        e["message"].as_str().unwrap().contains("compensated"),
        "{e}"
    );
    let (status, e) = get(&format!("{base}/sagas?limit=-1")).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("bad_request")));
    let (status, e) = get(&format!("{base}/sagas/nope")).await;
    assert_eq!((status, e["error"].as_str()), (404, Some("not_found")));
    let (status, e) = post(&format!("{base}/sagas/nope/cancel"), r#"{"actor":"a"}"#).await;
    assert_eq!((status, e["error"].as_str()), (404, Some("not_found")));
    // A finished saga: refused, 409.
    let (status, e) = post(&format!("{base}/sagas/done-1/pause"), r#"{"actor":"a"}"#).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (409, Some("conflict")),
        "{e}"
    );
    // Who acts is required; the body must be the JSON documented; unknown actions are 404.
    let (status, e) = post(&format!("{base}/sagas/done-1/cancel"), r#"{"reason":"x"}"#).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("bad_request")));
    let (status, _) = post(&format!("{base}/sagas/done-1/cancel"), "not json").await;
    assert_eq!(status, 400);
    let (status, _) = post(&format!("{base}/sagas/done-1/explode"), r#"{"actor":"a"}"#).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn pause_resume_and_cancel_over_http_record_who_acted() {
    let engine = SagaEngine::new(MemoryStore::new());
    let gate = Arc::new(Semaphore::new(0));
    let def = gated(&gate);
    let base = serve(engine.clone()).await;

    // Paused while held in `charge`: it stops at the boundary after it.
    let handle = engine.start(&def, "p-1", 1).await.unwrap();
    let (status, body) = post(&format!("{base}/sagas/p-1/pause"), r#"{"actor":"alice"}"#).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({ "saga_id": "p-1", "action": "pause" }));
    let (status, _) = post(&format!("{base}/sagas/p-1/pause"), r#"{"actor":"alice"}"#).await;
    assert_eq!(status, 409, "a second pause is refused");
    gate.add_permits(1);
    let paused = support::listed(
        &engine,
        staunch_saga::SagaStatus::Paused,
        Duration::from_millis(10),
    )
    .await;
    assert_eq!(paused[0].saga_id, "p-1");
    let (status, _) = post(&format!("{base}/sagas/p-1/resume"), r#"{"actor":"bob"}"#).await;
    assert_eq!(status, 202);
    assert!(matches!(
        handle.outcome().await.unwrap(),
        SagaOutcome::Completed(4)
    ));
    let t = engine.inspect("p-1").await.unwrap().unwrap();
    assert_eq!(actors(&t), ["alice", "bob"]);

    // Cancelled while held in `charge`: compensates both steps, the log names who asked.
    let handle = engine.start(&def, "c-1", 1).await.unwrap();
    let (status, _) = post(
        &format!("{base}/sagas/c-1/cancel"),
        r#"{"actor":"carol","reason":"customer asked"}"#,
    )
    .await;
    assert_eq!(status, 202);
    gate.add_permits(1);
    let SagaOutcome::Cancelled { reason, .. } = handle.outcome().await.unwrap() else {
        panic!("not cancelled")
    };
    assert_eq!(reason, "customer asked");
    let t = engine.inspect("c-1").await.unwrap().unwrap();
    assert_eq!(actors(&t), ["carol"]);
    let (status, e) = post(&format!("{base}/sagas/c-1/cancel"), r#"{"actor":"carol"}"#).await;
    assert_eq!((status, e["error"].as_str()), (409, Some("conflict")));
}

#[tokio::test]
async fn a_stuck_saga_is_retried_skipped_or_resolved_over_http() {
    let engine = SagaEngine::new(MemoryStore::new());
    let refunds = Arc::new(Semaphore::new(0));
    let r = Arc::clone(&refunds);
    // `charge` is refused; its refund fails until the test allows it: stuck compensating.
    let def = SagaDefinition::<u32>::builder("stuck", 1)
        .step(
            Step::new("charge", |n: u32, _| async move { Ok(n + 1) })
                .compensate(move |n: u32, _| {
                    let r = Arc::clone(&r);
                    async move {
                        match r.try_acquire() {
                            Ok(p) => {
                                p.forget();
                                Ok(n)
                            }
                            Err(_) => Err(StepError::fail("refund refused")),
                        }
                    }
                })
                .compensation_retry(StepRetry::new(1)),
        )
        .step(Step::new("ship", |_n: u32, _| async move {
            Err(StepError::fail("no stock"))
        }))
        .build()
        .unwrap();
    engine.register(&def).unwrap();
    let base = serve(engine.clone()).await;
    for id in ["s-retry", "s-skip", "s-resolve"] {
        let o = engine
            .start(&def, id, 1)
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(matches!(o, SagaOutcome::Stuck { .. }), "{o:?}");
    }
    let (_, stuck) = get(&format!("{base}/sagas?status=stuck")).await;
    assert_eq!(stuck.as_array().unwrap().len(), 3);

    refunds.add_permits(1);
    let (status, _) = post(
        &format!("{base}/sagas/s-retry/retry"),
        r#"{"actor":"dave"}"#,
    )
    .await;
    assert_eq!(status, 202);
    let o = engine.outcome(&def, "s-retry").await.unwrap();
    assert!(matches!(o, SagaOutcome::Compensated { .. }), "{o:?}");

    let (status, _) = post(&format!("{base}/sagas/s-skip/skip"), r#"{"actor":"erin"}"#).await;
    assert_eq!(status, 202);
    let o = engine.outcome(&def, "s-skip").await.unwrap();
    assert!(matches!(o, SagaOutcome::Compensated { .. }), "{o:?}");

    let (status, _) = post(
        &format!("{base}/sagas/s-resolve/resolve"),
        r#"{"actor":"frank","note":"refunded by hand"}"#,
    )
    .await;
    assert_eq!(status, 202);
    let o = engine.outcome(&def, "s-resolve").await.unwrap();
    assert!(matches!(o, SagaOutcome::Resolved { ref note } if note == "refunded by hand"));
    // Not stuck any more: a second retry is refused.
    let (status, _) = post(
        &format!("{base}/sagas/s-retry/retry"),
        r#"{"actor":"dave"}"#,
    )
    .await;
    assert_eq!(status, 409);

    for (id, who) in [
        ("s-retry", "dave"),
        ("s-skip", "erin"),
        ("s-resolve", "frank"),
    ] {
        let t = engine.inspect(id).await.unwrap().unwrap();
        assert_eq!(actors(&t), [who], "{id}");
    }
}

/// A store whose every call fails, as a database that is down.
#[derive(Debug)]
struct Down;

fn down<T>() -> futures_util::future::BoxFuture<'static, Result<T, staunch_saga::StoreError>>
where
    T: Send + 'static,
{
    Box::pin(async {
        Err(staunch_saga::StoreError::Database(
            "connection refused".into(),
        ))
    })
}

impl staunch_saga::SagaStore for Down {
    fn create(
        &self,
        _: staunch_saga::NewSaga,
    ) -> futures_util::future::BoxFuture<'_, Result<staunch_saga::Created, staunch_saga::StoreError>>
    {
        down()
    }
    fn append(
        &self,
        _: staunch_saga::Append,
    ) -> futures_util::future::BoxFuture<'_, Result<(), staunch_saga::StoreError>> {
        down()
    }
    fn load<'a>(
        &'a self,
        _: &'a str,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Option<staunch_saga::SagaLog>, staunch_saga::StoreError>,
    > {
        down()
    }
    fn list<'a>(
        &'a self,
        _: &'a staunch_saga::ListFilter,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Vec<staunch_saga::SagaSummary>, staunch_saga::StoreError>,
    > {
        down()
    }
    fn quarantine<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), staunch_saga::StoreError>> {
        down()
    }
}

#[tokio::test]
async fn a_failing_store_answers_503_and_a_log_that_does_not_load_422() {
    let base = serve(SagaEngine::new(Down)).await;
    for (status, body) in [
        get(&format!("{base}/sagas")).await,
        get(&format!("{base}/sagas/any")).await,
        post(
            &format!("{base}/sagas/any/cancel"),
            r#"{"actor":"ana","reason":"r"}"#,
        )
        .await,
        post(&format!("{base}/sagas/any/pause"), r#"{"actor":"ana"}"#).await,
        post(&format!("{base}/sagas/any/retry"), r#"{"actor":"ana"}"#).await,
        post(
            &format!("{base}/sagas/any/resolve"),
            r#"{"actor":"ana","note":"n"}"#,
        )
        .await,
    ] {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "unavailable", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("connection refused"),
            "{body}"
        );
    }

    // A stuck saga whose log rows do not decode: inspecting shows them, acting on it is 422.
    let store = MemoryStore::new();
    staunch_saga::SagaStore::create(
        &store,
        staunch_saga::NewSaga::new(
            "broken".into(),
            "gated".into(),
            1,
            staunch_saga::SagaStatus::Stuck,
            vec!["not an event".into()],
        ),
    )
    .await
    .unwrap();
    let engine = SagaEngine::new(store);
    engine
        .register(&gated(&Arc::new(Semaphore::new(0))))
        .unwrap();
    let base = serve(engine).await;
    let (status, body) = get(&format!("{base}/sagas/broken")).await;
    assert_eq!(status, 200, "{body}");
    for action in ["retry", "skip"] {
        let (status, body) = post(
            &format!("{base}/sagas/broken/{action}"),
            r#"{"actor":"ana"}"#,
        )
        .await;
        assert_eq!(status, 422, "{action}: {body}");
        assert_eq!(body["error"], "unreadable", "{body}");
    }
}
