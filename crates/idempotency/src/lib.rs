//! Exactly-once request handling for servers: a tower layer for the `Idempotency-Key` header
//! (draft-ietf-httpapi-idempotency-key-header), with memory, SQLite and PostgreSQL stores.
//!
//! The first request with a key runs and its response (status, chosen headers, body up to a
//! cap) is stored; a repeat with the same key and the same request (method, path, query, body
//! digest) gets the stored response, marked `idempotent-replayed: true`, without reaching the
//! handler. A key reused for another request gets 422; a repeat while the first still runs
//! gets 409 (or waits, up to [`IdempotencyBuilder::in_flight_wait`]). See
//! [`IdempotencyService`] for every answer the layer gives in the handler's place.
//!
//! gRPC calls (`content-type: application/grpc`) get the same treatment, keyed by the
//! `idempotency-key` metadata: the reply is stored with its trailers (`grpc-status`,
//! `grpc-message`) and replayed with them, and the layer's refusals are gRPC statuses
//! (`INVALID_ARGUMENT` for a reused key, `ABORTED` in flight; the table is on
//! [`IdempotencyService`]). On a tonic server, give the layer tonic's body with
//! [`IdempotencyLayer::rebuild_body`].
//!
//! ```
//! use axum::{Router, routing::post};
//! use staunch_idempotency::{Idempotency, IdempotencyLayer, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let settings = Idempotency::builder().require_key(true).build().unwrap();
//! let app: Router = Router::new()
//!     .route("/charges", post(|| async { "charged" }))
//!     .layer(IdempotencyLayer::new(MemoryStore::new(), settings));
//! # let _ = app; }
//! ```
//!
//! # Exactly once with the handler's own database
//!
//! A stored response alone is at-least-once: a crash after the handler's write and before
//! the layer stores the response lets a repeat run the write again. The recommended way is to
//! record the response in the handler's own transaction, with the SQLite or PostgreSQL store
//! on the handler's database: the layer puts the request's [`Claim`] into its extensions and
//! the handler calls `finish_in(&mut tx, &claim, &response)` before it commits. Then the
//! business write and the record commit together or not at all: after a crash before the
//! commit, neither exists and the key is free once its lease ends; after the commit, a repeat
//! gets the recorded response. `finish_in` marks the claim recorded ([`Claim::is_recorded`]),
//! so the layer does not write the response a second time.
//!
//! A handler that outlives its lease may see its key taken over by a repeat: the store then
//! refuses its record with [`StoreError::LeaseLost`], and the layer logs it at `warn` (and
//! counts it with the `metrics` feature) while the client still gets the response.
//!
//! # The client side
//!
//! [`IdempotencyKey`] and [`IdempotencyKeyLayer`] send a key (a saga step's
//! `StepContext::idempotency_key()`) as the header; staunch's retry layer then retries the
//! POST, since a server behind this layer runs it once.
//!
//! # Features
//!
//! - `sqlite`: [`SqliteStore`]. `postgres`: [`PostgresStore`]. Both through `sqlx`.
//! - `serde`: [`IdempotencyConfig`] for settings files.
//! - `metrics`: the counter `staunch.idempotency.leases_lost` through the `metrics`
//!   facade.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
mod client;
mod config;
mod key;
mod layer;
mod rebuild;
mod record;
mod scope;
mod service;
mod settings;
mod store;

pub use crate::body::IdempotencyBody;
pub use crate::client::{IDEMPOTENCY_KEY, IdempotencyKey, IdempotencyKeyLayer, SetIdempotencyKey};
pub use crate::config::{Idempotency, IdempotencyBuilder, Oversized, StorePolicy};
pub use crate::key::{KeyError, parse_key};
pub use crate::layer::IdempotencyLayer;
pub use crate::rebuild::{RebuildBody, ViaFrom};
pub use crate::record::{Fingerprint, FingerprintParts, Outcome, StoredResponse};
pub use crate::scope::{KeyScope, Unscoped};
pub use crate::service::{IdempotencyService, REPLAYED, ResponseFuture};
pub use crate::settings::IdempotencyConfig;
pub use crate::store::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use crate::store::postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use crate::store::sqlite::SqliteStore;
pub use crate::store::{Begin, Claim, IdempotencyStore, StoreError};

/// The `sqlx` this crate was built with, to open the pool the store and the handler share.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sqlx;

/// The boxed error type of the layer's response bodies.
pub use staunch_core::BoxError;
