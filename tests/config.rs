//! Stacks from configuration files: validation with field paths, and reloads at run time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use staunch::timeout::Deadline;
use staunch::{
    AdaptiveConfig, BackoffStrategy, Error, HeaderFormatConfig, JitterConfig,
    PartitionedBulkheadConfig, Registry, RegistryConfig, StackConfig, WindowConfig,
};
use tower::{Layer, Service, ServiceExt, service_fn};

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

    // The reload drops `inventory` and gives `payment` a new bulkhead: its `max_wait`
    // changes too (a new limit alone resizes the running bulkhead, which keeps counting the
    // calls in flight: tests/reload.rs).
    let mut config = good_with(
        "max_concurrent = 8\nmax_wait = \"20ms\"",
        "max_concurrent = 4\nmax_wait = \"10ms\"",
    );
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

const SECTIONS: &str = r#"
[payment]
attempt_timeout = "250ms"

[payment.bulkhead]
max_concurrent = 8
adaptive = { algorithm = "aimd", min_limit = 2, max_limit = 16, backoff_ratio = 0.5, latency_threshold = "200ms" }

[payment.hedge]
delay = "50ms"
percentile = 0.95
min_samples = 20

[payment.deadline.outgoing]
margin = "50ms"
header = "x-deadline"
format = "millis"
grpc = true

[payment.deadline.incoming]
budget = "10s"
header = ""
grpc = true

[inventory.bulkhead]
adaptive = { algorithm = "vegas", max_limit = 64, alpha = 2.0, beta = 4.0, probe_every = 500 }
"#;

const SECTIONS_JSON: &str = r#"{
  "payment": {
    "attempt_timeout": "250ms",
    "bulkhead": {
      "max_concurrent": 8,
      "adaptive": { "algorithm": "aimd", "min_limit": 2, "max_limit": 16,
                    "backoff_ratio": 0.5, "latency_threshold": "200ms" }
    },
    "hedge": { "delay": "50ms", "percentile": 0.95, "min_samples": 20 },
    "deadline": {
      "outgoing": { "margin": "50ms", "header": "x-deadline", "format": "millis", "grpc": true },
      "incoming": { "budget": "10s", "header": "", "grpc": true }
    }
  },
  "inventory": {
    "bulkhead": {
      "adaptive": { "algorithm": "vegas", "max_limit": 64, "alpha": 2.0, "beta": 4.0,
                    "probe_every": 500 }
    }
  }
}"#;

#[test]
fn adaptive_hedge_and_deadline_sections_parse_from_toml_and_json() {
    let config = toml(SECTIONS);
    let payment = &config.stacks["payment"];
    let Some(AdaptiveConfig::Aimd(aimd)) = &payment.bulkhead.adaptive else {
        panic!("not an AIMD limit: {:?}", payment.bulkhead.adaptive);
    };
    assert_eq!((aimd.min_limit, aimd.max_limit), (Some(2), Some(16)));
    assert_eq!(aimd.backoff_ratio, Some(0.5));
    assert_eq!(aimd.latency_threshold, Some(Duration::from_millis(200)));
    let hedge = payment.hedge.unwrap();
    assert_eq!(hedge.delay, Some(Duration::from_millis(50)));
    assert_eq!(
        (hedge.percentile, hedge.min_samples),
        (Some(0.95), Some(20))
    );
    let deadline = payment.deadline.as_ref().unwrap();
    let outgoing = deadline.outgoing.as_ref().unwrap();
    assert_eq!(outgoing.margin, Some(Duration::from_millis(50)));
    assert_eq!(outgoing.header.as_deref(), Some("x-deadline"));
    assert_eq!(outgoing.format, Some(HeaderFormatConfig::Millis));
    assert_eq!(outgoing.grpc, Some(true));
    let incoming = deadline.incoming.as_ref().unwrap();
    assert_eq!(incoming.budget, Some(Duration::from_secs(10)));
    assert_eq!(incoming.header.as_deref(), Some(""));
    let Some(AdaptiveConfig::Vegas(vegas)) = &config.stacks["inventory"].bulkhead.adaptive else {
        panic!("not a Vegas limit");
    };
    assert_eq!((vegas.min_limit, vegas.max_limit), (None, Some(64)));
    assert_eq!((vegas.alpha, vegas.beta), (Some(2.0), Some(4.0)));
    assert_eq!(vegas.probe_every, Some(500));

    let json: RegistryConfig = serde_json::from_str(SECTIONS_JSON).unwrap();
    assert_eq!(json, config);

    let registry = Registry::new(&config).unwrap();
    let payment = registry.handle("payment").unwrap();
    assert!(payment.hedge().is_some());
    assert!(payment.outgoing_deadline().is_some());
    assert!(payment.incoming_deadline().is_some());
    let inventory = registry.handle("inventory").unwrap();
    assert!(inventory.hedge().is_none() && inventory.outgoing_deadline().is_none());
    // Unset sections change nothing: the defaults of a stack without them.
    assert_eq!(StackConfig::default().hedge, None);
    assert_eq!(StackConfig::default().deadline, None);
    assert_eq!(StackConfig::default().bulkhead.adaptive, None);
}

#[test]
fn a_bad_value_in_a_new_section_is_rejected_with_its_path() {
    let cases = [
        (
            "max_limit = 16, backoff_ratio",
            "max_limit = 1, backoff_ratio",
            "payment.bulkhead.adaptive.max_limit",
        ),
        (
            "min_limit = 2,",
            "min_limit = 0,",
            "payment.bulkhead.adaptive.min_limit",
        ),
        (
            "min_limit = 2,",
            "min_limit = 9,",
            "payment.bulkhead.max_concurrent",
        ),
        (
            "backoff_ratio = 0.5",
            "backoff_ratio = 1.5",
            "payment.bulkhead.adaptive.backoff_ratio",
        ),
        (
            "latency_threshold = \"200ms\"",
            "latency_threshold = \"0s\"",
            "payment.bulkhead.adaptive.latency_threshold",
        ),
        (
            "beta = 4.0",
            "beta = 2.0",
            "inventory.bulkhead.adaptive.beta",
        ),
        (
            "probe_every = 500",
            "probe_every = 0",
            "inventory.bulkhead.adaptive.probe_every",
        ),
        ("delay = \"50ms\"", "delay = \"0s\"", "payment.hedge.delay"),
        ("delay = \"50ms\"", "", "payment.hedge.delay"),
        (
            "percentile = 0.95",
            "percentile = 1.0",
            "payment.hedge.percentile",
        ),
        ("percentile = 0.95", "", "payment.hedge.min_samples"),
        (
            "header = \"x-deadline\"",
            "header = \"x deadline\"",
            "payment.deadline.outgoing.header",
        ),
        (
            "header = \"x-deadline\"",
            "header = \"grpc-timeout\"",
            "payment.deadline.outgoing.header",
        ),
        (
            "header = \"x-deadline\"\nformat = \"millis\"\ngrpc = true",
            "header = \"\"\ngrpc = false",
            "payment.deadline.outgoing.header",
        ),
        (
            "budget = \"10s\"",
            "budget = \"0s\"",
            "payment.deadline.incoming.budget",
        ),
    ];
    for (from, to, path) in cases {
        assert!(SECTIONS.contains(from), "{from:?} not in the config");
        let config = toml(&SECTIONS.replacen(from, to, 1));
        let err = Registry::new(&config).expect_err(path);
        assert_eq!(err.field(), path, "{from:?} -> {to:?}: {err}");
    }

    // The parser rejects unknown fields and algorithms, naming them.
    for (from, to, needle) in [
        ("min_samples = 20", "min_sample = 20", "min_sample"),
        ("algorithm = \"aimd\"", "algorithm = \"cubic\"", "cubic"),
        ("alpha = 2.0", "gamma = 2.0", "gamma"),
        ("format = \"millis\"", "format = \"seconds\"", "seconds"),
        ("margin = \"50ms\"", "margin = \"soon\"", "soon"),
    ] {
        let text = SECTIONS.replacen(from, to, 1);
        let err = toml::from_str::<RegistryConfig>(&text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err}");
    }
}

/// A dependency that answers after `delay`, or fails when `fail` is set.
fn slow(
    delay: Duration,
    fail: bool,
) -> impl Service<
    Request,
    Response = http::Response<String>,
    Error = std::io::Error,
    Future = impl Future<Output = Result<http::Response<String>, std::io::Error>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_: Request| async move {
        tokio::time::sleep(delay).await;
        if fail {
            Err(std::io::Error::other("boom"))
        } else {
            Ok(http::Response::new(String::new()))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_moves_the_built_bulkhead() {
    let config = toml(SECTIONS);
    let mut payment = config.stacks["payment"].clone();
    payment.retry.max_attempts = Some(1);

    // AIMD, latency threshold 200 ms, ratio 0.5: a fast call keeps the limit, a slow success
    // halves it, down to the floor of 2.
    let (mut client, handle) =
        staunch::http::client("payment", slow(Duration::from_millis(100), false), &payment)
            .unwrap();
    client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(handle.bulkhead().max_concurrent(), 8);
    let (mut slow_client, handle) =
        staunch::http::client("payment", slow(Duration::from_millis(240), false), &payment)
            .unwrap();
    slow_client
        .ready()
        .await
        .unwrap()
        .call(get())
        .await
        .unwrap();
    assert_eq!(handle.bulkhead().max_concurrent(), 4);
    slow_client
        .ready()
        .await
        .unwrap()
        .call(get())
        .await
        .unwrap();
    assert_eq!(handle.bulkhead().max_concurrent(), 2);
    slow_client
        .ready()
        .await
        .unwrap()
        .call(get())
        .await
        .unwrap();
    assert_eq!(handle.bulkhead().max_concurrent(), 2);

    // Without the section the same slow calls leave the limit alone.
    let mut fixed = payment.clone();
    fixed.bulkhead.adaptive = None;
    let (mut client, handle) =
        staunch::http::client("payment", slow(Duration::from_millis(240), false), &fixed).unwrap();
    client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(handle.bulkhead().max_concurrent(), 8);

    // Vegas (initial 25, ratio 0.9 by default): a failure cuts the limit.
    let mut inventory = config.stacks["inventory"].clone();
    inventory.retry.max_attempts = Some(1);
    let (mut client, handle) = staunch::http::client(
        "inventory",
        slow(Duration::from_millis(10), true),
        &inventory,
    )
    .unwrap();
    assert_eq!(handle.bulkhead().max_concurrent(), 25);
    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    assert!(matches!(err, Error::Inner(_)), "{err:?}");
    assert_eq!(handle.bulkhead().max_concurrent(), 22);
}

/// A dependency answering with the headers it received.
fn echo_headers() -> impl Service<
    Request,
    Response = http::Response<String>,
    Error = std::io::Error,
    Future = impl Future<Output = Result<http::Response<String>, std::io::Error>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(|req: Request| async move {
        let mut res = http::Response::new(String::new());
        *res.headers_mut() = req.headers().clone();
        Ok(res)
    })
}

#[tokio::test(start_paused = true)]
async fn the_http_preset_propagates_the_attempts_deadline() {
    let config: StackConfig =
        toml::from_str("attempt_timeout = \"250ms\"\n[deadline.outgoing]\nmargin = \"50ms\"\n")
            .unwrap();
    let (mut client, _) = staunch::http::client("payment", echo_headers(), &config).unwrap();

    // No deadline of its own: the attempt's 250 ms, minus the 50 ms margin.
    let sent = client
        .ready()
        .await
        .unwrap()
        .call(get())
        .await
        .unwrap()
        .into_parts()
        .0
        .headers;
    assert_eq!(sent["x-request-timeout"], "200000u");
    assert!(sent.get("grpc-timeout").is_none());

    // A shorter deadline on the request wins.
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(120)));
    let sent = client
        .ready()
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap()
        .into_parts()
        .0
        .headers;
    // (70 ms in whole nanoseconds fits the format's eight digits.)
    assert_eq!(sent["x-request-timeout"], "70000000n");

    // No time left after the margin: not sent at all (a rejection, not a timeout).
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(40)));
    let err = client.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(matches!(err, Error::DeadlineExpired(_)), "{err:?}");

    // Another header, another syntax, and grpc-timeout too.
    let mut other = config.clone();
    let outgoing = other.deadline.as_mut().unwrap().outgoing.as_mut().unwrap();
    outgoing.header = Some("x-deadline-ms".into());
    outgoing.format = Some(HeaderFormatConfig::Millis);
    outgoing.grpc = Some(true);
    let (mut client, _) = staunch::http::client("payment", echo_headers(), &other).unwrap();
    let sent = client
        .ready()
        .await
        .unwrap()
        .call(get())
        .await
        .unwrap()
        .into_parts()
        .0
        .headers;
    assert_eq!(sent["x-deadline-ms"], "200");
    assert_eq!(sent["grpc-timeout"], "200000u");
    assert!(sent.get("x-request-timeout").is_none());

    // Without the section nothing is written.
    let (mut client, _) =
        staunch::http::client("payment", echo_headers(), &StackConfig::default()).unwrap();
    let sent = client
        .ready()
        .await
        .unwrap()
        .call(get())
        .await
        .unwrap()
        .into_parts()
        .0
        .headers;
    assert!(sent.is_empty(), "{sent:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reload_turns_deadline_propagation_on_for_registry_clients() {
    let mut config = toml("[payment]\nattempt_timeout = \"250ms\"\n");
    let registry = Registry::new(&config).unwrap();
    let mut client = registry
        .http_client::<_, std::io::Error>("payment", echo_headers())
        .unwrap();
    let res = client.ready().await.unwrap().call(get()).await.unwrap();
    assert!(res.headers().get("x-request-timeout").is_none());

    config = toml("[payment]\nattempt_timeout = \"250ms\"\ndeadline.outgoing.margin = \"0s\"\n");
    registry.reload(&config).unwrap();
    let res = client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.headers()["x-request-timeout"], "250000u");
}

#[test]
fn a_partitioned_bulkhead_is_read_from_a_file_and_limits_each_key() {
    let text = r#"
default_limit = 1
global_limit = 3
max_partitions = 8
max_wait = "10ms"
max_queued = 2

[partitions]
big = 2
"#;
    let config: PartitionedBulkheadConfig = toml::from_str(text).unwrap();
    assert_eq!(config.partitions.get("big"), Some(&2));
    assert_eq!(config.default_limit, Some(1));
    assert_eq!(config.global_limit, Some(3));
    assert_eq!(config.max_partitions, Some(8));
    assert_eq!(config.max_wait, Some(Duration::from_millis(10)));
    assert_eq!(config.max_queued, Some(2));
    let json: PartitionedBulkheadConfig = serde_json::from_str(
        r#"{ "default_limit": 1, "global_limit": 3, "max_partitions": 8, "max_wait": "10ms",
             "max_queued": 2, "partitions": { "big": 2 } }"#,
    )
    .unwrap();
    assert_eq!(json, config);
    let again: PartitionedBulkheadConfig =
        toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);

    let tenants = config.build("search").unwrap();
    let key = |k: &str| k.to_owned();
    let big = (
        tenants.try_acquire(&key("big")).unwrap(),
        tenants.try_acquire(&key("big")).unwrap(),
    );
    assert!(tenants.try_acquire(&key("big")).is_err(), "big has 2");
    let small = tenants.try_acquire(&key("small")).unwrap();
    assert!(tenants.try_acquire(&key("small")).is_err(), "others have 1");
    // The global cap (3) is reached: another key is refused too.
    assert!(tenants.try_acquire(&key("other")).is_err(), "global cap");
    drop((big, small));
    assert!(tenants.try_acquire(&key("other")).is_ok());

    for (from, to, path) in [
        ("big = 2", "big = 0", "search.partitions.big"),
        (
            "default_limit = 1",
            "default_limit = 0",
            "search.default_limit",
        ),
        (
            "global_limit = 3",
            "global_limit = 0",
            "search.global_limit",
        ),
        (
            "max_partitions = 8",
            "max_partitions = 0",
            "search.max_partitions",
        ),
    ] {
        let config: PartitionedBulkheadConfig = toml::from_str(&text.replace(from, to)).unwrap();
        let err = config.build("search").unwrap_err();
        assert_eq!(err.field(), path, "{err}");
    }
    let err = toml::from_str::<PartitionedBulkheadConfig>(&text.replace("max_queued", "queued"))
        .unwrap_err();
    assert!(err.to_string().contains("queued"), "{err}");
    // Read through staunch's loaders, a layer's own section names the path and refuses an
    // array, as the stack's sections do.
    let err =
        staunch::settings::from_toml::<PartitionedBulkheadConfig>("max_wait = 5").unwrap_err();
    assert_eq!(err.field(), "max_wait", "{err}");
    let err = staunch::settings::from_json::<PartitionedBulkheadConfig>(r#"{ "partitions": [1] }"#)
        .unwrap_err();
    assert_eq!(err.field(), "partitions", "{err}");
    let err =
        staunch::settings::from_json::<staunch::BulkheadConfig>(r#"[32, "20ms"]"#).unwrap_err();
    assert!(err.rule().contains("table of bulkhead settings"), "{err}");
}

#[test]
fn the_new_public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<AdaptiveConfig>();
    assert_send_sync::<staunch::HedgeConfig>();
    assert_send_sync::<staunch::DeadlineConfig>();
    assert_send_sync::<
        staunch::http::AttemptDeadline<
            tower::util::BoxCloneSyncService<Request, http::Response<String>, staunch::BoxError>,
        >,
    >();
    assert_send_sync::<
        staunch::http::AttemptDeadlineFuture<std::future::Ready<Result<(), std::io::Error>>>,
    >();
}

#[tokio::test(start_paused = true)]
async fn the_incoming_deadline_layer_reads_the_callers_time_capped_by_the_budget() {
    let config: StackConfig =
        toml::from_str("[deadline.incoming]\nbudget = \"1s\"\nheader = \"x-deadline\"\n").unwrap();
    let handle = config.build("payment").unwrap();
    let layer = handle.incoming_deadline().unwrap().clone();
    let mut server = layer.layer(service_fn(|req: Request| async move {
        Ok::<_, std::io::Error>(Deadline::of(&req).map(|d| d.remaining()))
    }));
    let mut req = get();
    req.headers_mut()
        .insert("x-deadline", http::HeaderValue::from_static("300m"));
    let left = server.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(left, Some(Duration::from_millis(300)));
    let mut req = get();
    req.headers_mut()
        .insert("x-deadline", http::HeaderValue::from_static("5S"));
    let left = server.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(left, Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_is_sent_after_the_configured_delay() {
    let config: StackConfig = toml::from_str("[hedge]\ndelay = \"50ms\"\n").unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    // The first attempt hangs for 10 s, the hedge answers at once.
    let inner = service_fn(move |_: Request| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Ok::<_, std::io::Error>(http::Response::new(format!("attempt {n}")))
        }
    });
    let (client, handle) = staunch::http::client("payment", inner, &config).unwrap();
    let mut hedged = handle.hedge().expect("hedge configured").layer(client);

    let started = tokio::time::Instant::now();
    let call = hedged.ready().await.unwrap().call(get());
    tokio::pin!(call);
    // The first poll sends the first attempt and arms the hedge timer.
    tokio::select! {
        biased;
        _ = &mut call => panic!("answered at once"),
        () = std::future::ready(()) => {}
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(49)).await;
    tokio::select! {
        biased;
        _ = &mut call => panic!("answered before the hedge"),
        () = std::future::ready(()) => {}
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "hedged before the delay");
    let res = call.await.unwrap();
    assert_eq!(res.body(), "attempt 1");
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A percentile delay uses `delay` until enough calls were seen.
    let config: StackConfig =
        toml::from_str("[hedge]\ndelay = \"30ms\"\npercentile = 0.9\n").unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let inner = service_fn(move |_: Request| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Ok::<_, std::io::Error>(http::Response::new(format!("attempt {n}")))
        }
    });
    let (client, handle) = staunch::http::client("payment", inner, &config).unwrap();
    let mut hedged = handle.hedge().unwrap().layer(client);
    let started = tokio::time::Instant::now();
    let res = hedged.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.body(), "attempt 1");
    assert_eq!(started.elapsed(), Duration::from_millis(30));

    // Without the section there is no hedge.
    assert!(
        StackConfig::default()
            .build("payment")
            .unwrap()
            .hedge()
            .is_none()
    );
}

mod properties {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use std::future::Future;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Once};

    use proptest::prelude::*;
    use serde_json::Value;
    use staunch::{
        AdaptiveConfig, AimdConfig, BackoffConfig, BackoffStrategy, BreakerConfig, BudgetConfig,
        BulkheadConfig, DeadlineConfig, HeaderFormatConfig, HedgeConfig, IncomingDeadlineConfig,
        JitterConfig, OutgoingDeadlineConfig, RetryConfig, StackConfig, VegasConfig, WindowConfig,
    };
    use staunch::{Registry, RegistryConfig};
    use tower::{Layer, Service, ServiceExt};

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

    fn limit() -> impl Strategy<Value = usize> {
        prop_oneof![Just(0usize), 1usize..100, Just(1_000_000_000)]
    }

    fn adaptive() -> impl Strategy<Value = AdaptiveConfig> {
        prop_oneof![
            (
                proptest::option::of(limit()),
                proptest::option::of(limit()),
                proptest::option::of(decimal(-1, 2)),
                proptest::option::of(duration()),
            )
                .prop_map(|(min, max, ratio, threshold)| {
                    let mut a = AimdConfig::default();
                    a.min_limit = min;
                    a.max_limit = max;
                    a.backoff_ratio = ratio;
                    a.latency_threshold = threshold;
                    AdaptiveConfig::Aimd(a)
                }),
            (
                proptest::option::of(limit()),
                proptest::option::of(limit()),
                proptest::option::of(decimal(-2, 10)),
                proptest::option::of(decimal(-2, 10)),
                proptest::option::of(decimal(-1, 2)),
                proptest::option::of(0u64..2000),
            )
                .prop_map(|(min, max, alpha, beta, ratio, probe)| {
                    let mut v = VegasConfig::default();
                    v.min_limit = min;
                    v.max_limit = max;
                    v.alpha = alpha;
                    v.beta = beta;
                    v.backoff_ratio = ratio;
                    v.probe_every = probe;
                    AdaptiveConfig::Vegas(v)
                }),
        ]
    }

    fn hedge() -> impl Strategy<Value = HedgeConfig> {
        (
            proptest::option::of(duration()),
            proptest::option::of(decimal(-1, 2)),
            proptest::option::of(0u64..1000),
        )
            .prop_map(|(delay, percentile, min_samples)| {
                let mut h = HedgeConfig::default();
                h.delay = delay;
                h.percentile = percentile;
                h.min_samples = min_samples;
                h
            })
    }

    fn header() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("x-request-timeout".to_owned()),
            Just("x-deadline-ms".to_owned()),
            Just("grpc-timeout".to_owned()),
            Just("not a header".to_owned()),
        ]
    }

    fn format() -> impl Strategy<Value = HeaderFormatConfig> {
        prop_oneof![
            Just(HeaderFormatConfig::GrpcTimeout),
            Just(HeaderFormatConfig::Millis)
        ]
    }

    fn deadline() -> impl Strategy<Value = DeadlineConfig> {
        let headers = || {
            (
                proptest::option::of(duration()),
                proptest::option::of(header()),
                proptest::option::of(format()),
                proptest::option::of(any::<bool>()),
            )
        };
        (
            proptest::option::of(headers()),
            proptest::option::of(headers()),
        )
            .prop_map(|(outgoing, incoming)| {
                let mut d = DeadlineConfig::default();
                d.outgoing = outgoing.map(|(margin, header, format, grpc)| {
                    let mut o = OutgoingDeadlineConfig::default();
                    o.margin = margin;
                    o.header = header;
                    o.format = format;
                    o.grpc = grpc;
                    o
                });
                d.incoming = incoming.map(|(budget, header, format, grpc)| {
                    let mut i = IncomingDeadlineConfig::default();
                    i.budget = budget;
                    i.header = header;
                    i.format = format;
                    i.grpc = grpc;
                    i
                });
                d
            })
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
                proptest::option::of(adaptive()),
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
            (
                proptest::option::of(hedge()),
                proptest::option::of(deadline()),
            ),
        )
            .prop_map(
                |(timeout, attempt, breaker, (mc, mw, mq, ad), (ma, bo, mra, bu), (he, de))| {
                    let mut config = StackConfig::default();
                    config.timeout = timeout;
                    config.attempt_timeout = attempt;
                    config.breaker = breaker;
                    let mut bulkhead = BulkheadConfig::default();
                    bulkhead.max_concurrent = mc;
                    bulkhead.max_wait = mw;
                    bulkhead.max_queued = mq;
                    bulkhead.adaptive = ad;
                    config.bulkhead = bulkhead;
                    config.hedge = he;
                    config.deadline = de;
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
    /// (one per kind of sliding window and of adaptive limit).
    fn schema() -> BTreeSet<String> {
        let full = |window, adaptive| {
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
            config.bulkhead.adaptive = Some(adaptive);
            let mut hedge = HedgeConfig::fixed(Duration::from_secs(1));
            hedge.percentile = Some(0.5);
            hedge.min_samples = Some(1);
            config.hedge = Some(hedge);
            let mut outgoing = OutgoingDeadlineConfig::default();
            outgoing.margin = Some(Duration::from_secs(1));
            outgoing.header = Some("x".into());
            outgoing.format = Some(HeaderFormatConfig::Millis);
            outgoing.grpc = Some(true);
            let mut incoming = IncomingDeadlineConfig::default();
            incoming.budget = Some(Duration::from_secs(1));
            incoming.header = Some("x".into());
            incoming.format = Some(HeaderFormatConfig::Millis);
            incoming.grpc = Some(true);
            let mut deadline = DeadlineConfig::default();
            deadline.outgoing = Some(outgoing);
            deadline.incoming = Some(incoming);
            config.deadline = Some(deadline);
            serde_json::to_value(config).unwrap()
        };
        let mut out = BTreeSet::new();
        let mut aimd = AimdConfig::default();
        aimd.min_limit = Some(1);
        aimd.max_limit = Some(1);
        aimd.backoff_ratio = Some(0.5);
        aimd.latency_threshold = Some(Duration::from_secs(1));
        let mut vegas = VegasConfig::default();
        vegas.min_limit = Some(1);
        vegas.max_limit = Some(1);
        vegas.alpha = Some(1.0);
        vegas.beta = Some(2.0);
        vegas.backoff_ratio = Some(0.5);
        vegas.probe_every = Some(1);
        paths(
            &full(WindowConfig::Count { size: 1 }, AdaptiveConfig::Aimd(aimd)),
            "",
            &mut out,
        );
        paths(
            &full(
                WindowConfig::Time {
                    duration: Duration::from_secs(1),
                    buckets: 1,
                },
                AdaptiveConfig::Vegas(vegas),
            ),
            "",
            &mut out,
        );
        out
    }

    /// Durations a file or a builder may hold, the extremes included.
    fn wild_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::from_nanos(1)),
            Just(Duration::MAX),
            Just(Duration::from_secs(u64::MAX)),
            Just(staunch::core::FAR_FUTURE),
            (0u64..100_000).prop_map(Duration::from_millis),
            any::<u64>().prop_map(Duration::from_nanos),
            any::<u64>().prop_map(Duration::from_secs),
        ]
    }

    /// Numbers a file may hold: NaN, the infinities and huge values included.
    fn wild_float() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            decimal(-2, 200),
        ]
    }

    /// Any stack, with extreme values thrown into its duration and number fields.
    fn hostile_stack() -> impl Strategy<Value = StackConfig> {
        let d = || proptest::option::of(wild_duration());
        let f = || proptest::option::of(wild_float());
        (
            stack(),
            (d(), d(), d(), d(), d(), d(), d(), d()),
            (d(), d(), d(), d()),
            (f(), f(), f(), f(), f(), f(), f(), f()),
        )
            .prop_map(|(mut c, durations, more, floats)| {
                let (timeout, attempt, slow, open, half_open, wait, after, delay) = durations;
                let (base, max_delay, margin, budget) = more;
                let (failure, slow_rate, ratio, multiplier, percentile, alpha, beta, backoff) =
                    floats;
                let or = |v: &mut Option<Duration>, w: Option<Duration>| {
                    if w.is_some() {
                        *v = w;
                    }
                };
                or(&mut c.timeout, timeout);
                or(&mut c.attempt_timeout, attempt);
                or(&mut c.breaker.slow_call_duration, slow);
                or(&mut c.breaker.open_duration, open);
                or(&mut c.breaker.max_half_open_duration, half_open);
                or(&mut c.bulkhead.max_wait, wait);
                or(&mut c.retry.max_retry_after, after);
                if let Some(hedge) = &mut c.hedge {
                    or(&mut hedge.delay, delay);
                    hedge.percentile = percentile.or(hedge.percentile);
                }
                if let Some(b) = &mut c.retry.backoff {
                    if let Some(base) = base {
                        b.base = base;
                    }
                    or(&mut b.max_delay, max_delay);
                    b.multiplier = multiplier.or(b.multiplier);
                }
                if let Some(budget_config) = &mut c.retry.budget {
                    budget_config.ratio = ratio.or(budget_config.ratio);
                }
                if let Some(deadline) = &mut c.deadline {
                    if let Some(o) = &mut deadline.outgoing {
                        or(&mut o.margin, margin);
                    }
                    if let Some(i) = &mut deadline.incoming {
                        or(&mut i.budget, budget);
                    }
                }
                c.breaker.failure_rate_threshold = failure.or(c.breaker.failure_rate_threshold);
                c.breaker.slow_call_rate_threshold =
                    slow_rate.or(c.breaker.slow_call_rate_threshold);
                match &mut c.bulkhead.adaptive {
                    Some(AdaptiveConfig::Vegas(v)) => {
                        v.alpha = alpha.or(v.alpha);
                        v.beta = beta.or(v.beta);
                        v.backoff_ratio = backoff.or(v.backoff_ratio);
                    }
                    Some(AdaptiveConfig::Aimd(a)) => a.backoff_ratio = backoff.or(a.backoff_ratio),
                    _ => {}
                }
                c
            })
    }

    /// A hostile stack repaired until it builds: each field a build refuses is dropped (and
    /// its section, when the section then no longer reads), so what is left is a usable
    /// configuration that keeps every extreme value the builders accept.
    fn usable_hostile_stack() -> impl Strategy<Value = StackConfig> {
        hostile_stack().prop_map(|config| {
            let mut value = serde_json::to_value(&config).unwrap();
            for _ in 0..64 {
                let Ok(candidate) = serde_json::from_value::<StackConfig>(value.clone()) else {
                    break;
                };
                let Err(err) = candidate.build("svc") else {
                    return candidate;
                };
                let path: Vec<&str> = err
                    .field()
                    .strip_prefix("svc.")
                    .unwrap_or_default()
                    .split('.')
                    .collect();
                if !remove_field(&mut value, &path) {
                    break;
                }
            }
            StackConfig::default()
        })
    }

    /// Removes the field at `path` (the deepest part of it that exists) from `value`, and
    /// then the section holding it if the section no longer reads as a `StackConfig` part.
    fn remove_field(value: &mut Value, path: &[&str]) -> bool {
        for depth in (1..=path.len()).rev() {
            let parent: String = path[..depth - 1].iter().flat_map(|k| ["/", k]).collect();
            let removed = value
                .pointer_mut(&parent)
                .and_then(Value::as_object_mut)
                .and_then(|map| map.remove(path[depth - 1]))
                .is_some();
            if removed {
                if depth > 1 && serde_json::from_value::<StackConfig>(value.clone()).is_err() {
                    return remove_field(value, &path[..depth - 1]);
                }
                return true;
            }
        }
        false
    }

    static PANICS: AtomicUsize = AtomicUsize::new(0);

    /// Counts panics anywhere in the process: a background task's panic (a breaker's timer)
    /// is swallowed by tokio, so a property checks the count instead.
    fn count_panics() {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                PANICS.fetch_add(1, Ordering::SeqCst);
                previous(info);
            }));
        });
    }

    /// A small seeded generator (xorshift), shared by the dependency and the test.
    #[derive(Clone)]
    struct Dice(Arc<AtomicU64>);

    impl Dice {
        fn roll(&self, n: u64) -> u64 {
            let mut x = self.0.load(Ordering::Relaxed);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0.store(x, Ordering::Relaxed);
            x % n
        }
    }

    const YEAR: Duration = Duration::from_hours(24 * 365);

    /// A dependency that answers anything a server may: fast or after a year, 200, 503 and
    /// 429 with any `Retry-After`, gRPC statuses with any pushback, or an error.
    fn hostile_dependency(
        dice: &Dice,
    ) -> impl Service<
        http::Request<String>,
        Response = http::Response<String>,
        Error = std::io::Error,
        Future = impl Future<Output = Result<http::Response<String>, std::io::Error>> + Send,
    > + Clone
    + Send
    + 'static {
        let dice = dice.clone();
        tower::service_fn(move |_: http::Request<String>| {
            let delay = [
                Duration::ZERO,
                Duration::from_millis(1),
                Duration::from_secs(1),
                Duration::from_hours(1),
                YEAR,
            ][dice.roll(5) as usize];
            let retry_after = match dice.roll(5) {
                0 => u64::MAX.to_string(),
                1 => dice.roll(u64::MAX).to_string(),
                2 => "Fri, 31 Dec 9999 23:59:59 GMT".to_owned(),
                3 => "Thu, 01 Jan 1970 00:00:00 GMT".to_owned(),
                _ => dice.roll(100).to_string(),
            };
            let pushback = match dice.roll(3) {
                0 => i64::MAX.to_string(),
                1 => "-1".to_owned(),
                _ => dice.roll(1000).to_string(),
            };
            let kind = dice.roll(6);
            async move {
                tokio::time::sleep(delay).await;
                let mut res = http::Response::builder();
                res = match kind {
                    0 => res.status(200),
                    1 => res.status(503),
                    2 => res.status(503).header("retry-after", retry_after),
                    3 => res.status(429).header("retry-after", retry_after),
                    4 => res
                        .status(200)
                        .header("grpc-status", "14")
                        .header("grpc-retry-pushback-ms", pushback),
                    _ => return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                };
                Ok(res.body(String::new()).unwrap())
            }
        })
    }

    fn request(dice: &Dice) -> http::Request<String> {
        let mut req = http::Request::get("http://127.0.0.1/charge");
        match dice.roll(4) {
            0 => {
                req = req.header(
                    "grpc-timeout",
                    ["1m", "99999999H", "5S", "0n"][dice.roll(4) as usize],
                );
            }
            1 => req = req.header("x-request-timeout", dice.roll(u64::MAX).to_string()),
            2 => req = req.header("x-deadline-ms", "18446744073709551615"),
            _ => {}
        }
        req.body(String::new()).unwrap()
    }

    /// Builds `config` and, when it is accepted, makes `calls` calls through the stack (and
    /// its hedge and deadline layers) with clock jumps of up to ten years between them.
    /// Builds `config` and, when it is accepted, makes `calls` calls through it. `Ok(true)`
    /// when it was accepted, `Ok(false)` when it was refused naming a real field.
    fn exercise(config: &StackConfig, seed: u64, calls: usize) -> Result<bool, TestCaseError> {
        let mut file = RegistryConfig::default();
        file.stacks.insert("svc".to_owned(), config.clone());
        let registry = match Registry::new(&file) {
            Ok(registry) => registry,
            Err(err) => {
                let field = err.field().strip_prefix("svc.").unwrap_or_default();
                prop_assert!(
                    schema().contains(field),
                    "`{}` is not a field ({})",
                    field,
                    err
                );
                return Ok(false);
            }
        };
        // A whole stack's futures nest deeply in a debug build: more stack than a test
        // thread's default.
        let run = move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let dice = Dice(Arc::new(AtomicU64::new(seed | 1)));
                let handle = registry.handle("svc").unwrap();
                let mut client = registry
                    .http_client::<_, std::io::Error>("svc", hostile_dependency(&dice))
                    .unwrap();
                let mut hedged = handle
                    .hedge()
                    .map(|h| h.clone().layer(hostile_dependency(&dice)));
                let mut deadlines = match (handle.incoming_deadline(), handle.outgoing_deadline()) {
                    (Some(i), Some(o)) => {
                        Some(i.clone().layer(o.clone().layer(hostile_dependency(&dice))))
                    }
                    _ => None,
                };
                for _ in 0..calls {
                    let jump = [
                        Duration::ZERO,
                        Duration::from_millis(3),
                        Duration::from_hours(1),
                        YEAR,
                        10 * YEAR,
                    ][dice.roll(5) as usize];
                    tokio::time::advance(jump).await;
                    let _ = client.ready().await.unwrap().call(request(&dice)).await;
                    if let Some(hedged) = &mut hedged {
                        let _ = hedged.ready().await.unwrap().call(request(&dice)).await;
                    }
                    if let Some(deadlines) = &mut deadlines {
                        let _ = deadlines.ready().await.unwrap().call(request(&dice)).await;
                    }
                }
                let _ = handle.status();
            });
        };
        let outcome = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(run)
            .unwrap()
            .join();
        prop_assert!(outcome.is_ok(), "a call panicked");
        Ok(true)
    }

    /// Runs `f` on a thread with a 64 MiB stack.
    fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn_scoped(scope, f)
                .unwrap()
                .join()
                .unwrap()
        })
    }

    /// The JSON leaves of `value`, as paths of keys.
    fn leaves(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Value::Object(map) = value {
            for (key, value) in map {
                prefix.push(key.clone());
                out.push(prefix.clone());
                leaves(value, prefix, out);
                prefix.pop();
            }
        }
    }

    /// A value no field of the schema accepts in place of `value`.
    fn wrong(value: &Value) -> Value {
        match value {
            Value::String(_) | Value::Object(_) => serde_json::json!(["1s", "500ms"]),
            _ => serde_json::json!({ "not": "a value" }),
        }
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

    /// Runs `cases` cases of `test` over `strategy` on a thread with a 64 MiB stack (the
    /// strategies and a whole stack's futures nest deeply in a debug build).
    fn check<S: Strategy + Send + 'static>(
        cases: u32,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError> + Send + 'static,
    ) where
        S::Value: std::fmt::Debug,
    {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || {
                let mut runner =
                    proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
                if let Err(e) = runner.run(&strategy, test) {
                    panic!("{e}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// A configuration with any value in any field either is refused, naming a real
    /// field, or is usable: a hundred calls, with hostile answers and clock jumps of up to
    /// ten years, never panic (not in the call, not in a background task).
    #[test]
    fn any_value_is_refused_by_name_or_usable_for_hundreds_of_calls() {
        static ACCEPTED: AtomicU64 = AtomicU64::new(0);
        static REFUSED: AtomicU64 = AtomicU64::new(0);
        // Half hostile as generated (mostly refused), half repaired until usable.
        let configs = prop_oneof![hostile_stack(), usable_hostile_stack()];
        check(2048, (configs, any::<u64>()), |(config, seed)| {
            count_panics();
            let before = PANICS.load(Ordering::SeqCst);
            let accepted = exercise(&config, seed, 100)?;
            prop_assert_eq!(PANICS.load(Ordering::SeqCst), before, "a task panicked");
            let tally = if accepted { &ACCEPTED } else { &REFUSED };
            tally.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        // Both halves of the property are exercised: a generator whose every config is
        // refused (or accepted) would pass while testing nothing of the other half.
        let (accepted, refused) = (
            ACCEPTED.load(Ordering::Relaxed),
            REFUSED.load(Ordering::Relaxed),
        );
        println!("hostile configs: {accepted} accepted and used, {refused} refused by name");
        let total = accepted + refused;
        assert!(
            accepted * 4 >= total && refused * 4 >= total,
            "each outcome should be at least a quarter of the cases: {accepted} accepted, {refused} refused"
        );
    }

    /// A value of the wrong type anywhere in a file, TOML or JSON, is refused naming
    /// its whole path; and a file whose values break a rule is refused by `build` naming
    /// the same field whichever format it was read from.
    #[test]
    fn files_name_the_path_of_what_they_refuse() {
        check(
            4096,
            (stack(), any::<prop::sample::Index>()),
            |(config, pick)| {
                // Nested sections read through path tracking go deep in a debug build.
                on_big_stack(move || -> Result<(), TestCaseError> {
                    let value = serde_json::to_value(&config).unwrap();
                    let mut paths = Vec::new();
                    leaves(&value, &mut Vec::new(), &mut paths);
                    if let Some(path) = paths.get(pick.index(paths.len().max(1))) {
                        let mut broken = value.clone();
                        let mut slot = &mut broken;
                        for key in path {
                            slot = slot.get_mut(key).unwrap();
                        }
                        *slot = wrong(slot);
                        let expected = format!("svc.{}", path.join("."));
                        let file = serde_json::json!({ "svc": broken });
                        let err = RegistryConfig::from_json(&file.to_string()).unwrap_err();
                        prop_assert_eq!(err.field(), expected.as_str(), "JSON: {}", err);
                        let err = RegistryConfig::from_toml(&toml::to_string(&file).unwrap())
                            .unwrap_err();
                        prop_assert_eq!(err.field(), expected.as_str(), "TOML: {}", err);
                    }

                    let mut file = RegistryConfig::default();
                    file.stacks.insert("svc".to_owned(), config);
                    let from_json =
                        RegistryConfig::from_json(&serde_json::to_string(&file).unwrap()).unwrap();
                    let from_toml =
                        RegistryConfig::from_toml(&toml::to_string(&file).unwrap()).unwrap();
                    let fields =
                        |c: &RegistryConfig| Registry::new(c).err().map(|e| e.field().to_owned());
                    prop_assert_eq!(fields(&from_json), fields(&file));
                    prop_assert_eq!(fields(&from_toml), fields(&file));
                    Ok(())
                })
            },
        );
    }
}

/// Files that do not fit the schema: refused, naming the whole path of the offending value.
mod hostile_files {
    use std::time::Duration;

    use staunch::{Registry, RegistryConfig, StackConfig};
    use tower::{Service, ServiceExt};

    fn field_of(result: Result<impl std::fmt::Debug, staunch::ConfigError>) -> String {
        result.expect_err("refused").field().to_owned()
    }

    #[test]
    fn an_array_where_a_table_is_expected_is_refused_in_toml_and_json() {
        // Read by position, this would set `timeout` and `attempt_timeout`.
        let err = toml::from_str::<RegistryConfig>("payment = [\"1s\", \"500ms\"]").unwrap_err();
        assert!(err.to_string().contains("table of stack settings"), "{err}");
        let err = RegistryConfig::from_toml("payment = [\"1s\", \"500ms\"]").unwrap_err();
        assert_eq!(err.field(), "payment", "{err}");
        let err = RegistryConfig::from_json(r#"{ "payment": ["1s", "500ms"] }"#).unwrap_err();
        assert_eq!(err.field(), "payment", "{err}");
        for (toml_text, json_text, path) in [
            (
                "[payment]\nbreaker = [50.0, 20]",
                r#"{ "payment": { "breaker": [50.0, 20] } }"#,
                "payment.breaker",
            ),
            (
                "[payment.breaker]\nsliding_window = [\"count\", 100]",
                r#"{ "payment": { "breaker": { "sliding_window": ["count", 100] } } }"#,
                "payment.breaker.sliding_window",
            ),
            (
                "[payment.bulkhead]\nadaptive = [\"vegas\", 1, 10]",
                r#"{ "payment": { "bulkhead": { "adaptive": ["vegas", 1, 10] } } }"#,
                "payment.bulkhead.adaptive",
            ),
            (
                "[payment.retry]\nbackoff = [\"constant\", \"10ms\"]",
                r#"{ "payment": { "retry": { "backoff": ["constant", "10ms"] } } }"#,
                "payment.retry.backoff",
            ),
            (
                "[payment.retry]\nbudget = [0.5]",
                r#"{ "payment": { "retry": { "budget": [0.5] } } }"#,
                "payment.retry.budget",
            ),
            (
                "[payment]\nhedge = [\"50ms\"]",
                r#"{ "payment": { "hedge": ["50ms"] } }"#,
                "payment.hedge",
            ),
            (
                "[payment.deadline]\noutgoing = [\"5ms\"]",
                r#"{ "payment": { "deadline": { "outgoing": ["5ms"] } } }"#,
                "payment.deadline.outgoing",
            ),
        ] {
            assert!(
                toml::from_str::<RegistryConfig>(toml_text).is_err(),
                "{toml_text}"
            );
            assert_eq!(field_of(RegistryConfig::from_toml(toml_text)), path);
            assert_eq!(field_of(RegistryConfig::from_json(json_text)), path);
        }
        // One stack on its own, too.
        assert_eq!(
            field_of(StackConfig::from_json(r#"{ "retry": [3] }"#)),
            "retry"
        );
    }

    #[test]
    fn toml_and_json_errors_name_the_whole_field_path() {
        for (toml_text, json_text, path) in [
            (
                "[payment.breaker]\nminimum_calls = \"ten\"",
                r#"{ "payment": { "breaker": { "minimum_calls": "ten" } } }"#,
                "payment.breaker.minimum_calls",
            ),
            (
                "[payment]\ntimeout = \"soon\"",
                r#"{ "payment": { "timeout": "soon" } }"#,
                "payment.timeout",
            ),
            (
                "[payment.retry.backoff]\nstrategy = \"quadratic\"\nbase = \"1s\"",
                r#"{ "payment": { "retry": { "backoff": { "strategy": "quadratic", "base": "1s" } } } }"#,
                "payment.retry.backoff.strategy",
            ),
            (
                "[payment.retry.budget]\nratio = \"half\"",
                r#"{ "payment": { "retry": { "budget": { "ratio": "half" } } } }"#,
                "payment.retry.budget.ratio",
            ),
            (
                "[payment.deadline.incoming]\ngrpc = 1",
                r#"{ "payment": { "deadline": { "incoming": { "grpc": 1 } } } }"#,
                "payment.deadline.incoming.grpc",
            ),
        ] {
            let err = RegistryConfig::from_toml(toml_text).unwrap_err();
            assert_eq!(err.field(), path, "{err}");
            assert!(err.to_string().contains(path), "{err}");
            let err = RegistryConfig::from_json(json_text).unwrap_err();
            assert_eq!(err.field(), path, "{err}");
        }
        // An unknown key is named by its path too.
        let err =
            RegistryConfig::from_json(r#"{ "payment": { "breaker": { "minimum_call": 1 } } }"#)
                .unwrap_err();
        assert!(err.field().starts_with("payment.breaker"), "{err}");
        assert!(err.rule().contains("minimum_call"), "{err}");
        // A syntax error names the document and the place.
        let err = RegistryConfig::from_toml("[payment\n").unwrap_err();
        assert_eq!(err.field(), "(document)");
        assert!(err.rule().contains("line 1"), "{err}");
        let err = RegistryConfig::from_json("{ \"payment\": { } } trailing").unwrap_err();
        assert_eq!(err.field(), "(document)");
    }

    #[test]
    fn errors_inside_tagged_sections_name_the_key() {
        for (toml_text, json_text, path) in [
            (
                "[payment.breaker]\nsliding_window = { kind = \"count\", size = \"many\" }",
                r#"{ "payment": { "breaker": { "sliding_window": { "kind": "count", "size": "many" } } } }"#,
                "payment.breaker.sliding_window.size",
            ),
            (
                "[payment.breaker]\nsliding_window = { duration = \"1 minute-ish\", kind = \"time\", buckets = 6 }",
                r#"{ "payment": { "breaker": { "sliding_window": { "duration": "1 minute-ish", "kind": "time", "buckets": 6 } } } }"#,
                "payment.breaker.sliding_window.duration",
            ),
            (
                "[payment.breaker]\nsliding_window = { kind = \"hourly\" }",
                r#"{ "payment": { "breaker": { "sliding_window": { "kind": "hourly" } } } }"#,
                "payment.breaker.sliding_window.kind",
            ),
            (
                "[payment.bulkhead]\nadaptive = { algorithm = \"vegas\", alpha = \"three\" }",
                r#"{ "payment": { "bulkhead": { "adaptive": { "algorithm": "vegas", "alpha": "three" } } } }"#,
                "payment.bulkhead.adaptive.alpha",
            ),
            (
                "[payment.bulkhead]\nadaptive = { latency_threshold = 5, algorithm = \"aimd\" }",
                r#"{ "payment": { "bulkhead": { "adaptive": { "latency_threshold": 5, "algorithm": "aimd" } } } }"#,
                "payment.bulkhead.adaptive.latency_threshold",
            ),
        ] {
            let err = RegistryConfig::from_toml(toml_text).unwrap_err();
            assert_eq!(err.field(), path, "{err}");
            let err = RegistryConfig::from_json(json_text).unwrap_err();
            assert_eq!(err.field(), path, "{err}");
        }
        // A key of the other kind names the key, in the section it is in.
        for (text, key) in [
            (
                "[payment.breaker]\nsliding_window = { kind = \"count\", size = 5, buckets = 2 }",
                "buckets",
            ),
            (
                "[payment.breaker]\nsliding_window = { kind = \"time\", size = 5 }",
                "size",
            ),
            (
                "[payment.bulkhead]\nadaptive = { algorithm = \"aimd\", alpha = 2.0 }",
                "alpha",
            ),
            (
                "[payment.bulkhead]\nadaptive = { algorithm = \"vegas\", latency_threshold = \"1s\" }",
                "latency_threshold",
            ),
        ] {
            let err = RegistryConfig::from_toml(text).unwrap_err();
            assert!(err.field().starts_with("payment."), "{err}");
            assert!(err.rule().contains(key), "{err}");
        }
        // A missing key is named.
        let err = RegistryConfig::from_toml(
            "[payment.breaker]\nsliding_window = { kind = \"time\", duration = \"1m\" }",
        )
        .unwrap_err();
        assert_eq!(err.field(), "payment.breaker.sliding_window", "{err}");
        assert!(err.rule().contains("buckets"), "{err}");
    }

    #[test]
    fn vegas_alpha_and_beta_must_be_finite() {
        for (settings, field) in [
            ("alpha = nan", "payment.bulkhead.adaptive.alpha"),
            ("alpha = -inf", "payment.bulkhead.adaptive.alpha"),
            ("alpha = inf", "payment.bulkhead.adaptive.alpha"),
            ("beta = nan", "payment.bulkhead.adaptive.beta"),
            ("beta = inf", "payment.bulkhead.adaptive.beta"),
            (
                "alpha = -inf\nbeta = inf",
                "payment.bulkhead.adaptive.alpha",
            ),
        ] {
            let text = format!(
                "[payment.bulkhead]\nmax_concurrent = 4\n[payment.bulkhead.adaptive]\nalgorithm = \"vegas\"\n{settings}\n"
            );
            let config = RegistryConfig::from_toml(&text).unwrap();
            let err = Registry::new(&config).unwrap_err();
            assert_eq!(err.field(), field, "{settings}: {err}");
            assert!(err.rule().contains("finite"), "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_of_u64_max_seconds_from_toml_is_usable() {
        let config = RegistryConfig::from_toml(
            "[payment]\ntimeout = \"18446744073709551615s\"\nattempt_timeout = \"18446744073709551615s\"\n\
             [payment.retry]\nmax_attempts = 3\nmax_retry_after = \"18446744073709551615s\"\n\
             backoff = { strategy = \"constant\", base = \"10ms\", jitter = \"none\" }\n",
        )
        .unwrap();
        let registry = Registry::new(&config).unwrap();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = std::sync::Arc::clone(&calls);
        let mut client = registry
            .http_client::<_, std::io::Error>(
                "payment",
                tower::service_fn(move |_: http::Request<String>| {
                    let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Ok::<_, std::io::Error>(
                            http::Response::builder()
                                .status(if n == 0 { 503 } else { 200 })
                                .body(String::new())
                                .unwrap(),
                        )
                    }
                }),
            )
            .unwrap();
        let res = client
            .ready()
            .await
            .unwrap()
            .call(super::get())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
