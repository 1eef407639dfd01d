//! Every header value a server can send is survivable: the parsers of `Retry-After`
//! (delta-seconds and HTTP-date), `grpc-retry-pushback-ms` and `grpc-status` never panic,
//! and what they accept means what the specs say.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use staunch_retry::{
    GRPC_RETRY_PUSHBACK_MS, Pushback, RetryClassify, RetryOn, Verdict, grpc_pushback, retry_after,
};

fn with(name: &'static str, value: &[u8]) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(name, value);
    Some(headers)
}

fn response(status: u16, headers: HeaderMap) -> http::Response<()> {
    let mut res = http::Response::builder().status(status).body(()).unwrap();
    *res.headers_mut() = headers;
    res
}

/// Text near what servers send: digits (any length), signs, dots, spaces, date-like pieces.
fn near_valid() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ 0-9+\\-.]{0,25}",
        "(Mon|Tue|Wed|Sun|Xyz), [0-9]{1,2} (Jan|Feb|Dec|Foo) [0-9]{1,5} [0-9]{1,2}:[0-9]{2}:[0-9]{2} (GMT|UTC)?",
        "[A-Za-z]{6,9}, [0-9]{2}-[A-Za-z]{3}-[0-9]{2} [0-9:]{8} GMT",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551615".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("99999999999999999999999999".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn header_parsers_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        for name in ["retry-after", GRPC_RETRY_PUSHBACK_MS, "grpc-status"] {
            if let Some(headers) = with(name, &bytes) {
                let _ = retry_after(&headers);
                let _ = grpc_pushback(&headers);
                let classify = RetryOn::new();
                for status in [200, 429, 503] {
                    let _ = classify.classify(Ok(&response(status, headers.clone())));
                }
            }
        }
    }

    #[test]
    fn header_parsers_never_panic_on_near_valid_text(text in near_valid()) {
        for name in ["retry-after", GRPC_RETRY_PUSHBACK_MS, "grpc-status"] {
            if let Some(headers) = with(name, text.as_bytes()) {
                let _ = retry_after(&headers);
                let _ = grpc_pushback(&headers);
                let _ = RetryOn::new().classify(Ok(&response(503, headers)));
            }
        }
    }

    #[test]
    fn retry_after_seconds_are_exact_up_to_u64_max(secs in any::<u64>(), pad in " {0,3}") {
        let headers = with("retry-after", format!("{pad}{secs}{pad}").as_bytes()).unwrap();
        prop_assert_eq!(retry_after(&headers), Some(Duration::from_secs(secs)));
        // A 503 that says so waits that long (the policy caps it later).
        prop_assert_eq!(
            RetryOn::new().classify(Ok(&response(503, headers))),
            Verdict::RetryAfter(Duration::from_secs(secs))
        );
    }

    #[test]
    fn retry_after_dates_are_a_wait_until_then_or_zero(offset in -1_500_000_000i64..4_000_000_000) {
        #[allow(clippy::disallowed_methods)]
        let now = SystemTime::now();
        let date = if offset >= 0 {
            now + Duration::from_secs(offset.unsigned_abs())
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        };
        // `fmt_http_date` only writes 1970 to 9999 (the parser is what is under test).
        let text = httpdate::fmt_http_date(date);
        let headers = with("retry-after", text.as_bytes()).unwrap();
        let wait = retry_after(&headers).expect("a valid HTTP-date");
        if offset <= 0 {
            prop_assert_eq!(wait, Duration::ZERO);
        } else {
            // Whole seconds on the wire, and a clock that moves while the test runs.
            let expected = Duration::from_secs(offset.unsigned_abs());
            prop_assert!(wait <= expected && wait + Duration::from_secs(5) >= expected, "{:?} vs {:?}", wait, expected);
        }
    }

    #[test]
    fn grpc_pushback_follows_grfc_a6(ms in any::<i64>()) {
        let headers = with(GRPC_RETRY_PUSHBACK_MS, ms.to_string().as_bytes()).unwrap();
        let expected = if ms >= 0 {
            Pushback::After(Duration::from_millis(ms.unsigned_abs()))
        } else {
            Pushback::DoNotRetry
        };
        prop_assert_eq!(grpc_pushback(&headers), Some(expected));
    }

    #[test]
    fn a_grpc_status_outside_the_codes_never_panics_or_matches(code in any::<u64>()) {
        let headers = with("grpc-status", code.to_string().as_bytes()).unwrap();
        let verdict = RetryOn::new().classify(Ok(&response(200, headers)));
        if code > 16 {
            prop_assert_eq!(verdict, Verdict::Done);
        }
    }
}
