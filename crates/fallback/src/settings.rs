//! [`FallbackConfig`]: which outcomes a fallback answers, as plain data for settings files
//! (feature `serde`).

use std::sync::Arc;

use staunch_core::ConfigError;

use crate::{FallbackPolicy, FallbackPolicyBuilder, RejectionKind, Rejections, StatusRange};

/// The rules of a fallback policy a settings file can hold: which rejections, whether every
/// error, which statuses. The answer itself (a value, a function, a backup service) and any
/// rule that is code (an error or response predicate) are given in code.
///
/// ```toml
/// rejections = ["breaker_open", "bulkhead_full"]   # default: every rejection
/// any_error = false                                # default
/// statuses = [503, "502-504", "5xx"]               # default: none
/// ```
///
/// Every value is checked when the policy is built; a bad one is a [`ConfigError`] naming it
/// (a status outside `100..=599` names `statuses`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(remote = "Self", default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct FallbackConfig {
    /// The rejections answered (default: every kind; `[]` for none).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub rejections: Option<Vec<RejectionKind>>,
    /// Whether every error is answered, rejection or not (default `false`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub any_error: Option<bool>,
    /// The response statuses answered (default none): statuses, classes (`"5xx"`) and
    /// ranges (`"500-504"`).
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub statuses: Option<Vec<StatusRange>>,
}

#[cfg(feature = "serde")]
staunch_core::tables! {
    FallbackConfig: "a table of fallback settings", serialize;
}

impl FallbackConfig {
    /// Applies these settings to `builder`: the rejections replace the builder's, the
    /// statuses add to them. Start from [`FallbackPolicy::http`] for HTTP responses, from
    /// [`FallbackPolicy::builder`] (with [`status_of`](FallbackPolicyBuilder::status_of)
    /// for statuses) otherwise, and add rules that are code before building.
    pub fn apply<Res>(
        &self,
        mut builder: FallbackPolicyBuilder<Res>,
    ) -> FallbackPolicyBuilder<Res> {
        if let Some(kinds) = &self.rejections {
            builder.set_rejections(kinds.iter().copied().collect::<Rejections>());
        }
        if let Some(any_error) = self.any_error {
            builder.set_any_error(any_error);
        }
        for range in self.statuses.iter().flatten() {
            builder.push_status(*range);
        }
        builder
    }

    /// A policy called `name` with these rules, for any response type (statuses need a way
    /// to read them: see [`apply`](Self::apply)).
    ///
    /// # Errors
    ///
    /// As [`FallbackPolicyBuilder::build`].
    pub fn build<Res>(
        &self,
        name: impl Into<Arc<str>>,
    ) -> Result<FallbackPolicy<Res>, ConfigError> {
        self.apply(FallbackPolicy::builder(name)).build()
    }

    /// A policy called `name` with these rules for `http::Response`s (feature `http`).
    ///
    /// # Errors
    ///
    /// As [`FallbackPolicyBuilder::build`].
    #[cfg(feature = "http")]
    pub fn build_http<B>(
        &self,
        name: impl Into<Arc<str>>,
    ) -> Result<FallbackPolicy<http::Response<B>>, ConfigError> {
        self.apply(FallbackPolicy::http(name)).build()
    }
}
