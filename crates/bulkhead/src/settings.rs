//! [`BulkheadConfig`] and [`PartitionedBulkheadConfig`]: bulkhead settings as plain data, for
//! settings files (feature `serde`).

use std::collections::BTreeMap;
use std::time::Duration;

use staunch_core::{ConfigError, Maybe};

use crate::config::validate_limit;
use crate::{
    AdaptiveLimit, Aimd, Bulkhead, BulkheadBuilder, PartitionedBulkhead,
    PartitionedBulkheadBuilder, Vegas,
};

/// Bulkhead settings; unset fields keep [`BulkheadBuilder`]'s defaults. With the `serde`
/// feature it reads from any serde format as a table, durations in human form.
///
/// ```toml
/// max_concurrent = 32
/// max_wait = "20ms"
/// adaptive = { algorithm = "vegas", min_limit = 4, max_limit = 128 }
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct BulkheadConfig {
    /// Calls in flight at most (default 25).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_concurrent: Option<usize>,
    /// How long a call may wait for a permit (default zero: fail fast).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_wait: Option<Duration>,
    /// Calls that may wait at once (default: `max_concurrent`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_queued: Option<usize>,
    /// Lets the limit move with observed latency and failures (default: a fixed limit).
    /// `max_concurrent` is then the initial limit and must lie within the algorithm's
    /// bounds. See [`AdaptiveConfig`].
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub adaptive: Option<AdaptiveConfig>,
}

/// An adaptive limit: `{ algorithm = "aimd", ... }` or `{ algorithm = "vegas", ... }`; see
/// [`AdaptiveLimit`] for how each moves the limit.
///
/// ```toml
/// max_concurrent = 16   # the initial limit
/// adaptive = { algorithm = "aimd", min_limit = 4, max_limit = 64, latency_threshold = "200ms" }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "algorithm", rename_all = "snake_case"))]
pub enum AdaptiveConfig {
    /// Additive increase, multiplicative decrease: grows by one per successful call, shrinks
    /// by `backoff_ratio` on a failure or a call slower than `latency_threshold`.
    Aimd(AimdConfig),
    /// Latency gradient (TCP Vegas style): grows while fewer than `alpha` calls seem queued in
    /// the dependency, shrinks above `beta`.
    Vegas(VegasConfig),
}

/// AIMD settings; unset fields keep [`Aimd`]'s defaults (limits `[1, 1000]`, `backoff_ratio`
/// 0.9, no latency threshold).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct AimdConfig {
    /// The limit never goes below this (default 1).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub min_limit: Option<usize>,
    /// The limit never goes above this (default 1000).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_limit: Option<usize>,
    /// Factor applied to the limit on a failure or a slow call, in `(0, 1)` (default 0.9).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub backoff_ratio: Option<f64>,
    /// A successful call slower than this lowers the limit (default: only failures do).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub latency_threshold: Option<Duration>,
}

/// Vegas settings; unset fields keep [`Vegas`]'s defaults (limits `[1, 1000]`, `alpha` 3,
/// `beta` 6, `backoff_ratio` 0.9, `probe_every` 1000).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct VegasConfig {
    /// The limit never goes below this (default 1).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub min_limit: Option<usize>,
    /// The limit never goes above this (default 1000).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_limit: Option<usize>,
    /// Below this many estimated queued calls the limit grows (default 3).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub alpha: Option<f64>,
    /// Above this many estimated queued calls the limit shrinks; must exceed `alpha`
    /// (default 6).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub beta: Option<f64>,
    /// Factor applied to the limit on a failure, in `(0, 1)` (default 0.9).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub backoff_ratio: Option<f64>,
    /// Re-measures the no-load latency every this many samples (default 1000).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub probe_every: Option<u64>,
}

/// Settings of a [`PartitionedBulkhead`] keyed by `String`: one limit per key (tenant, host,
/// route), a default for other keys and an optional global cap. Which partition a request
/// belongs to is a function of the request that only code can give: pair the built bulkhead
/// with the key function in a [`PartitionedBulkheadLayer`](crate::PartitionedBulkheadLayer).
///
/// ```toml
/// default_limit = 4
/// global_limit = 64
/// max_wait = "10ms"
///
/// [partitions]
/// "big-customer" = 16
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct PartitionedBulkheadConfig {
    /// Keys with a limit of their own.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "BTreeMap::is_empty"))]
    pub partitions: BTreeMap<String, usize>,
    /// The limit of each other key (default 25).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub default_limit: Option<usize>,
    /// Calls in flight across all keys at most (default: no cap).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub global_limit: Option<usize>,
    /// Partitions created on the fly for other keys (default 1024); see
    /// [`PartitionedBulkhead`] for what happens beyond.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_partitions: Option<usize>,
    /// How long a call may wait for its permits in total (default zero: fail fast).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_wait: Option<Duration>,
    /// Calls that may wait in each partition (default: the partition's limit).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_queued: Option<usize>,
}

impl BulkheadConfig {
    /// The bulkhead builder for `name` with these settings applied.
    pub fn builder(&self, name: &str) -> BulkheadBuilder {
        let b = Bulkhead::builder(name)
            .maybe(self.max_concurrent, BulkheadBuilder::max_concurrent)
            .maybe(self.max_wait, BulkheadBuilder::max_wait)
            .maybe(self.max_queued, BulkheadBuilder::max_queued);
        b.maybe(self.adaptive.as_ref(), |b, a| b.adaptive(a.to_limit()))
    }

    /// These settings with `other`'s limit: what a running bulkhead can change
    /// ([`Bulkhead::set_max_concurrent`], which counts the calls in flight). Reloads compare
    /// `old.with_limit_of(&new) == new` to resize a bulkhead in place.
    #[must_use]
    pub fn with_limit_of(&self, other: &BulkheadConfig) -> BulkheadConfig {
        BulkheadConfig {
            max_concurrent: other.max_concurrent,
            ..self.clone()
        }
    }

    /// Builds a bulkhead called `name`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field within this section (`max_concurrent`,
    /// `adaptive.max_limit`); prefix it with the section's place in your file with
    /// [`ConfigError::within`].
    pub fn build(&self, name: &str) -> Result<Bulkhead, ConfigError> {
        self.builder(name).build_in_section()
    }
}

impl AdaptiveConfig {
    /// The bulkhead's adaptive limit (validated by the bulkhead's builder).
    pub fn to_limit(&self) -> AdaptiveLimit {
        match self {
            AdaptiveConfig::Aimd(a) => Aimd::default()
                .maybe(a.min_limit, Aimd::min_limit)
                .maybe(a.max_limit, Aimd::max_limit)
                .maybe(a.backoff_ratio, Aimd::backoff_ratio)
                .maybe(a.latency_threshold, Aimd::latency_threshold)
                .into(),
            AdaptiveConfig::Vegas(v) => Vegas::default()
                .maybe(v.min_limit, Vegas::min_limit)
                .maybe(v.max_limit, Vegas::max_limit)
                .maybe(v.alpha, Vegas::alpha)
                .maybe(v.beta, Vegas::beta)
                .maybe(v.backoff_ratio, Vegas::backoff_ratio)
                .maybe(v.probe_every, Vegas::probe_every)
                .into(),
        }
    }
}

impl PartitionedBulkheadConfig {
    /// Builds a partitioned bulkhead called `name`, keyed by `String`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field prefixed with `name` (these settings stand alone,
    /// not as a section of a stack): `search.global_limit`, or `search.partitions.<key>` for
    /// a key's limit.
    ///
    /// ```
    /// use staunch_bulkhead::PartitionedBulkheadConfig;
    ///
    /// let mut config = PartitionedBulkheadConfig::default();
    /// config.default_limit = Some(1);
    /// config.partitions.insert("big".into(), 0);
    /// let err = config.build("search").unwrap_err();
    /// assert_eq!(err.field(), "search.partitions.big");
    /// ```
    pub fn build(&self, name: &str) -> Result<PartitionedBulkhead<String>, ConfigError> {
        type P = PartitionedBulkheadBuilder<String>;
        let shared = |b: P| {
            b.maybe(self.default_limit, P::default_limit)
                .maybe(self.global_limit, P::global_limit)
                .maybe(self.max_partitions, P::max_partitions)
                .maybe(self.max_wait, P::max_wait)
                .maybe(self.max_queued, P::max_queued)
        };
        // The shared settings are checked first, then each key's limit under its file path
        // (`partitions.<key>`; the builder would name it `partitions["key"].max_concurrent`).
        shared(PartitionedBulkhead::builder(name)).build()?;
        let mut b = PartitionedBulkhead::builder(name);
        for (key, &limit) in &self.partitions {
            validate_limit(format!("partitions.{key}"), limit).map_err(|e| e.within(name))?;
            b = b.partition(key.clone(), limit);
        }
        shared(b).build()
    }
}

#[cfg(feature = "serde")]
mod load {
    use std::time::Duration;

    use serde::Deserialize;
    use serde::de::Deserializer;
    use staunch_core::settings::{foreign_key, table};

    use super::{
        AdaptiveConfig, AimdConfig, BulkheadConfig, PartitionedBulkheadConfig, VegasConfig,
    };

    staunch_core::tables! {
        BulkheadConfig: "a table of bulkhead settings", serialize;
        AimdConfig: "a table of AIMD limit settings", serialize;
        VegasConfig: "a table of Vegas limit settings", serialize;
        PartitionedBulkheadConfig: "a table of partitioned bulkhead settings", serialize;
        AdaptiveKeys: "a table with `algorithm = \"aimd\"` or `algorithm = \"vegas\"`";
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Algorithm {
        Aimd,
        Vegas,
    }

    /// Every key an adaptive limit may have: serde's internally tagged enums buffer the
    /// section first (an error inside names no key) and read an array by position, so the
    /// section is read as one table and checked against its tag afterwards.
    #[derive(Deserialize)]
    #[serde(remote = "Self", deny_unknown_fields)]
    struct AdaptiveKeys {
        algorithm: Algorithm,
        #[serde(default)]
        min_limit: Option<usize>,
        #[serde(default)]
        max_limit: Option<usize>,
        #[serde(default)]
        backoff_ratio: Option<f64>,
        #[serde(default, with = "staunch_core::settings::duration::option")]
        latency_threshold: Option<Duration>,
        #[serde(default)]
        alpha: Option<f64>,
        #[serde(default)]
        beta: Option<f64>,
        #[serde(default)]
        probe_every: Option<u64>,
    }

    impl<'de> Deserialize<'de> for AdaptiveConfig {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let keys: AdaptiveKeys = table(d)?;
            let (min_limit, max_limit) = (keys.min_limit, keys.max_limit);
            let backoff_ratio = keys.backoff_ratio;
            match keys.algorithm {
                Algorithm::Aimd => {
                    const KEYS: &[&str] = &[
                        "algorithm",
                        "min_limit",
                        "max_limit",
                        "backoff_ratio",
                        "latency_threshold",
                    ];
                    for (key, set) in [
                        ("alpha", keys.alpha.is_some()),
                        ("beta", keys.beta.is_some()),
                        ("probe_every", keys.probe_every.is_some()),
                    ] {
                        if set {
                            return Err(foreign_key(key, "the AIMD algorithm", KEYS));
                        }
                    }
                    let latency_threshold = keys.latency_threshold;
                    Ok(Self::Aimd(AimdConfig {
                        min_limit,
                        max_limit,
                        backoff_ratio,
                        latency_threshold,
                    }))
                }
                Algorithm::Vegas => {
                    const KEYS: &[&str] = &[
                        "algorithm",
                        "min_limit",
                        "max_limit",
                        "alpha",
                        "beta",
                        "backoff_ratio",
                        "probe_every",
                    ];
                    if keys.latency_threshold.is_some() {
                        return Err(foreign_key(
                            "latency_threshold",
                            "the Vegas algorithm",
                            KEYS,
                        ));
                    }
                    let (alpha, beta, probe_every) = (keys.alpha, keys.beta, keys.probe_every);
                    Ok(Self::Vegas(VegasConfig {
                        min_limit,
                        max_limit,
                        alpha,
                        beta,
                        backoff_ratio,
                        probe_every,
                    }))
                }
            }
        }
    }
}
