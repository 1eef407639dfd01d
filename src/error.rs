//! One error type for a whole stack: [`Error`], and the layer that produces it.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use staunch_core::{
    BreakerOpen, BulkheadFull, DeadlineExpired, RateLimited, Rejection, rejection_of,
};
use tower_layer::Layer;
use tower_service::Service;

/// The boxed error every staunch layer returns (the same type as `tower::BoxError`).
pub use staunch_core::BoxError;

/// Why a call through a staunch stack failed: the wrapped service's own error `E`, or the
/// layer that refused or cancelled the call.
///
/// A call that never reached the dependency is a rejection ([`is_rejection`](Error::is_rejection)):
/// [`BreakerOpen`](Error::BreakerOpen), [`BulkheadFull`](Error::BulkheadFull), or
/// [`DeadlineExpired`](Error::DeadlineExpired) when the caller's deadline had passed before it
/// was sent; rejections are never retried and never counted by the stack's breaker.
/// [`Elapsed`](Error::Elapsed) is a call that was sent and cut off.
///
/// The layers return a boxed error (as tower layers do); [`Error::from_box`] (or
/// [`TypedErrorsLayer`] outermost, which the presets add) turns it back into something to `match`:
///
/// ```
/// use std::sync::Arc;
/// use staunch::{BoxError, BreakerOpen, Error};
///
/// let boxed: BoxError = Box::new(BreakerOpen::new(Arc::from("payment"), None));
/// match Error::<std::io::Error>::from_box(boxed) {
///     Error::BreakerOpen(open) => assert_eq!(open.name(), "payment"),
///     other => panic!("unexpected {other:?}"),
/// }
///
/// let boxed: BoxError = Box::new(std::io::Error::other("connection reset"));
/// assert!(matches!(Error::<std::io::Error>::from_box(boxed), Error::Inner(_)));
/// ```
///
/// Retries that ran out arrive as [`RetriesExhausted`](Error::RetriesExhausted) or
/// [`BudgetExhausted`](Error::BudgetExhausted), carrying the last attempt's error;
/// [`last`](Error::last) looks through them. They are made from the retry layer's own
/// error ([`RetryExhausted`](staunch_retry::RetryExhausted)), so any retry policy reports
/// them, on whichever task the retries ran:
///
/// ```
/// # #[cfg(feature = "retry")]
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use staunch::retry::{GiveUpReason, RetryLayer, RetryPolicy};
/// use staunch::{Backoff, Error, TypedErrorsLayer, Jitter};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// let policy = RetryPolicy::builder()
///     .max_attempts(2)
///     .backoff(Backoff::constant(Duration::from_millis(10)).jitter(Jitter::None).build().unwrap())
///     .build()
///     .unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(TypedErrorsLayer::<std::io::Error>::new())
///     .layer(RetryLayer::new(policy))
///     .service(service_fn(|_: http::Request<String>| async {
///         Err::<http::Response<()>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
///     }));
/// let err = svc.ready().await.unwrap().call(http::Request::new(String::new())).await.unwrap_err();
/// let Error::RetriesExhausted { attempts, reason, last } = err else { panic!("{err:?}") };
/// assert_eq!((attempts, reason), (2, GiveUpReason::MaxAttempts));
/// assert!(matches!(*last, Error::Inner(_)));
/// # }
/// # #[cfg(not(feature = "retry"))]
/// # fn main() {}
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The wrapped service was called and failed.
    Inner(E),
    /// A circuit breaker refused the call: the dependency is failing. Not retried.
    BreakerOpen(BreakerOpen),
    /// A bulkhead refused the call: too many calls in flight. Not retried.
    BulkheadFull(BulkheadFull),
    /// The call was not sent: the caller's deadline (the request's `Deadline`) had already
    /// passed. Not retried, and not counted by the breaker: the dependency never saw it.
    DeadlineExpired(DeadlineExpired),
    /// A rate limiter had no permit for the call within the time it may wait: the call was
    /// not sent. Not retried, and not counted by the breaker.
    RateLimited(RateLimited),
    /// A time limit (per attempt, overall, or a propagated deadline) cancelled a call that
    /// had been sent.
    #[cfg(feature = "timeout")]
    Elapsed(staunch_timeout::Elapsed),
    /// The retry layer stopped retrying a retryable failure: `max_attempts` were made, the
    /// overall deadline or the backoff's `max_elapsed` left no time for another attempt, or
    /// the server asked not to retry (`reason` says which). `last` is the last attempt's
    /// error, classified. Made from the retry layer's
    /// [`RetryExhausted`](staunch_retry::RetryExhausted), so only once a retry was made or
    /// refused: a call with a single attempt allowed, a failure that is not retried and a
    /// rejection keep their own error.
    #[cfg(feature = "retry")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// Why no further attempt was made.
        reason: staunch_retry::GiveUpReason,
        /// The last attempt's error.
        last: Box<Error<E>>,
    },
    /// The retry budget refused a retry: the dependency is failing for many requests, and
    /// retrying would add load to it. `last` is the last attempt's error, classified.
    #[cfg(feature = "retry")]
    BudgetExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error<E>>,
    },
    /// A failure the fault-injection layer made up in the dependency's place (it stands for
    /// a real one: retried and counted by a breaker like one). Feature `fault`.
    #[cfg(feature = "fault")]
    FaultInjected(staunch_fault::FaultInjected),
    /// The outlier balancer had no endpoint to send the call to (every replica was removed).
    /// Feature `outlier`.
    #[cfg(feature = "outlier")]
    NoEndpoints(staunch_outlier::NoEndpoints),
    /// A fallback was asked to answer and its backup failed; the backup's error is its
    /// [`backup_error`](staunch_fallback::FallbackFailed::backup_error). Feature `fallback`.
    #[cfg(feature = "fallback")]
    FallbackFailed(staunch_fallback::FallbackFailed),
    /// A fallback's rule or answer panicked: the call failed, the fallback keeps working.
    /// Feature `fallback`.
    #[cfg(feature = "fallback")]
    FallbackPanicked(staunch_fallback::FallbackPanicked),
    /// An error of another type (from a layer outside staunch, or an inner error wrapped in
    /// another type).
    Other(BoxError),
}

impl<E> Error<E>
where
    E: StdError + Send + Sync + 'static,
{
    /// Classifies a boxed error: the inner error type `E` first, then the retry layer's
    /// [`RetryExhausted`](staunch_retry::RetryExhausted) (as
    /// [`RetriesExhausted`](Error::RetriesExhausted) or
    /// [`BudgetExhausted`](Error::BudgetExhausted), the last attempt's error classified the
    /// same way), then the fallback's, the fault injector's and the outlier balancer's
    /// errors, then a staunch
    /// rejection anywhere in the source chain, then a timeout anywhere in the chain, else
    /// `Other`.
    pub fn from_box(err: BoxError) -> Self {
        let err = match err.downcast::<E>() {
            Ok(inner) => return Error::Inner(*inner),
            Err(err) => err,
        };
        #[cfg(feature = "retry")]
        let err = match err.downcast::<staunch_retry::RetryExhausted>() {
            Ok(gave_up) => return Self::gave_up(*gave_up),
            Err(err) => err,
        };
        // Before the rejections: a failed backup's own rejection is in its source chain.
        #[cfg(feature = "fallback")]
        let err = match err.downcast::<staunch_fallback::FallbackFailed>() {
            Ok(failed) => return Error::FallbackFailed(*failed),
            Err(err) => match err.downcast::<staunch_fallback::FallbackPanicked>() {
                Ok(panicked) => return Error::FallbackPanicked(*panicked),
                Err(err) => err,
            },
        };
        #[cfg(feature = "fault")]
        let err = match err.downcast::<staunch_fault::FaultInjected>() {
            Ok(injected) => return Error::FaultInjected(*injected),
            Err(err) => err,
        };
        #[cfg(feature = "outlier")]
        let err = match err.downcast::<staunch_outlier::NoEndpoints>() {
            Ok(none) => return Error::NoEndpoints(*none),
            Err(err) => err,
        };
        match rejection_of(&*err) {
            Some(Rejection::BreakerOpen(open)) => return Error::BreakerOpen(open.clone()),
            Some(Rejection::BulkheadFull(full)) => return Error::BulkheadFull(full.clone()),
            Some(Rejection::DeadlineExpired(expired)) => {
                return Error::DeadlineExpired(expired.clone());
            }
            Some(Rejection::RateLimited(limited)) => return Error::RateLimited(limited.clone()),
            Some(_) | None => {}
        }
        #[cfg(feature = "timeout")]
        if let Some(elapsed) = staunch_timeout::Elapsed::find(&*err) {
            return Error::Elapsed(*elapsed);
        }
        Error::Other(err)
    }

    /// Converts back into a boxed error, unwrapped: the inner error or the rejection itself
    /// (so `err.is::<BreakerOpen>()` holds on the result), and for the retries' variants the
    /// retry layer's [`RetryExhausted`](staunch_retry::RetryExhausted) around the last
    /// error, so that [`from_box`](Self::from_box) gives back the same variant.
    pub fn into_box_error(self) -> BoxError {
        match self {
            Error::Inner(e) => Box::new(e),
            Error::BreakerOpen(e) => Box::new(e),
            Error::BulkheadFull(e) => Box::new(e),
            Error::DeadlineExpired(e) => Box::new(e),
            Error::RateLimited(e) => Box::new(e),
            #[cfg(feature = "timeout")]
            Error::Elapsed(e) => Box::new(e),
            #[cfg(feature = "retry")]
            Error::RetriesExhausted {
                attempts,
                reason,
                last,
            } => Box::new(staunch_retry::RetryExhausted::new(
                attempts,
                reason,
                last.into_box_error(),
            )),
            #[cfg(feature = "retry")]
            Error::BudgetExhausted { attempts, last } => {
                Box::new(staunch_retry::RetryExhausted::new(
                    attempts,
                    staunch_retry::GiveUpReason::BudgetExhausted,
                    last.into_box_error(),
                ))
            }
            #[cfg(feature = "fault")]
            Error::FaultInjected(e) => Box::new(e),
            #[cfg(feature = "outlier")]
            Error::NoEndpoints(e) => Box::new(e),
            #[cfg(feature = "fallback")]
            Error::FallbackFailed(e) => Box::new(e),
            #[cfg(feature = "fallback")]
            Error::FallbackPanicked(e) => Box::new(e),
            Error::Other(e) => e,
        }
    }

    /// The variant for the retry layer's give-up, with the last attempt's error classified.
    #[cfg(feature = "retry")]
    fn gave_up(gave_up: staunch_retry::RetryExhausted) -> Self {
        use staunch_retry::GiveUpReason;
        let (attempts, reason) = (gave_up.attempts(), gave_up.reason());
        let last = Box::new(Self::from_box(gave_up.into_last()));
        match reason {
            GiveUpReason::BudgetExhausted => Error::BudgetExhausted { attempts, last },
            reason => Error::RetriesExhausted {
                attempts,
                reason,
                last,
            },
        }
    }
}

impl<E> Error<E> {
    /// `true` when a breaker, a bulkhead or a rate limiter refused the call, or it was not
    /// sent because its deadline had passed (it was not made, and retrying it now would not
    /// help).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Error::BreakerOpen(_)
                | Error::BulkheadFull(_)
                | Error::DeadlineExpired(_)
                | Error::RateLimited(_)
        )
    }

    /// What the last attempt ran into: this error, or the `last` of
    /// [`RetriesExhausted`](Error::RetriesExhausted) and [`BudgetExhausted`](Error::BudgetExhausted).
    ///
    /// Match on it to act on the cause: with retries on, a dependency that hangs surfaces as
    /// `RetriesExhausted { last: Elapsed, .. }`, not as `Elapsed`, so `Err(Error::Elapsed(_))`
    /// alone would rarely match; `err.last()` is `Error::Elapsed` either way.
    pub fn last(&self) -> &Self {
        match self {
            #[cfg(feature = "retry")]
            Error::RetriesExhausted { last, .. } | Error::BudgetExhausted { last, .. } => {
                last.last()
            }
            _ => self,
        }
    }

    /// The wrapped service's error, if it was called and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// A reference to the wrapped service's error, if it was called and failed.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }
}

// Each variant either prints its cause or returns it from `source()`, never both, so that an
// error reporter (`anyhow`'s `{:#}`, `tracing`'s error chains) says everything once.
impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Inner(e) => e.fmt(f),
            Error::BreakerOpen(e) => write!(f, "call rejected by circuit breaker `{}`", e.name()),
            Error::BulkheadFull(e) => write!(f, "call rejected by bulkhead `{}`", e.name()),
            Error::DeadlineExpired(_) => f.write_str("call not sent: its deadline had passed"),
            Error::RateLimited(e) => write!(f, "call rejected by rate limiter `{}`", e.name()),
            #[cfg(feature = "timeout")]
            Error::Elapsed(_) => f.write_str("call cancelled by a time limit"),
            #[cfg(feature = "retry")]
            Error::RetriesExhausted {
                attempts, reason, ..
            } => write!(f, "gave up after {attempts} attempts ({reason})"),
            #[cfg(feature = "retry")]
            Error::BudgetExhausted { attempts, .. } => {
                write!(f, "retry budget exhausted after {attempts} attempt(s)")
            }
            #[cfg(feature = "fault")]
            Error::FaultInjected(e) => e.fmt(f),
            #[cfg(feature = "outlier")]
            Error::NoEndpoints(e) => e.fmt(f),
            #[cfg(feature = "fallback")]
            Error::FallbackFailed(e) => e.fmt(f),
            #[cfg(feature = "fallback")]
            Error::FallbackPanicked(e) => e.fmt(f),
            Error::Other(e) => e.fmt(f),
        }
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            // Printed by `Display`: their causes come next.
            Error::Inner(e) => e.source(),
            Error::Other(e) => e.source(),
            #[cfg(feature = "fault")]
            Error::FaultInjected(e) => e.source(),
            #[cfg(feature = "outlier")]
            Error::NoEndpoints(e) => e.source(),
            #[cfg(feature = "fallback")]
            Error::FallbackFailed(e) => e.source(),
            #[cfg(feature = "fallback")]
            Error::FallbackPanicked(e) => e.source(),
            // The rejection or the timeout itself (their details are not in `Display`), so
            // that `rejection_of` and `Elapsed::find` still find them when this error is
            // boxed and passed through another layer.
            Error::BreakerOpen(e) => Some(e),
            Error::BulkheadFull(e) => Some(e),
            Error::DeadlineExpired(e) => Some(e),
            Error::RateLimited(e) => Some(e),
            #[cfg(feature = "timeout")]
            Error::Elapsed(e) => Some(e),
            #[cfg(feature = "retry")]
            Error::RetriesExhausted { last, .. } | Error::BudgetExhausted { last, .. } => {
                Some(&**last)
            }
        }
    }
}

impl<E> From<BreakerOpen> for Error<E> {
    fn from(e: BreakerOpen) -> Self {
        Error::BreakerOpen(e)
    }
}

impl<E> From<BulkheadFull> for Error<E> {
    fn from(e: BulkheadFull) -> Self {
        Error::BulkheadFull(e)
    }
}

impl<E> From<DeadlineExpired> for Error<E> {
    fn from(e: DeadlineExpired) -> Self {
        Error::DeadlineExpired(e)
    }
}

impl<E> From<RateLimited> for Error<E> {
    fn from(e: RateLimited) -> Self {
        Error::RateLimited(e)
    }
}

#[cfg(feature = "timeout")]
impl<E> From<staunch_timeout::Elapsed> for Error<E> {
    fn from(e: staunch_timeout::Elapsed) -> Self {
        Error::Elapsed(e)
    }
}

/// Turns the boxed errors of the service it wraps into [`Error<E>`]; put it outermost.
///
/// ```
/// use staunch::{Error, TypedErrorsLayer, BoxError};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut svc = ServiceBuilder::new()
///     .layer(TypedErrorsLayer::<std::io::Error>::new())
///     .service(service_fn(|_: ()| async {
///         Err::<(), BoxError>(Box::new(std::io::Error::other("reset")))
///     }));
/// let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
/// assert!(matches!(err, Error::Inner(e) if e.to_string() == "reset"));
/// # }
/// ```
pub struct TypedErrorsLayer<E> {
    _error: PhantomData<fn() -> E>,
}

impl<E> TypedErrorsLayer<E> {
    /// A layer producing `Error<E>`.
    pub const fn new() -> Self {
        Self {
            _error: PhantomData,
        }
    }
}

impl<E> Default for TypedErrorsLayer<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Clone for TypedErrorsLayer<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for TypedErrorsLayer<E> {}

impl<E> fmt::Debug for TypedErrorsLayer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypedErrorsLayer")
    }
}

impl<S, E> Layer<S> for TypedErrorsLayer<E> {
    type Service = TypedErrors<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        TypedErrors::new(inner)
    }
}

/// The service built by [`TypedErrorsLayer`]: its errors are [`Error<E>`].
pub struct TypedErrors<S, E> {
    inner: S,
    _error: PhantomData<fn() -> E>,
}

impl<S, E> TypedErrors<S, E> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            _error: PhantomData,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, E> Clone for TypedErrors<S, E> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<S: fmt::Debug, E> fmt::Debug for TypedErrors<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedErrors")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, E, Req> Service<Req> for TypedErrors<S, E>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    E: StdError + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = Error<E>;
    type Future = TypedErrorsFuture<S::Future, E>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Error::from_box(e.into()))
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        TypedErrorsFuture {
            inner: self.inner.call(req),
            _error: PhantomData,
        }
    }
}

pin_project! {
    /// The response future of [`TypedErrors`].
    pub struct TypedErrorsFuture<F, E> {
        #[pin]
        inner: F,
        _error: PhantomData<fn() -> E>,
    }
}

impl<F, E> fmt::Debug for TypedErrorsFuture<F, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypedErrorsFuture")
    }
}

impl<F, T, Err, E> Future for TypedErrorsFuture<F, E>
where
    F: Future<Output = Result<T, Err>>,
    Err: Into<BoxError>,
    E: StdError + Send + Sync + 'static,
{
    type Output = Result<T, Error<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(res)) => Poll::Ready(Ok(res)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(Error::from_box(e.into()))),
        }
    }
}

#[cfg(all(test, feature = "outlier"))]
mod outlier_tests {
    use super::{BoxError, Error};

    #[test]
    fn no_endpoints_is_its_own_variant_and_goes_back_as_it_was() {
        let boxed: BoxError = Box::new(staunch_outlier::NoEndpoints);
        let err = Error::<std::io::Error>::from_box(boxed);
        assert!(matches!(err, Error::NoEndpoints(_)), "{err:?}");
        assert_eq!(err.to_string(), "no endpoint to send the call to");
        assert!(err.into_box_error().is::<staunch_outlier::NoEndpoints>());
    }
}

#[cfg(all(test, feature = "fault", feature = "fallback"))]
mod fault_and_fallback_tests {
    use std::sync::Arc;

    use staunch_core::{BulkheadFull, BulkheadFullReason};
    use staunch_fallback::FallbackPolicy;
    use staunch_fault::{FaultInjected, FaultKind};

    use super::{BoxError, Error};

    type E = std::io::Error;

    fn full(name: &str) -> BoxError {
        Box::new(BulkheadFull::new(
            Arc::from(name),
            4,
            BulkheadFullReason::QueueFull,
        ))
    }

    #[test]
    fn an_injected_fault_is_its_own_variant_and_not_a_rejection() {
        let boxed: BoxError = Box::new(FaultInjected::error(Arc::from("payment"), 503));
        let err = Error::<E>::from_box(boxed);
        let Error::FaultInjected(injected) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (injected.name(), injected.kind(), injected.status()),
            ("payment", FaultKind::Error, Some(503))
        );
        assert!(!err.is_rejection());
        assert_eq!(err.to_string(), injected.to_string());
        // And back: the boxed error is the injector's own again.
        assert!(err.into_box_error().is::<FaultInjected>());
        let abort = Error::<E>::from_box(Box::new(FaultInjected::abort(Arc::from("payment"))));
        assert!(matches!(abort, Error::FaultInjected(ref f) if f.kind() == FaultKind::Abort));
    }

    #[tokio::test]
    async fn a_failed_backup_is_fallback_failed_even_when_the_backup_was_refused() {
        let policy = FallbackPolicy::<u32>::builder("db").build().unwrap();
        // The backup's own bulkhead refuses it: without the fallback variant this would read
        // as the backup's `BulkheadFull`, hiding that a fallback ran.
        let failed = policy
            .call_or_else(async { Err::<u32, _>(full("primary")) }, |_, _| async {
                Err::<u32, _>(full("backup"))
            })
            .await
            .unwrap_err();
        let err = Error::<E>::from_box(failed);
        let Error::FallbackFailed(f) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(f.name(), "db");
        assert!(f.backup_error().is::<BulkheadFull>());
        assert!(
            err.to_string().contains("backup of fallback `db` failed"),
            "{err}"
        );
        // The backup's rejection is still in the source chain, for an outer layer to find.
        assert!(staunch_core::rejection_of(&err).is_some());
        assert!(
            err.into_box_error()
                .is::<staunch_fallback::FallbackFailed>()
        );
    }

    #[tokio::test]
    async fn a_panicking_fallback_is_fallback_panicked() {
        let policy = FallbackPolicy::<u32>::builder("db").build().unwrap();
        let answer = staunch_fallback::Answer::function(|_, _| -> u32 { panic!("no default") });
        let panicked = policy
            .call(async { Err::<u32, _>(full("primary")) }, &answer)
            .await
            .unwrap_err();
        let err = Error::<E>::from_box(panicked);
        assert!(
            matches!(err, Error::FallbackPanicked(ref p) if p.message() == "no default"),
            "{err:?}"
        );
        assert!(!err.is_rejection());
    }
}
