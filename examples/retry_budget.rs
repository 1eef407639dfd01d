//! Retries that honour `Retry-After` and cannot become a storm: first a dependency that asks
//! for one second of patience, then an outage where the retry budget stops the retries.
//!
//! ```text
//! cargo run --example retry_budget
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use staunch::Backoff;
use staunch::retry::{RetryBudget, RetryLayer, RetryPolicy};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // `/busy` answers 503 with `Retry-After: 1` to its first call, then 200; `/down` always 503.
    let hits = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route(
            "/busy",
            get(move || {
                let first = hits.fetch_add(1, Ordering::Relaxed) == 0;
                async move {
                    let mut headers = HeaderMap::new();
                    if first {
                        headers.insert("retry-after", "1".parse().expect("a header value"));
                        return (StatusCode::SERVICE_UNAVAILABLE, headers, "busy");
                    }
                    (StatusCode::OK, headers, "done")
                }
            }),
        )
        .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Up to 4 attempts, 10 ms backoff, server hints honoured up to 2 s; retries may add at
    // most 10% to the calls (plus 1 per second).
    let policy = RetryPolicy::builder()
        .name("catalog")
        .max_attempts(4)
        .backoff(Backoff::constant(Duration::from_millis(10)).build()?)
        .max_retry_after(Duration::from_secs(2))
        .budget(RetryBudget::builder().ratio(0.1).min_per_sec(1).build()?)
        .build()?;
    let client = reqwest::Client::new();
    let catalog = ServiceBuilder::new()
        .layer(RetryLayer::new(policy.clone()))
        .service_fn(move |req: reqwest::Request| client.execute(req));

    let start = Instant::now();
    let request = reqwest::Request::new(reqwest::Method::GET, format!("{base}/busy").parse()?);
    let response = catalog.clone().oneshot(request).await?;
    println!(
        "/busy: HTTP {} after {:?} (waited for Retry-After), retries so far: {}",
        response.status().as_u16(),
        start.elapsed(),
        policy.metrics().retries
    );

    let before = policy.metrics();
    for _ in 0..100 {
        let request = reqwest::Request::new(reqwest::Method::GET, format!("{base}/down").parse()?);
        let _ = catalog.clone().oneshot(request).await?;
    }
    let after = policy.metrics();
    println!(
        "/down, 100 calls: {} retries (not 300), {} times the budget said no, budget left {:?}",
        after.retries - before.retries,
        after.budget_exhausted - before.budget_exhausted,
        after.budget_left
    );
    Ok(())
}
