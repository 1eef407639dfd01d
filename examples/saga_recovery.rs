//! A saga on SQLite survives a crash: the process dies while a step runs, a new engine opens
//! the same file, `recover()` resumes the saga, and the interrupted step runs again with the
//! same idempotency key (so the participant can tell it is a repeat).
//!
//! ```text
//! cargo run --example saga_recovery
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use staunch::saga::{SagaDefinition, SagaEngine, SqliteStore, Step, StepContext};
use tokio::runtime::Runtime;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Trip {
    flight: Option<String>,
    hotel: Option<String>,
}

/// The saga; `hang` makes the hotel step hang, as if the process died in it.
fn trip(
    hang: bool,
    calls: Arc<Mutex<Vec<String>>>,
) -> Result<SagaDefinition<Trip>, staunch::ConfigError> {
    let log = Arc::clone(&calls);
    SagaDefinition::builder("trip", 1)
        .step(Step::new("flight", move |mut t: Trip, ctx: StepContext| {
            log.lock()
                .expect("log")
                .push(format!("flight, key {}", ctx.idempotency_key()));
            async move {
                t.flight = Some("LH 2041".into());
                Ok(t)
            }
        }))
        .step(Step::new("hotel", move |mut t: Trip, ctx: StepContext| {
            calls.lock().expect("log").push(format!(
                "hotel, key {}, attempt {}",
                ctx.idempotency_key(),
                ctx.attempt()
            ));
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                t.hotel = Some("room 12".into());
                Ok(t)
            }
        }))
        .build()
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = std::env::temp_dir().join(format!("staunch-saga-recovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("sagas.db");
    let calls = Arc::new(Mutex::new(Vec::new()));

    // First life: the saga starts, books the flight, and the process "dies" in the hotel step
    // (the whole runtime is dropped, with every task in it).
    let first = Runtime::new()?;
    first.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&db).await?);
        let definition = trip(true, Arc::clone(&calls))?;
        engine
            .start(
                &definition,
                "trip-1",
                Trip {
                    flight: None,
                    hotel: None,
                },
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    drop(first); // drops every task, and with them the store: its file lock is released
    println!("crashed; calls so far:");
    for call in calls.lock().expect("log").drain(..) {
        println!("  {call}");
    }

    // Second life: same file, `recover()` resumes the saga where its log says it stopped.
    let second = Runtime::new()?;
    second.block_on(async {
        let engine = SagaEngine::new(SqliteStore::open(&db).await?);
        let definition = trip(false, Arc::clone(&calls))?;
        engine.register(&definition)?;
        let report = engine.recover().await?;
        println!("recovered: {:?}", report.resumed);
        // `start` is idempotent on the saga id: it hands back the running saga.
        let handle = engine
            .start(
                &definition,
                "trip-1",
                Trip {
                    flight: None,
                    hotel: None,
                },
            )
            .await?;
        println!("outcome: {:?}", handle.outcome().await?);
        for call in calls.lock().expect("log").iter() {
            println!("  {call}");
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
