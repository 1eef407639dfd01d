//! The order service's observability routes, served beside its own:
//!
//! - `GET /dashboard`: a page to keep open. Per dependency (inventory, payment, shipping), over
//!   the last five minutes: request rate by outcome, step latency p50/p99, the breaker state
//!   as a coloured band, bulkhead occupancy and the retry budget; recent sagas on a common
//!   time axis. Self-contained: the charts are uPlot (MIT, vendored under `assets/uplot/`),
//!   served from `/dashboard/assets/`, nothing from a CDN. Buttons switch payment's failure
//!   mode and set the order rate.
//! - `GET /dashboard/series`: the samples ([`series`](super::series)), the recent sagas with
//!   wall-clock times, the order rate and payment's mode, as JSON.
//! - `POST /admin/rate` `{"per_second": N}` (0 stops): the order driver's rate
//!   ([`load`](super::load)).
//! - `POST /admin/payment/mode` `{"preset": "none" | "slow" | "error" | "intermittent"}`:
//!   forwarded to payment's `POST /admin/mode`.
//! - `GET /metrics`: the Prometheus text exposition of staunch's metrics (and anything else
//!   recorded through the `metrics` crate in this process).
//!
//! The page's state is also in DOM attributes, for tests and scrapers: each breaker band has
//! `data-breaker` and `data-state`; each rate chart has `data-dep` and one `data-*` count per
//! outcome (the calls in the last ten samples).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{Value, json};

use super::load::Load;
use super::order::OrderService;
use super::series::{Series, unix_ms};

const PAGE: &str = include_str!("dashboard.html");
const UPLOT_JS: &str = include_str!("assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("assets/uplot/LICENSE");

/// The payment presets the buttons offer (the payment service's own).
pub(crate) const PRESETS: [&str; 4] = ["none", "slow", "error", "intermittent"];

/// The process's Prometheus recorder, installed on first use. A process has one global
/// recorder, and several shops may run in one (the tests): they share this handle. `None`
/// when another recorder was installed first.
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .as_ref()
}

/// The dashboard of one order service: its sampler, its order driver and payment's admin
/// address.
#[derive(Debug, Clone)]
pub(crate) struct Dashboard {
    orders: OrderService,
    series: Series,
    load: Load,
    payment_admin: Vec<String>,
    client: reqwest::Client,
    mode: Arc<Mutex<String>>,
}

impl Dashboard {
    /// Starts sampling `orders` every second and the order driver (stopped); `payment_admin`
    /// are the base URLs (`http://host:port`) of the payment replicas whose mode the buttons
    /// switch.
    pub(crate) fn start(orders: &OrderService, payment_admin: Vec<String>) -> Self {
        Self {
            series: Series::start(orders.clone(), Duration::from_secs(1)),
            load: Load::start(orders.clone(), 7),
            orders: orders.clone(),
            payment_admin,
            client: reqwest::Client::new(),
            mode: Arc::new(Mutex::new("none".to_owned())),
        }
    }

    /// The order driver.
    pub(crate) fn load(&self) -> &Load {
        &self.load
    }

    /// The samples so far.
    #[allow(dead_code)] // used by the tests
    pub(crate) fn series(&self) -> &Series {
        &self.series
    }

    /// The routes (see the module docs), to merge into the order service's router.
    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route("/dashboard", get(page))
            .route("/dashboard/series", get(series))
            .route("/dashboard/assets/uPlot.iife.min.js", get(uplot_js))
            .route("/dashboard/assets/uPlot.min.css", get(uplot_css))
            .route("/dashboard/assets/LICENSE", get(uplot_license))
            .route("/admin/rate", post(set_rate))
            .route("/admin/payment/mode", post(set_mode))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }

    /// `GET /dashboard/series`.
    pub(crate) fn snapshot(&self) -> Value {
        let now = unix_ms();
        let (placed, skipped) = self.load.counts();
        json!({
            "now_ms": now,
            // Wall clock of the order service's clock zero (the sagas' `started_ms`).
            "epoch_ms": now.saturating_sub(self.orders.now_ms()),
            "rate": self.load.rate(),
            "placed": placed,
            "skipped": skipped,
            "payment_mode": *self.mode.lock().unwrap_or_else(PoisonError::into_inner),
            "samples": self.series.samples(),
            "sagas": self.orders.recent(),
            // Payment's replicas behind the balancer: state, times ejected, attempts sent.
            "payment_replicas": self.orders.replicas(),
        })
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn uplot_js() -> Response {
    asset("text/javascript; charset=utf-8", UPLOT_JS)
}

async fn uplot_css() -> Response {
    asset("text/css; charset=utf-8", UPLOT_CSS)
}

async fn uplot_license() -> Response {
    asset("text/plain; charset=utf-8", UPLOT_LICENSE)
}

async fn series(State(d): State<Dashboard>) -> Json<Value> {
    Json(d.snapshot())
}

#[derive(Deserialize)]
struct RateReq {
    per_second: f64,
}

async fn set_rate(
    State(d): State<Dashboard>,
    Json(req): Json<RateReq>,
) -> (StatusCode, Json<Value>) {
    match d.load.set_rate(req.per_second) {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "per_second": req.per_second })),
        ),
        Err(bad) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": bad.to_string() })),
        ),
    }
}

#[derive(Deserialize)]
struct ModeReq {
    preset: String,
}

async fn set_mode(
    State(d): State<Dashboard>,
    Json(req): Json<ModeReq>,
) -> (StatusCode, Json<Value>) {
    if !PRESETS.contains(&req.preset.as_str()) {
        let error = format!("preset: {:?} is not one of {PRESETS:?}", req.preset);
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error })));
    }
    for base in &d.payment_admin {
        let sent = d
            .client
            .post(format!("{base}/admin/mode"))
            .timeout(Duration::from_secs(5))
            .header("content-type", "application/json")
            .body(json!({ "preset": req.preset }).to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                let error = format!("payment {base} answered {}", r.status());
                return (StatusCode::BAD_GATEWAY, Json(json!({ "error": error })));
            }
            Err(err) => {
                let error = format!("payment {base}: {err}");
                return (StatusCode::BAD_GATEWAY, Json(json!({ "error": error })));
            }
        }
    }
    req.preset
        .clone_into(&mut d.mode.lock().unwrap_or_else(PoisonError::into_inner));
    (StatusCode::OK, Json(json!({ "preset": req.preset })))
}

async fn metrics() -> Response {
    match prometheus() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder was installed in this process first\n",
        )
            .into_response(),
    }
}
