//! The inventory service: stock per SKU, reservations and their release, in a SQLite file.
//!
//! - `POST /reservations` `{order_id, sku, qty}` (Idempotency-Key): takes `qty` from the stock,
//!   `201 {reservation}`, or `409` when there is not enough.
//! - `POST /releases` `{reservation_key}` (Idempotency-Key): gives back the stock taken by the
//!   reservation made with that key. When no such reservation exists (the reserve call was in
//!   doubt and never landed) the key is voided, so a late reserve with it is refused.
//! - `GET /stock`: `{sku: available}`.
//!
//! Both POST routes sit behind staunch-idempotency's layer ([`Db::layer`]) and record their
//! reply in the transaction of their write ([`Db::reply`]): a repeated key gets the first
//! reply and changes nothing, also after a restart on the same file. The handlers themselves
//! do not look for an earlier reservation or release with the same key; the layer alone
//! keeps a repeat from taking or giving back stock twice (and the story's consistency check
//! would see it).

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use staunch::idempotency::Claim;
use staunch::idempotency::sqlx::{self, Row};

use super::db::{Db, db_error, missing_key, request_key};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY NOT NULL, available INTEGER NOT NULL)",
    // No unique key: the idempotency layer is what keeps a key from reserving twice.
    "CREATE TABLE IF NOT EXISTS reservations (id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL, order_id TEXT NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL,
        released INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS reservations_key ON reservations (key)",
    "CREATE TABLE IF NOT EXISTS voided (key TEXT PRIMARY KEY NOT NULL)",
];

/// The service: its database.
#[derive(Debug, Clone)]
pub(crate) struct Inventory {
    db: Db,
}

/// One reservation row, as the consistency check sees it.
#[derive(Debug, Clone)]
pub(crate) struct Reservation {
    /// The idempotency key that made it.
    pub(crate) key: String,
    /// What it holds.
    pub(crate) sku: String,
    /// How many.
    pub(crate) qty: u64,
    /// Whether it was released.
    pub(crate) released: bool,
}

#[derive(Deserialize)]
struct Reserve {
    order_id: String,
    sku: String,
    qty: u64,
}

#[derive(Deserialize)]
struct Release {
    reservation_key: String,
}

impl Inventory {
    /// The warehouse in the SQLite file at `path`; a new file starts with `stock`, an existing
    /// one keeps what it holds.
    pub(crate) async fn open(path: &Path, stock: &[(&str, u64)]) -> Result<Self, BoxError> {
        let db = Db::open(path, SCHEMA).await?;
        for (sku, n) in stock {
            sqlx::query("INSERT OR IGNORE INTO stock (sku, available) VALUES (?, ?)")
                .bind(sku)
                .bind(i64::try_from(*n)?)
                .execute(&db.pool)
                .await?;
        }
        Ok(Self { db })
    }

    /// Units available per SKU.
    pub(crate) async fn available(&self) -> Result<BTreeMap<String, u64>, BoxError> {
        let rows = sqlx::query("SELECT sku, available FROM stock")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, u64::try_from(row.try_get::<i64, _>(1)?)?)))
            .collect()
    }

    /// Every reservation made.
    pub(crate) async fn reservations(&self) -> Result<Vec<Reservation>, BoxError> {
        let rows = sqlx::query("SELECT key, sku, qty, released FROM reservations")
            .fetch_all(&self.db.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Reservation {
                    key: row.try_get(0)?,
                    sku: row.try_get(1)?,
                    qty: u64::try_from(row.try_get::<i64, _>(2)?)?,
                    released: row.try_get::<i64, _>(3)? != 0,
                })
            })
            .collect()
    }

    /// The HTTP routes.
    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route("/reservations", post(reserve))
            .route("/releases", post(release))
            .route_layer(self.db.layer())
            .route("/stock", get(stock))
            .with_state(self.clone())
    }
}

async fn reserve(
    State(inv): State<Inventory>,
    Extension(claim): Extension<Claim>,
    headers: HeaderMap,
    Json(req): Json<Reserve>,
) -> Response {
    let Some(key) = request_key(&headers) else {
        return missing_key();
    };
    let mut tx = match inv.db.begin().await {
        Ok(tx) => tx,
        Err(err) => return db_error(&err),
    };
    let found = async {
        let voided = sqlx::query("SELECT 1 FROM voided WHERE key = ?")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let left: Option<i64> = sqlx::query_scalar("SELECT available FROM stock WHERE sku = ?")
            .bind(&req.sku)
            .fetch_optional(&mut *tx)
            .await?;
        Ok::<_, sqlx::Error>((voided, left.unwrap_or(0)))
    }
    .await;
    let (voided, left) = match found {
        Ok(found) => found,
        Err(err) => return db_error(&err),
    };
    let qty = i64::try_from(req.qty).unwrap_or(i64::MAX);
    let (status, body) = if voided {
        let body = json!({ "error": "reservation voided by an earlier release" });
        (StatusCode::CONFLICT, body)
    } else if left < qty {
        let body = json!({ "error": "out of stock", "sku": req.sku, "available": left });
        (StatusCode::CONFLICT, body)
    } else {
        let write = async {
            sqlx::query("UPDATE stock SET available = available - ? WHERE sku = ?")
                .bind(qty)
                .bind(&req.sku)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO reservations (key, order_id, sku, qty) VALUES (?, ?, ?, ?)")
                .bind(&key)
                .bind(&req.order_id)
                .bind(&req.sku)
                .bind(qty)
                .execute(&mut *tx)
                .await
        };
        if let Err(err) = write.await {
            return db_error(&err);
        }
        let body =
            json!({ "reservation": key, "order_id": req.order_id, "sku": req.sku, "qty": req.qty });
        (StatusCode::CREATED, body)
    };
    inv.db.reply(tx, &claim, status, &body).await
}

async fn release(
    State(inv): State<Inventory>,
    Extension(claim): Extension<Claim>,
    Json(req): Json<Release>,
) -> Response {
    let mut tx = match inv.db.begin().await {
        Ok(tx) => tx,
        Err(err) => return db_error(&err),
    };
    let work = async {
        let held = sqlx::query("SELECT sku, qty FROM reservations WHERE key = ?")
            .bind(&req.reservation_key)
            .fetch_all(&mut *tx)
            .await?;
        if held.is_empty() {
            sqlx::query("INSERT OR IGNORE INTO voided (key) VALUES (?)")
                .bind(&req.reservation_key)
                .execute(&mut *tx)
                .await?;
            return Ok(json!({ "released": 0, "note": "no such reservation: key voided" }));
        }
        // No "already released" check: a second run of this key would give the stock back
        // twice, which the layer prevents and the consistency check would see.
        let mut released = 0;
        for row in &held {
            let (sku, qty): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            sqlx::query("UPDATE stock SET available = available + ? WHERE sku = ?")
                .bind(qty)
                .bind(&sku)
                .execute(&mut *tx)
                .await?;
            released += qty;
        }
        sqlx::query("UPDATE reservations SET released = 1 WHERE key = ?")
            .bind(&req.reservation_key)
            .execute(&mut *tx)
            .await?;
        Ok::<_, sqlx::Error>(json!({ "released": released }))
    };
    match work.await {
        Ok(body) => inv.db.reply(tx, &claim, StatusCode::OK, &body).await,
        Err(err) => db_error(&err),
    }
}

async fn stock(State(inv): State<Inventory>) -> Response {
    match inv.available().await {
        Ok(available) => axum::response::IntoResponse::into_response(Json(available)),
        Err(err) => super::db::failed(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}
