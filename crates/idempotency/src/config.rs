//! [`IdempotencyBuilder`]: the layer's settings, validated once into [`Idempotency`].

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, StatusCode};
use staunch_core::ConfigError;

use crate::record::FingerprintParts;

/// Which responses are stored for replay; the others free the key so the client may retry.
///
/// A gRPC reply is answered with HTTP 200 whatever its outcome, so for one the layer also
/// reads its `grpc-status` (from the trailers, or the headers of a trailers-only reply) with
/// [`stores_grpc`](Self::stores_grpc): by default, codes that answer the request itself
/// (the analogues of 4xx: `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`,
/// `PERMISSION_DENIED`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`, `UNAUTHENTICATED`) are stored
/// with `OK`; the transient and server-failure codes (`CANCELLED`, `UNKNOWN`,
/// `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `ABORTED`, `UNIMPLEMENTED`, `INTERNAL`,
/// `UNAVAILABLE`, `DATA_LOSS`) are not, so a retry runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum StorePolicy {
    /// 1xx to 4xx: a server failure (5xx) is not stored, so a retry runs the request again
    /// (the default).
    #[default]
    NotServerErrors,
    /// 2xx only.
    Success,
    /// Every response, 5xx too.
    All,
}

impl StorePolicy {
    /// Whether a response with this status is stored.
    pub fn stores(self, status: StatusCode) -> bool {
        match self {
            StorePolicy::NotServerErrors => !status.is_server_error(),
            StorePolicy::Success => status.is_success(),
            StorePolicy::All => true,
        }
    }

    /// Whether a gRPC reply with this `grpc-status` code is stored (see the type's docs); a
    /// code outside 0..=16 counts as `UNKNOWN`.
    pub fn stores_grpc(self, code: i32) -> bool {
        match self {
            // CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED,
            // UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, and anything unknown.
            StorePolicy::NotServerErrors => matches!(code, 0 | 3 | 5 | 6 | 7 | 9 | 11 | 16),
            StorePolicy::Success => code == 0,
            StorePolicy::All => true,
        }
    }
}

/// What a repeat gets when the first response's body was over `max_stored_body` (the first
/// request is answered in full either way; only the replay is missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Oversized {
    /// The key is kept without a response: repeats get 409 with a reason, never a second run
    /// (the default).
    #[default]
    RefuseRepeats,
    /// The key is freed: a repeat runs the request again.
    Reprocess,
}

/// Builds the layer's [`Idempotency`] settings; every field has a default.
#[derive(Debug, Clone)]
pub struct IdempotencyBuilder {
    header: HeaderName,
    require_key: bool,
    max_key_len: usize,
    lease: Duration,
    ttl: Duration,
    max_stored_body: usize,
    max_request_body: usize,
    in_flight_wait: Duration,
    stored_headers: Vec<HeaderName>,
    store_policy: StorePolicy,
    fingerprint: FingerprintParts,
    oversized: Oversized,
    retry_after: Duration,
}

impl Default for IdempotencyBuilder {
    fn default() -> Self {
        IdempotencyBuilder {
            header: HeaderName::from_static("idempotency-key"),
            require_key: false,
            max_key_len: 255,
            lease: Duration::from_mins(1),
            ttl: Duration::from_hours(24),
            max_stored_body: 1024 * 1024,
            max_request_body: 1024 * 1024,
            in_flight_wait: Duration::ZERO,
            stored_headers: vec![http::header::CONTENT_TYPE, http::header::LOCATION],
            store_policy: StorePolicy::default(),
            fingerprint: FingerprintParts::default(),
            oversized: Oversized::default(),
            retry_after: Duration::from_secs(1),
        }
    }
}

impl IdempotencyBuilder {
    /// The header the key is read from (default `Idempotency-Key`).
    pub fn header(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// Refuses requests without a key with 400 (default: they pass through untouched).
    pub fn require_key(mut self, yes: bool) -> Self {
        self.require_key = yes;
        self
    }

    /// The longest key accepted, in bytes once unquoted (default 255; zero is refused).
    pub fn max_key_len(mut self, len: usize) -> Self {
        self.max_key_len = len;
        self
    }

    /// How long an in-flight mark holds its key (default 60 s; zero is refused). A process
    /// that crashes mid-request leaves the key reprocessable after this; a handler that runs
    /// longer may see its key taken over, so make it longer than the slowest handler.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a finished record is kept for replay (default 24 h; zero is refused).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The largest response body kept for replay, in bytes (default 1 MiB; zero is refused).
    /// A larger one is sent in full but not stored; see [`oversized`](Self::oversized).
    pub fn max_stored_body(mut self, bytes: usize) -> Self {
        self.max_stored_body = bytes;
        self
    }

    /// The largest request body read for the fingerprint, in bytes (default 1 MiB; zero is
    /// refused); a larger one is refused with 413 before the handler.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.max_request_body = bytes;
        self
    }

    /// How long a repeat waits for the first request with its key to finish before it gets
    /// 409 (default zero: 409 at once). A repeat that sees the first one finish gets its
    /// stored response.
    pub fn in_flight_wait(mut self, wait: Duration) -> Self {
        self.in_flight_wait = wait;
        self
    }

    /// The response headers stored and replayed (default `content-type` and `location`).
    pub fn stored_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.stored_headers = names.into_iter().collect();
        self
    }

    /// Which responses are stored (default [`StorePolicy::NotServerErrors`]).
    pub fn store_policy(mut self, policy: StorePolicy) -> Self {
        self.store_policy = policy;
        self
    }

    /// Which request parts must match for a repeat to be replayed (default all).
    pub fn fingerprint(mut self, parts: FingerprintParts) -> Self {
        self.fingerprint = parts;
        self
    }

    /// What a repeat gets when the first response was too large to store (default
    /// [`Oversized::RefuseRepeats`]).
    pub fn oversized(mut self, oversized: Oversized) -> Self {
        self.oversized = oversized;
        self
    }

    /// The `Retry-After` sent with 503 when the store fails (default 1 s, sent in whole
    /// seconds, at least 1); over gRPC, `grpc-retry-pushback-ms` with `UNAVAILABLE`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Checks the settings. Errors name the field: a zero `max_key_len`, `lease`, `ttl`,
    /// `max_stored_body` or `max_request_body`.
    pub fn build(self) -> Result<Idempotency, ConfigError> {
        let positive = "must be greater than zero";
        if self.max_key_len == 0 {
            return Err(ConfigError::new("max_key_len", positive));
        }
        if self.lease.is_zero() {
            return Err(ConfigError::new("lease", positive));
        }
        if self.ttl.is_zero() {
            return Err(ConfigError::new("ttl", positive));
        }
        if self.max_stored_body == 0 {
            return Err(ConfigError::new("max_stored_body", positive));
        }
        if self.max_request_body == 0 {
            return Err(ConfigError::new("max_request_body", positive));
        }
        let retry_after = self.retry_after.as_secs().max(1);
        let retry_after = http::HeaderValue::from(retry_after);
        let pushback = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
        let retry_pushback_ms = http::HeaderValue::from(pushback.max(1));
        Ok(Idempotency {
            inner: Arc::new(Settings {
                header: self.header,
                require_key: self.require_key,
                max_key_len: self.max_key_len,
                lease: self.lease,
                ttl: self.ttl,
                max_stored_body: self.max_stored_body,
                max_request_body: self.max_request_body,
                in_flight_wait: self.in_flight_wait,
                stored_headers: self.stored_headers,
                store_policy: self.store_policy,
                fingerprint: self.fingerprint,
                oversized: self.oversized,
                retry_after,
                retry_pushback_ms,
            }),
        })
    }
}

/// Validated layer settings, cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub(crate) inner: Arc<Settings>,
}

impl Idempotency {
    /// Settings to build, starting from the defaults.
    pub fn builder() -> IdempotencyBuilder {
        IdempotencyBuilder::default()
    }

    /// How long a finished record is kept.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// How long an in-flight mark holds its key.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }
}

impl Default for Idempotency {
    fn default() -> Self {
        // The defaults are valid.
        match IdempotencyBuilder::default().build() {
            Ok(settings) => settings,
            Err(e) => unreachable!("default idempotency settings are invalid: {e}"),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) header: HeaderName,
    pub(crate) require_key: bool,
    pub(crate) max_key_len: usize,
    pub(crate) lease: Duration,
    pub(crate) ttl: Duration,
    pub(crate) max_stored_body: usize,
    pub(crate) max_request_body: usize,
    pub(crate) in_flight_wait: Duration,
    pub(crate) stored_headers: Vec<HeaderName>,
    pub(crate) store_policy: StorePolicy,
    pub(crate) fingerprint: FingerprintParts,
    pub(crate) oversized: Oversized,
    pub(crate) retry_after: http::HeaderValue,
    pub(crate) retry_pushback_ms: http::HeaderValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_settings_are_refused_by_name() {
        let b = Idempotency::builder;
        let field = |r: Result<Idempotency, ConfigError>| r.unwrap_err().field().to_owned();
        assert_eq!(field(b().max_key_len(0).build()), "max_key_len");
        assert_eq!(field(b().lease(Duration::ZERO).build()), "lease");
        assert_eq!(field(b().ttl(Duration::ZERO).build()), "ttl");
        assert_eq!(field(b().max_stored_body(0).build()), "max_stored_body");
        assert_eq!(field(b().max_request_body(0).build()), "max_request_body");
        assert!(b().build().is_ok());
        let huge = b()
            .lease(Duration::MAX)
            .ttl(Duration::MAX)
            .retry_after(Duration::MAX);
        assert!(huge.build().is_ok());
    }

    #[test]
    fn the_default_policy_stores_all_but_server_errors() {
        let p = StorePolicy::default();
        assert!(p.stores(StatusCode::CREATED) && p.stores(StatusCode::NOT_FOUND));
        assert!(!p.stores(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!StorePolicy::Success.stores(StatusCode::BAD_REQUEST));
        assert!(StorePolicy::All.stores(StatusCode::BAD_GATEWAY));
        // gRPC: OK and the request's own refusals are stored, transient failures not.
        let stored: Vec<i32> = (-1..=17).filter(|&c| p.stores_grpc(c)).collect();
        assert_eq!(stored, [0, 3, 5, 6, 7, 9, 11, 16]);
        assert!(StorePolicy::Success.stores_grpc(0) && !StorePolicy::Success.stores_grpc(5));
        assert!(StorePolicy::All.stores_grpc(14));
    }
}
