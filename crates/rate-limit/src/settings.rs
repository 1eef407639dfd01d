//! [`RateLimitConfig`]: a rate limiter's settings as plain data, for settings files (feature
//! `serde`).

use std::time::Duration;

use staunch_core::ConfigError;

use crate::{KeyedRateLimiter, RateLimiter, RateLimiterBuilder};

/// A rate limiter's settings: `limit` calls per `per`, bursts of `burst`, waits up to
/// `max_wait`, and for a keyed limiter `max_keys` keys remembered.
///
/// ```toml
/// limit = 100
/// per = "1s"
/// burst = 20
/// max_wait = "50ms"
/// ```
///
/// Every value is checked by [`build`](Self::build); a bad one is a [`ConfigError`] naming it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Calls admitted per `per` on average (required).
    pub limit: Option<u32>,
    /// The period of `limit` (required), e.g. `"1s"`.
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub per: Option<Duration>,
    /// Calls let through at once by a full bucket (default `limit`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub burst: Option<u32>,
    /// How long a call may wait for a permit (default zero: refused at once).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_wait: Option<Duration>,
    /// Keys remembered by a keyed limiter (default 10 000).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_keys: Option<usize>,
}

#[cfg(feature = "serde")]
staunch_core::tables! {
    RateLimitConfig: "a table of rate limiter settings", serialize;
}

impl RateLimitConfig {
    /// The builder these settings describe.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a missing `limit` or `per`.
    pub fn builder(&self, name: &str) -> Result<RateLimiterBuilder, ConfigError> {
        let limit = self
            .limit
            .ok_or_else(|| ConfigError::new("limit", "is required"))?;
        let per = self
            .per
            .ok_or_else(|| ConfigError::new("per", "is required"))?;
        let mut builder = RateLimiter::builder(name).rate(limit, per);
        if let Some(burst) = self.burst {
            builder = builder.burst(burst);
        }
        if let Some(max_wait) = self.max_wait {
            builder = builder.max_wait(max_wait);
        }
        if let Some(max_keys) = self.max_keys {
            builder = builder.max_keys(max_keys);
        }
        Ok(builder)
    }

    /// A limiter called `name` with these settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, as the builder's (`limit` for `rate.count`, `per`
    /// for `rate.per`).
    pub fn build(&self, name: &str) -> Result<RateLimiter, ConfigError> {
        self.builder(name)?.build().map_err(rename)
    }

    /// A keyed limiter called `name` with these settings.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn build_keyed<K: std::hash::Hash + Eq>(
        &self,
        name: &str,
    ) -> Result<KeyedRateLimiter<K>, ConfigError> {
        self.builder(name)?.build_keyed().map_err(rename)
    }
}

/// The builder's field names as the settings spell them.
fn rename(err: ConfigError) -> ConfigError {
    match err.field() {
        "rate.count" | "rate" => ConfigError::new("limit", err.rule().to_owned()),
        "rate.per" => ConfigError::new("per", err.rule().to_owned()),
        _ => err,
    }
}
