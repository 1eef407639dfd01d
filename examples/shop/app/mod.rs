//! The shop: inventory, payment and shipping services, and an order service that places
//! orders through a staunch saga, with every client wrapped in staunch layers.
//!
//! Shared by the `shop` example (`examples/shop/main.rs`) and the tests that replay its story
//! (`tests/shop.rs`, `tests/dashboard.rs`).

pub(crate) mod dashboard;
pub(crate) mod idempotency;
pub(crate) mod inventory;
pub(crate) mod order;
pub(crate) mod payment;
pub(crate) mod shipping;
pub(crate) mod story;

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Serves an axum router on a fresh loopback port and returns the address.
pub(crate) async fn serve(router: axum::Router) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            eprintln!("server on {addr} stopped: {err}");
        }
    });
    Ok(addr)
}
