//! Per-key breakers: isolated per key, created lazily, bounded in number.

use std::time::Duration;

use staunch_circuit_breaker::{BreakerOpen, CircuitBreaker, KeyedCircuitBreakerLayer, State};
use staunch_core::HttpStatus;
use tower::{Layer, ServiceExt};

fn request(host: &str) -> http::Request<()> {
    http::Request::get(format!("http://{host}/"))
        .body(())
        .unwrap()
}

/// Answers 503 for `down.internal` and 200 for every other host.
fn upstream() -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<()>,
    Error = std::io::Error,
    Future: Send,
> + Clone {
    tower::service_fn(|req: http::Request<()>| async move {
        let status = if req.uri().host() == Some("down.internal") {
            503
        } else {
            200
        };
        Ok(http::Response::builder().status(status).body(()).unwrap())
    })
}

type ByHost = fn(&http::Request<()>) -> String;

fn layer(max: usize) -> KeyedCircuitBreakerLayer<String, ByHost, HttpStatus> {
    let config = CircuitBreaker::builder("upstream")
        .count_window(4)
        .minimum_calls(4)
        .open_duration(Duration::from_mins(1))
        .build_config()
        .unwrap();
    let key: ByHost = |req| {
        req.uri()
            .authority()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    KeyedCircuitBreakerLayer::new(config, max, key).with_classifier(HttpStatus::new())
}

#[tokio::test(start_paused = true)]
async fn a_failing_host_opens_only_its_own_breaker() {
    let layer = layer(16);
    let registry = layer.registry();
    assert!(registry.is_empty(), "breakers are created lazily");
    let svc = layer.layer(upstream());
    for _ in 0..4 {
        svc.clone().oneshot(request("down.internal")).await.unwrap();
        svc.clone().oneshot(request("up.internal")).await.unwrap();
    }
    let down = registry.get(&"down.internal".to_string()).unwrap();
    let up = registry.get(&"up.internal".to_string()).unwrap();
    assert_eq!((down.state(), up.state()), (State::Open, State::Closed));
    assert_eq!(down.name(), "upstream/down.internal");
    let err = svc
        .clone()
        .oneshot(request("down.internal"))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().name(),
        "upstream/down.internal"
    );
    assert!(svc.clone().oneshot(request("up.internal")).await.is_ok());
    assert_eq!(registry.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn keys_past_the_bound_share_the_overflow_breaker_while_no_breaker_is_idle() {
    let layer = layer(2);
    let registry = layer.registry();
    let svc = layer.layer(upstream());
    // Handles kept outside the registry pin `a` and `b`: they cannot be evicted.
    let mut pinned = Vec::new();
    for host in ["a.internal", "b.internal", "c.internal", "down.internal"] {
        svc.clone().oneshot(request(host)).await.unwrap();
        pinned.extend(registry.get(&host.to_string()));
    }
    assert_eq!(pinned.len(), 2);
    assert_eq!(registry.len(), 2, "never more than the bound");
    assert!(registry.get(&"c.internal".to_string()).is_none());
    assert_eq!(registry.overflow().name(), "upstream/overflow");
    assert_eq!(registry.overflow().snapshot().calls_in_window, 2);
    // The overflow breaker still protects: `down.internal` failures trip it for the overflow keys.
    for _ in 0..2 {
        svc.clone().oneshot(request("down.internal")).await.unwrap();
    }
    assert_eq!(
        registry.overflow().state(),
        State::Open,
        "3 of its 4 calls failed"
    );
    let err = svc
        .clone()
        .oneshot(request("c.internal"))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().name(),
        "upstream/overflow"
    );
    assert!(
        svc.clone().oneshot(request("a.internal")).await.is_ok(),
        "keys with their own breaker are unaffected"
    );
}
