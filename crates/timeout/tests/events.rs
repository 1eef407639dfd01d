//! The `tracing` events users rely on to see timeouts and ignored headers.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_timeout::{BoxError, Deadline, DeadlineLayer, TimeLimit, TimeoutLayer};
use tower::{Layer, Service, ServiceExt, service_fn};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};

/// A subscriber that keeps every event as `LEVEL field=value ...`.
#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<String>>>,
}

impl Capture {
    fn find(&self, needle: &str) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e.contains(needle))
            .cloned()
            .collect()
    }
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        self.events.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_timeout_is_a_debug_event_with_the_name_and_limit() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let limit = TimeLimit::builder()
        .limit(Duration::from_millis(250))
        .name("inventory")
        .build()
        .unwrap();
    let _ = limit.run(std::future::pending::<()>()).await;
    let events = capture.find("call timed out");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].starts_with(&Level::DEBUG.to_string()),
        "{events:?}"
    );
    assert!(events[0].contains("name=\"inventory\""), "{events:?}");
    assert!(events[0].contains("limit=250ms"), "{events:?}");
    // A call that finishes in time says nothing.
    let _ = limit.run(async {}).await;
    assert_eq!(capture.find("call timed out").len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn malformed_headers_are_trace_events() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let mut svc = DeadlineLayer::new().layer(service_fn(|_req: http::Request<()>| async {
        Ok::<_, BoxError>(())
    }));
    let req = http::Request::builder()
        .header("grpc-timeout", "forever")
        .header("x-request-timeout", "12.5S")
        .body(())
        .unwrap();
    svc.ready().await.unwrap().call(req).await.unwrap();
    let grpc = capture.find("malformed grpc-timeout ignored");
    let header = capture.find("malformed deadline header ignored");
    assert_eq!((grpc.len(), header.len()), (1, 1), "{:?}", capture.events);
    assert!(grpc[0].starts_with("TRACE") && grpc[0].contains("forever"));
    assert!(header[0].contains("header=x-request-timeout") && header[0].contains("12.5S"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn refusing_an_expired_deadline_is_a_trace_event() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let mut svc = TimeoutLayer::new(Duration::from_secs(1))
        .unwrap()
        .layer(service_fn(|_req: http::Request<()>| async {
            Ok::<_, BoxError>(())
        }));
    let mut req = http::Request::new(());
    req.extensions_mut()
        .insert(Deadline::at(tokio::time::Instant::now()));
    assert!(svc.ready().await.unwrap().call(req).await.is_err());
    let refused = capture.find("deadline passed before the call started");
    assert_eq!(refused.len(), 1, "{:?}", capture.events);
    assert!(refused[0].starts_with("TRACE"));
}
