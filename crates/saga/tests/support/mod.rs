//! Helpers shared by the saga tests: a state that records what ran, scripted steps, and a
//! call log.
#![allow(dead_code, unreachable_pub)]

pub mod contract;
#[cfg(feature = "postgres")]
pub mod pg;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use staunch_core::{Backoff, Jitter};
use staunch_saga::{Phase, SagaDefinition, Step, StepContext, StepError, StepRetry};

/// The saga state: what the steps did, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trail {
    pub done: Vec<String>,
    /// Padding so states are not trivially small.
    pub note: String,
}

/// One call of an action or compensation, as the participant saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub step: String,
    pub phase: Phase,
    pub key: String,
    pub attempt: u32,
    pub at: tokio::time::Instant,
}

pub type Calls = Arc<Mutex<Vec<Call>>>;

pub fn calls() -> Calls {
    Arc::new(Mutex::new(Vec::new()))
}

/// The calls so far as `step:phase` strings.
pub fn seen(calls: &Calls) -> Vec<String> {
    calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c.step, c.phase))
        .collect()
}

/// What a scripted action or compensation does on each call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Ok,
    /// A business failure every time.
    Fail,
    /// Retryable failures on the first `n` calls, then success.
    RetryThen(u32),
    /// A retryable failure every time.
    AlwaysRetry,
    /// Panics inside the future.
    Panic,
    /// Never finishes.
    Hang,
}

/// What a scripted step returns.
pub type StepFuture = futures_util::future::BoxFuture<'static, Result<Trail, StepError>>;

/// Changes a scripted step's behaviour from the test.
pub type Switch = Arc<Mutex<Script>>;

pub fn fast_retry(max_attempts: u32) -> StepRetry {
    StepRetry::new(max_attempts).backoff(
        Backoff::constant(Duration::from_millis(10))
            .jitter(Jitter::None)
            .build()
            .unwrap(),
    )
}

/// A scripted function for `step` in `phase`; its behaviour can be changed later through
/// the returned switch (used to let a stuck compensation succeed on operator retry).
pub fn scripted(
    step: &str,
    phase: Phase,
    script: Script,
    calls: &Calls,
) -> (
    impl Fn(Trail, StepContext) -> StepFuture + Send + Sync + 'static,
    Switch,
) {
    let switch = Arc::new(Mutex::new(script));
    let count = Arc::new(AtomicU32::new(0));
    let calls = Arc::clone(calls);
    let name = step.to_owned();
    let sw = Arc::clone(&switch);
    let f = move |mut trail: Trail, ctx: StepContext| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(ctx.step(), name);
        assert_eq!(ctx.phase(), phase);
        calls.lock().unwrap().push(Call {
            step: name.clone(),
            phase,
            key: ctx.idempotency_key(),
            attempt: ctx.attempt(),
            at: tokio::time::Instant::now(),
        });
        let script = *sw.lock().unwrap();
        let label = format!("{name}:{phase}");
        let fut: StepFuture = Box::pin(async move {
            let transient = match script {
                Script::RetryThen(k) => n <= k,
                Script::AlwaysRetry => true,
                _ => false,
            };
            match script {
                _ if transient => {
                    return Err(StepError::retryable(format!("{label} unavailable")));
                }
                Script::Fail => return Err(StepError::fail(format!("{label} declined"))),
                Script::Panic => panic!("{label} exploded"),
                Script::Hang => std::future::pending::<()>().await,
                Script::Ok | Script::RetryThen(_) | Script::AlwaysRetry => {}
            }
            trail.done.push(label);
            Ok(trail)
        });
        fut
    };
    (f, switch)
}

/// A step with a scripted action and (if given) a scripted compensation; fast retries.
pub fn step(
    name: &str,
    action: Script,
    compensation: Option<Script>,
    calls: &Calls,
) -> Step<Trail> {
    let (a, _) = scripted(name, Phase::Action, action, calls);
    let mut step = Step::new(name, a)
        .retry(fast_retry(3))
        .compensation_retry(fast_retry(3));
    if let Some(c) = compensation {
        let (c, _) = scripted(name, Phase::Compensate, c, calls);
        step = step.compensate(c);
    }
    step
}

/// A definition of compensatable steps `s0..sN` with the given action scripts, each with an
/// `Ok` compensation.
pub fn linear(name: &str, actions: &[Script], calls: &Calls) -> SagaDefinition<Trail> {
    let mut b = SagaDefinition::builder(name, 1);
    for (i, a) in actions.iter().enumerate() {
        b = b.step(step(&format!("s{i}"), *a, Some(Script::Ok), calls));
    }
    b.build().unwrap()
}

pub fn trail() -> Trail {
    Trail {
        done: Vec::new(),
        note: "x".repeat(64),
    }
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("staunch-saga-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (polling every `every`, for at most 10 s of the runtime's clock) until `engine`
/// lists at least one saga in `status`, and returns them.
pub async fn listed(
    engine: &staunch_saga::SagaEngine,
    status: staunch_saga::SagaStatus,
    every: Duration,
) -> Vec<staunch_saga::SagaSummary> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = engine
            .list(&staunch_saga::ListFilter::status(status))
            .await
            .unwrap();
        if !list.is_empty() {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no saga became {status} within 10 s"
        );
        tokio::time::sleep(every).await;
    }
}
