//! Durable storage: the [`SagaStore`] trait and its memory, SQLite and Postgres implementations.
//!
//! A store keeps, per saga, an append-only log of encoded events (numbered from 0) and a
//! summary row (definition, version, status, note, timestamps) the engine updates with every
//! append, so listing and recovery never scan logs. Nothing is deleted except by
//! [`SagaStore::purge`], which removes ended sagas whole. Appends carry the sequence number they start at and
//! fail with [`StoreError::Conflict`] when it is not the saga's next one: that check is what
//! keeps two writers of one saga from interleaving.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::{BoxFuture, FutureExt, ready};

use crate::error::StoreError;

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder, SqliteSynchronous};

/// Where a saga stands, as kept in its store's summary row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SagaStatus {
    /// Moving forward.
    Running,
    /// Undoing completed steps.
    Compensating,
    /// Waiting for an operator.
    Stuck,
    /// Held at a step boundary by an operator
    /// ([`SagaEngine::pause`](crate::SagaEngine::pause)); recovery leaves it alone until
    /// [`SagaEngine::resume`](crate::SagaEngine::resume).
    Paused,
    /// Terminal: every step succeeded.
    Completed,
    /// Terminal: rolled back.
    Compensated,
    /// Terminal: an operator marked it resolved.
    Resolved,
    /// Terminal: cancelled by an operator, every completed step compensated.
    Cancelled,
    /// Its log could not be loaded (unknown definition, undecodable row); kept untouched.
    Quarantined,
}

impl SagaStatus {
    /// Every status.
    pub const ALL: [Self; 9] = [
        Self::Running,
        Self::Compensating,
        Self::Stuck,
        Self::Paused,
        Self::Completed,
        Self::Compensated,
        Self::Resolved,
        Self::Cancelled,
        Self::Quarantined,
    ];

    /// The name stored in databases.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Stuck => "stuck",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Resolved => "resolved",
            Self::Cancelled => "cancelled",
            Self::Quarantined => "quarantined",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The statuses of sagas that have ended (every one [`is_terminal`](Self::is_terminal)):
    /// what a retention policy purges by default.
    pub const ENDED: [Self; 4] = [
        Self::Completed,
        Self::Compensated,
        Self::Resolved,
        Self::Cancelled,
    ];

    /// Whether no more transitions will happen without an operator or a code change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Compensated | Self::Resolved | Self::Cancelled
        )
    }

    /// Whether recovery resumes a saga in this status.
    pub fn is_resumable(self) -> bool {
        matches!(self, Self::Running | Self::Compensating)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A saga's summary row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaSummary {
    /// The saga id.
    pub saga_id: String,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub version: u32,
    /// Current status.
    pub status: SagaStatus,
    /// Why it is stuck or quarantined, when it is.
    pub note: Option<String>,
    /// When the saga was created, by the store's clock; `None` when the store does not
    /// know (a row written before the store kept it, or a value that is not a time).
    pub created_at: Option<SystemTime>,
    /// When its status or note last changed, by the store's clock: for an ended saga, when
    /// it ended. [`purge`](SagaStore::purge) compares this time. A store may also move it
    /// on appends that change neither (PostgreSQL does).
    pub updated_at: Option<SystemTime>,
    /// Since when the saga has been stuck, while it is.
    pub stuck_since: Option<SystemTime>,
}

impl SagaSummary {
    /// A summary with no note and no timestamps (for stores and tests that build one).
    pub fn new(
        saga_id: impl Into<String>,
        definition: impl Into<String>,
        version: u32,
        status: SagaStatus,
    ) -> Self {
        Self {
            saga_id: saga_id.into(),
            definition: definition.into(),
            version,
            status,
            note: None,
            created_at: None,
            updated_at: None,
            stuck_since: None,
        }
    }
}

/// Milliseconds since the Unix epoch as a time; `None` for a negative value.
pub(crate) fn time_from_ms(ms: Option<i64>) -> Option<SystemTime> {
    let ms = u64::try_from(ms?).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// A time as milliseconds since the Unix epoch (0 before it, saturating far after).
pub(crate) fn ms_from_time(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One stored log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the saga's log, from 0.
    pub seq: u64,
    /// The encoded event (for a row that is not UTF-8, a lossy copy for display only).
    pub payload: String,
    /// Set when the stored bytes are not valid UTF-8: the engine then quarantines the saga
    /// instead of decoding `payload`. Build rows with [`new`](Self::new) or
    /// [`from_bytes`](Self::from_bytes).
    pub utf8_error: Option<std::str::Utf8Error>,
}

impl StoredEvent {
    /// A row read back as text.
    pub fn new(seq: u64, payload: String) -> Self {
        Self {
            seq,
            payload,
            utf8_error: None,
        }
    }

    /// A row read back as bytes: checked for UTF-8, never altered silently.
    pub fn from_bytes(seq: u64, payload: Vec<u8>) -> Self {
        match String::from_utf8(payload) {
            Ok(payload) => Self::new(seq, payload),
            Err(e) => Self {
                seq,
                utf8_error: Some(e.utf8_error()),
                payload: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            },
        }
    }
}

/// A saga's summary and full log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaLog {
    /// The summary row.
    pub summary: SagaSummary,
    /// The log rows in sequence order.
    pub events: Vec<StoredEvent>,
}

/// A new saga: its summary row and first log rows (written at sequence 0, 1, ...).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewSaga {
    /// The saga id.
    pub saga_id: Arc<str>,
    /// Definition name.
    pub definition: Arc<str>,
    /// Definition version.
    pub version: u32,
    /// Initial status.
    pub status: SagaStatus,
    /// First log rows.
    pub events: Vec<String>,
}

impl NewSaga {
    /// A new saga row with its first events.
    pub fn new(
        saga_id: Arc<str>,
        definition: Arc<str>,
        version: u32,
        status: SagaStatus,
        events: Vec<String>,
    ) -> Self {
        Self {
            saga_id,
            definition,
            version,
            status,
            events,
        }
    }
}

/// What [`SagaStore::create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The saga was new and is now stored.
    New,
    /// A saga with this id already existed; nothing was written.
    Exists,
}

/// Rows appended to one saga's log, with its new status.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Append {
    /// The saga id.
    pub saga_id: Arc<str>,
    /// Sequence number of the first row; must be the saga's next one.
    pub first_seq: u64,
    /// The rows.
    pub events: Vec<String>,
    /// The status after these rows.
    pub status: SagaStatus,
    /// The note after these rows (why stuck), `None` clears it.
    pub note: Option<String>,
}

impl Append {
    /// Rows for `saga_id` starting at `first_seq`, leaving the saga in `status`.
    pub fn new(saga_id: Arc<str>, first_seq: u64, events: Vec<String>, status: SagaStatus) -> Self {
        Self {
            saga_id,
            first_seq,
            events,
            status,
            note: None,
        }
    }

    /// Sets the summary note.
    pub fn with_note(mut self, note: Option<String>) -> Self {
        self.note = note;
        self
    }
}

/// Which sagas [`SagaStore::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only sagas in one of these statuses (all when empty).
    pub statuses: Vec<SagaStatus>,
    /// Only sagas of this definition.
    pub definition: Option<String>,
    /// At most this many, in saga id order.
    pub limit: Option<usize>,
}

impl ListFilter {
    /// Every saga.
    pub fn all() -> Self {
        Self::default()
    }

    /// Sagas in `status`.
    pub fn status(status: SagaStatus) -> Self {
        Self {
            statuses: vec![status],
            ..Self::default()
        }
    }

    /// Restricts to one definition.
    pub fn definition(mut self, name: impl Into<String>) -> Self {
        self.definition = Some(name.into());
        self
    }

    /// Caps the number of results.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    pub(crate) fn matches(&self, s: &SagaSummary) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&s.status))
            && self.definition.as_deref().is_none_or(|d| d == s.definition)
    }
}

/// Durable storage for saga logs.
///
/// Contract (checked by the crate's store contract tests, which every implementation should
/// pass):
/// - `create` is atomic and idempotent on the saga id: the first call writes the summary and
///   rows and returns [`Created::New`]; later calls write nothing and return
///   [`Created::Exists`].
/// - `append` writes all its rows and the summary, or nothing; it fails with
///   [`StoreError::Conflict`] unless `first_seq` is the saga's next sequence number. When it
///   returns `Ok`, the rows are durable (to the store's durability setting).
/// - `load` returns rows in sequence order, exactly as written; undecodable rows are the
///   engine's problem, never the store's.
/// - `quarantine` sets status and note and touches no row.
/// - Nothing is deleted but by `purge`, which removes sagas whole (summary and every row) in
///   the statuses it is given, each saga atomically.
///
/// Stores shared by several processes (like [`PostgresStore`](crate::PostgresStore) with the
/// `postgres` feature) also own each unfinished saga through a **lease**: `create` and
/// [`claim_resumable`](Self::claim_resumable) take it, every `append` checks it in the same
/// transaction as its rows (failing with [`StoreError::LeaseLost`] once another instance
/// took over), and [`release`](Self::release) lets it go. Single-process stores keep the
/// default lease methods, which own everything.
pub trait SagaStore: Send + Sync + fmt::Debug + 'static {
    /// Creates a saga unless one with its id exists.
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>>;

    /// Appends rows to a saga's log and updates its summary.
    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>>;

    /// A saga's summary and log, `None` if unknown.
    fn load<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<Option<SagaLog>, StoreError>>;

    /// Summaries matching `filter`, in saga id order.
    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<SagaSummary>, StoreError>>;

    /// Marks a saga quarantined with a reason, leaving its log untouched.
    fn quarantine<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Takes up to `limit` running or compensating sagas that nobody drives (for a leased
    /// store: no owner, an expired lease, or a lease of this instance it no longer uses) and
    /// returns their summaries; recovery resumes exactly these. The default lists every
    /// running or compensating saga: a single-process store has no other owner.
    fn claim_resumable(&self, limit: usize) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        Box::pin(async move {
            let filter = ListFilter {
                statuses: vec![SagaStatus::Running, SagaStatus::Compensating],
                definition: None,
                limit: Some(limit),
            };
            self.list(&filter).await
        })
    }

    /// Takes the lease of one saga that no runner drives (stuck, or with an expired lease)
    /// before an operator action appends to it. Fails with [`StoreError::LeaseLost`] when
    /// another instance holds a live lease. The default does nothing.
    fn acquire<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = saga_id;
        ready(Ok(())).boxed()
    }

    /// This instance stops driving the saga: stop renewing its lease, so that it expires
    /// and the saga can be claimed again. The default does nothing.
    fn release(&self, saga_id: &str) {
        let _ = saga_id;
    }

    /// How long a lease lasts without renewal, for leased stores; `None` otherwise.
    fn lease_ttl(&self) -> Option<Duration> {
        None
    }

    /// Stores (or, with `None`, clears) an operator's request for a saga: a cancel or a
    /// pause, encoded by the engine, which the saga's runner reads at its next step
    /// boundary ([`request`](Self::request)). Touches no log row and no status. Returns
    /// `false` when no saga has this id.
    ///
    /// The default refuses: a store that does not implement it cannot cancel or pause.
    fn set_request<'a>(
        &'a self,
        saga_id: &'a str,
        request: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = (saga_id, request);
        ready(Err(StoreError::Database(
            "this saga store does not keep operator requests (cancel, pause)".into(),
        )))
        .boxed()
    }

    /// The request [`set_request`](Self::set_request) stored for a saga, if any.
    fn request<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let _ = saga_id;
        ready(Ok(None)).boxed()
    }

    /// For a store shared by several instances: whether a request was stored for a saga this
    /// instance drives since the last call (found by the lease heartbeat), so its runner
    /// reads it at its next step boundary. The default (a single-process store, where the
    /// engine signals its own runners) says `false`.
    fn request_seen(&self, saga_id: &str) -> bool {
        let _ = saga_id;
        false
    }

    /// Deletes up to `limit` sagas whose status is one of `statuses` and whose status last
    /// changed before `before` ([`SagaSummary::updated_at`]; a saga whose time is unknown is
    /// kept), each with its whole log, and returns their ids. Each saga goes atomically: a
    /// crash leaves it whole or gone. The engine only passes ended and quarantined statuses
    /// ([`SagaEngine::purge`](crate::SagaEngine::purge)).
    ///
    /// The default refuses with [`StoreError::Unsupported`].
    fn purge<'a>(
        &'a self,
        before: SystemTime,
        statuses: &'a [SagaStatus],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let _ = (before, statuses, limit);
        ready(Err(StoreError::Unsupported {
            operation: "purging sagas",
        }))
        .boxed()
    }
}

impl<T: SagaStore + ?Sized> SagaStore for Arc<T> {
    fn create(&self, saga: NewSaga) -> BoxFuture<'_, Result<Created, StoreError>> {
        (**self).create(saga)
    }
    fn append(&self, append: Append) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).append(append)
    }
    fn load<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<Option<SagaLog>, StoreError>> {
        (**self).load(saga_id)
    }
    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
    ) -> BoxFuture<'a, Result<Vec<SagaSummary>, StoreError>> {
        (**self).list(filter)
    }
    fn quarantine<'a>(
        &'a self,
        saga_id: &'a str,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).quarantine(saga_id, reason)
    }
    fn claim_resumable(&self, limit: usize) -> BoxFuture<'_, Result<Vec<SagaSummary>, StoreError>> {
        (**self).claim_resumable(limit)
    }
    fn acquire<'a>(&'a self, saga_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).acquire(saga_id)
    }
    fn release(&self, saga_id: &str) {
        (**self).release(saga_id);
    }
    fn lease_ttl(&self) -> Option<Duration> {
        (**self).lease_ttl()
    }
    fn set_request<'a>(
        &'a self,
        saga_id: &'a str,
        request: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).set_request(saga_id, request)
    }
    fn request<'a>(
        &'a self,
        saga_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        (**self).request(saga_id)
    }
    fn request_seen(&self, saga_id: &str) -> bool {
        (**self).request_seen(saga_id)
    }
    fn purge<'a>(
        &'a self,
        before: SystemTime,
        statuses: &'a [SagaStatus],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        (**self).purge(before, statuses, limit)
    }
}
