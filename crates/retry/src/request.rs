//! Which requests may be sent again: [`RetryRequest`], and the idempotency rule for HTTP.

use std::sync::Arc;

use http::{HeaderMap, Method};
use staunch_timeout::Deadline;

use crate::body::ReplayBody;

/// The header a client sets to make a non-idempotent request (a POST) safe to retry: the
/// server deduplicates requests carrying the same key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A request the retry layer can send again.
///
/// The layer copies the request *before* the first attempt (the inner service takes it by
/// value), but only when a retry is possible at all: when [`is_idempotent`] is `false` (and
/// the policy does not allow non-idempotent retries) or [`try_replay`] says `None`, the request
/// is sent once.
///
/// Implemented for `http::Request<B>` (GET, HEAD, OPTIONS, PUT, DELETE, TRACE, or any method
/// with an `Idempotency-Key` header, when the body can be copied: any `Clone` body or a
/// [`ReplayBody`]), `reqwest::Request` (feature `reqwest`, via `try_clone`), and common plain
/// values. For your own `Clone` request type:
///
/// ```
/// #[derive(Clone)]
/// struct GetUser { id: u64 }
///
/// impl staunch_retry::RetryRequest for GetUser {
///     fn try_replay(&self) -> Option<Self> {
///         Some(self.clone())
///     }
/// }
/// ```
///
/// [`is_idempotent`]: RetryRequest::is_idempotent
/// [`try_replay`]: RetryRequest::try_replay
pub trait RetryRequest: Sized {
    /// Whether sending this request twice has the same effect as sending it once. Default
    /// `true`.
    fn is_idempotent(&self) -> bool {
        true
    }

    /// A copy for another attempt, or `None` when this request can only be sent once.
    fn try_replay(&self) -> Option<Self>;

    /// The caller's deadline, past which no retry waits (see the crate docs' section on
    /// deadlines). Default `None`; an `http::Request` gives the [`Deadline`] in its
    /// extensions. Read only when a retry is considered, never on a call that succeeds.
    #[inline]
    fn deadline(&self) -> Option<Deadline> {
        None
    }

    /// The request's own time limit per attempt, replacing the policy's
    /// [`attempts_cut_by`](crate::RetryPolicyBuilder::attempts_cut_by) for it, as a
    /// [`TimeoutOverride`](staunch_timeout::TimeoutOverride) replaces the limit of the
    /// `Timeout` layer inside. Default `None`; an `http::Request` gives the override in its
    /// extensions. Read only when the policy sets `attempts_cut_by`.
    #[inline]
    fn timeout_override(&self) -> Option<std::time::Duration> {
        None
    }
}

macro_rules! clone_requests {
    ($($t:ty),* $(,)?) => {
        $(impl RetryRequest for $t {
            #[inline]
            fn try_replay(&self) -> Option<Self> {
                Some(self.clone())
            }
        })*
    };
}
clone_requests!(
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

impl<T: Clone> RetryRequest for Vec<T> {
    fn try_replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<T: ?Sized> RetryRequest for Arc<T> {
    #[inline]
    fn try_replay(&self) -> Option<Self> {
        Some(Arc::clone(self))
    }
}

/// An HTTP body that can be copied for another attempt.
///
/// Implemented for every `Clone` body (`String`, `Bytes`, `http_body_util::Full<Bytes>`, ...)
/// and for [`ReplayBody`], which buffers a streaming body up to a cap.
pub trait TryCloneBody: Sized {
    /// A copy of the body, or `None` when it can only be sent once.
    fn try_clone_body(&self) -> Option<Self>;
}

impl<B: Clone> TryCloneBody for B {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<B> TryCloneBody for ReplayBody<B> {
    fn try_clone_body(&self) -> Option<Self> {
        self.try_clone()
    }
}

/// Whether an HTTP request with this method and these headers may be retried by default:
/// the method is idempotent (RFC 9110: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or the request
/// carries an `Idempotency-Key`.
pub fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

impl<B: TryCloneBody> RetryRequest for http::Request<B> {
    fn is_idempotent(&self) -> bool {
        is_idempotent(self.method(), self.headers())
    }

    fn deadline(&self) -> Option<Deadline> {
        Deadline::of(self)
    }

    #[inline]
    fn timeout_override(&self) -> Option<std::time::Duration> {
        let extensions = self.extensions();
        if extensions.is_empty() {
            return None;
        }
        extensions
            .get::<staunch_timeout::TimeoutOverride>()
            .map(|o| o.0)
    }

    fn try_replay(&self) -> Option<Self> {
        let body = self.body().try_clone_body()?;
        let mut req = http::Request::new(body);
        *req.method_mut() = self.method().clone();
        *req.uri_mut() = self.uri().clone();
        *req.version_mut() = self.version();
        *req.headers_mut() = self.headers().clone();
        *req.extensions_mut() = self.extensions().clone();
        Some(req)
    }
}

#[cfg(feature = "reqwest")]
impl RetryRequest for reqwest::Request {
    fn is_idempotent(&self) -> bool {
        is_idempotent(self.method(), self.headers())
    }

    fn try_replay(&self) -> Option<Self> {
        self.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_and_keys() {
        let req = |m: Method, key: bool| {
            let mut b = http::Request::builder().method(m).uri("http://127.0.0.1/");
            if key {
                b = b.header("Idempotency-Key", "k-1");
            }
            b.body(String::from("x")).unwrap()
        };
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(req(m, false).is_idempotent());
        }
        assert!(!req(Method::POST, false).is_idempotent());
        assert!(!req(Method::PATCH, false).is_idempotent());
        assert!(req(Method::POST, true).is_idempotent());
    }

    #[test]
    fn http_requests_are_copied_whole() {
        let mut req = http::Request::builder()
            .method(Method::PUT)
            .uri("http://127.0.0.1/x")
            .header("a", "1")
            .body(String::from("body"))
            .unwrap();
        req.extensions_mut().insert(7u8);
        let copy = req.try_replay().unwrap();
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.uri(), "http://127.0.0.1/x");
        assert_eq!(copy.headers()["a"], "1");
        assert_eq!(copy.body(), "body");
        assert_eq!(copy.extensions().get::<u8>(), Some(&7));
    }
}
