//! Status for pages: a stack's status serializes as it is, and an open breaker says why.

use std::time::Duration;

use serde_json::Value;
use staunch::circuit_breaker::{CircuitBreaker, State, TransitionReason};
use staunch::{StackConfig, StackStatus};
use tower::{Service, ServiceExt, service_fn};

type Request = http::Request<String>;

fn failing() -> impl Service<
    Request,
    Response = http::Response<String>,
    Error = std::io::Error,
    Future = std::future::Ready<Result<http::Response<String>, std::io::Error>>,
> + Clone {
    service_fn(|_: Request| {
        std::future::ready(Err(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
    })
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_reports_the_rate_that_tripped_it() {
    let breaker = CircuitBreaker::builder("payment")
        .failure_rate_threshold(50.0)
        .count_window(10)
        .minimum_calls(4)
        .open_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    for ok in [true, false, false, false] {
        let call = breaker.call(async move {
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::other("down"))
            }
        });
        let _ = call.await;
    }
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, State::Open);
    // The window is emptied when the breaker opens; the trip keeps the figures.
    assert_eq!(snapshot.failure_rate, 0.0);
    let trip = snapshot.last_trip.expect("the breaker tripped");
    assert_eq!(trip.reason, TransitionReason::FailureRate);
    assert_eq!((trip.calls, trip.failures), (4, 3));
    assert_eq!(trip.failure_rate, 75.0);
    assert_eq!(trip.consecutive_failures, 3);
    assert_eq!(trip.open_for, Duration::from_secs(30));
    assert_eq!(snapshot.failure_rate_threshold, 50.0);
    assert_eq!(breaker.config().failure_rate_threshold(), 50.0);
    assert_eq!(breaker.config().minimum_calls(), 4);

    let json = serde_json::to_value(snapshot).unwrap();
    assert_eq!(json["state"], "open");
    assert_eq!(json["last_trip"]["reason"], "failure_rate");
    assert_eq!(json["last_trip"]["failure_rate"], 75.0);
    assert_eq!(json["last_trip"]["open_for_ms"], 30_000);
    assert!(json["last_trip"]["opened_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_are_reported_while_closed_and_when_they_trip() {
    let breaker = CircuitBreaker::builder("ledger")
        .consecutive_failures(3)
        .build()
        .unwrap();
    for _ in 0..2 {
        let _ = breaker
            .call(async { Err::<(), _>(std::io::Error::other("down")) })
            .await;
    }
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!(snapshot.consecutive_failures, 2);
    assert_eq!(snapshot.consecutive_failures_threshold, Some(3));
    let _ = breaker
        .call(async { Err::<(), _>(std::io::Error::other("down")) })
        .await;
    let trip = breaker.snapshot().last_trip.unwrap();
    assert_eq!(trip.reason, TransitionReason::ConsecutiveFailures);
    assert_eq!(trip.consecutive_failures, 3);
}

#[tokio::test(start_paused = true)]
async fn a_stack_status_is_one_to_value_away_from_a_circuit_status_page() {
    let mut config = StackConfig::default();
    config.breaker.minimum_calls = Some(2);
    config.retry.max_attempts = Some(1);
    let (mut client, handle) = staunch::http::client("payment", failing(), &config).unwrap();
    for _ in 0..2 {
        let request = http::Request::get("/charge").body(String::new()).unwrap();
        let _ = client.ready().await.unwrap().call(request).await;
    }
    let status: StackStatus = handle.status();
    let json = serde_json::to_value(&status).unwrap();
    // The seed's `/circuit-status`: name, state, failure count, failure threshold.
    let page = serde_json::json!({
        "name": json["name"],
        "state": json["breaker"]["state"],
        "failure_count": json["breaker"]["failed_calls"],
        "failure_threshold": json["breaker"]["failure_rate_threshold"],
    });
    assert_eq!(
        page,
        serde_json::json!({
            "name": "payment",
            "state": "open",
            "failure_count": 2,
            "failure_threshold": 50.0,
        })
    );
    assert_eq!(json["breaker"]["last_trip"]["failure_rate"], 100.0);
    assert_eq!(json["bulkhead"]["in_flight"], 0);
    assert!(json["bulkhead"]["total_wait_ms"].is_u64());
    assert!(json["retry"]["requests"].is_u64());
    assert!(matches!(json["retry"]["budget_left"], Value::Number(_)));
}
