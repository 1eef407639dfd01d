//! Reading settings from TOML, JSON or any serde format: every section is a table (an array
//! is never read by position, see `staunch_core::settings`), and an error names the whole
//! field path, which `serde_path_to_error` follows into each layer's section.

use std::fmt;

use serde::Deserializer;
use staunch_core::ConfigError;

use super::{RegistryConfig, StackConfig};
use crate::settings::{from_deserializer, from_json, from_toml};

staunch_core::tables! {
    StackConfig: "a table of stack settings", serialize;
}

/// `from_toml`, `from_json` and `from_deserializer` as associated functions.
macro_rules! loaders {
    ($($ty:ident),*) => {$(
        impl $ty {
            /// Reads the settings from TOML text; see [`settings::from_toml`](crate::settings::from_toml).
            ///
            /// # Errors
            ///
            /// A [`ConfigError`] naming the path of the value that does not fit.
            pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
                from_toml(text)
            }

            /// Reads the settings from JSON text; see [`settings::from_json`](crate::settings::from_json).
            ///
            /// # Errors
            ///
            /// A [`ConfigError`] naming the path of the value that does not fit.
            pub fn from_json(text: &str) -> Result<Self, ConfigError> {
                from_json(text)
            }

            /// Reads the settings from any serde format; see
            /// [`settings::from_deserializer`](crate::settings::from_deserializer).
            ///
            /// # Errors
            ///
            /// A [`ConfigError`] naming the path of the value that does not fit.
            pub fn from_deserializer<'de, D>(deserializer: D) -> Result<Self, ConfigError>
            where
                D: Deserializer<'de>,
                D::Error: fmt::Display,
            {
                from_deserializer(deserializer)
            }
        }
    )*};
}

loaders!(RegistryConfig, StackConfig);
