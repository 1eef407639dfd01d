//! The shop's inventory service on its own (see the `shop` example for the whole story). Its
//! stock, reservations and idempotency records live in one SQLite file (`--db`, default
//! `staunch-shop-inventory.db` in the temporary directory): kill it and start it again on the
//! same file, and repeated keys still get their first answer.
//!
//! ```text
//! cargo run --example shop_inventory -- --port 8081 [--db inventory.db]
//! ```

#[allow(dead_code)]
#[path = "shop/app/mod.rs"]
mod app;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let db = app::db_arg("inventory");
    let inventory = app::inventory::Inventory::open(&db, &[(app::story::SKU, 10_000)]).await?;
    let addr = app::serve_at(inventory.router(), app::port_arg()?).await?;
    println!(
        "inventory on http://{addr} (POST /reservations, POST /releases, GET /stock); data {}",
        db.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
