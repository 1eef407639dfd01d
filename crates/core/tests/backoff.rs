//! Property tests for backoff schedules: bounds of every jitter strategy, monotone growth,
//! saturation without overflow, determinism under a seed.

use std::time::Duration;

use proptest::prelude::*;
use staunch_core::{Backoff, BackoffBuilder, Jitter};

fn base_strategy() -> impl Strategy<Value = Duration> {
    (1u64..=5_000_000_000).prop_map(Duration::from_nanos)
}

/// Every growth strategy, from a base, with a multiplier for the exponential one.
fn growth(base: Duration, kind: u8, multiplier: f64) -> BackoffBuilder {
    match kind % 4 {
        0 => Backoff::constant(base),
        1 => Backoff::linear(base),
        2 => Backoff::exponential(base).multiplier(multiplier),
        _ => Backoff::fibonacci(base),
    }
}

fn jitter_strategy() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        (0.0f64..=1.0).prop_map(Jitter::Proportional),
    ]
}

proptest! {
    #[test]
    fn every_delay_is_within_zero_and_the_cap(
        base in base_strategy(),
        cap_factor in 1u32..1000,
        kind in 0u8..4,
        multiplier in 1.0f64..10.0,
        jitter in jitter_strategy(),
        seed in any::<u64>(),
    ) {
        let cap = base * cap_factor;
        let backoff = growth(base, kind, multiplier).max_delay(cap).jitter(jitter).seed(seed).build().unwrap();
        for d in backoff.schedule().take(200) {
            prop_assert!(d <= cap, "{d:?} > cap {cap:?}");
        }
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_unjittered_delay(
        base in base_strategy(),
        kind in 0u8..4,
        multiplier in 1.0f64..4.0,
        seed in any::<u64>(),
    ) {
        let plain = growth(base, kind, multiplier).jitter(Jitter::None).build().unwrap();
        let full = growth(base, kind, multiplier).jitter(Jitter::Full).seed(seed).build().unwrap();
        for (d, j) in plain.schedule().zip(full.schedule()).take(100) {
            prop_assert!(j <= d, "full jitter {j:?} above {d:?}");
        }
    }

    #[test]
    fn equal_jitter_stays_within_half_and_the_whole_delay(
        base in base_strategy(),
        kind in 0u8..4,
        multiplier in 1.0f64..4.0,
        seed in any::<u64>(),
    ) {
        let plain = growth(base, kind, multiplier).jitter(Jitter::None).build().unwrap();
        let equal = growth(base, kind, multiplier).jitter(Jitter::Equal).seed(seed).build().unwrap();
        for (d, j) in plain.schedule().zip(equal.schedule()).take(100) {
            prop_assert!(j <= d && j >= d / 2, "equal jitter {j:?} outside [{:?}, {d:?}]", d / 2);
        }
    }

    #[test]
    fn proportional_jitter_stays_within_its_band_and_the_cap(
        base in base_strategy(),
        factor in 0.0f64..=1.0,
        cap_factor in 1u32..100,
        seed in any::<u64>(),
    ) {
        let cap = base * cap_factor;
        let plain = Backoff::exponential(base).max_delay(cap).jitter(Jitter::None).build().unwrap();
        let prop = Backoff::exponential(base)
            .max_delay(cap)
            .jitter(Jitter::Proportional(factor))
            .seed(seed)
            .build()
            .unwrap();
        for (d, j) in plain.schedule().zip(prop.schedule()).take(60) {
            let d_ns = d.as_nanos() as f64;
            let (low, high) = (d_ns * (1.0 - factor), d_ns * (1.0 + factor));
            let j_ns = j.as_nanos() as f64;
            // One nanosecond of slack for float rounding at the band's edges.
            prop_assert!(j_ns >= low - 1.0 && j_ns <= high + 1.0, "{j:?} outside [{low}, {high}] ns");
            prop_assert!(j <= cap, "proportional jitter {j:?} passed the cap {cap:?}");
        }
    }

    #[test]
    fn decorrelated_stays_within_base_and_cap(
        base in base_strategy(),
        cap_factor in 1u32..1000,
        seed in any::<u64>(),
    ) {
        let cap = base * cap_factor;
        let backoff = Backoff::decorrelated(base).jitter(Jitter::None).max_delay(cap).seed(seed).build().unwrap();
        for d in backoff.schedule().take(200) {
            prop_assert!(d >= base && d <= cap, "{d:?} outside [{base:?}, {cap:?}]");
        }
    }

    #[test]
    fn unjittered_exponential_is_monotone_and_saturates_at_the_cap(
        base in base_strategy(),
        multiplier in 1.0f64..1000.0,
        capped in any::<bool>(),
        cap_factor in 1u32..1_000_000,
    ) {
        let mut b = Backoff::exponential(base).multiplier(multiplier).jitter(Jitter::None);
        let cap = if capped { Some(base * cap_factor) } else { None };
        if let Some(cap) = cap {
            b = b.max_delay(cap);
        }
        let backoff = b.build().unwrap();
        let mut previous = Duration::ZERO;
        let mut last = Duration::ZERO;
        for d in backoff.schedule().take(10_000) {
            prop_assert!(d >= previous, "sequence went down: {previous:?} then {d:?}");
            previous = d;
            last = d;
        }
        match cap {
            // 10,000 attempts of a growing sequence reach any cap we generate.
            Some(cap) if multiplier > 1.01 => prop_assert_eq!(last, cap),
            Some(cap) => prop_assert!(last <= cap),
            // Uncapped, it saturates at the largest representable delay rather than overflow.
            None if multiplier > 1.01 => prop_assert_eq!(last, Duration::from_nanos(u64::MAX)),
            None => {}
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_sequence(
        base in base_strategy(),
        kind in 0u8..5,
        jitter in jitter_strategy(),
        seed in any::<u64>(),
    ) {
        let build = || {
            let b = if kind == 4 {
                Backoff::decorrelated(base).jitter(Jitter::None).max_delay(base * 100)
            } else {
                growth(base, kind, 2.0).jitter(jitter)
            };
            b.seed(seed).build().unwrap()
        };
        let a: Vec<Duration> = build().schedule().take(50).collect();
        let b: Vec<Duration> = build().schedule().take(50).collect();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn max_elapsed_bounds_the_sum_of_delays(
        base in base_strategy(),
        kind in 0u8..4,
        jitter in jitter_strategy(),
        limit_factor in 1u32..50,
        seed in any::<u64>(),
    ) {
        let limit = base * limit_factor;
        let backoff = growth(base, kind, 2.0).jitter(jitter).max_elapsed(limit).seed(seed).build().unwrap();
        let total: Duration = backoff.schedule().take(1000).sum();
        prop_assert!(total <= limit, "delays sum to {total:?}, past max_elapsed {limit:?}");
    }
}

#[test]
fn seeds_differ_and_unseeded_schedules_differ() {
    // Jitter must actually vary: two seeds (and two unseeded schedules) disagree somewhere.
    let build = |seed: Option<u64>| {
        let b = Backoff::exponential(Duration::from_millis(100))
            .max_delay(Duration::from_secs(10))
            .jitter(Jitter::Full);
        match seed {
            Some(s) => b.seed(s).build().unwrap(),
            None => b.build().unwrap(),
        }
    };
    let a: Vec<Duration> = build(Some(1)).schedule().take(20).collect();
    let b: Vec<Duration> = build(Some(2)).schedule().take(20).collect();
    assert_ne!(a, b);
    let policy = build(None);
    let c: Vec<Duration> = policy.schedule().take(20).collect();
    let d: Vec<Duration> = policy.schedule().take(20).collect();
    assert_ne!(c, d);
}

#[test]
fn full_jitter_keeps_spreading_once_the_cap_is_reached() {
    // The un-jittered delay saturates at the cap before jitter, so late delays are spread over
    // [0, cap] rather than all pinned at the cap.
    let cap = Duration::from_secs(1);
    let backoff = Backoff::exponential(Duration::from_millis(100))
        .max_delay(cap)
        .jitter(Jitter::Full)
        .seed(42)
        .build()
        .unwrap();
    let late: Vec<Duration> = backoff.schedule().skip(20).take(100).collect();
    let at_cap = late.iter().filter(|d| **d == cap).count();
    assert!(at_cap < 5, "{at_cap} of 100 late delays sit at the cap");
    assert!(late.iter().any(|d| *d < cap / 2));
}
