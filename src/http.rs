//! The preset for HTTP clients (reqwest, hyper, or any `Service<http::Request<B>>`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use staunch_core::{ConfigError, HttpStatus};
use staunch_timeout::{Deadline, PropagateDeadline, PropagateFuture};

use crate::error::BoxError;

use crate::config::StackConfig;
use crate::stack::{Stack, StackHandle};

/// An HTTP client wrapped by [`client`]: errors are [`staunch::Error<E>`](crate::Error).
pub type Client<S, E> = Stack<AttemptDeadline<S>, HttpStatus, E>;

/// Wraps an HTTP client in the full stack called `name`, in the order the crate docs explain
/// (retry, circuit breaker, per-attempt timeout, bulkhead), with [`HttpStatus`] deciding what
/// counts as a failure (transport errors, 5xx and 429) and the retry layer's default of only
/// retrying idempotent requests. Returns the wrapped client and the handle to its engines.
///
/// The request body must be cloneable to be retried (`String`, `Bytes`, `Full<Bytes>`, or a
/// [`ReplayBody`](staunch_retry::ReplayBody) for streamed bodies); a
/// [`Deadline`] in a request's extensions shortens its attempts.
///
/// With a [`deadline.outgoing`](crate::DeadlineConfig::outgoing) section, every attempt
/// tells the server how long it has left (header `x-request-timeout` by default): the
/// earliest of the request's `Deadline` and the attempt's time limit, minus the margin (see
/// [`AttemptDeadline`]). With a [`hedge`](crate::StackConfig::hedge) section, wrap the
/// client in [`handle.hedge()`](StackHandle::hedge).
///
/// # Errors
///
/// A [`ConfigError`] naming the bad field, e.g. `payment.breaker.minimum_calls`.
///
/// ```
/// use std::time::Duration;
/// use staunch::{Error, StackConfig};
/// use tower::{Service, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let inner = service_fn(|req: http::Request<String>| async move {
///     Ok::<_, std::io::Error>(http::Response::new(format!("hello {}", req.uri().path())))
/// });
/// let mut config = StackConfig::default();
/// config.attempt_timeout = Some(Duration::from_millis(300));
/// let (mut client, handle) = staunch::http::client("greeter", inner, &config)?;
///
/// let res = client.ready().await?.call(http::Request::get("/world").body(String::new())?).await?;
/// assert_eq!(res.body(), "hello /world");
///
/// handle.breaker().force_open();
/// let err = client.ready().await?.call(http::Request::get("/").body(String::new())?).await;
/// assert!(matches!(err, Err(Error::BreakerOpen(_))));
/// # Ok(()) }
/// ```
pub fn client<S, B>(
    name: &str,
    inner: S,
    config: &StackConfig,
) -> Result<(Client<S, S::Error>, StackHandle), ConfigError>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
{
    let handle = config.build(name)?;
    let inner = AttemptDeadline::new(inner, &handle);
    Ok((handle.wrap(inner, HttpStatus::new()), handle))
}

/// The innermost service of [`client`]: when the stack propagates deadlines
/// ([`StackHandle::outgoing_deadline`]), it sets each attempt's
/// [`Deadline`] to the earliest of the request's own and the
/// per-attempt time limit, then writes the remaining time onto the request
/// (`PropagateDeadline`); an attempt with no time left fails with
/// [`Elapsed`](staunch_timeout::Elapsed) without being sent. Otherwise it only boxes the
/// inner error. The attempt limit is counted from when the request leaves the bulkhead, so
/// with a `max_wait` the time written can exceed what the attempt timeout still allows by at
/// most that wait.
#[derive(Debug, Clone)]
pub struct AttemptDeadline<S> {
    inner: Attempt<S>,
    limit: Duration,
}

#[derive(Debug, Clone)]
enum Attempt<S> {
    Plain(S),
    Propagate(PropagateDeadline<S>),
}

impl<S> AttemptDeadline<S> {
    /// Wraps `inner` with the deadline settings of `handle`'s stack.
    pub fn new(inner: S, handle: &StackHandle) -> Self {
        let inner = match handle.outgoing_deadline() {
            Some(layer) => Attempt::Propagate(layer.layer(inner)),
            None => Attempt::Plain(inner),
        };
        Self {
            inner,
            limit: handle.attempt_timeout().limit(),
        }
    }
}

impl<S, B> Service<http::Request<B>> for AttemptDeadline<S>
where
    S: Service<http::Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = AttemptDeadlineFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.inner {
            Attempt::Plain(s) => s.poll_ready(cx).map_err(Into::into),
            Attempt::Propagate(s) => s.poll_ready(cx),
        }
    }

    #[inline]
    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match &mut self.inner {
            Attempt::Plain(s) => AttemptDeadlineFuture {
                plain: Some(s.call(request)),
                propagated: None,
            },
            Attempt::Propagate(s) => {
                let deadline = Deadline::after(self.limit).earliest(Deadline::of(&request));
                request.extensions_mut().insert(deadline);
                AttemptDeadlineFuture {
                    plain: None,
                    propagated: Some(s.call(request)),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AttemptDeadline`].
    ///
    /// # Panics
    ///
    /// May panic when polled after it completed, as the inner future may.
    pub struct AttemptDeadlineFuture<F> {
        #[pin]
        plain: Option<F>,
        #[pin]
        propagated: Option<PropagateFuture<F>>,
    }
}

impl<F> std::fmt::Debug for AttemptDeadlineFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptDeadlineFuture")
    }
}

impl<F, T, E> Future for AttemptDeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(f) = this.plain.as_pin_mut() {
            return f.poll(cx).map_err(Into::into);
        }
        this.propagated
            .as_pin_mut()
            .expect("AttemptDeadlineFuture polled after completion")
            .poll(cx)
    }
}

/// A `reqwest::Client` as a `Service<http::Request<B>>` answering `http::Response`s, for
/// [`client`]: `staunch::http::client("payment", staunch::http::reqwest(client), &config)`.
/// `B` is the body type of the requests (`String`, `Bytes`, ...: cloneable, so requests can
/// be retried), usually inferred from the calls. Feature `reqwest`.
#[cfg(feature = "reqwest")]
pub fn reqwest<B>(client: ::reqwest::Client) -> Reqwest<B> {
    Reqwest {
        client,
        urls: std::sync::Arc::new(UrlCache::default()),
        _body: std::marker::PhantomData,
    }
}

/// The service returned by [`reqwest()`]: turns the `http::Request` into a
/// `reqwest::Request`, sends it with `reqwest::Client::execute`, and converts the answer into
/// an `http::Response<reqwest::Body>`.
///
/// reqwest addresses requests by `Url`, so the request's `Uri` must become one; parsing a URL
/// (its host above all) is a large share of what a request costs the client on loopback. The
/// clones of one adapter remember the last URL they converted: a request to the same URI
/// reuses a copy, one to the same scheme and authority parses only its path and query, and
/// only a new origin is parsed in full. The memory never makes a request wait: when another
/// clone is using it at that moment, the URL is parsed in full. A request whose URI reqwest
/// does not accept (no scheme or host, say) fails its call with a `reqwest::Error`.
///
/// A request with extensions is converted with `reqwest::Request::try_from`, which keeps
/// them (reqwest reads its per-request settings from there) and parses its URL in full.
#[cfg(feature = "reqwest")]
pub struct Reqwest<B> {
    client: ::reqwest::Client,
    urls: std::sync::Arc<UrlCache>,
    _body: std::marker::PhantomData<fn(B)>,
}

#[cfg(feature = "reqwest")]
impl<B> Clone for Reqwest<B> {
    fn clone(&self) -> Self {
        Reqwest {
            client: self.client.clone(),
            urls: std::sync::Arc::clone(&self.urls),
            _body: std::marker::PhantomData,
        }
    }
}

#[cfg(feature = "reqwest")]
impl<B> std::fmt::Debug for Reqwest<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reqwest")
            .field("client", &self.client)
            .finish()
    }
}

#[cfg(feature = "reqwest")]
impl<B> Reqwest<B> {
    /// The wrapped client.
    pub fn client(&self) -> &::reqwest::Client {
        &self.client
    }

    /// `request` as reqwest's own request type.
    fn convert(&self, request: http::Request<B>) -> Result<::reqwest::Request, ::reqwest::Error>
    where
        B: Into<::reqwest::Body>,
    {
        if !request.extensions().is_empty() {
            return ::reqwest::Request::try_from(request);
        }
        let (parts, body) = request.into_parts();
        let Some(url) = self.urls.url_of(&parts.uri) else {
            // Not a URL reqwest accepts: its own conversion makes the error.
            return ::reqwest::Request::try_from(http::Request::from_parts(parts, body));
        };
        let mut converted = ::reqwest::Request::new(parts.method, url);
        *converted.headers_mut() = parts.headers;
        *converted.version_mut() = parts.version;
        *converted.body_mut() = Some(body.into());
        Ok(converted)
    }
}

/// The last URI an adapter converted and its URL; see [`Reqwest`].
#[cfg(feature = "reqwest")]
#[derive(Default)]
struct UrlCache(std::sync::Mutex<Option<(http::Uri, ::reqwest::Url)>>);

#[cfg(feature = "reqwest")]
impl UrlCache {
    /// `uri` as a `Url`, or `None` when it is not a valid one.
    fn url_of(&self, uri: &http::Uri) -> Option<::reqwest::Url> {
        // `try_lock`: a clone using the memory right now is never waited for.
        let Ok(mut last) = self.0.try_lock() else {
            return parse(uri);
        };
        if let Some((last_uri, last_url)) = last.as_ref() {
            if last_uri == uri {
                return Some(last_url.clone());
            }
            if last_uri.scheme() == uri.scheme() && last_uri.authority() == uri.authority() {
                let mut url = last_url.clone();
                url.set_path(uri.path());
                url.set_query(uri.query());
                *last = Some((uri.clone(), url.clone()));
                return Some(url);
            }
        }
        let url = parse(uri)?;
        *last = Some((uri.clone(), url.clone()));
        Some(url)
    }
}

/// The full parse, as `reqwest::Request::try_from` does it; only absolute URIs with a host
/// are URLs here (reqwest refuses the others when sending).
#[cfg(feature = "reqwest")]
fn parse(uri: &http::Uri) -> Option<::reqwest::Url> {
    uri.host()?;
    ::reqwest::Url::parse(&uri.to_string()).ok()
}

#[cfg(feature = "reqwest")]
impl<B> Service<http::Request<B>> for Reqwest<B>
where
    B: Into<::reqwest::Body>,
{
    type Response = http::Response<::reqwest::Body>;
    type Error = ::reqwest::Error;
    type Future = ReqwestFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        Service::<::reqwest::Request>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.convert(req) {
            Ok(req) => ReqwestFuture {
                sending: Some(self.client.call(req)),
                invalid: None,
            },
            Err(e) => ReqwestFuture {
                sending: None,
                invalid: Some(e),
            },
        }
    }
}

#[cfg(feature = "reqwest")]
pin_project_lite::pin_project! {
    /// The response future of [`Reqwest`].
    ///
    /// # Panics
    ///
    /// When polled again after it completed with the error of a request that could not be
    /// converted (a future must not be polled after completion).
    pub struct ReqwestFuture {
        #[pin]
        sending: Option<<::reqwest::Client as Service<::reqwest::Request>>::Future>,
        invalid: Option<::reqwest::Error>,
    }
}

#[cfg(feature = "reqwest")]
impl std::fmt::Debug for ReqwestFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReqwestFuture")
    }
}

#[cfg(feature = "reqwest")]
impl std::future::Future for ReqwestFuture {
    type Output = Result<http::Response<::reqwest::Body>, ::reqwest::Error>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        match this.sending.as_pin_mut() {
            Some(sending) => sending.poll(cx).map_ok(http::Response::from),
            None => std::task::Poll::Ready(Err(this
                .invalid
                .take()
                .expect("ReqwestFuture polled after completion"))),
        }
    }
}

#[cfg(all(test, feature = "reqwest"))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `reqwest::Request::try_from` makes of `uri`.
    fn reference(uri: &http::Uri) -> Option<::reqwest::Url> {
        ::reqwest::Request::try_from(http::Request::get(uri.clone()).body(String::new()).ok()?)
            .ok()
            .map(|r| r.url().clone())
    }

    fn segment() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("a".to_owned()),
                Just("B".to_owned()),
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just("%2e".to_owned()),
                Just("%2F".to_owned()),
                Just("%zz".to_owned()),
                Just("~!$&'()*+,;=:@".to_owned()),
                Just("é".to_owned()),
                Just("\\".to_owned()),
                Just("|^`".to_owned()),
                Just(String::new()),
            ],
            0..4,
        )
        .prop_map(|parts| parts.concat())
    }

    fn uri() -> impl Strategy<Value = String> {
        let origin = prop_oneof![
            Just("http://127.0.0.1:8080"),
            Just("http://LocalHost"),
            Just("https://example.com:443"),
            Just("http://user:pw@[::1]:9"),
            Just("ws://h"),
            Just("foo://h"),
        ];
        let query = prop_oneof![
            Just(None),
            Just(Some(String::new())),
            segment().prop_map(Some),
            (segment(), segment()).prop_map(|(k, v)| Some(format!("{k}={v}&{v}"))),
        ];
        (origin, prop::collection::vec(segment(), 0..4), query).prop_map(|(o, path, q)| {
            let mut uri = o.to_owned();
            for p in path {
                uri.push('/');
                uri.push_str(&p);
            }
            if let Some(q) = q {
                uri.push('?');
                uri.push_str(&q);
            }
            uri
        })
    }

    proptest! {
        /// Whatever the adapter converted before, a URI becomes the URL reqwest's own
        /// conversion makes of it, or is refused as it refuses it.
        #[test]
        fn remembered_urls_are_the_urls_reqwest_would_parse(uris in prop::collection::vec(uri(), 1..12)) {
            let cache = UrlCache::default();
            for text in &uris {
                let Ok(uri) = text.parse::<http::Uri>() else { continue };
                let expected = reference(&uri);
                prop_assert_eq!(cache.url_of(&uri), expected.clone(), "{}", text);
                // A repeat is answered from memory, identically.
                prop_assert_eq!(cache.url_of(&uri), expected, "{}", text);
            }
        }
    }

    #[test]
    fn a_uri_reqwest_cannot_send_is_refused_by_reqwest_s_own_conversion() {
        let adapter = reqwest::<String>(::reqwest::Client::new());
        for text in ["/relative", "example.com"] {
            let request = http::Request::get(text).body(String::new()).unwrap();
            assert!(adapter.convert(request).is_err(), "{text}");
        }
    }

    #[test]
    fn a_request_keeps_its_method_headers_version_and_body() {
        let adapter = reqwest::<String>(::reqwest::Client::new());
        for _ in 0..2 {
            let request = http::Request::post("http://127.0.0.1:1/orders?id=7")
                .header("idempotency-key", "k-1")
                .version(http::Version::HTTP_11)
                .body("{}".to_owned())
                .unwrap();
            let converted = adapter.convert(request).unwrap();
            assert_eq!(converted.method(), http::Method::POST);
            assert_eq!(converted.url().as_str(), "http://127.0.0.1:1/orders?id=7");
            assert_eq!(converted.headers()["idempotency-key"], "k-1");
            assert_eq!(converted.version(), http::Version::HTTP_11);
            assert_eq!(
                converted.body().and_then(|b| b.as_bytes()),
                Some(&b"{}"[..])
            );
        }
    }

    #[test]
    fn a_request_with_extensions_keeps_them_through_reqwest_s_conversion() {
        let adapter = reqwest::<String>(::reqwest::Client::new());
        let mut request = http::Request::get("http://127.0.0.1:1/")
            .body(String::new())
            .unwrap();
        request.extensions_mut().insert(7_u8);
        let converted = adapter.convert(request).unwrap();
        let back: http::Request<::reqwest::Body> = converted.try_into().unwrap();
        assert_eq!(back.extensions().get::<u8>(), Some(&7));
    }
}
