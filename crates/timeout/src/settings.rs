//! [`DeadlineConfig`]: deadline propagation settings as plain data, for settings files
//! (feature `serde`).

use std::time::Duration;

use staunch_core::{ConfigError, Maybe};

use crate::wire::HeaderFormat;
use crate::{
    DeadlineLayer, DeadlineLayerBuilder, PropagateDeadlineLayer, PropagateDeadlineLayerBuilder,
};

/// Deadlines across service boundaries ([`PropagateDeadlineLayer`] and [`DeadlineLayer`]).
///
/// - `outgoing`: write the time the callee has left onto every request sent: the earliest of
///   the request's [`Deadline`](crate::Deadline) and its time limit, minus `margin`. A
///   request with no time left is not sent.
/// - `incoming`: for the server side: read the caller's remaining time from the request,
///   capped by `budget`.
///
/// ```toml
/// [outgoing]
/// margin = "5ms"
/// header = "x-request-timeout"
///
/// [incoming]
/// budget = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct DeadlineConfig {
    /// Writing the remaining time onto outgoing requests (default: not written).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub outgoing: Option<OutgoingDeadlineConfig>,
    /// Reading the caller's remaining time from incoming requests (default: not read).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub incoming: Option<IncomingDeadlineConfig>,
}

/// How the remaining time is written onto outgoing requests; see [`PropagateDeadlineLayer`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct OutgoingDeadlineConfig {
    /// Time kept back for the answer's trip home: the callee is told `remaining - margin`
    /// (default zero).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub margin: Option<Duration>,
    /// The HTTP header written (default `x-request-timeout`; `""` writes none, which needs
    /// `grpc = true`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub header: Option<String>,
    /// The header's syntax (default `grpc_timeout`, e.g. `1500m`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub format: Option<HeaderFormat>,
    /// Also write `grpc-timeout` (default false).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub grpc: Option<bool>,
}

/// How the caller's remaining time is read from incoming requests; see [`DeadlineLayer`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct IncomingDeadlineConfig {
    /// The longest this service spends on one request, whatever the caller allows (default:
    /// only the caller's headers count).
    #[cfg_attr(
        feature = "serde",
        serde(with = "staunch_core::settings::duration::option")
    )]
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub budget: Option<Duration>,
    /// The HTTP header read (default `x-request-timeout`; `""` reads none).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub header: Option<String>,
    /// The header's syntax (default `grpc_timeout`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub format: Option<HeaderFormat>,
    /// Also read `grpc-timeout` (default true).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub grpc: Option<bool>,
}

impl DeadlineConfig {
    /// Builds the outgoing and incoming layers of the sections that are set.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field within this section, e.g. `outgoing.header` or
    /// `incoming.budget`.
    pub fn build(
        &self,
    ) -> Result<(Option<PropagateDeadlineLayer>, Option<DeadlineLayer>), ConfigError> {
        let outgoing = self.outgoing.as_ref().map(OutgoingDeadlineConfig::build);
        let incoming = self.incoming.as_ref().map(IncomingDeadlineConfig::build);
        Ok((
            outgoing.transpose().map_err(|e| e.within("outgoing"))?,
            incoming.transpose().map_err(|e| e.within("incoming"))?,
        ))
    }
}

impl OutgoingDeadlineConfig {
    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `header` (invalid, `grpc-timeout`, or empty while `grpc` is
    /// off).
    pub fn build(&self) -> Result<PropagateDeadlineLayer, ConfigError> {
        type B = PropagateDeadlineLayerBuilder;
        let b = PropagateDeadlineLayer::builder().maybe(self.margin, B::margin);
        let b = match self.header.as_deref() {
            Some("") => b.no_header(),
            header => b.maybe(header, B::header),
        };
        b.maybe(self.format, B::header_format)
            .maybe(self.grpc, B::grpc)
            .build()
    }
}

impl IncomingDeadlineConfig {
    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `budget` (zero) or `header` (invalid or `grpc-timeout`).
    pub fn build(&self) -> Result<DeadlineLayer, ConfigError> {
        type B = DeadlineLayerBuilder;
        let b = DeadlineLayer::builder().maybe(self.budget, B::budget);
        let b = match self.header.as_deref() {
            Some("") => b.no_header(),
            header => b.maybe(header, B::header),
        };
        b.maybe(self.format, B::header_format)
            .maybe(self.grpc, B::grpc)
            .build()
    }
}

#[cfg(feature = "serde")]
staunch_core::tables! {
    DeadlineConfig: "a table of deadline settings", serialize;
    OutgoingDeadlineConfig: "a table of outgoing deadline settings", serialize;
    IncomingDeadlineConfig: "a table of incoming deadline settings", serialize;
}
