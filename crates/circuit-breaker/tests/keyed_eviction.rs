//! Per-key breakers past the bound: idle breakers are evicted for new keys; busy and open
//! ones are kept; the overflow breaker takes new keys only while no breaker is idle.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use proptest::prelude::*;
use staunch_circuit_breaker::{
    BoxError, BreakerOpen, BreakerRegistry, CircuitBreaker, KeyedCircuitBreakerLayer, State,
};
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};

/// A request to the test upstream: for `key`, answered at once or when told.
struct Call {
    key: u32,
    reply: Reply,
}

enum Reply {
    /// Succeeds (`true`) or fails at once.
    Now(bool),
    /// Succeeds or fails when the sender says so.
    Later(oneshot::Receiver<bool>),
}

type UpstreamFuture = Pin<Box<dyn Future<Output = Result<(), std::io::Error>> + Send>>;
type Upstream = tower::util::ServiceFn<fn(Call) -> UpstreamFuture>;

fn upstream() -> Upstream {
    let answer: fn(Call) -> UpstreamFuture = |call| {
        Box::pin(async move {
            let ok = match call.reply {
                Reply::Now(ok) => ok,
                Reply::Later(rx) => rx.await.unwrap_or(false),
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::other("down"))
            }
        })
    };
    tower::service_fn(answer)
}

type ByKey = fn(&Call) -> u32;
type Keyed = staunch_circuit_breaker::KeyedCircuitBreakerService<
    Upstream,
    u32,
    ByKey,
    staunch_core::AnyError,
>;
type CallResult = Result<(), BoxError>;
type Response = staunch_circuit_breaker::ResponseFuture<UpstreamFuture, staunch_core::AnyError>;

/// Per-key breakers, at most `max`, each tripped by one failure and open for a minute.
fn keyed(max: usize) -> (Keyed, std::sync::Arc<BreakerRegistry<u32>>) {
    let config = CircuitBreaker::builder("keys")
        .consecutive_failures(1)
        .open_duration(Duration::from_mins(1))
        .build_config()
        .unwrap();
    let key: ByKey = |call| call.key;
    let layer = KeyedCircuitBreakerLayer::new(config, max, key);
    let registry = layer.registry();
    (layer.layer(upstream()), registry)
}

async fn call(svc: &mut Keyed, key: u32, ok: bool) -> CallResult {
    let reply = Reply::Now(ok);
    svc.ready().await.unwrap().call(Call { key, reply }).await
}

/// Starts a call that finishes when the returned sender says how it went.
async fn start(svc: &mut Keyed, key: u32) -> (oneshot::Sender<bool>, Response) {
    let (tx, rx) = oneshot::channel();
    let reply = Reply::Later(rx);
    let future = svc.ready().await.unwrap().call(Call { key, reply });
    (tx, future)
}

#[tokio::test(start_paused = true)]
async fn new_keys_past_the_bound_get_their_own_breakers_once_old_keys_are_idle() {
    let (mut svc, registry) = keyed(1024);
    for key in 0..1024 {
        call(&mut svc, key, true).await.unwrap();
    }
    assert_eq!(registry.len(), 1024);
    for key in 10_000..11_000 {
        call(&mut svc, key, true).await.unwrap();
    }
    assert_eq!(registry.len(), 1024, "never more than the bound");
    assert_eq!(
        registry.overflow().snapshot().successful_calls,
        0,
        "no new key needed the overflow breaker"
    );
    for key in 10_000..11_000 {
        let breaker = registry
            .get(&key)
            .expect("every new key has its own breaker");
        assert_eq!(breaker.name(), format!("keys/{key}"));
    }
    // The least recently used went first.
    assert!((0..1000).all(|key| registry.get(&key).is_none()));
    assert!((1000..1024).all(|key| registry.get(&key).is_some()));

    // Tripping one new key leaves the other new keys' calls flowing.
    call(&mut svc, 10_000, false).await.unwrap_err();
    let err = call(&mut svc, 10_000, true).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().name(),
        "keys/10000"
    );
    for key in 10_001..11_000 {
        call(&mut svc, key, true).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_kept_while_its_open_period_lasts() {
    let (mut svc, registry) = keyed(1024);
    call(&mut svc, 0, false).await.unwrap_err();
    assert_eq!(registry.get(&0).unwrap().state(), State::Open);
    for key in 1..=2000 {
        call(&mut svc, key, true).await.unwrap();
    }
    assert_eq!(registry.len(), 1024);
    let err = call(&mut svc, 0, true).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().name(),
        "keys/0",
        "the tripped key still refuses through its own breaker"
    );
    assert_eq!(registry.overflow().snapshot().successful_calls, 0);

    // Once the open period is over, the breaker holds no verdict any more and may go.
    tokio::time::advance(Duration::from_mins(1)).await;
    for key in 3000..4100 {
        call(&mut svc, key, true).await.unwrap();
    }
    assert!(registry.get(&0).is_none(), "evicted after its open period");
    call(&mut svc, 0, true).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_breaker_with_a_call_in_flight_is_not_evicted() {
    let (mut svc, registry) = keyed(1024);
    let (finish, held) = start(&mut svc, 0).await;
    for key in 1..=2000 {
        call(&mut svc, key, true).await.unwrap();
    }
    assert_eq!(registry.len(), 1024);
    finish.send(true).unwrap();
    held.await.unwrap();
    let breaker = registry.get(&0).expect("kept while its call was in flight");
    assert_eq!(
        breaker.snapshot().successful_calls,
        1,
        "the held call's result reached the key's breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn the_overflow_breaker_takes_new_keys_only_while_no_breaker_is_idle() {
    let (mut svc, registry) = keyed(4);
    let mut held = Vec::new();
    for key in 0..4 {
        held.push(start(&mut svc, key).await);
    }
    call(&mut svc, 100, true).await.unwrap();
    assert!(registry.get(&100).is_none());
    assert_eq!(registry.overflow().snapshot().successful_calls, 1);

    // A kept handle pins its breaker just as a call in flight does.
    let (finish, call_on_2) = held.remove(2);
    let pinned = registry.get(&2).unwrap();
    finish.send(true).unwrap();
    call_on_2.await.unwrap();
    call(&mut svc, 101, true).await.unwrap();
    assert!(registry.get(&101).is_none(), "key 2 is pinned by a handle");
    drop(pinned);

    call(&mut svc, 102, true).await.unwrap();
    assert!(
        registry.get(&102).is_some(),
        "key 2 was idle: 102 took its place"
    );
    assert!(registry.get(&2).is_none());
    assert_eq!(registry.len(), 4);
    assert_eq!(registry.overflow().snapshot().successful_calls, 2);
    for (finish, future) in held {
        finish.send(true).unwrap();
        future.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn manual_states_are_never_evicted() {
    let (mut svc, registry) = keyed(2);
    call(&mut svc, 0, true).await.unwrap();
    call(&mut svc, 1, true).await.unwrap();
    registry.get(&0).unwrap().force_open();
    registry.get(&1).unwrap().disable();
    tokio::time::advance(Duration::from_mins(10)).await;
    call(&mut svc, 2, true).await.unwrap();
    assert!(registry.get(&2).is_none());
    assert_eq!(registry.get(&0).unwrap().state(), State::ForcedOpen);
    assert_eq!(registry.get(&1).unwrap().state(), State::Disabled);
}

// A model of the registry at a bound of 4 (where every new key searches, so the choice is
// exact up to ties): which keys have a breaker, their use stamps, calls in flight, whether
// open, and the outcomes each recorded. Time does not move, so an open breaker stays open.

const LIMIT: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    /// A call on `key` that succeeds or fails at once.
    Call(u32, bool),
    /// A call on `key` that is held in flight.
    Start(u32),
    /// The `n`-th held call (modulo their number) finishes, successfully or not.
    Finish(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..8u32, proptest::bool::weighted(0.8)).prop_map(|(k, ok)| Op::Call(k, ok)),
        2 => (0..8u32).prop_map(Op::Start),
        2 => (any::<usize>(), proptest::bool::weighted(0.8)).prop_map(|(n, ok)| Op::Finish(n, ok)),
    ]
}

#[derive(Debug, Default, Clone)]
struct ModelBreaker {
    stamp: u64,
    in_flight: usize,
    open: bool,
    successes: u64,
    failures: u64,
}

#[derive(Debug, Default)]
struct Model {
    clock: u64,
    breakers: std::collections::HashMap<u32, ModelBreaker>,
    overflow: ModelBreaker,
}

/// Where a call went in the model.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    Own(u32),
    Overflow,
}

impl Model {
    /// Routes a call on `key` as the registry must, given which key the registry evicted
    /// (checked against the model's choices).
    fn route(&mut self, key: u32, evicted: Option<u32>) -> Result<Route, TestCaseError> {
        if let Some(b) = self.breakers.get_mut(&key) {
            b.stamp = self.clock;
            return Ok(Route::Own(key));
        }
        self.clock += 1;
        let now = self.clock;
        self.clock += 1;
        if self.breakers.len() >= LIMIT {
            let idle = |b: &ModelBreaker| b.in_flight == 0 && !b.open;
            let oldest = self
                .breakers
                .values()
                .filter(|b| idle(b))
                .map(|b| b.stamp)
                .min();
            let Some(oldest) = oldest else {
                prop_assert_eq!(evicted, None, "nothing was idle");
                return Ok(Route::Overflow);
            };
            let Some(evicted) = evicted else {
                return Err(TestCaseError::fail(format!(
                    "an idle breaker (stamp {oldest}) was there but {key} went to the overflow"
                )));
            };
            let gone = self.breakers.remove(&evicted);
            prop_assert!(
                gone.as_ref().is_some_and(|b| idle(b) && b.stamp == oldest),
                "evicted {evicted} ({gone:?}), not one of the least recently used idle ones"
            );
        } else {
            prop_assert_eq!(evicted, None);
        }
        self.breakers.insert(
            key,
            ModelBreaker {
                stamp: now,
                ..ModelBreaker::default()
            },
        );
        Ok(Route::Own(key))
    }

    fn breaker(&mut self, route: Route) -> &mut ModelBreaker {
        match route {
            Route::Own(key) => self
                .breakers
                .get_mut(&key)
                .expect("routed to an existing key"),
            Route::Overflow => &mut self.overflow,
        }
    }

    /// Records a finished call admitted by `route`'s breaker (one failure trips it; a result
    /// reaching an open breaker was started before it opened, and is discarded).
    fn finish(&mut self, route: Route, ok: bool) {
        let b = self.breaker(route);
        if b.open {
            return;
        }
        if ok {
            b.successes += 1;
        } else {
            b.failures += 1;
            b.open = true;
        }
    }
}

fn keys(registry: &BreakerRegistry<u32>) -> Vec<u32> {
    (0..8).filter(|k| registry.get(k).is_some()).collect()
}

fn check(registry: &BreakerRegistry<u32>, model: &Model) -> Result<(), TestCaseError> {
    prop_assert!(registry.len() <= LIMIT);
    let mut expected: Vec<u32> = model.breakers.keys().copied().collect();
    expected.sort_unstable();
    prop_assert_eq!(keys(registry), expected);
    let pairs = model
        .breakers
        .iter()
        .map(|(k, b)| (registry.get(k).unwrap(), b))
        .chain([(registry.overflow().clone(), &model.overflow)]);
    for (real, b) in pairs {
        let snapshot = real.snapshot();
        prop_assert_eq!(snapshot.successful_calls, b.successes, "{}", real.name());
        prop_assert_eq!(snapshot.failed_calls, b.failures, "{}", real.name());
        let open = snapshot.state == State::Open;
        prop_assert_eq!(open, b.open, "{}", real.name());
    }
    Ok(())
}

type Held = (Route, oneshot::Sender<bool>, Response);

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (mut svc, registry) = keyed(LIMIT);
    let mut model = Model::default();
    let mut held: Vec<Held> = Vec::new();
    for op in ops {
        match op {
            Op::Call(key, ok) => {
                let before = keys(&registry);
                let result = call(&mut svc, key, ok).await;
                let evicted = before.into_iter().find(|k| registry.get(k).is_none());
                let route = model.route(key, evicted)?;
                let breaker = model.breaker(route);
                if breaker.open {
                    prop_assert!(matches!(result, Err(e) if e.is::<BreakerOpen>()));
                } else {
                    prop_assert_eq!(result.is_ok(), ok);
                    model.finish(route, ok);
                }
            }
            Op::Start(key) => {
                let before = keys(&registry);
                let (tx, future) = start(&mut svc, key).await;
                let evicted = before.into_iter().find(|k| registry.get(k).is_none());
                let route = model.route(key, evicted)?;
                let breaker = model.breaker(route);
                if breaker.open {
                    prop_assert!(matches!(future.await, Err(e) if e.is::<BreakerOpen>()));
                } else {
                    breaker.in_flight += 1;
                    held.push((route, tx, future));
                }
            }
            Op::Finish(n, ok) => {
                if held.is_empty() {
                    continue;
                }
                let (route, tx, future) = held.remove(n % held.len());
                tx.send(ok).unwrap();
                let result = future.await;
                prop_assert_eq!(result.is_ok(), ok);
                model.breaker(route).in_flight -= 1;
                model.finish(route, ok);
            }
        }
        check(&registry, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn eviction_keeps_busy_and_open_breakers_and_every_count(ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(ops))?;
    }
}
