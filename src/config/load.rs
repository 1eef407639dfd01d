//! Reading settings from TOML, JSON or any serde format: every section is a table (an array
//! is never read by position, see `staunch_core::settings`), and an error names the whole
//! field path, which `serde_path_to_error` follows into each layer's section.

use std::fmt;

use serde::Deserializer;
use staunch_core::ConfigError;

use super::{RegistryConfig, StackConfig};

staunch_core::tables! {
    StackConfig: "a table of stack settings", serialize;
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

loaders!(RegistryConfig, StackConfig);
