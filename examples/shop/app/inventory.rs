//! The inventory service: stock per SKU, reservations and their release.
//!
//! - `POST /reservations` `{order_id, sku, qty}` (Idempotency-Key): takes `qty` from the stock,
//!   `201 {reservation}`, or `409` when there is not enough.
//! - `POST /releases` `{reservation_key}` (Idempotency-Key): gives back the stock taken by the
//!   reservation made with that key. When no such reservation exists (the reserve call was in
//!   doubt and never landed) the key is voided, so a late reserve with it is refused.
//! - `GET /stock`: `{sku: available}`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::idempotency::{self, Replies, Reply};

/// The service's state, shared with its handlers.
#[derive(Debug, Clone)]
pub(crate) struct Inventory {
    inner: Arc<Mutex<Stock>>,
}

#[derive(Debug, Default)]
struct Stock {
    available: BTreeMap<String, u64>,
    /// Reservations by the key that made them: (sku, qty, released).
    reservations: HashMap<String, (String, u64, bool)>,
    voided: HashSet<String>,
    replies: Replies,
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
    /// A warehouse holding `stock`.
    pub(crate) fn new(stock: &[(&str, u64)]) -> Self {
        let available = stock.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect();
        Self {
            inner: Arc::new(Mutex::new(Stock {
                available,
                ..Stock::default()
            })),
        }
    }

    /// Units available per SKU.
    pub(crate) fn available(&self) -> BTreeMap<String, u64> {
        self.lock().available.clone()
    }

    /// Reservations not released: (sku, qty) per reservation key.
    pub(crate) fn held(&self) -> Vec<(String, String, u64)> {
        self.lock()
            .reservations
            .iter()
            .filter(|(_, (_, _, released))| !released)
            .map(|(key, (sku, qty, _))| (key.clone(), sku.clone(), *qty))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stock> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The HTTP routes.
    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route("/reservations", post(reserve))
            .route("/releases", post(release))
            .route("/stock", get(stock))
            .with_state(self.clone())
    }
}

async fn reserve(
    State(inv): State<Inventory>,
    headers: HeaderMap,
    Json(req): Json<Reserve>,
) -> Reply {
    let key = match idempotency::key(&headers) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    let mut st = inv.lock();
    if let Some(reply) = st.replies.get(&key) {
        return reply;
    }
    if st.voided.contains(&key) {
        let body = json!({ "error": "reservation voided by an earlier release" });
        return st.replies.keep(&key, StatusCode::CONFLICT, body);
    }
    let left = st.available.get(&req.sku).copied().unwrap_or(0);
    if left < req.qty {
        let body = json!({ "error": "out of stock", "sku": req.sku, "available": left });
        return st.replies.keep(&key, StatusCode::CONFLICT, body);
    }
    st.available.insert(req.sku.clone(), left - req.qty);
    st.reservations
        .insert(key.clone(), (req.sku.clone(), req.qty, false));
    let body =
        json!({ "reservation": key, "order_id": req.order_id, "sku": req.sku, "qty": req.qty });
    st.replies.keep(&key, StatusCode::CREATED, body)
}

async fn release(
    State(inv): State<Inventory>,
    headers: HeaderMap,
    Json(req): Json<Release>,
) -> Reply {
    let key = match idempotency::key(&headers) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    let mut guard = inv.lock();
    let st = &mut *guard;
    if let Some(reply) = st.replies.get(&key) {
        return reply;
    }
    let body = match st.reservations.get_mut(&req.reservation_key) {
        Some((sku, qty, released)) if !*released => {
            *released = true;
            *st.available.entry(sku.clone()).or_default() += *qty;
            json!({ "released": qty, "sku": sku })
        }
        Some(_) => json!({ "released": 0, "note": "already released" }),
        None => {
            st.voided.insert(req.reservation_key.clone());
            json!({ "released": 0, "note": "no such reservation: key voided" })
        }
    };
    st.replies.keep(&key, StatusCode::OK, body)
}

async fn stock(State(inv): State<Inventory>) -> Json<BTreeMap<String, u64>> {
    Json(inv.available())
}
