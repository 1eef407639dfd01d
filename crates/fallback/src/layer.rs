//! [`FallbackLayer`]: the tower layer over a [`FallbackPolicy`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use crate::FallbackPolicy;
use crate::answer::{Answer, Backup};
use crate::future::{Plain, Wrap};
use crate::service::{Copies, FallbackService};

/// Answers the calls its [`FallbackPolicy`] chooses with a fallback: a value or function
/// ([`new`](Self::new)) or another service ([`service`](Self::service)).
///
/// The service's response type is the inner one's; a fallback's response is marked the way
/// the policy says (the [`Fallback`](crate::Fallback) extension for a policy made by
/// [`FallbackPolicy::http`]). [`answered`](Self::answered) makes it answer
/// [`Answered<Res>`](crate::Answered) instead, for response types that carry no mark. Its
/// error is a [`BoxError`](staunch_core::BoxError): the inner error as it was when no rule
/// chose it, [`FallbackPanicked`](crate::FallbackPanicked) or
/// [`FallbackFailed`](crate::FallbackFailed) otherwise.
///
/// Readiness is the inner service's. A call the primary answers costs a poll of the inner
/// future and, when the policy has response rules, their check: the response future wraps
/// the inner one, without boxing or allocating. Only a backup service's call is boxed.
///
/// Where it goes: outermost, outside the retry layer and the circuit breaker, so it answers
/// once everything else has given up, breaker-open refusals included.
///
/// ```
/// use staunch_fallback::{Answer, FallbackLayer, FallbackPolicy};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = FallbackPolicy::builder("recommendations").on_any_error().build().unwrap();
/// let mut svc = ServiceBuilder::new()
///     .layer(FallbackLayer::new(policy, Answer::value(Vec::<u32>::new())))
///     .service(service_fn(|user: u32| async move {
///         if user == 0 { Err(std::io::Error::other("down")) } else { Ok(vec![user]) }
///     }));
/// assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), vec![7]);
/// assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), Vec::<u32>::new());
/// # }
/// ```
pub struct FallbackLayer<Res, A, O = Plain> {
    shared: Arc<Copies<Res, A>>,
    _output: PhantomData<fn() -> O>,
}

impl<Res, A, O> Clone for FallbackLayer<Res, A, O> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            _output: PhantomData,
        }
    }
}

impl<Res, A: fmt::Debug, O> fmt::Debug for FallbackLayer<Res, A, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("policy", &self.shared.first().policy)
            .field("answer", &self.shared.first().answer)
            .finish()
    }
}

impl<Res> FallbackLayer<Res, Answer<Res>> {
    /// A layer answering with `answer` (a value or a function) on the calls `policy` chooses.
    /// Requests are not kept.
    pub fn new(policy: FallbackPolicy<Res>, answer: Answer<Res>) -> Self {
        Self {
            shared: Arc::new(Copies::new(policy, answer)),
            _output: PhantomData,
        }
    }
}

impl<Res, F: Clone> FallbackLayer<Res, Backup<F>> {
    /// A layer answering with the service `backup` on the calls `policy` chooses: it is
    /// called with a clone of the request, which each call therefore takes before it goes
    /// in (`Req: Clone`). See [`Backup`] for readiness, boxing and errors.
    pub fn service(policy: FallbackPolicy<Res>, backup: F) -> Self {
        Self {
            shared: Arc::new(Copies::new(policy, Backup::new(backup))),
            _output: PhantomData,
        }
    }
}

impl<Res, A, O> FallbackLayer<Res, A, O> {
    /// The layer's services answer [`Answered<Res>`](crate::Answered): the response, and
    /// whether (and why) a fallback gave it.
    pub fn answered(self) -> FallbackLayer<Res, A, Wrap> {
        FallbackLayer {
            shared: self.shared,
            _output: PhantomData,
        }
    }

    /// The policy (a handle: its clones share the counters).
    pub fn policy(&self) -> &FallbackPolicy<Res> {
        &self.shared.first().policy
    }
}

impl<S, Res, A, O> Layer<S> for FallbackLayer<Res, A, O> {
    type Service = FallbackService<S, Res, A, O>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService::new(inner, Arc::clone(&self.shared))
    }
}
