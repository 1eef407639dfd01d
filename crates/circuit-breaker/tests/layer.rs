//! The tower layer: readiness, rejection from `call`, classifiers, cancellation, errors.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use staunch_circuit_breaker::{
    BreakerOpen, CircuitBreaker, CircuitBreakerError, CircuitBreakerLayer, State,
};
use staunch_core::{AnyError, HttpStatus, Outcome, Rejection, rejection_of};
use tower::{BoxError, Layer, Service, ServiceExt};

fn counting_service(
    hits: Arc<AtomicUsize>,
    status: u16,
) -> impl Service<(), Response = http::Response<()>, Error = Infallible, Future: Send> + Clone {
    tower::service_fn(move |()| {
        hits.fetch_add(1, Ordering::SeqCst);
        async move { Ok(http::Response::builder().status(status).body(()).unwrap()) }
    })
}

#[tokio::test(start_paused = true)]
async fn poll_ready_never_fails_and_open_rejects_in_call_without_calling_inner() {
    let breaker = CircuitBreaker::builder("inventory").build().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .with_classifier(HttpStatus::new())
        .layer(counting_service(hits.clone(), 200));
    breaker.force_open();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().map(BreakerOpen::name),
        Some("inventory")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    breaker.reset();
    let ok = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn http_classifier_counts_5xx_and_429_but_not_4xx() {
    let build = || {
        CircuitBreaker::builder("payment")
            .count_window(10)
            .minimum_calls(5)
            .build()
            .unwrap()
    };
    for (status, trips) in [
        (500, true),
        (503, true),
        (429, true),
        (404, false),
        (200, false),
    ] {
        let breaker = build();
        let hits = Arc::new(AtomicUsize::new(0));
        let mut svc = CircuitBreakerLayer::new(breaker.clone())
            .with_classifier(HttpStatus::new())
            .layer(counting_service(hits, status));
        for _ in 0..5 {
            let response = svc.ready().await.unwrap().call(()).await.unwrap();
            assert_eq!(
                response.status(),
                status,
                "responses pass through unchanged"
            );
        }
        assert_eq!(breaker.state() == State::Open, trips, "status {status}");
    }
}

#[tokio::test(start_paused = true)]
async fn rejections_convert_into_box_error_and_are_recognised() {
    let breaker = CircuitBreaker::builder("ledger").build().unwrap();
    breaker.force_open();
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(tower::service_fn(|()| async {
        Ok::<(), std::io::Error>(())
    }));
    let boxed: BoxError = svc.oneshot(()).await.unwrap_err();
    assert!(boxed.is::<BreakerOpen>());
    match rejection_of(&*boxed) {
        Some(Rejection::BreakerOpen(open)) => assert_eq!(open.name(), "ledger"),
        other => panic!("expected a breaker rejection, got {other:?}"),
    }
    assert!(boxed.to_string().contains("ledger"), "{boxed}");

    // An inner `BoxError` (e.g. from a timeout layer below) boxes without a second layer.
    let inner: CircuitBreakerError<BoxError> = CircuitBreakerError::Inner("slow".into());
    assert_eq!(inner.into_box_error().to_string(), "slow");
    let open: CircuitBreakerError<BoxError> = CircuitBreakerError::Open(BreakerOpen::new(
        Arc::from("x"),
        Some(Duration::from_secs(1)),
    ));
    assert!(open.into_box_error().is::<BreakerOpen>());

    // An inner error that is itself a rejection is still found through our error.
    let nested: CircuitBreakerError<BreakerOpen> =
        CircuitBreakerError::Inner(BreakerOpen::new(Arc::from("inner"), None));
    let boxed: BoxError = nested.into();
    assert!(
        matches!(rejection_of(&*boxed), Some(Rejection::BreakerOpen(b)) if b.name() == "inner")
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_counts_as_the_classifier_says() {
    let pending = || tower::service_fn(|()| std::future::pending::<Result<(), std::io::Error>>());
    // Default: a cancelled call is ignored.
    let breaker = CircuitBreaker::builder("t")
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(pending());
    for _ in 0..4 {
        let mut fut = pin!(svc.call(()));
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
    }
    assert_eq!(breaker.snapshot().calls_in_window, 0);
    assert_eq!(breaker.state(), State::Closed);
    // A caller whose own deadline means "too slow" can count cancellation as a failure.
    let breaker = CircuitBreaker::builder("t")
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .with_classifier(AnyError::new().cancelled_as(Outcome::Failure))
        .layer(pending());
    for _ in 0..2 {
        drop(svc.call(()));
    }
    assert_eq!(breaker.snapshot().failed_calls, 2);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn engine_call_without_tower() {
    let breaker = CircuitBreaker::builder("t")
        .count_window(2)
        .minimum_calls(2)
        .failure_rate_threshold(100.0)
        .build()
        .unwrap();
    assert_eq!(
        breaker
            .call(async { Ok::<_, std::io::Error>(7) })
            .await
            .unwrap(),
        7
    );
    for _ in 0..2 {
        let err = breaker
            .call(async { Err::<(), _>(std::io::Error::other("down")) })
            .await
            .unwrap_err();
        assert_eq!(err.into_inner().unwrap().to_string(), "down");
    }
    let polled = Arc::new(AtomicUsize::new(0));
    let p = polled.clone();
    let rejected = breaker
        .call(async move {
            p.fetch_add(1, Ordering::SeqCst);
            Ok::<(), std::io::Error>(())
        })
        .await;
    assert!(rejected.unwrap_err().is_open());
    assert_eq!(
        polled.load(Ordering::SeqCst),
        0,
        "a rejected call's future is never polled"
    );
}

#[test]
fn invalid_settings_fail_at_build_naming_the_field() {
    let field = |b: staunch_circuit_breaker::CircuitBreakerBuilder| {
        b.build().unwrap_err().field().to_string()
    };
    let b = || CircuitBreaker::builder("pay");
    assert_eq!(
        field(b().failure_rate_threshold(0.0)),
        "pay.failure_rate_threshold"
    );
    assert_eq!(
        field(b().failure_rate_threshold(150.0)),
        "pay.failure_rate_threshold"
    );
    assert_eq!(
        field(b().failure_rate_threshold(f64::NAN)),
        "pay.failure_rate_threshold"
    );
    assert_eq!(
        field(b().slow_call_rate_threshold(-1.0)),
        "pay.slow_call_rate_threshold"
    );
    assert_eq!(field(b().count_window(0)), "pay.sliding_window.size");
    assert_eq!(
        field(b().time_window(Duration::ZERO, 10)),
        "pay.sliding_window.duration"
    );
    assert_eq!(
        field(b().time_window(Duration::from_secs(1), 0)),
        "pay.sliding_window.buckets"
    );
    assert_eq!(
        field(b().time_window(Duration::from_secs(10), 129)),
        "pay.sliding_window.buckets"
    );
    assert_eq!(
        field(b().time_window(Duration::from_millis(100), 200)),
        "pay.sliding_window.buckets"
    );
    assert_eq!(field(b().minimum_calls(0)), "pay.minimum_calls");
    assert_eq!(
        field(b().count_window(10).minimum_calls(11)),
        "pay.minimum_calls"
    );
    assert_eq!(
        field(b().consecutive_failures(0)),
        "pay.consecutive_failures"
    );
    assert_eq!(
        field(b().open_duration(Duration::ZERO)),
        "pay.open_duration"
    );
    assert_eq!(
        field(b().slow_call_duration(Duration::ZERO)),
        "pay.slow_call_duration"
    );
    assert_eq!(
        field(b().permitted_calls_in_half_open(0)),
        "pay.permitted_calls_in_half_open"
    );
    assert_eq!(
        field(b().max_half_open_duration(Duration::ZERO)),
        "pay.max_half_open_duration"
    );
    assert_eq!(field(b().event_capacity(0)), "pay.event_capacity");
    assert_eq!(field(CircuitBreaker::builder("")), "name");
    let err = b().failure_rate_threshold(150.0).build().unwrap_err();
    assert!(err.to_string().contains("(0, 100]"), "{err}");
    assert!(b().build().is_ok());
}

/// A service that is ready only while its gate is open, counting readiness polls and calls.
#[derive(Clone)]
struct Gate {
    open: Arc<std::sync::atomic::AtomicBool>,
    polls: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Gate {
    fn closed() -> Self {
        Self {
            open: Arc::default(),
            polls: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

impl Service<()> for Gate {
    type Response = ();
    type Error = Infallible;
    type Future = std::future::Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, (): ()) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_rejecting_breaker_is_ready_without_waiting_for_the_inner_service() {
    // The inner service stands for a full bulkhead: never ready. A call the breaker is going
    // to refuse must not wait for it.
    let breaker = CircuitBreaker::builder("payment")
        .count_window(4)
        .minimum_calls(2)
        .open_duration(Duration::from_secs(10))
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap();
    let gate = Gate::closed();
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(gate.clone());
    let mut cx = Context::from_waker(Waker::noop());

    // Closed: readiness is the inner service's.
    assert!(svc.poll_ready(&mut cx).is_pending());
    assert_eq!(gate.polls(), 1);

    // Open and waiting: ready at once, inner not polled, and the call is rejected with the
    // wait that is left.
    breaker.try_acquire().unwrap().failure();
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), State::Open);
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(gate.polls(), 1, "the inner service was polled");
    let err = svc.call(()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BreakerOpen>()
            .and_then(BreakerOpen::retry_after),
        Some(Duration::from_secs(6))
    );
    assert_eq!(gate.calls.load(Ordering::SeqCst), 0);
    assert_eq!(breaker.snapshot().rejected_calls, 1, "counted once");

    // The wait is over: the next call may be a probe, so readiness is the inner service's
    // again (and nothing moved to half-open yet: that happens when a call is made).
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(svc.poll_ready(&mut cx).is_pending());
    assert_eq!(gate.polls(), 2);

    // Half-open with its only probe slot taken: rejecting again, without polling.
    let probe = breaker.try_acquire().unwrap();
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(gate.polls(), 2);
    assert!(svc.call(()).await.unwrap_err().is::<BreakerOpen>());
    // The probe slot comes back when the probe is dropped: readiness is the inner's again.
    drop(probe);
    assert!(svc.poll_ready(&mut cx).is_pending());
    assert_eq!(gate.polls(), 3);

    // A skipped readiness is not inherited by a clone, and once the breaker admits calls
    // again a ready inner service is called.
    breaker.force_open();
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    breaker.reset();
    gate.open.store(true, Ordering::SeqCst);
    let mut clone = svc.clone();
    clone.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    // The original still owes a rejection for the readiness it skipped.
    assert!(svc.call(()).await.unwrap_err().is::<BreakerOpen>());
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
}
