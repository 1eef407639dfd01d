//! The shop's order service on its own, calling the other three over the network (see the
//! `shop` example for the whole story in one process).
//!
//! ```text
//! cargo run --example shop_order -- --port 8080 \
//!     --inventory 127.0.0.1:8081 --payment 127.0.0.1:8082[,127.0.0.1:8084] --shipping 127.0.0.1:8083 [--db sagas.db]
//! curl -X POST localhost:8080/orders -H 'content-type: application/json' -d '{"sku":"widget","qty":1,"amount_cents":1999}'
//! ```

#[allow(dead_code)]
#[path = "shop/app/mod.rs"]
mod app;

use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let db = app::arg("--db").map_or_else(
        || std::env::temp_dir().join("staunch-shop-order.db"),
        PathBuf::from,
    );
    // Before the engines are built: they register their metrics when built.
    app::dashboard::prometheus();
    let payment = app::addrs_arg("--payment")?;
    let orders = app::order::OrderService::start(
        app::story::Config::full().tuning,
        app::addr_arg("--inventory")?,
        &payment,
        app::addr_arg("--shipping")?,
        db.clone(),
    )
    .await?;
    let admin = payment.iter().map(|a| format!("http://{a}")).collect();
    let dashboard = app::dashboard::Dashboard::start(&orders, admin);
    let addr = app::serve_at(orders.router().merge(dashboard.router()), app::port_arg()?).await?;
    println!(
        "order on http://{addr} (POST /orders, GET /circuit-status, GET /sagas/{{id}}); saga log {}",
        db.display()
    );
    println!("dashboard: http://{addr}/dashboard");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
