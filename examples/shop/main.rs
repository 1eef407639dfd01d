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
//! With `--serve`, the shop places orders at a steady rate (`--rate N` a second, default 5;
//! a seeded mix of SKUs and quantities) and prints its addresses. Open the dashboard it prints
//! (`http://ADDR/dashboard`): per dependency, the request rate by outcome, latency, breaker
//! state, bulkhead occupancy and retry budget over the last five minutes, and the recent
//! sagas. Its buttons switch payment's failure mode and the order rate; so does `curl`:
//!
//! ```text
//! curl -X POST http://ADDR/admin/payment/mode -H 'content-type: application/json' -d '{"preset":"error"}'
//! curl -X POST http://ADDR/admin/rate -H 'content-type: application/json' -d '{"per_second":0}'
//! curl http://ADDR/metrics            # Prometheus text exposition
//! ```

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
        let rate = match app::arg("--rate").map(|r| r.parse::<f64>()) {
            None => 5.0,
            Some(Ok(rate)) => rate,
            Some(Err(err)) => {
                eprintln!("--rate: {err}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(err) = shop.dashboard.load().set_rate(rate) {
            eprintln!("--rate: {err}");
            return ExitCode::FAILURE;
        }
        println!("  metrics          http://{}/metrics", shop.order_addr());
        println!("placing {rate} orders a second; the dashboard:");
        println!();
        println!("    http://{}/dashboard", shop.order_addr());
        println!();
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
