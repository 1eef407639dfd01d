//! Reloading a [`Registry`]: unchanged stacks keep their engines, a changed stack carries over
//! what stays meaningful (breaker state and window for new thresholds, calls in flight for a
//! new bulkhead limit), and the rest resets as the `Registry` docs' table says.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::time::Duration;

use staunch::circuit_breaker::State;
use staunch::{Error, Registry, RegistryConfig};
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt, service_fn};

const FILE: &str = r#"
[payment]
timeout = "2s"
attempt_timeout = "250ms"

[payment.breaker]
failure_rate_threshold = 50.0
minimum_calls = 4
open_duration = "30s"
sliding_window = { kind = "count", size = 10 }

[payment.bulkhead]
max_concurrent = 4

[payment.retry]
max_attempts = 2
backoff = { strategy = "constant", base = "10ms", jitter = "none" }
budget = { ratio = 0.5, min_per_sec = 1, ttl = "10s" }

[inventory]
bulkhead = { max_concurrent = 64 }
"#;

fn file(text: &str) -> RegistryConfig {
    toml::from_str(text).expect("valid TOML for the schema")
}

/// `FILE` with one piece of text replaced.
fn file_with(from: &str, to: &str) -> RegistryConfig {
    assert!(FILE.contains(from), "{from:?} not in the file");
    file(&FILE.replace(from, to))
}

type Request = http::Request<String>;
type Response = http::Response<String>;

/// A dependency whose answer the test sets, and that can hold calls until released.
struct Dependency {
    status: AtomicU16,
    hold: AtomicBool,
    gate: Semaphore,
    attempts: AtomicU32,
}

impl Dependency {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            status: AtomicU16::new(200),
            hold: AtomicBool::new(false),
            gate: Semaphore::new(0),
            attempts: AtomicU32::new(0),
        })
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn service(
        self: &Arc<Self>,
    ) -> impl Service<
        Request,
        Response = Response,
        Error = std::io::Error,
        Future = impl Future<Output = Result<Response, std::io::Error>> + Send,
    > + Clone
    + Send
    + 'static {
        let dependency = Arc::clone(self);
        service_fn(move |_: Request| {
            let dependency = Arc::clone(&dependency);
            dependency.attempts.fetch_add(1, Ordering::SeqCst);
            let hold = dependency.hold.load(Ordering::SeqCst);
            let status = dependency.status.load(Ordering::SeqCst);
            async move {
                if hold {
                    dependency
                        .gate
                        .acquire()
                        .await
                        .expect("the gate is never closed")
                        .forget();
                }
                Ok(http::Response::builder()
                    .status(status)
                    .body(String::new())
                    .expect("a valid response"))
            }
        })
    }
}

fn get() -> Request {
    http::Request::get("http://127.0.0.1/charge")
        .body(String::new())
        .expect("a valid request")
}

async fn call<S>(client: &mut S) -> Result<Response, Error<std::io::Error>>
where
    S: Service<Request, Response = Response, Error = Error<std::io::Error>>,
{
    client.ready().await?.call(get()).await
}

/// Starts `n` calls that the dependency holds until `gate` is opened, and waits until each
/// holds its bulkhead permit.
async fn hold_calls<S>(
    dependency: &Dependency,
    client: &S,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<Response, Error<std::io::Error>>>>
where
    S: Service<Request, Response = Response, Error = Error<std::io::Error>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    dependency.hold.store(true, Ordering::SeqCst);
    let mut held = Vec::new();
    for _ in 0..n {
        let mut client = client.clone();
        held.push(tokio::spawn(async move { call(&mut client).await }));
        // The task runs up to the gate: its permit is taken.
        tokio::task::yield_now().await;
    }
    dependency.hold.store(false, Ordering::SeqCst);
    held
}

/// Fails calls until the breaker opens: two calls of two failed attempts each (4 of 4 in the
/// window, `minimum_calls` 4).
async fn trip<S>(dependency: &Dependency, client: &mut S)
where
    S: Service<Request, Response = Response, Error = Error<std::io::Error>>,
{
    dependency.answer(503);
    for _ in 0..2 {
        let res = call(client).await.expect("the dependency's own answer");
        assert_eq!(res.status(), 503);
    }
}

#[tokio::test(start_paused = true)]
async fn an_identical_file_keeps_every_engine() {
    let registry = Registry::new(&file(FILE)).unwrap();
    let dependency = Dependency::new();
    let mut client = registry
        .http_client::<_, std::io::Error>("payment", dependency.service())
        .unwrap();
    let before = registry.handle("payment").unwrap();

    let mut held = hold_calls(&dependency, &client, 1).await;
    assert_eq!(before.bulkhead().in_flight(), 1);
    trip(&dependency, &mut client).await;
    assert_eq!(before.breaker().state(), State::Open);
    let breaker = before.breaker().snapshot();
    let (withdrawn, remaining) = (before.budget().withdrawn(), before.budget().remaining());
    assert_eq!(withdrawn, 2, "each failed call was retried once");

    registry.reload(&file(FILE)).unwrap();

    let after = registry.handle("payment").unwrap();
    assert_eq!(
        after.breaker().state(),
        State::Open,
        "an open breaker stays open"
    );
    assert_eq!(after.breaker().snapshot(), breaker);
    assert_eq!(after.bulkhead().in_flight(), 1);
    assert_eq!(after.budget().withdrawn(), withdrawn);
    assert_eq!(after.budget().remaining(), remaining);

    // The client from before the reload keeps working on the same engines: refused while
    // open, and through once the breaker's probes pass.
    let attempts = dependency.attempts.load(Ordering::SeqCst);
    let err = call(&mut client).await.unwrap_err();
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");
    assert_eq!(dependency.attempts.load(Ordering::SeqCst), attempts);
    tokio::time::advance(Duration::from_secs(30)).await;
    dependency.answer(200);
    for _ in 0..5 {
        assert_eq!(call(&mut client).await.unwrap().status(), 200);
    }
    assert_eq!(after.breaker().state(), State::Closed);

    dependency.gate.add_permits(1);
    let held = held.pop().unwrap().await.unwrap().unwrap();
    assert_eq!(held.status(), 200);
    assert_eq!(after.bulkhead().in_flight(), 0);

    // One engine, seen through both handles.
    after.breaker().force_open();
    assert_eq!(before.breaker().state(), State::ForcedOpen);
}

#[tokio::test(start_paused = true)]
async fn new_thresholds_keep_an_open_breaker_open() {
    let registry = Registry::new(&file(FILE)).unwrap();
    let dependency = Dependency::new();
    let mut client = registry
        .http_client::<_, std::io::Error>("payment", dependency.service())
        .unwrap();
    trip(&dependency, &mut client).await;
    let tripped = registry.handle("payment").unwrap().breaker().snapshot();
    assert_eq!(tripped.state, State::Open);
    tokio::time::advance(Duration::from_secs(10)).await;

    registry
        .reload(&file_with(
            "failure_rate_threshold = 50.0",
            "failure_rate_threshold = 80.0",
        ))
        .unwrap();

    let breaker = registry.handle("payment").unwrap().breaker().clone();
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, State::Open);
    assert_eq!(snapshot.failure_rate_threshold, 80.0);
    assert_eq!(snapshot.last_trip, tripped.last_trip);
    assert_eq!(snapshot.failed_calls, tripped.failed_calls);
    let attempts = dependency.attempts.load(Ordering::SeqCst);
    match call(&mut client).await {
        Err(Error::BreakerOpen(open)) => {
            assert_eq!(open.retry_after(), Some(Duration::from_secs(20)));
        }
        other => panic!("expected the breaker's rejection, got {other:?}"),
    }
    assert_eq!(dependency.attempts.load(Ordering::SeqCst), attempts);
}

#[tokio::test(start_paused = true)]
async fn new_thresholds_judge_the_calls_already_in_the_window() {
    let registry = Registry::new(&file(FILE)).unwrap();
    let dependency = Dependency::new();
    let mut client = registry
        .http_client::<_, std::io::Error>("payment", dependency.service())
        .unwrap();
    // Three successes and one call of two failed attempts: 2 of 5, under 50 %.
    for _ in 0..3 {
        assert_eq!(call(&mut client).await.unwrap().status(), 200);
    }
    dependency.answer(503);
    assert_eq!(call(&mut client).await.unwrap().status(), 503);
    let breaker = registry.handle("payment").unwrap().breaker().snapshot();
    assert_eq!(
        (breaker.calls_in_window, breaker.failures_in_window),
        (5, 2)
    );
    assert_eq!(breaker.state, State::Closed);

    // Stricter: 40 % over at least 6 calls.
    let stricter = file_with(
        "failure_rate_threshold = 50.0\nminimum_calls = 4",
        "failure_rate_threshold = 40.0\nminimum_calls = 6",
    );
    registry.reload(&stricter).unwrap();
    let handle = registry.handle("payment").unwrap();
    let carried = handle.breaker().snapshot();
    assert_eq!(
        (carried.calls_in_window, carried.failures_in_window),
        (5, 2)
    );
    assert_eq!(carried.consecutive_failures, 2);
    assert_eq!(carried.state, State::Closed);

    // The next failed attempt makes 3 of 6: the new thresholds trip, and the retry is
    // refused by the now open breaker.
    let attempts = dependency.attempts.load(Ordering::SeqCst);
    let err = call(&mut client).await.unwrap_err();
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");
    assert_eq!(dependency.attempts.load(Ordering::SeqCst), attempts + 1);
    assert_eq!(handle.breaker().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_smaller_bulkhead_counts_the_calls_in_flight() {
    let registry = Registry::new(&file(FILE)).unwrap();
    let dependency = Dependency::new();
    let client = registry
        .http_client::<_, std::io::Error>("payment", dependency.service())
        .unwrap();
    let mut held = hold_calls(&dependency, &client, 3).await;
    assert_eq!(
        registry.handle("payment").unwrap().bulkhead().in_flight(),
        3
    );

    registry
        .reload(&file_with("max_concurrent = 4", "max_concurrent = 2"))
        .unwrap();
    let bulkhead = registry.handle("payment").unwrap().bulkhead().clone();
    assert_eq!(bulkhead.max_concurrent(), 2);
    assert_eq!(bulkhead.in_flight(), 3, "the calls in flight count");

    let mut client = client.clone();
    let attempts = dependency.attempts.load(Ordering::SeqCst);
    let err = call(&mut client).await.unwrap_err();
    assert!(matches!(err, Error::BulkheadFull(_)), "{err:?}");

    // One call finishes: two in flight, still no room under the limit of two.
    dependency.gate.add_permits(1);
    assert_eq!(held.remove(0).await.unwrap().unwrap().status(), 200);
    assert_eq!(bulkhead.in_flight(), 2);
    let err = call(&mut client).await.unwrap_err();
    assert!(matches!(err, Error::BulkheadFull(_)), "{err:?}");
    assert_eq!(dependency.attempts.load(Ordering::SeqCst), attempts);

    // Another finishes: one in flight, a new call is admitted.
    dependency.gate.add_permits(1);
    assert_eq!(held.remove(0).await.unwrap().unwrap().status(), 200);
    assert_eq!(call(&mut client).await.unwrap().status(), 200);
    assert_eq!(dependency.attempts.load(Ordering::SeqCst), attempts + 1);

    // Growing it back admits calls up to the new limit.
    registry.reload(&file(FILE)).unwrap();
    assert_eq!(bulkhead.max_concurrent(), 4);
    let more = hold_calls(&dependency, &client, 3).await;
    assert_eq!(bulkhead.in_flight(), 4);
    dependency.gate.add_permits(4);
    for call in held.into_iter().chain(more) {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_change_elsewhere_keeps_the_breaker_and_the_budget() {
    let registry = Registry::new(&file(FILE)).unwrap();
    let dependency = Dependency::new();
    let mut client = registry
        .http_client::<_, std::io::Error>("payment", dependency.service())
        .unwrap();
    let mut held = hold_calls(&dependency, &client, 1).await;
    trip(&dependency, &mut client).await;
    let before = registry.handle("payment").unwrap();
    let withdrawn = before.budget().withdrawn();

    // More attempts and a longer overall timeout: a new retry policy on the same budget;
    // the breaker and the bulkhead are the same engines.
    let mut config = file_with("max_attempts = 2", "max_attempts = 3");
    config.stacks.get_mut("payment").unwrap().timeout = Some(Duration::from_secs(3));
    registry.reload(&config).unwrap();
    let after = registry.handle("payment").unwrap();
    assert_eq!(after.retry().max_attempts(), 3);
    assert_eq!(after.breaker().state(), State::Open);
    assert_eq!(after.bulkhead().in_flight(), 1);
    assert_eq!(after.budget().withdrawn(), withdrawn);
    assert!(before.budget().try_withdraw());
    assert_eq!(after.budget().withdrawn(), withdrawn + 1, "one budget");
    let err = call(&mut client).await.unwrap_err();
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");

    // A new budget starts empty of withdrawals: documented as a reset.
    let mut config = config.clone();
    config
        .stacks
        .get_mut("payment")
        .unwrap()
        .retry
        .budget
        .as_mut()
        .unwrap()
        .ratio = Some(0.25);
    registry.reload(&config).unwrap();
    let after = registry.handle("payment").unwrap();
    assert_eq!(after.budget().withdrawn(), 0);
    assert_eq!(after.budget().ratio(), 0.25);
    assert_eq!(after.breaker().state(), State::Open);

    // Other bulkhead settings than the limit build a new bulkhead: the call in flight
    // finishes on the old one and is not counted by the new one (documented).
    let mut waiting = config.clone();
    waiting.stacks.get_mut("payment").unwrap().bulkhead.max_wait = Some(Duration::from_millis(5));
    registry.reload(&waiting).unwrap();
    let after = registry.handle("payment").unwrap();
    assert_eq!(after.bulkhead().max_wait(), Duration::from_millis(5));
    assert_eq!(after.bulkhead().in_flight(), 0);
    assert_eq!(before.bulkhead().in_flight(), 1);
    assert_eq!(after.breaker().state(), State::Open, "the breaker is kept");

    dependency.gate.add_permits(1);
    assert_eq!(held.pop().unwrap().await.unwrap().unwrap().status(), 200);
    assert_eq!(before.bulkhead().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn removed_and_added_stacks() {
    let registry = Registry::new(&file(FILE)).unwrap();
    let dependency = Dependency::new();
    let mut inventory = registry
        .http_client::<_, std::io::Error>("inventory", dependency.service())
        .unwrap();
    let old = registry.handle("inventory").unwrap();
    old.breaker().force_open();

    let mut config = file(FILE);
    config.stacks.remove("inventory");
    config
        .stacks
        .insert("shipping".into(), staunch::StackConfig::default());
    registry.reload(&config).unwrap();

    // Removed: the registry forgets it; a service already using it keeps its last engines.
    assert_eq!(registry.names(), ["payment", "shipping"]);
    assert!(registry.handle("inventory").is_none());
    assert!(
        registry
            .http_client::<_, std::io::Error>("inventory", dependency.service())
            .is_none()
    );
    let err = call(&mut inventory).await.unwrap_err();
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");
    old.breaker().reset();
    assert_eq!(call(&mut inventory).await.unwrap().status(), 200);

    // Added: fresh engines.
    let mut shipping = registry
        .http_client::<_, std::io::Error>("shipping", dependency.service())
        .unwrap();
    assert_eq!(call(&mut shipping).await.unwrap().status(), 200);
    let shipping = registry.handle("shipping").unwrap();
    assert_eq!(shipping.breaker().state(), State::Closed);
    assert_eq!(shipping.bulkhead().max_concurrent(), 25);

    // Added back: a stack the registry forgot starts fresh.
    old.breaker().force_open();
    registry.reload(&file(FILE)).unwrap();
    let back = registry.handle("inventory").unwrap();
    assert_eq!(back.breaker().state(), State::Closed);
    assert_eq!(old.breaker().state(), State::ForcedOpen);
    assert_eq!(registry.names(), ["inventory", "payment"]);
}
