//! The shop's payment service on its own, with its failure modes (see the `shop` example).
//!
//! ```text
//! cargo run --example shop_payment -- --port 8082
//! curl -X POST localhost:8082/admin/mode -H 'content-type: application/json' -d '{"mode":"slow","delay_ms":2000}'
//! ```

#[allow(dead_code)]
#[path = "shop/app/mod.rs"]
mod app;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let payment = app::payment::Payment::new();
    let addr = app::serve_at(payment.router(), app::port_arg()?).await?;
    println!(
        "payment on http://{addr} (POST /charges, POST /refunds, GET|POST /admin/mode, GET /admin/charges)"
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
