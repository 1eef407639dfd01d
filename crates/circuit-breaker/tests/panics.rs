//! A dependency client that panics is failing: a panic while polling a call counts as a
//! failure (through the layer, `breaker.call(fut)` and per-key breakers), and the panic still
//! reaches the caller unchanged.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use staunch_circuit_breaker::{
    BreakerOpen, CircuitBreaker, CircuitBreakerLayer, KeyedCircuitBreakerLayer, State,
};
use tower::{Layer, Service, ServiceExt, service_fn};

const MESSAGE: &str = "the client has a bug";

async fn panics(_: http::Request<()>) -> Result<(), std::io::Error> {
    panic!("{MESSAGE}")
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder("dep")
        .consecutive_failures(3)
        .build()
        .unwrap()
}

/// Runs `fut`, which must panic, and returns the panic's message.
async fn panic_of<F: Future>(fut: F) -> String {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(_) => panic!("the call did not panic"),
        Err(payload) => match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .unwrap_or_default(),
        },
    }
}

#[tokio::test(start_paused = true)]
async fn panicking_calls_through_the_layer_open_the_breaker() {
    let breaker = breaker();
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(panics));
    for n in 1..=3 {
        let call = svc.ready().await.unwrap().call(http::Request::new(()));
        assert_eq!(
            panic_of(call).await,
            MESSAGE,
            "the panic reaches the caller"
        );
        assert_eq!(breaker.snapshot().failed_calls, n);
    }
    assert_eq!(breaker.state(), State::Open);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<BreakerOpen>(), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn breaker_call_counts_a_panic_as_a_failure() {
    let breaker = breaker();
    for _ in 0..3 {
        let message = panic_of(breaker.call(panics(http::Request::new(())))).await;
        assert_eq!(message, MESSAGE);
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.snapshot().failed_calls, 3);
}

#[tokio::test(start_paused = true)]
async fn per_key_breakers_count_panics() {
    let config = CircuitBreaker::builder("hosts")
        .consecutive_failures(3)
        .build_config()
        .unwrap();
    let layer = KeyedCircuitBreakerLayer::new(config, 8, |_: &http::Request<()>| "a".to_owned());
    let registry = layer.registry();
    let mut svc = layer.layer(service_fn(panics));
    for _ in 0..3 {
        let call = svc.ready().await.unwrap().call(http::Request::new(()));
        assert_eq!(panic_of(call).await, MESSAGE);
    }
    let breaker = registry.get(&"a".to_owned()).expect("the key's breaker");
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_without_panicking_is_still_only_cancelled() {
    let breaker = breaker();
    for _ in 0..3 {
        drop(breaker.call(std::future::pending::<Result<(), std::io::Error>>()));
    }
    assert_eq!(breaker.snapshot().failed_calls, 0);
    assert_eq!(breaker.state(), State::Closed);
}
