//! Server hints: a server that says "slow down" lowers the limiter's rate for a while.

use std::time::Duration;

/// What a server said about the rate it accepts.
///
/// Made from responses by a [`ReadHint`] (for HTTP, [`HttpHints`] reads `429` +
/// `Retry-After` and the `RateLimit` headers) and applied by
/// [`RateLimiter::observe`](crate::RateLimiter::observe) or the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateHint {
    /// No call before this much time has passed (`429 Too Many Requests` with
    /// `Retry-After`). Afterwards the bucket starts empty and refills at the configured rate.
    RetryAfter(Duration),
    /// Only `remaining` calls are accepted in the next `window`: until the window has
    /// passed, calls are spread evenly over it (one per `window / remaining`, no burst), if
    /// that is slower than the configured rate. `remaining == 0` is a `RetryAfter(window)`.
    Remaining {
        /// Calls the server still accepts in the window.
        remaining: u64,
        /// Time until the server's quota resets.
        window: Duration,
    },
}

/// Reads a [`RateHint`] from a response; the layer calls it on every successful response.
///
/// Implemented for [`NoHints`] (the default: nothing is read), [`HttpHints`] (feature `http`)
/// and any `Fn(&Res) -> Option<RateHint>`.
pub trait ReadHint<Res> {
    /// `false` for readers that never find a hint, so the layer skips the bookkeeping.
    const READS: bool = true;

    /// The hint in `response`, if any.
    fn read(&self, response: &Res) -> Option<RateHint>;
}

/// Reads no hint: the limiter's rate is fixed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHints;

impl<Res> ReadHint<Res> for NoHints {
    const READS: bool = false;

    #[inline]
    fn read(&self, _: &Res) -> Option<RateHint> {
        None
    }
}

impl<Res, F> ReadHint<Res> for F
where
    F: Fn(&Res) -> Option<RateHint>,
{
    fn read(&self, response: &Res) -> Option<RateHint> {
        self(response)
    }
}

#[cfg(feature = "http")]
pub use self::http_hints::HttpHints;

#[cfg(feature = "http")]
mod http_hints {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, HeaderName, StatusCode};

    use super::{RateHint, ReadHint};

    static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
    static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

    /// Reads what HTTP servers say about their rate (feature `http`).
    ///
    /// - `429 Too Many Requests` with `Retry-After` (delta-seconds or HTTP-date):
    ///   [`RateHint::RetryAfter`]. Without `Retry-After`, the reset time of a `RateLimit`
    ///   header (`t=`) or of `RateLimit-Reset` is used; a `429` with no timing at all gives no
    ///   hint (the limiter keeps its rate; the retry layer's backoff still applies).
    /// - Any other response carrying `RateLimit: "name";r=<remaining>;t=<reset seconds>`
    ///   (the IETF httpapi ratelimit-headers draft; the most restrictive item counts) or the
    ///   earlier drafts' `RateLimit-Remaining` + `RateLimit-Reset` (delta-seconds):
    ///   [`RateHint::Remaining`].
    ///
    /// Malformed values are ignored, never an error: a server's header cannot break the
    /// client. Huge values saturate.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct HttpHints;

    impl<B> ReadHint<http::Response<B>> for HttpHints {
        fn read(&self, response: &http::Response<B>) -> Option<RateHint> {
            hint(response.status(), response.headers())
        }
    }

    /// The hint in a response's status and headers.
    pub(crate) fn hint(status: StatusCode, headers: &HeaderMap) -> Option<RateHint> {
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(wait) = retry_after(headers) {
                return Some(RateHint::RetryAfter(wait));
            }
            return quota(headers).map(|(_, window)| RateHint::RetryAfter(window));
        }
        quota(headers).map(|(remaining, window)| {
            if remaining == 0 {
                RateHint::RetryAfter(window)
            } else {
                RateHint::Remaining { remaining, window }
            }
        })
    }

    fn retry_after(headers: &HeaderMap) -> Option<Duration> {
        let text = headers
            .get(http::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim();
        if let Ok(secs) = text.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        httpdate::parse_http_date(text).ok().map(until)
    }

    /// The time from now until `date`, zero if it has passed: an HTTP-date is wall-clock
    /// time, so this is the one place that reads the system clock.
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)]
    fn until(date: SystemTime) -> Duration {
        date.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// `(remaining, window)` from the `RateLimit` header, or the earlier drafts' pair.
    fn quota(headers: &HeaderMap) -> Option<(u64, Duration)> {
        let mut best: Option<(u64, Duration)> = None;
        for value in headers.get_all(&RATELIMIT) {
            let Ok(text) = value.to_str() else { continue };
            for item in text.split(',') {
                if let Some(found) = item_quota(item) {
                    best = Some(match best {
                        Some(seen) if stricter(seen, found) => seen,
                        _ => found,
                    });
                }
            }
        }
        if best.is_some() {
            return best;
        }
        let remaining = number(headers.get(&RATELIMIT_REMAINING)?)?;
        let reset = number(headers.get(&RATELIMIT_RESET)?)?;
        Some((remaining, Duration::from_secs(reset)))
    }

    /// `true` when quota `a` leaves less time per call than `b`.
    fn stricter(a: (u64, Duration), b: (u64, Duration)) -> bool {
        // a.window / a.remaining <= b.window / b.remaining, without dividing.
        let lhs = a.1.as_nanos().saturating_mul(u128::from(b.0));
        let rhs = b.1.as_nanos().saturating_mul(u128::from(a.0));
        lhs >= rhs
    }

    /// One item of a `RateLimit` field: `"name";r=50;t=30` (parameters in any order).
    fn item_quota(item: &str) -> Option<(u64, Duration)> {
        let mut params = item.split(';');
        params.next()?; // the policy's name
        let (mut remaining, mut reset) = (None, None);
        for param in params {
            let (key, value) = param.split_once('=')?;
            let value = value.trim().parse::<u64>().ok();
            match key.trim() {
                "r" => remaining = value,
                "t" => reset = value,
                _ => {}
            }
        }
        Some((remaining?, Duration::from_secs(reset?)))
    }

    fn number(value: &http::HeaderValue) -> Option<u64> {
        value.to_str().ok()?.trim().parse().ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                );
            }
            map
        }

        #[test]
        fn a_429_with_retry_after_blocks_for_it() {
            let h = headers(&[("retry-after", "7")]);
            assert_eq!(
                hint(StatusCode::TOO_MANY_REQUESTS, &h),
                Some(RateHint::RetryAfter(Duration::from_secs(7)))
            );
            // Only a 429 makes Retry-After a rate hint (a 503's is for the retry layer).
            assert_eq!(hint(StatusCode::SERVICE_UNAVAILABLE, &h), None);
        }

        #[test]
        fn a_429_without_retry_after_uses_the_quota_reset() {
            let h = headers(&[("ratelimit", "\"default\";r=0;t=12")]);
            assert_eq!(
                hint(StatusCode::TOO_MANY_REQUESTS, &h),
                Some(RateHint::RetryAfter(Duration::from_secs(12)))
            );
            assert_eq!(hint(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new()), None);
        }

        #[test]
        fn the_strictest_quota_item_counts() {
            let h = headers(&[("ratelimit", "\"hour\";r=1000;t=3600, \"minute\";r=5;t=30")]);
            assert_eq!(
                hint(StatusCode::OK, &h),
                Some(RateHint::Remaining {
                    remaining: 5,
                    window: Duration::from_secs(30)
                })
            );
            let h = headers(&[("ratelimit-remaining", "3"), ("ratelimit-reset", "9")]);
            assert_eq!(
                hint(StatusCode::OK, &h),
                Some(RateHint::Remaining {
                    remaining: 3,
                    window: Duration::from_secs(9)
                })
            );
        }

        #[test]
        fn malformed_and_huge_values_never_fail() {
            for value in [
                "",
                ";",
                "x;r=;t=",
                "x;r=-1;t=5",
                "x;r=5",
                "x;t=5",
                "x;r=99999999999999999999999;t=1",
                "\"a\";r=1;t=18446744073709551615",
                "\u{7f}",
            ] {
                if let Ok(v) = http::HeaderValue::from_str(value) {
                    let mut h = HeaderMap::new();
                    h.insert(&RATELIMIT, v.clone());
                    h.insert(http::header::RETRY_AFTER, v);
                    let _ = hint(StatusCode::TOO_MANY_REQUESTS, &h);
                    let _ = hint(StatusCode::OK, &h);
                }
            }
            let mut h = HeaderMap::new();
            h.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
            );
            assert_eq!(hint(StatusCode::TOO_MANY_REQUESTS, &h), None);
            let h = headers(&[("retry-after", "18446744073709551615")]);
            assert_eq!(
                hint(StatusCode::TOO_MANY_REQUESTS, &h),
                Some(RateHint::RetryAfter(Duration::from_secs(u64::MAX)))
            );
        }
    }
}
