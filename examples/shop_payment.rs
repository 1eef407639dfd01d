//! The shop's payment service on its own, with its failure modes (see the `shop` example). Its
//! ledger and idempotency records live in one SQLite file (`--db`, default
//! `staunch-shop-payment.db` in the temporary directory); the failure mode does not survive a
//! restart.
//!
//! ```text
//! cargo run --example shop_payment -- --port 8082 [--db payment.db]
//! curl -X POST localhost:8082/admin/mode -H 'content-type: application/json' -d '{"preset":"slow"}'
//! ```

#[allow(dead_code)]
#[path = "shop/app/mod.rs"]
mod app;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let db = app::db_arg("payment");
    let payment = app::payment::Payment::open(&db).await?;
    let addr = app::serve_at(payment.router(), app::port_arg()?).await?;
    println!(
        "payment on http://{addr} (POST /charges, POST /refunds, GET|POST /admin/mode, GET /admin/ledger); data {}",
        db.display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
