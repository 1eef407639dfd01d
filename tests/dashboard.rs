//! Loads the shop's dashboard in a real headless browser while the story's payment-error phase
//! runs, and checks that the page shows the payment breaker OPEN. Saves a screenshot under
//! `target/`.
//!
//! Needs Debian's `chromium` package (`/usr/bin/chromium`, or `CHROMIUM=/path/to/chrome`);
//! without it the test says why and passes without checking anything.

#[allow(dead_code)]
#[path = "../examples/shop/app/mod.rs"]
mod app;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use app::story::{Config, Shop, play};
use staunch::circuit_breaker::State;
use tokio::process::Command;

/// The browser to use, or the path that was looked for.
fn chromium() -> Result<PathBuf, PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.exists() { Ok(path) } else { Err(path) }
}

/// Where this test keeps browser profiles and its screenshot: cargo's scratch directory for
/// integration tests, inside the target directory.
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Runs headless chromium on `url` with `extra` flags and a fresh profile; its stdout.
async fn run_chromium(browser: &PathBuf, url: &str, extra: &[&str], profile: &str) -> String {
    let profile = target_dir().join(format!("{profile}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let mut command = Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_mins(1), command.output())
        .await
        .expect("chromium finishes within 60 s")
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_open_payment_breaker_in_a_real_browser() {
    let browser = match chromium() {
        Ok(browser) => browser,
        Err(missing) => {
            eprintln!(
                "skipped: no browser at {} (install Debian's `chromium` package, or set CHROMIUM)",
                missing.display()
            );
            return;
        }
    };
    // The short story, with a breaker that stays open long enough for a browser to start.
    let mut config = Config::short();
    config.tuning.open_duration = Duration::from_secs(30);
    config.phases[1] = Duration::from_secs(30);
    let shop = Arc::new(Shop::start(&config).await.expect("the shop starts"));
    let story = {
        let shop = Arc::clone(&shop);
        tokio::spawn(async move {
            play(&shop, &config)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    let payment = shop
        .orders
        .guards()
        .iter()
        .find(|g| g.name == "payment")
        .expect("a payment dependency")
        .breaker
        .clone();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while payment.state() != State::Open {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the payment breaker opened during the error phase"
    );

    let url = format!("http://{}/dashboard", shop.order_addr());
    let dom = run_chromium(&browser, &url, &["--dump-dom"], "dashboard-dom").await;
    assert!(
        dom.contains(r#"data-breaker="payment" data-state="open""#),
        "the page shows the payment breaker open:\n{dom}"
    );
    assert!(dom.contains(">OPEN<"), "{dom}");
    assert!(dom.contains(r#"class="saga""#), "recent sagas are listed");

    let shot = target_dir().join("shop-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &browser,
        &url,
        &[
            "--window-size=1280,1300",
            "--hide-scrollbars",
            &format!("--screenshot={}", shot.display()),
        ],
        "dashboard-shot",
    )
    .await;
    let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
    assert!(size > 1000, "a screenshot at {}", shot.display());
    println!("screenshot: {}", shot.display());

    story.abort();
    shop.cleanup();
}
