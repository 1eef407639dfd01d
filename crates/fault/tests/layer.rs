//! The generic tower layer over in-process services, under paused time.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use staunch_fault::{
    ErrorFnPanicked, FaultConfig, FaultInjected, FaultInjector, FaultKind, FaultLayer,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// A service counting the requests it sees, and holding a token whose count tells whether
/// a clone of it is still alive somewhere.
#[derive(Clone)]
struct Counting {
    calls: Arc<AtomicUsize>,
    _alive: Arc<()>,
}

impl Service<u32> for Counting {
    type Response = u32;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<u32, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u32) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(n))
    }
}

fn counting() -> (Arc<AtomicUsize>, Arc<()>, Counting) {
    let calls = Arc::new(AtomicUsize::new(0));
    let alive = Arc::new(());
    let svc = Counting {
        calls: Arc::clone(&calls),
        _alive: Arc::clone(&alive),
    };
    (calls, alive, svc)
}

#[tokio::test(start_paused = true)]
async fn a_disabled_layer_never_delays_or_fails() {
    for injector in [
        FaultConfig::intermittent()
            .with_abort(0.5)
            .with_seed(1)
            .build("p")
            .unwrap(),
        FaultConfig::none().build("p").unwrap(),
    ] {
        injector.disable();
        let (calls, _, inner) = counting();
        let mut svc = FaultLayer::new(injector.clone()).layer(inner);
        let start = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        for n in 0..1000 {
            let mut fut = pin!(svc.ready().await.unwrap().call(n));
            // Ready at the first poll: no timer, no extra step.
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(m)) => assert_eq!(m, n),
                other => panic!("call {n}: {other:?}"),
            }
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 1000);
        assert_eq!(injector.metrics().calls, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn latency_is_waited_before_the_call_and_stays_in_its_range() {
    let (min, max) = (Duration::from_millis(200), Duration::from_millis(900));
    let injector = FaultInjector::builder("p")
        .latency(1.0, min, max)
        .seed(11)
        .build()
        .unwrap();
    let (calls, _, inner) = counting();
    let mut svc = FaultLayer::new(injector.clone()).layer(inner);
    let mut seen = Vec::new();
    for n in 0..200 {
        let start = Instant::now();
        let fut = svc.ready().await.unwrap().call(n);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            n as usize,
            "not sent before its delay"
        );
        assert_eq!(fut.await.unwrap(), n);
        let took = start.elapsed();
        assert!(took >= min && took <= max, "{took:?}");
        seen.push(took);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 200);
    // Drawn, not fixed.
    seen.sort();
    seen.dedup();
    assert!(seen.len() > 100, "{} distinct delays", seen.len());
    assert_eq!(injector.metrics().delayed, 200);
}

#[tokio::test(start_paused = true)]
async fn an_abort_never_reaches_the_service() {
    let injector = FaultInjector::builder("card-network")
        .abort(1.0)
        .build()
        .unwrap();
    let (calls, _, inner) = counting();
    let mut svc = ServiceBuilder::new()
        .layer(FaultLayer::new(injector))
        .service(inner);
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    let fault = err.downcast_ref::<FaultInjected>().expect("FaultInjected");
    assert_eq!(fault.kind(), FaultKind::Abort);
    assert_eq!(fault.name(), "card-network");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Not a rejection: the rest of the stack treats it as the dependency failing.
    assert!(staunch_core::rejection_of(&*err).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_injected_error_is_the_default_error_or_the_users_value() {
    let injector = FaultInjector::builder("p").error(1.0, 503).build().unwrap();
    let (calls, _, inner) = counting();
    let mut plain = FaultLayer::new(injector.clone()).layer(inner.clone());
    let err = plain.ready().await.unwrap().call(1).await.unwrap_err();
    let fault = err.downcast_ref::<FaultInjected>().unwrap();
    assert_eq!(
        (fault.kind(), fault.status()),
        (FaultKind::Error, Some(503))
    );

    let mut mine = FaultLayer::new(injector)
        .error_with(|e| std::io::Error::other(format!("upstream {}", e.status())))
        .layer(inner);
    let err = mine.ready().await.unwrap().call(2).await.unwrap_err();
    let io = err
        .downcast_ref::<std::io::Error>()
        .expect("the user's error");
    assert_eq!(io.to_string(), "upstream 503");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_delayed_error_waits_then_fails() {
    let injector = FaultInjector::builder("p")
        .latency(1.0, Duration::from_secs(2), Duration::from_secs(2))
        .error(1.0, 500)
        .build()
        .unwrap();
    let (calls, _, inner) = counting();
    let mut svc = FaultLayer::new(injector).layer(inner);
    let start = Instant::now();
    assert!(svc.ready().await.unwrap().call(1).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_error_function_fails_that_call_and_the_layer_keeps_working() {
    let injector = FaultInjector::builder("p").error(1.0, 500).build().unwrap();
    let (calls, _, inner) = counting();
    let mut svc = FaultLayer::new(injector.clone())
        .error_with(|e| -> std::io::Error { panic!("no error for {}", e.status()) })
        .layer(inner);
    for n in 0..3 {
        let err = svc.ready().await.unwrap().call(n).await.unwrap_err();
        let panicked = err
            .downcast_ref::<ErrorFnPanicked>()
            .expect("ErrorFnPanicked");
        assert_eq!(panicked.message(), "no error for 500");
        assert_eq!(panicked.name(), "p");
    }
    injector.disable();
    assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_switch_changes_the_next_call_through_every_clone_of_the_service() {
    let injector = FaultInjector::builder("p").seed(3).build().unwrap();
    let (calls, _, inner) = counting();
    let svc = FaultLayer::new(injector.clone()).layer(inner);
    let mut clones: Vec<_> = (0..3).map(|_| svc.clone()).collect();
    for c in &mut clones {
        assert!(c.ready().await.unwrap().call(1).await.is_ok());
    }
    injector.set(FaultConfig::none().with_abort(1.0)).unwrap();
    for c in &mut clones {
        assert!(c.ready().await.unwrap().call(2).await.is_err());
    }
    let start = Instant::now();
    injector.set(FaultConfig::slow()).unwrap();
    for c in &mut clones {
        assert_eq!(c.ready().await.unwrap().call(3).await.unwrap(), 3);
    }
    assert!(start.elapsed() >= Duration::from_secs(9));
    injector.disable();
    let start = Instant::now();
    for c in &mut clones {
        assert_eq!(c.ready().await.unwrap().call(4).await.unwrap(), 4);
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 9);
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn a_reloaded_config_changes_the_next_call() {
    let injector = FaultInjector::builder("p").build().unwrap();
    let (_, _, inner) = counting();
    let mut svc = FaultLayer::new(injector.clone()).layer(inner);
    assert!(svc.ready().await.unwrap().call(1).await.is_ok());
    for (text, fails) in [
        ("abort = { rate = 1.0 }", true),
        ("preset = \"none\"", false),
        ("error = { rate = 1.0, status = 503 }", true),
    ] {
        let config: FaultConfig = toml::from_str(text).unwrap();
        injector.set(config).unwrap();
        assert_eq!(
            svc.ready().await.unwrap().call(2).await.is_err(),
            fails,
            "{text}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_mid_latency_leaves_nothing_behind() {
    let injector = FaultInjector::builder("p")
        .latency(1.0, Duration::from_secs(5), Duration::from_secs(5))
        .build()
        .unwrap();
    let (calls, alive, inner) = counting();
    let mut svc = FaultLayer::new(injector).layer(inner);
    let fut = svc.ready().await.unwrap().call(1);
    // The future holds a ready clone of the service and the request.
    assert_eq!(Arc::strong_count(&alive), 3);
    let mut fut = Box::pin(fut);
    assert!(futures::poll!(fut.as_mut()).is_pending());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(futures::poll!(fut.as_mut()).is_pending());
    drop(fut);
    assert_eq!(
        Arc::strong_count(&alive),
        2,
        "the clone went with the future"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the request never went out"
    );
    // The layer and its service still work.
    drop(svc);
    assert_eq!(Arc::strong_count(&alive), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_outside_sees_the_injected_delay() {
    // Innermost: a layer around it sees the delay as the dependency's.
    let injector = FaultConfig::slow().with_seed(1).build("p").unwrap();
    let mut svc = ServiceBuilder::new()
        .timeout(Duration::from_secs(1))
        .layer(FaultLayer::new(injector))
        .service(service_fn(
            |n: u32| async move { Ok::<_, std::io::Error>(n) },
        ));
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[test]
fn the_future_of_a_call_without_fault_is_the_inner_future_and_a_tag() {
    type Inner = std::future::Ready<Result<[u64; 4], std::io::Error>>;
    type Fut = staunch_fault::ResponseFuture<tower::util::ServiceFn<fn(u32) -> Inner>, u32>;
    assert!(std::mem::size_of::<Fut>() <= std::mem::size_of::<Inner>() + 8);
}
