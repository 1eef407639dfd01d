//! With the `metrics` feature, rejections, waits and limit changes reach the recorder with a
//! `name` label, and `emit_metrics` publishes the gauges.
#![cfg(feature = "metrics")]
use std::sync::Arc;

use staunch_bulkhead::Bulkhead;
use staunch_test_support::{Capture, CaptureRecorder};

#[test]
fn rejections_limit_changes_and_gauges_reach_the_recorder() {
    let capture = Arc::new(Capture::default());
    let recorder = CaptureRecorder(Arc::clone(&capture));
    metrics::with_local_recorder(&recorder, || {
        let b = Bulkhead::builder("payment")
            .max_concurrent(1)
            .build()
            .unwrap();
        let _held = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        assert!(b.try_acquire().is_err());
        b.set_max_concurrent(4).unwrap();
        b.emit_metrics();
    });
    let seen = capture.0.lock().unwrap();
    let get = |k: &str| seen.get(k).copied();
    assert_eq!(
        get("staunch.bulkhead.rejections{staunch.dependency=payment,staunch.reason=no_permit}"),
        Some(2.0),
        "{seen:?}"
    );
    assert_eq!(
        get("staunch.bulkhead.limit{staunch.dependency=payment}"),
        Some(4.0)
    );
    assert_eq!(
        get("staunch.bulkhead.in_flight{staunch.dependency=payment}"),
        Some(1.0)
    );
    assert_eq!(
        get("staunch.bulkhead.queued{staunch.dependency=payment}"),
        Some(0.0)
    );
}
