//! [`BalancerBuilder`]: a balancer's endpoints, classifier and detector settings, checked
//! once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use staunch_core::{AnyError, ConfigError};

use crate::balancer::Balancer;
use crate::settings::{Settings, SettingsBuilder};

impl<K, S> Balancer<K, S, AnyError> {
    /// A builder for a balancer called `name` (in tracing events and metrics labels).
    pub fn builder(name: impl Into<Arc<str>>) -> BalancerBuilder<K, S> {
        BalancerBuilder {
            name: name.into(),
            settings: SettingsBuilder::default(),
            classifier: AnyError::new(),
            seed: None,
            endpoints: Vec::new(),
        }
    }
}

/// Builds a [`Balancer`]: its endpoints, its classifier and its detector settings, checked by
/// [`build`](Self::build).
pub struct BalancerBuilder<K, S, C = AnyError> {
    name: Arc<str>,
    settings: SettingsBuilder,
    classifier: C,
    seed: Option<u64>,
    endpoints: Vec<(K, S)>,
}

impl<K: fmt::Debug, S, C> fmt::Debug for BalancerBuilder<K, S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerBuilder")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("seed", &self.seed)
            .field(
                "endpoints",
                &self.endpoints.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<K, S, C> BalancerBuilder<K, S, C> {
    /// Adds an endpoint: its key (its URL, say: the status and tracing events name it by
    /// this) and the service that calls it.
    pub fn endpoint(mut self, key: K, service: S) -> Self {
        self.endpoints.push((key, service));
        self
    }

    /// Adds endpoints.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = (K, S)>) -> Self {
        self.endpoints.extend(endpoints);
        self
    }

    /// Judges each call with `classifier` (default [`AnyError`]).
    pub fn classifier<C2>(self, classifier: C2) -> BalancerBuilder<K, S, C2> {
        BalancerBuilder {
            name: self.name,
            settings: self.settings,
            classifier,
            seed: self.seed,
            endpoints: self.endpoints,
        }
    }

    /// Seeds the random choice of endpoints (default: a random seed), for tests that must
    /// see the same choices on every run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Replaces every detector setting with `settings`.
    pub fn settings(mut self, settings: &Settings) -> Self {
        self.settings = SettingsBuilder::from(settings);
        self
    }

    /// See [`SettingsBuilder::consecutive_failures`].
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.settings = self.settings.consecutive_failures(n);
        self
    }

    /// See [`SettingsBuilder::base_ejection_time`].
    pub fn base_ejection_time(mut self, time: Duration) -> Self {
        self.settings = self.settings.base_ejection_time(time);
        self
    }

    /// See [`SettingsBuilder::max_ejection_time`].
    pub fn max_ejection_time(mut self, time: Duration) -> Self {
        self.settings = self.settings.max_ejection_time(time);
        self
    }

    /// See [`SettingsBuilder::max_ejection_percent`].
    pub fn max_ejection_percent(mut self, percent: u32) -> Self {
        self.settings = self.settings.max_ejection_percent(percent);
        self
    }

    /// See [`SettingsBuilder::failure_rate`].
    pub fn failure_rate(
        mut self,
        interval: Duration,
        minimum_requests: u32,
        threshold: f64,
    ) -> Self {
        self.settings = self
            .settings
            .failure_rate(interval, minimum_requests, threshold);
        self
    }

    /// Checks the settings and builds the balancer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field, as [`SettingsBuilder::build`], and `endpoints`
    /// for a key given twice.
    pub fn build(self) -> Result<Balancer<K, S, C>, ConfigError>
    where
        K: PartialEq + fmt::Debug,
    {
        #[cfg(feature = "metrics")]
        staunch_core::telemetry::describe_metrics();
        let settings = self.settings.build()?;
        for (i, (key, _)) in self.endpoints.iter().enumerate() {
            if self.endpoints[..i].iter().any(|(k, _)| k == key) {
                return Err(ConfigError::new(
                    "endpoints",
                    format!("must have different keys ({key:?} is given twice)"),
                ));
            }
        }
        Ok(Balancer::from_parts(
            self.name,
            settings,
            self.classifier,
            self.seed,
            self.endpoints,
        ))
    }
}
