//! Settings files (feature `serde`): each section is a table, and a [`FaultConfig`] table may
//! start from a preset (`preset = "slow"`) whose sections its own replace.

use serde::{Deserialize, Deserializer};

use crate::{AbortFault, ErrorFault, FaultConfig, LatencyFault};

staunch_core::tables! {
    LatencyFault: "a table of latency fault settings (`rate`, `min`, `max`)", serialize;
    ErrorFault: "a table of error fault settings (`rate`, `status`, `body`)", serialize;
    AbortFault: "a table of abort fault settings (`rate`)", serialize;
    FaultTable: "a table of fault injection settings";
}

/// A `FaultConfig` table as written, before its preset is applied.
#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
struct FaultTable {
    #[serde(default)]
    preset: Option<String>,
    #[serde(default)]
    latency: Option<LatencyFault>,
    #[serde(default)]
    error: Option<ErrorFault>,
    #[serde(default)]
    abort: Option<AbortFault>,
    #[serde(default)]
    seed: Option<u64>,
}

impl<'de> Deserialize<'de> for FaultConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = <FaultTable as Deserialize>::deserialize(d)?;
        let mut config = match &table.preset {
            Some(name) => FaultConfig::preset(name).map_err(serde::de::Error::custom)?,
            None => FaultConfig::none(),
        };
        if table.latency.is_some() {
            config.latency = table.latency;
        }
        if table.error.is_some() {
            config.error = table.error;
        }
        if table.abort.is_some() {
            config.abort = table.abort;
        }
        if table.seed.is_some() {
            config.seed = table.seed;
        }
        Ok(config)
    }
}
