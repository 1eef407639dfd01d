//! Reading settings from TOML, JSON or any serde format: every section is a table (an array
//! is never read by position), and an error names the whole field path.
//!
//! The settings structs derive their serde code with `remote = "Self"`, which turns the
//! derived code into inherent functions; the trait impls here call it through a visitor that
//! accepts a map and nothing else. Without that, serde's derive also accepts a sequence and
//! fills the fields in declaration order, so `payment = ["1s", "500ms"]` would silently set
//! `timeout` and `attempt_timeout`.
//!
//! The two tagged sections (`sliding_window`, `bulkhead.adaptive`) are read as one table of
//! every possible key and checked against their tag afterwards: serde's internally tagged
//! enums buffer the section first, so an error inside one named no key, and they too read an
//! array by position (its first element taken as the tag).
//!
//! Paths come from `serde_path_to_error`, which follows the deserializer into each section.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use staunch_core::ConfigError;

use super::{
    AdaptiveConfig, AimdConfig, BackoffConfig, BreakerConfig, BudgetConfig, BulkheadConfig,
    DeadlineConfig, HedgeConfig, IncomingDeadlineConfig, OutgoingDeadlineConfig,
    PartitionedBulkheadConfig, RegistryConfig, RetryConfig, StackConfig, VegasConfig, WindowConfig,
};

/// A settings type read from a table only.
trait Table<'de>: Sized {
    /// What the table holds, for the "invalid type" message.
    const WHAT: &'static str;

    /// The derived code, fed the table's entries.
    fn from_entries<D: Deserializer<'de>>(entries: D) -> Result<Self, D::Error>;
}

/// Reads a `T` from a map; anything else is an "invalid type" error naming what was expected.
fn table<'de, T: Table<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    struct OnlyMaps<T>(PhantomData<T>);

    impl<'de, T: Table<'de>> Visitor<'de> for OnlyMaps<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::WHAT)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::from_entries(MapAccessDeserializer::new(map))
        }
    }

    d.deserialize_map(OnlyMaps(PhantomData))
}

/// `Table`, `Deserialize` and (for the public types) `Serialize` over the derived code.
macro_rules! tables {
    ($($ty:ident: $what:literal $(, $ser:ident)?;)*) => {$(
        impl<'de> Table<'de> for $ty {
            const WHAT: &'static str = $what;

            fn from_entries<D: Deserializer<'de>>(entries: D) -> Result<Self, D::Error> {
                // The inherent function `remote = "Self"` derived, not this trait's.
                $ty::deserialize(entries)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                table(d)
            }
        }

        $(tables!(@$ser $ty);)?
    )*};
    (@serialize $ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, s)
            }
        }
    };
}

tables! {
    StackConfig: "a table of stack settings", serialize;
    BreakerConfig: "a table of circuit breaker settings", serialize;
    BulkheadConfig: "a table of bulkhead settings", serialize;
    RetryConfig: "a table of retry settings", serialize;
    BackoffConfig: "a table of backoff settings", serialize;
    BudgetConfig: "a table of retry budget settings", serialize;
    AimdConfig: "a table of AIMD limit settings", serialize;
    VegasConfig: "a table of Vegas limit settings", serialize;
    HedgeConfig: "a table of hedging settings", serialize;
    DeadlineConfig: "a table of deadline settings", serialize;
    OutgoingDeadlineConfig: "a table of outgoing deadline settings", serialize;
    IncomingDeadlineConfig: "a table of incoming deadline settings", serialize;
    PartitionedBulkheadConfig: "a table of partitioned bulkhead settings", serialize;
    WindowKeys: "a table with `kind = \"count\"` or `kind = \"time\"`";
    AdaptiveKeys: "a table with `algorithm = \"aimd\"` or `algorithm = \"vegas\"`";
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum WindowKind {
    Count,
    Time,
}

/// Every key a sliding window may have.
#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
struct WindowKeys {
    kind: WindowKind,
    #[serde(default)]
    size: Option<u32>,
    #[serde(default, with = "crate::duration::option")]
    duration: Option<Duration>,
    #[serde(default)]
    buckets: Option<u32>,
}

/// A key that is not a setting of the section's kind.
fn foreign<E: de::Error>(key: &'static str, kind: &str, expected: &'static [&'static str]) -> E {
    E::custom(format_args!(
        "unknown field `{key}` for {kind}, expected one of {}",
        expected
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

impl<'de> Deserialize<'de> for WindowConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let keys: WindowKeys = table(d)?;
        match keys.kind {
            WindowKind::Count => {
                const KEYS: &[&str] = &["kind", "size"];
                if keys.duration.is_some() {
                    return Err(foreign("duration", "a count window", KEYS));
                }
                if keys.buckets.is_some() {
                    return Err(foreign("buckets", "a count window", KEYS));
                }
                let size = keys.size.ok_or_else(|| de::Error::missing_field("size"))?;
                Ok(Self::Count { size })
            }
            WindowKind::Time => {
                const KEYS: &[&str] = &["kind", "duration", "buckets"];
                if keys.size.is_some() {
                    return Err(foreign("size", "a time window", KEYS));
                }
                let duration = keys
                    .duration
                    .ok_or_else(|| de::Error::missing_field("duration"))?;
                let buckets = keys
                    .buckets
                    .ok_or_else(|| de::Error::missing_field("buckets"))?;
                Ok(Self::Time { duration, buckets })
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Algorithm {
    Aimd,
    Vegas,
}

/// Every key an adaptive limit may have.
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
    #[serde(default, with = "crate::duration::option")]
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
                        return Err(foreign(key, "the AIMD algorithm", KEYS));
                    }
                }
                Ok(Self::Aimd(AimdConfig {
                    min_limit: keys.min_limit,
                    max_limit: keys.max_limit,
                    backoff_ratio: keys.backoff_ratio,
                    latency_threshold: keys.latency_threshold,
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
                    return Err(foreign("latency_threshold", "the Vegas algorithm", KEYS));
                }
                Ok(Self::Vegas(VegasConfig {
                    min_limit: keys.min_limit,
                    max_limit: keys.max_limit,
                    alpha: keys.alpha,
                    beta: keys.beta,
                    backoff_ratio: keys.backoff_ratio,
                    probe_every: keys.probe_every,
                }))
            }
        }
    }
}

/// The error of a file that does not fit the schema: the field path and what was wrong.
fn path_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> ConfigError {
    let path = err.path().to_string();
    let field = if path == "." {
        "(document)".to_owned()
    } else {
        path
    };
    ConfigError::new(field, format!("is invalid: {}", err.inner()))
}

/// `from_toml`, `from_json` and `from_deserializer` for a settings type.
macro_rules! loaders {
    ($($ty:ident),*) => {$(
        impl $ty {
            /// Reads the settings from TOML text.
            ///
            /// Unlike `toml::from_str`, the error names the whole path of the offending
            /// field (`payment.breaker.sliding_window.size`), and a section written as an
            /// array instead of a table is refused. The values are checked (ranges, rules)
            /// when the settings are built, not here.
            ///
            /// # Errors
            ///
            /// A [`ConfigError`] whose field is the path of the value that does not fit
            /// (`(document)` for a syntax error before any field), with the parser's message
            /// (and, for TOML, the line and column).
            pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
                let deserializer = toml::Deserializer::parse(text).map_err(|e| {
                    ConfigError::new("(document)", format!("is invalid: {e}"))
                })?;
                serde_path_to_error::deserialize(deserializer).map_err(path_error)
            }

            /// Reads the settings from JSON text; errors as for
            /// [`from_toml`](Self::from_toml).
            ///
            /// # Errors
            ///
            /// A [`ConfigError`] naming the path of the value that does not fit.
            pub fn from_json(text: &str) -> Result<Self, ConfigError> {
                let mut deserializer = serde_json::Deserializer::from_str(text);
                let value: Self = serde_path_to_error::deserialize(&mut deserializer)
                    .map_err(path_error)?;
                deserializer.end().map_err(|e| {
                    ConfigError::new("(document)", format!("is invalid: {e}"))
                })?;
                Ok(value)
            }

            /// Reads the settings from any serde format (YAML, RON, ...), naming the field
            /// path in errors as [`from_toml`](Self::from_toml) does.
            ///
            /// # Errors
            ///
            /// A [`ConfigError`] naming the path of the value that does not fit.
            pub fn from_deserializer<'de, D>(deserializer: D) -> Result<Self, ConfigError>
            where
                D: Deserializer<'de>,
                D::Error: fmt::Display,
            {
                serde_path_to_error::deserialize(deserializer).map_err(path_error)
            }
        }
    )*};
}

loaders!(RegistryConfig, StackConfig, PartitionedBulkheadConfig);
