//! `Idempotency-Key` handling shared by the participants.
//!
//! Every mutating route requires the header. The first answer given for a key is kept and
//! returned again for every repeat, and a repeat changes nothing. An injected failure (a 500
//! or 503 from the payment service's failure modes) changes nothing either, so it is not
//! kept: the client may retry that key for real.

use std::collections::HashMap;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

/// The header name (lower case, as HTTP/2 and gRPC metadata require).
pub(crate) const HEADER: &str = "idempotency-key";

/// A stored answer: status and JSON body.
pub(crate) type Reply = (StatusCode, Json<Value>);

/// The answers given so far, by key.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    map: HashMap<String, (StatusCode, Value)>,
}

impl Replies {
    /// The first answer given for `key`, if any.
    pub(crate) fn get(&self, key: &str) -> Option<Reply> {
        self.map
            .get(key)
            .map(|(status, body)| (*status, Json(body.clone())))
    }

    /// Keeps `reply` as the answer for `key` and returns it.
    pub(crate) fn keep(&mut self, key: &str, status: StatusCode, body: Value) -> Reply {
        self.map.insert(key.to_owned(), (status, body.clone()));
        (status, Json(body))
    }
}

/// The request's key, or the 400 answer to give when it is missing.
pub(crate) fn key(headers: &HeaderMap) -> Result<String, Reply> {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": "the Idempotency-Key header is required" })),
            )
        })
}
