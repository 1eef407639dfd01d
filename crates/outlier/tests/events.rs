//! Ejections and returns are `debug` tracing events, an ejection held back by the cap a
//! `trace` event.
//!
//! Alone in its test binary: a thread-local subscriber misses events whose callsites another
//! test thread registers at the same moment with no subscriber (tracing caches each
//! callsite's interest), so no other test here runs the detector.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_core::Outcome::Failure;
use staunch_outlier::{Detector, Settings};
use tokio::time::Instant;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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

#[test]
fn ejections_and_returns_are_debug_events() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || drop(story()));
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
            .to_owned()
    };
    let ejected = line("endpoint ejected");
    for needle in [
        "DEBUG",
        "outlier=catalog",
        "endpoint=\"b\"",
        "reason=consecutive_failures",
        "times_ejected=1",
        "ejection_time=5s",
    ] {
        assert!(ejected.contains(needle), "{needle} in {ejected}");
    }
    let held = line("ejection held back");
    assert!(
        held.contains("TRACE") && held.contains("endpoint=\"c\""),
        "{held}"
    );
    let returned = line("endpoint returned");
    assert!(
        returned.contains("DEBUG") && returned.contains("endpoint=\"b\""),
        "{returned}"
    );
}
