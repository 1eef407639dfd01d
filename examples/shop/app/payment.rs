//! The payment service: charges, refunds, and switchable failure modes.
//!
//! - `POST /charges` `{order_id, amount_cents}` (Idempotency-Key): `201 {charge}`. Subject to
//!   the failure mode: it models the call to the card network.
//! - `POST /refunds` `{charge_key}` (Idempotency-Key): refunds the charge made with that key.
//!   When there is none (the charge call was in doubt and never landed, or is still running)
//!   the key is voided, so the charge can no longer happen.
//! - `POST /admin/mode` `{"mode": "none" | "slow" | "error" | "intermittent", "delay_ms",
//!   "share"}` and `GET /admin/mode`; `GET /admin/charges` lists every charge.
//!
//! Failure modes: `slow` delays every charge by `delay_ms`; `error` fails a `share` of the
//! charges, alternately with `500` and `503`; `intermittent` delays one charge in four and
//! answers `503` to another one in four. The choice is a counter, not a random draw, so a
//! story plays the same way every time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::idempotency::{self, Replies, Reply};

/// How the payment service misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Every charge succeeds at once.
    None,
    /// Every charge takes `delay_ms`.
    Slow {
        /// The delay.
        delay_ms: u64,
    },
    /// A share (0 to 1) of the charges fail, alternately 500 and 503.
    Error {
        /// The share that fails.
        share: f64,
    },
    /// One charge in four takes `delay_ms`, another one in four gets a 503.
    Intermittent {
        /// The delay of the slow ones.
        delay_ms: u64,
    },
}

/// One charge, as the consistency check sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Charge {
    /// The idempotency key that made it.
    pub(crate) key: String,
    /// The order it is for.
    pub(crate) order_id: String,
    /// Amount.
    pub(crate) amount_cents: u64,
    /// Whether it was refunded.
    pub(crate) refunded: bool,
}

/// The service's state, shared with its handlers.
#[derive(Debug, Clone)]
pub(crate) struct Payment {
    inner: Arc<Mutex<Ledger>>,
}

#[derive(Debug)]
struct Ledger {
    mode: Mode,
    counter: u64,
    charges: HashMap<String, Charge>,
    in_progress: HashSet<String>,
    voided: HashSet<String>,
    replies: Replies,
    refund_replies: Replies,
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

enum Fate {
    Ok,
    Slow(Duration),
    Fail(StatusCode),
}

impl Payment {
    /// A healthy payment service.
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Ledger {
                mode: Mode::None,
                counter: 0,
                charges: HashMap::new(),
                in_progress: HashSet::new(),
                voided: HashSet::new(),
                replies: Replies::default(),
                refund_replies: Replies::default(),
            })),
        }
    }

    /// Every charge made.
    pub(crate) fn charges(&self) -> Vec<Charge> {
        self.lock().charges.values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The HTTP routes.
    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route("/charges", post(charge))
            .route("/refunds", post(refund))
            .route("/admin/mode", get(get_mode).post(set_mode))
            .route("/admin/charges", get(list_charges))
            .with_state(self.clone())
    }
}

/// Removes the in-progress mark of a slow charge, also when its handler is dropped because the
/// client gave up and closed the connection.
struct InProgress {
    payment: Payment,
    key: String,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.payment.lock().in_progress.remove(&self.key);
    }
}

async fn charge(
    State(pay): State<Payment>,
    headers: HeaderMap,
    Json(req): Json<ChargeReq>,
) -> Reply {
    let key = match idempotency::key(&headers) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    let fate = {
        let mut st = pay.lock();
        if let Some(reply) = st.replies.get(&key) {
            return reply;
        }
        if st.in_progress.contains(&key) {
            // Neither the first answer nor a second charge: the client must treat the charge
            // as in doubt (and refund by key if it gives up).
            return (
                StatusCode::CONFLICT,
                Json(json!({ "error": "charge in progress" })),
            );
        }
        if st.voided.contains(&key) {
            let body = json!({ "error": "charge voided by an earlier refund" });
            return st.replies.keep(&key, StatusCode::CONFLICT, body);
        }
        let n = st.counter;
        st.counter += 1;
        let fate = match st.mode {
            Mode::None => Fate::Ok,
            Mode::Slow { delay_ms } => Fate::Slow(Duration::from_millis(delay_ms)),
            Mode::Error { share } => {
                // Spread the failures evenly: call n fails when the running share grows.
                let failed_before = (n as f64 * share).floor();
                let failed_now = ((n + 1) as f64 * share).floor();
                if failed_now > failed_before {
                    Fate::Fail(if n % 2 == 0 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    })
                } else {
                    Fate::Ok
                }
            }
            Mode::Intermittent { delay_ms } => match n % 4 {
                0 => Fate::Slow(Duration::from_millis(delay_ms)),
                1 => Fate::Fail(StatusCode::SERVICE_UNAVAILABLE),
                _ => Fate::Ok,
            },
        };
        if matches!(fate, Fate::Slow(_)) {
            st.in_progress.insert(key.clone());
        }
        fate
    };
    match fate {
        Fate::Fail(status) => {
            // Nothing happened, so nothing is kept: a retry with this key is a real retry.
            return (status, Json(json!({ "error": "injected failure" })));
        }
        Fate::Slow(delay) => {
            let _mark = InProgress {
                payment: pay.clone(),
                key: key.clone(),
            };
            tokio::time::sleep(delay).await;
        }
        Fate::Ok => {}
    }
    let mut st = pay.lock();
    if st.voided.contains(&key) {
        let body = json!({ "error": "charge voided by an earlier refund" });
        return st.replies.keep(&key, StatusCode::CONFLICT, body);
    }
    st.charges.insert(
        key.clone(),
        Charge {
            key: key.clone(),
            order_id: req.order_id.clone(),
            amount_cents: req.amount_cents,
            refunded: false,
        },
    );
    let body = json!({ "charge": key, "order_id": req.order_id, "amount_cents": req.amount_cents });
    st.replies.keep(&key, StatusCode::CREATED, body)
}

async fn refund(
    State(pay): State<Payment>,
    headers: HeaderMap,
    Json(req): Json<RefundReq>,
) -> Reply {
    let key = match idempotency::key(&headers) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    let mut guard = pay.lock();
    let st = &mut *guard;
    if let Some(reply) = st.refund_replies.get(&key) {
        return reply;
    }
    let body = match st.charges.get_mut(&req.charge_key) {
        Some(charge) if !charge.refunded => {
            charge.refunded = true;
            json!({ "refunded": charge.amount_cents })
        }
        Some(_) => json!({ "refunded": 0, "note": "already refunded" }),
        None => {
            st.voided.insert(req.charge_key.clone());
            json!({ "refunded": 0, "note": "no such charge: key voided" })
        }
    };
    st.refund_replies.keep(&key, StatusCode::OK, body)
}

async fn get_mode(State(pay): State<Payment>) -> Json<Mode> {
    Json(pay.lock().mode)
}

async fn set_mode(State(pay): State<Payment>, Json(mode): Json<Mode>) -> Json<Value> {
    let mut st = pay.lock();
    let before = st.mode;
    st.mode = mode;
    Json(json!({ "before": before, "now": mode }))
}

async fn list_charges(State(pay): State<Payment>) -> Json<Vec<Charge>> {
    Json(pay.charges())
}
