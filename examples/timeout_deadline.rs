//! Deadline propagation over HTTP: the caller has 300 ms, the client writes what is left into
//! the `x-request-timeout` header, and the backend stops working when the caller stops
//! waiting, instead of finishing a two-second search nobody will read.
//!
//! ```text
//! cargo run --example timeout_deadline
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::get;
use staunch::timeout::{Deadline, DeadlineLayer, Elapsed, PropagateDeadlineLayer, TimeoutLayer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The backend: `DeadlineLayer` turns the header into a `Deadline`; the handler gives its
    // two-second search only the time the caller has left.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let app = Router::new()
        .route(
            "/search",
            get(move |req: Request| {
                let log = Arc::clone(&log);
                async move {
                    let header = req.headers().get("x-request-timeout").cloned();
                    let left = Deadline::of(&req).map_or(Duration::MAX, |d| d.remaining());
                    // The search runs on its own task, as real work would (it is not cancelled
                    // when the client hangs up); the deadline is what stops it.
                    let work = tokio::spawn(async move {
                        let started = tokio::time::Instant::now();
                        let search = tokio::time::sleep(Duration::from_secs(2));
                        let done = tokio::time::timeout(left, search).await.is_ok();
                        log.lock().expect("log").push(format!(
                            "backend: header x-request-timeout {header:?}; {} after {:?}",
                            if done {
                                "finished"
                            } else {
                                "stopped its 2 s search"
                            },
                            started.elapsed()
                        ));
                        done
                    });
                    match work.await {
                        Ok(true) => StatusCode::OK,
                        _ => StatusCode::GATEWAY_TIMEOUT,
                    }
                }
            }),
        )
        .layer(DeadlineLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/search", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The client: a 5 s limit per call, never past the request's deadline, which it propagates.
    let client = reqwest::Client::new();
    let backend = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::http())
        .layer(TimeoutLayer::new(Duration::from_secs(5))?)
        .service_fn(move |req: http::Request<String>| {
            let client = client.clone();
            async move { client.execute(reqwest::Request::try_from(req)?).await }
        });

    // A caller with 300 ms left.
    let mut request = http::Request::get(&url).body(String::new())?;
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(300)));
    let started = tokio::time::Instant::now();
    match backend.oneshot(request).await {
        Ok(response) => println!("client: HTTP {}", response.status()),
        Err(err) => match err.downcast_ref::<Elapsed>() {
            Some(elapsed) => println!("client: gave up after {:?} ({elapsed})", started.elapsed()),
            None => println!("client: error {err}"),
        },
    }
    // Give the backend its moment to notice, then show what it saw.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for line in seen.lock().expect("log").iter() {
        println!("{line}");
    }
    Ok(())
}
