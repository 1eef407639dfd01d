//! The timeout layer and engine with paused time: limits, overrides, deadlines, the lazy timer
//! and cancellation.

mod support;

use std::future::{Future, pending, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use staunch_timeout::{
    BoxError, Deadline, Elapsed, RequestLimits, TimeLimit, TimeoutLayer, TimeoutOverride,
};
use support::Probe;
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

const LIMIT: Duration = Duration::from_millis(500);

/// A service that answers after `delay` (on the paused clock), counting calls and drops.
fn slow(
    probe: &Probe,
    delay: Duration,
) -> impl Service<http::Request<()>, Response = &'static str, Error = BoxError, Future: Send> + Clone
{
    let probe = probe.clone();
    service_fn(move |_req: http::Request<()>| {
        probe.watch(async move {
            sleep(delay).await;
            Ok::<_, BoxError>("done")
        })
    })
}

fn elapsed_of(err: &BoxError) -> Elapsed {
    *err.downcast_ref::<Elapsed>()
        .unwrap_or_else(|| panic!("expected Elapsed, got {err}"))
}

#[tokio::test(start_paused = true)]
async fn fires_exactly_at_the_limit() {
    let probe = Probe::default();
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(slow(&probe, Duration::from_mins(1)));
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), LIMIT);
    assert!(err.is::<Elapsed>());
    assert_eq!(elapsed_of(&err).limit(), LIMIT);
    assert_eq!(err.to_string(), "call timed out after 500ms");
    // The inner call was cancelled, not left running.
    assert_eq!((probe.calls(), probe.dropped_unfinished()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn an_answer_within_the_limit_passes_through() {
    let probe = Probe::default();
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(slow(&probe, Duration::from_millis(499)));
    let answer = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await;
    assert_eq!(answer.unwrap(), "done");
    assert_eq!(probe.dropped_unfinished(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_answer_ready_when_the_limit_passes_wins() {
    // Both the inner sleep and the timer are due at the same instant; the inner future is
    // polled first, so its answer is returned rather than discarded.
    let probe = Probe::default();
    let mut svc = TimeoutLayer::new(LIMIT).unwrap().layer(slow(&probe, LIMIT));
    let answer = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await;
    assert_eq!(answer.unwrap(), "done");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_boxed() {
    let mut svc =
        TimeoutLayer::new(LIMIT)
            .unwrap()
            .layer(service_fn(|_req: http::Request<()>| async {
                Err::<(), _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "refused",
                ))
            }));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert!(!err.is::<Elapsed>());
    assert_eq!(
        err.downcast_ref::<std::io::Error>().unwrap().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

#[tokio::test(start_paused = true)]
async fn a_per_request_override_replaces_the_limit_both_ways() {
    let probe = Probe::default();
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(slow(&probe, Duration::from_secs(2)));

    // Shorter than the configured limit.
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(TimeoutOverride(Duration::from_millis(50)));
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(elapsed_of(&err).limit(), Duration::from_millis(50));

    // Longer than the configured limit: the 2 s answer now fits.
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(TimeoutOverride(Duration::from_secs(3)));
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(req).await.unwrap(), "done");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_limit_wins_and_is_reported() {
    let probe = Probe::default();
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(slow(&probe, Duration::from_mins(1)));
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(120)));
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(120));
    assert_eq!(elapsed_of(&err).limit(), Duration::from_millis(120));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_later_than_the_limit_does_not_extend_it() {
    let probe = Probe::default();
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(slow(&probe, Duration::from_mins(1)));
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(30)));
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert_eq!(start.elapsed(), LIMIT);
    assert_eq!(elapsed_of(&err).limit(), LIMIT);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_also_caps_an_override() {
    let probe = Probe::default();
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(slow(&probe, Duration::from_mins(1)));
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(TimeoutOverride(Duration::from_secs(10)));
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(1)));
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(elapsed_of(&err).limit(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_is_refused_without_calling_the_inner_service() {
    let probe = Probe::default();
    let limit = TimeLimit::builder()
        .limit(LIMIT)
        .name("downstream")
        .build()
        .unwrap();
    let mut svc = TimeoutLayer::from_limit(limit.clone()).layer(slow(&probe, Duration::ZERO));
    let deadline = Deadline::after(Duration::from_millis(10));
    tokio::time::advance(Duration::from_millis(10)).await;
    let mut req = http::Request::new(());
    req.extensions_mut().insert(deadline);
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    // Refused, not timed out: a rejection naming the limit, counted apart from timeouts.
    let refused = err
        .downcast_ref::<staunch_core::DeadlineExpired>()
        .expect("a DeadlineExpired rejection");
    assert_eq!(refused.name(), Some("downstream"));
    assert!(!err.is::<Elapsed>());
    assert_eq!(probe.calls(), 0);
    let metrics = limit.metrics().unwrap();
    assert_eq!((metrics.elapsed, metrics.refused), (0, 1));
}

/// Polls `fut` once with a no-op waker, outside any tokio runtime.
fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut fut = pin!(fut);
    fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn an_inner_future_ready_at_once_never_touches_the_timer() {
    // No tokio runtime here: creating a `Sleep` would panic ("there is no reactor running").
    // The named limit also counts armed timers.
    let limit = TimeLimit::builder()
        .limit(LIMIT)
        .name("fast")
        .build()
        .unwrap();
    let mut svc = TimeoutLayer::from_limit(limit.clone())
        .ignore_request()
        .layer(service_fn(|x: u64| ready(Ok::<_, BoxError>(x + 1))));
    for i in 0..100 {
        assert!(matches!(poll_once(svc.call(i)), Poll::Ready(Ok(v)) if v == i + 1));
    }
    // With an override and a (future) deadline on an http request too.
    let mut http_svc =
        TimeoutLayer::from_limit(limit.clone()).layer(service_fn(|_req: http::Request<()>| {
            ready(Ok::<_, BoxError>("ok"))
        }));
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(TimeoutOverride(Duration::from_millis(1)));
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(1)));
    assert!(matches!(
        poll_once(http_svc.call(req)),
        Poll::Ready(Ok("ok"))
    ));
    assert_eq!(limit.metrics().unwrap().timers_armed, 0);
}

#[test]
#[should_panic(expected = "runtime")]
fn a_pending_inner_future_arms_the_timer() {
    // The counterpart of the test above: the same setup with a pending inner future does
    // create a `Sleep`, which panics outside a runtime. This proves the test above would catch
    // an eagerly armed timer.
    let limit = TimeLimit::new(LIMIT).unwrap();
    let _ = poll_once(limit.run(pending::<()>()));
}

#[tokio::test(start_paused = true)]
async fn the_limit_counts_from_the_first_pending_poll() {
    let limit = TimeLimit::builder()
        .limit(LIMIT)
        .name("lazy")
        .build()
        .unwrap();
    // The inner work takes 700 ms from its first poll.
    let fut = limit.run(async { sleep(Duration::from_millis(700)).await });
    // Time spent before the first poll is not charged to the call.
    tokio::time::advance(Duration::from_millis(400)).await;
    let start = Instant::now();
    let result = fut.await;
    assert_eq!(result, Err(Elapsed::new(LIMIT)));
    assert_eq!(start.elapsed(), LIMIT);
    assert_eq!(limit.metrics().unwrap().timers_armed, 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_mid_flight_cancels_the_inner_future_and_its_timer() {
    let probe = Probe::default();
    let limit = TimeLimit::builder()
        .limit(LIMIT)
        .name("cancel")
        .build()
        .unwrap();
    let mut svc =
        TimeoutLayer::from_limit(limit.clone()).layer(slow(&probe, Duration::from_mins(1)));

    // Dropped while waiting, after the timer was armed.
    let call = svc.ready().await.unwrap().call(http::Request::new(()));
    let raced = tokio::time::timeout(Duration::from_millis(100), call).await;
    assert!(
        raced.is_err(),
        "the outer timeout fires first and drops the call"
    );
    assert_eq!((probe.calls(), probe.dropped_unfinished()), (1, 1));

    // Dropped before it was ever polled.
    drop(svc.ready().await.unwrap().call(http::Request::new(())));
    assert_eq!((probe.calls(), probe.dropped_unfinished()), (2, 2));

    // Nothing fires later for the dropped calls, and the layer keeps working.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(limit.metrics().unwrap().elapsed, 0);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(limit.metrics().unwrap().elapsed, 1);
}

#[tokio::test(start_paused = true)]
async fn the_engine_honours_overrides_and_deadlines_without_tower() {
    let limit = TimeLimit::new(LIMIT).unwrap();
    let start = Instant::now();
    let out = limit
        .run_with(
            RequestLimits::limit(Duration::from_millis(30)),
            pending::<()>(),
        )
        .await;
    assert_eq!(out, Err(Elapsed::new(Duration::from_millis(30))));
    assert_eq!(start.elapsed(), Duration::from_millis(30));

    let deadline = Deadline::after(Duration::from_millis(70));
    tokio::time::advance(Duration::from_millis(20)).await;
    let out = limit.run_until(deadline, pending::<()>()).await;
    // The limit reported is what was left of the deadline when the wait began.
    assert_eq!(out, Err(Elapsed::new(Duration::from_millis(50))));
    assert_eq!(Instant::now(), deadline.instant());

    // An already expired deadline still lets a ready future finish: it is polled first.
    assert_eq!(limit.run_until(deadline, async { 5 }).await, Ok(5));
    assert_eq!(
        limit.run_until(deadline, pending::<()>()).await,
        Err(Elapsed::new(Duration::ZERO))
    );
}

#[tokio::test(start_paused = true)]
async fn ignore_request_works_with_any_request_type_and_ignores_nothing_else() {
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .ignore_request()
        .layer(service_fn(|d: Duration| async move {
            sleep(d).await;
            Ok::<_, BoxError>(d)
        }));
    let ok = svc
        .ready()
        .await
        .unwrap()
        .call(Duration::from_millis(10))
        .await;
    assert_eq!(ok.unwrap(), Duration::from_millis(10));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(elapsed_of(&err).limit(), LIMIT);
}

#[tokio::test(start_paused = true)]
async fn readiness_is_the_inner_services_and_never_fails_because_of_the_layer() {
    use std::task::Poll;

    // An inner service that is never ready: the layer does not time readiness (as tower's
    // `Timeout` does not), so it stays pending rather than failing.
    #[derive(Clone)]
    struct NeverReady;
    impl Service<http::Request<()>> for NeverReady {
        type Response = ();
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<(), std::io::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            ready(Ok(()))
        }
    }
    let mut svc = TimeoutLayer::new(Duration::from_millis(1))
        .unwrap()
        .layer(NeverReady);
    let waited = tokio::time::timeout(Duration::from_secs(1), svc.ready()).await;
    assert!(waited.is_err(), "still pending after 1 s");

    // An inner readiness error comes through boxed, unchanged.
    #[derive(Clone, Debug)]
    struct Broken;
    impl Service<http::Request<()>> for Broken {
        type Response = ();
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<(), std::io::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Err(std::io::Error::other("closed")))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            ready(Ok(()))
        }
    }
    let mut svc = TimeoutLayer::new(Duration::from_millis(1))
        .unwrap()
        .layer(Broken);
    let err = svc.ready().await.unwrap_err();
    assert_eq!(err.to_string(), "closed");
    assert!(Elapsed::find(&*err).is_none());
}

#[tokio::test(start_paused = true)]
async fn elapsed_is_found_through_wrapping_errors() {
    let probe = Probe::default();
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(slow(&probe, Duration::from_mins(1)));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    let wrapped = std::io::Error::other(err);
    assert_eq!(Elapsed::find(&wrapped).map(Elapsed::limit), Some(LIMIT));
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_calls_each_end_at_their_own_bound() {
    // 100 calls through clones of one service, each with its own override; half of them
    // would answer just in time, half just too late.
    let probe = Probe::default();
    let svc = TimeoutLayer::new(LIMIT).unwrap().layer(service_fn({
        let probe = probe.clone();
        move |req: http::Request<Duration>| {
            let delay = *req.body();
            probe.watch(async move {
                sleep(delay).await;
                Ok::<_, BoxError>(delay)
            })
        }
    }));
    let start = Instant::now();
    let calls = (1..=100u64).map(|i| {
        let mut svc = svc.clone();
        async move {
            let limit = Duration::from_millis(10 * i);
            let delay = if i % 2 == 0 {
                limit
            } else {
                limit + Duration::from_millis(1)
            };
            let mut req = http::Request::new(delay);
            req.extensions_mut().insert(TimeoutOverride(limit));
            let result = svc.ready().await.unwrap().call(req).await;
            (
                i,
                limit,
                result.map_err(|e| elapsed_of(&e)),
                start.elapsed(),
            )
        }
    });
    for (i, limit, result, ended) in futures::future::join_all(calls).await {
        if i % 2 == 0 {
            assert_eq!(result.unwrap(), limit);
            assert_eq!(ended, limit);
        } else {
            assert_eq!(result.unwrap_err().limit(), limit);
            assert_eq!(ended, limit);
        }
    }
    assert_eq!((probe.calls(), probe.dropped_unfinished()), (100, 50));
}
