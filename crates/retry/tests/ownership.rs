//! Nothing outlives the last handle a user drops: once every layer, service and response
//! future is gone, the inner service, the policy's hooks and the classifier are dropped, on
//! every thread that made calls (no per-thread cache keeps them), and retries go through the
//! service that made the call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use staunch_retry::{BoxError, RetryBudget, RetryLayer, RetryPolicy, RetryRequest, Verdict};
use tokio::sync::Notify;
use tower::{Layer, Service, ServiceExt};

mod support;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Answers at once.
    Succeed,
    /// Fails once, then answers: retried.
    FailOnce,
    /// Always fails: retried until the attempts run out.
    AlwaysFail,
    /// Never answers: the caller drops the future while the first attempt runs.
    Hang,
    /// Fails once, then never answers: dropped while the retry runs.
    FailThenHang,
}

/// A request whose copies share one attempt counter, so the service knows which attempt it
/// serves.
#[derive(Clone)]
struct Req {
    kind: Kind,
    attempts: Arc<AtomicU32>,
    /// Notified when an attempt that will never answer has started.
    hanging: Arc<Notify>,
}

impl Req {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            attempts: Arc::new(AtomicU32::new(0)),
            hanging: Arc::new(Notify::new()),
        }
    }
}

impl RetryRequest for Req {
    fn try_replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

/// A service whose every clone holds `token` (so its strong count tells how many clones are
/// alive) and counts the calls made through it: state of its own, copied by a clone, as a
/// balancer's or a connection's clones carry.
#[derive(Clone)]
struct Dependency {
    // Only held: its strong count is the number of live clones.
    _token: Arc<()>,
    served: u32,
}

impl Dependency {
    fn new(token: &Arc<()>) -> Self {
        Self {
            _token: Arc::clone(token),
            served: 0,
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

impl Service<Req> for Dependency {
    type Response = u32;
    type Error = BoxError;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Answer {
        let attempt = req.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let reset =
            || -> BoxError { Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) };
        self.served += 1;
        let served = self.served;
        match (req.kind, attempt) {
            (Kind::Succeed, _) | (Kind::FailOnce, 2..) => Box::pin(async move { Ok(served) }),
            (Kind::FailOnce | Kind::FailThenHang, ..=1) | (Kind::AlwaysFail, _) => {
                Box::pin(async move { Err(reset()) })
            }
            (Kind::Hang, _) | (Kind::FailThenHang, 2..) => Box::pin(async move {
                req.hanging.notify_one();
                std::future::pending().await
            }),
        }
    }
}

/// Makes calls of every kind through `svc` (each through its own clone, as a server's
/// handler does), dropping the hanging ones mid-flight.
async fn make_calls<S>(svc: S, round: usize)
where
    S: Service<Req, Response = u32, Error = BoxError> + Clone,
{
    use Kind::*;
    for i in 0..40 {
        let kind = [Succeed, FailOnce, AlwaysFail, Hang, FailThenHang][(i + round) % 5];
        let req = Req::new(kind);
        let (attempts, hanging) = (Arc::clone(&req.attempts), Arc::clone(&req.hanging));
        let call = svc.clone().oneshot(req);
        match kind {
            Succeed | FailOnce => {
                assert!(call.await.is_ok(), "{kind:?}");
            }
            AlwaysFail => {
                assert!(call.await.is_err());
                assert_eq!(attempts.load(Ordering::Relaxed), 3);
            }
            Hang | FailThenHang => {
                // Dropped once the attempt that never answers is running.
                tokio::select! {
                    _ = call => panic!("{kind:?} answered"),
                    () = hanging.notified() => {}
                }
                let expected = if kind == Hang { 1 } else { 2 };
                assert_eq!(attempts.load(Ordering::Relaxed), expected, "{kind:?}");
            }
        }
    }
}

#[test]
fn dropping_every_handle_drops_the_service_the_hooks_and_the_classifier() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let service = Arc::new(());
    let hooks = Arc::new(());
    let classifier = Arc::new(());

    let (retried, gave_up) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let policy = {
        let (on_retry, on_give_up) = (Arc::clone(&hooks), Arc::clone(&hooks));
        let (retried, gave_up) = (Arc::clone(&retried), Arc::clone(&gave_up));
        RetryPolicy::builder()
            .max_attempts(3)
            .budget(RetryBudget::unlimited())
            .backoff(support::constant(1))
            .on_retry(move |_| {
                let _ = &on_retry;
                retried.fetch_add(1, Ordering::Relaxed);
            })
            .on_give_up(move |_| {
                let _ = &on_give_up;
                gave_up.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap()
    };
    let token = Arc::clone(&classifier);
    let classify = staunch_retry::retry_fn(move |r: Result<&u32, &BoxError>| {
        let _ = &token;
        if r.is_ok() {
            Verdict::Done
        } else {
            Verdict::Retry
        }
    });
    let layer = RetryLayer::new(policy).classify(classify);
    let svc = layer.layer(Dependency::new(&service));

    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for round in 0..8 {
            tasks.spawn(make_calls(svc.clone(), round));
        }
        // A thread of its own, outside the runtime's workers.
        let elsewhere = svc.clone();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(make_calls(elsewhere, 3));
        });
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        thread.join().unwrap();
    });
    // Every kind of call happened: retries, give-ups, futures dropped mid-flight.
    assert!(retried.load(Ordering::Relaxed) > 0);
    assert!(gave_up.load(Ordering::Relaxed) > 0);
    assert!(
        Arc::strong_count(&service) > 1,
        "the service is still in use"
    );

    drop(svc);
    drop(layer);
    // The runtime's worker threads, which polled every call, are still running: nothing of
    // the layer may be left with them.
    assert_eq!(
        Arc::strong_count(&service),
        1,
        "the inner service outlived the layer"
    );
    assert_eq!(Arc::strong_count(&hooks), 1, "the hooks outlived the layer");
    assert_eq!(
        Arc::strong_count(&classifier),
        1,
        "the classifier outlived the layer"
    );
    drop(rt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_that_outlives_its_service_releases_everything_when_it_finishes() {
    let service = Arc::new(());
    let svc = RetryLayer::new(
        RetryPolicy::builder()
            .backoff(support::constant(1))
            .build()
            .unwrap(),
    )
    .layer(Dependency::new(&service));
    // `oneshot` drops the service before the first poll; the retry still has what it needs.
    let answer = tokio::spawn(svc.oneshot(Req::new(Kind::FailOnce)));
    // The retry went through the clone taken after the first call: its second call.
    assert_eq!(answer.await.unwrap().unwrap(), 2);
    assert_eq!(Arc::strong_count(&service), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_goes_through_the_service_that_made_the_call() {
    let service = Arc::new(());
    let mut svc = RetryLayer::new(
        RetryPolicy::builder()
            .backoff(support::constant(1))
            .build()
            .unwrap(),
    )
    .layer(Dependency::new(&service));
    for served in 1..=5 {
        let answer = svc.ready().await.unwrap().call(Req::new(Kind::Succeed));
        assert_eq!(answer.await.unwrap(), served);
    }
    // The first attempt is the 6th call through `svc`'s inner service; the retry goes through
    // a clone of it taken after that call, so it is the 7th (a clone made when the layer was
    // built would say 1).
    let answer = svc.ready().await.unwrap().call(Req::new(Kind::FailOnce));
    assert_eq!(answer.await.unwrap(), 7);
    assert_eq!(svc.get_ref().served, 6, "the retry used a clone");
    drop(svc);
    assert_eq!(Arc::strong_count(&service), 1);
}

/// Polling a finished future breaks the `Future` contract: it must neither panic nor send
/// the request again.
#[tokio::test(start_paused = true)]
async fn a_future_polled_after_it_finished_makes_no_attempt() {
    let service = Arc::new(());
    let mut svc = RetryLayer::new(RetryPolicy::default()).layer(Dependency::new(&service));
    let req = Req::new(Kind::Succeed);
    let attempts = Arc::clone(&req.attempts);
    let mut call = Box::pin(svc.ready().await.unwrap().call(req));
    assert_eq!(call.as_mut().await.unwrap(), 1);
    assert!(
        std::future::poll_fn(|cx| call.as_mut().poll(cx))
            .await
            .is_err()
    );
    assert_eq!(attempts.load(Ordering::Relaxed), 1);
}
