//! The tower layers: [`FaultLayer`] (any service; injected errors are errors) and
//! [`HttpFaultLayer`] (HTTP; injected errors are chosen responses).

use tower_layer::Layer;

use crate::{FaultInjected, FaultInjector, FaultService, InjectedError};

/// The error function of a [`FaultLayer`] nobody gave one: injected errors are
/// [`FaultInjected`].
pub type DefaultErrorFn = fn(&InjectedError) -> FaultInjected;

fn default_error(injected: &InjectedError) -> FaultInjected {
    injected.to_fault_injected()
}

/// Injects the faults a [`FaultInjector`] decides into calls to the wrapped service.
///
/// Per call: a latency fault waits out its delay in the response future, then sends the
/// request; an error fault answers the error made by the layer's error function (by default
/// [`FaultInjected`]; see [`error_with`](Self::error_with)) without calling the service; an
/// abort answers [`FaultInjected`] without calling it. A call without a fault is sent at
/// once, and its future is the service's own.
///
/// Where it goes: innermost, next to the service, so every other layer (retry, breaker,
/// timeout) sees the injected faults as the dependency's own.
///
/// ```
/// use staunch_fault::{FaultInjector, FaultLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// #[derive(Debug)]
/// struct Unavailable(u16);
/// impl std::fmt::Display for Unavailable {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "unavailable ({})", self.0)
///     }
/// }
/// impl std::error::Error for Unavailable {}
///
/// let injector = FaultInjector::builder("ledger").error(1.0, 503).seed(1).build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(FaultLayer::new(injector.clone()).error_with(|e| Unavailable(e.status())))
///     .service(service_fn(|n: u32| async move { Ok::<_, Unavailable>(n) }));
/// let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<Unavailable>().unwrap().0, 503);
/// injector.disable();
/// assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FaultLayer<F = DefaultErrorFn> {
    injector: FaultInjector,
    error_fn: F,
}

impl FaultLayer {
    /// A layer over `injector` whose injected errors are [`FaultInjected`].
    pub fn new(injector: FaultInjector) -> Self {
        Self {
            injector,
            error_fn: default_error,
        }
    }
}

impl<F> FaultLayer<F> {
    /// Makes each injected error with `error_fn`, from the configured status and body: the
    /// error the service itself would fail with. It must not panic; if it does, that call
    /// fails with [`ErrorFnPanicked`](crate::ErrorFnPanicked) and the layer keeps working.
    pub fn error_with<F2, E>(self, error_fn: F2) -> FaultLayer<F2>
    where
        F2: Fn(&InjectedError) -> E,
    {
        FaultLayer {
            injector: self.injector,
            error_fn,
        }
    }

    /// The shared injector.
    pub fn injector(&self) -> &FaultInjector {
        &self.injector
    }
}

impl<S, F: Clone> Layer<S> for FaultLayer<F> {
    type Service = FaultService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        FaultService::new(inner, self.injector.clone(), self.error_fn.clone())
    }
}

/// Injects the faults a [`FaultInjector`] decides into HTTP calls: an error fault answers a
/// response with the configured status and body (`error.status`, `error.body`) instead of
/// calling the service; an abort fails with [`FaultInjected`]; a latency fault delays the
/// request. Works on both sides: over an axum router (a server answering faults) and over an
/// HTTP client (a client seeing them).
///
/// The response carries the [`FaultInjected`] in its extensions, so in-process code can
/// tell an injected answer from a real one.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use staunch_fault::{FaultConfig, FaultInjector, HttpFaultLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let injector = FaultConfig::error().with_seed(3).build("payment").unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(HttpFaultLayer::new(injector.clone()))
///     .service(service_fn(|_: http::Request<()>| async {
///         Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from("charged"))))
///     }));
/// let mut failed = 0;
/// for _ in 0..100 {
///     let res = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
///     failed += usize::from(res.status() == 500);
/// }
/// assert!((55..=85).contains(&failed)); // 70 % of calls answer 500
/// assert_eq!(injector.metrics().errors, failed as u64);
/// # }
/// ```
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct HttpFaultLayer {
    injector: FaultInjector,
}

#[cfg(feature = "http")]
impl HttpFaultLayer {
    /// A layer over `injector`.
    pub fn new(injector: FaultInjector) -> Self {
        Self { injector }
    }

    /// The shared injector.
    pub fn injector(&self) -> &FaultInjector {
        &self.injector
    }
}

#[cfg(feature = "http")]
impl<S> Layer<S> for HttpFaultLayer {
    type Service = crate::HttpFaultService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        crate::HttpFaultService::new(inner, self.injector.clone())
    }
}
