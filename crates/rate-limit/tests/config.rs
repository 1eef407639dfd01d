//! Every setting is refused by name or usable: no value panics.

use std::time::Duration;

use proptest::prelude::*;
use staunch_rate_limit::{RateLimitConfig, RateLimiter};

fn field(b: staunch_rate_limit::RateLimiterBuilder) -> String {
    b.build().unwrap_err().field().to_owned()
}

#[test]
fn bad_values_are_refused_by_name() {
    let b = || RateLimiter::builder("x");
    assert_eq!(field(b()), "rate");
    assert_eq!(field(b().rate(0, Duration::from_secs(1))), "rate.count");
    assert_eq!(field(b().rate(1, Duration::ZERO)), "rate.per");
    assert_eq!(field(b().rate(10, Duration::from_nanos(5))), "rate");
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2e9] {
        assert_eq!(field(b().per_second(bad)), "per_second", "{bad}");
    }
    assert_eq!(field(b().rate(1, Duration::from_secs(1)).burst(0)), "burst");
    assert_eq!(
        field(b().rate(1, Duration::from_hours(1)).burst(u32::MAX)),
        "burst"
    );
    assert_eq!(field(b().rate(1, Duration::MAX)), "rate.per");
    assert_eq!(field(b().per_second(1e-12)), "per_second");
    assert_eq!(
        b().rate(1, Duration::from_secs(1))
            .max_keys(0)
            .build_keyed::<u32>()
            .unwrap_err()
            .field(),
        "max_keys"
    );
    let message = b()
        .rate(0, Duration::from_secs(1))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("`rate.count` must be at least 1"),
        "{message}"
    );
}

#[test]
fn fractional_rates_work() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let l = RateLimiter::builder("x").per_second(0.5).build().unwrap();
        l.try_acquire().unwrap();
        assert_eq!(
            l.try_acquire().unwrap_err().retry_after(),
            Duration::from_secs(2)
        );
    });
}

#[test]
fn settings_name_their_fields() {
    let config = RateLimitConfig::default();
    assert_eq!(config.build("x").unwrap_err().field(), "limit");
    let mut config = RateLimitConfig::default();
    config.limit = Some(0);
    config.per = Some(Duration::from_secs(1));
    assert_eq!(config.build("x").unwrap_err().field(), "limit");
    config.limit = Some(5);
    config.per = None;
    assert_eq!(config.build("x").unwrap_err().field(), "per");
    config.per = Some(Duration::ZERO);
    assert_eq!(config.build("x").unwrap_err().field(), "per");
    config.per = Some(Duration::from_secs(1));
    config.burst = Some(0);
    assert_eq!(config.build("x").unwrap_err().field(), "burst");
}

#[cfg(feature = "serde")]
#[test]
fn settings_read_from_toml_and_refuse_unknown_keys() {
    let config: RateLimitConfig = toml::from_str(
        r#"
        limit = 100
        per = "1s"
        burst = 20
        max_wait = "50ms"
        max_keys = 64
        "#,
    )
    .unwrap();
    assert_eq!(config.limit, Some(100));
    assert_eq!(config.max_wait, Some(Duration::from_millis(50)));
    config.build("x").unwrap();
    config.build_keyed::<String>("x").unwrap();
    let back: RateLimitConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(back, config);
    let err = toml::from_str::<RateLimitConfig>("limt = 1").unwrap_err();
    assert!(err.to_string().contains("unknown field `limt`"), "{err}");
    assert!(toml::from_str::<RateLimitConfig>("per = \"soon\"").is_err());
    assert!(toml::from_str::<RateLimitConfig>("limit = -3").is_err());
}

proptest! {
    #[test]
    fn any_value_is_refused_by_name_or_usable(
        count in any::<u32>(),
        per in any::<u64>(),
        burst in proptest::option::of(any::<u32>()),
        wait in any::<u64>(),
        keys in any::<usize>().prop_map(|k| k % 100_000),
        rate in proptest::option::of(any::<f64>()),
    ) {
        let mut b = RateLimiter::builder("x")
            .rate(count, Duration::from_nanos(per))
            .max_wait(Duration::from_nanos(wait))
            .max_keys(keys);
        if let Some(rate) = rate {
            b = b.per_second(rate);
        }
        if let Some(burst) = burst {
            b = b.burst(burst);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            match b.clone().build() {
                Ok(l) => {
                    for _ in 0..3 {
                        let _ = l.try_acquire();
                        drop(l.acquire());
                    }
                    let _ = l.wait_time();
                }
                Err(e) => prop_assert!(
                    ["rate", "rate.count", "rate.per", "per_second", "burst", "max_keys"]
                        .contains(&e.field()),
                    "{e}"
                ),
            }
            match b.build_keyed::<u8>() {
                Ok(l) => {
                    for k in 0..3 {
                        let _ = l.try_acquire(&k);
                        drop(l.acquire(&k));
                    }
                }
                Err(e) => prop_assert!(!e.field().is_empty()),
            }
            Ok(())
        })?;
    }
}
