//! [`RetryExhausted`]: the last attempt's error, annotated with why the retries stopped.

use std::error::Error;
use std::fmt;

use crate::BoxError;
use crate::metrics::{GiveUp, GiveUpReason};

/// A retryable failure returned because the retries ran out or a due retry was refused: the
/// last attempt's error, with the attempts made and the reason no further one was made.
///
/// The retry layer and [`RetryPolicy::retry`](crate::RetryPolicy::retry) return it (boxed)
/// **only** when retries were made (at least two attempts) or when a retry was due and the
/// policy refused it:
///
/// | reason | annotated |
/// |---|---|
/// | [`BudgetExhausted`](GiveUpReason::BudgetExhausted) | always (a retry was due) |
/// | [`BackoffEnded`](GiveUpReason::BackoffEnded) | always (a retry was due) |
/// | [`Deadline`](GiveUpReason::Deadline) | when the deadline (`max_total_time` or the caller's [`Deadline`](crate::Deadline)) left no time for a due retry's wait, or cut a retry while it waited for the inner service; when it cut an attempt, only if retries were made |
/// | [`MaxAttempts`](GiveUpReason::MaxAttempts) | when retries were made (`max_attempts` above 1) |
/// | [`ServerPushback`](GiveUpReason::ServerPushback) | when retries were made |
/// | [`Rejected`](GiveUpReason::Rejected), [`NotReplayable`](GiveUpReason::NotReplayable) | never |
///
/// Everything else is returned untouched: successes, failures the classifier does not retry
/// (a 4xx-like business error), rejections, requests that cannot be retried (not idempotent,
/// not replayable), and the error of a call allowed a single attempt.
///
/// Its `Display` says what happened ("gave up after 3 attempts (max attempts reached)"),
/// not what the last attempt's error says: that error is the [`source`](Error::source), so
/// an error reporter that walks the chain prints each message once, and
/// [`rejection_of`](staunch_core::rejection_of), [`Elapsed::find`](crate::Elapsed::find) and
/// any walk of the source chain still find what it holds; [`last`](Self::last) and
/// [`into_last`](Self::into_last) give it back to downcast.
///
/// A response cannot carry an error: a retryable response returned after giving up (a final
/// 503) carries the [`GiveUp`] in its extensions instead, under the same rules, for
/// `http::Response` and `reqwest::Response` with the default classifier (see
/// [`RetryClassify::annotate`](crate::RetryClassify::annotate)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::error::Error;
/// use staunch_retry::{GiveUpReason, RetryExhausted, RetryPolicy, RetryBudget};
///
/// let policy = RetryPolicy::builder().max_attempts(3).budget(RetryBudget::unlimited()).build().unwrap();
/// let err = policy
///     .retry(|| async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) })
///     .await
///     .unwrap_err();
/// let gave_up = err.downcast_ref::<RetryExhausted>().unwrap();
/// assert_eq!((gave_up.attempts(), gave_up.reason()), (3, GiveUpReason::MaxAttempts));
/// assert!(gave_up.last().is::<std::io::Error>());
/// assert_eq!(err.to_string(), "gave up after 3 attempts (max attempts reached)");
/// assert_eq!(err.source().unwrap().to_string(), "connection reset");
/// # }
/// ```
#[derive(Debug)]
pub struct RetryExhausted {
    give_up: GiveUp,
    last: BoxError,
}

impl RetryExhausted {
    /// Annotates `last`, the last attempt's error (useful to test code that handles it).
    pub fn new(attempts: u32, reason: GiveUpReason, last: BoxError) -> Self {
        Self {
            give_up: GiveUp { attempts, reason },
            last,
        }
    }

    pub(crate) fn from_event(give_up: GiveUp, last: BoxError) -> Self {
        Self { give_up, last }
    }

    /// Attempts made, the first included.
    pub fn attempts(&self) -> u32 {
        self.give_up.attempts
    }

    /// Why no further attempt was made.
    pub fn reason(&self) -> GiveUpReason {
        self.give_up.reason
    }

    /// The attempts and the reason, as passed to
    /// [`on_give_up`](crate::RetryPolicyBuilder::on_give_up).
    pub fn give_up(&self) -> GiveUp {
        self.give_up
    }

    /// The last attempt's error, as the attempt returned it.
    pub fn last(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.last
    }

    /// The last attempt's error, to downcast or classify.
    pub fn into_last(self) -> BoxError {
        self.last
    }

    /// The first `RetryExhausted` in `err`'s source chain (`err` itself included).
    pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a Self> {
        let mut current = Some(err);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<Self>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }
}

impl fmt::Display for RetryExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attempts = self.give_up.attempts;
        let plural = if attempts == 1 { "" } else { "s" };
        let why = match self.give_up.reason {
            GiveUpReason::MaxAttempts => "max attempts reached",
            GiveUpReason::BudgetExhausted => "retry budget exhausted",
            GiveUpReason::Deadline => "overall deadline reached",
            GiveUpReason::BackoffEnded => "backoff max_elapsed reached",
            GiveUpReason::ServerPushback => "the server asked not to retry",
            GiveUpReason::NotReplayable => "the request cannot be replayed",
            GiveUpReason::InnerGaveUp => "an inner retry layer gave up",
            GiveUpReason::Rejected => "rejected by a layer below",
        };
        // The last error is the `source()`, not part of this message: an error reporter
        // (`anyhow`'s `{:#}`, `tracing`'s error chains) prints it next, once.
        write!(f, "gave up after {attempts} attempt{plural} ({why})")
    }
}

impl Error for RetryExhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.last)
    }
}

impl GiveUp {
    /// Whether the retry layer annotates the result of this give-up ([`RetryExhausted`] for
    /// an error, the `GiveUp` in a response's extensions): `due` says a retry was due when
    /// `reason` stopped it (rather than the deadline cutting an attempt short, or the server
    /// asking not to retry).
    pub(crate) fn annotates(self, due: bool) -> bool {
        match self.reason {
            GiveUpReason::Rejected | GiveUpReason::NotReplayable => false,
            _ => self.attempts > 1 || due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_give_ups_are_annotated() {
        use GiveUpReason::*;
        let annotates = |reason, attempts, due| GiveUp { attempts, reason }.annotates(due);
        for reason in [BudgetExhausted, BackoffEnded, Deadline] {
            assert!(annotates(reason, 1, true), "{reason}: a due retry refused");
        }
        for reason in [MaxAttempts, ServerPushback, Deadline] {
            assert!(!annotates(reason, 1, false), "{reason} on the only attempt");
            assert!(annotates(reason, 2, false), "{reason} after a retry");
        }
        for reason in [Rejected, NotReplayable] {
            assert!(!annotates(reason, 1, true));
            assert!(!annotates(reason, 4, false));
        }
    }

    #[test]
    fn display_and_source() {
        let err = RetryExhausted::new(
            2,
            GiveUpReason::BackoffEnded,
            Box::new(std::io::Error::other("reset")),
        );
        assert_eq!(
            err.to_string(),
            "gave up after 2 attempts (backoff max_elapsed reached)"
        );
        assert_eq!(err.source().unwrap().to_string(), "reset");
        assert_eq!(err.give_up().attempts, 2);
        let boxed: BoxError = Box::new(err);
        assert!(RetryExhausted::find(&*boxed).is_some());
    }

    /// An error reporter prints `Display` and then each `source()`: the last error's message
    /// must appear once, through the source only.
    #[test]
    fn display_leaves_the_cause_to_source() {
        let cause = "connection reset by peer 10.0.0.7:443";
        for reason in [
            GiveUpReason::MaxAttempts,
            GiveUpReason::BudgetExhausted,
            GiveUpReason::Deadline,
            GiveUpReason::BackoffEnded,
            GiveUpReason::ServerPushback,
        ] {
            let err = RetryExhausted::new(3, reason, Box::new(std::io::Error::other(cause)));
            let display = err.to_string();
            assert!(!display.contains(cause), "{reason}: {display}");
            assert!(
                display.starts_with("gave up after 3 attempts ("),
                "{display}"
            );
            let source = err.source().expect("the last error is the source");
            assert_eq!(source.to_string(), cause);
            assert!(source.is::<std::io::Error>());
            // The whole chain, as a reporter prints it, names the cause exactly once.
            let mut chain = Vec::new();
            let mut next: Option<&(dyn Error + 'static)> = Some(&err);
            while let Some(e) = next {
                chain.push(e.to_string());
                next = e.source();
            }
            assert_eq!(chain.join(": ").matches(cause).count(), 1, "{chain:?}");
        }
        let one = RetryExhausted::new(1, GiveUpReason::Deadline, "down".into());
        assert_eq!(
            one.to_string(),
            "gave up after 1 attempt (overall deadline reached)"
        );
    }
}
