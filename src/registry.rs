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
use crate::stack::{Stack, StackHandle};

/// Stacks by name (`"payment"`, `"inventory"`), built from a [`RegistryConfig`] (typically a
/// file) and reloadable while the services using them run.
///
/// A [`reload`](Registry::reload) is all or nothing: every stack of the new configuration is
/// built first, and if one setting is invalid the error names its path and **every stack
/// keeps running on the old configuration**. When it succeeds, services obtained from
/// [`client`](Registry::client) switch to the new engines for the calls they accept from then
/// on; calls in flight finish on the old ones. A reload builds fresh engines: a breaker starts
/// closed, counters start at zero. A stack missing from the new configuration is removed
/// from the registry; services already using it keep its last engines.
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
        let mut built = Vec::with_capacity(config.stacks.len());
        for (name, stack) in &config.stacks {
            built.push((name, stack.clone(), stack.build(name)?));
        }
        let mut stacks = self.stacks.write().unwrap_or_else(PoisonError::into_inner);
        stacks.retain(|name, _| config.stacks.contains_key(name));
        for (name, config, handle) in built {
            let current = Current { config, handle };
            match stacks.get(name.as_str()) {
                Some(slot) => {
                    *slot.current.write().unwrap_or_else(PoisonError::into_inner) = current;
                    slot.generation.fetch_add(1, Ordering::Release);
                }
                None => {
                    stacks.insert(
                        name.clone(),
                        Arc::new(Slot {
                            generation: AtomicU64::new(0),
                            current: RwLock::new(current),
                        }),
                    );
                }
            }
            tracing::debug!(stack = %name, "stack configuration loaded");
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
