//! The shop's observability: `GET /metrics` (Prometheus text), `GET /dashboard/series` (the
//! sampler's ring), the admin routes, and the dashboard in a real headless browser driven
//! through chromedriver's `WebDriver` API: it clicks payment's "error" button, waits for the
//! payment breaker band to turn open and the refused-by-breaker series to rise, clicks
//! "none", waits for closed, and saves a screenshot under cargo's scratch directory.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` packages
//! (`/usr/bin/chromium` and `/usr/bin/chromedriver`, or `CHROMIUM=` and `CHROMEDRIVER=`);
//! without them it says why and passes without checking anything.

#[allow(dead_code)]
#[path = "../examples/shop/app/mod.rs"]
mod app;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use app::story::{Config, Shop};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::time::Instant;

/// A program from an environment variable, or its Debian path; the path looked for if absent.
fn program(var: &str, default: &str) -> Result<PathBuf, PathBuf> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.exists() { Ok(path) } else { Err(path) }
}

/// Where this test keeps browser profiles and its screenshot: cargo's scratch directory for
/// integration tests, inside the target directory.
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// The short story's shop with a breaker that stays open for `open` before probing.
async fn shop(open: Duration) -> Arc<Shop> {
    let mut config = Config::short();
    config.tuning.open_duration = open;
    Arc::new(Shop::start(&config).await.expect("the shop starts"))
}

/// POSTs JSON; the status and the body as JSON (`Null` if not JSON).
async fn post(url: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the request is answered");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// GETs a text body.
async fn get_text(url: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the request is answered");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.text().await.expect("a text body"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_the_staunch_series_in_prometheus_text() {
    let shop = shop(Duration::from_secs(1)).await;
    let base = format!("http://{}", shop.order_addr());
    for qty in 1..=5 {
        let body = json!({ "sku": "widget", "qty": qty, "amount_cents": qty * 1999 });
        let (status, placed) = post(&format!("{base}/orders"), &body).await;
        assert_eq!(status, 201, "{placed}");
    }
    let (status, content_type, text) = get_text(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let staunch: Vec<&str> = text.lines().filter(|l| l.starts_with("staunch_")).collect();
    assert!(!staunch.is_empty(), "staunch series in:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("# TYPE staunch_")),
        "typed series in:\n{text}"
    );
    shop.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_shop_in_the_process_shares_the_recorder() {
    let first = shop(Duration::from_secs(1)).await;
    let second = shop(Duration::from_secs(1)).await;
    for shop in [&first, &second] {
        let (status, _, text) = get_text(&format!("http://{}/metrics", shop.order_addr())).await;
        assert_eq!(status, 200, "{text}");
    }
    first.cleanup();
    second.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_samples_every_dependency_each_second_with_wall_clock_times() {
    let shop = shop(Duration::from_secs(1)).await;
    let base = format!("http://{}", shop.order_addr());
    let (status, answer) = post(&format!("{base}/admin/rate"), &json!({ "per_second": 20 })).await;
    assert_eq!(status, 200, "{answer}");
    let deadline = Instant::now() + Duration::from_mins(1);
    let series = loop {
        let (_, _, text) = get_text(&format!("{base}/dashboard/series")).await;
        let series: Value = serde_json::from_str(&text).expect("JSON");
        let ok: f64 = series["samples"].as_array().map_or(0.0, |s| {
            s.iter()
                .map(|s| s["deps"][1]["ok"].as_f64().unwrap_or(0.0))
                .sum()
        });
        if ok > 0.0 && series["samples"].as_array().is_some_and(|s| s.len() >= 3) {
            break series;
        }
        assert!(
            Instant::now() < deadline,
            "no payment calls sampled within 60 s: {series}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let now = series["now_ms"].as_u64().expect("now_ms");
    // Wall-clock milliseconds (after 2020-01-01), not the service's uptime.
    assert!(now > 1_577_836_800_000, "{now}");
    let samples = series["samples"].as_array().expect("samples");
    let names: Vec<&str> = samples[0]["deps"]
        .as_array()
        .expect("deps")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(names, ["inventory", "payment", "shipping"]);
    let last = &samples[samples.len() - 1]["deps"][1];
    for field in [
        "ok",
        "failed",
        "refused_breaker",
        "refused_bulkhead",
        "fallback",
        "retries",
        "in_flight",
        "max_concurrent",
    ] {
        assert!(last[field].is_number(), "{field} in {last}");
    }
    assert_eq!(last["state"], "closed", "{last}");
    // Both payment replicas, each with its balancer state and the attempts it got.
    let replicas = series["payment_replicas"]
        .as_array()
        .expect("payment_replicas");
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    for r in replicas {
        assert_eq!(r["state"], "active", "{r}");
        assert!(r["sent"].is_u64() && r["times_ejected"].is_u64(), "{r}");
    }
    let gaps: Vec<u64> = samples
        .windows(2)
        .map(|w| w[1]["t_ms"].as_u64().unwrap_or(0) - w[0]["t_ms"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        gaps.iter().all(|g| (500..=2500).contains(g)),
        "about one sample a second: {gaps:?}"
    );
    assert!(
        series["sagas"].as_array().is_some_and(|s| !s.is_empty()),
        "recent sagas"
    );
    assert!(series["epoch_ms"].as_u64().is_some_and(|e| e <= now));
    assert!(shop.dashboard.load().counts().0 > 0);
    assert!(shop.dashboard.series().samples().len() <= app::series::CAPACITY);
    shop.dashboard.load().set_rate(0.0).expect("0 stops");
    shop.cleanup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_refuse_bad_values_naming_the_field() {
    let shop = shop(Duration::from_secs(1)).await;
    let base = format!("http://{}", shop.order_addr());
    for bad in [json!({ "per_second": -1 }), json!({ "per_second": 1e9 })] {
        let (status, answer) = post(&format!("{base}/admin/rate"), &bad).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("per_second")),
            "{answer}"
        );
    }
    let (status, answer) = post(
        &format!("{base}/admin/payment/mode"),
        &json!({ "preset": "on fire" }),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("preset")),
        "{answer}"
    );
    let (status, answer) = post(
        &format!("{base}/admin/payment/mode"),
        &json!({ "preset": "slow" }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (_, _, mode) = get_text(&format!("http://{}/admin/mode", shop.addrs["payment"])).await;
    assert!(mode.contains("latency"), "payment's mode switched: {mode}");
    let (_, _, text) = get_text(&format!("{base}/dashboard/series")).await;
    assert!(text.contains(r#""payment_mode":"slow""#), "{text}");
    let (status, content_type, js) =
        get_text(&format!("{base}/dashboard/assets/uPlot.iife.min.js")).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    assert!(js.contains("uPlot"));
    let (status, _, license) = get_text(&format!("{base}/dashboard/assets/LICENSE")).await;
    assert_eq!(status, 200);
    assert!(license.contains("MIT"));
    shop.cleanup();
}

/// What went wrong driving the browser.
#[derive(Debug)]
enum Drive {
    /// chromedriver did not start or answer.
    Driver(String),
    /// A `WebDriver` command failed.
    Command(String, String),
    /// A condition was not met in time.
    TimedOut(&'static str, Duration, String),
}

impl std::fmt::Display for Drive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drive::Driver(why) => write!(f, "chromedriver: {why}"),
            Drive::Command(what, why) => write!(f, "WebDriver {what}: {why}"),
            Drive::TimedOut(what, after, last) => {
                write!(f, "{what}: not within {after:?} (last seen: {last})")
            }
        }
    }
}

/// A chromedriver process and one browser session in it, spoken to over `WebDriver`'s HTTP API.
struct Browser {
    _driver: tokio::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

/// A `WebDriver` element's id key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start(driver: &PathBuf, chromium: &PathBuf) -> Result<Self, Drive> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Drive::Driver(e.to_string()))?
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Drive::Driver(format!("{}: {e}", driver.display())))?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Drive::Driver(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Drive::Driver("no answer on /status within 20 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = target_dir().join(format!("dashboard-webdriver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-sync",
                    "--disable-component-update", "--hide-scrollbars", "--window-size=1500,1500",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        } } });
        let mut browser = Self {
            _driver: child,
            base,
            session: String::new(),
            http,
        };
        let created = browser.command("POST", "/session", &capabilities).await?;
        created["sessionId"]
            .as_str()
            .ok_or_else(|| Drive::Command("new session".into(), created.to_string()))?
            .clone_into(&mut browser.session);
        Ok(browser)
    }

    /// One command; its `value`.
    async fn command(&self, method: &str, path: &str, body: &Value) -> Result<Value, Drive> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string()),
        };
        let what = format!("{method} {path}");
        let response = request
            .send()
            .await
            .map_err(|e| Drive::Command(what.clone(), e.to_string()))?;
        let ok = response.status().is_success();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Drive::Command(what.clone(), e.to_string()))?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !ok {
            return Err(Drive::Command(what, answer.to_string()));
        }
        Ok(answer["value"].clone())
    }

    async fn open(&self, url: &str) -> Result<(), Drive> {
        self.command("POST", "/url", &json!({ "url": url }))
            .await
            .map(drop)
    }

    async fn click(&self, css: &str) -> Result<(), Drive> {
        let found = self
            .command(
                "POST",
                "/element",
                &json!({ "using": "css selector", "value": css }),
            )
            .await?;
        let id = found[ELEMENT]
            .as_str()
            .ok_or_else(|| Drive::Command(format!("find {css}"), found.to_string()))?;
        self.command("POST", &format!("/element/{id}/click"), &json!({}))
            .await
            .map(drop)
    }

    async fn eval(&self, script: &str) -> Result<Value, Drive> {
        self.command(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Evaluates `script` every 200 ms until `done` holds for its value, for at most `limit`.
    async fn wait_for(
        &self,
        what: &'static str,
        script: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, Drive> {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(script).await?;
            if done(&value) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                return Err(Drive::TimedOut(what, limit, value.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A PNG of the window.
    async fn screenshot(&self) -> Result<Vec<u8>, Drive> {
        let encoded = self.command("GET", "/screenshot", &Value::Null).await?;
        let text = encoded.as_str().unwrap_or_default();
        base64_decode(text).ok_or_else(|| Drive::Command("screenshot".into(), "not base64".into()))
    }

    async fn quit(&self) {
        let _ = self.command("DELETE", "", &Value::Null).await;
    }
}

/// Standard base64, padded (what `WebDriver`'s screenshot answers).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let d = if i >= chunk.len() - pad { 0 } else { digit(c)? };
            n |= d << (18 - 6 * i);
        }
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..3 - pad.min(2)]);
    }
    Some(out)
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(base64_decode("aGk=").as_deref(), Some(&b"hi"[..]));
    assert_eq!(base64_decode("YWJj").as_deref(), Some(&b"abc"[..]));
    assert_eq!(base64_decode("a$=="), None);
}

/// The payment breaker band's state on the page.
const BAND: &str =
    "return document.querySelector('[data-breaker=\"payment\"]').getAttribute('data-state');";
/// Payment calls refused by the breaker in the page's last ten samples.
const REFUSED: &str = "return Number(document.querySelector('[data-rates=\"payment\"]')\
                       .getAttribute('data-refused-breaker') || 0);";

/// Payment replicas listed on the page.
const REPLICAS: &str =
    "return document.querySelectorAll('[data-replicas=\"payment\"] [data-replica]').length;";

async fn drive(browser: &Browser, shop: &Shop) -> Result<PathBuf, Drive> {
    let limit = Duration::from_mins(1);
    browser
        .open(&format!("http://{}/dashboard", shop.order_addr()))
        .await?;
    browser.click("button[data-rate=\"20\"]").await?;
    browser
        .wait_for("a closed payment breaker with samples", BAND, limit, |v| {
            v == "closed"
        })
        .await?;
    browser
        .wait_for("both payment replicas listed", REPLICAS, limit, |v| v == 2)
        .await?;
    browser.click("button[data-mode=\"error\"]").await?;
    browser
        .wait_for("the payment band open", BAND, limit, |v| v == "open")
        .await?;
    browser
        .wait_for(
            "refused-by-breaker calls on the chart",
            REFUSED,
            limit,
            |v| v.as_f64().is_some_and(|n| n > 0.0),
        )
        .await?;
    browser.click("button[data-mode=\"none\"]").await?;
    browser
        .wait_for("the payment band closed again", BAND, limit, |v| {
            v == "closed"
        })
        .await?;
    // Some healthy seconds after the outage, so the picture shows the recovery.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let png = browser.screenshot().await?;
    let shot = target_dir().join("shop-dashboard.png");
    std::fs::write(&shot, &png).map_err(|e| Drive::Command("save".into(), e.to_string()))?;
    Ok(shot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_buttons_open_and_close_the_payment_breaker_in_a_real_browser() {
    let (chromium, driver) = match (
        program("CHROMIUM", "/usr/bin/chromium"),
        program("CHROMEDRIVER", "/usr/bin/chromedriver"),
    ) {
        (Ok(c), Ok(d)) => (c, d),
        (Err(missing), _) | (_, Err(missing)) => {
            eprintln!(
                "skipped: nothing at {} (install Debian's `chromium` and `chromium-driver`, \
                 or set CHROMIUM and CHROMEDRIVER)",
                missing.display()
            );
            return;
        }
    };
    // Open for two seconds: long enough to be sampled, short enough to close soon after.
    let shop = shop(Duration::from_secs(2)).await;
    let browser = Browser::start(&driver, &chromium)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let result = drive(&browser, &shop).await;
    browser.quit().await;
    shop.dashboard.load().set_rate(0.0).expect("0 stops");
    shop.cleanup();
    let shot = result.unwrap_or_else(|e| panic!("{e}"));
    let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
    assert!(size > 10_000, "a screenshot at {}", shot.display());
    println!("screenshot: {}", shot.display());
}
