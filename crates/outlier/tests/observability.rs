//! With the `metrics` feature, ejections and returns are counted through the `metrics`
//! crate, the same as `Detector::metrics` (the tracing events are checked in `events.rs`).

#![cfg(feature = "metrics")]

use std::time::Duration;

use staunch_core::Outcome::Failure;
use staunch_outlier::{Detector, Settings};
use tokio::time::Instant;

/// Ejects "b", holds "c" back by the cap, and returns "b".
fn story() -> Detector<&'static str> {
    let settings = Settings::new(2, Duration::from_secs(5), 50).unwrap();
    let mut d = Detector::with_keys("catalog", settings, ["a", "b", "c"]);
    let now = Instant::now();
    for _ in 0..2 {
        d.record(1, Failure, now);
        d.record(2, Failure, now);
    }
    d.tick(now + Duration::from_secs(5));
    d
}

#[cfg(feature = "metrics")]
mod metrics_feature {
    use std::sync::Arc;

    use staunch_test_support::{Capture, CaptureRecorder};

    #[test]
    fn ejections_returns_and_the_ejected_gauge_reach_the_recorder() {
        let capture = Arc::new(Capture::default());
        let recorder = CaptureRecorder(Arc::clone(&capture));
        let detector = metrics::with_local_recorder(&recorder, super::story);
        let seen = capture.0.lock().unwrap().clone();
        let get = |key: &str| seen.get(key).copied().unwrap_or(-1.0);
        assert_eq!(
            get(
                "staunch.outlier.ejections{staunch.dependency=catalog,staunch.reason=consecutive_failures}"
            ),
            1.0
        );
        assert_eq!(
            get("staunch.outlier.returns{staunch.dependency=catalog}"),
            1.0
        );
        assert_eq!(
            get("staunch.outlier.ejected{staunch.dependency=catalog}"),
            0.0
        );
        assert_eq!(
            get("staunch.outlier.endpoints{staunch.dependency=catalog}"),
            3.0
        );
        let m = detector.metrics();
        assert_eq!(
            (m.ejections, m.returns, m.held_by_cap, m.ejected),
            (1, 1, 1, 0)
        );
    }
}
