//! What is retried: [`RetryClassify`], its [`Verdict`]s and the default classifier [`RetryOn`].

use std::error::Error;
use std::fmt;
use std::io;
use std::time::Duration;

use http::{Extensions, HeaderMap, StatusCode};
use staunch_core::HttpStatus;
use staunch_timeout::Elapsed;

use crate::BoxError;
use crate::hints::{self, Pushback};
use crate::metrics::GiveUp;

/// What to do with a finished attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Return this result: a success, or a failure that retrying will not fix.
    Done,
    /// Retry after the policy's backoff, if the policy allows another attempt.
    Retry,
    /// Retry after the server's hint (capped by the policy's `max_retry_after`).
    RetryAfter(Duration),
    /// The server asked not to retry (e.g. a negative `grpc-retry-pushback-ms`): return this
    /// result now.
    DoNotRetry,
}

impl Verdict {
    /// `true` for [`Retry`](Verdict::Retry) and [`RetryAfter`](Verdict::RetryAfter).
    pub const fn is_retry(self) -> bool {
        matches!(self, Verdict::Retry | Verdict::RetryAfter(_))
    }
}

/// Decides whether a finished attempt is retried.
///
/// Errors arrive boxed (the layer's error type is `tower::BoxError`); look inside with
/// `err.downcast_ref::<T>()` or walk `source()`. Whatever the classifier says, a
/// [`BreakerOpen`](staunch_core::BreakerOpen) or [`BulkheadFull`](staunch_core::BulkheadFull)
/// rejection anywhere in an error's source chain is never retried.
///
/// ```
/// use staunch_retry::{retry_fn, RetryClassify, Verdict};
///
/// // Retry every error, never a response.
/// let c = retry_fn(|r: Result<&u32, &staunch_retry::BoxError>| match r {
///     Ok(_) => Verdict::Done,
///     Err(_) => Verdict::Retry,
/// });
/// assert_eq!(c.classify(Ok(&1)), Verdict::Done);
/// ```
pub trait RetryClassify<Res> {
    /// Classifies one attempt's result.
    fn classify(&self, result: Result<&Res, &BoxError>) -> Verdict;

    /// Marks a retryable response returned after giving up (a final 503), as an error is
    /// wrapped in [`RetryExhausted`](crate::RetryExhausted); called only when the give-up is
    /// annotated (see that type for when).
    ///
    /// The default does nothing. [`RetryOn`] inserts `give_up` into the response's
    /// extensions ([`RetryResponse::extensions_mut`]: `http::Response`, `reqwest::Response`),
    /// where `response.extensions().get::<GiveUp>()` finds it. A classifier of your own,
    /// [`retry_fn`] included, leaves responses untouched unless it overrides this method.
    #[inline]
    fn annotate(&self, response: &mut Res, give_up: GiveUp) {
        let _ = (response, give_up);
    }
}

/// What the default classifier [`RetryOn`] can see of a response: its status and headers.
///
/// Implemented for `http::Response<B>`, `reqwest::Response` (feature `reqwest`) and, with no
/// status at all (so only errors are retried), for common plain types. Implement it for your
/// own response type in one line: `impl staunch_retry::RetryResponse for MyResponse {}`.
pub trait RetryResponse {
    /// The HTTP status, if the response has one.
    #[inline]
    fn status(&self) -> Option<StatusCode> {
        None
    }

    /// The headers (for `Retry-After`, `grpc-status`, `grpc-retry-pushback-ms`), if any.
    #[inline]
    fn headers(&self) -> Option<&HeaderMap> {
        None
    }

    /// The extensions, where [`RetryOn`] records a [`GiveUp`] on a retryable response
    /// returned after giving up, if the response has any.
    #[inline]
    fn extensions_mut(&mut self) -> Option<&mut Extensions> {
        None
    }
}

impl<B> RetryResponse for http::Response<B> {
    fn status(&self) -> Option<StatusCode> {
        Some(http::Response::status(self))
    }

    fn headers(&self) -> Option<&HeaderMap> {
        Some(http::Response::headers(self))
    }

    fn extensions_mut(&mut self) -> Option<&mut Extensions> {
        Some(http::Response::extensions_mut(self))
    }
}

#[cfg(feature = "reqwest")]
impl RetryResponse for reqwest::Response {
    fn status(&self) -> Option<StatusCode> {
        Some(reqwest::Response::status(self))
    }

    fn headers(&self) -> Option<&HeaderMap> {
        Some(reqwest::Response::headers(self))
    }

    fn extensions_mut(&mut self) -> Option<&mut Extensions> {
        Some(reqwest::Response::extensions_mut(self))
    }
}

macro_rules! plain_responses {
    ($($t:ty),* $(,)?) => { $(impl RetryResponse for $t {})* };
}
plain_responses!(
    (),
    bool,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    String,
    bytes::Bytes
);
impl<T> RetryResponse for Vec<T> {}
#[cfg(feature = "tonic")]
impl<T> RetryResponse for tonic::Response<T> {}
impl<T> RetryResponse for Option<T> {}

/// gRPC `UNAVAILABLE`.
/// Looked up on every response: a `HeaderName` is found without parsing the name first, as
/// a `&str` key would be.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

const GRPC_UNAVAILABLE: u32 = 14;
/// gRPC `RESOURCE_EXHAUSTED`.
const GRPC_RESOURCE_EXHAUSTED: u32 = 8;

/// The default classifier: retries what a retry can plausibly fix.
///
/// - **Errors**: connection failures and timeouts: a staunch [`Elapsed`], an `io::Error` of a
///   connection kind (refused, reset, aborted, not connected, broken pipe, timed out) anywhere
///   in the source chain, with the `reqwest` feature a `reqwest::Error` that `is_connect()`
///   or `is_timeout()`, and with the `hyper` feature (which `reqwest` enables) a
///   `hyper::Error` that `is_incomplete_message()` anywhere in the chain. Other errors (a bad
///   URL, a body that failed to decode) are not retried.
/// - **A connection closed without an answer is a reset**: a server that closes the
///   connection before answering (hyper's "connection closed before message completed") is
///   retried like one that resets it, for the requests that may be retried at all (idempotent
///   methods, or an `Idempotency-Key`; see [`RetryRequest`](crate::RetryRequest)), as Envoy's
///   and Istio's `reset` condition does; the check is hyper's typed
///   `is_incomplete_message()`, never the message text.
/// - **HTTP responses**: 502, 503, 504 and 429, honouring `Retry-After`.
/// - **gRPC responses** (seen as HTTP responses by a layer around a channel): a `grpc-status`
///   header of `UNAVAILABLE` or `RESOURCE_EXHAUSTED`, honouring `grpc-retry-pushback-ms`
///   (a negative or malformed value means "do not retry"). Only trailers-only responses carry
///   `grpc-status` in the headers, which is how servers send errors without a body; a status
///   that arrives in trailers after a body is not seen.
/// - **gRPC errors** (feature `tonic`): a `tonic::Status` with one of those codes, anywhere in
///   the error's source chain, honouring `grpc-retry-pushback-ms` in its metadata. This is the
///   path of [`RetryPolicy::retry`](crate::RetryPolicy::retry) around a generated client.
///
/// ```
/// use http::StatusCode;
/// use staunch_retry::{RetryClassify, RetryOn, Verdict};
///
/// let c = RetryOn::new();
/// let res = |s: u16| http::Response::builder().status(s).body(()).unwrap();
/// assert_eq!(c.classify(Ok(&res(503))), Verdict::Retry);
/// assert_eq!(c.classify(Ok(&res(500))), Verdict::Done);
/// let c = RetryOn::new().status(StatusCode::INTERNAL_SERVER_ERROR);
/// assert_eq!(c.classify(Ok(&res(500))), Verdict::Retry);
/// ```
#[derive(Clone, Copy)]
pub struct RetryOn {
    statuses: HttpStatus,
    grpc_codes: u32,
    errors: fn(&(dyn Error + 'static)) -> bool,
}

impl fmt::Debug for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryOn")
            .field("statuses", &self.statuses)
            .field("grpc_codes", &format_args!("{:#b}", self.grpc_codes))
            .finish_non_exhaustive()
    }
}

impl Default for RetryOn {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryOn {
    /// The defaults described on the type.
    pub fn new() -> Self {
        Self {
            statuses: HttpStatus::empty()
                .failure(StatusCode::BAD_GATEWAY)
                .failure(StatusCode::SERVICE_UNAVAILABLE)
                .failure(StatusCode::GATEWAY_TIMEOUT)
                .failure(StatusCode::TOO_MANY_REQUESTS),
            grpc_codes: (1 << GRPC_UNAVAILABLE) | (1 << GRPC_RESOURCE_EXHAUSTED),
            errors: is_transient,
        }
    }

    /// Also retries responses with `status`.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.statuses = self.statuses.failure(status);
        self
    }

    /// No longer retries responses with `status` (e.g. 429 when the server's quota is daily).
    pub fn not_status(mut self, status: StatusCode) -> Self {
        self.statuses = self.statuses.not_failure(status);
        self
    }

    /// Also retries responses whose `grpc-status` header is `code` (gRPC codes are 0 to 16;
    /// values above 31 never match and are ignored).
    pub fn grpc_code(mut self, code: u8) -> Self {
        if code < 32 {
            self.grpc_codes |= 1 << code;
        }
        self
    }

    /// Replaces the rule for errors: `f` sees the boxed error and says whether to retry it.
    /// Rejections are still never retried.
    pub fn errors(mut self, f: fn(&(dyn Error + 'static)) -> bool) -> Self {
        self.errors = f;
        self
    }

    fn error(&self, err: &(dyn Error + 'static)) -> Verdict {
        #[cfg(feature = "tonic")]
        if let Some(status) = find::<tonic::Status>(err) {
            let code = status.code() as u32;
            if code >= 32 || self.grpc_codes & (1 << code) == 0 {
                return Verdict::Done;
            }
            let pushback = status
                .metadata()
                .get(hints::GRPC_RETRY_PUSHBACK_MS)
                .map(|v| v.to_str().ok().and_then(|t| t.trim().parse::<i64>().ok()));
            return match pushback {
                None => Verdict::Retry,
                Some(Some(ms)) if ms >= 0 => {
                    Verdict::RetryAfter(Duration::from_millis(ms.unsigned_abs()))
                }
                Some(_) => Verdict::DoNotRetry,
            };
        }
        if (self.errors)(err) {
            Verdict::Retry
        } else {
            Verdict::Done
        }
    }

    fn response(&self, status: Option<StatusCode>, headers: Option<&HeaderMap>) -> Verdict {
        if let Some(status) = status
            && self.statuses.is_failure(status)
        {
            return match headers.and_then(hints::retry_after) {
                Some(after) => Verdict::RetryAfter(after),
                None => Verdict::Retry,
            };
        }
        if let Some(headers) = headers
            && let Some(code) = headers.get(&GRPC_STATUS)
            && let Some(code) = code.to_str().ok().and_then(|c| c.parse::<u32>().ok())
            && code < 32
            && self.grpc_codes & (1 << code) != 0
        {
            return match hints::grpc_pushback(headers) {
                Some(Pushback::After(after)) => Verdict::RetryAfter(after),
                Some(Pushback::DoNotRetry) => Verdict::DoNotRetry,
                None => Verdict::Retry,
            };
        }
        Verdict::Done
    }
}

impl<Res: RetryResponse> RetryClassify<Res> for RetryOn {
    #[inline]
    fn classify(&self, result: Result<&Res, &BoxError>) -> Verdict {
        match result {
            Ok(res) => match (res.status(), res.headers()) {
                (None, None) => Verdict::Done,
                (status, headers) => self.response(status, headers),
            },
            Err(err) => self.error(&**err),
        }
    }

    /// Inserts `give_up` into the response's extensions, if it has any.
    fn annotate(&self, response: &mut Res, give_up: GiveUp) {
        if let Some(extensions) = response.extensions_mut() {
            extensions.insert(give_up);
        }
    }
}

/// The first error of type `E` in `err`'s source chain.
#[cfg(feature = "tonic")]
fn find<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The default error rule of [`RetryOn`]: is `err` (or anything in its source chain) a
/// connection failure or a timeout?
pub fn is_transient(err: &(dyn Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<Elapsed>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        #[cfg(feature = "reqwest")]
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && (r.is_connect() || r.is_timeout())
        {
            return true;
        }
        // The server closed the connection before a complete answer ("connection closed
        // before message completed"): for a request that may be retried at all (idempotent,
        // or with an `Idempotency-Key`), the same transient failure as a reset.
        #[cfg(feature = "hyper")]
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// A classifier made from a closure; build one with [`retry_fn`].
#[derive(Clone, Copy)]
pub struct RetryFn<F> {
    f: F,
}

impl<F> fmt::Debug for RetryFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryFn").finish_non_exhaustive()
    }
}

/// Makes a classifier from a closure over one attempt's result.
pub fn retry_fn<F>(f: F) -> RetryFn<F> {
    RetryFn { f }
}

impl<Res, F> RetryClassify<Res> for RetryFn<F>
where
    F: Fn(Result<&Res, &BoxError>) -> Verdict,
{
    fn classify(&self, result: Result<&Res, &BoxError>) -> Verdict {
        (self.f)(result)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn err(e: impl Error + Send + Sync + 'static) -> BoxError {
        Box::new(e)
    }

    #[test]
    fn default_errors() {
        let c = RetryOn::new();
        let r = |e: BoxError| RetryClassify::<u32>::classify(&c, Err(&e));
        assert_eq!(r(err(Elapsed::new(Duration::from_secs(1)))), Verdict::Retry);
        assert_eq!(
            r(err(io::Error::from(io::ErrorKind::ConnectionRefused))),
            Verdict::Retry
        );
        assert_eq!(
            r(err(io::Error::from(io::ErrorKind::InvalidData))),
            Verdict::Done
        );
        assert_eq!(r("a string error".into()), Verdict::Done);
    }

    #[test]
    fn default_statuses_and_hints() {
        let c = RetryOn::new();
        let res = |s: u16, h: &[(&str, &str)]| {
            let mut b = http::Response::builder().status(s);
            for (k, v) in h {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        for s in [502, 503, 504, 429] {
            assert_eq!(c.classify(Ok(&res(s, &[]))), Verdict::Retry, "{s}");
        }
        for s in [200, 400, 404, 500, 501] {
            assert_eq!(c.classify(Ok(&res(s, &[]))), Verdict::Done, "{s}");
        }
        assert_eq!(
            c.classify(Ok(&res(503, &[("retry-after", "2")]))),
            Verdict::RetryAfter(Duration::from_secs(2))
        );
        // Retry-After on a success is not a reason to retry.
        assert_eq!(
            c.classify(Ok(&res(200, &[("retry-after", "2")]))),
            Verdict::Done
        );
        assert_eq!(
            c.classify(Ok(&res(200, &[("grpc-status", "14")]))),
            Verdict::Retry
        );
        assert_eq!(
            c.classify(Ok(&res(200, &[("grpc-status", "8")]))),
            Verdict::Retry
        );
        assert_eq!(
            c.classify(Ok(&res(200, &[("grpc-status", "13")]))),
            Verdict::Done
        );
        assert_eq!(
            c.classify(Ok(&res(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")]
            ))),
            Verdict::DoNotRetry
        );
        assert_eq!(
            c.classify(Ok(&res(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "300")]
            ))),
            Verdict::RetryAfter(Duration::from_millis(300))
        );
    }

    #[test]
    fn custom_rules() {
        let c = RetryOn::new()
            .not_status(StatusCode::TOO_MANY_REQUESTS)
            .grpc_code(4)
            .errors(|_| true);
        let res = |s: u16, h: &[(&str, &str)]| {
            let mut b = http::Response::builder().status(s);
            for (k, v) in h {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        assert_eq!(c.classify(Ok(&res(429, &[]))), Verdict::Done);
        assert_eq!(
            c.classify(Ok(&res(200, &[("grpc-status", "4")]))),
            Verdict::Retry
        );
        let e: BoxError = "anything".into();
        assert_eq!(RetryClassify::<()>::classify(&c, Err(&e)), Verdict::Retry);
        let _ = Arc::new(c);
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn tonic_status_codes_and_pushback() {
        let c = RetryOn::new();
        let r = |e: BoxError| RetryClassify::<tonic::Response<()>>::classify(&c, Err(&e));
        assert_eq!(
            r(Box::new(tonic::Status::unavailable("down"))),
            Verdict::Retry
        );
        assert_eq!(
            r(Box::new(tonic::Status::resource_exhausted("quota"))),
            Verdict::Retry
        );
        assert_eq!(r(Box::new(tonic::Status::internal("bug"))), Verdict::Done);
        assert_eq!(
            r(Box::new(tonic::Status::invalid_argument("bad"))),
            Verdict::Done
        );
        let with_pushback = |v: &str| {
            let mut s = tonic::Status::unavailable("busy");
            s.metadata_mut()
                .insert(crate::hints::GRPC_RETRY_PUSHBACK_MS, v.parse().unwrap());
            Box::new(s) as BoxError
        };
        assert_eq!(
            r(with_pushback("200")),
            Verdict::RetryAfter(Duration::from_millis(200))
        );
        assert_eq!(r(with_pushback("-1")), Verdict::DoNotRetry);
        assert_eq!(
            RetryClassify::<tonic::Response<()>>::classify(&c, Ok(&tonic::Response::new(()))),
            Verdict::Done
        );
    }
}
