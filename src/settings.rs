//! Reading settings from files: TOML, JSON or any serde format, errors naming the whole field
//! path (`payment.breaker.sliding_window.size`), which `serde_path_to_error` follows into each
//! layer's section; staunch's sections are tables only (an array is never read by position).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use staunch_core::ConfigError;

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

/// Reads settings of any type (a `StackConfig`, a `RegistryConfig`, a layer's own
/// section such as `PartitionedBulkheadConfig`, or your own settings embedding them) from
/// TOML text.
///
/// Unlike `toml::from_str`, the error names the whole path of the offending field
/// (`payment.breaker.sliding_window.size`), and a staunch section written as an array instead
/// of a table is refused. The values are checked (ranges, rules) when the settings are built,
/// not here.
///
/// # Errors
///
/// A [`ConfigError`] whose field is the path of the value that does not fit (`(document)` for
/// a syntax error before any field), with the parser's message (and the line and column).
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::new("(document)", format!("is invalid: {e}")))?;
    serde_path_to_error::deserialize(deserializer).map_err(path_error)
}

/// Reads settings of any type from JSON text; errors as for [`from_toml`].
///
/// # Errors
///
/// A [`ConfigError`] naming the path of the value that does not fit.
pub fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(path_error)?;
    deserializer
        .end()
        .map_err(|e| ConfigError::new("(document)", format!("is invalid: {e}")))?;
    Ok(value)
}

/// Reads settings of any type from any serde format (YAML, RON, ...), naming the field path
/// in errors as [`from_toml`] does.
///
/// # Errors
///
/// A [`ConfigError`] naming the path of the value that does not fit.
pub fn from_deserializer<'de, T, D>(deserializer: D) -> Result<T, ConfigError>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
    D::Error: fmt::Display,
{
    serde_path_to_error::deserialize(deserializer).map_err(path_error)
}
