//! With the `metrics` feature, every injected fault reaches the recorder as
//! `staunch.fault.injected{name, kind}`, and switches as `staunch.fault.active{name}`.
#![cfg(feature = "metrics")]
use std::sync::Arc;
use std::time::Duration;

use staunch_fault::FaultInjector;
use staunch_test_support::{Capture, CaptureRecorder};

#[test]
fn every_kind_of_fault_reaches_the_recorder() {
    let capture = Arc::new(Capture::default());
    let recorder = CaptureRecorder(Arc::clone(&capture));
    let metrics = metrics::with_local_recorder(&recorder, || {
        let injector = FaultInjector::builder("payment")
            .latency(0.5, Duration::from_millis(1), Duration::from_millis(2))
            .error(0.3, 503)
            .abort(0.2)
            .seed(9)
            .build()
            .unwrap();
        for _ in 0..1000 {
            let _ = injector.decide();
        }
        let metrics = injector.metrics();
        injector.disable();
        metrics
    });
    let seen = capture.0.lock().unwrap();
    let get = |k: &str| seen.get(k).copied();
    for (kind, count) in [
        ("latency", metrics.delayed),
        ("error", metrics.errors),
        ("abort", metrics.aborts),
    ] {
        assert!(count > 0);
        assert_eq!(
            get(&format!(
                "staunch.fault.injected{{staunch.dependency=payment,staunch.fault.kind={kind}}}"
            )),
            Some(count as f64),
            "{seen:?}"
        );
    }
    assert_eq!(
        get("staunch.fault.active{staunch.dependency=payment}"),
        Some(0.0)
    );
}
