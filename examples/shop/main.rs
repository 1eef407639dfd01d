//! The shop: four services on loopback ports, a saga per order, every client wrapped in
//! staunch layers, every participant behind staunch-idempotency with its data in SQLite, and a
//! scripted story of a payment outage with the numbers.
//!
//! ```text
//! cargo run --release --example shop          # the story, about a minute
//! cargo run --release --example shop -- --serve   # keep everything running
//! cargo run --release --example shop -- --short   # the story in seconds
//! ```
//!
//! With `--serve`, open the dashboard printed at start, switch payment's failure mode with
//! `curl -X POST http://ADDR/admin/mode -H 'content-type: application/json' -d
//! '{"preset":"error"}'` (or `slow`, `intermittent`, `none`) and place orders with `curl -X POST http://ADDR/orders -H
//! 'content-type: application/json' -d '{"sku":"widget","qty":1,"amount_cents":1999}'`.

mod app;

use std::process::ExitCode;

use app::story::{Config, Shop, play};

#[tokio::main]
async fn main() -> ExitCode {
    let serve = std::env::args().any(|a| a == "--serve");
    // `--short`: the same story in a few seconds (what the tests play).
    let config = if std::env::args().any(|a| a == "--short") {
        Config::short()
    } else {
        Config::full()
    };
    let shop = match Shop::start(&config).await {
        Ok(shop) => shop,
        Err(err) => {
            eprintln!("could not start the shop: {err}");
            return ExitCode::FAILURE;
        }
    };
    if serve {
        println!("serving until Ctrl-C:");
        for (name, addr) in &shop.addrs {
            println!("  {name:<16} http://{addr}");
        }
        println!("  dashboard        http://{}/dashboard", shop.order_addr());
        let _ = tokio::signal::ctrl_c().await;
        shop.cleanup();
        return ExitCode::SUCCESS;
    }
    let result = play(&shop, &config).await;
    shop.cleanup();
    match result {
        Ok(report) if report.inconsistencies.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("the story stopped: {err}");
            ExitCode::FAILURE
        }
    }
}
