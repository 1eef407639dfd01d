//! The tower layers: [`RateLimitLayer`] (one rate) and [`KeyedRateLimitLayer`] (a rate per
//! key), their services and their response future.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use staunch_core::BoxError;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use crate::hint::{NoHints, ReadHint};
use crate::limiter::{Refund, Reservation};
use crate::{KeyedRateLimiter, RateLimiter};

/// Limits the rate of calls to the wrapped service with a [`RateLimiter`].
///
/// A call with a free permit goes straight in; one that may wait (`max_wait`) waits in its
/// response future and is then sent; one that may not is answered with a
/// [`RateLimited`](staunch_core::RateLimited) rejection without reaching the service.
/// Every clone of the layer, and every service it makes, shares the limiter. With
/// [`hints`](Self::hints), responses that ask to slow down lower the rate
/// ([`HttpHints`](crate::HttpHints) for HTTP).
///
/// Where it goes: inside the retry layer (each attempt needs a permit, and a rejection is
/// not retried), outside the circuit breaker (a rejected call never reaches it).
///
/// ```
/// use std::time::Duration;
/// use staunch_rate_limit::{RateLimitLayer, RateLimiter};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let limiter = RateLimiter::builder("geocoder")
///     .rate(1, Duration::from_secs(1))
///     .build()
///     .unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(limiter))
///     .service(service_fn(|q: &'static str| async move { Ok::<_, std::io::Error>(q.len()) }));
/// assert_eq!(svc.ready().await.unwrap().call("x").await.unwrap(), 1);
/// let err = svc.ready().await.unwrap().call("y").await.unwrap_err();
/// assert!(err.is::<staunch_core::RateLimited>());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer<H = NoHints> {
    limiter: RateLimiter,
    hints: H,
}

impl RateLimitLayer {
    /// A layer over `limiter`, reading no server hints.
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            limiter,
            hints: NoHints,
        }
    }
}

impl<H> RateLimitLayer<H> {
    /// Reads server hints from each successful response with `hints`.
    pub fn hints<H2>(self, hints: H2) -> RateLimitLayer<H2> {
        RateLimitLayer {
            limiter: self.limiter,
            hints,
        }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S, H: Clone> Layer<S> for RateLimitLayer<H> {
    type Service = RateLimit<S, H>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            hints: self.hints.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S, H = NoHints> {
    inner: S,
    limiter: RateLimiter,
    hints: H,
}

impl<S, H> RateLimit<S, H> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req, H> Service<Req> for RateLimit<S, H>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    H: ReadHint<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, H, ()>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let observer = if H::READS {
            Observer::Single(self.limiter.clone())
        } else {
            Observer::None
        };
        let reservation = self.limiter.reserve();
        ResponseFuture::new(
            &mut self.inner,
            request,
            reservation,
            self.hints.clone(),
            observer,
        )
    }
}

/// Limits the rate of calls per key (per host, per tenant) with a [`KeyedRateLimiter`].
///
/// `key` picks each request's key; it must not panic, but if it does, the call fails with
/// a [`KeyPanicked`] error and the limiter keeps working. Otherwise as [`RateLimitLayer`].
///
/// ```
/// use std::time::Duration;
/// use staunch_rate_limit::{KeyedRateLimitLayer, KeyedRateLimiter, RateLimiter};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let per_host: KeyedRateLimiter<String> = RateLimiter::builder("hosts")
///     .rate(1, Duration::from_secs(1))
///     .build_keyed()
///     .unwrap();
/// let layer = KeyedRateLimitLayer::new(per_host, |req: &http::Request<()>| {
///     req.uri().host().unwrap_or_default().to_owned()
/// });
/// let mut svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|_req: http::Request<()>| async { Ok::<_, std::io::Error>(()) }));
/// let get = |uri: &str| http::Request::get(uri).body(()).unwrap();
/// assert!(svc.ready().await.unwrap().call(get("http://a.example/")).await.is_ok());
/// assert!(svc.ready().await.unwrap().call(get("http://b.example/")).await.is_ok());
/// assert!(svc.ready().await.unwrap().call(get("http://a.example/")).await.is_err());
/// # }
/// ```
#[derive(Clone)]
pub struct KeyedRateLimitLayer<K, F, H = NoHints> {
    limiter: KeyedRateLimiter<K>,
    key: F,
    hints: H,
}

impl<K, F, H> fmt::Debug for KeyedRateLimitLayer<K, F, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<K, F> KeyedRateLimitLayer<K, F> {
    /// A layer over `limiter`, keying each request with `key`, reading no server hints.
    pub fn new(limiter: KeyedRateLimiter<K>, key: F) -> Self {
        Self {
            limiter,
            key,
            hints: NoHints,
        }
    }
}

impl<K, F, H> KeyedRateLimitLayer<K, F, H> {
    /// Reads server hints from each successful response with `hints`; a hint lowers the
    /// rate of the response's key only.
    pub fn hints<H2>(self, hints: H2) -> KeyedRateLimitLayer<K, F, H2> {
        KeyedRateLimitLayer {
            limiter: self.limiter,
            key: self.key,
            hints,
        }
    }
}

impl<S, K, F: Clone, H: Clone> Layer<S> for KeyedRateLimitLayer<K, F, H> {
    type Service = KeyedRateLimit<S, K, F, H>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimit {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            hints: self.hints.clone(),
        }
    }
}

/// The service of [`KeyedRateLimitLayer`].
#[derive(Clone)]
pub struct KeyedRateLimit<S, K, F, H = NoHints> {
    inner: S,
    limiter: KeyedRateLimiter<K>,
    key: F,
    hints: H,
}

impl<S: fmt::Debug, K, F, H> fmt::Debug for KeyedRateLimit<S, K, F, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, Req, K, F, H> Service<Req> for KeyedRateLimit<S, K, F, H>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    F: Fn(&Req) -> K,
    H: ReadHint<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, H, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = match catch_unwind(AssertUnwindSafe(|| (self.key)(&request))) {
            Ok(key) => key,
            Err(panic) => {
                let error = KeyPanicked::new(self.limiter.name(), &*panic);
                tracing::error!(%error, "rate limiter key extractor panicked");
                return ResponseFuture::failed(Box::new(error), self.hints.clone());
            }
        };
        let reservation = self.limiter.reserve(&key, false);
        let observer = if H::READS {
            Observer::Keyed(self.limiter.clone(), key)
        } else {
            Observer::None
        };
        ResponseFuture::new(
            &mut self.inner,
            request,
            reservation,
            self.hints.clone(),
            observer,
        )
    }
}

/// A keyed layer's key extractor panicked: the call was not made; the limiter keeps
/// working for every other call.
#[derive(Debug, Clone)]
pub struct KeyPanicked {
    limiter: String,
    message: String,
}

impl KeyPanicked {
    fn new(limiter: &str, panic: &(dyn Any + Send)) -> Self {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        Self {
            limiter: limiter.to_owned(),
            message,
        }
    }

    /// The panic's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for KeyPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the key extractor of rate limiter `{}` panicked ({}); the call was not made",
            self.limiter, self.message
        )
    }
}

impl std::error::Error for KeyPanicked {}

/// Where a response's hint goes.
pub(crate) enum Observer<K> {
    None,
    Single(RateLimiter),
    Keyed(KeyedRateLimiter<K>, K),
}

impl<K: Hash + Eq + Clone> Observer<K> {
    fn observe<Res, H: ReadHint<Res>>(&self, hints: &H, response: &Res) {
        let apply = |hint| match self {
            Observer::None => {}
            Observer::Single(limiter) => limiter.observe(hint),
            Observer::Keyed(limiter, key) => limiter.observe(key, hint),
        };
        if let Some(hint) = hints.read(response) {
            apply(hint);
        }
    }
}

pin_project! {
    /// A call that waits for its permit: the ready service it will be sent to, the request,
    /// and the reserved slot (given back if dropped before).
    struct Waiting<S, Req> {
        #[pin]
        sleep: Sleep,
        service: S,
        request: Option<Req>,
        refund: Option<Refund>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        Called { #[pin] future: F },
        // Boxed: only a call that waits pays for room for the request, the service and a
        // timer; the common future stays as small as the inner one.
        Waiting { waiting: Pin<Box<Waiting<S, Req>>> },
        Failed { error: Option<BoxError> },
    }
}

pin_project! {
    /// The response future of [`RateLimit`] and [`KeyedRateLimit`].
    ///
    /// Dropping it while the call waits for its permit gives the permit back.
    pub struct ResponseFuture<S, Req, H, K>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future>,
        hints: H,
        observer: Observer<K>,
    }
}

impl<S, Req, H, K> fmt::Debug for ResponseFuture<S, Req, H, K>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<S, Req, H, K> ResponseFuture<S, Req, H, K>
where
    S: Service<Req> + Clone,
{
    fn new(
        service: &mut S,
        request: Req,
        reservation: Reservation,
        hints: H,
        observer: Observer<K>,
    ) -> Self {
        let state = match reservation {
            Reservation::Now(_) => State::Called {
                future: service.call(request),
            },
            Reservation::Refused(rejection) => State::Failed {
                error: Some(Box::new(rejection)),
            },
            Reservation::Later { at, refund } => {
                // `service` is ready; the clone left behind is not (tower's contract), and
                // the caller polls it ready before the next call.
                let clone = service.clone();
                let ready = std::mem::replace(service, clone);
                State::Waiting {
                    waiting: Box::pin(Waiting {
                        sleep: tokio::time::sleep_until(at),
                        service: ready,
                        request: Some(request),
                        refund: Some(refund),
                    }),
                }
            }
        };
        Self {
            state,
            hints,
            observer,
        }
    }
}

impl<S, Req, H, K> ResponseFuture<S, Req, H, K>
where
    S: Service<Req>,
{
    fn failed(error: BoxError, hints: H) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            hints,
            observer: Observer::None,
        }
    }
}

impl<S, Req, H, K> Future for ResponseFuture<S, Req, H, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    H: ReadHint<S::Response>,
    K: Hash + Eq + Clone,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    if let Ok(response) = &result {
                        this.observer.observe(&*this.hints, response);
                    }
                    return Poll::Ready(result);
                }
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| "polled after completion".into());
                    return Poll::Ready(Err(error));
                }
                StateProj::Waiting { waiting } => {
                    let w = waiting.as_mut().project();
                    ready!(w.sleep.poll(cx));
                    if let Some(refund) = w.refund.take() {
                        refund.keep();
                    }
                    let Some(request) = w.request.take() else {
                        this.state.set(State::Failed { error: None });
                        continue;
                    };
                    let future = w.service.call(request);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}
