//! A circuit breaker around a `reqwest::Client`: a price service goes down, the breaker opens
//! and answers at once instead of waiting on it, then probes it and closes when it is back.
//!
//! ```text
//! cargo run --example breaker_reqwest
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use staunch::HttpStatus;
use staunch::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The dependency: answers 200, or 503 while `healthy` is false.
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&healthy);
    let app = Router::new().route(
        "/price",
        get(move || {
            let up = flag.load(Ordering::Relaxed);
            async move {
                if up {
                    (StatusCode::OK, "42")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/price", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Trip at 50% failures over the last 10 calls (at least 5), stay open 500 ms, then let two
    // probes through. `HttpStatus` counts 5xx and 429 answers as failures.
    let breaker = CircuitBreaker::builder("prices")
        .failure_rate_threshold(50.0)
        .count_window(10)
        .minimum_calls(5)
        .open_duration(Duration::from_millis(500))
        .permitted_calls_in_half_open(2)
        .build()?;
    let client = reqwest::Client::new();
    let prices = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()).with_classifier(HttpStatus::new()))
        .service_fn(move |req: reqwest::Request| client.execute(req));

    for (phase, up, calls) in [("healthy", true, 3), ("down", false, 8), ("back", true, 4)] {
        healthy.store(up, Ordering::Relaxed);
        if phase == "back" {
            println!("(waiting out the open duration)");
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        for _ in 0..calls {
            let request = reqwest::Request::new(reqwest::Method::GET, url.parse()?);
            let answer = match prices.clone().oneshot(request).await {
                Ok(response) => format!("HTTP {}", response.status().as_u16()),
                Err(err) if err.is::<staunch::BreakerOpen>() => {
                    let hint = err
                        .downcast_ref::<staunch::BreakerOpen>()
                        .and_then(staunch::BreakerOpen::retry_after);
                    format!("refused at once (retry after {hint:?})")
                }
                Err(err) => format!("error: {err}"),
            };
            println!("{phase:<8} {answer:<40} breaker {:?}", breaker.state());
        }
    }
    let s = breaker.snapshot();
    println!(
        "\n{} ok, {} failed, {} refused, {} transitions",
        s.successful_calls, s.failed_calls, s.rejected_calls, s.transitions
    );
    Ok(())
}
