//! The opt-in `staunch.retry` span: its declared fields, and what each call records in them.

#[path = "support/spans.rs"]
mod capture;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use staunch_core::telemetry::span;
use staunch_retry::RetryLayer;
use support::{BoxError, policy, reasons};
use tower::{Layer, ServiceExt};

/// Runs one call through a retry layer whose service fails `failures` times first.
fn run(spans: bool, failures: u32) -> Result<u32, BoxError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reasons();
        let policy = policy(&r).name("payment").spans(spans).build().unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let svc = RetryLayer::new(policy).layer(tower::service_fn(move |_: u32| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < failures {
                    Err::<u32, BoxError>(
                        std::io::Error::from(std::io::ErrorKind::ConnectionReset).into(),
                    )
                } else {
                    Ok(n)
                }
            }
        }));
        svc.oneshot(1).await
    })
}

#[test]
fn the_span_declares_the_documented_fields() {
    let (spans, _guard) = capture::capture();
    run(true, 0).unwrap();
    let retry = spans.named(span::RETRY);
    assert_eq!(retry.len(), 1);
    for field in [
        span::DEPENDENCY,
        span::RESEND_COUNT,
        span::RETRY_BACKOFF_MS,
        span::ERROR_TYPE,
    ] {
        assert!(retry[0].declared.iter().any(|d| d == field), "{field}");
    }
    assert_eq!(retry[0].get(span::DEPENDENCY), Some("payment"));
    assert_eq!(retry[0].get(span::RESEND_COUNT), Some("0"));
    assert_eq!(retry[0].get(span::ERROR_TYPE), None);
}

#[test]
fn retries_are_counted_as_resends_with_their_backoff() {
    let (spans, _guard) = capture::capture();
    assert_eq!(run(true, 2).unwrap(), 2);
    let retry = spans.named(span::RETRY);
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].get(span::RESEND_COUNT), Some("2"));
    assert_eq!(retry[0].get(span::RETRY_BACKOFF_MS), Some("100"));
    assert_eq!(retry[0].get(span::ERROR_TYPE), None);
}

#[test]
fn a_call_that_gives_up_records_its_error_type() {
    let (spans, _guard) = capture::capture();
    run(true, 10).unwrap_err();
    let retry = spans.named(span::RETRY);
    assert_eq!(retry[0].get(span::RESEND_COUNT), Some("2"));
    assert_eq!(retry[0].get(span::ERROR_TYPE), Some("_OTHER"));
}

#[test]
fn with_spans_off_no_span_is_created() {
    let (spans, _guard) = capture::capture();
    run(false, 2).unwrap();
    assert!(spans.all().is_empty(), "{:?}", spans.all());
}
