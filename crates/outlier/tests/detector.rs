//! The detector engine on its own: ejection by failures in a row and by failure rate, the
//! growing and capped ejection time, the cap on endpoints out, lazy return, and endpoints
//! added and removed.

use std::time::Duration;

use proptest::prelude::*;
use staunch_core::Outcome::{self, Failure, Ignored, Success};
use staunch_outlier::{Detector, EndpointState, Settings};
use tokio::time::Instant;

fn settings() -> Settings {
    Settings::new(3, Duration::from_secs(10), 50).unwrap()
}

fn fail(d: &mut Detector, index: usize, times: usize, now: Instant) {
    for _ in 0..times {
        d.record(index, Failure, now);
    }
}

#[test]
fn bad_settings_name_their_field() {
    let field =
        |r: Result<Settings, staunch_outlier::ConfigError>| r.unwrap_err().field().to_owned();
    assert_eq!(
        field(Settings::new(0, Duration::from_secs(1), 10)),
        "consecutive_failures"
    );
    assert_eq!(
        field(Settings::new(1, Duration::ZERO, 10)),
        "base_ejection_time"
    );
    assert_eq!(
        field(Settings::new(1, Duration::from_secs(1), 0)),
        "max_ejection_percent"
    );
    assert_eq!(
        field(Settings::new(1, Duration::from_secs(1), 101)),
        "max_ejection_percent"
    );
    let b = || Settings::builder();
    assert_eq!(
        field(
            b().base_ejection_time(Duration::from_secs(10))
                .max_ejection_time(Duration::from_secs(9))
                .build()
        ),
        "max_ejection_time"
    );
    assert_eq!(
        field(b().failure_rate(Duration::ZERO, 10, 50.0).build()),
        "failure_rate.interval"
    );
    assert_eq!(
        field(b().failure_rate(Duration::from_secs(1), 0, 50.0).build()),
        "failure_rate.minimum_requests"
    );
    for threshold in [0.0, -1.0, 100.5, f64::NAN, f64::INFINITY] {
        assert_eq!(
            field(
                b().failure_rate(Duration::from_secs(1), 1, threshold)
                    .build()
            ),
            "failure_rate.threshold",
            "{threshold}"
        );
    }
}

#[test]
fn defaults_are_envoy_like() {
    let s = Settings::builder().build().unwrap();
    assert_eq!(s.consecutive_failures(), 5);
    assert_eq!(s.base_ejection_time(), Duration::from_secs(30));
    assert_eq!(s.max_ejection_time(), Duration::from_mins(5));
    assert_eq!(s.max_ejection_percent(), 50);
    assert_eq!(s.failure_rate(), None);
    // A base above the default maximum raises the maximum with it.
    let long = Settings::new(1, Duration::from_hours(1), 50).unwrap();
    assert_eq!(long.max_ejection_time(), Duration::from_hours(1));
}

#[test]
fn ejects_after_consecutive_failures_and_returns_with_growing_time() {
    let now = Instant::now();
    let mut d = Detector::new(settings(), 3);
    fail(&mut d, 1, 2, now);
    assert_eq!(d.eligible(now), vec![0, 1, 2]);
    d.record(1, Failure, now);
    assert_eq!(d.eligible(now), vec![0, 2]);
    assert_eq!(
        d.endpoints(now)[1].state,
        EndpointState::Ejected {
            until: now + Duration::from_secs(10)
        }
    );
    assert_eq!(d.eligible(now + Duration::from_secs(10)), vec![0, 1, 2]);
    let later = now + Duration::from_secs(10);
    // Back with no failures in a row: three more are needed.
    assert_eq!(d.endpoints(later)[1].consecutive_failures, 0);
    fail(&mut d, 1, 3, later);
    assert_eq!(d.eligible(later + Duration::from_secs(19)), vec![0, 2]);
    assert_eq!(d.eligible(later + Duration::from_secs(20)), vec![0, 1, 2]);
    let status = &d.endpoints(later + Duration::from_secs(20))[1];
    assert_eq!((status.key, status.times_ejected), (1, 2));
    let m = d.metrics();
    assert_eq!(
        (m.ejections, m.returns, m.ejected, m.endpoints),
        (2, 2, 0, 3)
    );
}

#[test]
fn ejection_time_stops_growing_at_max_ejection_time() {
    let settings = Settings::builder()
        .consecutive_failures(1)
        .base_ejection_time(Duration::from_secs(10))
        .max_ejection_time(Duration::from_secs(25))
        .max_ejection_percent(50)
        .build()
        .unwrap();
    let mut d = Detector::new(settings, 2);
    let mut now = Instant::now();
    for expected in [10, 20, 25, 25, 25] {
        d.record(0, Failure, now);
        let until = d.endpoints(now)[0].ejected_until().unwrap();
        assert_eq!(until - now, Duration::from_secs(expected));
        now = until;
    }
}

#[test]
fn success_resets_the_count_and_ignored_changes_nothing() {
    let now = Instant::now();
    let mut d = Detector::new(settings(), 3);
    d.record(0, Failure, now);
    d.record(0, Failure, now);
    d.record(0, Ignored, now);
    assert_eq!(d.endpoints(now)[0].consecutive_failures, 2);
    d.record(0, Success, now);
    d.record(0, Failure, now);
    assert_eq!(d.eligible(now), vec![0, 1, 2]);
    // Out of range is ignored.
    d.record(7, Failure, now);
}

#[test]
fn cap_holds_endpoints_in_and_counts_what_it_held() {
    let now = Instant::now();
    let mut d = Detector::new(settings(), 3);
    for i in 0..3 {
        fail(&mut d, i, 5, now);
    }
    // 50 % of 3, rounded down, is one endpoint.
    assert_eq!(d.eligible(now).len(), 2);
    assert_eq!(d.metrics().ejected, 1);
    assert!(d.metrics().held_by_cap >= 2);
    // Once the first is back, the next failure of another ejects it.
    let later = now + Duration::from_secs(10);
    assert_eq!(d.eligible(later).len(), 3);
    d.record(2, Failure, later);
    assert_eq!(d.eligible(later), vec![0, 1]);
}

#[test]
fn a_cap_that_rounds_to_zero_ejects_nothing() {
    let now = Instant::now();
    let mut d = Detector::new(Settings::new(1, Duration::from_secs(1), 33).unwrap(), 3);
    fail(&mut d, 0, 10, now);
    assert_eq!(d.eligible(now), vec![0, 1, 2]);
}

#[test]
fn with_every_endpoint_out_calls_go_to_all() {
    let now = Instant::now();
    let mut d = Detector::new(Settings::new(1, Duration::from_secs(5), 100).unwrap(), 2);
    d.record(0, Failure, now);
    assert_eq!(d.eligible(now), vec![1]);
    d.record(1, Failure, now);
    assert_eq!(d.eligible(now), vec![0, 1]);
    assert!(d.endpoints(now).iter().all(|e| e.state.is_ejected()));
    assert_eq!(d.eligible(now + Duration::from_secs(5)), vec![0, 1]);
    assert_eq!(d.metrics().ejected, 0);
}

#[test]
fn failure_rate_ejects_at_the_end_of_an_interval() {
    let settings = Settings::builder()
        .consecutive_failures(100)
        .base_ejection_time(Duration::from_secs(30))
        .max_ejection_percent(50)
        .failure_rate(Duration::from_secs(10), 10, 50.0)
        .build()
        .unwrap();
    let mut d = Detector::with_keys("rates", settings, ["a", "b", "c", "d"]);
    let start = Instant::now();
    // "a" fails every other call (never 100 in a row); "b" fails 40 %; "c" fails every call
    // but answers too few to be judged; "d" is fine.
    for i in 0..20 {
        d.record(0, if i % 2 == 0 { Failure } else { Success }, start);
        d.record(1, if i % 5 < 2 { Failure } else { Success }, start);
        d.record(3, Success, start);
    }
    fail_n(&mut d, 2, 9, start);
    assert_eq!(d.eligible(start + Duration::from_millis(9_999)).len(), 4);
    let judged = start + Duration::from_secs(10);
    assert_eq!(d.eligible(judged), vec![1, 2, 3]);
    let m = d.metrics();
    assert_eq!((m.ejections, m.failure_rate_ejections), (1, 1));
    // The next interval starts from nothing: "b" alone, 40 %, stays.
    for _ in 0..20 {
        d.record(1, Success, judged);
    }
    assert_eq!(d.eligible(judged + Duration::from_secs(10)), vec![1, 2, 3]);
}

fn fail_n(d: &mut Detector<&str>, index: usize, n: usize, now: Instant) {
    for _ in 0..n {
        d.record(index, Failure, now);
    }
}

#[test]
fn failure_rate_ejects_the_worst_first_under_the_cap() {
    let settings = Settings::builder()
        .consecutive_failures(1000)
        .max_ejection_percent(34)
        .failure_rate(Duration::from_secs(1), 4, 50.0)
        .build()
        .unwrap();
    let mut d = Detector::new(settings, 3);
    let now = Instant::now();
    for i in 0..10 {
        d.record(0, if i < 6 { Failure } else { Success }, now);
        d.record(1, Failure, now);
        d.record(2, Success, now);
    }
    assert_eq!(d.eligible(now + Duration::from_secs(1)), vec![0, 2]);
    assert_eq!(d.metrics().held_by_cap, 1);
}

#[test]
fn endpoints_come_and_go() {
    let now = Instant::now();
    let mut d = Detector::with_keys(
        "set",
        Settings::new(1, Duration::from_secs(5), 50).unwrap(),
        ["a", "b", "c", "d"],
    );
    d.record(1, Failure, now);
    d.record(3, Failure, now + Duration::from_secs(1));
    assert_eq!(d.metrics().ejected, 2);
    // Three endpoints allow one out: "b", due back first, returns now.
    assert_eq!(d.remove(0, now + Duration::from_secs(2)), Some("a"));
    assert_eq!(d.index_of(&"d"), Some(2));
    let status = d.endpoints(now + Duration::from_secs(2));
    assert_eq!(
        status.iter().map(|s| s.key).collect::<Vec<_>>(),
        ["b", "c", "d"]
    );
    assert!(!status[0].state.is_ejected());
    assert!(status[2].state.is_ejected());
    assert_eq!(d.metrics().returns, 1);
    d.push("e");
    assert_eq!(d.eligible(now + Duration::from_secs(2)), vec![0, 1, 3]);
    assert_eq!(d.remove(9, now), None);
    assert_eq!(d.len(), 4);
}

#[test]
fn durations_at_the_edge_saturate() {
    let settings = Settings::builder()
        .consecutive_failures(1)
        .base_ejection_time(Duration::MAX)
        .max_ejection_time(Duration::MAX)
        .build()
        .unwrap();
    let mut d = Detector::new(settings, 2);
    let now = Instant::now();
    d.record(0, Failure, now);
    assert_eq!(d.eligible(now), vec![1]);
    assert_eq!(d.eligible(now + Duration::from_hours(24 * 365)), vec![1]);
}

#[test]
fn seeded_sequences_never_eject_more_than_the_cap() {
    let start = Instant::now();
    let mut seed: u64 = 0x5eed;
    for percent in [1, 10, 34, 50, 100] {
        let settings = Settings::builder()
            .consecutive_failures(2)
            .base_ejection_time(Duration::from_secs(5))
            .max_ejection_percent(percent)
            .failure_rate(Duration::from_secs(3), 3, 60.0)
            .build()
            .unwrap();
        let mut d = Detector::new(settings, 5);
        let cap = 5 * percent as usize / 100;
        for step in 0..2000u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let now = start + Duration::from_millis(step * 37);
            let outcome = if (seed >> 20).is_multiple_of(3) {
                Success
            } else {
                Failure
            };
            d.record((seed >> 33) as usize % 5, outcome, now);
            let out = d
                .endpoints(now)
                .iter()
                .filter(|e| e.state.is_ejected())
                .count();
            assert!(out <= cap, "{out} ejected with cap {cap}");
            assert_eq!(out, d.metrics().ejected);
            assert!(!d.eligible(now).is_empty());
        }
    }
}

/// A tiny model of the consecutive-failures rule without a cap (100 %, every endpoint may
/// go): an endpoint is out exactly while a run of failures reached the threshold less than
/// its ejection time ago.
#[derive(Debug, Clone)]
struct Model {
    failures: Vec<u32>,
    until: Vec<Option<u64>>,
    times: Vec<u32>,
}

proptest! {
    #[test]
    fn detector_matches_a_reference_model(
        ops in proptest::collection::vec((0usize..3, any::<bool>(), 0u64..4), 1..300),
        threshold in 1u32..4,
        base in 1u64..5,
    ) {
        let settings = Settings::builder()
            .consecutive_failures(threshold)
            .base_ejection_time(Duration::from_secs(base))
            .max_ejection_time(Duration::from_secs(base * 3))
            .max_ejection_percent(100)
            .build()
            .unwrap();
        let mut d = Detector::new(settings, 3);
        let mut m = Model { failures: vec![0; 3], until: vec![None; 3], times: vec![0; 3] };
        let start = Instant::now();
        let mut t = 0u64;
        for (index, failed, dt) in ops {
            t += dt;
            let now = start + Duration::from_secs(t);
            for i in 0..3 {
                if m.until[i].is_some_and(|u| u <= t) {
                    m.until[i] = None;
                    m.failures[i] = 0;
                }
            }
            let outcome: Outcome = if failed { Failure } else { Success };
            d.record(index, outcome, now);
            if failed {
                m.failures[index] += 1;
                if m.until[index].is_none() && m.failures[index] >= threshold {
                    m.times[index] += 1;
                    m.until[index] = Some(t + base * u64::from(m.times[index].min(3)));
                }
            } else {
                m.failures[index] = 0;
            }
            let seen = d.endpoints(now);
            for (i, seen) in seen.iter().enumerate() {
                prop_assert_eq!(seen.ejected_until(), m.until[i].map(|u| start + Duration::from_secs(u)));
                prop_assert_eq!(seen.consecutive_failures, m.failures[i]);
                prop_assert_eq!(seen.times_ejected, m.times[i]);
            }
        }
    }
}
