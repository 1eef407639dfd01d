//! [`IdempotencyService`]: runs a keyed request once, replays its stored response to repeats.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use staunch_core::BoxError;
use tower_service::Service;

use crate::body::IdempotencyBody;
use crate::config::{Idempotency, Oversized, Settings};
use crate::key::{KeyError, parse_key};
use crate::rebuild::{RebuildBody, ViaFrom};
use crate::record::{
    Fingerprint, GRPC_CONTENT_TYPE, GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS, Outcome,
    StoredResponse, grpc_message,
};
use crate::scope::{KeyScope, scoped_key};
use crate::store::{Begin, Claim, IdempotencyStore, StoreError};

/// The header set on a replayed response (response metadata, over gRPC).
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a gRPC client should wait before retrying, sent with `UNAVAILABLE` when the
/// store fails (the gRPC analogue of `Retry-After`).
const RETRY_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The response future of [`IdempotencyService`]: boxed, since it awaits the store (a
/// database round trip dwarfs the allocation).
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<IdempotencyBody<B>>, E>> + Send>>;

/// Runs the first request with each key, stores its response and replays it to repeats.
///
/// Answers without calling the handler:
/// - the stored response to a repeat with the same fingerprint, marked
///   `idempotent-replayed: true`;
/// - 422 to a key reused with another fingerprint (method, path, query, body);
/// - 409 to a repeat while the first is in flight (after waiting up to `in_flight_wait`), or
///   whose first response was too large to store ([`Oversized::RefuseRepeats`]);
/// - 400 to a missing key where one is required, a repeated header, or a key that is empty,
///   too long or not printable ASCII, with the reason in the body;
/// - 413 to a request body over `max_request_body` (when the fingerprint covers the body);
/// - 503 with `Retry-After` when the store fails: a request is never run without its mark;
/// - 500 when the stored record is damaged (logged, with the key).
///
/// Requests without a key (where not required) pass straight to the handler.
///
/// # gRPC
///
/// A request whose `content-type` is `application/grpc` (or `application/grpc+proto`, ...)
/// is a gRPC call: its key is the `idempotency-key` metadata (the same header), its
/// fingerprint the method path and the digest of its framed request messages (the method is
/// always POST, with no query), and the layer's answers are trailers-only gRPC replies with
/// the reason in `grpc-message`:
///
/// | HTTP answer | gRPC status |
/// |---|---|
/// | 422, key reused for another call | `INVALID_ARGUMENT` (3) |
/// | 409, the first call still in flight | `ABORTED` (10): retry later |
/// | 409, the first reply was too large to keep | `FAILED_PRECONDITION` (9) |
/// | 400, bad or missing key, no scope | `INVALID_ARGUMENT` (3) |
/// | 413, request over `max_request_body` | `RESOURCE_EXHAUSTED` (8) |
/// | 503, store failing | `UNAVAILABLE` (14), with `grpc-retry-pushback-ms` |
/// | 500, damaged record | `DATA_LOSS` (15) |
///
/// The reply is stored with its trailers (`grpc-status`, `grpc-message`, custom trailing
/// metadata) and, besides `stored_headers`, its `content-type` and `grpc-status` family
/// headers (a trailers-only reply carries its status there); which codes are stored is
/// [`StorePolicy::stores_grpc`](crate::StorePolicy::stores_grpc). A stored reply is
/// buffered whole before it is sent, so this suits unary calls (and short server streams).
///
/// The request body type must be buildable from `Bytes` (axum's `Body`, `Full<Bytes>`), since
/// the layer reads the body to fingerprint it and hands the handler a copy; a hyper server
/// maps `Incoming` first (e.g. to `axum::body::Body`), and a tonic server rebuilds its own
/// body with [`IdempotencyLayer::rebuild_body`](crate::IdempotencyLayer::rebuild_body).
///
/// # Cancel safety
///
/// A request dropped before its response is stored (client gone) frees its key from a
/// spawned task, so a retry runs it again; without a runtime the mark lapses with its lease.
#[derive(Debug, Clone)]
pub struct IdempotencyService<S, St, Sc, R = ViaFrom> {
    inner: S,
    store: St,
    settings: Idempotency,
    scope: Sc,
    rebuild: R,
}

impl<S, St, Sc> IdempotencyService<S, St, Sc> {
    /// Wraps `inner`.
    pub fn new(inner: S, store: St, settings: Idempotency, scope: Sc) -> Self {
        IdempotencyService {
            inner,
            store,
            settings,
            scope,
            rebuild: ViaFrom,
        }
    }
}

impl<S, St, Sc, R> IdempotencyService<S, St, Sc, R> {
    /// Hands the handler the request body the layer read through `rebuild` (see
    /// [`RebuildBody`]).
    pub fn rebuild_body<R2>(self, rebuild: R2) -> IdempotencyService<S, St, Sc, R2> {
        IdempotencyService {
            inner: self.inner,
            store: self.store,
            settings: self.settings,
            scope: self.scope,
            rebuild,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, St, Sc, R, ReqB, ResB> Service<Request<ReqB>> for IdempotencyService<S, St, Sc, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    St: IdempotencyStore,
    Sc: KeyScope,
    R: RebuildBody<ReqB>,
    ReqB: Body + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<IdempotencyBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The ready service handles this request; the clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        let settings = self.settings.clone();
        let scope = self.scope.clone();
        let rebuild = self.rebuild.clone();
        Box::pin(handle(inner, store, settings, scope, rebuild, req))
    }
}

async fn handle<S, St, Sc, R, ReqB, ResB>(
    mut inner: S,
    store: St,
    settings: Idempotency,
    scope: Sc,
    rebuild: R,
    req: Request<ReqB>,
) -> Result<Response<IdempotencyBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    St: IdempotencyStore,
    Sc: KeyScope,
    R: RebuildBody<ReqB>,
    ReqB: Body,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin,
    ResB::Error: Into<BoxError>,
{
    let s = &*settings.inner;
    let (mut parts, body) = req.into_parts();
    let grpc = is_grpc(&parts.headers);
    let refuse = |r: Refusal| r.response(s, grpc);
    let key = {
        let mut values = parts.headers.get_all(&s.header).iter();
        match (values.next(), values.next()) {
            (None, _) if !s.require_key => {
                let req = Request::from_parts(parts, body);
                let response = inner.call(req).await?;
                return Ok(response.map(|b| IdempotencyBody::inner(Bytes::new(), b)));
            }
            (None, _) => return Ok(refuse(Refusal::BadKey(KeyError::Missing))),
            (Some(_), Some(_)) => return Ok(refuse(Refusal::BadKey(KeyError::Repeated))),
            (Some(value), None) => match parse_key(value.as_bytes(), s.max_key_len) {
                Ok(key) => key,
                Err(e) => return Ok(refuse(Refusal::BadKey(e))),
            },
        }
    };
    let Some(scope) = scope.scope(&parts) else {
        return Ok(refuse(Refusal::NoScope));
    };
    let (body, digest_input) = if s.fingerprint.body {
        match Limited::new(body, s.max_request_body).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                (rebuild.rebuild(bytes.clone()), bytes)
            }
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Ok(refuse(Refusal::BodyTooLarge));
            }
            Err(_) => return Ok(refuse(Refusal::BodyUnreadable)),
        }
    } else {
        (body, Bytes::new())
    };
    let fingerprint = Fingerprint::of(s.fingerprint, &parts.method, &parts.uri, &digest_input);
    drop(digest_input);
    let claim = Claim::new(scoped_key(&scope, &key), fingerprint, s.ttl);

    if let Err(refusal) = begin(&store, s, &claim).await {
        return Ok(match refusal {
            Answer::Replay(stored) => replay(stored),
            Answer::Refuse(r) => refuse(r),
        });
    }
    let mut guard = ReleaseOnDrop {
        store: Some(store),
        claim,
    };
    parts.extensions.insert(guard.claim.clone());
    let response = match inner.call(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(e) => {
            guard.release().await;
            return Err(e);
        }
    };
    // A trailers-only gRPC reply (an error, as tonic sends a `Status`) has its code here.
    let header_code = grpc_code(response.headers());
    if !stores(s, response.status(), header_code) {
        guard.release().await;
        return Ok(response.map(|b| IdempotencyBody::inner(Bytes::new(), b)));
    }
    if guard.claim.is_recorded() {
        // The handler recorded this reply in its own transaction (`finish_in`): nothing left
        // to write, and nothing to buffer.
        guard.disarm();
        return Ok(response.map(|b| IdempotencyBody::inner(Bytes::new(), b)));
    }
    let (head, mut body) = response.into_parts();
    let mut buffer = BytesMut::new();
    let mut trailers = HeaderMap::new();
    loop {
        let frame: Option<Result<_, BoxError>> = body.frame().await.map(|r| r.map_err(Into::into));
        match frame {
            None => break,
            Some(Ok(frame)) => {
                match frame.into_data() {
                    Ok(data) => buffer.extend_from_slice(&data),
                    Err(frame) => {
                        if let Ok(more) = frame.into_trailers() {
                            trailers.extend(more);
                        }
                    }
                }
                if buffer.len() > s.max_stored_body {
                    let status = head.status;
                    match s.oversized {
                        Oversized::RefuseRepeats => {
                            guard.finish(s, &Outcome::NotStored { status }).await;
                        }
                        Oversized::Reprocess => guard.release().await,
                    }
                    let body = IdempotencyBody::inner(buffer.freeze(), body);
                    return Ok(Response::from_parts(head, body));
                }
            }
            Some(Err(e)) => {
                // The handler ran but its answer broke: nothing to replay, so the key is
                // free for a retry.
                guard.release().await;
                let body = IdempotencyBody::failed(buffer.freeze(), e);
                return Ok(Response::from_parts(head, body));
            }
        }
    }
    let body = buffer.freeze();
    // A gRPC reply's code usually comes last, in its trailers.
    let code = header_code.or_else(|| grpc_code(&trailers));
    if !stores(s, head.status, code) {
        guard.release().await;
        let body = IdempotencyBody::full_with_trailers(body, trailers);
        return Ok(Response::from_parts(head, body));
    }
    let mut stored = StoredResponse::new(head.status, body.clone());
    let is_grpc_reply = code.is_some() || is_grpc(&head.headers);
    for name in &s.stored_headers {
        for value in head.headers.get_all(name) {
            stored.headers.append(name.clone(), value.clone());
        }
    }
    if is_grpc_reply {
        for name in [CONTENT_TYPE, GRPC_STATUS, GRPC_MESSAGE, GRPC_STATUS_DETAILS] {
            if !s.stored_headers.contains(&name) {
                for value in head.headers.get_all(&name) {
                    stored.headers.append(name.clone(), value.clone());
                }
            }
        }
    }
    stored.trailers = trailers.clone();
    guard.finish(s, &Outcome::Stored(stored)).await;
    let body = IdempotencyBody::full_with_trailers(body, trailers);
    Ok(Response::from_parts(head, body))
}

/// Whether these headers say gRPC (`application/grpc`, `application/grpc+proto`, ...).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(GRPC_CONTENT_TYPE))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
}

/// The `grpc-status` in these headers or trailers; one that is not a number reads as
/// `UNKNOWN` (2).
fn grpc_code(headers: &HeaderMap) -> Option<i32> {
    let value = headers.get(GRPC_STATUS)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(2),
    )
}

/// Whether the policy stores a response with this status and, for gRPC, this code.
fn stores(s: &Settings, status: StatusCode, grpc_code: Option<i32>) -> bool {
    s.store_policy.stores(status) && grpc_code.is_none_or(|code| s.store_policy.stores_grpc(code))
}

/// Why the layer answers in the handler's place.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    BadKey(KeyError),
    NoScope,
    BodyTooLarge,
    BodyUnreadable,
    Mismatch,
    InFlight,
    NotKept,
    StoreFailed,
    Damaged,
}

/// What [`begin`] found instead of a free key.
// Moved once, straight into the answer.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Replay(StoredResponse),
    Refuse(Refusal),
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::BadKey(_) | Refusal::NoScope | Refusal::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Mismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::InFlight | Refusal::NotKept => StatusCode::CONFLICT,
            Refusal::StoreFailed => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Damaged => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code (see [`IdempotencyService`]'s table).
    fn grpc_code(self) -> i32 {
        match self {
            Refusal::BadKey(_) | Refusal::NoScope | Refusal::BodyUnreadable | Refusal::Mismatch => {
                3
            }
            Refusal::BodyTooLarge => 8,
            Refusal::InFlight => 10,
            Refusal::NotKept => 9,
            Refusal::StoreFailed => 14,
            Refusal::Damaged => 15,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::BadKey(e) => e.reason(),
            Refusal::NoScope => "this request has no idempotency scope (e.g. no tenant or user)",
            Refusal::BodyTooLarge => "the request body is larger than this server fingerprints",
            Refusal::BodyUnreadable => "the request body could not be read",
            Refusal::Mismatch => "this Idempotency-Key was used for a different request",
            Refusal::InFlight => "a request with this Idempotency-Key is still being processed",
            Refusal::NotKept => {
                "a request with this Idempotency-Key was processed, but its response was too large to keep"
            }
            Refusal::StoreFailed => "the idempotency store is unavailable; retry later",
            Refusal::Damaged => "the stored record for this Idempotency-Key is damaged",
        }
    }

    /// The answer: plain text over HTTP, a trailers-only reply over gRPC.
    fn response<B>(self, s: &Settings, grpc: bool) -> Response<IdempotencyBody<B>> {
        let mut response = if grpc {
            let mut response = Response::new(IdempotencyBody::full(Bytes::new()));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
            headers.insert(GRPC_STATUS, HeaderValue::from(self.grpc_code()));
            headers.insert(GRPC_MESSAGE, grpc_message(self.reason()));
            response
        } else {
            let reason = Bytes::from_static(self.reason().as_bytes());
            let mut response = Response::new(IdempotencyBody::full(reason));
            *response.status_mut() = self.status();
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        };
        if let Refusal::StoreFailed = self {
            let headers = response.headers_mut();
            if grpc {
                headers.insert(RETRY_PUSHBACK, s.retry_pushback_ms.clone());
            } else {
                headers.insert(http::header::RETRY_AFTER, s.retry_after.clone());
            }
        }
        response
    }
}

/// Marks the key in flight, or says what to answer in the handler's place.
async fn begin<St: IdempotencyStore>(
    store: &St,
    s: &Settings,
    claim: &Claim,
) -> Result<(), Answer> {
    let deadline = staunch_core::instant_after(tokio::time::Instant::now(), s.in_flight_wait);
    // Polls while waiting; a tenth of the wait, between 1 ms and 50 ms.
    let poll = (s.in_flight_wait / 10).clamp(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(50),
    );
    loop {
        let found = match store.begin(claim, s.lease).await {
            Ok(found) => found,
            Err(e) => return Err(Answer::Refuse(store_failed(claim, &e))),
        };
        return Err(match found {
            Begin::Started => return Ok(()),
            Begin::InFlight { fingerprint } | Begin::Finished { fingerprint, .. }
                if fingerprint != claim.fingerprint() =>
            {
                Answer::Refuse(Refusal::Mismatch)
            }
            Begin::InFlight { .. } => {
                let now = tokio::time::Instant::now();
                if now < deadline {
                    tokio::time::sleep_until(deadline.min(now + poll)).await;
                    continue;
                }
                Answer::Refuse(Refusal::InFlight)
            }
            Begin::Finished {
                outcome: Outcome::Stored(stored),
                ..
            } => Answer::Replay(stored),
            Begin::Finished {
                outcome: Outcome::NotStored { .. },
                ..
            } => Answer::Refuse(Refusal::NotKept),
        });
    }
}

fn replay<B>(stored: StoredResponse) -> Response<IdempotencyBody<B>> {
    let mut response = Response::new(IdempotencyBody::full_with_trailers(
        stored.body,
        stored.trailers,
    ));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

fn store_failed(claim: &Claim, e: &StoreError) -> Refusal {
    if let StoreError::Corrupt { .. } = e {
        tracing::error!(key = claim.key(), error = %e, "damaged idempotency record");
        return Refusal::Damaged;
    }
    tracing::warn!(key = claim.key(), error = %e, "idempotency store failed; request refused");
    Refusal::StoreFailed
}

/// Frees the claim's key unless the request finished: on an error, a response not stored, or
/// when the request's future is dropped midway (then from a spawned task).
struct ReleaseOnDrop<St: IdempotencyStore> {
    store: Option<St>,
    claim: Claim,
}

impl<St: IdempotencyStore> ReleaseOnDrop<St> {
    async fn release(&mut self) {
        if let Some(store) = self.store.take()
            && let Err(e) = store.release(&self.claim).await
        {
            // The mark lapses with its lease.
            tracing::warn!(key = self.claim.key(), error = %e, "could not free an idempotency key");
        }
    }

    /// The handler recorded the outcome itself: nothing to finish or free.
    fn disarm(&mut self) {
        self.store = None;
    }

    async fn finish(&mut self, s: &Settings, outcome: &Outcome) {
        let Some(store) = self.store.take() else {
            return;
        };
        match store.finish(&self.claim, outcome, s.ttl).await {
            Ok(()) => {}
            Err(StoreError::LeaseLost { .. }) => {
                // The handler outran its lease and another request took the key over: both
                // ran. The client still gets this response; the record is the other one's.
                tracing::warn!(
                    key = self.claim.key(),
                    lease = ?s.lease,
                    "idempotency lease lost before the response was stored: the key was taken over, so this request may have run twice; make the lease longer than the slowest handler"
                );
                #[cfg(feature = "metrics")]
                metrics::counter!(staunch_core::telemetry::metric::IDEMPOTENCY_LEASES_LOST)
                    .increment(1);
            }
            Err(e) => {
                // The request ran; its mark stays in flight until the lease ends, so repeats
                // get 409 meanwhile rather than a second run at once.
                tracing::error!(key = self.claim.key(), error = %e, "could not store an idempotent response");
            }
        }
    }
}

impl<St: IdempotencyStore> Drop for ReleaseOnDrop<St> {
    fn drop(&mut self) {
        if let Some(store) = self.store.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let claim = self.claim.clone();
            runtime.spawn(async move {
                let _ = store.release(&claim).await;
            });
        }
    }
}
