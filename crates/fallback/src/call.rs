//! The engine's calls without tower: [`FallbackPolicy::call`] (an [`Answer`]) and
//! [`FallbackPolicy::call_or_else`] (a backup future).

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use staunch_core::BoxError;

use crate::error::Callback;
use crate::policy::Verdict;
use crate::{Answer, Answered, Cause, FallbackPolicy, Reason};

impl<Res> FallbackPolicy<Res> {
    /// Runs `primary`; when a rule fires, answers with `answer` instead.
    ///
    /// The result says where the response came from ([`Answered`]). An error no rule
    /// chose is returned boxed as it was; a panicking rule or answer is a
    /// [`FallbackPanicked`](crate::FallbackPanicked).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the primary call; nothing else is held.
    pub fn call<Fut, E>(&self, primary: Fut, answer: &Answer<Res>) -> Call<Fut, Res>
    where
        Fut: Future<Output = Result<Res, E>>,
        E: Into<BoxError>,
    {
        Call {
            primary,
            policy: self.clone(),
            answer: answer.clone(),
        }
    }

    /// Runs `primary`; when a rule fires, runs the future `backup` makes of the reason and
    /// the primary's error or response, and answers with its response.
    ///
    /// The backup's error fails the call as a [`FallbackFailed`](crate::FallbackFailed)
    /// (the backup's error is its source); a panic in a rule, in `backup` or in its future
    /// is a [`FallbackPanicked`](crate::FallbackPanicked).
    ///
    /// ```
    /// use staunch_fallback::{Answered, FallbackPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let policy = FallbackPolicy::builder("quotes").on_any_error().build().unwrap();
    /// let answered = policy
    ///     .call_or_else(
    ///         async { Err::<u32, _>(std::io::Error::other("primary down")) },
    ///         |_reason, _cause| async { Ok::<_, std::io::Error>(7) }, // the secondary source
    ///     )
    ///     .await
    ///     .unwrap();
    /// assert!(answered.is_fallback());
    /// assert_eq!(answered.into_inner(), 7);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops whichever call is in flight, primary or backup.
    pub fn call_or_else<Fut, E, B, BFut, BE>(
        &self,
        primary: Fut,
        backup: B,
    ) -> CallOrElse<Fut, B, BFut, Res>
    where
        Fut: Future<Output = Result<Res, E>>,
        E: Into<BoxError>,
        B: FnOnce(Reason, Cause<Res>) -> BFut,
        BFut: Future<Output = Result<Res, BE>>,
        BE: Into<BoxError>,
    {
        CallOrElse {
            policy: self.clone(),
            state: OrElse::Primary {
                primary,
                backup: Some(backup),
            },
        }
    }
}

pin_project! {
    /// The future of [`FallbackPolicy::call`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Call<Fut, Res> {
        #[pin]
        primary: Fut,
        policy: FallbackPolicy<Res>,
        answer: Answer<Res>,
    }
}

impl<Fut, Res> fmt::Debug for Call<Fut, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("policy", &self.policy.name())
            .finish_non_exhaustive()
    }
}

impl<Fut, Res, E> Future for Call<Fut, Res>
where
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Answered<Res>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.primary.poll(cx));
        Poll::Ready(match this.policy.check(result) {
            Verdict::Primary(result) => result.map(Answered::Primary),
            Verdict::Panicked(error) => Err(error.into()),
            Verdict::Fallback { reason, cause } => {
                match this.answer.answer(this.policy, reason, cause) {
                    Ok(mut response) => {
                        this.policy.mark(&mut response, reason);
                        Ok(Answered::Fallback { response, reason })
                    }
                    Err(error) => Err(error.into()),
                }
            }
        })
    }
}

pin_project! {
    #[project = OrElseProj]
    enum OrElse<Fut, B, BFut> {
        Primary { #[pin] primary: Fut, backup: Option<B> },
        Backup { #[pin] future: BFut, reason: Reason },
        Done,
    }
}

pin_project! {
    /// The future of [`FallbackPolicy::call_or_else`].
    #[must_use = "futures do nothing unless polled"]
    pub struct CallOrElse<Fut, B, BFut, Res> {
        policy: FallbackPolicy<Res>,
        #[pin]
        state: OrElse<Fut, B, BFut>,
    }
}

impl<Fut, B, BFut, Res> fmt::Debug for CallOrElse<Fut, B, BFut, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallOrElse")
            .field("policy", &self.policy.name())
            .finish_non_exhaustive()
    }
}

impl<Fut, E, B, BFut, BE, Res> Future for CallOrElse<Fut, B, BFut, Res>
where
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    B: FnOnce(Reason, Cause<Res>) -> BFut,
    BFut: Future<Output = Result<Res, BE>>,
    BE: Into<BoxError>,
{
    type Output = Result<Answered<Res>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                OrElseProj::Primary { primary, backup } => {
                    let result = ready!(primary.poll(cx));
                    let (reason, cause) = match this.policy.check(result) {
                        Verdict::Primary(result) => {
                            this.state.set(OrElse::Done);
                            return Poll::Ready(result.map(Answered::Primary));
                        }
                        Verdict::Panicked(error) => {
                            this.state.set(OrElse::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                        Verdict::Fallback { reason, cause } => (reason, cause),
                    };
                    let Some(backup) = backup.take() else {
                        this.state.set(OrElse::Done);
                        continue;
                    };
                    match catch_unwind(AssertUnwindSafe(|| backup(reason, cause))) {
                        Ok(future) => this.state.set(OrElse::Backup { future, reason }),
                        Err(panic) => {
                            this.state.set(OrElse::Done);
                            let error = this.policy.panicked(Callback::Backup, &*panic);
                            return Poll::Ready(Err(error.into()));
                        }
                    }
                }
                OrElseProj::Backup { future, reason } => {
                    let reason = *reason;
                    let polled = catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
                    let result = match polled {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(Ok(mut response))) => {
                            this.policy.mark(&mut response, reason);
                            Ok(Answered::Fallback { response, reason })
                        }
                        Ok(Poll::Ready(Err(e))) => Err(this.policy.failed(reason, e.into()).into()),
                        Err(panic) => Err(this.policy.panicked(Callback::Backup, &*panic).into()),
                    };
                    this.state.set(OrElse::Done);
                    return Poll::Ready(result);
                }
                OrElseProj::Done => {
                    return Poll::Ready(Err("fallback call polled after completion".into()));
                }
            }
        }
    }
}
