//! Per-key breakers: one breaker per downstream (host, tenant, ...), picked per request.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::task::{Context, Poll};

use staunch_core::{AnyError, BoxError, Classify};
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::CircuitBreaker;
use crate::config::CircuitBreakerConfig;
use crate::future::ResponseFuture;
use crate::permit::Permit;
use crate::service::release_readiness;

use staunch_core::entries::{Added, Entries};

/// The breakers of a [`KeyedCircuitBreakerLayer`], created on first use of each key.
///
/// # Bounded, by evicting idle breakers
///
/// At most `max_breakers` keys have a breaker. When a new key arrives and the bound is
/// reached, the least recently used *idle* breaker is evicted and the new key gets a fresh
/// breaker of its own. A breaker is idle when the registry can forget it without losing
/// anything:
///
/// - no call is in flight through it (no response future or [`Permit`] of it is alive), and
///   no [`CircuitBreaker`] handle of it is kept outside the registry (one returned by
///   [`get`](Self::get) or [`breaker_for`](Self::breaker_for) pins it while you hold it);
/// - it is closed, open with its open period over (it would let a probe through), or
///   half-open with no probe running. A breaker open within its open period is never evicted,
///   so a tripped key keeps refusing calls however many other keys pass; nor is one in a state
///   set by hand (forced open, disabled, metrics only).
///
/// Evicting a breaker forgets its window (the recent failures that did not trip it) and its
/// counters; if the key comes back it starts closed with an empty window. An open breaker whose
/// period is over lets the key's next calls through as ordinary calls instead of probes, and
/// trips again as a fresh breaker does (on its failure rate once `minimum_calls` calls are in
/// the window, or on `consecutive_failures`). Subscribers to an evicted breaker's events see
/// the channel close. A flood of distinct new keys can so flush the windows of idle keys, but
/// never let calls through to a key tripped within its open period, nor disturb one with calls
/// in flight.
///
/// "Least recently used" counts calls, not time: each call stamps its key's breaker with a
/// clock that moves when a key is added. Finding an idle breaker reads every breaker, so one
/// search keeps the `max_breakers / 8` oldest idle ones for the next new keys (each checked
/// again before it goes), and after a search that found none idle, the next
/// `max_breakers / 8` new keys use the overflow breaker without searching. Below 16 breakers
/// every new key searches.
///
/// # The overflow breaker
///
/// Only when no breaker is idle does a new key share the overflow breaker (named
/// `<name>/overflow`), so that a flood of distinct keys (say, URIs with attacker-chosen hosts)
/// while every breaker is busy cannot grow memory without bound, and those calls are still
/// protected. Watch [`overflow`](Self::overflow): if it sees traffic, many keys are busy or
/// open at once, and the bound is too low.
pub struct BreakerRegistry<K> {
    config: CircuitBreakerConfig,
    max_breakers: usize,
    breakers: RwLock<Entries<K, CircuitBreaker>>,
    overflow: CircuitBreaker,
}

impl<K> fmt::Debug for BreakerRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("name", &self.config.name)
            .field("max_breakers", &self.max_breakers)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K> BreakerRegistry<K> {
    fn read(&self) -> RwLockReadGuard<'_, Entries<K, CircuitBreaker>> {
        self.breakers.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many per-key breakers exist (the overflow breaker not included).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// `true` when no per-key breaker exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The breaker shared by new keys while every per-key breaker is busy.
    pub fn overflow(&self) -> &CircuitBreaker {
        &self.overflow
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> BreakerRegistry<K> {
    /// The breaker of `key`, if it has one now (looking does not count as a use; the handle
    /// keeps the breaker from being evicted while you hold it).
    pub fn get(&self, key: &K) -> Option<CircuitBreaker> {
        self.read().peek(key).cloned()
    }

    /// The breaker for `key`: existing, newly created (evicting an idle one when the bound is
    /// reached), or the overflow breaker when no breaker is idle. Counts as a use of the key.
    pub fn breaker_for(&self, key: &K) -> CircuitBreaker {
        if let Some(breaker) = self.read().get(key) {
            return breaker.clone();
        }
        let mut map = self
            .breakers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(breaker) = map.get(key) {
            return breaker.clone();
        }
        let make = || self.config.breaker(format!("{}/{key}", self.config.name));
        let (breaker, evicted) = match map.add(key, make, CircuitBreaker::is_evictable) {
            Added::Inserted { value, evicted } => (value.clone(), evicted),
            Added::Full => {
                drop(map);
                tracing::trace!(breaker = %self.config.name, %key, "every per-key breaker is busy; key shares the overflow breaker");
                return self.overflow.clone();
            }
        };
        drop(map);
        // Dropped (and logged) outside the lock.
        if let Some((evicted, _)) = evicted {
            tracing::debug!(breaker = %self.config.name, %evicted, %key, "idle per-key breaker evicted for a new key");
        }
        breaker
    }
}

/// Wraps services in one circuit breaker per key, picked by a function of the request (for
/// example the URI authority, so that one failing host does not open the circuit for all).
///
/// Breakers are created lazily from shared settings and named `<name>/<key>`; there are at
/// most `max_breakers` of them: past the bound a new key evicts the least recently used idle
/// breaker, and shares an overflow breaker only while none is idle (see [`BreakerRegistry`]
/// for what counts as idle: an open breaker is kept while its open period lasts).
/// Looking a breaker up takes a read lock on the registry, so a keyed breaker costs more per
/// call than a single [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), staunch_core::BoxError> {
/// use staunch_circuit_breaker::{CircuitBreaker, KeyedCircuitBreakerLayer};
/// use staunch_core::HttpStatus;
/// use tower::{Layer, Service, ServiceExt};
///
/// let config = CircuitBreaker::builder("upstream").build_config()?;
/// let layer = KeyedCircuitBreakerLayer::new(config, 256, |req: &http::Request<()>| {
///     req.uri().authority().map(|a| a.to_string()).unwrap_or_default()
/// })
/// .with_classifier(HttpStatus::new());
/// let breakers = layer.registry(); // inspect the per-host breakers
/// let mut client = layer.layer(tower::service_fn(|_req: http::Request<()>| async {
///     Ok::<_, std::io::Error>(http::Response::new(()))
/// }));
///
/// let request = http::Request::get("http://inventory.internal/items").body(())?;
/// client.ready().await?.call(request).await?;
/// let breaker = breakers.get(&"inventory.internal".to_string()).unwrap();
/// assert_eq!(breaker.name(), "upstream/inventory.internal");
/// # Ok(()) }
/// ```
pub struct KeyedCircuitBreakerLayer<K, F, C = AnyError> {
    registry: Arc<BreakerRegistry<K>>,
    key: F,
    classifier: C,
}

impl<K, F, C: fmt::Debug> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("registry", &self.registry)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl<K: Clone, F: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F> KeyedCircuitBreakerLayer<K, F> {
    /// One breaker per `key(&request)`, built from `config`, at most `max_breakers` of them
    /// (a `max_breakers` of 0 sends every key to the overflow breaker).
    pub fn new(config: CircuitBreakerConfig, max_breakers: usize, key: F) -> Self {
        let overflow = config.breaker(format!("{}/overflow", config.name));
        Self {
            registry: Arc::new(BreakerRegistry {
                config,
                max_breakers,
                breakers: RwLock::new(Entries::new(max_breakers)),
                overflow,
            }),
            key,
            classifier: AnyError::new(),
        }
    }
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    /// Uses `classifier` to decide which results count as failures (rejections by layers
    /// further in are ignored, as for [`CircuitBreakerLayer`](crate::CircuitBreakerLayer)).
    pub fn with_classifier<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayer<K, F, C2> {
        KeyedCircuitBreakerLayer {
            registry: self.registry,
            key: self.key,
            classifier,
        }
    }

    /// The breakers, shared with every service this layer made.
    pub fn registry(&self) -> Arc<BreakerRegistry<K>> {
        Arc::clone(&self.registry)
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreakerService<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreakerService {
            inner,
            registry: Arc::clone(&self.registry),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service behind per-key circuit breakers; made by [`KeyedCircuitBreakerLayer`].
///
/// Errors are as for [`CircuitBreakerService`](crate::CircuitBreakerService): a boxed
/// [`BreakerOpen`](crate::BreakerOpen) naming the key's breaker, or the inner error as it is.
///
/// `poll_ready` is the inner service's (the key, and so the breaker, is known only in
/// `call`). When the key's breaker rejects the call, whatever the inner service reserved in
/// `poll_ready` is given back first, by replacing the handle made ready with a fresh clone
/// of it (hence `S: Clone`).
pub struct KeyedCircuitBreakerService<S, K, F, C> {
    inner: S,
    registry: Arc<BreakerRegistry<K>>,
    key: F,
    classifier: C,
}

impl<S: fmt::Debug, K, F, C: fmt::Debug> fmt::Debug for KeyedCircuitBreakerService<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerService")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

// By hand: nothing is reserved in `poll_ready`, so a clone inherits no readiness state.
impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreakerService<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: Arc::clone(&self.registry),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreakerService<S, K, F, C>
where
    S: Service<Req> + Clone,
    K: Hash + Eq + Clone + fmt::Display,
    S::Error: Into<BoxError> + 'static,
    F: Fn(&Req) -> K,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.registry.breaker_for(&(self.key)(&req));
        let cancelled = self.classifier.classify_cancelled();
        let classifier = &self.classifier;
        let call = move |inner: &mut S, permit: Permit| {
            ResponseFuture::called(
                inner.call(req),
                permit.cancelled_as(cancelled),
                classifier.clone(),
            )
        };
        breaker.acquire_into(&mut self.inner, call, |inner, open| {
            // The key is known only now, after the inner service was made ready for this
            // call: give back what it reserved.
            release_readiness(inner);
            ResponseFuture::rejected(open, classifier.clone())
        })
    }
}
