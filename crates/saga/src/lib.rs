//! A durable orchestration saga engine for tokio services: ordered steps (and parallel
//! groups) with compensations, an append-only log in SQLite, PostgreSQL (many service
//! instances, with leases and takeover) or memory, crash recovery and an operator API.
//!
//! # The model
//!
//! A [`SagaDefinition`] is a name, a version and ordered [`Step`]s over a state `S` (any
//! serde type). Each step has an action and, optionally, a compensation; both are async
//! functions that receive the current state and a [`StepContext`] and return the updated
//! state. The [`SagaEngine`] runs the actions in order. When one fails for good, it runs the
//! compensations of the completed steps in reverse order and the saga ends
//! [`Compensated`](SagaOutcome::Compensated); when a compensation fails for good the saga is
//! [`Stuck`](SagaOutcome::Stuck) and waits for an operator ([`SagaEngine::retry_stuck`],
//! [`SagaEngine::skip_stuck`], [`SagaEngine::resolve`]); never a silent log line.
//!
//! - **Errors** are [`StepError::retryable`] (retried with the step's [`StepRetry`]: a
//!   `staunch-core` [`Backoff`](staunch_core::Backoff), attempt limit, per-attempt timeout) or
//!   [`StepError::fail`] (a business failure: compensate now). A panic in a step is caught
//!   and counts as a business failure of that step.
//! - **Step kinds**: [`StepKind::Compensatable`] (the default), [`StepKind::Pivot`] (the point
//!   of no return: afterwards the saga only moves forward) and [`StepKind::Retriable`] (retried
//!   until it succeeds; every step after the pivot must be retriable).
//! - **Parallel groups**: [`SagaDefinitionBuilder::parallel`] adds a [`ParallelGroup`] whose
//!   steps run concurrently; the saga moves on when all succeed. When one fails, the others
//!   finish or are cancelled ([`GroupFailure`]) and every completed step of the group and
//!   before it is compensated, members in reverse order or in parallel
//!   ([`GroupCompensation`]). The join is deterministic: member results are folded into
//!   the state before the group with its `merge`, in declaration order.
//! - **Durability**: every transition is appended to a [`SagaStore`] before the next call
//!   starts. `SqliteStore` (the default feature) is one file, WAL, `synchronous=FULL`, with
//!   group commit so many concurrent sagas share each fsync. [`MemoryStore`] is for tests.
//! - **Many instances** (feature `postgres`): `PostgresStore` shares one database between
//!   the instances of a service. Each unfinished saga is leased to one instance (owner,
//!   expiry, and a lease version checked by every append as a fencing token), renewed by a
//!   heartbeat; every instance runs [`SagaEngine::spawn_recovery`], which claims sagas whose
//!   lease expired (`FOR UPDATE SKIP LOCKED`) and resumes them, so a dead instance's sagas
//!   are taken over within one lease TTL (default 15 s). An instance that was only paused
//!   gets [`StoreError::LeaseLost`] on its next append and stops driving the saga
//!   (its handles report [`SagaError::LeaseLost`]); nothing is marked failed.
//! - **Idempotency**: each call carries [`StepContext::idempotency_key`],
//!   `{saga_id}:{step}:{action|compensate}`, identical on every attempt and after recovery.
//! - **Recovery**: [`SagaEngine::recover`] resumes every unfinished saga from its log. An
//!   attempt that started with no recorded result is run again with the same key
//!   (**at-least-once**: participants must deduplicate by key), unless the step says
//!   [`OnInterrupted::Compensate`] or [`OnInterrupted::Stuck`]. A saga whose definition is not
//!   registered, or whose log does not decode, is quarantined; nothing is deleted.
//!
//! # Quarantine: what a log must satisfy, and what never stops the engine
//!
//! Before a log is replayed every row is checked; a row that breaks a rule quarantines its
//! saga ([`SagaStatus::Quarantined`], the [`LoadError`] naming the row and the
//! [`LogRule`] in its note and in the [`RecoveryReport`]), keeps every row, and every other
//! saga runs on. The rules, one sentence each:
//!
//! - **Sequence**: rows are numbered 0, 1, 2, ... without a gap (a missing row is never
//!   "resumed" into an append conflict).
//! - **UTF-8**: every row is valid UTF-8; a row that is not is never repaired lossily.
//! - **Started first**: the first row, and only the first, is `started`.
//! - **Terminal last**: nothing follows `completed`, `compensated` or `resolved`.
//! - **Step index**: every step index (including `failed_step`) names a step of the
//!   registered definition; per-step memory is sized by the definition, never by a stored
//!   value.
//! - **Attempt counter**: attempts count up by one from 1, and a failure names an attempt
//!   that started, so no counter can overflow.
//! - **Operator on stuck**: an operator action names the stuck step of a stuck saga.
//!
//! And at run time:
//!
//! - Every duration a builder accepts is usable: deadlines, retry waits, timeouts, lease
//!   TTLs, busy timeouts and recovery intervals saturate instead of overflowing an instant.
//! - A panic anywhere in a saga's task (engine code, a group's `merge`, the store) marks the
//!   saga stuck on the step its log is at (quarantined when that cannot be written) with the
//!   panic message, resolves its handles with [`SagaError::Panicked`] and removes it from
//!   the engine, so [`SagaEngine::stuck`] lists it and the operator API applies.
//! - A step output (or compensation output) that cannot be serialized makes the saga stuck
//!   ([`StepErrorKind::Unstorable`]): its effect happened, so it is never run again silently.
//! - A store batch isolates its sagas: one saga's bad row or value fails only its own request.
//! - Recovery releases every saga it claimed on every path, errors, panics and a cancelled
//!   pass (a dropped [`RecoveryLoop`]) included.
//!
//! # Example
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use staunch_saga::{MemoryStore, SagaDefinition, SagaEngine, SagaOutcome, Step, StepError};
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! struct Order { id: u64, charged: bool }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let order = SagaDefinition::<Order>::builder("order", 1)
//!     .step(Step::new("reserve", |o, _ctx| async move { Ok(o) })
//!         .compensate(|o, _ctx| async move { Ok(o) }))
//!     .step(Step::new("charge", |mut o: Order, ctx| async move {
//!         // send ctx.idempotency_key() to the payment service
//!         assert_eq!(ctx.idempotency_key(), "order-7:charge:action");
//!         o.charged = true;
//!         Ok(o)
//!     }).compensate(|mut o: Order, _ctx| async move { o.charged = false; Ok(o) }))
//!     .step(Step::new("ship", |_o: Order, _ctx| async move {
//!         Err::<Order, _>(StepError::fail("address rejected"))
//!     }))
//!     .build()?;
//!
//! let engine = SagaEngine::new(MemoryStore::new());
//! let handle = engine.start(&order, "order-7", Order { id: 7, charged: false }).await?;
//! match handle.outcome().await? {
//!     SagaOutcome::Compensated { failed_step, state, .. } => {
//!         assert_eq!(failed_step, "ship");
//!         assert!(!state.charged);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Defaults and why
//!
//! - Action retry: 3 attempts, exponential backoff from 100 ms with full jitter, no timeout:
//!   enough to ride out a blip without holding a saga for long. Retriable steps: unlimited.
//! - Compensation retry: 5 attempts: compensations matter more than actions (money may be
//!   held), but a compensation that keeps failing needs a human, not an endless loop.
//! - SQLite `synchronous=FULL`: an acknowledged transition survives power loss; group commit
//!   pays for it.
//! - Postgres lease TTL 15 s, heartbeat every 5 s: a takeover within seconds of a crash,
//!   while a heartbeat may be late by two periods (a long GC pause, a slow database) before
//!   a live instance loses a saga.
//! - Parallel groups: other members finish (no participant call abandoned half-way);
//!   compensation in reverse declaration order (like sequential steps); member states are
//!   discarded unless a `merge` is set (no merge of arbitrary states is right by default).
//!
//! # Observability
//!
//! A `tracing` span `saga` per saga run and `saga_step` per attempt; debug events on
//! transitions, a warning when a saga gets stuck. [`SagaEngine::metrics`] gives counters
//! (started, completed, compensated, stuck, step attempts and latency); the `metrics` feature
//! emits them through the `metrics` crate with a `name` label (the definition). Each saga's
//! outcome is counted once, by the runner that reached it: recovery that finds a log already
//! ended (the saga finished while the pass ran) counts nothing.
//! [`SagaEngine::inspect`] returns a saga's timeline; [`SagaEngine::list`] filters by status
//! and definition.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admission;
mod config;
mod context;
mod definition;
mod engine;
mod error;
mod event;
mod guard;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod lifecycle;
mod log;
mod metrics;
mod operator;
mod outcome;
mod recovery;
mod replay;
mod runner;
mod shared;
mod store;
mod task;

pub use config::{
    DEFAULT_MAX_QUEUED, DEFAULT_OUTCOME_POLL_INTERVAL, RETENTION_PERIOD, SagaEngineBuilder,
};
pub use context::{Phase, StepContext, idempotency_key};
pub use definition::{
    GroupCompensation, GroupFailure, OnCancel, OnInterrupted, ParallelGroup, SagaDefinition,
    SagaDefinitionBuilder, SagaState, Step, StepKind, StepRetry,
};
pub use engine::SagaEngine;

/// The step retry policy's former name.
#[deprecated(note = "renamed `StepRetry` (the old name clashed with `staunch_retry::RetryPolicy`)")]
pub type RetryPolicy = StepRetry;
pub use error::{
    LifecycleAction, LoadError, LogRule, Refusal, SagaError, StepError, StepErrorKind, StoreError,
};
pub use event::{LOG_FORMAT_VERSION, SagaEvent};
pub use log::{SagaTimeline, TimelineEntry};
pub use metrics::SagaMetrics;
pub use outcome::{SagaHandle, SagaOutcome};
pub use recovery::{RecoveryLoop, RecoveryReport};
pub use store::{
    Append, Created, ListFilter, MemoryStore, NewSaga, SagaLog, SagaStatus, SagaStore, SagaSummary,
    StoredEvent,
};
#[cfg(feature = "postgres")]
pub use store::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "sqlite")]
pub use store::{SqliteStore, SqliteStoreBuilder, SqliteSynchronous};

/// The `sqlx` this crate was built with, for opening the database directly (e.g. to
/// inspect it, or in benchmarks).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sqlx;
