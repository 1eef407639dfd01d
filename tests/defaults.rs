//! The preset's defaults: the breaker sits inside the retries and judges attempts, so its
//! default threshold leaves alone a dependency whose failures the retries hide, and still
//! cuts off one they cannot.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch::circuit_breaker::{State, TransitionReason};
use staunch::{BreakerConfig, Error, RetryConfig, StackConfig, StackHandle};
use tower::{Service, ServiceExt, service_fn};

type Request = http::Request<String>;
type Response = http::Response<String>;

/// A seeded random number generator (splitmix64): the same failures on every run.
struct Dice(u64);

impl Dice {
    /// A number in `0..n`.
    fn roll(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// How a dependency fails its attempts.
#[derive(Clone, Copy)]
enum Failing {
    /// Each attempt fails with this probability (percent), except that a call's third
    /// attempt never fails when `hidden`: every call then succeeds within the preset's three
    /// attempts.
    AtRandom { percent: u64, hidden: bool },
    /// Every call's first `n` attempts fail, the next one succeeds.
    First(u32),
}

#[derive(Default)]
struct Seen {
    attempts: u64,
    failures: u64,
    failed_in_a_row: u32,
}

/// A dependency failing as `failing` says (503), calls made one after the other.
fn dependency(
    failing: Failing,
    seed: u64,
) -> (
    Arc<Mutex<Seen>>,
    impl Service<
        Request,
        Response = Response,
        Error = std::io::Error,
        Future = impl Future<Output = Result<Response, std::io::Error>> + Send,
    > + Clone
    + Send
    + 'static,
) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let dice = Arc::new(Mutex::new(Dice(seed)));
    let state = Arc::clone(&seen);
    let service = service_fn(move |_: Request| {
        let mut seen = state.lock().unwrap();
        let fail = match failing {
            Failing::AtRandom { percent, hidden } => {
                let last = hidden && seen.failed_in_a_row + 1 == RetryConfig::DEFAULT_MAX_ATTEMPTS;
                !last && dice.lock().unwrap().roll(100) < percent
            }
            Failing::First(n) => seen.failed_in_a_row < n,
        };
        seen.attempts += 1;
        if fail {
            seen.failures += 1;
            seen.failed_in_a_row += 1;
        } else {
            seen.failed_in_a_row = 0;
        }
        let status = if fail { 503 } else { 200 };
        async move {
            Ok(http::Response::builder()
                .status(status)
                .body(String::new())
                .unwrap())
        }
    });
    (seen, service)
}

fn get() -> Request {
    http::Request::get("http://127.0.0.1/charge")
        .body(String::new())
        .unwrap()
}

/// Makes `calls` calls, four a second (well within the default retry budget even when every
/// call needs three attempts), stopping at the first refused one.
async fn run<S>(client: &mut S, calls: u32) -> Result<u32, Error<std::io::Error>>
where
    S: Service<Request, Response = Response, Error = Error<std::io::Error>>,
{
    let mut ok = 0;
    for _ in 0..calls {
        let res = client.ready().await?.call(get()).await?;
        if res.status() == 200 {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(ok)
}

fn client_with(
    failing: Failing,
    config: StackConfig,
) -> (
    Arc<Mutex<Seen>>,
    impl Service<Request, Response = Response, Error = Error<std::io::Error>>,
    StackHandle,
) {
    let (seen, inner) = dependency(failing, 7);
    let (client, handle) = staunch::http::client("payment", inner, &config).unwrap();
    (seen, client, handle)
}

#[tokio::test(start_paused = true)]
async fn half_of_attempts_failing_at_random_behind_retries_keeps_the_breaker_closed() {
    let failing = Failing::AtRandom {
        percent: 50,
        hidden: true,
    };
    let (seen, mut client, handle) = client_with(failing, StackConfig::default());

    let ok = run(&mut client, 400).await.expect("no call refused");
    assert_eq!(ok, 400, "every call succeeds within its retries");
    let breaker = handle.breaker().snapshot();
    assert_eq!(breaker.state, State::Closed);
    assert_eq!((breaker.transitions, breaker.rejected_calls), (0, 0));
    let rate = {
        let seen = seen.lock().unwrap();
        seen.failures as f64 / seen.attempts as f64
    };
    // Half the attempts fail, but the third never does: 3/7 of the attempts on average.
    assert!((0.38..0.48).contains(&rate), "attempt failure rate {rate}");

    // The same dependency behind a breaker at 50 % (the breaker crate's default, meant for
    // a breaker that sees calls) is cut off although no call failed.
    let mut config = StackConfig::default();
    config.breaker.failure_rate_threshold = Some(50.0);
    let (_, mut client, handle) = client_with(failing, config);
    let err = run(&mut client, 400).await.unwrap_err();
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");
    assert_eq!(handle.breaker().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn failures_that_retries_always_hide_keep_the_breaker_closed() {
    // Every call fails once (half the attempts), or twice (two thirds: the most that three
    // attempts can hide).
    for n in [1, 2] {
        let (seen, mut client, handle) = client_with(Failing::First(n), StackConfig::default());
        let ok = run(&mut client, 200).await.expect("no call refused");
        assert_eq!(ok, 200);
        assert_eq!(
            handle.breaker().state(),
            State::Closed,
            "{n} failures a call"
        );
        assert_eq!(handle.breaker().snapshot().rejected_calls, 0);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.failures, u64::from(n) * 200);
    }
}

#[tokio::test(start_paused = true)]
async fn ninety_percent_of_attempts_failing_opens_the_breaker() {
    let failing = Failing::AtRandom {
        percent: 90,
        hidden: false,
    };
    let (_, mut client, handle) = client_with(failing, StackConfig::default());

    let err = run(&mut client, 100).await.unwrap_err();
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");
    let breaker = handle.breaker().snapshot();
    assert_eq!(breaker.state, State::Open);
    let trip = breaker.last_trip.expect("it tripped");
    assert_eq!(trip.reason, TransitionReason::FailureRate);
    assert!(trip.failure_rate >= 79.0, "{trip:?}");
}

#[test]
fn the_default_threshold_follows_the_attempts_and_an_explicit_one_wins() {
    let threshold = |config: &StackConfig| {
        config
            .build("payment")
            .unwrap()
            .breaker()
            .config()
            .failure_rate_threshold()
    };
    assert_eq!(threshold(&StackConfig::default()), 79.0);
    let mut config = StackConfig::default();
    config.retry.max_attempts = Some(1);
    assert_eq!(
        threshold(&config),
        50.0,
        "no retries: the breaker sees calls"
    );
    config.retry.max_attempts = Some(2);
    assert_eq!(threshold(&config), 71.0);
    config.breaker.failure_rate_threshold = Some(35.0);
    assert_eq!(threshold(&config), 35.0);
    // Built alone, a breaker keeps its crate's default.
    let alone = BreakerConfig::default().build("payment").unwrap();
    assert_eq!(alone.config().failure_rate_threshold(), 50.0);

    // The preset's own attempts are the ones the default assumes.
    let policy = StackConfig::default().build("payment").unwrap();
    assert_eq!(
        policy.retry().max_attempts(),
        RetryConfig::DEFAULT_MAX_ATTEMPTS
    );

    // Above what retries can hide ((n - 1) / n), and the attempt failure rate at which about
    // half the calls fail after all their attempts.
    for n in 1..=50_u32 {
        let t = BreakerConfig::default_failure_rate_threshold(n);
        let hidden = f64::from(n - 1) / f64::from(n) * 100.0;
        assert!(t > hidden, "{n} attempts: {t} <= {hidden}");
        // (Rounding to a whole percent moves it further off with many attempts.)
        if n <= 10 {
            let calls_failing = (t / 100.0).powf(f64::from(n));
            assert!(
                (0.45..0.55).contains(&calls_failing),
                "{n} attempts: {calls_failing}"
            );
        }
    }
}
