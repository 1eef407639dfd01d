//! [`Registry`]: stacks by name, built from a configuration and reloadable at run time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use staunch_core::{ConfigError, HttpStatus};
use tower_service::Service;

use crate::config::{RegistryConfig, StackConfig};
use crate::http::AttemptDeadline;
use crate::stack::{Rebuilt, Stack, StackHandle};

/// Stacks by name (`"payment"`, `"inventory"`), built from a [`RegistryConfig`] (typically a
/// file) and reloadable while the services using them run.
///
/// A [`reload`](Registry::reload) is all or nothing: every stack of the new configuration is
/// built first, and if one setting is invalid the error names its path and **every stack
/// keeps running on the old configuration**.
///
/// # What a reload keeps
///
/// Operators reload during incidents, so a reload keeps every engine whose settings did not
/// change, and a changed engine carries over what stays meaningful. A stack whose section is
/// equal to the running one ([`StackConfig`]'s `PartialEq`) is not touched at all: same
/// engines, and services from [`client`](Registry::client) keep their stacks. For a changed
/// section, engine by engine:
///
/// | what changed | kept | reset |
/// |---|---|---|
/// | nothing in the engine's settings | the engine itself: breaker state and window, calls in flight, budget, metrics | nothing |
/// | breaker thresholds only (`failure_rate_threshold`, `slow_call_rate_threshold`, `slow_call_duration`, `minimum_calls`, `consecutive_failures`) | state (an open breaker stays open until the same instant; half-open becomes open with no time left, so the next call probes again), a count window's calls, failures in a row, counters, `last_trip` | a time window's calls; results of calls in flight (they report to the old breaker); event subscriptions (subscribe to the new [`handle`](Registry::handle)'s breaker) |
/// | other breaker settings (`sliding_window`, `open_duration`, half-open settings) | nothing | a fresh breaker: closed, empty window |
/// | bulkhead `max_concurrent` only | the bulkhead, resized: calls in flight count against the new limit, waiters keep their place ([`Bulkhead::set_max_concurrent`](staunch_bulkhead::Bulkhead::set_max_concurrent)) | an adaptive limit's estimate restarts at the new value; an unset `max_queued` stays what it was |
/// | other bulkhead settings (`max_wait`, `max_queued`, `adaptive`) | nothing | a fresh bulkhead: calls in flight finish on the old one and are **not** counted by the new one |
/// | retry settings or the stack's `timeout`, `retry.budget` unchanged | the budget (its window of requests and retries) | the policy's metrics ([`RetryPolicy::metrics`](staunch_retry::RetryPolicy::metrics)) |
/// | `retry.budget` | nothing | a fresh budget and policy |
/// | `hedge` (or the retry policy it draws on) | the budget, as above | the observed latencies of a percentile delay |
/// | `attempt_timeout`, `deadline` | (no state) | new layers |
///
/// The breaker's default threshold follows `retry.max_attempts`
/// ([`BreakerConfig::default_failure_rate_threshold`](crate::BreakerConfig::default_failure_rate_threshold)),
/// so with the threshold unset, a new `max_attempts` changes the breaker's thresholds too.
///
/// A stack missing from the new configuration is removed from the registry; services
/// already using it keep its last engines. A stack the registry does not have (new, or
/// removed by an earlier reload) starts with fresh engines. When a stack changed, services
/// obtained from [`client`](Registry::client) move to its new engines for the calls they
/// accept from then on; calls in flight finish on the engines they started on.
///
/// ```
/// use staunch::{Registry, RegistryConfig, StackConfig};
///
/// let mut config = RegistryConfig::default();
/// config.stacks.insert("payment".into(), StackConfig::default());
/// let registry = Registry::new(&config)?;
/// assert_eq!(registry.handle("payment").unwrap().bulkhead().max_concurrent(), 25);
///
/// let mut bad = config.clone();
/// bad.stacks.get_mut("payment").unwrap().bulkhead.max_concurrent = Some(0);
/// let err = registry.reload(&bad).unwrap_err();
/// assert_eq!(err.field(), "payment.bulkhead.max_concurrent");
/// assert_eq!(registry.handle("payment").unwrap().bulkhead().max_concurrent(), 25);
/// # Ok::<(), staunch::ConfigError>(())
/// ```
pub struct Registry {
    stacks: RwLock<BTreeMap<String, Arc<Slot>>>,
}

/// One named stack: its current engines and a generation number that services compare on
/// `poll_ready` (one atomic load) to notice a reload.
struct Slot {
    generation: AtomicU64,
    current: RwLock<Current>,
}

/// What a reload does to one stack of the new configuration.
enum Plan {
    /// Same settings: same engines, and services keep their stacks.
    Unchanged,
    /// New settings: engines built from the running ones ([`StackConfig::rebuild`]).
    Changed(Rebuilt),
    /// A stack the registry did not have.
    Added(StackHandle),
}

#[derive(Clone)]
struct Current {
    config: StackConfig,
    handle: StackHandle,
}

impl Slot {
    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("stacks", &self.names())
            .finish()
    }
}

impl Registry {
    /// Builds every stack of `config`.
    ///
    /// # Errors
    ///
    /// The first invalid setting, its field named by its whole path
    /// (`payment.retry.max_attempts`).
    pub fn new(config: &RegistryConfig) -> Result<Self, ConfigError> {
        let registry = Self {
            stacks: RwLock::new(BTreeMap::new()),
        };
        registry.reload(config)?;
        Ok(registry)
    }

    /// Replaces the configuration: all or nothing (see the type's docs).
    ///
    /// # Errors
    ///
    /// The first invalid setting; nothing changes then.
    pub fn reload(&self, config: &RegistryConfig) -> Result<(), ConfigError> {
        // One reload at a time: each compares against what the previous one left.
        let mut stacks = self.stacks.write().unwrap_or_else(PoisonError::into_inner);
        // Validate and build everything before anything running changes.
        let mut plans = Vec::with_capacity(config.stacks.len());
        for (name, stack) in &config.stacks {
            let plan = match stacks.get(name.as_str()) {
                Some(slot) => {
                    let current = slot.current();
                    if current.config == *stack {
                        Plan::Unchanged
                    } else {
                        Plan::Changed(stack.rebuild(name, &current.config, &current.handle)?)
                    }
                }
                None => Plan::Added(stack.build(name)?),
            };
            plans.push((name, stack, plan));
        }
        stacks.retain(|name, _| {
            let keep = config.stacks.contains_key(name);
            if !keep {
                tracing::debug!(stack = %name, "stack removed from the configuration");
            }
            keep
        });
        for (name, config, plan) in plans {
            match plan {
                Plan::Unchanged => {
                    tracing::debug!(stack = %name, "stack configuration unchanged, engines kept");
                }
                Plan::Changed(rebuilt) => {
                    if let Some(slot) = stacks.get(name.as_str()) {
                        let handle = rebuilt.apply();
                        *slot.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
                            config: config.clone(),
                            handle,
                        };
                        slot.generation.fetch_add(1, Ordering::Release);
                    }
                }
                Plan::Added(handle) => {
                    stacks.insert(
                        name.clone(),
                        Arc::new(Slot {
                            generation: AtomicU64::new(0),
                            current: RwLock::new(Current {
                                config: config.clone(),
                                handle,
                            }),
                        }),
                    );
                    tracing::debug!(stack = %name, "stack added");
                }
            }
        }
        Ok(())
    }

    /// The names of the stacks, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// The current engines of stack `name`.
    pub fn handle(&self, name: &str) -> Option<StackHandle> {
        self.slot(name).map(|slot| slot.current().handle)
    }

    /// The configuration stack `name` currently runs with.
    pub fn config(&self, name: &str) -> Option<StackConfig> {
        self.slot(name).map(|slot| slot.current().config)
    }

    /// Wraps an HTTP client in stack `name` ([`HttpStatus`] classifies results); the service
    /// follows reloads. `None` if there is no such stack.
    pub fn http_client<S, E>(&self, name: &str, inner: S) -> Option<Reloading<S, HttpStatus, E>>
    where
        S: Clone + Send + 'static,
    {
        self.client(name, inner, HttpStatus::new())
    }

    /// Wraps `inner` in stack `name`, the breaker classifying results with `classifier`; the
    /// service follows reloads. `None` if there is no such stack.
    pub fn client<S, C, E>(&self, name: &str, inner: S, classifier: C) -> Option<Reloading<S, C, E>>
    where
        S: Clone + Send + 'static,
        C: Clone + Send + 'static,
    {
        let slot = self.slot(name)?;
        let generation = slot.generation.load(Ordering::Acquire);
        let handle = slot.current().handle;
        let stack = handle.wrap(
            AttemptDeadline::new(inner.clone(), &handle),
            classifier.clone(),
        );
        Some(Reloading {
            inner,
            classifier,
            slot,
            generation,
            stack,
        })
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.read().get(name).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.stacks.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A service wrapped in a [`Registry`]'s stack, following its reloads: on `poll_ready` it
/// compares the stack's generation (one atomic load) and, after a reload, rebuilds its stack
/// around a fresh clone of the wrapped service before accepting the next call. Like
/// [`http::client`](crate::http::client), each attempt carries the stack's outgoing deadline
/// when its configuration has a [`deadline.outgoing`](crate::DeadlineConfig::outgoing)
/// section ([`AttemptDeadline`]).
pub struct Reloading<S, C, E> {
    inner: S,
    classifier: C,
    slot: Arc<Slot>,
    generation: u64,
    stack: Stack<AttemptDeadline<S>, C, E>,
}

impl<S: Clone, C: Clone, E> Clone for Reloading<S, C, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            slot: Arc::clone(&self.slot),
            generation: self.generation,
            // The stack's own `Clone` leaves readiness state behind (its layers' rule).
            stack: self.stack.clone(),
        }
    }
}

impl<S, C, E> fmt::Debug for Reloading<S, C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("stack", &self.slot.current().handle.name())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl<S, C, E, B> Service<http::Request<B>> for Reloading<S, C, E>
where
    Stack<AttemptDeadline<S>, C, E>: Service<http::Request<B>>,
    S: Clone + Send + 'static,
    C: Clone + Send + 'static,
{
    type Response = <Stack<AttemptDeadline<S>, C, E> as Service<http::Request<B>>>::Response;
    type Error = <Stack<AttemptDeadline<S>, C, E> as Service<http::Request<B>>>::Error;
    type Future = <Stack<AttemptDeadline<S>, C, E> as Service<http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let generation = self.slot.generation.load(Ordering::Acquire);
        if generation != self.generation {
            let current = self.slot.current();
            let inner = AttemptDeadline::new(self.inner.clone(), &current.handle);
            self.stack = current.handle.wrap(inner, self.classifier.clone());
            self.generation = generation;
            tracing::debug!(stack = %current.handle.name(), "stack reloaded");
        }
        self.stack.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.stack.call(req)
    }
}
