//! The shop's shipping service on its own, over gRPC (see the `shop` example).
//!
//! ```text
//! cargo run --example shop_shipping -- --port 8083
//! ```

#[allow(dead_code)]
#[path = "shop/app/mod.rs"]
mod app;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let shipping = app::shipping::Shipping::default();
    let addr = shipping.serve_at(app::port_arg()?).await?;
    println!("shipping (gRPC shop.Shipping/Create, shop.Shipping/Cancel) on http://{addr}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
