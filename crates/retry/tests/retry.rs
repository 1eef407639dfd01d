//! The retry layer with paused time: spacing, server hints, idempotency,
//! rejections, cancellation.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use staunch_core::{BreakerOpen, BulkheadFull, BulkheadFullReason};
use staunch_retry::{GiveUpReason, RetryExhausted, RetryLayer, RetryPolicy, Verdict, retry_fn};
use support::{
    BoxError, Calls, DropFlag, gave_up, get, is_annotated, policy, reasons, response,
    response_gave_up,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// A service answering `status` to every call, recording call times.
fn always(
    calls: &Calls,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
) -> impl Service<http::Request<String>, Response = http::Response<()>, Error = BoxError, Future: Send>
+ Clone
+ use<> {
    let calls = calls.clone();
    tower::service_fn(move |_req: http::Request<String>| {
        calls.hit();
        async move { Ok::<_, BoxError>(response(status, headers)) }
    })
}

#[tokio::test(start_paused = true)]
async fn attempts_are_spaced_by_the_backoff_schedule() {
    let calls = Calls::new();
    let r = reasons();
    let backoff = staunch_core::Backoff::exponential(Duration::from_millis(100))
        .jitter(staunch_core::Jitter::None)
        .build()
        .unwrap();
    let policy = policy(&r).max_attempts(4).backoff(backoff).build().unwrap();
    let svc = RetryLayer::new(policy.clone()).layer(always(&calls, 503, &[]));
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 503, "the last response is returned");
    // A response cannot carry an error: the give-up is in its extensions.
    assert_eq!(response_gave_up(&res), Some((4, GiveUpReason::MaxAttempts)));
    assert_eq!(calls.times_ms(), [0, 100, 300, 700]);
    assert_eq!(*r.lock().unwrap(), [GiveUpReason::MaxAttempts]);
    let m = policy.metrics();
    assert_eq!((m.requests, m.retries, m.gave_up), (1, 3, 1));
    assert_eq!(m.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn success_is_returned_without_retry() {
    let calls = Calls::new();
    let r = reasons();
    let policy = policy(&r).build().unwrap();
    let svc = RetryLayer::new(policy.clone()).layer(always(&calls, 200, &[]));
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(response_gave_up(&res), None);
    assert_eq!(calls.count(), 1);
    assert_eq!(policy.metrics().retries, 0);
    // 500 is not retried by default (a bug in the server, not a transient state), and
    // returned untouched.
    let svc = RetryLayer::new(policy.clone()).layer(always(&calls, 500, &[]));
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 500);
    assert_eq!(response_gave_up(&res), None);
    assert_eq!(calls.count(), 2);
    assert!(r.lock().unwrap().is_empty());
}

/// Answers `first` once, then 200.
fn once_then_ok(
    calls: &Calls,
    first: http::Response<()>,
) -> impl Service<http::Request<String>, Response = http::Response<()>, Error = BoxError, Future: Send>
+ Clone
+ use<> {
    let calls = calls.clone();
    let first = Arc::new(std::sync::Mutex::new(Some(first)));
    tower::service_fn(move |_req: http::Request<String>| {
        calls.hit();
        let res = first
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| response(200, &[]));
        async move { Ok::<_, BoxError>(res) }
    })
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_wait_and_a_huge_one_is_capped() {
    let r = reasons();
    let calls = Calls::new();
    let policy = policy(&r)
        .max_retry_after(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = RetryLayer::new(policy.clone())
        .layer(once_then_ok(&calls, response(503, &[("retry-after", "2")])));
    assert_eq!(svc.oneshot(get()).await.unwrap().status(), 200);
    assert_eq!(calls.times_ms(), [0, 2000]);

    let calls = Calls::new();
    let svc = RetryLayer::new(policy).layer(once_then_ok(
        &calls,
        response(429, &[("retry-after", "86400")]),
    ));
    assert_eq!(svc.oneshot(get()).await.unwrap().status(), 200);
    assert_eq!(calls.times_ms(), [0, 5000], "capped at max_retry_after");
}

#[tokio::test(start_paused = true)]
async fn grpc_pushback_sets_the_wait_or_stops_retrying() {
    let r = reasons();
    let calls = Calls::new();
    let policy = policy(&r).build().unwrap();
    let svc = RetryLayer::new(policy.clone()).layer(once_then_ok(
        &calls,
        response(
            200,
            &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "750")],
        ),
    ));
    svc.oneshot(get()).await.unwrap();
    assert_eq!(calls.times_ms(), [0, 750]);

    let calls = Calls::new();
    let svc = RetryLayer::new(policy.clone()).layer(always(
        &calls,
        200,
        &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")],
    ));
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(calls.count(), 1, "a negative pushback stops retrying");
    assert_eq!(*r.lock().unwrap(), [GiveUpReason::ServerPushback]);
    // On the first attempt no retry was made or due: the answer is the server's own.
    assert_eq!(response_gave_up(&res), None);

    // After a retry, the server's "stop" ends the retries: annotated.
    let calls = Calls::new();
    let c = calls.clone();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: http::Request<String>| {
        let res = if c.hit() == 1 {
            response(200, &[("grpc-status", "14")])
        } else {
            response(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")],
            )
        };
        async move { Ok::<_, BoxError>(res) }
    }));
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(calls.count(), 2);
    assert_eq!(
        response_gave_up(&res),
        Some((2, GiveUpReason::ServerPushback))
    );
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_only_with_an_idempotency_key() {
    let r = reasons();
    let policy = policy(&r).build().unwrap();
    let post = |key: bool| {
        let mut b = http::Request::post("http://127.0.0.1/orders");
        if key {
            b = b.header("Idempotency-Key", "order-42");
        }
        b.body(String::from("{}")).unwrap()
    };
    let calls = Calls::new();
    let svc = RetryLayer::new(policy.clone()).layer(always(&calls, 503, &[]));
    let res = svc.clone().oneshot(post(false)).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.count(), 1, "a POST without a key is sent once");
    assert_eq!(response_gave_up(&res), None, "and its answer is untouched");
    let res = svc.oneshot(post(true)).await.unwrap();
    assert_eq!(calls.count(), 4, "with a key it is retried (3 attempts)");
    assert_eq!(response_gave_up(&res), Some((3, GiveUpReason::MaxAttempts)));

    let calls = Calls::new();
    let lenient = support::policy(&r)
        .retry_non_idempotent(true)
        .build()
        .unwrap();
    let svc = RetryLayer::new(lenient).layer(always(&calls, 503, &[]));
    svc.oneshot(post(false)).await.unwrap();
    assert_eq!(calls.count(), 3);
}

#[derive(Debug)]
struct Wrapped(BoxError);
impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("call failed")
    }
}
impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[tokio::test(start_paused = true)]
async fn rejections_are_never_retried_whatever_the_classifier_says() {
    let r = reasons();
    let policy = policy(&r).max_attempts(5).build().unwrap();
    let rejections: Vec<fn() -> BoxError> = vec![
        || Box::new(BreakerOpen::new(Arc::from("payment"), None)),
        || {
            Box::new(Wrapped(Box::new(BreakerOpen::new(
                Arc::from("payment"),
                None,
            ))))
        },
        || {
            Box::new(Wrapped(Box::new(BulkheadFull::new(
                Arc::from("payment"),
                4,
                BulkheadFullReason::NoPermit,
            ))))
        },
    ];
    for make in rejections {
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let svc = RetryLayer::new(policy.clone())
            .classify(retry_fn(|_: Result<&u32, &BoxError>| Verdict::Retry))
            .layer(tower::service_fn(move |_: u32| {
                c.fetch_add(1, Ordering::Relaxed);
                async move { Err::<u32, BoxError>(make()) }
            }));
        let err = svc.oneshot(1).await.unwrap_err();
        assert!(staunch_core::rejection_of(&*err).is_some());
        assert!(!is_annotated(&err), "a rejection comes back untouched");
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
    assert_eq!(*r.lock().unwrap(), [GiveUpReason::Rejected; 3]);
    // The same classifier does retry an ordinary error.
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let svc = RetryLayer::new(policy)
        .classify(retry_fn(|_: Result<&u32, &BoxError>| Verdict::Retry))
        .layer(tower::service_fn(move |_: u32| {
            c.fetch_add(1, Ordering::Relaxed);
            async move { Err::<u32, BoxError>("boom".into()) }
        }));
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(calls.load(Ordering::Relaxed), 5);
    let (annotation, last) = gave_up(&err);
    assert_eq!(annotation, (5, GiveUpReason::MaxAttempts));
    assert_eq!(last.to_string(), "boom");
}

#[tokio::test(start_paused = true)]
async fn a_rejection_after_retries_is_returned_untouched() {
    // A transient failure is retried; the retry meets an open breaker: the rejection comes
    // back as it is, so the caller sees "back off", not "gave up".
    let r = reasons();
    let policy = policy(&r).max_attempts(5).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: u32| {
        let n = c.fetch_add(1, Ordering::Relaxed);
        async move {
            let err: BoxError = if n == 0 {
                Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
            } else {
                Box::new(BreakerOpen::new(Arc::from("payment"), None))
            };
            Err::<u32, BoxError>(err)
        }
    }));
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(err.is::<BreakerOpen>(), "{err:?}");
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn an_outer_retry_layer_does_not_retry_what_an_inner_one_gave_up_on() {
    // Two retry layers of 3 attempts each must not make 9 calls: the inner layer's verdict
    // stands, and the outer one returns it as it is.
    let r = reasons();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let failing = tower::service_fn(move |_: u32| {
        c.fetch_add(1, Ordering::Relaxed);
        async { Err::<u32, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) }
    });
    let inner = RetryLayer::new(policy(&r).max_attempts(3).build().unwrap()).layer(failing);
    let outer_policy = policy(&r).max_attempts(3).build().unwrap();
    let svc = RetryLayer::new(outer_policy.clone()).layer(inner);
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let (annotation, last) = gave_up(&err);
    assert_eq!(
        annotation,
        (3, GiveUpReason::MaxAttempts),
        "the inner verdict"
    );
    assert!(last.downcast_ref::<std::io::Error>().is_some(), "{last:?}");
    assert_eq!(outer_policy.metrics().retries, 0);
    assert_eq!(
        *r.lock().unwrap(),
        [GiveUpReason::MaxAttempts, GiveUpReason::InnerGaveUp]
    );
}

#[tokio::test(start_paused = true)]
async fn connection_errors_are_retried_other_errors_are_not() {
    let r = reasons();
    let policy = policy(&r).build().unwrap();
    for (kind, expected) in [
        (std::io::ErrorKind::ConnectionRefused, 3),
        (std::io::ErrorKind::ConnectionReset, 3),
        (std::io::ErrorKind::InvalidInput, 1),
    ] {
        let calls = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&calls);
        let svc = RetryLayer::new(policy.clone()).layer(tower::service_fn(move |_: u32| {
            c.fetch_add(1, Ordering::Relaxed);
            async move { Err::<u32, _>(std::io::Error::from(kind)) }
        }));
        let err = svc.oneshot(1).await.unwrap_err();
        let original = if expected == 1 {
            // Never retryable: untouched.
            assert!(!is_annotated(&err), "{err:?}");
            &*err as &(dyn std::error::Error + 'static)
        } else {
            let (annotation, last) = gave_up(&err);
            assert_eq!(annotation, (expected, GiveUpReason::MaxAttempts));
            last
        };
        assert_eq!(
            original.downcast_ref::<std::io::Error>().unwrap().kind(),
            kind
        );
        assert_eq!(calls.load(Ordering::Relaxed), expected, "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_during_the_wait_stops_the_retries() {
    let r = reasons();
    let policy = policy(&r).backoff(support::constant(1000)).build().unwrap();
    let calls = Calls::new();
    let mut svc = RetryLayer::new(policy.clone()).layer(always(&calls, 503, &[]));
    let fut = svc.ready().await.unwrap().call(get());
    let outcome = tokio::time::timeout(Duration::from_millis(500), fut).await;
    assert!(outcome.is_err(), "still waiting the backoff");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(calls.count(), 1, "no attempt after the drop");
    assert_eq!(policy.metrics().retries, 1);
    assert_eq!(policy.budget().withdrawn(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_engine_retries_closures_without_tower() {
    let r = reasons();
    let policy = policy(&r).build().unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let out = policy
        .retry(|| async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                n => Ok(n),
            }
        })
        .await
        .unwrap();
    assert_eq!(out, 2);
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    // A custom classifier: retry `Ok(0)` answers.
    let calls = AtomicU32::new(0);
    let out = policy
        .retry_with(
            retry_fn(|r: Result<&u32, &BoxError>| match r {
                Ok(0) => Verdict::Retry,
                _ => Verdict::Done,
            }),
            || async { Ok::<_, BoxError>(calls.fetch_add(1, Ordering::Relaxed)) },
        )
        .await
        .unwrap();
    assert_eq!(out, 1);
}

#[tokio::test(start_paused = true)]
async fn the_engine_annotates_what_it_gave_up_on() {
    let r = reasons();
    let policy = policy(&r).max_attempts(3).build().unwrap();
    let calls = AtomicU32::new(0);
    let err = policy
        .retry(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<u32, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let (annotation, last) = gave_up(&err);
    assert_eq!(annotation, (3, GiveUpReason::MaxAttempts));
    assert_eq!(
        last.downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    assert_eq!(
        err.to_string(),
        "gave up after 3 attempts (max attempts reached)"
    );
    // The annotation is the error itself, boxed once: it takes the original back out.
    let original = err.downcast::<RetryExhausted>().unwrap().into_last();
    assert!(original.is::<std::io::Error>());

    // A response returned after giving up carries the give-up in its extensions.
    let res = policy
        .retry(|| async { Ok::<_, std::io::Error>(response(503, &[])) })
        .await
        .unwrap();
    assert_eq!(response_gave_up(&res), Some((3, GiveUpReason::MaxAttempts)));

    // With a single attempt allowed nothing was retried: the error is untouched.
    let single = support::policy(&r).max_attempts(1).build().unwrap();
    let err = single
        .retry(|| async {
            Err::<u32, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        })
        .await
        .unwrap_err();
    assert!(err.is::<std::io::Error>(), "{err:?}");

    // A custom classifier leaves responses as they are unless it implements `annotate`.
    let res = policy
        .retry_with(
            retry_fn(|r: Result<&http::Response<()>, &BoxError>| match r {
                Ok(res) if res.status() == 503 => Verdict::Retry,
                _ => Verdict::Done,
            }),
            || async { Ok::<_, BoxError>(response(503, &[])) },
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(response_gave_up(&res), None);
}

#[test]
fn invalid_settings_are_config_errors_naming_the_field() {
    let e = RetryPolicy::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(e.field(), "max_attempts");
    let e = RetryPolicy::builder()
        .attempt_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "attempt_timeout");
    let e = RetryPolicy::builder()
        .max_total_time(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_total_time");
    let e = RetryPolicy::builder()
        .max_retry_after(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_retry_after");
    assert!(e.to_string().contains("max_retry_after"));
}

#[tokio::test(start_paused = true)]
async fn one_attempt_never_copies_the_request() {
    // A request whose copy would panic: with max_attempts 1 it must never be copied.
    #[derive(Debug)]
    struct NoCopy;
    impl staunch_retry::RetryRequest for NoCopy {
        fn try_replay(&self) -> Option<Self> {
            panic!("copied a request that cannot be retried")
        }
    }
    let r = reasons();
    let policy = policy(&r).max_attempts(1).build().unwrap();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(|_: NoCopy| async {
        Err::<u32, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }));
    let err = svc.oneshot(NoCopy).await.unwrap_err();
    assert!(err.is::<std::io::Error>());
    // A call that could never be retried holds no policy handle and reports no give-up.
    assert!(r.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn on_retry_sees_every_retry_with_its_wait() {
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&events);
    let r = reasons();
    let policy = policy(&r)
        .max_attempts(3)
        .on_retry(move |e| {
            log.lock()
                .unwrap()
                .push((e.attempt, e.delay, e.server_hint));
        })
        .build()
        .unwrap();
    let calls = Calls::new();
    let c = calls.clone();
    let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: http::Request<String>| {
        let res = match c.hit() {
            1 => response(502, &[]),
            2 => response(503, &[("retry-after", "2")]),
            _ => response(200, &[]),
        };
        async move { Ok::<_, BoxError>(res) }
    }));
    assert_eq!(svc.oneshot(get()).await.unwrap().status(), 200);
    assert_eq!(
        *events.lock().unwrap(),
        [
            (1, Duration::from_millis(100), false),
            (2, Duration::from_secs(2), true)
        ]
    );
    assert_eq!(calls.times_ms(), [0, 100, 2100]);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_attempt_cancels_the_attempt() {
    let r = reasons();
    let policy = policy(&r).build().unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let mut svc = RetryLayer::new(policy.clone()).layer(tower::service_fn(move |_: u32| {
        let guard = DropFlag(Arc::clone(&flag));
        async move {
            tokio::time::sleep(Duration::from_mins(1)).await;
            drop(guard);
            Ok::<u32, BoxError>(0)
        }
    }));
    let fut = svc.ready().await.unwrap().call(1);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), fut)
            .await
            .is_err()
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "the inner future was dropped"
    );
    let m = policy.metrics();
    assert_eq!((m.requests, m.retries, m.gave_up), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_policy_counters() {
    let r = reasons();
    let policy = policy(&r).max_attempts(2).build().unwrap();
    let calls = Calls::new();
    let svc = RetryLayer::new(policy.clone()).layer(always(&calls, 503, &[]));
    let (a, b) = (svc.clone(), svc.clone());
    a.oneshot(get()).await.unwrap();
    b.oneshot(get()).await.unwrap();
    svc.oneshot(get()).await.unwrap();
    let m = policy.metrics();
    assert_eq!((m.requests, m.retries, m.gave_up), (3, 3, 3));
    assert_eq!(calls.count(), 6);
}

#[cfg(feature = "tonic")]
#[tokio::test(start_paused = true)]
async fn the_engine_retries_an_unavailable_grpc_call() {
    let r = reasons();
    let policy = policy(&r).build().unwrap();
    let calls = AtomicU32::new(0);
    let res = policy
        .retry(|| async {
            if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                Err(tonic::Status::unavailable("restarting"))
            } else {
                Ok(tonic::Response::new(7u32))
            }
        })
        .await
        .unwrap();
    assert_eq!(res.into_inner(), 7);
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    // A business error is returned at once.
    let calls = AtomicU32::new(0);
    let err = policy
        .retry(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<tonic::Response<u32>, _>(tonic::Status::not_found("no such order"))
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<tonic::Status>().unwrap().code(),
        tonic::Code::NotFound
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

/// A service counting its clones; it fails the first `failures` calls with a 503.
struct Counted {
    clones: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
    failures: u32,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: Arc::clone(&self.clones),
            calls: Arc::clone(&self.calls),
            failures: self.failures,
        }
    }
}

impl Service<http::Request<String>> for Counted {
    type Response = http::Response<()>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<http::Response<()>, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<String>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let status = if n < self.failures { 503 } else { 200 };
        std::future::ready(Ok(response(status, &[])))
    }
}

#[tokio::test(start_paused = true)]
async fn only_a_call_that_may_be_retried_clones_the_inner_service() {
    let r = reasons();
    let clones = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let inner = Counted {
        clones: Arc::clone(&clones),
        calls: Arc::clone(&calls),
        failures: 1,
    };
    let mut svc = RetryLayer::new(policy(&r).build().unwrap()).layer(inner);
    // The layer keeps no clone of its own.
    assert_eq!(clones.load(Ordering::SeqCst), 0);

    // A GET may be retried: its call clones the service that made it, once, and the retry
    // goes through that clone.
    let res = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(clones.load(Ordering::SeqCst), 1);
    for _ in 0..10 {
        let res = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 12);
    assert_eq!(clones.load(Ordering::SeqCst), 11);

    // A POST without an idempotency key is never retried: nothing is cloned for it.
    for _ in 0..10 {
        let post = http::Request::post("http://dep/orders")
            .body(String::new())
            .unwrap();
        svc.ready().await.unwrap().call(post).await.unwrap();
    }
    assert_eq!(clones.load(Ordering::SeqCst), 11);

    // Nor with a single attempt allowed.
    let mut once = RetryLayer::new(policy(&r).max_attempts(1).build().unwrap()).layer(Counted {
        clones: Arc::clone(&clones),
        calls: Arc::clone(&calls),
        failures: 0,
    });
    for _ in 0..10 {
        once.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert_eq!(clones.load(Ordering::SeqCst), 11);
}

#[tokio::test(start_paused = true)]
async fn a_response_is_classified_once_per_attempt() {
    let r = reasons();
    let classified = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&classified);
    // Retries the first response it sees, whatever it is; a second look would see `Done`.
    let classify = retry_fn(move |_: Result<&http::Response<()>, &BoxError>| {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            Verdict::Retry
        } else {
            Verdict::Done
        }
    });
    let calls = Calls::new();
    let svc = RetryLayer::new(policy(&r).build().unwrap())
        .classify(classify)
        .layer(always(&calls, 200, &[]));
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    // The first response was retried, the second returned: one classification each.
    assert_eq!(calls.times_ms().len(), 2);
    assert_eq!(classified.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_cannot_be_retried_is_not_classified() {
    let r = reasons();
    let classified = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&classified);
    let classify = retry_fn(move |_: Result<&http::Response<()>, &BoxError>| {
        count.fetch_add(1, Ordering::SeqCst);
        Verdict::Retry
    });
    let calls = Calls::new();
    let svc = RetryLayer::new(policy(&r).build().unwrap())
        .classify(classify)
        .layer(always(&calls, 503, &[]));
    // A POST without an idempotency key is sent once and its response returned as it is.
    let post = http::Request::post("http://dep/orders")
        .body(String::new())
        .unwrap();
    let res = svc.oneshot(post).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.times_ms().len(), 1);
    assert_eq!(classified.load(Ordering::SeqCst), 0);
}

/// A future that is pending for its first `pending` polls, counting every poll.
struct CountedPolls {
    polls: Arc<AtomicU32>,
    pending: u32,
}

impl std::future::Future for CountedPolls {
    type Output = Result<http::Response<()>, BoxError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let n = self.polls.fetch_add(1, Ordering::SeqCst);
        if n < self.pending {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Ok(response(200, &[])))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_attempt_is_polled_once_per_poll_of_the_call() {
    let r = reasons();
    for timed in [false, true] {
        let mut policy = policy(&r);
        if timed {
            policy = policy
                .attempt_timeout(Duration::from_secs(1))
                .max_total_time(Duration::from_secs(5));
        }
        let polls = Arc::new(AtomicU32::new(0));
        let p = Arc::clone(&polls);
        let mut svc = RetryLayer::new(policy.build().unwrap()).layer(tower::service_fn(
            move |_: http::Request<String>| CountedPolls {
                polls: Arc::clone(&p),
                pending: 2,
            },
        ));
        let mut call = std::pin::pin!(svc.ready().await.unwrap().call(get()));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        for expected in 1..=2 {
            assert!(call.as_mut().poll(&mut cx).is_pending());
            assert_eq!(polls.load(Ordering::SeqCst), expected, "timed: {timed}");
        }
        let res = call.as_mut().poll(&mut cx);
        assert!(matches!(res, std::task::Poll::Ready(Ok(ref r)) if r.status() == 200));
        assert_eq!(polls.load(Ordering::SeqCst), 3, "timed: {timed}");
    }
}
