//! Every setting is refused by name or usable; settings read from files.

use proptest::prelude::*;
use staunch_fallback::{FallbackConfig, FallbackPolicy, RejectionKind, Rejections, StatusRange};

fn field<Res>(b: staunch_fallback::FallbackPolicyBuilder<Res>) -> String {
    b.build().unwrap_err().field().to_owned()
}

#[test]
fn bad_values_are_refused_by_name() {
    let b = || FallbackPolicy::<u32>::builder("x").status_of(|n| *n as u16);
    for bad in [
        StatusRange::from(99),
        StatusRange::from(600),
        StatusRange::new(0, 100),
        StatusRange::new(503, 502),
        StatusRange::class(6),
    ] {
        assert_eq!(field(b().on_status(bad)), "statuses", "{bad}");
    }
    let message = b().on_status(700).build().unwrap_err().to_string();
    assert!(
        message.contains("`statuses` must be HTTP statuses within 100..=599"),
        "{message}"
    );
    assert!(message.contains("700"), "{message}");
    // Statuses with no way to read them.
    let err = FallbackPolicy::<u32>::builder("x")
        .on_status(503)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "statuses");
    assert!(err.rule().contains("status_of"), "{err}");
    // A policy that could never answer.
    let err = FallbackPolicy::<u32>::builder("x")
        .rejections(Rejections::NONE)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "rejections");
    // Any one rule is enough.
    FallbackPolicy::<u32>::builder("x").build().unwrap();
    FallbackPolicy::<u32>::builder("x")
        .rejections(Rejections::NONE)
        .on_any_error()
        .build()
        .unwrap();
    FallbackPolicy::<u32>::builder("x")
        .rejections(Rejections::NONE)
        .on_error(|_| true)
        .build()
        .unwrap();
    FallbackPolicy::<u32>::builder("x")
        .rejections(Rejections::NONE)
        .on_response(|_| true)
        .build()
        .unwrap();
    b().rejections(Rejections::NONE)
        .on_status(100..=599)
        .build()
        .unwrap();
}

#[test]
fn settings_apply_to_a_builder() {
    let config = FallbackConfig::default();
    let policy = config.build::<u32>("x").unwrap();
    assert_eq!(policy.name(), "x");
    let mut config = FallbackConfig::default();
    config.rejections = Some(vec![]);
    assert_eq!(config.build::<u32>("x").unwrap_err().field(), "rejections");
    config.any_error = Some(true);
    config.build::<u32>("x").unwrap();
    config.statuses = Some(vec![StatusRange::from(503)]);
    assert_eq!(config.build::<u32>("x").unwrap_err().field(), "statuses");
    config
        .apply(FallbackPolicy::<u32>::builder("x").status_of(|n| *n as u16))
        .build()
        .unwrap();
    config.statuses = Some(vec![StatusRange::from(1000)]);
    let builder = FallbackPolicy::<u32>::builder("x").status_of(|n| *n as u16);
    assert_eq!(
        config.apply(builder).build().unwrap_err().field(),
        "statuses"
    );
}

#[cfg(feature = "serde")]
#[test]
fn settings_read_from_toml_and_refuse_unknown_keys() {
    let config: FallbackConfig = toml::from_str(
        r#"
        rejections = ["breaker_open", "rate_limited"]
        any_error = false
        statuses = [503, "5xx", "502-504"]
        "#,
    )
    .unwrap();
    assert_eq!(
        config.rejections,
        Some(vec![RejectionKind::BreakerOpen, RejectionKind::RateLimited])
    );
    assert_eq!(
        config.statuses,
        Some(vec![
            StatusRange::from(503),
            StatusRange::class(5),
            StatusRange::new(502, 504)
        ])
    );
    let back: FallbackConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(back, config);
    let json: FallbackConfig = serde_json::from_str(r#"{"statuses": [429, "5xx"]}"#).unwrap();
    assert_eq!(json.statuses.unwrap().len(), 2);
    for (bad, says) in [
        ("rejection = []", "unknown field `rejection`"),
        (
            "rejections = [\"breaker_closed\"]",
            "unknown variant `breaker_closed`",
        ),
        ("statuses = [\"5x\"]", "invalid status range"),
        ("statuses = [70000]", "invalid value"),
        ("statuses = [-1]", "invalid value"),
        ("any_error = \"yes\"", "invalid type"),
    ] {
        let err = toml::from_str::<FallbackConfig>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
    // Read, but refused by name when built.
    let config: FallbackConfig = toml::from_str("statuses = [700]").unwrap();
    let builder = FallbackPolicy::<u32>::builder("x").status_of(|n| *n as u16);
    assert_eq!(
        config.apply(builder).build().unwrap_err().field(),
        "statuses"
    );
    #[cfg(feature = "http")]
    {
        let config: FallbackConfig = toml::from_str("statuses = [\"5xx\"]").unwrap();
        config.build_http::<String>("x").unwrap();
    }
}

proptest! {
    #[test]
    fn any_status_range_is_refused_by_name_or_used_exactly(
        ranges in proptest::collection::vec((any::<u16>(), any::<u16>()), 0..4),
        probe in 0u16..1000,
        kinds in proptest::collection::vec(0usize..4, 0..4),
        any_error in any::<bool>(),
    ) {
        let mut b = FallbackPolicy::<u16>::builder("x")
            .status_of(|n| *n)
            .rejections(kinds.iter().map(|k| RejectionKind::ALL[*k]).collect());
        if any_error {
            b = b.on_any_error();
        }
        for (first, last) in &ranges {
            b = b.on_status(StatusRange::new(*first, *last));
        }
        let valid = ranges.iter().all(|(f, l)| *f >= 100 && *l <= 599 && f <= l);
        let answers_something = !ranges.is_empty() || !kinds.is_empty() || any_error;
        match b.build() {
            Ok(policy) => {
                prop_assert!(valid && answers_something);
                let chosen = ranges.iter().any(|(f, l)| (*f..=*l).contains(&probe));
                let fired = matches!(
                    policy.check(Ok::<u16, std::io::Error>(probe)),
                    staunch_fallback::Verdict::Fallback { .. }
                );
                prop_assert_eq!(fired, chosen);
            }
            Err(e) => {
                prop_assert!(!valid || !answers_something);
                prop_assert!(["statuses", "rejections"].contains(&e.field()), "{}", e);
            }
        }
    }
}
