//! Per-key breakers: one breaker per downstream (host, tenant, ...), picked per request.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use staunch_core::{AnyError, BoxError, Classify};
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::CircuitBreaker;
use crate::config::CircuitBreakerConfig;
use crate::future::ResponseFuture;
use crate::permit::Permit;
use crate::service::release_readiness;

/// The breakers of a [`KeyedCircuitBreakerLayer`], created on first use of each key.
///
/// Bounded: once `max_breakers` keys have a breaker, requests for any *other* key share one
/// overflow breaker (named `<name>/overflow`), so a flood of distinct keys (say, URIs with
/// attacker-chosen hosts) cannot grow memory without bound, and those calls are still
/// protected. Watch [`overflow`](Self::overflow): if it sees traffic, raise the bound.
pub struct BreakerRegistry<K> {
    config: CircuitBreakerConfig,
    max_breakers: usize,
    breakers: RwLock<HashMap<K, CircuitBreaker>>,
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
    /// How many per-key breakers exist (the overflow breaker not included).
    pub fn len(&self) -> usize {
        self.breakers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// `true` when no per-key breaker has been created yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The breaker shared by keys beyond the bound.
    pub fn overflow(&self) -> &CircuitBreaker {
        &self.overflow
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> BreakerRegistry<K> {
    /// The breaker of `key`, if one was created.
    pub fn get(&self, key: &K) -> Option<CircuitBreaker> {
        self.breakers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// The breaker for `key`: existing, newly created, or the overflow breaker when the
    /// bound is reached.
    pub fn breaker_for(&self, key: &K) -> CircuitBreaker {
        if let Some(breaker) = self.get(key) {
            return breaker;
        }
        let mut map = self
            .breakers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(breaker) = map.get(key) {
            return breaker.clone();
        }
        if map.len() >= self.max_breakers {
            return self.overflow.clone();
        }
        let breaker = self.config.breaker(format!("{}/{key}", self.config.name));
        map.insert(key.clone(), breaker.clone());
        breaker
    }
}

/// Wraps services in one circuit breaker per key, picked by a function of the request (for
/// example the URI authority, so that one failing host does not open the circuit for all).
///
/// Breakers are created lazily from shared settings and named `<name>/<key>`; there are at
/// most `max_breakers` of them (see [`BreakerRegistry`] for what happens past the bound).
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
                breakers: RwLock::new(HashMap::new()),
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
