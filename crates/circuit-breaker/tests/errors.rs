//! The error model: the tower services return `BoxError` (a boxed `BreakerOpen`, or the inner
//! error as it is), rejections of layers further in are not counted, and the engine's typed
//! error says each thing once.

use std::error::Error as _;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use staunch_circuit_breaker::{
    BreakerOpen, CircuitBreaker, CircuitBreakerError, CircuitBreakerLayer,
    KeyedCircuitBreakerLayer, State,
};
use staunch_core::{
    BoxError, BulkheadFull, BulkheadFullReason, DeadlineExpired, HttpStatus, Rejection,
    rejection_of,
};
use tower::{Layer, Service, ServiceExt, service_fn};

/// Every message of an error's report (the error, then each source), as a reporter prints it.
fn report(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut messages = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        messages.push(e.to_string());
        current = e.source();
    }
    messages
}

fn assert_says_each_thing_once(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let messages = report(err);
    for (i, message) in messages.iter().enumerate() {
        for later in &messages[i + 1..] {
            assert!(
                !message.contains(later.as_str()),
                "`{message}` repeats its source `{later}`"
            );
        }
    }
    messages
}

/// Trips at the first counted failure, and stays open long enough for any test.
fn breaker(name: &str) -> CircuitBreaker {
    CircuitBreaker::builder(name)
        .consecutive_failures(1)
        .open_duration(Duration::from_mins(1))
        .build()
        .unwrap()
}

/// An error type of the user's own, passed through a `BoxError` by a layer further in.
#[derive(Debug, PartialEq, Eq)]
struct Declined {
    code: u32,
}

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "payment declined ({})", self.code)
    }
}

impl std::error::Error for Declined {}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_a_boxed_breaker_open() {
    let breaker = breaker("payment");
    breaker.force_open();
    let svc = CircuitBreakerLayer::new(breaker.clone())
        .layer(service_fn(|()| async { Ok::<(), io::Error>(()) }));
    let err: BoxError = svc.oneshot(()).await.unwrap_err();

    let open = err
        .downcast_ref::<BreakerOpen>()
        .expect("the rejection itself, boxed");
    assert_eq!(open.name(), "payment");
    assert!(
        matches!(rejection_of(&*err), Some(Rejection::BreakerOpen(o)) if o.name() == "payment")
    );
    // Nothing around it: the report is the rejection's own message.
    assert!(err.source().is_none());
    assert_eq!(assert_says_each_thing_once(&*err).len(), 1);

    // The per-key layer too.
    let config = CircuitBreaker::builder("hosts").build_config().unwrap();
    let layer = KeyedCircuitBreakerLayer::new(config, 4, |(): &()| "a".to_owned());
    let registry = layer.registry();
    let svc = layer.layer(service_fn(|()| async { Ok::<(), io::Error>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    registry.get(&"a".to_owned()).unwrap().force_open();
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().map(BreakerOpen::name),
        Some("hosts/a")
    );
}

#[tokio::test(start_paused = true)]
async fn an_inner_error_is_the_inner_error_unchanged() {
    let ledger = breaker("ledger");
    let svc = CircuitBreakerLayer::new(ledger.clone()).layer(service_fn(|()| async {
        Err::<(), _>(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        ))
    }));
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert_eq!(ledger.state(), State::Open, "a failure of the dependency");
    let io = err
        .downcast::<io::Error>()
        .expect("the inner error, not a wrapper");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(io.to_string(), "connection reset by peer");
    assert_eq!(assert_says_each_thing_once(&*io).len(), 1);

    // An inner service that already returns a `BoxError` (a layer further in) is not boxed
    // twice: the user's error type is right there.
    let svc = CircuitBreakerLayer::new(breaker("payment")).layer(service_fn(|()| async {
        Err::<(), BoxError>(Box::new(Declined { code: 51 }))
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Declined>(), Some(&Declined { code: 51 }));
    assert!(err.source().is_none());
}

#[tokio::test(start_paused = true)]
async fn rejections_of_layers_further_in_are_not_counted_by_default() {
    let rejections: Vec<fn() -> BoxError> = vec![
        || {
            Box::new(BulkheadFull::new(
                Arc::from("inventory"),
                1,
                BulkheadFullReason::NoPermit,
            ))
        },
        || Box::new(BreakerOpen::new(Arc::from("inner"), None)),
        || Box::new(DeadlineExpired::new(None)),
    ];
    for rejection in rejections {
        // The default classifier, and one the user chose: both ignore rejections.
        let default = breaker("default");
        let mut svc =
            CircuitBreakerLayer::new(default.clone()).layer(service_fn(move |()| async move {
                Err::<(), _>(rejection())
            }));
        let http = breaker("http");
        let mut with_http = CircuitBreakerLayer::new(http.clone())
            .with_classifier(HttpStatus::new())
            .layer(service_fn(move |()| async move {
                Err::<http::Response<()>, _>(rejection())
            }));
        for _ in 0..3 {
            let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
            assert!(
                rejection_of(&*err).is_some(),
                "passed through as it is: {err}"
            );
            let err = with_http.ready().await.unwrap().call(()).await.unwrap_err();
            assert!(rejection_of(&*err).is_some(), "{err}");
        }
        for b in [&default, &http] {
            let snapshot = b.snapshot();
            assert_eq!(snapshot.state, State::Closed, "{}", rejection());
            assert_eq!(snapshot.failed_calls, 0);
        }
    }

    // The per-key layer ignores them too.
    let config = CircuitBreaker::builder("hosts")
        .consecutive_failures(1)
        .build_config()
        .unwrap();
    let layer = KeyedCircuitBreakerLayer::new(config, 4, |(): &()| "a".to_owned());
    let registry = layer.registry();
    let svc = layer.layer(service_fn(|()| async {
        Err::<(), BoxError>(Box::new(BulkheadFull::new(
            Arc::from("inventory"),
            1,
            BulkheadFullReason::QueueFull,
        )))
    }));
    for _ in 0..3 {
        let err = svc.clone().oneshot(()).await.unwrap_err();
        assert!(err.is::<BulkheadFull>());
    }
    assert_eq!(
        registry.get(&"a".to_owned()).unwrap().state(),
        State::Closed
    );

    // Whereas an error of the dependency is counted.
    let counted = breaker("counted");
    let svc = CircuitBreakerLayer::new(counted.clone()).layer(service_fn(|()| async {
        Err::<(), BoxError>("reset".into())
    }));
    svc.oneshot(()).await.unwrap_err();
    assert_eq!(counted.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_engine_error_says_each_thing_once() {
    let breaker = breaker("inventory");
    let failed = breaker
        .call(async { Err::<(), _>(io::Error::other("connection reset by peer")) })
        .await
        .unwrap_err();
    assert!(matches!(failed, CircuitBreakerError::Inner(_)));
    assert_eq!(
        failed.to_string(),
        "call through the circuit breaker failed"
    );
    assert_eq!(
        failed.source().map(ToString::to_string).as_deref(),
        Some("connection reset by peer"),
        "the cause comes from `source()`, once"
    );
    assert_eq!(
        assert_says_each_thing_once(&failed),
        [
            "call through the circuit breaker failed",
            "connection reset by peer"
        ]
    );

    let rejected = breaker
        .call(async { Ok::<(), io::Error>(()) })
        .await
        .unwrap_err();
    let open = rejected.as_open().expect("the breaker is open").clone();
    let messages = assert_says_each_thing_once(&rejected);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1], open.to_string());

    // Boxed, the engine's error gives what the tower service returns: the inner error, or
    // the rejection, unwrapped.
    let boxed = failed.into_box_error();
    assert_eq!(boxed.to_string(), "connection reset by peer");
    assert!(boxed.is::<io::Error>());
    assert!(rejected.into_box_error().is::<BreakerOpen>());
}
