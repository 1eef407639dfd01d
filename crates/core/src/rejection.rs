//! Rejections: calls a resilience layer refused to run, and how to recognise them anywhere.
//!
//! A rejection means "back off": the circuit is open or the bulkhead is full, or the caller's
//! deadline had passed before the call was sent. Retrying one defeats the layer that produced
//! it, so a retry policy must recognise it even after it was boxed into a `tower::BoxError` and
//! wrapped by other errors; and a rejected call never reached the dependency, so a circuit
//! breaker must not count it ([`IgnoreRejections`]). The types live here, in the
//! crate every other staunch crate shares, so that the retry layer can recognise them without
//! depending on the circuit-breaker or bulkhead crates ([`rejection_of`]).

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{Classify, Outcome};

/// The circuit breaker is open (or its half-open probes are all taken) and refused the call
/// without running it.
///
/// A cheap value: cloning it bumps a reference count, it allocates nothing and captures no
/// backtrace. [`retry_after`](Self::retry_after) says when the breaker will next let a call
/// through, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerOpen {
    name: Arc<str>,
    retry_after: Option<Duration>,
}

impl BreakerOpen {
    /// A rejection by the breaker called `name`, which expects to admit calls again after
    /// `retry_after` (if known).
    pub fn new(name: Arc<str>, retry_after: Option<Duration>) -> Self {
        Self { name, retry_after }
    }

    /// The name of the breaker that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the breaker lets a (probe) call through, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit breaker `{}` is open", self.name)?;
        match self.retry_after {
            Some(d) => write!(f, "; calls are rejected for another {d:?}")?,
            None => f.write_str("; calls are rejected until it closes")?,
        }
        f.write_str(" (the dependency is failing: fail fast, serve a fallback, do not retry)")
    }
}

impl Error for BreakerOpen {}

/// Why a bulkhead turned a call away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BulkheadFullReason {
    /// Every permit was taken and the bulkhead does not wait (`max_wait` is zero).
    NoPermit,
    /// The call waited `max_wait` for a permit and none came free.
    WaitTimedOut(Duration),
    /// The queue of waiting calls was at its cap.
    QueueFull,
}

/// The bulkhead had no free permit for the call and did not run it.
///
/// A cheap value like [`BreakerOpen`]. It carries the bulkhead's name, its limit at the time of
/// the rejection, and why the call could not wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadFull {
    name: Arc<str>,
    max_concurrent: usize,
    reason: BulkheadFullReason,
}

impl BulkheadFull {
    /// A rejection by the bulkhead called `name`, whose limit was `max_concurrent`.
    pub fn new(name: Arc<str>, max_concurrent: usize, reason: BulkheadFullReason) -> Self {
        Self {
            name,
            max_concurrent,
            reason,
        }
    }

    /// The name of the bulkhead that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bulkhead's concurrency limit when it rejected the call.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Why the call could not wait for a permit.
    pub fn reason(&self) -> BulkheadFullReason {
        self.reason
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulkhead `{}` is full ({} calls in flight",
            self.name, self.max_concurrent
        )?;
        match self.reason {
            BulkheadFullReason::NoPermit => f.write_str(", no waiting allowed)")?,
            BulkheadFullReason::WaitTimedOut(d) => write!(f, ", waited {d:?} for a permit)")?,
            BulkheadFullReason::QueueFull => f.write_str(", wait queue full)")?,
        }
        f.write_str(" (the dependency is saturated: shed load or raise the limit, do not retry)")
    }
}

impl Error for BulkheadFull {}

/// The caller's deadline had already passed when a layer was about to send the call, so the
/// layer refused it without calling inward: nothing reached the dependency.
///
/// Made by the timeout crate's layers (a per-call time limit or deadline propagation) for a
/// request whose `Deadline` is over; a call that *was* sent and then cut off is an `Elapsed`
/// instead. Like the other rejections it is never retried (the caller has stopped waiting) and
/// never counted by a circuit breaker wrapped in [`IgnoreRejections`] (the dependency did
/// nothing wrong). A cheap value like [`BreakerOpen`]; it carries the name of the layer that
/// refused the call, when that layer has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineExpired {
    name: Option<Arc<str>>,
}

impl DeadlineExpired {
    /// A refusal by the layer called `name` (if it has a name).
    pub fn new(name: Option<Arc<str>>) -> Self {
        Self { name }
    }

    /// The name of the layer that refused the call, if it has one (a named time limit's).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Display for DeadlineExpired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("call not sent")?;
        if let Some(name) = &self.name {
            write!(f, " by `{name}`")?;
        }
        f.write_str(
            ": the caller's deadline had already passed (the caller stopped waiting, do not retry)",
        )
    }
}

impl Error for DeadlineExpired {}

/// A rate limiter had no permit for the call within the time it may wait, and did not run it.
///
/// A cheap value like [`BreakerOpen`]. [`retry_after`](Self::retry_after) says when the
/// limiter will next have a permit (for the rate it enforces at the moment of the rejection;
/// a server's hint may lower that rate further). Like every rejection it is never retried by
/// the staunch retry layer and never counted by a circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    name: Arc<str>,
    retry_after: Duration,
}

impl RateLimited {
    /// A rejection by the rate limiter called `name`, which expects a permit after
    /// `retry_after`.
    pub fn new(name: Arc<str>, retry_after: Duration) -> Self {
        Self { name, retry_after }
    }

    /// The name of the rate limiter that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the limiter has a permit again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limiter `{}` has no permit for another {:?} (the call was not sent: slow down, do not retry at once)",
            self.name, self.retry_after
        )
    }
}

impl Error for RateLimited {}

/// A rejection found by [`rejection_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection<'a> {
    /// A circuit breaker refused the call.
    BreakerOpen(&'a BreakerOpen),
    /// A bulkhead refused the call.
    BulkheadFull(&'a BulkheadFull),
    /// The caller's deadline had passed before the call was sent.
    DeadlineExpired(&'a DeadlineExpired),
    /// A rate limiter had no permit for the call.
    RateLimited(&'a RateLimited),
}

impl Rejection<'_> {
    /// A stable lower-case name for the kind of rejection, used as the `error.type` span field
    /// and in metric labels: `breaker_open`, `bulkhead_full`, `deadline_expired`,
    /// `rate_limited`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Rejection::BreakerOpen(_) => "breaker_open",
            Rejection::BulkheadFull(_) => "bulkhead_full",
            Rejection::DeadlineExpired(_) => "deadline_expired",
            Rejection::RateLimited(_) => "rate_limited",
        }
    }

    /// When the rejecting layer expects to accept calls again, if it knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::BreakerOpen(e) => e.retry_after(),
            Rejection::RateLimited(e) => Some(e.retry_after()),
            Rejection::BulkheadFull(_) | Rejection::DeadlineExpired(_) => None,
        }
    }
}

/// Finds a staunch rejection in `err` or anywhere in its `source()` chain.
///
/// ```
/// use std::sync::Arc;
/// use staunch_core::{rejection_of, BreakerOpen, Rejection};
///
/// let boxed: Box<dyn std::error::Error + Send + Sync> =
///     Box::new(BreakerOpen::new(Arc::from("payment"), None));
/// assert!(matches!(rejection_of(&*boxed), Some(Rejection::BreakerOpen(e)) if e.name() == "payment"));
///
/// let other = std::io::Error::other("connection reset");
/// assert!(rejection_of(&other).is_none());
/// ```
pub fn rejection_of<'a>(err: &'a (dyn Error + 'static)) -> Option<Rejection<'a>> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(open) = e.downcast_ref::<BreakerOpen>() {
            return Some(Rejection::BreakerOpen(open));
        }
        if let Some(full) = e.downcast_ref::<BulkheadFull>() {
            return Some(Rejection::BulkheadFull(full));
        }
        if let Some(expired) = e.downcast_ref::<DeadlineExpired>() {
            return Some(Rejection::DeadlineExpired(expired));
        }
        if let Some(limited) = e.downcast_ref::<RateLimited>() {
            return Some(Rejection::RateLimited(limited));
        }
        current = e.source();
    }
    None
}

/// Wraps a classifier so that a rejection from a layer further in (a full bulkhead, an inner
/// breaker that is open, a call not sent because its deadline had passed) counts as
/// [`Outcome::Ignored`] instead of a failure.
///
/// A circuit breaker measures the health of the dependency. A bulkhead below it that is full
/// says the *caller* is saturated, not that the dependency is failing: counting it would trip
/// the breaker on local load. A call refused because its caller's deadline was over never
/// reached the dependency at all. The layers of `staunch-circuit-breaker` wrap their
/// classifier in this themselves; wrap yours when you drive a breaker by hand with results
/// that may carry a rejection from further in.
///
/// Rejections are recognised in boxed errors (`Box<dyn Error + Send + Sync>`, i.e.
/// `tower::BoxError`, what the staunch layers return), anywhere in their source chain; other
/// error types go to the wrapped classifier unchanged.
///
/// ```
/// use std::sync::Arc;
/// use staunch_core::{
///     AnyError, BoxError, BulkheadFull, BulkheadFullReason, Classify, IgnoreRejections, Outcome,
/// };
///
/// let classify = IgnoreRejections::new(AnyError::new());
/// let full: Result<(), BoxError> =
///     Err(Box::new(BulkheadFull::new(Arc::from("db"), 4, BulkheadFullReason::NoPermit)));
/// assert_eq!(classify.classify(&full), Outcome::Ignored);
/// let failed: Result<(), BoxError> = Err("connection reset".into());
/// assert_eq!(classify.classify(&failed), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreRejections<C> {
    inner: C,
}

impl<C> IgnoreRejections<C> {
    /// Wraps `inner`.
    pub const fn new(inner: C) -> Self {
        Self { inner }
    }

    /// The wrapped classifier.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }
}

impl<Res, Err, C> Classify<Res, Err> for IgnoreRejections<C>
where
    Err: 'static,
    C: Classify<Res, Err>,
{
    #[inline]
    fn classify(&self, result: &Result<Res, Err>) -> Outcome {
        // `Err` is generic, so a boxed error is recognised by type; this is one type-id
        // comparison on the error path and nothing on the success path.
        if let Err(err) = result
            && let Some(boxed) = (err as &dyn Any).downcast_ref::<crate::BoxError>()
            && rejection_of(&**boxed).is_some()
        {
            return Outcome::Ignored;
        }
        self.inner.classify(result)
    }

    fn classify_cancelled(&self) -> Outcome {
        self.inner.classify_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(Box<dyn Error + Send + Sync>);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn rejections_are_found_through_the_source_chain() {
        let full = BulkheadFull::new(Arc::from("inventory"), 8, BulkheadFullReason::QueueFull);
        let wrapped = Wrapper(Box::new(full.clone()));
        assert_eq!(rejection_of(&wrapped), Some(Rejection::BulkheadFull(&full)));
        let twice = Wrapper(Box::new(wrapped));
        assert!(matches!(
            rejection_of(&twice),
            Some(Rejection::BulkheadFull(_))
        ));
        let plain = Wrapper(Box::new(std::io::Error::other("x")));
        assert_eq!(rejection_of(&plain), None);
    }

    #[test]
    fn an_expired_deadline_is_a_rejection_the_breaker_ignores() {
        use crate::BoxError;
        let expired = DeadlineExpired::new(Some(Arc::from("payment")));
        let wrapped = Wrapper(Box::new(expired.clone()));
        assert_eq!(
            rejection_of(&wrapped),
            Some(Rejection::DeadlineExpired(&expired))
        );
        assert_eq!(Rejection::DeadlineExpired(&expired).retry_after(), None);
        let classify = IgnoreRejections::new(crate::AnyError::new());
        let refused: Result<(), BoxError> = Err(Box::new(wrapped));
        assert_eq!(classify.classify(&refused), Outcome::Ignored);
        let text = expired.to_string();
        assert!(text.contains("not sent by `payment`"), "{text}");
        assert!(text.contains("deadline had already passed"), "{text}");
        let unnamed = DeadlineExpired::new(None).to_string();
        assert!(unnamed.starts_with("call not sent: "), "{unnamed}");
    }

    #[test]
    fn a_rate_limited_call_is_a_rejection_with_its_wait() {
        use crate::BoxError;
        let limited = RateLimited::new(Arc::from("search"), Duration::from_millis(40));
        let wrapped = Wrapper(Box::new(limited.clone()));
        assert_eq!(
            rejection_of(&wrapped),
            Some(Rejection::RateLimited(&limited))
        );
        assert_eq!(
            Rejection::RateLimited(&limited).retry_after(),
            Some(Duration::from_millis(40))
        );
        let classify = IgnoreRejections::new(crate::AnyError::new());
        let refused: Result<(), BoxError> = Err(Box::new(wrapped));
        assert_eq!(classify.classify(&refused), Outcome::Ignored);
        let text = limited.to_string();
        assert!(
            text.contains("`search` has no permit for another 40ms"),
            "{text}"
        );
    }

    #[test]
    fn messages_say_what_happened_and_what_to_do() {
        let open = BreakerOpen::new(Arc::from("payment"), Some(Duration::from_secs(5)));
        let text = open.to_string();
        assert!(text.contains("`payment` is open"), "{text}");
        assert!(text.contains("5s"), "{text}");
        assert_eq!(
            Rejection::BreakerOpen(&open).retry_after(),
            Some(Duration::from_secs(5))
        );
        let full = BulkheadFull::new(
            Arc::from("payment"),
            4,
            BulkheadFullReason::WaitTimedOut(Duration::from_millis(100)),
        );
        let text = full.to_string();
        assert!(
            text.contains("`payment` is full (4 calls in flight, waited 100ms"),
            "{text}"
        );
    }
}
