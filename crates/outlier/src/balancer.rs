//! [`Balancer`]: a tower service over several endpoints that sends each call to the less
//! loaded of two eligible endpoints and ejects the outliers.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use staunch_core::{AnyError, BoxError, Classify, Outcome};
use tokio::time::Instant;
use tower_service::Service;

use crate::detector::{Detector, EndpointStatus, OutlierMetrics};
use crate::error::NoEndpoints;
use crate::future::{Call, InFlight, ResponseFuture};
use crate::settings::Settings;

/// One endpoint's service, beside the detector's entry of the same index.
#[derive(Debug)]
struct Slot<S> {
    /// Stable across removals of other endpoints, unlike the index: a call records its
    /// outcome by it.
    id: u64,
    service: S,
    in_flight: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct State<K, S> {
    detector: Detector<K>,
    slots: Vec<Slot<S>>,
    rng: fastrand::Rng,
    next_id: u64,
}

/// What every clone of a balancer shares.
#[derive(Debug)]
pub(crate) struct Shared<K, S> {
    name: Arc<str>,
    state: Mutex<State<K, S>>,
}

impl<K, S> State<K, S> {
    fn insert(&mut self, key: K, service: S) -> bool
    where
        K: PartialEq + fmt::Debug,
    {
        if let Some(index) = self.detector.index_of(&key) {
            self.slots[index].service = service;
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.detector.push(key);
        self.slots.push(Slot {
            id,
            service,
            in_flight: Arc::new(AtomicUsize::new(0)),
        });
        true
    }
}

impl<K, S> Shared<K, S> {
    fn lock(&self) -> MutexGuard<'_, State<K, S>> {
        // A panic while the lock was held (a user's `Clone` of a service) leaves the state
        // consistent: every change under the lock is made after the code that can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record(&self, id: u64, outcome: Outcome) {
        if outcome.is_ignored() {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(index) = state.slots.iter().position(|s| s.id == id) {
            state.detector.record(index, outcome, now);
        }
    }
}

/// Where a handle is between `poll_ready` and `call`.
#[derive(Debug)]
enum Ready<S> {
    /// An endpoint was chosen; its service is being made ready (`ready` once it is).
    Chosen {
        id: u64,
        service: S,
        in_flight: InFlight,
        ready: bool,
    },
    /// The chosen endpoint failed its readiness; the next call returns the error.
    Failed(BoxError),
    /// There was no endpoint at all.
    Empty,
}

/// A client over several replicas of one service: each call goes to one endpoint, chosen
/// by power of two choices among the eligible ones, and each endpoint's outcomes feed an
/// outlier [`Detector`] that ejects the ones that keep failing.
///
/// # Choosing an endpoint
///
/// In `poll_ready`, the balancer draws two different endpoints at random among those not
/// ejected and takes the one with fewer calls in flight (the first drawn on a tie); with
/// one eligible endpoint it takes that one. Then it drives that endpoint's service ready,
/// and `call` sends the request to it. Calls in flight are counted per endpoint across every
/// clone of the balancer, from the moment an endpoint is chosen until the call's outcome is
/// known or its future is dropped.
///
/// This is a small p2c of its own rather than tower's `balance::p2c::Balance` over a
/// `Discover` filtered by the detector, because:
///
/// - the eligible set changes on every ejection and return, and a `Discover` that removes
///   and re-inserts services makes `Balance` drop their readiness and rebuild its ready
///   cache each time;
/// - `Balance` is one handle (not `Clone`): sharing it between tasks takes a `Buffer` (a
///   channel and a task), where this balancer's clones share the endpoints, their load and
///   the detector directly;
/// - the outcome of each call must reach the detector under the endpoint's key, which the
///   balancer's own response future does without a wrapper service per endpoint.
///
/// `cargo bench -p staunch-benches --bench outlier` measures the two side by side.
///
/// # Outcomes
///
/// The classifier (default [`AnyError`]: every `Err` is a failure, every `Ok` a success)
/// judges each call; `HttpStatus::empty().failures(500..=599)` is Envoy's
/// `consecutive_5xx` (5xx responses and transport errors fail, 4xx do not). An error from
/// the chosen endpoint's `poll_ready` (a connector that cannot connect) is classified the
/// same way, and returned by the next `call`. A cancelled call is the classifier's
/// `classify_cancelled` (ignored by default). A rejection by a layer inside an endpoint
/// (that endpoint's open circuit breaker, full bulkhead) is an `Err` like any other: with
/// `AnyError` it counts against the endpoint, which is what a breaker open on one replica
/// says about it.
///
/// # Endpoints at run time
///
/// [`insert`](Self::insert), [`remove`](Self::remove) and
/// [`set_endpoints`](Self::set_endpoints) (the whole list, as a service-discovery watch
/// gives it) change the set for every clone.
/// With no endpoint at all, `poll_ready` is ready and `call` fails with
/// [`NoEndpoints`] (never a wait that could last forever).
///
/// # Readiness
///
/// The choice is made once per call: while the chosen endpoint's service is not ready, the
/// balancer waits for it rather than choosing again (a fresh choice would usually fall on
/// the same endpoint, and readiness that pends is a per-endpoint layer's business, such as
/// a bulkhead waiting for a permit). Each clone starts without a choice (see `Clone`).
///
/// # Panics
///
/// `call` without a successful `poll_ready` first panics (a broken tower contract).
pub struct Balancer<K, S, C = AnyError> {
    shared: Arc<Shared<K, S>>,
    classifier: C,
    ready: Option<Ready<S>>,
}

// Written by hand: the endpoint a handle chose and drove ready (and counted in flight) is
// this handle's readiness state, so a clone starts without one, as every tower service's
// clone starts not ready. The endpoints, their load and the detector are shared.
impl<K, S, C: Clone> Clone for Balancer<K, S, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            ready: None,
        }
    }
}

impl<K: fmt::Debug, S, C> fmt::Debug for Balancer<K, S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Balancer")
            .field("name", &self.shared.name)
            .field("endpoints", &state.detector.len())
            .field("ejected", &state.detector.metrics().ejected)
            .finish_non_exhaustive()
    }
}

impl<K, S, C> Balancer<K, S, C> {
    /// The name in tracing events and metrics labels.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The settings.
    pub fn settings(&self) -> Settings {
        self.shared.lock().detector.settings().clone()
    }

    /// Each endpoint's state, in the order they were added: healthy or ejected until when,
    /// times ejected, failures in a row, calls in flight. Endpoints due back return first.
    pub fn status(&self) -> Vec<EndpointStatus<K>>
    where
        K: Clone,
    {
        let now = Instant::now();
        let mut state = self.shared.lock();
        state.detector.tick(now);
        let state = &*state;
        state
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let mut status = state.detector.status(i)?;
                status.in_flight = slot.in_flight.load(Ordering::Relaxed);
                Some(status)
            })
            .collect()
    }

    /// One endpoint's state, by key.
    pub fn endpoint(&self, key: &K) -> Option<EndpointStatus<K>>
    where
        K: Clone + PartialEq,
    {
        self.status().into_iter().find(|s| s.key == *key)
    }

    /// What the detector did so far, and how many endpoints are out now.
    pub fn metrics(&self) -> OutlierMetrics {
        let now = Instant::now();
        let mut state = self.shared.lock();
        state.detector.tick(now);
        state.detector.metrics()
    }

    /// Adds an endpoint, healthy, for every clone; with a key already known, replaces that
    /// endpoint's service and keeps its state (ejection, history). Returns `true` when the key
    /// is new.
    pub fn insert(&self, key: K, service: S) -> bool
    where
        K: PartialEq + fmt::Debug,
    {
        self.shared.lock().insert(key, service)
    }

    /// Makes these the endpoints, for every clone (what a service-discovery watch calls with
    /// each new list): keys already known keep their state and take the new service, new keys
    /// are added healthy, and known keys not listed are removed, as by
    /// [`remove`](Self::remove).
    pub fn set_endpoints(&self, endpoints: impl IntoIterator<Item = (K, S)>)
    where
        K: PartialEq + fmt::Debug,
    {
        let now = Instant::now();
        let mut state = self.shared.lock();
        let mut listed = vec![false; state.slots.len()];
        for (key, service) in endpoints {
            let index = state.detector.index_of(&key);
            state.insert(key, service);
            let index = index.unwrap_or(state.slots.len() - 1);
            if index >= listed.len() {
                listed.resize(index + 1, false);
            }
            listed[index] = true;
        }
        // Added first, removed last: the set never shrinks on the way, so the cap on
        // endpoints out is the final set's.
        for index in (0..listed.len()).rev() {
            if !listed[index] {
                state.detector.remove(index, now);
                state.slots.remove(index);
            }
        }
    }

    /// Removes an endpoint for every clone and gives back its service. Calls already sent to
    /// it finish there; their outcomes are no longer recorded.
    pub fn remove(&self, key: &K) -> Option<S>
    where
        K: PartialEq,
    {
        let now = Instant::now();
        let mut state = self.shared.lock();
        let index = state.detector.index_of(key)?;
        state.detector.remove(index, now);
        Some(state.slots.remove(index).service)
    }

    /// Chooses an endpoint for the next call (power of two choices on calls in flight).
    fn choose(&self) -> Ready<S>
    where
        S: Clone,
    {
        let now = Instant::now();
        let mut state = self.shared.lock();
        let state = &mut *state;
        state.detector.tick(now);
        let eligible = state.detector.eligible_count();
        let index = match eligible {
            0 => return Ready::Empty,
            1 => state.detector.nth_eligible(0),
            n => {
                let a = state.rng.usize(..n);
                let mut b = state.rng.usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (
                    state.detector.nth_eligible(a),
                    state.detector.nth_eligible(b),
                );
                match (a, b) {
                    (Some(a), Some(b)) => {
                        let load = |i: usize| state.slots[i].in_flight.load(Ordering::Relaxed);
                        Some(if load(b) < load(a) { b } else { a })
                    }
                    (a, b) => a.or(b),
                }
            }
        };
        let Some(slot) = index.and_then(|i| state.slots.get(i)) else {
            return Ready::Empty;
        };
        Ready::Chosen {
            id: slot.id,
            service: slot.service.clone(),
            in_flight: InFlight::new(&slot.in_flight),
            ready: false,
        }
    }
}

impl<K, S, C, Req> Service<Req> for Balancer<K, S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, K, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ready.is_none() {
            self.ready = Some(self.choose());
        }
        let Some(Ready::Chosen {
            id,
            service,
            ready: ready @ false,
            ..
        }) = &mut self.ready
        else {
            return Poll::Ready(Ok(()));
        };
        match service.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                *ready = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => {
                // Terminal for that endpoint's handle, not for the balancer: the endpoint is
                // charged with it, and the next call returns it.
                let id = *id;
                let result: Result<S::Response, S::Error> = Err(err);
                let outcome = self.classifier.classify(&result);
                self.ready = result.err().map(|err| Ready::Failed(err.into()));
                self.shared.record(id, outcome);
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.ready.take() {
            Some(Ready::Chosen {
                id,
                mut service,
                in_flight,
                ready: true,
            }) => {
                let call = Call {
                    shared: Arc::clone(&self.shared),
                    id,
                    cancelled: self.classifier.classify_cancelled(),
                    reported: false,
                    in_flight: Some(in_flight),
                };
                ResponseFuture::called(service.call(req), call, self.classifier.clone())
            }
            Some(Ready::Failed(err)) => ResponseFuture::failed(err),
            Some(Ready::Empty) => ResponseFuture::failed(Box::new(NoEndpoints)),
            Some(Ready::Chosen { ready: false, .. }) | None => {
                panic!("Balancer::call without a successful poll_ready first")
            }
        }
    }
}

impl<K: fmt::Debug, S, C> Balancer<K, S, C> {
    /// A balancer over `endpoints` (keys already checked to differ).
    pub(crate) fn from_parts(
        name: Arc<str>,
        settings: Settings,
        classifier: C,
        seed: Option<u64>,
        endpoints: Vec<(K, S)>,
    ) -> Self {
        let (keys, services): (Vec<K>, Vec<S>) = endpoints.into_iter().unzip();
        let slots: Vec<Slot<S>> = services
            .into_iter()
            .zip(0..)
            .map(|(service, id)| Slot {
                id,
                service,
                in_flight: Arc::new(AtomicUsize::new(0)),
            })
            .collect();
        let next_id = slots.len() as u64;
        let rng = match seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Balancer {
            shared: Arc::new(Shared {
                name: Arc::clone(&name),
                state: Mutex::new(State {
                    detector: Detector::with_keys(name, settings, keys),
                    slots,
                    rng,
                    next_id,
                }),
            }),
            classifier,
            ready: None,
        }
    }
}
