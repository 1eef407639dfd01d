//! Property tests of the wire formats: parsers never panic, and what is written reads back as
//! at most the time that remained, less than one unit short.

use std::time::Duration;

use proptest::prelude::*;
use staunch_timeout::HeaderFormat;
use staunch_timeout::wire::{format_grpc_timeout, format_millis, parse_grpc_timeout, parse_millis};

/// The length in nanoseconds of a `grpc-timeout` unit.
fn unit_nanos(unit: u8) -> u128 {
    match unit {
        b'n' => 1,
        b'u' => 1_000,
        b'm' => 1_000_000,
        b'S' => 1_000_000_000,
        b'M' => 60_000_000_000,
        b'H' => 3_600_000_000_000,
        other => panic!("unknown unit {other}"),
    }
}

/// Durations spread over every unit of the format, from 1 ns to 10^5 hours.
fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..1_000_000_000u64).prop_map(Duration::from_nanos),
        (0u64..100_000u64, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..360_000_000u64, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        let _ = parse_grpc_timeout(&bytes);
        let _ = parse_millis(&bytes);
    }

    #[test]
    fn parsers_never_panic_on_near_valid_strings(s in "[ 0-9+\\-.]{0,12}[HMSmunxs ]?[0-9]?") {
        if let Some(d) = parse_grpc_timeout(s.as_bytes()) {
            // Whatever parses is within the format's range.
            prop_assert!(d <= Duration::from_hours(99_999_999));
        }
        let _ = parse_millis(s.as_bytes());
    }

    #[test]
    fn grpc_timeout_round_trips_within_one_unit_never_above(d in durations()) {
        let written = format_grpc_timeout(d);
        let bytes = written.as_bytes();
        let (&unit, digits) = bytes.split_last().unwrap();
        prop_assert!((1..=8).contains(&digits.len()), "{written:?}");
        let read = parse_grpc_timeout(bytes).expect("what we write parses");
        prop_assert!(read <= d, "{written:?} gives more than {d:?}");
        prop_assert!(d.as_nanos() - read.as_nanos() < unit_nanos(unit), "{written:?} vs {d:?}");
        // The finest unit that fits was chosen: a finer one would need more than 8 digits.
        if unit != b'n' {
            let finer = [b'n', b'u', b'm', b'S', b'M', b'H']
                .windows(2)
                .find(|w| w[1] == unit)
                .map(|w| w[0])
                .unwrap();
            prop_assert!(d.as_nanos() / unit_nanos(finer) > 99_999_999);
        }
    }

    #[test]
    fn grpc_timeout_parses_what_the_spec_allows(value in 0u64..=99_999_999, unit in prop::sample::select(vec![b'H', b'M', b'S', b'm', b'u', b'n'])) {
        let text = format!("{value}{}", unit as char);
        let parsed = parse_grpc_timeout(text.as_bytes()).expect("valid value");
        prop_assert_eq!(parsed.as_nanos(), u128::from(value) * unit_nanos(unit));
    }

    #[test]
    fn millis_round_trip_within_one_millisecond_never_above(d in durations()) {
        let read = parse_millis(format_millis(d).as_bytes()).expect("what we write parses");
        prop_assert!(read <= d);
        prop_assert!(d.saturating_sub(read) < Duration::from_millis(1));
        prop_assert_eq!(HeaderFormat::Millis.parse(HeaderFormat::Millis.format(d).as_bytes()), Some(read));
    }
}

#[test]
fn the_largest_durations_are_capped_not_wrapped() {
    for d in [Duration::MAX, Duration::from_hours(200_000_000)] {
        let read = parse_grpc_timeout(format_grpc_timeout(d).as_bytes()).unwrap();
        assert_eq!(read, Duration::from_hours(99_999_999));
        assert!(read <= d);
    }
}
