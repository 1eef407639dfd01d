//! Where keys live: the [`IdempotencyStore`] trait and its memory, SQLite and PostgreSQL stores.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::record::{Fingerprint, Outcome};

pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
mod purge;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// One request's hold on its key: the scoped key, the request's fingerprint and a token that
/// names this attempt, so that a request whose lease expired and was taken over cannot finish
/// or release the newer attempt's mark.
///
/// The layer puts it into the request's extensions before calling the handler; a handler
/// that writes its response in its own transaction (`SqliteStore::finish_in`,
/// `PostgresStore::finish_in`) reads it from there. Clones share one flag,
/// [`is_recorded`](Self::is_recorded): once `finish_in` has written the reply, the layer does
/// not write it again.
#[derive(Debug, Clone)]
pub struct Claim {
    key: String,
    fingerprint: Fingerprint,
    token: i64,
    ttl: Duration,
    recorded: Arc<AtomicBool>,
}

/// Two claims are equal when they name the same attempt on the same key; whether the reply is
/// recorded yet does not count.
impl PartialEq for Claim {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.fingerprint == other.fingerprint
            && self.token == other.token
            && self.ttl == other.ttl
    }
}

impl Eq for Claim {}

impl Claim {
    /// A claim on `key` (already scoped) for a request with this fingerprint, with a fresh
    /// random token, whose record is kept for `ttl` once finished.
    pub fn new(key: String, fingerprint: Fingerprint, ttl: Duration) -> Self {
        Claim {
            key,
            fingerprint,
            token: fastrand::i64(..),
            ttl,
            recorded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether this claim's reply was recorded by the handler (`finish_in`, or
    /// [`mark_recorded`](Self::mark_recorded)): the layer then skips its own
    /// [`IdempotencyStore::finish`] and passes the handler's response through unread.
    pub fn is_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }

    /// Tells the layer that the handler has written this claim's reply itself, in the
    /// transaction it commits before answering (the SQL stores' `finish_in` calls it; a
    /// store of your own with such a method calls it too). The layer then does not write the
    /// reply again. A handler that rolls back afterwards must answer with a response the
    /// layer does not store (a 5xx by default), so the key is freed for a retry.
    pub fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::Release);
    }

    /// How long the finished record is kept (the layer's `ttl`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The scoped key, as stored.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The token of this attempt.
    pub fn token(&self) -> i64 {
        self.token
    }
}

/// What [`IdempotencyStore::begin`] found for a key.
// A finished key's response is moved once, to the replay; a box would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key was free (never seen, expired, or its in-flight lease ran out): it is now
    /// marked in flight for this claim, until the lease ends.
    Started,
    /// Another request holds the key and has not finished.
    InFlight {
        /// That request's fingerprint.
        fingerprint: Fingerprint,
    },
    /// A request with this key has finished.
    Finished {
        /// That request's fingerprint.
        fingerprint: Fingerprint,
        /// What it answered.
        outcome: Outcome,
    },
}

/// A store refused or failed an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (connection, I/O, constraint).
    #[error("idempotency store failed: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored row could not be read back: it was damaged or written by something else.
    #[error("the idempotency record for key {key:?} is damaged: {what}")]
    Corrupt {
        /// The stored (scoped) key.
        key: String,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The claim's lease ended and another request took the key (or it was purged): this
    /// attempt must not record its response. In a handler's transaction, roll back.
    #[error("the idempotency key {key:?} is no longer held by this request (lease expired)")]
    LeaseLost {
        /// The stored (scoped) key.
        key: String,
    },
}

/// Storage for idempotency keys. The layer calls [`begin`](Self::begin) before the handler,
/// then at most one of [`finish`](Self::finish) (the response is kept) or
/// [`release`](Self::release) (the key is free again: a 5xx by default, an error, a
/// cancelled request); neither when the handler recorded its reply itself in its own
/// transaction ([`Claim::is_recorded`]) and answered with a response the policy stores.
///
/// Implementations must make `begin` atomic: of many concurrent calls for one free key,
/// exactly one gets [`Begin::Started`].
///
/// A store that wraps another, here to count the requests that start:
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use staunch_idempotency::{Begin, Claim, IdempotencyStore, MemoryStore, Outcome, StoreError};
///
/// #[derive(Debug, Clone, Default)]
/// struct Counted {
///     inner: MemoryStore,
///     started: Arc<AtomicU64>,
/// }
///
/// impl IdempotencyStore for Counted {
///     async fn begin(&self, claim: &Claim, lease: Duration) -> Result<Begin, StoreError> {
///         let found = self.inner.begin(claim, lease).await?;
///         if found == Begin::Started {
///             self.started.fetch_add(1, Ordering::Relaxed);
///         }
///         Ok(found)
///     }
///     async fn finish(&self, claim: &Claim, outcome: &Outcome, ttl: Duration) -> Result<(), StoreError> {
///         self.inner.finish(claim, outcome, ttl).await
///     }
///     async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
///         self.inner.release(claim).await
///     }
///     async fn purge(&self) -> Result<u64, StoreError> {
///         self.inner.purge().await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = Counted::default();
/// let claim = Claim::new("k".into(), staunch_idempotency::Fingerprint([0; 32]), Duration::from_secs(60));
/// assert_eq!(store.begin(&claim, Duration::from_secs(5)).await.unwrap(), Begin::Started);
/// assert_ne!(store.begin(&claim, Duration::from_secs(5)).await.unwrap(), Begin::Started);
/// assert_eq!(store.started.load(Ordering::Relaxed), 1);
/// # }
/// ```
pub trait IdempotencyStore: Clone + Send + Sync + 'static {
    /// Marks `claim`'s key in flight until `lease` from now, unless it is already held or
    /// finished (then says which, with the holder's fingerprint).
    fn begin(
        &self,
        claim: &Claim,
        lease: Duration,
    ) -> impl Future<Output = Result<Begin, StoreError>> + Send;

    /// Records the outcome of `claim`, kept for `ttl`, if the claim still holds its key in
    /// flight. Errors with [`StoreError::LeaseLost`] (recording nothing) if it does not: its
    /// lease ended and another request took the key over, or the key was purged or already
    /// finished. The layer logs that at `warn` and still answers with the handler's response.
    fn finish(
        &self,
        claim: &Claim,
        outcome: &Outcome,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Frees `claim`'s key if the claim still holds it in flight.
    fn release(&self, claim: &Claim) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes every record whose TTL or lease has ended; returns how many. The stores also
    /// run this in the background.
    fn purge(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Milliseconds since the Unix epoch, for durable expiry times (saturating, never panicking).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `now` plus `d` in milliseconds, saturating.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn after_ms(now: i64, d: Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A row as read from a SQL store, before it is trusted.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct RawRow {
    pub(crate) fingerprint: Vec<u8>,
    pub(crate) state: i64,
    pub(crate) status: Option<i64>,
    pub(crate) headers: Option<Vec<u8>>,
    pub(crate) body: Option<Vec<u8>>,
    /// `NULL` in rows written before trailers were kept: no trailers.
    pub(crate) trailers: Option<Vec<u8>>,
}

/// Row states in the SQL stores.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const IN_FLIGHT: i64 = 0;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const STORED: i64 = 1;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const NOT_STORED: i64 = 2;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl RawRow {
    /// Validates the row; a damaged one is [`StoreError::Corrupt`], never a panic.
    pub(crate) fn decode(self, key: &str) -> Result<Begin, StoreError> {
        use crate::record::{StoredResponse, decode_headers, decode_status};
        let corrupt = |what| StoreError::Corrupt {
            key: key.to_owned(),
            what,
        };
        let fingerprint = Fingerprint::from_slice(&self.fingerprint)
            .ok_or_else(|| corrupt("the fingerprint is not 32 bytes"))?;
        let status = || {
            self.status
                .ok_or("the status code is missing")
                .and_then(decode_status)
                .map_err(corrupt)
        };
        match self.state {
            IN_FLIGHT => Ok(Begin::InFlight { fingerprint }),
            STORED => {
                let status = status()?;
                let headers =
                    decode_headers(self.headers.as_deref().unwrap_or_default()).map_err(corrupt)?;
                let body = self.body.ok_or_else(|| corrupt("the body is missing"))?;
                let trailers = decode_headers(self.trailers.as_deref().unwrap_or_default())
                    .map_err(|_| corrupt("the trailers are damaged"))?;
                Ok(Begin::Finished {
                    fingerprint,
                    outcome: Outcome::Stored(StoredResponse {
                        status,
                        headers,
                        body: body.into(),
                        trailers,
                    }),
                })
            }
            NOT_STORED => Ok(Begin::Finished {
                fingerprint,
                outcome: Outcome::NotStored { status: status()? },
            }),
            _ => Err(corrupt("the state is unknown")),
        }
    }
}

/// The columns a SQL store writes for an outcome.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct OutcomeColumns {
    pub(crate) state: i64,
    pub(crate) status: i64,
    pub(crate) headers: Option<Vec<u8>>,
    pub(crate) body: Option<Vec<u8>>,
    /// `NULL` when there are none.
    pub(crate) trailers: Option<Vec<u8>>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn outcome_columns(outcome: &Outcome) -> OutcomeColumns {
    use crate::record::encode_headers;
    match outcome {
        Outcome::Stored(r) => OutcomeColumns {
            state: STORED,
            status: i64::from(r.status.as_u16()),
            headers: Some(encode_headers(&r.headers)),
            body: Some(r.body.to_vec()),
            trailers: (!r.trailers.is_empty()).then(|| encode_headers(&r.trailers)),
        },
        Outcome::NotStored { status } => OutcomeColumns {
            state: NOT_STORED,
            status: i64::from(status.as_u16()),
            headers: None,
            body: None,
            trailers: None,
        },
    }
}

/// How many times `begin` retries a key that was freed between its insert and its read.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const BEGIN_ATTEMPTS: usize = 4;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(Box::new(e))
}

/// How often the stores purge by default.
pub(crate) const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_mins(1);

pub(crate) use purge::PurgeTask;
