//! The shop's shipping service on its own, over gRPC (see the `shop` example). Its shipments
//! and idempotency records live in one SQLite file (`--db`, default `staunch-shop-shipping.db`
//! in the temporary directory).
//!
//! ```text
//! cargo run --example shop_shipping -- --port 8083 [--db shipping.db]
//! ```

#[allow(dead_code)]
#[path = "shop/app/mod.rs"]
mod app;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let db = app::db_arg("shipping");
    let shipping = app::shipping::Shipping::open(&db).await?;
    let addr = shipping.serve_at(app::port_arg()?).await?;
    println!(
        "shipping (gRPC shop.Shipping/Create, shop.Shipping/Cancel) on http://{addr}; data {}",
        db.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
