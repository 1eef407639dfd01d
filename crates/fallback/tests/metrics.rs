//! With the `metrics` feature, fallbacks and the fallback's own failures reach the recorder
//! with `name` and `reason` (or `cause`) labels, counting the same as `FallbackPolicy::metrics`.
#![cfg(feature = "metrics")]
use std::sync::Arc;

use staunch_core::{BoxError, BreakerOpen};
use staunch_fallback::{Answer, FallbackMetrics, FallbackPolicy};
use staunch_test_support::{Capture, CaptureRecorder};

#[test]
fn fallbacks_are_counted_by_name_and_reason() {
    let capture = Arc::new(Capture::default());
    let recorder = CaptureRecorder(Arc::clone(&capture));
    let policy = FallbackPolicy::<u32>::builder("payment")
        .on_error(|e| {
            assert!(!e.to_string().contains("boom"), "rule panicked");
            true
        })
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let answer = Answer::value(0);
            let open =
                || async { Err::<u32, BoxError>(Box::new(BreakerOpen::new("p".into(), None))) };
            for _ in 0..3 {
                policy.call(open(), &answer).await.unwrap();
            }
            let io = || async { Err::<u32, _>(std::io::Error::other("reset")) };
            policy.call(io(), &answer).await.unwrap();
            let boom = async { Err::<u32, _>(std::io::Error::other("boom")) };
            policy.call(boom, &answer).await.unwrap_err();
            policy
                .call_or_else(io(), |_, _| async {
                    Err::<u32, _>(std::io::Error::other("backup"))
                })
                .await
                .unwrap_err();
            policy
                .call(async { Ok::<u32, BoxError>(1) }, &answer)
                .await
                .unwrap();
        });
    });
    let seen = capture.0.lock().unwrap().clone();
    let get = |key: &str| seen.get(key).copied().unwrap_or(0.0);
    assert_eq!(
        get("staunch.fallback.used{staunch.dependency=payment,staunch.reason=breaker_open}"),
        3.0
    );
    assert_eq!(
        get("staunch.fallback.used{staunch.dependency=payment,staunch.reason=error}"),
        2.0
    );
    assert_eq!(
        get("staunch.fallback.failed{staunch.dependency=payment,staunch.reason=panicked}"),
        1.0
    );
    assert_eq!(
        get("staunch.fallback.failed{staunch.dependency=payment,staunch.reason=backup_error}"),
        1.0
    );
    assert_eq!(seen.len(), 4, "{seen:?}");
    let m = policy.metrics();
    assert_eq!(
        (
            m.rejections,
            m.errors,
            m.statuses,
            m.responses,
            m.panicked,
            m.failed
        ),
        (3, 2, 0, 0, 1, 1)
    );
    assert_eq!(m.total(), 5);
    assert_ne!(m, FallbackMetrics::default());
}
