//! Reading and writing a remaining time on the wire: the gRPC `grpc-timeout` syntax and plain
//! milliseconds.
//!
//! Both writers round *down*: the value a callee reads is never more than the time the caller
//! has left, so a callee that honours it finishes (or gives up) before the caller stops
//! waiting. Both readers return `None` for anything malformed; they never panic.

use std::time::Duration;

use http::HeaderValue;

/// The largest number the gRPC wire format allows: at most eight ASCII digits.
const GRPC_MAX_VALUE: u64 = 99_999_999;

/// Units of the gRPC wire format, finest first, with their length in nanoseconds.
const GRPC_UNITS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60_000_000_000),
    (b'H', 3_600_000_000_000),
];

/// How a remaining time is written in an HTTP header other than `grpc-timeout`; in settings
/// files `"grpc_timeout"` or `"millis"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum HeaderFormat {
    /// The gRPC `grpc-timeout` syntax: up to eight digits and a unit, `H` (hours), `M`
    /// (minutes), `S` (seconds), `m` (milliseconds), `u` (microseconds) or `n` (nanoseconds),
    /// e.g. `1500m`. Precise and self-describing; the default.
    #[default]
    GrpcTimeout,
    /// Whole milliseconds as a decimal integer, e.g. `1500`, as Envoy's
    /// `x-envoy-expected-rq-timeout-ms` does.
    Millis,
}

impl HeaderFormat {
    /// Parses a header value written in this format; `None` when it is malformed.
    pub fn parse(self, value: &[u8]) -> Option<Duration> {
        match self {
            Self::GrpcTimeout => parse_grpc_timeout(value),
            Self::Millis => parse_millis(value),
        }
    }

    /// Writes `remaining` in this format, rounded down to the format's precision.
    pub fn format(self, remaining: Duration) -> HeaderValue {
        match self {
            Self::GrpcTimeout => format_grpc_timeout(remaining),
            Self::Millis => format_millis(remaining),
        }
    }
}

/// Parses a `grpc-timeout` value: one to eight ASCII digits followed by one unit character
/// (`H`, `M`, `S`, `m`, `u`, `n`). Surrounding ASCII whitespace is ignored.
///
/// Returns `None` for anything else (empty, nine digits, a sign, an unknown unit, non-ASCII).
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::wire::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(b"1500m"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
/// assert_eq!(parse_grpc_timeout(b"123456789n"), None); // nine digits
/// assert_eq!(parse_grpc_timeout(b"10s"), None); // seconds are `S`
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let value = value.trim_ascii();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Eight digits fit comfortably: 99_999_999 hours is about 3.6e11 seconds.
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    let duration = match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    };
    Some(duration)
}

/// Writes `remaining` as a `grpc-timeout` value in the finest unit whose value fits in eight
/// digits, rounded down (never more time than remains). Durations beyond the format's range
/// (about 11,400 years) are written as the largest value, `99999999H`.
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::wire::format_grpc_timeout;
///
/// assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(2)), "2000000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(3600)), "3600000m");
/// ```
pub fn format_grpc_timeout(remaining: Duration) -> HeaderValue {
    let nanos = remaining.as_nanos();
    let (value, unit) = GRPC_UNITS
        .iter()
        .find_map(|&(unit, len)| {
            let value = nanos / len;
            (value <= u128::from(GRPC_MAX_VALUE)).then_some((value as u64, unit))
        })
        .unwrap_or((GRPC_MAX_VALUE, b'H'));
    let mut buf = [0u8; 9];
    let len = write_decimal(value, &mut buf);
    buf[len] = unit;
    header_value(&buf[..=len])
}

/// Parses whole milliseconds: one to twenty ASCII digits whose value fits in a `u64`.
/// Surrounding ASCII whitespace is ignored; anything else is `None`.
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::wire::parse_millis;
///
/// assert_eq!(parse_millis(b"1500"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_millis(b"-1"), None);
/// assert_eq!(parse_millis(b"1.5"), None);
/// ```
pub fn parse_millis(value: &[u8]) -> Option<Duration> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some(Duration::from_millis(n))
}

/// Writes `remaining` as whole milliseconds, rounded down (never more time than remains).
///
/// ```
/// use std::time::Duration;
/// use staunch_timeout::wire::format_millis;
///
/// assert_eq!(format_millis(Duration::from_micros(1_999_999)), "1999");
/// ```
pub fn format_millis(remaining: Duration) -> HeaderValue {
    let millis = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
    let mut buf = [0u8; 20];
    let len = write_decimal(millis, &mut buf);
    header_value(&buf[..len])
}

/// Writes `n` in decimal at the start of `buf` and returns the number of digits.
fn write_decimal(mut n: u64, buf: &mut [u8]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = &tmp[i..];
    buf[..digits.len()].copy_from_slice(digits);
    digits.len()
}

fn header_value(bytes: &[u8]) -> HeaderValue {
    // Only ASCII digits and unit letters are ever written, which are always valid.
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static("0n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_parses_every_unit() {
        assert_eq!(parse_grpc_timeout(b"3H"), Some(Duration::from_hours(3)));
        assert_eq!(parse_grpc_timeout(b"3M"), Some(Duration::from_mins(3)));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout(b"3m"), Some(Duration::from_millis(3)));
        assert_eq!(parse_grpc_timeout(b"3u"), Some(Duration::from_micros(3)));
        assert_eq!(parse_grpc_timeout(b"3n"), Some(Duration::from_nanos(3)));
        assert_eq!(
            parse_grpc_timeout(b" 99999999H "),
            Some(Duration::from_hours(99_999_999))
        );
    }

    #[test]
    fn grpc_timeout_rejects_malformed_values() {
        for bad in [
            &b""[..],
            b"S",
            b"10",
            b"10s",
            b"10x",
            b"+10S",
            b"-10S",
            b"1 0S",
            b"123456789S",
            b"1.5S",
            b"\xff\xfeS",
            b"10SS",
        ] {
            assert_eq!(
                parse_grpc_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn grpc_timeout_uses_the_finest_unit_that_fits_and_rounds_down() {
        assert_eq!(format_grpc_timeout(Duration::ZERO), "0n");
        assert_eq!(
            format_grpc_timeout(Duration::from_nanos(99_999_999)),
            "99999999n"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_nanos(100_000_001)),
            "100000u"
        );
        assert_eq!(
            format_grpc_timeout(Duration::from_nanos(100_000_999)),
            "100000u"
        );
        assert_eq!(format_grpc_timeout(Duration::from_secs(100_000)), "100000S");
        assert_eq!(
            format_grpc_timeout(Duration::from_secs(100_000_000)),
            "1666666M"
        );
        assert_eq!(format_grpc_timeout(Duration::MAX), "99999999H");
    }

    #[test]
    fn millis_round_down_and_reject_overflow() {
        assert_eq!(format_millis(Duration::from_nanos(999_999)), "0");
        assert_eq!(format_millis(Duration::from_millis(42)), "42");
        assert_eq!(
            parse_millis(b"18446744073709551615"),
            Some(Duration::from_millis(u64::MAX))
        );
        assert_eq!(parse_millis(b"18446744073709551616"), None);
        assert_eq!(parse_millis(b""), None);
    }
}
