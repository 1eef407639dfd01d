//! Every configuration is refused by name or usable: no value panics; settings files read
//! and write the same configuration.

use std::time::Duration;

use proptest::prelude::*;
use staunch_fault::{
    AbortFault, ErrorFault, FaultConfig, FaultInjector, FaultInjectorBuilder, LatencyFault,
};

fn field(b: FaultInjectorBuilder) -> String {
    b.build().unwrap_err().field().to_owned()
}

const FIELDS: [&str; 6] = [
    "latency.rate",
    "latency.max",
    "error.rate",
    "error.status",
    "abort.rate",
    "preset",
];

#[test]
fn bad_values_are_refused_by_name() {
    let b = || FaultInjector::builder("p");
    let s = Duration::from_secs(1);
    for bad in [
        -0.1,
        1.000001,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1e300,
    ] {
        assert_eq!(field(b().latency(bad, s, s)), "latency.rate", "{bad}");
        assert_eq!(field(b().error(bad, 500)), "error.rate", "{bad}");
        assert_eq!(field(b().abort(bad)), "abort.rate", "{bad}");
    }
    assert_eq!(field(b().latency(0.5, s * 2, s)), "latency.max");
    for bad in [0, 99, 200, 302, 399, 600, 1000, u16::MAX] {
        assert_eq!(field(b().error(0.5, bad)), "error.status", "{bad}");
    }
    assert_eq!(field(b().error(0.7, 500).abort(0.5)), "error.rate");
    let message = b().abort(f64::NAN).build().unwrap_err().to_string();
    assert!(
        message.contains("`abort.rate` must be a share of calls from 0 to 1 (got NaN)"),
        "{message}"
    );
    let message = b()
        .error(0.7, 500)
        .abort(0.5)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("plus `abort.rate` must be at most 1"),
        "{message}"
    );
}

#[test]
fn extreme_values_that_are_valid_build_and_never_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let injector = FaultInjector::builder("p")
            .latency(1.0, Duration::MAX, Duration::MAX)
            .error(1.0, 599)
            .abort(0.0)
            .seed(u64::MAX)
            .build()
            .unwrap();
        let injection = injector.decide();
        // Saturated at the longest delay a duration in nanoseconds holds.
        assert_eq!(injection.delay(), Some(Duration::from_nanos(u64::MAX)));
        let zero = FaultInjector::builder("p")
            .latency(1.0, Duration::ZERO, Duration::ZERO)
            .build()
            .unwrap();
        assert_eq!(zero.decide().delay(), Some(Duration::ZERO));
        // The sum at exactly 1 is fine.
        assert!(
            FaultInjector::builder("p")
                .error(0.25, 400)
                .abort(0.75)
                .build()
                .is_ok()
        );
    });
}

#[test]
fn the_error_setters_keep_what_the_other_set() {
    let config = FaultConfig::none()
        .with_error_body("down")
        .with_error(0.4, 502);
    assert_eq!(
        config.error,
        Some(ErrorFault::new(0.4).status(502).body("down"))
    );
    let config = FaultConfig::none()
        .with_error(0.4, 502)
        .with_error_body("down");
    assert_eq!(
        config.error,
        Some(ErrorFault::new(0.4).status(502).body("down"))
    );
    let config = FaultConfig::none().with_error_body("down");
    assert_eq!(config.error, Some(ErrorFault::new(0.0).body("down")));
}

#[test]
fn unknown_presets_are_named() {
    for name in FaultConfig::PRESETS {
        assert!(FaultConfig::preset(name).is_ok(), "{name}");
    }
    let err = FaultConfig::preset("Slow").unwrap_err();
    assert_eq!(err.field(), "preset");
    assert!(err.to_string().contains("`Slow` is not one of"), "{err}");
    assert_eq!(FaultConfig::preset("none").unwrap(), FaultConfig::default());
    assert_eq!(
        FaultConfig::preset("intermittent").unwrap(),
        FaultConfig::intermittent()
    );
    assert_eq!(FaultConfig::preset("error").unwrap(), FaultConfig::error());
    // Every preset builds.
    for name in FaultConfig::PRESETS {
        FaultConfig::preset(name).unwrap().build("p").unwrap();
    }
}

#[test]
fn the_presets_are_the_payment_modes() {
    let slow = FaultConfig::slow();
    assert_eq!(
        slow.latency,
        Some(LatencyFault::new(
            1.0,
            Duration::from_secs(3),
            Duration::from_secs(8)
        ))
    );
    assert_eq!((slow.error, slow.abort), (None, None));
    let error = FaultConfig::error();
    assert_eq!(error.error, Some(ErrorFault::new(0.7).status(500)));
    let intermittent = FaultConfig::intermittent();
    assert_eq!(
        intermittent.latency,
        Some(LatencyFault::new(
            0.3,
            Duration::from_secs(2),
            Duration::from_secs(5)
        ))
    );
    assert_eq!(intermittent.error, Some(ErrorFault::new(0.2).status(503)));
}

fn any_rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0..=1.0f64,
        any::<f64>(),
        Just(f64::NAN),
        Just(0.0),
        Just(1.0),
        Just(-0.0),
    ]
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..10_000_000_000).prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(Duration::MAX),
        Just(Duration::ZERO),
    ]
}

fn any_config() -> impl Strategy<Value = FaultConfig> {
    (
        proptest::option::of((any_rate(), any_duration(), any_duration())),
        proptest::option::of((any_rate(), any::<u16>(), ".{0,8}")),
        proptest::option::of(any_rate()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(latency, error, abort, seed)| {
            let mut config = FaultConfig::none();
            config.latency = latency.map(|(r, min, max)| LatencyFault::new(r, min, max));
            config.error = error.map(|(r, s, b)| ErrorFault::new(r).status(s).body(b));
            config.abort = abort.map(AbortFault::new);
            config.seed = seed;
            config
        })
}

proptest! {
    #[test]
    fn any_config_builds_or_names_a_field(config in any_config()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        match config.build("p") {
            Ok(injector) => {
                for _ in 0..20 {
                    let injection = injector.decide();
                    if let (Some(d), Some(l)) = (injection.delay(), config.latency) {
                        let cap = Duration::from_nanos(u64::MAX);
                        prop_assert!(d >= l.min.min(cap) && d <= l.max.min(cap));
                    }
                }
                // Applying it at run time agrees with the builder.
                prop_assert!(injector.set(config.clone()).is_ok());
                // And it runs through the layer without panicking.
                rt.block_on(async {
                    use tower::{Layer, Service, ServiceExt};
                    let mut svc = staunch_fault::FaultLayer::new(injector.clone()).layer(
                        tower::service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }),
                    );
                    let fut = svc.ready().await.unwrap().call(1);
                    let _ = tokio::time::timeout(Duration::from_secs(1), fut).await;
                });
            }
            Err(err) => {
                prop_assert!(FIELDS.contains(&err.field()), "{}", err);
                let injector = FaultInjector::builder("p").build().unwrap();
                prop_assert_eq!(injector.set(config).unwrap_err(), err);
                prop_assert!(injector.decide().is_none(), "a refused set changes nothing");
            }
        }
    }
}

#[cfg(feature = "serde")]
mod files {
    use super::*;

    #[test]
    fn a_settings_file_reads_human_durations_and_round_trips() {
        let config: FaultConfig = toml::from_str(
            r#"
            latency = { rate = 0.3, min = "2s", max = "5s 500ms" }
            error = { rate = 0.2, status = 503, body = "payment unavailable" }
            abort = { rate = 0.01 }
            seed = 42
            "#,
        )
        .unwrap();
        let want = FaultConfig::none()
            .with_latency(0.3, Duration::from_secs(2), Duration::from_millis(5500))
            .with_error(0.2, 503)
            .with_error_body("payment unavailable")
            .with_abort(0.01)
            .with_seed(42);
        assert_eq!(config, want);
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("min = \"2s\""), "{text}");
        assert_eq!(toml::from_str::<FaultConfig>(&text).unwrap(), config);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<FaultConfig>(&json).unwrap(), config);
        // Defaults: status 500, empty body; an empty table injects nothing.
        let config: FaultConfig = toml::from_str("error = { rate = 1.0 }").unwrap();
        assert_eq!(config.error, Some(ErrorFault::new(1.0)));
        assert_eq!(
            toml::from_str::<FaultConfig>("").unwrap(),
            FaultConfig::none()
        );
    }

    #[test]
    fn a_preset_is_named_and_its_sections_replaced() {
        let config: FaultConfig = toml::from_str(r#"preset = "slow""#).unwrap();
        assert_eq!(config, FaultConfig::slow());
        let config: FaultConfig = toml::from_str(
            r#"
            preset = "intermittent"
            error = { rate = 0.5, status = 500 }
            seed = 7
            "#,
        )
        .unwrap();
        assert_eq!(
            config,
            FaultConfig::intermittent()
                .with_error(0.5, 500)
                .with_seed(7)
        );
        let err = toml::from_str::<FaultConfig>(r#"preset = "flaky""#).unwrap_err();
        assert!(err.to_string().contains("`preset`"), "{err}");
        assert!(err.to_string().contains("`flaky`"), "{err}");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, needle) in [
            (
                "latency = { rate = 0.5, min = \"soon\", max = \"1s\" }",
                "invalid duration",
            ),
            ("latency = { rate = 0.5, min = \"1s\" }", "max"),
            ("error = { rate = 0.5, code = 500 }", "unknown field `code`"),
            ("errors = { rate = 0.5 }", "unknown field `errors`"),
            ("abort = [0.5]", "a table of abort fault settings"),
            (
                "latency = [0.5, \"1s\", \"2s\"]",
                "a table of latency fault settings",
            ),
        ] {
            let err = toml::from_str::<FaultConfig>(text).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        // Values are checked when applied, by name.
        let config: FaultConfig = toml::from_str("abort = { rate = nan }").unwrap();
        assert_eq!(config.build("p").unwrap_err().field(), "abort.rate");
        let config: FaultConfig = toml::from_str("error = { rate = 0.1, status = 200 }").unwrap();
        assert_eq!(config.build("p").unwrap_err().field(), "error.status");
    }

    #[test]
    fn the_metrics_snapshot_serializes() {
        let injector = FaultConfig::none().with_abort(1.0).build("p").unwrap();
        let _ = injector.decide();
        let json = serde_json::to_value(injector.metrics()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "calls": 1, "delayed": 0, "errors": 0, "aborts": 1 })
        );
    }
}
