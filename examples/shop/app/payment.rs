//! The payment service: charges, refunds, and switchable failure modes, with its ledger in
//! a SQLite file.
//!
//! - `POST /charges` `{order_id, amount_cents}` (Idempotency-Key): `201 {charge}`. Subject to
//!   the injected faults: it models the call to the card network.
//! - `POST /refunds` `{charge_key}` (Idempotency-Key): refunds the charge made with that key.
//!   When there is none (the charge call was in doubt and never landed, or is still running)
//!   the key is voided, so the charge can no longer happen.
//! - `POST /admin/mode` with a staunch-fault table: a preset (`{"preset": "none" | "slow" |
//!   "error" | "intermittent"}`) or its own sections (`{"error": {"rate": 0.8, "status":
//!   500}, "latency": {"rate": 1.0, "min": "2s", "max": "2s"}, "seed": 7}`); a bad value is a
//!   `400` naming it. `GET /admin/mode` shows the faults in force; `GET /admin/ledger` lists
//!   every charge and refund.
//!
//! The faults are staunch-fault's [`HttpFaultLayer`] around the charge handler, inside the
//! idempotency layer: an injected `500`/`503` is an answer the layer does not store (the
//! client may retry it), and an injected delay holds the key as a slow charge would. The
//! presets are the payment modes `slow` (every charge 3–8 s), `error` (70 % answer `500`)
//! and `intermittent` (30 % delayed 2–5 s, 20 % answer `503`), drawn from a seeded random
//! sequence. The faults live in memory: a restarted service starts healthy unless told
//! otherwise.
//!
//! Both POST routes sit behind staunch-idempotency's layer ([`Db::layer`]) and write their
//! ledger row and their reply in one transaction ([`Db::reply`]). A repeat while the first
//! charge with its key still runs (a slow charge) gets the layer's 409, which the order
//! service reads as "in doubt" and compensates by refunding the key. The ledger is append-only
//! and the handlers do not look for an earlier row with the same key: the layer alone keeps a
//! key from charging or refunding twice, and the consistency check counts the rows.

use std::path::Path;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use staunch::fault::{FaultConfig, FaultInjector, HttpFaultLayer};
use staunch::idempotency::Claim;
use staunch::idempotency::sqlx::{self, Row};

use super::db::{Db, db_error, failed, missing_key, request_key};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SCHEMA: &[&str] = &[
    // Append-only; no unique key: the idempotency layer is what keeps a key from charging or
    // refunding twice.
    "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL, key TEXT NOT NULL, charge_key TEXT NOT NULL,
        order_id TEXT NOT NULL, amount_cents INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ledger_charge_key ON ledger (charge_key)",
    "CREATE TABLE IF NOT EXISTS voided (key TEXT PRIMARY KEY NOT NULL)",
];

/// One ledger row: a charge or a refund.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// `charge` or `refund`.
    pub(crate) kind: String,
    /// The idempotency key of the request that wrote it.
    pub(crate) key: String,
    /// The charge's key (for a charge, its own key).
    pub(crate) charge_key: String,
    /// The order it is for.
    pub(crate) order_id: String,
    /// Amount (refunded, for a refund).
    pub(crate) amount_cents: u64,
}

/// The seed of the faults' random draws: a story plays the same way given the same calls.
const SEED: u64 = 7;

/// The service: its ledger and the faults injected into its charges.
#[derive(Debug, Clone)]
pub(crate) struct Payment {
    db: Db,
    faults: FaultInjector,
}

#[derive(Deserialize)]
struct ChargeReq {
    order_id: String,
    amount_cents: u64,
}

#[derive(Deserialize)]
struct RefundReq {
    charge_key: String,
}

impl Payment {
    /// A healthy payment service with its ledger in the SQLite file at `path` (created if
    /// missing, kept if there).
    pub(crate) async fn open(path: &Path) -> Result<Self, BoxError> {
        Ok(Self {
            db: Db::open(path, SCHEMA).await?,
            faults: FaultInjector::builder("payment").seed(SEED).build()?,
        })
    }

    /// Another replica of the service: the same ledger and idempotency records (a repeat of a
    /// key answered by one replica is a repeat for the other too), faults of its own (named
    /// `name`, healthy at first, seeded apart from this one's).
    pub(crate) fn replica(&self, name: &str) -> Result<Self, BoxError> {
        Ok(Self {
            db: self.db.clone(),
            faults: FaultInjector::builder(name.to_owned())
                .seed(SEED + 1)
                .build()?,
        })
    }

    /// Switches the faults injected into charges (seeded, unless `config` has its own seed,
    /// so the same calls get the same faults); returns the previous ones.
    pub(crate) fn set_faults(
        &self,
        mut config: FaultConfig,
    ) -> Result<FaultConfig, staunch::ConfigError> {
        let before = self.faults.config();
        config.seed = config.seed.or(Some(SEED));
        self.faults.set(config)?;
        Ok(before)
    }

    /// Every ledger row, oldest first.
    pub(crate) async fn ledger(&self) -> Result<Vec<Entry>, BoxError> {
        let rows = sqlx::query(
            "SELECT kind, key, charge_key, order_id, amount_cents FROM ledger ORDER BY id",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Entry {
                    kind: row.try_get(0)?,
                    key: row.try_get(1)?,
                    charge_key: row.try_get(2)?,
                    order_id: row.try_get(3)?,
                    amount_cents: u64::try_from(row.try_get::<i64, _>(4)?)?,
                })
            })
            .collect()
    }

    /// The HTTP routes.
    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route(
                "/charges",
                post(charge).layer(
                    tower::ServiceBuilder::new()
                        // Only an abort (which no preset injects) is an error: a gateway's answer.
                        .layer(HandleErrorLayer::new(|err: BoxError| async move {
                            failed(StatusCode::BAD_GATEWAY, &err.to_string())
                        }))
                        .layer(HttpFaultLayer::new(self.faults.clone())),
                ),
            )
            .route("/refunds", post(refund))
            .route_layer(self.db.layer())
            .route("/admin/mode", get(get_mode).post(set_mode))
            .route("/admin/ledger", get(list_ledger))
            .with_state(self.clone())
    }
}

async fn charge(
    State(pay): State<Payment>,
    Extension(claim): Extension<Claim>,
    headers: HeaderMap,
    Json(req): Json<ChargeReq>,
) -> Response {
    let Some(key) = request_key(&headers) else {
        return missing_key();
    };
    let mut tx = match pay.db.begin().await {
        Ok(tx) => tx,
        Err(err) => return db_error(&err),
    };
    let work = async {
        // A refund that came first (the charge was in doubt) voided the key.
        let voided = sqlx::query("SELECT 1 FROM voided WHERE key = ?")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if voided {
            let body = json!({ "error": "charge voided by an earlier refund" });
            return Ok((StatusCode::CONFLICT, body));
        }
        sqlx::query(
            "INSERT INTO ledger (kind, key, charge_key, order_id, amount_cents)
             VALUES ('charge', ?, ?, ?, ?)",
        )
        .bind(&key)
        .bind(&key)
        .bind(&req.order_id)
        .bind(i64::try_from(req.amount_cents).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        let body =
            json!({ "charge": key, "order_id": req.order_id, "amount_cents": req.amount_cents });
        Ok::<_, sqlx::Error>((StatusCode::CREATED, body))
    };
    match work.await {
        Ok((status, body)) => pay.db.reply(tx, &claim, status, &body).await,
        Err(err) => db_error(&err),
    }
}

async fn refund(
    State(pay): State<Payment>,
    Extension(claim): Extension<Claim>,
    headers: HeaderMap,
    Json(req): Json<RefundReq>,
) -> Response {
    let Some(key) = request_key(&headers) else {
        return missing_key();
    };
    let mut tx = match pay.db.begin().await {
        Ok(tx) => tx,
        Err(err) => return db_error(&err),
    };
    let work = async {
        let charge = sqlx::query(
            "SELECT order_id, amount_cents FROM ledger WHERE kind = 'charge' AND charge_key = ?",
        )
        .bind(&req.charge_key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(charge) = charge else {
            sqlx::query("INSERT OR IGNORE INTO voided (key) VALUES (?)")
                .bind(&req.charge_key)
                .execute(&mut *tx)
                .await?;
            return Ok(json!({ "refunded": 0, "note": "no such charge: key voided" }));
        };
        let (order_id, amount): (String, i64) = (charge.try_get(0)?, charge.try_get(1)?);
        // No "already refunded" check: a second run of this key would refund twice, which
        // the layer prevents and the consistency check would see.
        sqlx::query(
            "INSERT INTO ledger (kind, key, charge_key, order_id, amount_cents)
             VALUES ('refund', ?, ?, ?, ?)",
        )
        .bind(&key)
        .bind(&req.charge_key)
        .bind(&order_id)
        .bind(amount)
        .execute(&mut *tx)
        .await?;
        Ok::<_, sqlx::Error>(json!({ "refunded": amount }))
    };
    match work.await {
        Ok(body) => pay.db.reply(tx, &claim, StatusCode::OK, &body).await,
        Err(err) => db_error(&err),
    }
}

async fn get_mode(State(pay): State<Payment>) -> Json<FaultConfig> {
    Json(pay.faults.config())
}

async fn set_mode(State(pay): State<Payment>, Json(config): Json<FaultConfig>) -> Response {
    match pay.set_faults(config) {
        Ok(before) => Json(json!({ "before": before, "now": pay.faults.config() })).into_response(),
        Err(err) => failed(StatusCode::BAD_REQUEST, &err.to_string()),
    }
}

async fn list_ledger(State(pay): State<Payment>) -> Response {
    match pay.ledger().await {
        Ok(ledger) => Json(ledger).into_response(),
        Err(err) => failed(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}
