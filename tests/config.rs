//! Stacks from configuration files: validation with field paths, and reloads at run time.
#![cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "timeout",
    feature = "retry",
    feature = "serde"
))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use staunch::{
    BackoffStrategy, Error, JitterConfig, Registry, RegistryConfig, StackConfig, WindowConfig,
};
use tower::{Service, ServiceExt, service_fn};

const GOOD: &str = r#"
[payment]
timeout = "2s"
attempt_timeout = "250ms"

[payment.breaker]
failure_rate_threshold = 50.0
minimum_calls = 10
open_duration = "30s"
sliding_window = { kind = "time", duration = "1m", buckets = 60 }

[payment.bulkhead]
max_concurrent = 8
max_wait = "20ms"

[payment.retry]
max_attempts = 1
backoff = { strategy = "constant", base = "10ms", jitter = "none" }
budget = { ratio = 0.5, min_per_sec = 100, ttl = "10s" }

[inventory]
bulkhead = { max_concurrent = 64 }
"#;

fn toml(text: &str) -> RegistryConfig {
    toml::from_str(text).expect("valid TOML for the schema")
}

/// `GOOD` with one line replaced.
fn good_with(from: &str, to: &str) -> RegistryConfig {
    assert!(GOOD.contains(from), "{from:?} not in the config");
    toml(&GOOD.replace(from, to))
}

#[test]
fn a_file_is_read_into_every_layers_settings() {
    let config = toml(GOOD);
    let payment = &config.stacks["payment"];
    assert_eq!(payment.attempt_timeout, Some(Duration::from_millis(250)));
    assert_eq!(payment.timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        payment.breaker.sliding_window,
        Some(WindowConfig::Time {
            duration: Duration::from_mins(1),
            buckets: 60
        })
    );
    assert_eq!(payment.breaker.open_duration, Some(Duration::from_secs(30)));
    assert_eq!(payment.bulkhead.max_wait, Some(Duration::from_millis(20)));
    let backoff = payment.retry.backoff.unwrap();
    assert_eq!(backoff.strategy, BackoffStrategy::Constant);
    assert_eq!(backoff.jitter, Some(JitterConfig::None));
    assert_eq!(payment.retry.budget.unwrap().ratio, Some(0.5));

    let registry = Registry::new(&config).unwrap();
    assert_eq!(registry.names(), ["inventory", "payment"]);
    let payment = registry.handle("payment").unwrap();
    assert_eq!(payment.bulkhead().max_concurrent(), 8);
    assert_eq!(payment.bulkhead().max_wait(), Duration::from_millis(20));
    assert_eq!(
        payment.attempt_timeout().limit(),
        Duration::from_millis(250)
    );
    assert_eq!(payment.retry().max_attempts(), 1);
    assert_eq!(payment.budget().ratio(), 0.5);
    assert_eq!(payment.breaker().name(), "payment");
    // Unset settings keep the layers' defaults.
    let inventory = registry.handle("inventory").unwrap();
    assert_eq!(inventory.bulkhead().max_concurrent(), 64);
    assert_eq!(inventory.retry().max_attempts(), 3);
    assert_eq!(
        inventory.attempt_timeout().limit(),
        staunch::DEFAULT_ATTEMPT_TIMEOUT
    );
}

#[test]
fn a_bad_value_is_rejected_with_its_field_path() {
    let cases = [
        (
            "failure_rate_threshold = 50.0",
            "failure_rate_threshold = 150.0",
            "payment.breaker.failure_rate_threshold",
        ),
        (
            "buckets = 60",
            "buckets = 0",
            "payment.breaker.sliding_window.buckets",
        ),
        (
            "max_concurrent = 8",
            "max_concurrent = 0",
            "payment.bulkhead.max_concurrent",
        ),
        (
            "max_attempts = 1",
            "max_attempts = 0",
            "payment.retry.max_attempts",
        ),
        (
            "base = \"10ms\"",
            "base = \"0s\"",
            "payment.retry.backoff.base",
        ),
        ("ratio = 0.5", "ratio = -1.0", "payment.retry.budget.ratio"),
        (
            "attempt_timeout = \"250ms\"",
            "attempt_timeout = \"0s\"",
            "payment.attempt_timeout",
        ),
        ("timeout = \"2s\"", "timeout = \"0s\"", "payment.timeout"),
    ];
    for (from, to, path) in cases {
        let err = Registry::new(&good_with(from, to)).unwrap_err();
        assert_eq!(err.field(), path, "{to}: {err}");
        assert!(err.to_string().contains(path), "{err}");
    }
}

#[test]
fn malformed_files_are_rejected_by_the_parser_with_the_field() {
    // A typo must not fall back to a default silently.
    let err = toml::from_str::<RegistryConfig>(&GOOD.replace("minimum_calls", "minimum_call"))
        .unwrap_err();
    assert!(err.to_string().contains("minimum_call"), "{err}");
    // Durations are human: a bare number or nonsense is an error that says how to write one.
    let err = toml::from_str::<RegistryConfig>(&GOOD.replace("\"250ms\"", "\"quarter second\""))
        .unwrap_err();
    assert!(err.to_string().contains("250ms"), "{err}");
}

#[test]
fn json_round_trips_with_human_durations() {
    let config = toml(GOOD);
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains(r#""attempt_timeout":"250ms""#), "{json}");
    assert!(json.contains(r#""duration":"1m""#), "{json}");
    let back: RegistryConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);

    let one: StackConfig =
        serde_json::from_str(r#"{ "breaker": { "failure_rate_threshold": 0 } }"#).unwrap();
    let err = one.build("ledger").unwrap_err();
    assert_eq!(err.field(), "ledger.breaker.failure_rate_threshold");
}

type Request = http::Request<String>;

/// A dependency that always answers 503, counting the attempts it sees.
fn failing(
    calls: &Arc<AtomicU32>,
) -> impl Service<
    Request,
    Response = http::Response<String>,
    Error = std::io::Error,
    Future = impl Future<Output = Result<http::Response<String>, std::io::Error>> + Send,
> + Clone
+ Send
+ 'static {
    let calls = Arc::clone(calls);
    service_fn(move |_: Request| {
        calls.fetch_add(1, Ordering::SeqCst);
        async {
            Ok(http::Response::builder()
                .status(503)
                .body(String::new())
                .unwrap())
        }
    })
}

fn get() -> Request {
    http::Request::get("http://127.0.0.1/charge")
        .body(String::new())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_reload_takes_effect_for_new_calls_and_a_bad_one_keeps_the_old() {
    let registry = Registry::new(&toml(GOOD)).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let mut client = registry
        .http_client::<_, std::io::Error>("payment", failing(&calls))
        .unwrap();

    // One attempt per call.
    let res = client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.swap(0, Ordering::SeqCst), 1);

    // A good reload: three attempts per call, for the calls made from now on.
    registry
        .reload(&good_with("max_attempts = 1", "max_attempts = 3"))
        .unwrap();
    assert_eq!(
        registry.config("payment").unwrap().retry.max_attempts,
        Some(3)
    );
    let res = client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.swap(0, Ordering::SeqCst), 3);
    assert_eq!(
        registry
            .handle("payment")
            .unwrap()
            .retry()
            .metrics()
            .retries,
        2
    );

    // A bad reload is refused, naming the field, and the running stack stays as it was.
    let err = registry
        .reload(&good_with("max_concurrent = 8", "max_concurrent = 0"))
        .unwrap_err();
    assert_eq!(err.field(), "payment.bulkhead.max_concurrent");
    assert_eq!(
        registry
            .handle("payment")
            .unwrap()
            .bulkhead()
            .max_concurrent(),
        8
    );
    let res = client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.swap(0, Ordering::SeqCst), 3, "still three attempts");

    // All or nothing: a bad `inventory` keeps a good `payment` change from applying too.
    let mut mixed = good_with("max_attempts = 1", "max_attempts = 2");
    mixed
        .stacks
        .get_mut("inventory")
        .unwrap()
        .bulkhead
        .max_concurrent = Some(0);
    let err = registry.reload(&mixed).unwrap_err();
    assert_eq!(err.field(), "inventory.bulkhead.max_concurrent");
    assert_eq!(
        registry.handle("payment").unwrap().retry().max_attempts(),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_breaker_is_a_fresh_one() {
    let registry = Registry::new(&toml(GOOD)).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let mut client = registry
        .http_client::<_, std::io::Error>("payment", failing(&calls))
        .unwrap();
    registry.handle("payment").unwrap().breaker().force_open();
    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    assert!(matches!(err, Error::BreakerOpen(_)), "{err:?}");

    registry
        .reload(&good_with(
            "open_duration = \"30s\"",
            "open_duration = \"5s\"",
        ))
        .unwrap();
    let res = client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), 503, "the new breaker is closed");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_in_flight_finishes_on_the_old_stack() {
    let registry = Registry::new(&toml(GOOD)).unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::clone(&release);
    let inner = service_fn(move |_: Request| {
        let gate = Arc::clone(&gate);
        async move {
            gate.notified().await;
            Ok::<_, std::io::Error>(http::Response::new(String::from("done")))
        }
    });
    let client = registry
        .http_client::<_, std::io::Error>("payment", inner)
        .unwrap();
    let old = registry.handle("payment").unwrap();

    let mut first = client.clone();
    let in_flight = tokio::spawn(async move { first.ready().await?.call(get()).await });
    tokio::task::yield_now().await;
    assert_eq!(old.bulkhead().in_flight(), 1);

    // The reload drops `inventory` and gives `payment` new engines.
    let mut config = good_with("max_concurrent = 8", "max_concurrent = 4");
    config.stacks.remove("inventory");
    registry.reload(&config).unwrap();
    assert_eq!(registry.names(), ["payment"]);
    let new = registry.handle("payment").unwrap();
    assert_eq!(new.bulkhead().max_concurrent(), 4);
    assert_eq!(
        new.bulkhead().in_flight(),
        0,
        "the call in flight is on the old stack"
    );

    // A new call goes through the new stack while the old call is still running.
    let mut second = client.clone();
    let next = tokio::spawn(async move { second.ready().await?.call(get()).await });
    tokio::task::yield_now().await;
    assert_eq!(new.bulkhead().in_flight(), 1);
    assert_eq!(old.bulkhead().in_flight(), 1);

    release.notify_waiters();
    assert_eq!(in_flight.await.unwrap().unwrap().body(), "done");
    assert_eq!(next.await.unwrap().unwrap().body(), "done");
    assert_eq!(old.bulkhead().in_flight(), 0);
    assert_eq!(new.bulkhead().in_flight(), 0);
}

mod properties {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use proptest::prelude::*;
    use serde_json::Value;
    use staunch::{
        BackoffConfig, BackoffStrategy, BreakerConfig, BudgetConfig, BulkheadConfig, JitterConfig,
        RetryConfig, StackConfig, WindowConfig,
    };

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            (0u64..100_000).prop_map(Duration::from_millis),
            (0u64..10_000_000_000).prop_map(Duration::from_nanos),
        ]
    }

    /// A number as written in a file: a few decimals (JSON parsers may round a float with
    /// 17 significant digits by one unit in the last place).
    fn decimal(min: i32, max: i32) -> impl Strategy<Value = f64> {
        (min * 100..max * 100).prop_map(|x| f64::from(x) / 100.0)
    }

    fn rate() -> impl Strategy<Value = f64> {
        prop_oneof![Just(0.0), Just(100.0), decimal(-50, 250)]
    }

    fn window() -> impl Strategy<Value = WindowConfig> {
        prop_oneof![
            (0u32..300).prop_map(|size| WindowConfig::Count { size }),
            (duration(), 0u32..200)
                .prop_map(|(duration, buckets)| WindowConfig::Time { duration, buckets }),
        ]
    }

    fn breaker() -> impl Strategy<Value = BreakerConfig> {
        (
            (
                proptest::option::of(rate()),
                proptest::option::of(rate()),
                proptest::option::of(duration()),
                proptest::option::of(window()),
                proptest::option::of(0u32..200),
            ),
            (
                proptest::option::of(0u32..10),
                proptest::option::of(duration()),
                proptest::option::of(0u32..10),
                proptest::option::of(duration()),
            ),
        )
            .prop_map(|((f, s, sd, w, m), (c, o, p, h))| {
                let mut b = BreakerConfig::default();
                b.failure_rate_threshold = f;
                b.slow_call_rate_threshold = s;
                b.slow_call_duration = sd;
                b.sliding_window = w;
                b.minimum_calls = m;
                b.consecutive_failures = c;
                b.open_duration = o;
                b.permitted_calls_in_half_open = p;
                b.max_half_open_duration = h;
                b
            })
    }

    fn backoff() -> impl Strategy<Value = BackoffConfig> {
        (
            prop_oneof![
                Just(BackoffStrategy::Constant),
                Just(BackoffStrategy::Linear),
                Just(BackoffStrategy::Exponential),
                Just(BackoffStrategy::Fibonacci),
                Just(BackoffStrategy::Decorrelated),
            ],
            duration(),
            proptest::option::of(decimal(0, 4)),
            proptest::option::of(prop_oneof![
                Just(JitterConfig::None),
                Just(JitterConfig::Full),
                Just(JitterConfig::Equal),
                decimal(-1, 2).prop_map(JitterConfig::Proportional),
            ]),
            proptest::option::of(duration()),
            proptest::option::of(duration()),
        )
            .prop_map(
                |(strategy, base, multiplier, jitter, max_delay, max_elapsed)| {
                    let mut backoff = BackoffConfig::new(strategy, base);
                    backoff.multiplier = multiplier;
                    backoff.jitter = jitter;
                    backoff.max_delay = max_delay;
                    backoff.max_elapsed = max_elapsed;
                    backoff.seed = Some(7);
                    backoff
                },
            )
    }

    fn stack() -> impl Strategy<Value = StackConfig> {
        (
            proptest::option::of(duration()),
            proptest::option::of(duration()),
            breaker(),
            (
                proptest::option::of(0usize..100),
                proptest::option::of(duration()),
                proptest::option::of(0usize..100),
            ),
            (
                proptest::option::of(0u32..6),
                proptest::option::of(backoff()),
                proptest::option::of(duration()),
                proptest::option::of((
                    proptest::option::of(decimal(-1, 2)),
                    proptest::option::of(0u32..100),
                    proptest::option::of(duration()),
                )),
            ),
        )
            .prop_map(
                |(timeout, attempt, breaker, (mc, mw, mq), (ma, bo, mra, bu))| {
                    let mut config = StackConfig::default();
                    config.timeout = timeout;
                    config.attempt_timeout = attempt;
                    config.breaker = breaker;
                    let mut bulkhead = BulkheadConfig::default();
                    bulkhead.max_concurrent = mc;
                    bulkhead.max_wait = mw;
                    bulkhead.max_queued = mq;
                    config.bulkhead = bulkhead;
                    let mut retry = RetryConfig::default();
                    retry.max_attempts = ma;
                    retry.backoff = bo;
                    retry.max_retry_after = mra;
                    retry.budget = bu.map(|(ratio, min_per_sec, ttl)| {
                        let mut b = BudgetConfig::default();
                        b.ratio = ratio;
                        b.min_per_sec = min_per_sec;
                        b.ttl = ttl;
                        b
                    });
                    config.retry = retry;
                    config
                },
            )
    }

    /// Every dotted path of a JSON document: `breaker`, `breaker.minimum_calls`, ...
    fn paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        if let Value::Object(map) = value {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                paths(value, &path, out);
                out.insert(path);
            }
        }
    }

    /// Every field a configuration file can set: the paths of two fully set configurations
    /// (one per kind of sliding window).
    fn schema() -> BTreeSet<String> {
        let full = |window| {
            let mut config = StackConfig::default();
            config.timeout = Some(Duration::from_secs(1));
            config.attempt_timeout = Some(Duration::from_secs(1));
            let b = &mut config.breaker;
            b.failure_rate_threshold = Some(1.0);
            b.slow_call_rate_threshold = Some(1.0);
            b.slow_call_duration = Some(Duration::from_secs(1));
            b.sliding_window = Some(window);
            b.minimum_calls = Some(1);
            b.consecutive_failures = Some(1);
            b.open_duration = Some(Duration::from_secs(1));
            b.permitted_calls_in_half_open = Some(1);
            b.max_half_open_duration = Some(Duration::from_secs(1));
            config.bulkhead.max_concurrent = Some(1);
            config.bulkhead.max_wait = Some(Duration::from_secs(1));
            config.bulkhead.max_queued = Some(1);
            config.retry.max_attempts = Some(1);
            config.retry.max_retry_after = Some(Duration::from_secs(1));
            config.retry.retry_non_idempotent = Some(true);
            let mut backoff = BackoffConfig::new(BackoffStrategy::Linear, Duration::from_secs(1));
            backoff.multiplier = Some(2.0);
            backoff.step = Some(Duration::from_secs(1));
            backoff.jitter = Some(JitterConfig::Full);
            backoff.max_delay = Some(Duration::from_secs(1));
            backoff.max_elapsed = Some(Duration::from_secs(1));
            backoff.seed = Some(1);
            config.retry.backoff = Some(backoff);
            let mut budget = BudgetConfig::default();
            budget.ratio = Some(0.1);
            budget.min_per_sec = Some(1);
            budget.ttl = Some(Duration::from_secs(1));
            config.retry.budget = Some(budget);
            serde_json::to_value(config).unwrap()
        };
        let mut out = BTreeSet::new();
        paths(&full(WindowConfig::Count { size: 1 }), "", &mut out);
        paths(
            &full(WindowConfig::Time {
                duration: Duration::from_secs(1),
                buckets: 1,
            }),
            "",
            &mut out,
        );
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any configuration, valid or not, survives a trip through TOML and JSON unchanged,
        /// and building it either succeeds or names a field a file can actually set.
        #[test]
        fn files_round_trip_and_errors_name_real_fields(config in stack()) {
            let json = serde_json::to_string(&config).unwrap();
            prop_assert_eq!(&serde_json::from_str::<StackConfig>(&json).unwrap(), &config);
            let text = toml::to_string(&config).unwrap();
            prop_assert_eq!(&toml::from_str::<StackConfig>(&text).unwrap(), &config);

            if let Err(err) = config.build("svc") {
                let field = err.field().strip_prefix("svc.").unwrap_or_else(|| {
                    panic!("`{}` does not start with the stack's name", err.field())
                });
                prop_assert!(
                    schema().contains(field),
                    "`{}` is not a field of the file ({})", field, err
                );
            }
        }
    }
}
