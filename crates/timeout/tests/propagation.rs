//! Deadline propagation end to end over real HTTP on loopback: a caller -> server A -> server
//! B, both axum servers, A calling B with a `reqwest::Client` wrapped in the staunch layers.
//!
//! Real sockets need the real clock (a paused clock would jump ahead while the runtime waits
//! on I/O), so these tests assert bounds that follow from the deadline itself rather than on
//! how fast the machine is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use staunch_timeout::{
    BoxError, Deadline, DeadlineLayer, Elapsed, PropagateDeadlineLayer, TimeoutLayer,
    wire::parse_grpc_timeout,
};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// What the servers observed.
#[derive(Debug, Default)]
struct Seen {
    /// A: the time left of its own deadline just before it called B.
    a_remaining_before_call: Option<Duration>,
    /// B: the `x-request-timeout` (or `grpc-timeout`) header it received, parsed.
    b_header: Option<Duration>,
    /// B: the deadline its `DeadlineLayer` set, as time remaining when the handler ran.
    b_remaining: Option<Duration>,
}

#[derive(Clone)]
struct AppState {
    seen: Arc<Mutex<Seen>>,
    b_url: String,
    b_delay: Duration,
    /// A writes `grpc-timeout` rather than `x-request-timeout` towards B.
    grpc: bool,
}

async fn serve(router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// Server B: records the deadline it was given, then answers after `b_delay`.
async fn b_handler(
    State(state): State<AppState>,
    Extension(deadline): Extension<Deadline>,
    headers: HeaderMap,
) -> &'static str {
    {
        let mut seen = state.seen.lock().unwrap();
        let name = if state.grpc {
            "grpc-timeout"
        } else {
            "x-request-timeout"
        };
        seen.b_header = headers
            .get(name)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        seen.b_remaining = Some(deadline.remaining());
    }
    tokio::time::sleep(state.b_delay).await;
    "from B"
}

/// Server A: calls B through the client stack, carrying its own deadline over.
async fn a_handler(
    State(state): State<AppState>,
    Extension(deadline): Extension<Deadline>,
) -> (StatusCode, String) {
    let client = reqwest::Client::new();
    let propagate = if state.grpc {
        PropagateDeadlineLayer::grpc()
    } else {
        PropagateDeadlineLayer::http()
    };
    let mut b = ServiceBuilder::new()
        .layer(propagate)
        .layer(TimeoutLayer::new(Duration::from_secs(30)).unwrap())
        .service(service_fn(move |req: http::Request<reqwest::Body>| {
            let client = client.clone();
            async move {
                let req = reqwest::Request::try_from(req)?;
                Ok::<_, BoxError>(client.execute(req).await?)
            }
        }));
    let mut req = http::Request::builder()
        .uri(format!("{}/b", state.b_url))
        .body(reqwest::Body::from(""))
        .unwrap();
    req.extensions_mut().insert(deadline);
    state.seen.lock().unwrap().a_remaining_before_call = Some(deadline.remaining());
    let result = async { b.ready().await?.call(req).await }.await;
    match result {
        Ok(response) => (StatusCode::OK, response.text().await.unwrap_or_default()),
        Err(err) => match err.downcast_ref::<Elapsed>() {
            Some(elapsed) => (
                StatusCode::GATEWAY_TIMEOUT,
                elapsed.limit().as_nanos().to_string(),
            ),
            None => (StatusCode::BAD_GATEWAY, err.to_string()),
        },
    }
}

/// Starts B and A; returns A's URL and what they saw.
async fn start(b_delay: Duration, grpc: bool) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut state = AppState {
        seen: Arc::clone(&seen),
        b_url: String::new(),
        b_delay,
        grpc,
    };
    let b = axum::Router::new()
        .route("/b", get(b_handler))
        .layer(DeadlineLayer::new())
        .with_state(state.clone());
    state.b_url = serve(b).await;
    let a = axum::Router::new()
        .route("/a", get(a_handler))
        .layer(
            DeadlineLayer::builder()
                .budget(Duration::from_mins(1))
                .build()
                .unwrap(),
        )
        .with_state(state);
    (serve(a).await, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_gets_a_deadline_no_later_than_as() {
    b_gets_a_deadline_no_later_than_as_over(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_gets_a_deadline_no_later_than_as_over_grpc_timeout() {
    b_gets_a_deadline_no_later_than_as_over(true).await;
}

async fn b_gets_a_deadline_no_later_than_as_over(grpc: bool) {
    let (a_url, seen) = start(Duration::ZERO, grpc).await;
    let caller_budget = Duration::from_secs(5);
    let response = reqwest::Client::new()
        .get(format!("{a_url}/a"))
        .header("x-request-timeout", "5S")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "from B");

    let seen = seen.lock().unwrap();
    let a_left = seen.a_remaining_before_call.expect("A ran");
    let b_header = seen.b_header.expect("B received the header");
    let b_left = seen.b_remaining.expect("B's DeadlineLayer set a deadline");
    // Each hop has at most what the hop before it had left.
    assert!(a_left <= caller_budget, "{a_left:?}");
    assert!(
        b_header <= a_left,
        "B was told {b_header:?}, A had {a_left:?}"
    );
    assert!(b_left <= b_header, "{b_left:?} > {b_header:?}");
    assert!(!b_header.is_zero());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_caller_never_waits_past_its_deadline_when_b_hangs() {
    // B takes ten minutes; A's client limit is 30 s; the caller allows 300 ms. Without
    // propagation this call would hang for 30 s (the guard below fails the test at 20 s).
    let (a_url, seen) = start(Duration::from_mins(10), false).await;
    let caller_budget = Duration::from_millis(300);
    let start = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        reqwest::Client::new()
            .get(format!("{a_url}/a"))
            .header("grpc-timeout", "300m")
            .send(),
    )
    .await
    .expect("A answered within its caller's deadline, not after B or its own limit")
    .unwrap();
    let waited = start.elapsed();

    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let applied = Duration::from_nanos(response.text().await.unwrap().parse().unwrap());
    // A's timeout applied what was left of the caller's deadline, not its own 30 s limit.
    assert!(applied <= caller_budget, "{applied:?}");
    let seen = seen.lock().unwrap();
    assert!(seen.b_header.expect("B was called") <= caller_budget);
    // A gave up when the caller's deadline passed: the caller waited for the deadline plus
    // the time to carry the answer back, far less than B's delay or A's own limit.
    assert!(waited >= applied, "{waited:?} < {applied:?}");
    assert!(
        waited < caller_budget + Duration::from_secs(5),
        "{waited:?}"
    );
}

/// The server-side stack from the crate docs, driven in process so the clock can be paused:
/// the handler is cut off when the caller's deadline passes and the caller gets a 504.
#[tokio::test(start_paused = true)]
async fn a_server_cuts_its_handler_off_at_the_callers_deadline() {
    use axum::error_handling::HandleErrorLayer;

    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(
                    DeadlineLayer::builder()
                        .budget(Duration::from_secs(10))
                        .build()
                        .unwrap(),
                )
                .layer(HandleErrorLayer::new(|err: axum::BoxError| async move {
                    if err.is::<Elapsed>() {
                        StatusCode::GATEWAY_TIMEOUT
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }))
                .layer(TimeoutLayer::new(Duration::from_secs(30)).unwrap()),
        );
    let request = |timeout: &str| {
        http::Request::builder()
            .uri("/")
            .header("x-request-timeout", timeout)
            .body(axum::body::Body::empty())
            .unwrap()
    };

    let start = Instant::now();
    let response = app.clone().oneshot(request("1200m")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_millis(1200));

    // A caller with time to spare gets the answer.
    let start = Instant::now();
    let response = app.oneshot(request("6S")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}
