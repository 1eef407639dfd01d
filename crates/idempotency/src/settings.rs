//! [`IdempotencyConfig`]: the layer's settings as plain data, for settings files (feature
//! `serde`).

use std::time::Duration;

use http::HeaderName;
use staunch_core::ConfigError;

use crate::config::{Idempotency, IdempotencyBuilder, Oversized, StorePolicy};
use crate::record::FingerprintParts;

/// Layer settings; unset fields keep [`IdempotencyBuilder`]'s defaults. With the `serde`
/// feature it reads from any serde format, durations in human form.
///
/// ```toml
/// require_key = true
/// lease = "30s"
/// ttl = "24h"
/// stored_headers = ["content-type", "location"]
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// The key's header (default `idempotency-key`).
    pub header: Option<String>,
    /// Refuse requests without a key (default false).
    pub require_key: Option<bool>,
    /// The longest key (default 255).
    pub max_key_len: Option<usize>,
    /// How long an in-flight mark holds its key (default 60 s).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    pub lease: Option<Duration>,
    /// How long a finished record is kept (default 24 h).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    pub ttl: Option<Duration>,
    /// The largest stored response body (default 1 MiB).
    pub max_stored_body: Option<usize>,
    /// The largest request body fingerprinted (default 1 MiB).
    pub max_request_body: Option<usize>,
    /// How long a repeat waits for the first request (default zero).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    pub in_flight_wait: Option<Duration>,
    /// The response headers stored (default `content-type`, `location`).
    pub stored_headers: Option<Vec<String>>,
    /// Which responses are stored (default `not_server_errors`).
    pub store_policy: Option<StorePolicy>,
    /// Which request parts must match (default all).
    pub fingerprint: Option<FingerprintParts>,
    /// What a repeat of a too-large response gets (default `refuse_repeats`).
    pub oversized: Option<Oversized>,
    /// `Retry-After` on 503 (default 1 s).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    pub retry_after: Option<Duration>,
}

impl IdempotencyConfig {
    /// Checks and builds the settings. Errors name the field (`header`, `stored_headers`,
    /// and the builder's zero checks).
    pub fn build(&self) -> Result<Idempotency, ConfigError> {
        let mut b = IdempotencyBuilder::default();
        if let Some(header) = &self.header {
            let name = HeaderName::try_from(header.as_str())
                .map_err(|_| ConfigError::new("header", "must be a valid header name"))?;
            b = b.header(name);
        }
        if let Some(names) = &self.stored_headers {
            let names = names
                .iter()
                .map(|n| HeaderName::try_from(n.as_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ConfigError::new("stored_headers", "must be valid header names"))?;
            b = b.stored_headers(names);
        }
        if let Some(v) = self.require_key {
            b = b.require_key(v);
        }
        if let Some(v) = self.max_key_len {
            b = b.max_key_len(v);
        }
        if let Some(v) = self.lease {
            b = b.lease(v);
        }
        if let Some(v) = self.ttl {
            b = b.ttl(v);
        }
        if let Some(v) = self.max_stored_body {
            b = b.max_stored_body(v);
        }
        if let Some(v) = self.max_request_body {
            b = b.max_request_body(v);
        }
        if let Some(v) = self.in_flight_wait {
            b = b.in_flight_wait(v);
        }
        if let Some(v) = self.store_policy {
            b = b.store_policy(v);
        }
        if let Some(v) = self.fingerprint {
            b = b.fingerprint(v);
        }
        if let Some(v) = self.oversized {
            b = b.oversized(v);
        }
        if let Some(v) = self.retry_after {
            b = b.retry_after(v);
        }
        b.build()
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    #[test]
    fn a_settings_file_builds_and_bad_fields_are_named() {
        let config: IdempotencyConfig = toml::from_str(
            "require_key = true\nlease = \"30s\"\nstore_policy = \"success\"\nfingerprint = { body = false }\n",
        )
        .unwrap();
        let built = config.build().unwrap();
        assert_eq!(built.lease(), Duration::from_secs(30));
        let zero: IdempotencyConfig = toml::from_str("ttl = \"0s\"").unwrap();
        assert_eq!(zero.build().unwrap_err().field(), "ttl");
        let bad: IdempotencyConfig = toml::from_str("header = \"bad header\"").unwrap();
        assert_eq!(bad.build().unwrap_err().field(), "header");
        let bad: IdempotencyConfig = toml::from_str("stored_headers = [\"a b\"]").unwrap();
        assert_eq!(bad.build().unwrap_err().field(), "stored_headers");
        assert!(toml::from_str::<IdempotencyConfig>("nope = 1").is_err());
    }
}
