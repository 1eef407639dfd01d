//! Server hints: `Retry-After` and `grpc-retry-pushback-ms`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The gRPC header a server uses to push back on retries (gRFC A6).
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// What a server said about retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Wait this long before the next attempt.
    After(Duration),
    /// Do not retry this call.
    DoNotRetry,
}

/// Reads `Retry-After` (delta-seconds or HTTP-date); `None` when absent or malformed.
///
/// An HTTP-date in the past means "now" (zero). A malformed value is ignored (with a trace
/// event): the normal backoff applies.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?;
    let Ok(text) = value.to_str() else {
        tracing::trace!("ignoring a Retry-After header that is not ASCII");
        return None;
    };
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let parsed = httpdate::parse_http_date(text).ok().map(until);
    if parsed.is_none() {
        tracing::trace!(value = text, "ignoring a malformed Retry-After header");
    }
    parsed
}

/// The time from now until `date`, zero if it has passed.
///
/// An HTTP-date is wall-clock time, so this is the one place that reads the system clock:
/// tokio's clock is monotonic and has no calendar. Tests use delta-seconds, which follow the
/// paused tokio clock.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn until(date: SystemTime) -> Duration {
    date.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// Reads `grpc-retry-pushback-ms` per gRFC A6: a non-negative integer is a delay; a negative
/// or malformed value means "do not retry"; `None` when absent.
pub fn grpc_pushback(headers: &HeaderMap) -> Option<Pushback> {
    let value = headers.get(GRPC_RETRY_PUSHBACK_MS)?;
    let parsed = value
        .to_str()
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok());
    Some(match parsed {
        Some(ms) if ms >= 0 => Pushback::After(Duration::from_millis(ms.unsigned_abs())),
        _ => Pushback::DoNotRetry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(
            retry_after(&headers("retry-after", "2")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers("retry-after", " 120 ")),
            Some(Duration::from_mins(2))
        );
        // A date long past: retry now.
        assert_eq!(
            retry_after(&headers("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        // A date far ahead: a long wait (the policy caps it).
        let far = retry_after(&headers("retry-after", "Fri, 01 Jan 2100 00:00:00 GMT")).unwrap();
        assert!(far > Duration::from_hours(365 * 24));
        assert_eq!(retry_after(&headers("retry-after", "soon")), None);
        assert_eq!(retry_after(&headers("retry-after", "-3")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn grpc_pushback_per_spec() {
        let h = |v| headers(GRPC_RETRY_PUSHBACK_MS, v);
        assert_eq!(
            grpc_pushback(&h("250")),
            Some(Pushback::After(Duration::from_millis(250)))
        );
        assert_eq!(grpc_pushback(&h("-1")), Some(Pushback::DoNotRetry));
        assert_eq!(grpc_pushback(&h("abc")), Some(Pushback::DoNotRetry));
        assert_eq!(grpc_pushback(&HeaderMap::new()), None);
    }
}
