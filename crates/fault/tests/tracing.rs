//! Every injected fault and every switch is a `tracing` debug event.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_fault::FaultInjector;

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

#[test]
fn faults_and_switches_are_debug_events() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let injector = FaultInjector::builder("payment")
            .latency(1.0, Duration::from_millis(5), Duration::from_millis(5))
            .abort(1.0)
            .build()
            .unwrap();
        let _ = injector.decide();
        injector.disable();
        injector
            .set(staunch_fault::FaultConfig::error().with_error(1.0, 503))
            .unwrap();
        let _ = injector.decide();
    });
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    for needle in [
        "fault injected: latency",
        "fault injected: abort",
        "fault injected: error",
        "status=503",
        "enabled=false",
        "fault injection switched",
        "injector=payment",
    ] {
        assert!(text.contains(needle), "{needle} in:\n{text}");
    }
    assert!(text.lines().all(|l| l.contains("DEBUG")), "{text}");
}
