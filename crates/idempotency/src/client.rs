//! The client side: [`IdempotencyKey`] and [`IdempotencyKeyLayer`], which send a request's key
//! as the `Idempotency-Key` header.

use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::key::KeyError;

/// The `Idempotency-Key` header's name.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// A key for an outgoing request, such as a saga step's `StepContext::idempotency_key()`.
///
/// Put it into an `http::Request`'s extensions and [`IdempotencyKeyLayer`] sends it as the
/// header; or set the header yourself with [`header_value`](Self::header_value) (a reqwest
/// `RequestBuilder::header`). Either way staunch's retry layer then treats a POST as safe to
/// retry, since the server answers each repeat once.
///
/// ```
/// use staunch_idempotency::{IDEMPOTENCY_KEY, IdempotencyKey};
///
/// let key = IdempotencyKey::new("order-7:charge:action").unwrap();
/// assert_eq!(key.header_value(), "\"order-7:charge:action\"");
/// let request = http::Request::post("http://payment/charges")
///     .header(IDEMPOTENCY_KEY, key.header_value())
///     .body(())
///     .unwrap();
/// # let _ = request;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: String,
    value: HeaderValue,
}

impl IdempotencyKey {
    /// A key, refused if empty or not printable ASCII.
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(KeyError::NotAscii);
        }
        // An sf-string: quoted, with `"` and `\` escaped.
        let mut quoted = String::with_capacity(key.len() + 2);
        quoted.push('"');
        for c in key.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        let value = HeaderValue::try_from(quoted).map_err(|_| KeyError::NotAscii)?;
        Ok(IdempotencyKey { key, value })
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The header value: the key as an sf-string (`"..."`). Cloning it does not allocate.
    pub fn header_value(&self) -> HeaderValue {
        self.value.clone()
    }
}

/// Sends the [`IdempotencyKey`] found in a request's extensions as its `Idempotency-Key`
/// header (a header already set wins). Place it outside staunch's retry layer, so that the
/// retry layer sees the header and may retry the POST.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdempotencyKeyLayer;

impl<S> Layer<S> for IdempotencyKeyLayer {
    type Service = SetIdempotencyKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetIdempotencyKey { inner }
    }
}

/// The service of [`IdempotencyKeyLayer`].
#[derive(Debug, Clone)]
pub struct SetIdempotencyKey<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for SetIdempotencyKey<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !req.headers().contains_key(IDEMPOTENCY_KEY)
            && let Some(key) = req.extensions().get::<IdempotencyKey>()
        {
            let value = key.header_value();
            req.headers_mut().insert(IDEMPOTENCY_KEY, value);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::parse_key;

    #[test]
    fn keys_are_quoted_and_read_back() {
        for key in ["a", "saga:step:action", r#"q"u\o"#, " spaced "] {
            let k = IdempotencyKey::new(key).unwrap();
            assert_eq!(parse_key(k.header_value().as_bytes(), 255).unwrap(), key);
        }
        assert_eq!(IdempotencyKey::new(""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::new("clé"), Err(KeyError::NotAscii));
        assert_eq!(IdempotencyKey::new("a\nb"), Err(KeyError::NotAscii));
    }
}
