//! The shop: inventory, payment and shipping services, and an order service that places
//! orders through a staunch saga, with every client wrapped in staunch layers.
//!
//! The participants keep their data in SQLite files and sit behind staunch-idempotency
//! ([`db`]): the saga delivers each step at least once, with the step's key; the participant
//! runs a key once and records its reply in the same transaction as its write.
//!
//! Shared by the `shop` example (`examples/shop/main.rs`), the per-service binaries and the
//! tests that replay its story (`tests/shop.rs`, `tests/dashboard.rs`) or kill its services
//! (`tests/shop_restart.rs`).

pub(crate) mod dashboard;
pub(crate) mod db;
pub(crate) mod inventory;
pub(crate) mod load;
pub(crate) mod order;
pub(crate) mod payment;
pub(crate) mod series;
pub(crate) mod shipping;
pub(crate) mod story;

/// The value after `--name` on the command line.
#[allow(dead_code)] // used by the per-service binaries (`shop_order`, ...)
pub(crate) fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|a| a != name);
    args.next()?;
    args.next()
}

/// `--db PATH`, by default `staunch-shop-{service}.db` in the temporary directory.
#[allow(dead_code)] // used by the per-service binaries (`shop_order`, ...)
pub(crate) fn db_arg(service: &str) -> std::path::PathBuf {
    arg("--db").map_or_else(
        || std::env::temp_dir().join(format!("staunch-shop-{service}.db")),
        std::path::PathBuf::from,
    )
}

/// `--port N` (default 0: any free port).
#[allow(dead_code)] // used by the per-service binaries (`shop_order`, ...)
pub(crate) fn port_arg() -> Result<u16, String> {
    arg("--port").map_or(Ok(0), |p| p.parse().map_err(|e| format!("--port {p}: {e}")))
}

/// A peer's address from `--name HOST:PORT`.
#[allow(dead_code)] // used by the per-service binaries (`shop_order`, ...)
pub(crate) fn addr_arg(name: &str) -> Result<SocketAddr, String> {
    let value = arg(name).ok_or_else(|| format!("{name} HOST:PORT is required"))?;
    value.parse().map_err(|e| format!("{name} {value}: {e}"))
}

/// Peers' addresses from `--name HOST:PORT[,HOST:PORT...]` (replicas of one service).
#[allow(dead_code)] // used by the per-service binaries (`shop_order`, ...)
pub(crate) fn addrs_arg(name: &str) -> Result<Vec<SocketAddr>, String> {
    let value = arg(name).ok_or_else(|| format!("{name} HOST:PORT[,HOST:PORT...] is required"))?;
    value
        .split(',')
        .map(|a| a.trim().parse().map_err(|e| format!("{name} {a}: {e}")))
        .collect()
}

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Serves an axum router on a fresh loopback port and returns the address.
pub(crate) async fn serve(router: axum::Router) -> std::io::Result<SocketAddr> {
    serve_at(router, 0).await
}

/// Serves an axum router on `127.0.0.1:port` (0: any free port) and returns the address.
pub(crate) async fn serve_at(router: axum::Router, port: u16) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            eprintln!("server on {addr} stopped: {err}");
        }
    });
    Ok(addr)
}
