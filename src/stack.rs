//! The full stack: its engines ([`StackHandle`]), built from a [`StackConfig`], and the
//! service ([`Stack`]) that runs calls through them in the documented order.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use staunch_bulkhead::{Bulkhead, BulkheadLayer, BulkheadMetrics, BulkheadService};
use staunch_circuit_breaker::{
    CircuitBreaker, CircuitBreakerLayer, CircuitBreakerService, Snapshot,
};
use staunch_core::{AnyError, ConfigError};
use staunch_retry::{HedgeLayer, Retry, RetryBudget, RetryLayer, RetryMetrics, RetryPolicy};
use staunch_timeout::{DeadlineLayer, PropagateDeadlineLayer, TimeLimit, Timeout, TimeoutLayer};
use tower_layer::Layer;

use crate::config::{DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT, StackConfig};
use crate::error::TypedErrors;
use staunch_circuit_breaker::BreakerConfig;
use staunch_retry::RetryConfig;

/// A service wrapped in the full stack, outermost first: [`TypedErrors`] (errors become
/// [`staunch::Error<E>`](crate::Error)), [`Retry`], the circuit breaker
/// ([`CircuitBreakerService`] with classifier `C`), the per-attempt [`Timeout`], the bulkhead ([`BulkheadService`]), then
/// `S`. `E` is `S`'s error type. Built by [`StackHandle::wrap`] and the presets
/// ([`http::client`](crate::http::client), `grpc::channel`).
pub type Stack<S, C, E> =
    TypedErrors<Retry<CircuitBreakerService<Timeout<BulkheadService<S, AnyError>>, C>>, E>;

/// Every engine of one stack, for status endpoints and manual control (force a breaker open,
/// resize a bulkhead, read the retry budget). Clones share the engines.
#[derive(Clone)]
pub struct StackHandle {
    name: Arc<str>,
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    retry: RetryPolicy,
    attempt_timeout: TimeLimit,
    hedge: Option<HedgeLayer>,
    outgoing_deadline: Option<PropagateDeadlineLayer>,
    incoming_deadline: Option<DeadlineLayer>,
}

impl fmt::Debug for StackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackHandle")
            .field("name", &self.name)
            .field("breaker", &self.breaker)
            .field("bulkhead", &self.bulkhead)
            .field("retry", &self.retry)
            .field("attempt_timeout", &self.attempt_timeout.limit())
            .field("hedge", &self.hedge.is_some())
            .field("outgoing_deadline", &self.outgoing_deadline.is_some())
            .field("incoming_deadline", &self.incoming_deadline.is_some())
            .finish()
    }
}

/// A snapshot of a stack's engines: what a status endpoint reports.
///
/// With the `serde` feature it serializes as it is (`serde_json::to_value(handle.status())`):
/// `name`, then `breaker` (state, rates, thresholds, and `last_trip`: why it is open),
/// `bulkhead` and `retry` as their crates' snapshots.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StackStatus {
    /// The stack's name.
    pub name: Arc<str>,
    /// The breaker's state and counters.
    pub breaker: Snapshot,
    /// The bulkhead's limit and calls in flight.
    pub bulkhead: BulkheadMetrics,
    /// Retries made, given up, refused by the budget.
    pub retry: RetryMetrics,
}

impl StackStatus {
    /// The status of engines put together by hand (what [`StackHandle::status`] reports for
    /// a stack built from a [`StackConfig`]).
    pub fn of(
        name: &str,
        breaker: &CircuitBreaker,
        bulkhead: &Bulkhead,
        retry: &RetryPolicy,
    ) -> Self {
        StackStatus {
            name: Arc::from(name),
            breaker: breaker.snapshot(),
            bulkhead: bulkhead.metrics(),
            retry: retry.metrics(),
        }
    }
}

impl StackHandle {
    /// Assembles a handle from engines built elsewhere (e.g. a breaker shared by two stacks).
    pub fn from_parts(
        name: impl Into<Arc<str>>,
        breaker: CircuitBreaker,
        bulkhead: Bulkhead,
        retry: RetryPolicy,
        attempt_timeout: TimeLimit,
    ) -> Self {
        Self {
            name: name.into(),
            breaker,
            bulkhead,
            retry,
            attempt_timeout,
            hedge: None,
            outgoing_deadline: None,
            incoming_deadline: None,
        }
    }

    /// The stack's name (also the name of its breaker, bulkhead and retry policy).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The bulkhead.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// The retry policy (its budget: [`RetryPolicy::budget`]).
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The retry budget.
    pub fn budget(&self) -> &RetryBudget {
        self.retry.budget()
    }

    /// The per-attempt time limit.
    pub fn attempt_timeout(&self) -> &TimeLimit {
        &self.attempt_timeout
    }

    /// The hedging layer of the stack's [`hedge`](StackConfig::hedge) section, drawing on
    /// the stack's retry budget; `None` when hedging is off.
    ///
    /// It is not inside [`Stack`]: a hedge is a second copy of a whole call, so it belongs
    /// outside the stack (`hedge.layer(client)`), where each copy goes through the breaker,
    /// the attempt timeout and the bulkhead like any call, and the stack's error type stays
    /// [`staunch::Error<E>`](crate::Error) for callers that do not hedge. Its errors are
    /// boxed; [`Error::from_box`](crate::Error::from_box) makes them typed again. It does
    /// not count requests in the budget (the stack's retry layer already does).
    pub fn hedge(&self) -> Option<&HedgeLayer> {
        self.hedge.as_ref()
    }

    /// The layer writing the remaining time onto outgoing requests, from the
    /// [`deadline.outgoing`](crate::DeadlineConfig::outgoing) section; the HTTP preset
    /// ([`http::client`](crate::http::client)) puts it around each attempt. `None` when unset.
    pub fn outgoing_deadline(&self) -> Option<&PropagateDeadlineLayer> {
        self.outgoing_deadline.as_ref()
    }

    /// The layer reading the caller's remaining time from incoming requests, from the
    /// [`deadline.incoming`](crate::DeadlineConfig::incoming) section: put it outermost on
    /// the server (axum: `Router::layer`) so handlers and this stack see the caller's
    /// [`Deadline`](staunch_timeout::Deadline). `None` when unset.
    pub fn incoming_deadline(&self) -> Option<&DeadlineLayer> {
        self.incoming_deadline.as_ref()
    }

    /// A snapshot of every engine.
    pub fn status(&self) -> StackStatus {
        StackStatus::of(&self.name, &self.breaker, &self.bulkhead, &self.retry)
    }

    /// Wraps `inner` in the stack, the breaker classifying results with `classifier`; `E` is
    /// `inner`'s error type. The order is the one the crate docs explain.
    pub fn wrap<S, C, E>(&self, inner: S, classifier: C) -> Stack<S, C, E>
    where
        S: Clone + Send + 'static,
        C: Clone + Send + 'static,
    {
        let bulkhead = BulkheadLayer::new(self.bulkhead.clone()).layer(inner);
        let attempt = TimeoutLayer::from_limit(self.attempt_timeout.clone()).layer(bulkhead);
        let breaker = CircuitBreakerLayer::new(self.breaker.clone())
            .with_classifier(classifier)
            .layer(attempt);
        let retry = RetryLayer::new(self.retry.clone()).layer(breaker);
        TypedErrors::new(retry)
    }
}

impl StackConfig {
    /// Validates the settings and builds the engines of a stack called `name`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] whose field is the whole path from `name`, e.g.
    /// `payment.breaker.failure_rate_threshold` or `payment.retry.backoff.base`.
    ///
    /// ```
    /// use staunch::StackConfig;
    ///
    /// let mut config = StackConfig::default();
    /// config.breaker.failure_rate_threshold = Some(150.0);
    /// let err = config.build("payment").unwrap_err();
    /// assert_eq!(err.field(), "payment.breaker.failure_rate_threshold");
    /// ```
    pub fn build(&self, name: &str) -> Result<StackHandle, ConfigError> {
        if name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        let name: Arc<str> = Arc::from(name);
        // The stack's own two fields; every other section is validated by its layer.
        let positive = |field: &'static str, d: Option<Duration>, default| match d {
            Some(d) if d.is_zero() => {
                Err(ConfigError::new(field, "must be greater than zero").within(&name))
            }
            d => Ok(d.unwrap_or(default)),
        };
        let attempt = positive(
            "attempt_timeout",
            self.attempt_timeout,
            DEFAULT_ATTEMPT_TIMEOUT,
        )?;
        let timeout = positive("timeout", self.timeout, DEFAULT_TIMEOUT)?;
        let attempt_timeout = TimeLimit::builder()
            .limit(attempt)
            .name(Arc::clone(&name))
            .build()
            .map_err(|e| e.within(&name))?;
        let breaker = self
            .effective_breaker()
            .build(&name)
            .map_err(|e| e.within("breaker").within(&name))?;
        let bulkhead = self
            .bulkhead
            .build(&name)
            .map_err(|e| e.within("bulkhead").within(&name))?;
        let retry = self
            .retry
            .builder(&name, timeout, None)
            .and_then(|b| b.attempts_cut_by(attempt).build())
            .map_err(|e| e.within("retry").within(&name))?;
        let hedge = self
            .hedge
            .as_ref()
            .map(|h| h.build(retry.clone()))
            .transpose()
            .map_err(|e| e.within(&name))?;
        let (outgoing_deadline, incoming_deadline) = match &self.deadline {
            Some(d) => d.build().map_err(|e| e.within("deadline").within(&name))?,
            None => (None, None),
        };
        Ok(StackHandle {
            name,
            breaker,
            bulkhead,
            retry,
            attempt_timeout,
            hedge,
            outgoing_deadline,
            incoming_deadline,
        })
    }
}

impl StackConfig {
    /// The breaker's settings with the stack's default failure-rate threshold filled in
    /// ([`BreakerConfig::default_failure_rate_threshold`] of the retry's `max_attempts`).
    fn effective_breaker(&self) -> BreakerConfig {
        let mut breaker = self.breaker.clone();
        if breaker.failure_rate_threshold.is_none() {
            let attempts = self
                .retry
                .max_attempts
                .unwrap_or(RetryConfig::DEFAULT_MAX_ATTEMPTS);
            breaker.failure_rate_threshold =
                Some(BreakerConfig::default_failure_rate_threshold(attempts));
        }
        breaker
    }

    /// Builds the engines of this configuration for stack `name`, which runs `engines`
    /// built from `running`, keeping what stays meaningful (the table in the
    /// [`Registry`](crate::Registry) docs). Nothing running changes until
    /// [`Rebuilt::apply`]: a reload validates every stack first.
    pub(crate) fn rebuild(
        &self,
        name: &str,
        running: &StackConfig,
        engines: &StackHandle,
    ) -> Result<Rebuilt, ConfigError> {
        // Everything is validated (and error paths named) exactly as for a new stack.
        let fresh = self.build(name)?;
        let mut changes = Changes::default();

        let (old_breaker, new_breaker) = (running.effective_breaker(), self.effective_breaker());
        let breaker = if old_breaker == new_breaker {
            engines.breaker.clone()
        } else if old_breaker.with_thresholds_of(&new_breaker) == new_breaker {
            changes.breaker = Change::Carried;
            engines.breaker.reconfigured(fresh.breaker.config().clone())
        } else {
            changes.breaker = Change::Rebuilt;
            fresh.breaker.clone()
        };

        let (bulkhead, resize) = if running.bulkhead == self.bulkhead {
            (engines.bulkhead.clone(), None)
        } else if running.bulkhead.with_limit_of(&self.bulkhead) == self.bulkhead {
            changes.bulkhead = Change::Carried;
            let limit = fresh.bulkhead.max_concurrent();
            (
                engines.bulkhead.clone(),
                Some((limit, fresh.bulkhead.clone())),
            )
        } else {
            changes.bulkhead = Change::Rebuilt;
            (fresh.bulkhead.clone(), None)
        };

        // The retry knows the attempt timeout too (it arms no timer of its own for an
        // attempt that limit cuts first).
        let retry_kept = running.retry == self.retry
            && running.timeout == self.timeout
            && running.attempt_timeout == self.attempt_timeout;
        let retry = if retry_kept {
            engines.retry.clone()
        } else if running.retry.budget == self.retry.budget {
            changes.retry = Change::Carried;
            let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
            let attempt = self.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT);
            self.retry
                .builder(name, timeout, Some(engines.retry.budget().clone()))
                .and_then(|b| b.attempts_cut_by(attempt).build())
                .map_err(|e| e.within("retry").within(name))?
        } else {
            changes.retry = Change::Rebuilt;
            fresh.retry.clone()
        };

        let hedge = if retry_kept && running.hedge == self.hedge {
            engines.hedge.clone()
        } else {
            self.hedge
                .as_ref()
                .map(|h| h.build(retry.clone()))
                .transpose()
                .map_err(|e| e.within(name))?
        };
        let attempt_timeout = if running.attempt_timeout == self.attempt_timeout {
            engines.attempt_timeout.clone()
        } else {
            fresh.attempt_timeout.clone()
        };
        let (outgoing_deadline, incoming_deadline) = if running.deadline == self.deadline {
            (
                engines.outgoing_deadline.clone(),
                engines.incoming_deadline.clone(),
            )
        } else {
            (
                fresh.outgoing_deadline.clone(),
                fresh.incoming_deadline.clone(),
            )
        };
        Ok(Rebuilt {
            handle: StackHandle {
                name: Arc::clone(&engines.name),
                breaker,
                bulkhead,
                retry,
                attempt_timeout,
                hedge,
                outgoing_deadline,
                incoming_deadline,
            },
            resize,
            changes,
        })
    }
}

/// What a reload did to one engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Change {
    /// Its settings did not change: the same engine.
    #[default]
    Kept,
    /// A new engine (or the same one resized) that carries the old one's state.
    Carried,
    /// A new engine, from nothing.
    Rebuilt,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Kept => "kept",
            Change::Carried => "carried over",
            Change::Rebuilt => "rebuilt",
        }
    }
}

/// What a reload did to a stack's stateful engines, for its log line.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Changes {
    breaker: Change,
    bulkhead: Change,
    retry: Change,
}

/// The engines of a changed stack, ready to replace the running ones
/// ([`StackConfig::rebuild`]).
pub(crate) struct Rebuilt {
    handle: StackHandle,
    /// The kept bulkhead's new limit, and a fresh bulkhead in case the resize is refused.
    resize: Option<(usize, Bulkhead)>,
    changes: Changes,
}

impl Rebuilt {
    /// Resizes the kept bulkhead, if its limit changed, and returns the new engines.
    pub(crate) fn apply(self) -> StackHandle {
        let Rebuilt {
            mut handle,
            resize,
            changes,
        } = self;
        if let Some((limit, fresh)) = resize
            && let Err(err) = handle.bulkhead.set_max_concurrent(limit)
        {
            // Not expected: the same limit was accepted by a fresh bulkhead of the same
            // settings. Take that one rather than leave the old limit in place.
            tracing::warn!(
                stack = %handle.name,
                error = %err,
                "bulkhead resize refused; calls in flight are not counted against the new limit"
            );
            handle.bulkhead = fresh;
        }
        tracing::debug!(
            stack = %handle.name,
            breaker = changes.breaker.as_str(),
            bulkhead = changes.bulkhead.as_str(),
            retry = changes.retry.as_str(),
            "stack configuration changed"
        );
        handle
    }
}
