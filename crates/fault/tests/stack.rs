//! Innermost in a stack, the faults are the dependency's own for every other layer: the
//! retry layer retries aborts (connection failures) and the circuit breaker counts faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use staunch_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, State};
use staunch_fault::{FaultConfig, FaultInjected, FaultLayer};
use staunch_retry::{RetryLayer, RetryPolicy};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn the_retry_layer_retries_aborts_and_the_breaker_counts_them() {
    let faults = FaultConfig::none()
        .with_abort(0.5)
        .with_seed(12)
        .build("payment")
        .unwrap();
    let breaker = CircuitBreaker::builder("payment").build().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&sent);
    let policy = RetryPolicy::builder().max_attempts(10).build().unwrap();
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .layer(FaultLayer::new(faults.clone()))
        .service(service_fn(move |q: u32| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(q) }
        }));
    for q in 0..5 {
        assert_eq!(client.ready().await.unwrap().call(q).await.unwrap(), q);
    }
    let m = faults.metrics();
    assert!(m.aborts > 0, "seed 12 aborts some attempts");
    assert_eq!(m.calls, m.aborts + 5, "each abort was retried");
    assert_eq!(sent.load(Ordering::SeqCst), 5);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.failed_calls, m.aborts);
    assert_eq!(snapshot.successful_calls, 5);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opens_on_injected_errors() {
    let faults = FaultConfig::none().build("payment").unwrap();
    let breaker = CircuitBreaker::builder("payment")
        .count_window(10)
        .minimum_calls(10)
        .build()
        .unwrap();
    let mut client = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .layer(FaultLayer::new(faults.clone()))
        .service(service_fn(
            |q: u32| async move { Ok::<_, std::io::Error>(q) },
        ));
    faults
        .set(FaultConfig::error().with_error(1.0, 503))
        .unwrap();
    for q in 0..10 {
        let err = client.ready().await.unwrap().call(q).await.unwrap_err();
        assert!(err.is::<FaultInjected>(), "{err}");
    }
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn an_abort_is_a_connection_abort_and_an_error_has_no_source() {
    use std::error::Error;
    let abort = FaultInjected::abort("p".into());
    let io = abort
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("an io::Error source");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionAborted);
    assert_eq!(abort.clone(), abort);
    assert!(abort.clone().source().is_some());
    assert!(FaultInjected::error("p".into(), 503).source().is_none());
    assert!(staunch_retry::is_transient(&abort));
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn the_retry_layer_retries_injected_503_responses() {
    use bytes::Bytes;
    use http_body_util::Full;
    use staunch_fault::HttpFaultLayer;

    let faults = FaultConfig::none()
        .with_error(0.5, 503)
        .with_seed(5)
        .build("payment")
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&sent);
    let policy = RetryPolicy::builder().max_attempts(10).build().unwrap();
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(HttpFaultLayer::new(faults.clone()))
        .service(service_fn(move |_: http::Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from("ok")))) }
        }));
    for _ in 0..5 {
        let req = http::Request::get("http://payment/charges/7")
            .body(())
            .unwrap();
        let res = client.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let m = faults.metrics();
    assert!(m.errors > 0, "seed 5 fails some attempts");
    assert_eq!(m.calls, m.errors + 5, "each 503 was retried");
    assert_eq!(sent.load(Ordering::SeqCst), 5);
}
