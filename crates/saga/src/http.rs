//! The operator endpoint: an axum [`Router`] over the engine's operator API, as JSON.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /sagas?status=stuck&definition=checkout&limit=100` | [`SagaEngine::list`]: summaries, in id order |
//! | `GET /sagas/{id}` | [`SagaEngine::inspect`]: the summary and every log row, decoded |
//! | `POST /sagas/{id}/cancel` `{"actor": "..", "reason": ".."}` | [`SagaEngine::cancel`] |
//! | `POST /sagas/{id}/pause` `{"actor": ".."}` | [`SagaEngine::pause`] |
//! | `POST /sagas/{id}/resume` `{"actor": ".."}` | [`SagaEngine::resume`] |
//! | `POST /sagas/{id}/retry` `{"actor": ".."}` | [`SagaEngine::retry_stuck`] |
//! | `POST /sagas/{id}/skip` `{"actor": ".."}` | [`SagaEngine::skip_stuck`] |
//! | `POST /sagas/{id}/resolve` `{"actor": "..", "note": ".."}` | [`SagaEngine::resolve`] |
//!
//! A summary is `{"saga_id", "definition", "version", "status", "note", "created_at_ms",
//! "updated_at_ms", "stuck_since_ms"}`, the times in milliseconds since the Unix epoch (`null`
//! when the store does not know them).
//!
//! Every mutating call needs a non-empty `actor` (who acted; the saga's log records it, with
//! the reason or note) and answers `202 Accepted` with `{"saga_id": .., "action": ..}`: the
//! saga acts on it at its next step boundary. Retry and skip act through the definition
//! registered under the saga's name and version.
//!
//! Errors are JSON `{"error": kind, "message": text}`: `400 bad_request` (a missing actor, an
//! unknown status in the query, a body that is not the JSON above), `404 not_found`,
//! `409 conflict` (refused: finished, past its pivot, not stuck, not paused, quarantined,
//! another definition, another instance holds it), `422 unreadable` (its log does not
//! load), `503 unavailable` (the store failed or the engine is full; retry later).
//!
//! The router has no authentication: mount it behind what guards your other admin routes.
//!
//! ```
//! # async fn demo(engine: staunch_saga::SagaEngine) {
//! let app = axum::Router::new().nest("/ops", staunch_saga::http::router(engine));
//! # let _ = app;
//! # }
//! ```

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::SagaEngine;
use crate::error::SagaError;
use crate::log::SagaTimeline;
use crate::store::{ListFilter, SagaStatus, SagaSummary};

/// The operator routes over `engine` (see the [module docs](self)).
pub fn router(engine: SagaEngine) -> Router {
    Router::new()
        .route("/sagas", get(list))
        .route("/sagas/{id}", get(inspect))
        .route("/sagas/{id}/{action}", post(act))
        .with_state(engine)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    definition: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct ActBody {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
}

/// A JSON error answer.
struct Failure(StatusCode, &'static str, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1, "message": self.2 }))).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, "bad_request", message.into())
}

impl From<SagaError> for Failure {
    fn from(e: SagaError) -> Self {
        let (status, kind) = match &e {
            SagaError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            SagaError::Load { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "unreadable"),
            SagaError::Store(_) | SagaError::Overloaded { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            _ => (StatusCode::CONFLICT, "conflict"),
        };
        Failure(status, kind, e.to_string())
    }
}

fn summary(s: &SagaSummary) -> Value {
    json!({
        "saga_id": s.saga_id,
        "definition": s.definition,
        "version": s.version,
        "status": s.status.as_str(),
        "note": s.note,
        "created_at_ms": s.created_at.map(crate::store::ms_from_time),
        "updated_at_ms": s.updated_at.map(crate::store::ms_from_time),
        "stuck_since_ms": s.stuck_since.map(crate::store::ms_from_time),
    })
}

fn timeline(t: &SagaTimeline) -> Value {
    let entries: Vec<Value> = t
        .entries
        .iter()
        .map(|e| match &e.event {
            Ok(event) => json!({
                "seq": e.seq,
                "event": serde_json::to_value(event).unwrap_or(Value::Null),
            }),
            Err(error) => json!({ "seq": e.seq, "error": error.to_string() }),
        })
        .collect();
    json!({ "summary": summary(&t.summary), "entries": entries })
}

async fn list(
    State(engine): State<SagaEngine>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, Failure> {
    let Query(query) = query.map_err(|e| bad_request(e.body_text()))?;
    let mut filter = match query.status.as_deref() {
        None => ListFilter::all(),
        Some(s) => ListFilter::status(SagaStatus::parse(s).ok_or_else(|| {
            bad_request(format!(
                "unknown status `{s}` (one of: {})",
                SagaStatus::ALL.map(SagaStatus::as_str).join(", ")
            ))
        })?),
    };
    if let Some(d) = query.definition {
        filter = filter.definition(d);
    }
    if let Some(n) = query.limit {
        filter = filter.limit(n);
    }
    let sagas = engine.list(&filter).await?;
    Ok(Json(Value::Array(sagas.iter().map(summary).collect())))
}

async fn inspect(
    State(engine): State<SagaEngine>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Failure> {
    match engine.inspect(&id).await? {
        Some(t) => Ok(Json(timeline(&t))),
        None => Err(SagaError::NotFound(id).into()),
    }
}

async fn act(
    State(engine): State<SagaEngine>,
    Path((id, action)): Path<(String, String)>,
    body: Result<Json<ActBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), Failure> {
    let Json(body) = body.map_err(|e| bad_request(e.body_text()))?;
    if body.actor.trim().is_empty() {
        return Err(bad_request("`actor` (who acts) is required"));
    }
    let actor = body.actor;
    match action.as_str() {
        "cancel" => engine.cancel(&id, body.reason, actor).await?,
        "pause" => engine.pause(&id, actor).await?,
        "resume" => engine.resume(&id, actor).await?,
        "retry" => engine.retry_stuck_by_id(&id, actor, false).await?,
        "skip" => engine.retry_stuck_by_id(&id, actor, true).await?,
        "resolve" => engine.resolve(&id, body.note, actor).await?,
        other => {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no action `{other}` (one of: cancel, pause, resume, retry, skip, resolve)"
                ),
            ));
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "saga_id": id, "action": action })),
    ))
}
