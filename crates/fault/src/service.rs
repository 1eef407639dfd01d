//! The services of the layers: [`FaultService`] and [`HttpFaultService`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll};

use staunch_core::BoxError;
use tower_service::Service;

use crate::error::ErrorFnPanicked;
use crate::future::ResponseFuture;
use crate::injector::Injection;
use crate::{Fault, FaultInjected, FaultInjector, InjectedError};

/// The service of [`FaultLayer`](crate::FaultLayer).
#[derive(Debug, Clone)]
pub struct FaultService<S, F> {
    inner: S,
    injector: FaultInjector,
    error_fn: F,
}

impl<S, F> FaultService<S, F> {
    pub(crate) fn new(inner: S, injector: FaultInjector, error_fn: F) -> Self {
        Self {
            inner,
            injector,
            error_fn,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The shared injector.
    pub fn injector(&self) -> &FaultInjector {
        &self.injector
    }
}

impl<S, Req, F, E> Service<Req> for FaultService<S, F>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    F: Fn(&InjectedError) -> E,
    E: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let injection = self.injector.decide();
        if injection.is_none() {
            return ResponseFuture::called(self.inner.call(request));
        }
        let error_fn = &self.error_fn;
        inject(
            &mut self.inner,
            &self.injector,
            request,
            injection,
            |e| match catch_unwind(AssertUnwindSafe(|| error_fn(e))) {
                Ok(error) => Err(error.into()),
                Err(panic) => Err(panicked(&self.injector, &*panic)),
            },
        )
    }
}

/// The service of [`HttpFaultLayer`](crate::HttpFaultLayer).
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct HttpFaultService<S> {
    inner: S,
    injector: FaultInjector,
}

#[cfg(feature = "http")]
impl<S> HttpFaultService<S> {
    pub(crate) fn new(inner: S, injector: FaultInjector) -> Self {
        Self { inner, injector }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The shared injector.
    pub fn injector(&self) -> &FaultInjector {
        &self.injector
    }
}

#[cfg(feature = "http")]
impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for HttpFaultService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ResBody: From<bytes::Bytes>,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, http::Request<ReqBody>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let injection = self.injector.decide();
        if injection.is_none() {
            return ResponseFuture::called(self.inner.call(request));
        }
        inject(&mut self.inner, &self.injector, request, injection, |e| {
            Ok(response(e))
        })
    }
}

/// The response an HTTP error fault answers: its status and body, with the
/// [`FaultInjected`] in the extensions.
#[cfg(feature = "http")]
fn response<B: From<bytes::Bytes>>(injected: &InjectedError) -> http::Response<B> {
    let body = bytes::Bytes::copy_from_slice(injected.body().as_bytes());
    let mut response = http::Response::new(B::from(body));
    // The status was checked (400 to 599) when the configuration was applied.
    *response.status_mut() = http::StatusCode::from_u16(injected.status())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if !injected.body().is_empty() {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
        .extensions_mut()
        .insert(injected.to_fault_injected());
    response
}

/// A call with a fault: answered by `answer_error` or failed with an abort, after the delay
/// if any; or only delayed, then sent.
#[cold]
#[inline(never)]
fn inject<S, Req>(
    service: &mut S,
    injector: &FaultInjector,
    request: Req,
    injection: Injection,
    answer_error: impl FnOnce(&InjectedError) -> Result<S::Response, BoxError>,
) -> ResponseFuture<S, Req>
where
    S: Service<Req> + Clone,
{
    let (delay, fault) = injection.into_parts();
    match (fault, delay) {
        (Some(Fault::Error(e)), delay) => ResponseFuture::answered(answer_error(&e), delay),
        (Some(Fault::Abort), delay) => {
            let abort = FaultInjected::abort(Arc::clone(injector.shared_name()));
            ResponseFuture::answered(Err(Box::new(abort)), delay)
        }
        (None, Some(delay)) => ResponseFuture::delayed(service, request, delay),
        (None, None) => ResponseFuture::called(service.call(request)),
    }
}

fn panicked(injector: &FaultInjector, panic: &(dyn std::any::Any + Send)) -> BoxError {
    let error = ErrorFnPanicked::new(Arc::clone(injector.shared_name()), panic);
    tracing::error!(%error, "fault injector error function panicked");
    Box::new(error)
}
