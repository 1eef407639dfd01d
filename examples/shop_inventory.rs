//! The shop's inventory service on its own (see the `shop` example for the whole story).
//!
//! ```text
//! cargo run --example shop_inventory -- --port 8081
//! ```

#[allow(dead_code)]
#[path = "shop/app/mod.rs"]
mod app;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let inventory = app::inventory::Inventory::new(&[(app::story::SKU, 10_000)]);
    let addr = app::serve_at(inventory.router(), app::port_arg()?).await?;
    println!("inventory on http://{addr} (POST /reservations, POST /releases, GET /stock)");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
