//! [`FallbackPolicy`]: the engine. Which outcomes of a call a fallback answers, and the
//! counters of what it did.

use std::error::Error;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use staunch_core::{BoxError, ConfigError, rejection_of};

use crate::error::{Callback, FallbackPanicked};
use crate::status::{StatusRange, StatusSet};
use crate::{Cause, Fallback, Reason, RejectionKind, Rejections};
#[cfg(feature = "metrics")]
use staunch_core::telemetry::{label, metric};

/// The error rule: which errors (that are not a chosen rejection) the fallback answers.
pub(crate) type ErrorRule = Arc<dyn Fn(&(dyn Error + Send + Sync + 'static)) -> bool + Send + Sync>;
/// The response rule: which responses the fallback replaces.
pub(crate) type ResponseRule<Res> = Arc<dyn Fn(&Res) -> bool + Send + Sync>;

/// Counters shared by a policy's clones. Calls the primary answers are not counted: that
/// path touches no shared memory.
#[derive(Debug, Default)]
struct Counters {
    rejections: AtomicU64,
    errors: AtomicU64,
    statuses: AtomicU64,
    responses: AtomicU64,
    panicked: AtomicU64,
    failed: AtomicU64,
}

/// A snapshot of a policy's counters ([`FallbackPolicy::metrics`]).
///
/// Calls the primary answered are not counted (that path costs nothing); a fallback is
/// counted when its rule fires, whether its answer then succeeds, panics or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct FallbackMetrics {
    /// Fallbacks for a rejection by a layer further in ([`Reason::Rejected`]).
    pub rejections: u64,
    /// Fallbacks for an error the error rule chose ([`Reason::Error`]).
    pub errors: u64,
    /// Fallbacks for a status the status rule chose ([`Reason::Status`]).
    pub statuses: u64,
    /// Fallbacks for a response the response rule chose ([`Reason::Response`]).
    pub responses: u64,
    /// Calls failed with [`FallbackPanicked`]: a rule, an answer or a backup panicked.
    pub panicked: u64,
    /// Calls failed with [`FallbackFailed`](crate::FallbackFailed): the backup failed.
    pub failed: u64,
}

impl FallbackMetrics {
    /// Every fallback fired, whatever the reason.
    pub fn total(&self) -> u64 {
        self.rejections + self.errors + self.statuses + self.responses
    }
}

pub(crate) struct Inner<Res> {
    name: Arc<str>,
    rejections: Rejections,
    any_error: bool,
    on_error: Option<ErrorRule>,
    statuses: StatusSet,
    status_of: Option<fn(&Res) -> u16>,
    on_response: Option<ResponseRule<Res>>,
    mark: Option<fn(&mut Res, Fallback)>,
    counters: Counters,
}

/// What a policy makes of a call's result ([`FallbackPolicy::check`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Verdict<Res> {
    /// No rule fired: the result stands (its error boxed as it was).
    Primary(Result<Res, BoxError>),
    /// A rule fired: answer with the fallback.
    Fallback {
        /// Which rule.
        reason: Reason,
        /// What the primary call ended with.
        cause: Cause<Res>,
    },
    /// A rule panicked: the call fails with this error.
    Panicked(FallbackPanicked),
}

/// A fallback policy: on chosen outcomes of a call (a staunch rejection, an error kind, a
/// response status or class) the call is answered by a fallback instead.
///
/// The policy decides *when*; the answer says *what*: a value, a function of the error or
/// response ([`Answer`](crate::Answer)), or a backup service
/// ([`FallbackLayer::service`](crate::FallbackLayer::service)). The engine runs a call
/// itself ([`call`](Self::call), [`call_or_else`](Self::call_or_else)) or only judges a
/// result ([`check`](Self::check)); the [`FallbackLayer`](crate::FallbackLayer) is the tower
/// adapter. Clones share the counters ([`metrics`](Self::metrics)).
///
/// The rules, checked in this order:
///
/// 1. an error holding a staunch rejection of a chosen kind
///    ([`rejections`](FallbackPolicyBuilder::rejections), every kind by default), found
///    anywhere in the error's source chain: [`Reason::Rejected`];
/// 2. any other error the error rule chooses ([`on_any_error`](FallbackPolicyBuilder::on_any_error),
///    [`on_error`](FallbackPolicyBuilder::on_error)): [`Reason::Error`];
/// 3. a response with a chosen status ([`on_status`](FallbackPolicyBuilder::on_status)):
///    [`Reason::Status`];
/// 4. a response the response rule chooses ([`on_response`](FallbackPolicyBuilder::on_response)):
///    [`Reason::Response`].
///
/// Everything else is the primary's result, untouched. A rule that panics fails that one
/// call with [`FallbackPanicked`]; the policy keeps working.
///
/// ```
/// use staunch_fallback::{Answer, Answered, FallbackPolicy, Reason, RejectionKind};
/// use staunch_core::{BoxError, BreakerOpen};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let policy = FallbackPolicy::builder("prices").build().unwrap();
/// let cached = Answer::value(9.99_f64);
/// let open = || async { Err::<f64, BoxError>(Box::new(BreakerOpen::new("prices".into(), None))) };
/// let answered = policy.call(open(), &cached).await.unwrap();
/// assert_eq!(
///     answered,
///     Answered::Fallback { response: 9.99, reason: Reason::Rejected(RejectionKind::BreakerOpen) }
/// );
/// // Any other error is not a rejection, and this policy has no error rule: it stands.
/// let failed = policy.call(async { Err::<f64, _>(std::io::Error::other("reset")) }, &cached);
/// assert!(failed.await.unwrap_err().is::<std::io::Error>());
/// assert_eq!(policy.metrics().rejections, 1);
/// # }
/// ```
pub struct FallbackPolicy<Res> {
    pub(crate) inner: Arc<Inner<Res>>,
}

impl<Res> Clone for FallbackPolicy<Res> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<Res> fmt::Debug for FallbackPolicy<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("FallbackPolicy")
            .field("name", &inner.name)
            .field("rejections", &inner.rejections)
            .field("any_error", &inner.any_error)
            .field("error_rule", &inner.on_error.is_some())
            .field("statuses", &inner.statuses)
            .field("response_rule", &inner.on_response.is_some())
            .finish_non_exhaustive()
    }
}

impl<Res> FallbackPolicy<Res> {
    /// Starts a policy called `name` (in errors, metrics and traces) for responses of type
    /// `Res`. It answers every staunch rejection until told otherwise.
    ///
    /// For `http::Response`, start from [`http`](Self::http) instead (feature `http`): it
    /// reads statuses and marks its fallbacks with the [`Fallback`] extension.
    pub fn builder(name: impl Into<Arc<str>>) -> FallbackPolicyBuilder<Res> {
        FallbackPolicyBuilder {
            name: name.into(),
            rejections: Rejections::ALL,
            any_error: false,
            on_error: None,
            statuses: Vec::new(),
            status_of: None,
            on_response: None,
            mark: None,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> FallbackMetrics {
        let c = &self.inner.counters;
        FallbackMetrics {
            rejections: c.rejections.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            statuses: c.statuses.load(Ordering::Relaxed),
            responses: c.responses.load(Ordering::Relaxed),
            panicked: c.panicked.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Judges one call's result: the primary's, or a fallback for a reason, or a panicked
    /// rule. A fallback or a panic is counted here.
    #[inline]
    pub fn check<E: Into<BoxError>>(&self, result: Result<Res, E>) -> Verdict<Res> {
        match result {
            Ok(response) => self.check_response(response),
            Err(error) => self.check_error(error.into()),
        }
    }

    #[inline]
    fn check_response(&self, response: Res) -> Verdict<Res> {
        let inner = &*self.inner;
        if inner.status_of.is_none() && inner.on_response.is_none() {
            return Verdict::Primary(Ok(response));
        }
        self.check_response_rules(response)
    }

    fn check_response_rules(&self, response: Res) -> Verdict<Res> {
        let inner = &*self.inner;
        if let Some(status_of) = inner.status_of {
            let status = status_of(&response);
            if inner.statuses.contains(status) {
                return self.fire(Reason::Status(status), Cause::Response(response));
            }
        }
        if let Some(rule) = &inner.on_response {
            match catch_unwind(AssertUnwindSafe(|| rule(&response))) {
                Ok(true) => return self.fire(Reason::Response, Cause::Response(response)),
                Ok(false) => {}
                Err(panic) => {
                    return Verdict::Panicked(self.panicked(Callback::ResponseRule, &*panic));
                }
            }
        }
        Verdict::Primary(Ok(response))
    }

    #[cold]
    fn check_error(&self, error: BoxError) -> Verdict<Res> {
        let inner = &*self.inner;
        if let Some(kind) = rejection_of(&*error).as_ref().and_then(RejectionKind::of)
            && inner.rejections.contains(kind)
        {
            return self.fire(Reason::Rejected(kind), Cause::Error(error));
        }
        if inner.any_error {
            return self.fire(Reason::Error, Cause::Error(error));
        }
        if let Some(rule) = &inner.on_error {
            match catch_unwind(AssertUnwindSafe(|| rule(&*error))) {
                Ok(true) => return self.fire(Reason::Error, Cause::Error(error)),
                Ok(false) => {}
                Err(panic) => {
                    return Verdict::Panicked(self.panicked(Callback::ErrorRule, &*panic));
                }
            }
        }
        Verdict::Primary(Err(error))
    }

    fn fire(&self, reason: Reason, cause: Cause<Res>) -> Verdict<Res> {
        let inner = &*self.inner;
        let counter = match reason {
            Reason::Rejected(_) => &inner.counters.rejections,
            Reason::Error => &inner.counters.errors,
            Reason::Status(_) => &inner.counters.statuses,
            Reason::Response => &inner.counters.responses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(fallback = %inner.name, %reason, "answering with the fallback");
        #[cfg(feature = "metrics")]
        metrics::counter!(
            metric::FALLBACK_USED,
            label::DEPENDENCY => inner.name.to_string(),
            label::REASON => reason.as_str()
        )
        .increment(1);
        Verdict::Fallback { reason, cause }
    }

    /// Counts and reports a panic in `callback`.
    #[cold]
    pub(crate) fn panicked(
        &self,
        callback: Callback,
        panic: &(dyn std::any::Any + Send),
    ) -> FallbackPanicked {
        let inner = &*self.inner;
        let error = FallbackPanicked::new(&inner.name, callback, panic);
        inner.counters.panicked.fetch_add(1, Ordering::Relaxed);
        tracing::error!(fallback = %inner.name, %error, "fallback callback panicked");
        #[cfg(feature = "metrics")]
        metrics::counter!(
            metric::FALLBACK_FAILED,
            label::DEPENDENCY => inner.name.to_string(),
            label::REASON => "panicked"
        )
        .increment(1);
        error
    }

    /// Counts and reports a backup's failure.
    #[cold]
    pub(crate) fn failed(&self, reason: Reason, source: BoxError) -> crate::FallbackFailed {
        let inner = &*self.inner;
        inner.counters.failed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(fallback = %inner.name, %reason, error = %source, "fallback backup failed");
        #[cfg(feature = "metrics")]
        metrics::counter!(
            metric::FALLBACK_FAILED,
            label::DEPENDENCY => inner.name.to_string(),
            label::REASON => "backup_error"
        )
        .increment(1);
        crate::FallbackFailed::new(&inner.name, reason, source)
    }

    /// Marks `response` as a fallback for `reason`, the way the policy was told to
    /// ([`mark`](FallbackPolicyBuilder::mark); the [`Fallback`] extension for a policy made
    /// by [`http`](Self::http)).
    pub fn mark(&self, response: &mut Res, reason: Reason) {
        if let Some(mark) = self.inner.mark {
            mark(response, Fallback::new(reason));
        }
    }
}

#[cfg(feature = "http")]
impl<B> FallbackPolicy<http::Response<B>> {
    /// Starts a policy for `http::Response`s: as [`builder`](Self::builder), and it reads
    /// response statuses for [`on_status`](FallbackPolicyBuilder::on_status) and puts the
    /// [`Fallback`] extension on every response its fallback answers (feature `http`).
    ///
    /// ```
    /// use staunch_fallback::FallbackPolicy;
    ///
    /// let policy = FallbackPolicy::<http::Response<String>>::http("catalog")
    ///     .on_status(500..=599)
    ///     .build()
    ///     .unwrap();
    /// # drop(policy);
    /// ```
    pub fn http(name: impl Into<Arc<str>>) -> FallbackPolicyBuilder<http::Response<B>> {
        fn status<B>(response: &http::Response<B>) -> u16 {
            response.status().as_u16()
        }
        fn mark<B>(response: &mut http::Response<B>, fallback: Fallback) {
            response.extensions_mut().insert(fallback);
        }
        let mut builder = Self::builder(name);
        builder.status_of = Some(status::<B>);
        builder.mark = Some(mark::<B>);
        builder
    }
}

/// Builds a [`FallbackPolicy`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct FallbackPolicyBuilder<Res> {
    name: Arc<str>,
    rejections: Rejections,
    any_error: bool,
    on_error: Option<ErrorRule>,
    statuses: Vec<StatusRange>,
    status_of: Option<fn(&Res) -> u16>,
    on_response: Option<ResponseRule<Res>>,
    mark: Option<fn(&mut Res, Fallback)>,
}

impl<Res> fmt::Debug for FallbackPolicyBuilder<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackPolicyBuilder")
            .field("name", &self.name)
            .field("rejections", &self.rejections)
            .field("any_error", &self.any_error)
            .field("statuses", &self.statuses)
            .finish_non_exhaustive()
    }
}

impl<Res> FallbackPolicyBuilder<Res> {
    /// The rejections the fallback answers (default [`Rejections::ALL`]; `Rejections::NONE`
    /// for none).
    pub fn rejections(mut self, rejections: Rejections) -> Self {
        self.rejections = rejections;
        self
    }

    /// Answers every error, rejection or not.
    pub fn on_any_error(mut self) -> Self {
        self.any_error = true;
        self
    }

    /// Answers the errors `rule` chooses (besides the chosen rejections). It sees the error
    /// boxed as the primary call returned it: use `e.is::<T>()`, `e.downcast_ref::<T>()` or
    /// walk `e.source()`. A rule that panics fails the call with [`FallbackPanicked`].
    pub fn on_error<F>(mut self, rule: F) -> Self
    where
        F: Fn(&(dyn Error + Send + Sync + 'static)) -> bool + Send + Sync + 'static,
    {
        self.on_error = Some(Arc::new(rule));
        self
    }

    /// Answers responses with a status in `statuses` (a status, or a range such as
    /// `500..=599`); call it again to add more. Needs a way to read statuses: a policy made
    /// by [`FallbackPolicy::http`] has one, others set [`status_of`](Self::status_of).
    pub fn on_status(mut self, statuses: impl Into<StatusRange>) -> Self {
        self.statuses.push(statuses.into());
        self
    }

    /// How to read a response's status, for [`on_status`](Self::on_status) on response types
    /// other than `http::Response` (a `reqwest::Response`, a type of your own).
    pub fn status_of(mut self, status: fn(&Res) -> u16) -> Self {
        self.status_of = Some(status);
        self
    }

    /// Replaces the responses `rule` chooses. It runs on every response the primary call
    /// returns, so keep it cheap. A rule that panics fails the call with
    /// [`FallbackPanicked`].
    pub fn on_response<F>(mut self, rule: F) -> Self
    where
        F: Fn(&Res) -> bool + Send + Sync + 'static,
    {
        self.on_response = Some(Arc::new(rule));
        self
    }

    /// How a fallback's response says it is one: `mark` runs on every response a fallback
    /// answers with (a policy made by [`FallbackPolicy::http`] inserts the [`Fallback`]
    /// extension). Without one, learn it from [`Answered`](crate::Answered).
    pub fn mark(mut self, mark: fn(&mut Res, Fallback)) -> Self {
        self.mark = Some(mark);
        self
    }

    pub(crate) fn set_rejections(&mut self, rejections: Rejections) {
        self.rejections = rejections;
    }

    pub(crate) fn set_any_error(&mut self, any_error: bool) {
        self.any_error = any_error;
    }

    pub(crate) fn push_status(&mut self, range: StatusRange) {
        self.statuses.push(range);
    }

    /// Builds the policy.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `statuses` for a status outside `100..=599` (or a
    /// range whose first status is past its last), or statuses with no way to read them;
    /// `rejections` when no rule is left at all (the fallback would never answer).
    pub fn build(self) -> Result<FallbackPolicy<Res>, ConfigError> {
        #[cfg(feature = "metrics")]
        staunch_core::telemetry::describe_metrics();
        let statuses = StatusSet::of(&self.statuses)?;
        let status_of = if statuses.is_empty() {
            None
        } else {
            Some(self.status_of.ok_or_else(|| {
                ConfigError::new(
                    "statuses",
                    "need a way to read a response's status: start from `FallbackPolicy::http` or set `status_of`",
                )
            })?)
        };
        if self.rejections.is_empty()
            && !self.any_error
            && self.on_error.is_none()
            && status_of.is_none()
            && self.on_response.is_none()
        {
            return Err(ConfigError::new(
                "rejections",
                "is empty and no other rule is set: the fallback would never answer",
            ));
        }
        Ok(FallbackPolicy {
            inner: Arc::new(Inner {
                name: self.name,
                rejections: self.rejections,
                any_error: self.any_error,
                on_error: self.on_error,
                statuses,
                status_of,
                on_response: self.on_response,
                mark: self.mark,
                counters: Counters::default(),
            }),
        })
    }
}
