//! The fallback's own failures: panicking rules, answers and backups fail their call with a
//! typed error naming the fallback and leave it working; a failing backup's error is
//! returned inside `FallbackFailed`; a call dropped mid-fallback releases what the backup
//! held.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use staunch_bulkhead::{Bulkhead, BulkheadLayer};
use staunch_core::{BoxError, BreakerOpen};
use staunch_fallback::{
    Answer, Answered, Callback, Cause, FallbackFailed, FallbackLayer, FallbackPanicked,
    FallbackPolicy, Reason, RejectionKind,
};
use support::{Calls, evens};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

async fn call<S: Service<u32>>(svc: &mut S, n: u32) -> Result<S::Response, S::Error> {
    svc.ready().await?.call(n).await
}

fn panicked(err: &BoxError, callback: Callback, message: &str) {
    let p = err
        .downcast_ref::<FallbackPanicked>()
        .unwrap_or_else(|| panic!("FallbackPanicked, got {err}"));
    assert_eq!(p.callback(), callback);
    assert_eq!(p.name(), "dep");
    assert!(p.message().contains(message), "{err}");
    assert!(err.to_string().contains("fallback `dep`"), "{err}");
}

#[tokio::test]
async fn a_panicking_error_rule_fails_its_call_and_nothing_else() {
    let policy = FallbackPolicy::builder("dep")
        .on_error(|e| {
            assert!(!e.to_string().contains("odd 13"), "rule broke on 13");
            true
        })
        .build()
        .unwrap();
    let mut svc = FallbackLayer::new(policy.clone(), Answer::value(0))
        .answered()
        .layer(evens(Calls::default()));
    let err = call(&mut svc, 13).await.unwrap_err();
    panicked(&err, Callback::ErrorRule, "rule broke on 13");
    assert_eq!(
        call(&mut svc, 1).await.unwrap().reason(),
        Some(Reason::Error)
    );
    assert_eq!(call(&mut svc, 2).await.unwrap(), Answered::Primary(2));
    assert_eq!(policy.metrics().panicked, 1);
}

#[tokio::test]
async fn a_panicking_response_rule_fails_its_call_and_nothing_else() {
    let policy = FallbackPolicy::builder("dep")
        .on_response(|n: &u32| {
            assert!(*n != 4, "rule broke on 4");
            *n > 10
        })
        .build()
        .unwrap();
    let mut svc = FallbackLayer::new(policy.clone(), Answer::value(0))
        .answered()
        .layer(evens(Calls::default()));
    panicked(
        &call(&mut svc, 4).await.unwrap_err(),
        Callback::ResponseRule,
        "rule broke on 4",
    );
    assert_eq!(call(&mut svc, 2).await.unwrap(), Answered::Primary(2));
    assert_eq!(
        call(&mut svc, 12).await.unwrap().reason(),
        Some(Reason::Response)
    );
}

#[tokio::test]
async fn a_panicking_answer_fails_its_call_and_nothing_else() {
    let policy = FallbackPolicy::builder("dep")
        .on_any_error()
        .build()
        .unwrap();
    let answer = Answer::function(|_, cause: Cause<u32>| {
        let text = cause.error().map(ToString::to_string).unwrap_or_default();
        assert!(text != "odd 7", "answer broke on 7");
        1
    });
    let mut svc = FallbackLayer::new(policy.clone(), answer).layer(evens(Calls::default()));
    panicked(
        &call(&mut svc, 7).await.unwrap_err(),
        Callback::Answer,
        "answer broke on 7",
    );
    assert_eq!(call(&mut svc, 9).await.unwrap(), 1);
    let m = policy.metrics();
    assert_eq!((m.errors, m.panicked), (2, 1));
}

#[tokio::test]
async fn the_engine_reports_panics_the_same_way() {
    let policy = FallbackPolicy::<u32>::builder("dep")
        .on_error(|_| panic!("engine rule"))
        .build()
        .unwrap();
    let err = policy
        .call(
            async { Err::<u32, _>(std::io::Error::other("x")) },
            &Answer::value(0),
        )
        .await
        .unwrap_err();
    panicked(&err, Callback::ErrorRule, "engine rule");
    let policy = FallbackPolicy::<u32>::builder("dep")
        .on_any_error()
        .build()
        .unwrap();
    let err = policy
        .call_or_else(
            async { Err::<u32, _>(std::io::Error::other("x")) },
            |_, _| -> std::future::Ready<Result<u32, BoxError>> { panic!("engine backup") },
        )
        .await
        .unwrap_err();
    panicked(&err, Callback::Backup, "engine backup");
    let err = policy
        .call_or_else(
            async { Err::<u32, _>(std::io::Error::other("x")) },
            |_, _| async {
                panic!("engine backup future");
                #[allow(unreachable_code)]
                Ok::<u32, BoxError>(0)
            },
        )
        .await
        .unwrap_err();
    panicked(&err, Callback::Backup, "engine backup future");
    assert_eq!(policy.metrics().panicked, 2);
}

/// A backup that panics in `poll_ready`, `call` or its future, as `mode` says.
#[derive(Clone)]
struct Bomb {
    mode: Arc<AtomicUsize>,
}

const READY: usize = 1;
const CALL: usize = 2;
const FUTURE: usize = 3;

impl Service<u32> for Bomb {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        assert!(
            self.mode.load(Ordering::SeqCst) != READY,
            "backup not ready"
        );
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u32) -> Self::Future {
        let mode = self.mode.load(Ordering::SeqCst);
        assert!(mode != CALL, "backup call");
        Box::pin(async move {
            assert!(mode != FUTURE, "backup future");
            Ok(n + 100)
        })
    }
}

#[tokio::test]
async fn a_panicking_backup_service_fails_its_call_and_nothing_else() {
    let mode = Arc::new(AtomicUsize::new(0));
    let policy = FallbackPolicy::builder("dep")
        .on_any_error()
        .build()
        .unwrap();
    let backup = Bomb {
        mode: Arc::clone(&mode),
    };
    let mut svc = FallbackLayer::service(policy.clone(), backup)
        .answered()
        .layer(evens(Calls::default()));
    for (m, message) in [
        (READY, "not ready"),
        (CALL, "backup call"),
        (FUTURE, "backup future"),
    ] {
        mode.store(m, Ordering::SeqCst);
        panicked(
            &call(&mut svc, 1).await.unwrap_err(),
            Callback::Backup,
            message,
        );
        mode.store(0, Ordering::SeqCst);
        assert_eq!(
            call(&mut svc, 3).await.unwrap(),
            Answered::Fallback {
                response: 103,
                reason: Reason::Error
            },
            "the backup is called with the request, and works again"
        );
    }
    let m = policy.metrics();
    assert_eq!((m.errors, m.panicked), (6, 3));
}

#[tokio::test]
async fn a_failing_backup_returns_its_error_inside_fallback_failed() {
    let policy = FallbackPolicy::builder("dep").build().unwrap();
    let backup = service_fn(|n: u32| async move {
        Err::<u32, _>(Box::new(BreakerOpen::new(Arc::from("backup"), None)) as BoxError)
            .map(|x| x + n)
    });
    let mut svc =
        FallbackLayer::service(policy.clone(), backup).layer(service_fn(|_: u32| async {
            Err::<u32, BoxError>(Box::new(BreakerOpen::new(Arc::from("primary"), None)))
        }));
    let err = call(&mut svc, 1).await.unwrap_err();
    let failed = err
        .downcast_ref::<FallbackFailed>()
        .expect("FallbackFailed");
    assert_eq!(failed.name(), "dep");
    assert_eq!(
        failed.reason(),
        Reason::Rejected(RejectionKind::BreakerOpen)
    );
    let source = failed
        .backup_error()
        .downcast_ref::<BreakerOpen>()
        .expect("the backup's own error");
    assert_eq!(source.name(), "backup");
    // The backup's rejection is still a rejection to outer layers (retry does not retry it).
    match staunch_core::rejection_of(&*err) {
        Some(staunch_core::Rejection::BreakerOpen(open)) => assert_eq!(open.name(), "backup"),
        other => panic!("{other:?}"),
    }
    let m = policy.metrics();
    assert_eq!((m.rejections, m.failed), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_mid_fallback_releases_what_the_backup_held() {
    let started = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let bulkhead = Bulkhead::builder("backup")
        .max_concurrent(1)
        .build()
        .unwrap();
    let backup = ServiceBuilder::new()
        .layer(BulkheadLayer::new(bulkhead.clone()))
        .service(service_fn({
            let started = Arc::clone(&started);
            let dropped = Arc::clone(&dropped);
            move |n: u32| {
                started.store(true, Ordering::SeqCst);
                let guard = Guard(Arc::clone(&dropped));
                async move {
                    tokio::time::sleep(Duration::from_mins(1)).await;
                    drop(guard);
                    Ok::<_, std::io::Error>(n)
                }
            }
        }));
    let policy = FallbackPolicy::builder("dep")
        .on_any_error()
        .build()
        .unwrap();
    let mut svc = FallbackLayer::service(policy.clone(), backup).layer(evens(Calls::default()));
    let mut fut = Box::pin(svc.ready().await.unwrap().call(1));
    assert!((&mut fut).now_or_never().is_none());
    assert!(started.load(Ordering::SeqCst));
    assert_eq!(bulkhead.in_flight(), 1, "the backup holds its permit");
    drop(fut);
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(bulkhead.in_flight(), 0, "dropping the call released it");
    // The layer goes on: the next fallback gets the permit.
    let next = svc.ready().await.unwrap().call(3);
    tokio::time::advance(Duration::from_mins(1)).await;
    assert_eq!(next.await.unwrap(), 3);
    assert_eq!(policy.metrics().errors, 2);
}

#[tokio::test(start_paused = true)]
async fn the_engine_backup_is_dropped_with_its_call() {
    let dropped = Arc::new(AtomicBool::new(false));
    let policy = FallbackPolicy::<u32>::builder("dep")
        .on_any_error()
        .build()
        .unwrap();
    let flag = Arc::clone(&dropped);
    let mut fut = Box::pin(policy.call_or_else(
        async { Err::<u32, _>(std::io::Error::other("x")) },
        move |_, _| async move {
            struct Guard(Arc<AtomicBool>);
            impl Drop for Guard {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _guard = Guard(flag);
            std::future::pending::<Result<u32, std::io::Error>>().await
        },
    ));
    assert!((&mut fut).now_or_never().is_none());
    assert!(!dropped.load(Ordering::SeqCst));
    drop(fut);
    assert!(dropped.load(Ordering::SeqCst));
}
