//! Why a fallback answered: [`Reason`], the rejections that can trigger one
//! ([`RejectionKind`], [`Rejections`]), and how the answer is labelled ([`Fallback`],
//! [`Answered`]).

use std::fmt;

use staunch_core::{BoxError, Rejection};

/// A kind of staunch rejection: a call a layer further in refused without running it.
///
/// Found in an error (boxed, wrapped, anywhere in its source chain) with
/// [`rejection_of`](staunch_core::rejection_of).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum RejectionKind {
    /// A circuit breaker was open ([`BreakerOpen`](staunch_core::BreakerOpen)).
    BreakerOpen,
    /// A bulkhead was full ([`BulkheadFull`](staunch_core::BulkheadFull)).
    BulkheadFull,
    /// The caller's deadline had passed before the call was sent
    /// ([`DeadlineExpired`](staunch_core::DeadlineExpired)).
    DeadlineExpired,
    /// A rate limiter had no permit ([`RateLimited`](staunch_core::RateLimited)).
    RateLimited,
}

impl RejectionKind {
    /// Every kind, in declaration order.
    pub const ALL: [RejectionKind; 4] = [
        RejectionKind::BreakerOpen,
        RejectionKind::BulkheadFull,
        RejectionKind::DeadlineExpired,
        RejectionKind::RateLimited,
    ];

    /// The kind of a rejection found by [`rejection_of`](staunch_core::rejection_of); `None`
    /// for a kind this version does not know.
    pub fn of(rejection: &Rejection<'_>) -> Option<Self> {
        match rejection {
            Rejection::BreakerOpen(_) => Some(RejectionKind::BreakerOpen),
            Rejection::BulkheadFull(_) => Some(RejectionKind::BulkheadFull),
            Rejection::DeadlineExpired(_) => Some(RejectionKind::DeadlineExpired),
            Rejection::RateLimited(_) => Some(RejectionKind::RateLimited),
            // A rejection added to staunch-core later: not one a policy can name yet, so it
            // is treated as any other error (the error rule may still answer it).
            _ => None,
        }
    }

    /// The kind's name in settings files and metric labels: `breaker_open`, `bulkhead_full`,
    /// `deadline_expired`, `rate_limited`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectionKind::BreakerOpen => "breaker_open",
            RejectionKind::BulkheadFull => "bulkhead_full",
            RejectionKind::DeadlineExpired => "deadline_expired",
            RejectionKind::RateLimited => "rate_limited",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`RejectionKind`]s: the rejections a policy answers.
///
/// ```
/// use staunch_fallback::{RejectionKind, Rejections};
///
/// let set = Rejections::only(RejectionKind::BreakerOpen).with(RejectionKind::BulkheadFull);
/// assert!(set.contains(RejectionKind::BulkheadFull));
/// assert!(!set.contains(RejectionKind::RateLimited));
/// assert!(Rejections::ALL.contains(RejectionKind::RateLimited));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rejections(u8);

impl Rejections {
    /// No rejection.
    pub const NONE: Rejections = Rejections(0);
    /// Every rejection kind.
    pub const ALL: Rejections = Rejections(0b1111);

    /// Only `kind`.
    pub const fn only(kind: RejectionKind) -> Self {
        Rejections(kind.bit())
    }

    /// This set and `kind`.
    #[must_use]
    pub const fn with(self, kind: RejectionKind) -> Self {
        Rejections(self.0 | kind.bit())
    }

    /// This set without `kind`.
    #[must_use]
    pub const fn without(self, kind: RejectionKind) -> Self {
        Rejections(self.0 & !kind.bit())
    }

    /// Whether `kind` is in the set.
    #[inline]
    pub const fn contains(self, kind: RejectionKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = RejectionKind> {
        RejectionKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl FromIterator<RejectionKind> for Rejections {
    fn from_iter<I: IntoIterator<Item = RejectionKind>>(iter: I) -> Self {
        iter.into_iter().fold(Rejections::NONE, Rejections::with)
    }
}

impl fmt::Debug for Rejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Which rule of a policy fired: why a call was answered by its fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A layer further in refused the call with this kind of rejection.
    Rejected(RejectionKind),
    /// The call failed with an error the error rule chose ([`on_error`] or
    /// [`on_any_error`]).
    ///
    /// [`on_error`]: crate::FallbackPolicyBuilder::on_error
    /// [`on_any_error`]: crate::FallbackPolicyBuilder::on_any_error
    Error,
    /// The call answered with this status, one the status rule chose
    /// ([`on_status`](crate::FallbackPolicyBuilder::on_status)).
    Status(u16),
    /// The call answered with a response the response rule chose
    /// ([`on_response`](crate::FallbackPolicyBuilder::on_response)).
    Response,
}

impl Reason {
    /// The reason as a metric label: the rejection kind (`breaker_open`, ...), `error`,
    /// `status` or `response`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected(kind) => kind.as_str(),
            Reason::Error => "error",
            Reason::Status(_) => "status",
            Reason::Response => "response",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Rejected(kind) => write!(f, "rejected ({kind})"),
            Reason::Error => f.write_str("error"),
            Reason::Status(code) => write!(f, "status {code}"),
            Reason::Response => f.write_str("response"),
        }
    }
}

/// The mark of a response that came from a fallback, not from the primary call.
///
/// With feature `http`, a policy made by [`FallbackPolicy::http`](crate::FallbackPolicy::http)
/// puts it in the extensions of every `http::Response` its fallback answers, and only there:
/// `response.extensions().get::<Fallback>()` is `Some` exactly on fallbacks. For other
/// response types, see [`Answered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Fallback {
    /// Which rule fired.
    pub reason: Reason,
}

impl Fallback {
    /// The mark for a fallback answered for `reason`.
    pub const fn new(reason: Reason) -> Self {
        Self { reason }
    }
}

/// Where a response came from: the primary call, or the fallback (and why).
///
/// The engine's calls ([`FallbackPolicy::call`](crate::FallbackPolicy::call)) return it, and
/// so does the layer made [`answered`](crate::FallbackLayer::answered): the way to tell a
/// fallback for response types that have no extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered<Res> {
    /// The primary call's own response.
    Primary(Res),
    /// The fallback's response.
    Fallback {
        /// The response.
        response: Res,
        /// Which rule fired.
        reason: Reason,
    },
}

impl<Res> Answered<Res> {
    /// The response, wherever it came from.
    pub fn into_inner(self) -> Res {
        match self {
            Answered::Primary(response) | Answered::Fallback { response, .. } => response,
        }
    }

    /// The response, wherever it came from.
    pub fn get_ref(&self) -> &Res {
        match self {
            Answered::Primary(response) | Answered::Fallback { response, .. } => response,
        }
    }

    /// Why the fallback answered, or `None` for the primary's response.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Answered::Primary(_) => None,
            Answered::Fallback { reason, .. } => Some(*reason),
        }
    }

    /// Whether the fallback answered.
    pub fn is_fallback(&self) -> bool {
        matches!(self, Answered::Fallback { .. })
    }
}

/// What the primary call ended with, handed to a fallback function
/// ([`Answer::function`](crate::Answer::function)).
#[derive(Debug)]
#[non_exhaustive]
pub enum Cause<Res> {
    /// The primary call failed (or was refused) with this error.
    Error(BoxError),
    /// The primary call answered with this response, one a rule chose to replace.
    Response(Res),
}

impl<Res> Cause<Res> {
    /// The error, if the primary call failed.
    pub fn error(&self) -> Option<&BoxError> {
        match self {
            Cause::Error(e) => Some(e),
            Cause::Response(_) => None,
        }
    }

    /// The response, if the primary call answered.
    pub fn response(&self) -> Option<&Res> {
        match self {
            Cause::Error(_) => None,
            Cause::Response(r) => Some(r),
        }
    }
}
