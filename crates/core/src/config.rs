//! The error every staunch builder returns when a setting breaks a rule.

use std::borrow::Cow;
use std::fmt;

/// An invalid setting, found by a builder's `build()`.
///
/// It names the field (as a dotted path, e.g. `payment.breaker.failure_rate_threshold`) and the
/// rule the value broke, so a configuration mistake is fixed from the message alone. Builders
/// never clamp a bad value silently and never panic on one: they return this error.
///
/// ```
/// use staunch_core::ConfigError;
///
/// let err = ConfigError::new("multiplier", "must be at least 1.0 (got 0.5)");
/// assert_eq!(err.field(), "multiplier");
/// let err = err.within("payment.retry.backoff");
/// assert_eq!(err.field(), "payment.retry.backoff.multiplier");
/// assert_eq!(
///     err.to_string(),
///     "invalid configuration: `payment.retry.backoff.multiplier` must be at least 1.0 (got 0.5)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    rule: Cow<'static, str>,
}

impl ConfigError {
    /// Creates an error for `field` whose value breaks `rule`.
    ///
    /// `rule` reads as the end of a sentence that starts with the field's name:
    /// `"must be greater than zero"`.
    pub fn new(field: impl Into<Cow<'static, str>>, rule: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The path of the offending field, e.g. `max_delay` or `payment.retry.backoff.max_delay`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rule the value broke, e.g. `must be greater than zero`.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// Prefixes the field path with the section it belongs to.
    ///
    /// Nested builders use this so the error names the whole path from the root of a
    /// configuration file.
    #[must_use]
    pub fn within(self, section: &str) -> Self {
        if section.is_empty() {
            return self;
        }
        Self {
            field: Cow::Owned(format!("{section}.{}", self.field)),
            rule: self.rule,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: `{}` {}", self.field, self.rule)
    }
}

impl std::error::Error for ConfigError {}

/// Applies optional settings to a builder, so a settings type forwards each of its fields in
/// one line: `Bulkhead::builder(name).maybe(self.max_wait, BulkheadBuilder::max_wait)`.
///
/// Shared by the staunch crates' settings types; not meant for use elsewhere, and not covered
/// by semver.
#[doc(hidden)]
pub trait Maybe: Sized {
    /// `set(self, value)` when `value` is set, `self` unchanged otherwise.
    #[must_use]
    fn maybe<V>(self, value: Option<V>, set: impl FnOnce(Self, V) -> Self) -> Self {
        match value {
            Some(value) => set(self, value),
            None => self,
        }
    }
}

impl<T> Maybe for T {}
