//! [`IdempotencyService`]: runs a keyed request once, replays its stored response to repeats.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use staunch_core::BoxError;
use tower_service::Service;

use crate::body::IdempotencyBody;
use crate::config::{Idempotency, Oversized, Settings};
use crate::key::{KeyError, parse_key};
use crate::record::{Fingerprint, Outcome, StoredResponse};
use crate::scope::{KeyScope, scoped_key};
use crate::store::{Begin, Claim, IdempotencyStore, StoreError};

/// The header set on a replayed response.
pub const REPLAYED: http::HeaderName = http::HeaderName::from_static("idempotent-replayed");

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
/// The request body type must be buildable from `Bytes` (axum's `Body`, `Full<Bytes>`), since
/// the layer reads the body to fingerprint it and hands the handler a copy; a hyper server
/// maps `Incoming` first (e.g. to `axum::body::Body`).
///
/// # Cancel safety
///
/// A request dropped before its response is stored (client gone) frees its key from a
/// spawned task, so a retry runs it again; without a runtime the mark lapses with its lease.
#[derive(Debug, Clone)]
pub struct IdempotencyService<S, St, Sc> {
    inner: S,
    store: St,
    settings: Idempotency,
    scope: Sc,
}

impl<S, St, Sc> IdempotencyService<S, St, Sc> {
    /// Wraps `inner`.
    pub fn new(inner: S, store: St, settings: Idempotency, scope: Sc) -> Self {
        IdempotencyService {
            inner,
            store,
            settings,
            scope,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, St, Sc, ReqB, ResB> Service<Request<ReqB>> for IdempotencyService<S, St, Sc>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    St: IdempotencyStore,
    Sc: KeyScope,
    ReqB: Body + From<Bytes> + Send + 'static,
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
        Box::pin(handle(inner, store, settings, scope, req))
    }
}

async fn handle<S, St, Sc, ReqB, ResB>(
    mut inner: S,
    store: St,
    settings: Idempotency,
    scope: Sc,
    req: Request<ReqB>,
) -> Result<Response<IdempotencyBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    St: IdempotencyStore,
    Sc: KeyScope,
    ReqB: Body + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Unpin,
    ResB::Error: Into<BoxError>,
{
    let s = &*settings.inner;
    let (mut parts, body) = req.into_parts();
    let key = {
        let mut values = parts.headers.get_all(&s.header).iter();
        match (values.next(), values.next()) {
            (None, _) if !s.require_key => {
                let req = Request::from_parts(parts, body);
                let response = inner.call(req).await?;
                return Ok(response.map(|b| IdempotencyBody::inner(Bytes::new(), b)));
            }
            (None, _) => return Ok(bad_key(KeyError::Missing)),
            (Some(_), Some(_)) => return Ok(bad_key(KeyError::Repeated)),
            (Some(value), None) => match parse_key(value.as_bytes(), s.max_key_len) {
                Ok(key) => key,
                Err(e) => return Ok(bad_key(e)),
            },
        }
    };
    let Some(scope) = scope.scope(&parts) else {
        return Ok(refusal(
            StatusCode::BAD_REQUEST,
            "this request has no idempotency scope (e.g. no tenant or user)",
        ));
    };
    let (body, digest_input) = if s.fingerprint.body {
        match Limited::new(body, s.max_request_body).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                (ReqB::from(bytes.clone()), bytes)
            }
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Ok(refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is larger than this server fingerprints",
                ));
            }
            Err(_) => {
                return Ok(refusal(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                ));
            }
        }
    } else {
        (body, Bytes::new())
    };
    let fingerprint = Fingerprint::of(s.fingerprint, &parts.method, &parts.uri, &digest_input);
    drop(digest_input);
    let claim = Claim::new(scoped_key(&scope, &key), fingerprint, s.ttl);

    if let Some(answer) = begin(&store, s, &claim).await {
        return Ok(answer);
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
    if !s.store_policy.stores(response.status()) {
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
    loop {
        let frame: Option<Result<_, BoxError>> = body.frame().await.map(|r| r.map_err(Into::into));
        match frame {
            None => break,
            Some(Ok(frame)) => {
                // Trailers are not stored; data frames are.
                if let Ok(data) = frame.into_data() {
                    buffer.extend_from_slice(&data);
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
    let mut stored = StoredResponse::new(head.status, body.clone());
    for name in &s.stored_headers {
        for value in head.headers.get_all(name) {
            stored.headers.append(name.clone(), value.clone());
        }
    }
    guard.finish(s, &Outcome::Stored(stored)).await;
    Ok(Response::from_parts(head, IdempotencyBody::full(body)))
}

/// Marks the key in flight, or answers in the handler's place.
async fn begin<St: IdempotencyStore, B>(
    store: &St,
    s: &Settings,
    claim: &Claim,
) -> Option<Response<IdempotencyBody<B>>> {
    let deadline = staunch_core::instant_after(tokio::time::Instant::now(), s.in_flight_wait);
    // Polls while waiting; a tenth of the wait, between 1 ms and 50 ms.
    let poll = (s.in_flight_wait / 10).clamp(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(50),
    );
    loop {
        let found = match store.begin(claim, s.lease).await {
            Ok(found) => found,
            Err(e) => return Some(store_failed(s, claim, &e)),
        };
        return Some(match found {
            Begin::Started => return None,
            Begin::InFlight { fingerprint } | Begin::Finished { fingerprint, .. }
                if fingerprint != claim.fingerprint() =>
            {
                refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this Idempotency-Key was used for a different request",
                )
            }
            Begin::InFlight { .. } => {
                let now = tokio::time::Instant::now();
                if now < deadline {
                    tokio::time::sleep_until(deadline.min(now + poll)).await;
                    continue;
                }
                refusal(
                    StatusCode::CONFLICT,
                    "a request with this Idempotency-Key is still being processed",
                )
            }
            Begin::Finished {
                outcome: Outcome::Stored(stored),
                ..
            } => replay(stored),
            Begin::Finished {
                outcome: Outcome::NotStored { .. },
                ..
            } => refusal(
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key was processed, but its response was too large to keep",
            ),
        });
    }
}

fn replay<B>(stored: StoredResponse) -> Response<IdempotencyBody<B>> {
    let mut response = Response::new(IdempotencyBody::full(stored.body));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

fn store_failed<B>(s: &Settings, claim: &Claim, e: &StoreError) -> Response<IdempotencyBody<B>> {
    if let StoreError::Corrupt { .. } = e {
        tracing::error!(key = claim.key(), error = %e, "damaged idempotency record");
        return refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stored record for this Idempotency-Key is damaged",
        );
    }
    tracing::warn!(key = claim.key(), error = %e, "idempotency store failed; request refused");
    let mut response = refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "the idempotency store is unavailable; retry later",
    );
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, s.retry_after.clone());
    response
}

fn bad_key<B>(e: KeyError) -> Response<IdempotencyBody<B>> {
    refusal(StatusCode::BAD_REQUEST, e.reason())
}

fn refusal<B>(status: StatusCode, reason: &'static str) -> Response<IdempotencyBody<B>> {
    let mut response = Response::new(IdempotencyBody::full(Bytes::from_static(reason.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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
                metrics::counter!("staunch_idempotency_lease_lost_total").increment(1);
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
