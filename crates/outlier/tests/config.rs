//! `OutlierConfig` from settings files: human durations, tables only, unknown keys refused,
//! every bad value refused by name, and any config either refused by name or working for
//! hundreds of calls.
#![cfg(feature = "serde")]

use std::time::Duration;

use proptest::prelude::*;
use staunch_outlier::{BoxError, FailureRate, FailureRateConfig, OutlierConfig};
use tower::{Service, ServiceExt, service_fn};

fn parse(text: &str) -> Result<OutlierConfig, toml::de::Error> {
    toml::from_str(text)
}

#[test]
fn a_full_file_reads_with_human_durations() {
    let config = parse(
        r#"
        consecutive_failures = 3
        base_ejection_time = "250ms"
        max_ejection_time = "1m 30s"
        max_ejection_percent = 34

        [failure_rate]
        interval = "5s"
        minimum_requests = 20
        threshold = 60.0
        "#,
    )
    .unwrap();
    let settings = config.settings().unwrap();
    assert_eq!(settings.consecutive_failures(), 3);
    assert_eq!(settings.base_ejection_time(), Duration::from_millis(250));
    assert_eq!(settings.max_ejection_time(), Duration::from_secs(90));
    assert_eq!(settings.max_ejection_percent(), 34);
    assert_eq!(
        settings.failure_rate(),
        Some(FailureRate {
            interval: Duration::from_secs(5),
            minimum_requests: 20,
            threshold: 60.0
        })
    );
    // And back: the same file, read again, is the same config.
    let written = toml::to_string(&config).unwrap();
    assert!(
        written.contains("base_ejection_time = \"250ms\""),
        "{written}"
    );
    assert_eq!(parse(&written).unwrap(), config);
}

#[test]
fn an_empty_file_is_the_defaults_and_an_empty_failure_rate_is_envoys() {
    assert_eq!(
        parse("").unwrap().settings().unwrap(),
        staunch_outlier::Settings::builder().build().unwrap()
    );
    let rate = parse("[failure_rate]")
        .unwrap()
        .settings()
        .unwrap()
        .failure_rate()
        .unwrap();
    assert_eq!(rate.interval, FailureRateConfig::DEFAULT_INTERVAL);
    assert_eq!(
        rate.minimum_requests,
        FailureRateConfig::DEFAULT_MINIMUM_REQUESTS
    );
    assert_eq!(rate.threshold, FailureRateConfig::DEFAULT_THRESHOLD);
}

#[test]
fn unknown_keys_and_non_tables_are_refused() {
    let err = parse("consecutive_5xx = 3").unwrap_err().to_string();
    assert!(err.contains("unknown field `consecutive_5xx`"), "{err}");
    let err = parse("failure_rate = [\"1s\", 3]").unwrap_err().to_string();
    assert!(err.contains("a table of failure-rate settings"), "{err}");
    let err = parse("base_ejection_time = \"soon\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid duration"), "{err}");
    let err = serde_json::from_str::<OutlierConfig>("[5]")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a table of outlier detection settings"),
        "{err}"
    );
}

#[test]
fn hostile_values_are_refused_by_name() {
    for (text, field) in [
        ("max_ejection_percent = 0", "max_ejection_percent"),
        ("max_ejection_percent = 101", "max_ejection_percent"),
        ("consecutive_failures = 0", "consecutive_failures"),
        ("base_ejection_time = \"0s\"", "base_ejection_time"),
        (
            "base_ejection_time = \"10s\"\nmax_ejection_time = \"1s\"",
            "max_ejection_time",
        ),
        ("[failure_rate]\ninterval = \"0s\"", "failure_rate.interval"),
        (
            "[failure_rate]\nminimum_requests = 0",
            "failure_rate.minimum_requests",
        ),
        ("[failure_rate]\nthreshold = nan", "failure_rate.threshold"),
        ("[failure_rate]\nthreshold = inf", "failure_rate.threshold"),
        ("[failure_rate]\nthreshold = 0.0", "failure_rate.threshold"),
        (
            "[failure_rate]\nthreshold = 150.0",
            "failure_rate.threshold",
        ),
    ] {
        let config = parse(text).unwrap();
        assert_eq!(config.settings().unwrap_err().field(), field, "{text}");
        let built = config
            .balancer::<u8, tower::util::BoxCloneSyncService<(), (), BoxError>>("bad")
            .build();
        assert_eq!(built.unwrap_err().field(), field, "{text}");
    }
    let err = toml::from_str::<OutlierConfig>("max_ejection_percent = -1").unwrap_err();
    assert!(err.to_string().contains("max_ejection_percent"), "{err}");
}

const FIELDS: &[&str] = &[
    "consecutive_failures",
    "base_ejection_time",
    "max_ejection_time",
    "max_ejection_percent",
    "failure_rate.interval",
    "failure_rate.minimum_requests",
    "failure_rate.threshold",
];

fn duration() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(Duration::ZERO)),
        1 => Just(Some(Duration::MAX)),
        4 => (1u64..5_000).prop_map(|ms| Some(Duration::from_millis(ms))),
        1 => any::<u64>().prop_map(|s| Some(Duration::from_secs(s))),
    ]
}

fn threshold() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(f64::NAN)),
        1 => Just(Some(f64::INFINITY)),
        1 => Just(Some(-1.0)),
        1 => Just(Some(0.0)),
        1 => Just(Some(100.0)),
        5 => (-10.0f64..120.0).prop_map(Some),
    ]
}

fn config() -> impl Strategy<Value = OutlierConfig> {
    let rate = prop_oneof![
        Just(None),
        (duration(), proptest::option::of(0u32..20), threshold()).prop_map(
            |(interval, minimum, threshold)| {
                let mut rate = FailureRateConfig::default();
                rate.interval = interval;
                rate.minimum_requests = minimum;
                rate.threshold = threshold;
                Some(rate)
            }
        ),
    ];
    (
        proptest::option::weighted(0.7, 0u32..6),
        duration(),
        duration(),
        proptest::option::of(
            prop_oneof![1 => Just(0u32), 1 => Just(101), 1 => Just(u32::MAX), 8 => 1u32..=100],
        ),
        rate,
    )
        .prop_map(|(consecutive, base, max, percent, rate)| {
            let mut config = OutlierConfig::default();
            config.consecutive_failures = consecutive;
            config.base_ejection_time = base;
            config.max_ejection_time = max;
            config.max_ejection_percent = percent;
            config.failure_rate = rate;
            config
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_config_is_refused_by_name_or_works(
        config in config(),
        endpoints in 1usize..6,
        seed in any::<u64>(),
        steps in proptest::collection::vec((any::<u64>(), 0u64..3_000), 300),
    ) {
        // Endpoint `i` fails a call when bit `i` of the request is set.
        let services = (0..endpoints).map(|i| {
            (i, service_fn(move |req: u64| async move {
                if (req >> i) & 1 == 1 { Err::<usize, BoxError>("failed".into()) } else { Ok(i) }
            }))
        });
        let built = config.balancer("prop").endpoints(services).seed(seed).build();
        let mut balancer = match built {
            Err(err) => {
                prop_assert!(FIELDS.contains(&err.field()), "unexpected field {}", err.field());
                return Ok(());
            }
            Ok(balancer) => balancer,
        };
        let settings = config.settings().unwrap();
        let cap = endpoints * settings.max_ejection_percent() as usize / 100;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            for (req, advance) in steps {
                let res = balancer.ready().await.unwrap().call(req).await;
                if let Ok(i) = res {
                    prop_assert!(i < endpoints);
                }
                let status = balancer.status();
                let out = status.iter().filter(|s| s.state.is_ejected()).count();
                prop_assert!(out <= cap, "{} ejected with cap {}", out, cap);
                prop_assert!(status.iter().all(|s| s.in_flight == 0));
                tokio::time::advance(Duration::from_millis(advance)).await;
            }
            Ok(())
        })?;
    }
}
