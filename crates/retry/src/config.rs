//! [`RetryPolicy`]: the validated settings shared by every clone of a retry layer.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use staunch_core::{Backoff, ConfigError};

use std::future::Future;

use crate::BoxError;
use crate::budget::RetryBudget;
use crate::classify::{RetryClassify, RetryOn, RetryResponse};
use crate::engine::{ClassifiedPolicy, Machine};
use crate::future::{FnAttempts, RetryCall};
use crate::metrics::{GiveUp, RetryMetrics, Retrying};
#[cfg(feature = "metrics")]
use staunch_core::telemetry::{label, metric};

type Hook<T> = Arc<dyn Fn(&T) + Send + Sync>;

/// How a call is retried: attempts, backoff, deadlines, server hints and the retry budget.
///
/// Build one with [`RetryPolicy::builder`]. Cloning is cheap (a reference count) and clones
/// share the budget and the metrics. Use it with tower through [`RetryLayer`](crate::RetryLayer)
/// and [`HedgeLayer`](crate::HedgeLayer), or on its own with [`retry`](RetryPolicy::retry).
///
/// # Defaults and why
///
/// - `max_attempts` 3 (the first attempt and two retries): enough to ride out a lost packet or
///   a restarting instance; more mostly adds latency.
/// - backoff: exponential from 100 ms, doubling, capped at 10 s, full jitter
///   ([`Backoff::default`]): clients that failed together do not retry together.
/// - no overall deadline and no per-attempt timeout: they depend on the call; set them.
/// - `max_retry_after` 30 s: a server hint longer than that is capped, so a buggy or hostile
///   `Retry-After: 86400` cannot park a request for a day.
/// - budget: 20% of requests plus 10 retries per second over 10 s ([`RetryBudget`]).
/// - non-idempotent HTTP requests (POST, PATCH without an `Idempotency-Key`) are not retried.
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) shared: Arc<Shared>,
    pub(crate) limits: Limits,
}

/// What a response future needs on its first poll, copied into it so the success path does
/// not chase pointers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_attempts: u32,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) max_total_time: Option<Duration>,
    /// The time limit inside the retry that cuts each attempt (for one call: the request's
    /// override, if it has one): no timer of the retry's own is armed for an attempt that
    /// limit ends first.
    pub(crate) attempts_cut_by: Option<Duration>,
    pub(crate) retry_non_idempotent: bool,
    /// The backoff has a `max_elapsed`: a call that may be retried reads the clock when it
    /// starts, so that the first attempt's time counts.
    pub(crate) clock_from_start: bool,
    /// Each call records a `staunch.retry` span ([`RetryPolicyBuilder::spans`]).
    pub(crate) spans: bool,
    /// Each call is counted and timed in `staunch.calls` / `staunch.call.duration`
    /// ([`RetryPolicyBuilder::call_metrics`]); read only with the `metrics` feature.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) call_metrics: bool,
}

impl Limits {
    /// Whether a request could be retried at all (so it is worth copying before the call).
    #[inline]
    pub(crate) fn may_retry(&self, idempotent: bool) -> bool {
        self.max_attempts > 1 && (idempotent || self.retry_non_idempotent)
    }
}

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_total_time: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) attempts_cut_by: Option<Duration>,
    pub(crate) max_retry_after: Duration,
    pub(crate) retry_non_idempotent: bool,
    pub(crate) budget: RetryBudget,
    on_retry: Option<Hook<Retrying>>,
    on_give_up: Option<Hook<GiveUp>>,
    retries: AtomicU64,
    hedges: AtomicU64,
    gave_up: AtomicU64,
    #[cfg(feature = "metrics")]
    pub(crate) meter: Arc<crate::telemetry::CallMeter>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("RetryPolicy")
            .field("name", &s.name)
            .field("max_attempts", &s.max_attempts)
            .field("backoff", &s.backoff)
            .field("max_total_time", &s.max_total_time)
            .field("attempt_timeout", &s.attempt_timeout)
            .field("attempts_cut_by", &s.attempts_cut_by)
            .field("max_retry_after", &s.max_retry_after)
            .field("retry_non_idempotent", &s.retry_non_idempotent)
            .field("budget", &s.budget)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicyBuilder::default().assemble()
    }
}

impl RetryPolicy {
    /// Starts a policy with the defaults described on the type.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder::default()
    }

    /// The name used in events and metrics labels.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Attempts per call, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.shared.max_attempts
    }

    /// The retry budget this policy draws on.
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }

    /// A snapshot of the counters. `requests` counts every request recorded in the budget,
    /// so when several policies share one budget it is their total.
    pub fn metrics(&self) -> RetryMetrics {
        let s = &self.shared;
        RetryMetrics {
            requests: s.budget.requests(),
            retries: s.retries.load(Ordering::Relaxed),
            hedges: s.hedges.load(Ordering::Relaxed),
            gave_up: s.gave_up.load(Ordering::Relaxed),
            budget_exhausted: s.budget.exhausted(),
            budget_left: s.budget.remaining(),
        }
    }
}

impl RetryPolicy {
    /// Retries the futures `f` makes, without tower: the engine behind [`RetryLayer`].
    ///
    /// What is retried is decided by the default classifier [`RetryOn`] (connection errors,
    /// timeouts, retryable HTTP statuses); use [`retry_with`](Self::retry_with) to decide
    /// yourself. Each attempt calls `f` again. The call counts as one request in the budget.
    ///
    /// When it gives up after retries, or a due retry is refused, the error is the last
    /// attempt's wrapped in a [`RetryExhausted`] (and a response returned then carries the
    /// [`GiveUp`](crate::GiveUp) in its extensions), exactly as with the layer.
    ///
    /// [`RetryLayer`]: crate::RetryLayer
    /// [`RetryExhausted`]: crate::RetryExhausted
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use staunch_retry::RetryPolicy;
    ///
    /// let policy = RetryPolicy::builder().max_attempts(3).build().unwrap();
    /// let calls = AtomicU32::new(0);
    /// let answer = policy
    ///     .retry(|| async {
    ///         if calls.fetch_add(1, Ordering::Relaxed) == 0 {
    ///             Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    ///         } else {
    ///             Ok(42u32)
    ///         }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert_eq!((answer, calls.load(Ordering::Relaxed)), (42, 2));
    /// # }
    /// ```
    pub fn retry<F, Fut, T, E>(&self, f: F) -> RetryCall<F, Fut, RetryOn>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
        T: RetryResponse,
    {
        self.retry_with(RetryOn::new(), f)
    }

    /// Like [`retry`](Self::retry), with `classify` deciding what is retried.
    pub fn retry_with<C, F, Fut, T, E>(&self, classify: C, f: F) -> RetryCall<F, Fut, C>
    where
        C: RetryClassify<T>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        self.shared.budget.deposit();
        let policy = Arc::new(ClassifiedPolicy {
            policy: self.clone(),
            classify,
        });
        let attempts = FnAttempts {
            make: f,
            deadline: None,
        };
        let telemetry = crate::telemetry::CallTelemetry::start(&self.shared, &self.limits);
        RetryCall::new(Machine::idle(attempts, policy).with_telemetry(telemetry))
    }
}

impl Shared {
    pub(crate) fn retried(&self, event: &Retrying) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            name = %self.name,
            attempt = event.attempt,
            delay = ?event.delay,
            "retrying"
        );
        #[cfg(feature = "metrics")]
        {
            metrics::counter!(metric::RETRY_RETRIES, label::DEPENDENCY => self.name.to_string())
                .increment(1);
            self.emit_budget();
        }
        if let Some(hook) = &self.on_retry {
            hook(event);
        }
    }

    pub(crate) fn gave_up(&self, event: GiveUp) {
        self.gave_up.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            name = %self.name,
            attempts = event.attempts,
            reason = %event.reason,
            "giving up"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!(
            metric::RETRY_GAVE_UP,
            label::DEPENDENCY => self.name.to_string(),
            label::REASON => event.reason.as_str()
        )
        .increment(1);
        #[cfg(feature = "metrics")]
        self.emit_budget();
        if let Some(hook) = &self.on_give_up {
            hook(&event);
        }
    }

    /// Sets `staunch.retry.budget.balance` (a budget without limits reports none).
    #[cfg(feature = "metrics")]
    fn emit_budget(&self) {
        if let Some(left) = self.budget.remaining() {
            metrics::gauge!(
                metric::RETRY_BUDGET_BALANCE,
                label::DEPENDENCY => self.name.to_string()
            )
            .set(left as f64);
        }
    }

    pub(crate) fn hedged(&self) {
        self.hedges.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(name = %self.name, "sending a hedge");
        #[cfg(feature = "metrics")]
        metrics::counter!(metric::RETRY_HEDGES, label::DEPENDENCY => self.name.to_string())
            .increment(1);
    }
}

/// Configures a [`RetryPolicy`]; [`build`](Self::build) validates it.
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RetryPolicyBuilder {
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    max_total_time: Option<Duration>,
    attempt_timeout: Option<Duration>,
    attempts_cut_by: Option<Duration>,
    max_retry_after: Duration,
    retry_non_idempotent: bool,
    budget: Option<RetryBudget>,
    on_retry: Option<Hook<Retrying>>,
    on_give_up: Option<Hook<GiveUp>>,
    spans: bool,
    call_metrics: bool,
}

impl fmt::Debug for RetryPolicyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicyBuilder")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicyBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("retry"),
            max_attempts: 3,
            backoff: Backoff::default(),
            max_total_time: None,
            attempt_timeout: None,
            attempts_cut_by: None,
            max_retry_after: Duration::from_secs(30),
            retry_non_idempotent: false,
            budget: None,
            on_retry: None,
            on_give_up: None,
            spans: false,
            call_metrics: false,
        }
    }
}

impl RetryPolicyBuilder {
    /// The name used in events and metrics labels (default `retry`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Attempts per call, the first included (default 3; at least 1, and 1 never retries).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The waits between attempts (default [`Backoff::default`]).
    ///
    /// A `max_elapsed` set on the backoff counts from the start of the first attempt: no
    /// retry is made once the time since then plus the next delay would pass it. To know
    /// when the first attempt started, a call that may be retried reads the clock when it
    /// starts, but only with a `max_elapsed` set: without one, a call that succeeds at once
    /// reads no clock.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// An overall deadline covering every attempt and every wait. An attempt still running at
    /// the deadline fails with [`Elapsed`](staunch_timeout::Elapsed); a wait that would end at
    /// or past it is skipped and the last result returned at once, annotated
    /// ([`RetryExhausted`](crate::RetryExhausted), reason `Deadline`).
    pub fn max_total_time(mut self, max_total_time: Duration) -> Self {
        self.max_total_time = Some(max_total_time);
        self
    }

    /// A limit for each attempt: a slower attempt is cancelled and counts as a timeout
    /// (retryable by the default classifier).
    pub fn attempt_timeout(mut self, attempt_timeout: Duration) -> Self {
        self.attempt_timeout = Some(attempt_timeout);
        self
    }

    /// Says that each attempt is cut by a time limit of this length inside the retry (a
    /// [`TimeoutLayer`](staunch_timeout::TimeoutLayer) between this layer and the service, as
    /// in staunch's stack), so that the retry arms no timer of its own for an attempt that
    /// limit ends first: while an attempt runs, the overall deadline
    /// ([`max_total_time`](Self::max_total_time)) and the [`attempt_timeout`](Self::attempt_timeout)
    /// are timed by the retry only when they come before the attempt's start plus this limit.
    /// Results are the same either way; a call that pends costs one timer instead of two.
    ///
    /// A request's own limit replaces it for that request, read as the `Timeout` layer reads
    /// it ([`RetryRequest::timeout_override`](crate::RetryRequest::timeout_override): an
    /// `http::Request`'s [`TimeoutOverride`](staunch_timeout::TimeoutOverride)). Set it only
    /// when such a limit does cut every attempt: with none inside, an attempt still running at
    /// the overall deadline would not be stopped until this long after its start. Default
    /// unset.
    pub fn attempts_cut_by(mut self, inner_limit: Duration) -> Self {
        self.attempts_cut_by = Some(inner_limit);
        self
    }

    /// The longest server hint (`Retry-After`, `grpc-retry-pushback-ms`) honoured; longer
    /// hints are cut to it (default 30 s).
    pub fn max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.max_retry_after = max_retry_after;
        self
    }

    /// Wraps each call in a `staunch.retry` span (default `false`), at `INFO` level, whose
    /// fields are recorded as the call proceeds: `staunch.dependency` (this policy's name),
    /// `http.request.resend_count` (attempts sent again), `staunch.retry.backoff_ms` (the
    /// last wait before a retry) and, when the call failed, `error.type`. The attempts run
    /// inside it, so the spans of the service below are its children. Off, a call creates
    /// no span and costs what it did before.
    pub fn spans(mut self, yes: bool) -> Self {
        self.spans = yes;
        self
    }

    /// Counts each call by outcome in `staunch.calls` and times it in the
    /// `staunch.call.duration` histogram (default `false`; needs the `metrics` feature to
    /// record anything). Off, a call reads no clock for them and costs what it did before;
    /// on, it reads the clock when it starts and when it ends. A call that returned a
    /// response its classifier still wanted retried (a `503` when the attempts ran out)
    /// counts as `failure`.
    pub fn call_metrics(mut self, yes: bool) -> Self {
        self.call_metrics = yes;
        self
    }

    /// Also retries HTTP requests with non-idempotent methods and no `Idempotency-Key`
    /// (default `false`: a retried POST may charge a card twice).
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.retry_non_idempotent = yes;
        self
    }

    /// The budget to draw retries from: pass the same handle to several policies to share
    /// it. Default: a budget of this policy's own with [`RetryBudget::default`] settings.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Called before each retry's wait starts.
    pub fn on_retry(mut self, f: impl Fn(&Retrying) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(f));
        self
    }

    /// Called when a retryable failure is returned without a further attempt, with the
    /// reason (attempts used up, budget exhausted, deadline, ...). Every give-up is reported
    /// here, rejections and non-replayable requests included; the returned error itself is
    /// annotated only when retries were made or refused ([`RetryExhausted`]).
    ///
    /// [`RetryExhausted`]: crate::RetryExhausted
    pub fn on_give_up(mut self, f: impl Fn(&GiveUp) + Send + Sync + 'static) -> Self {
        self.on_give_up = Some(Arc::new(f));
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when `max_attempts` is 0, or `max_total_time`,
    /// `attempt_timeout`, `attempts_cut_by` or `max_retry_after` is zero.
    pub fn build(self) -> Result<RetryPolicy, ConfigError> {
        #[cfg(feature = "metrics")]
        staunch_core::telemetry::describe_metrics();
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                "max_attempts",
                "must be at least 1 (it counts the first attempt)",
            ));
        }
        for (field, value) in [
            ("max_total_time", self.max_total_time),
            ("attempt_timeout", self.attempt_timeout),
            ("attempts_cut_by", self.attempts_cut_by),
            ("max_retry_after", Some(self.max_retry_after)),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(ConfigError::new(field, "must be greater than zero"));
            }
        }
        Ok(self.assemble())
    }

    /// Builds the policy from settings known to be valid.
    fn assemble(self) -> RetryPolicy {
        let shared = Arc::new(Shared {
            #[cfg(feature = "metrics")]
            meter: Arc::new(crate::telemetry::CallMeter::new(&self.name)),
            name: self.name,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            max_total_time: self.max_total_time,
            attempt_timeout: self.attempt_timeout,
            attempts_cut_by: self.attempts_cut_by,
            max_retry_after: self.max_retry_after,
            retry_non_idempotent: self.retry_non_idempotent,
            budget: self.budget.unwrap_or_default(),
            on_retry: self.on_retry,
            on_give_up: self.on_give_up,
            retries: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
        });
        let limits = Limits {
            max_attempts: shared.max_attempts,
            attempt_timeout: shared.attempt_timeout,
            max_total_time: shared.max_total_time,
            attempts_cut_by: shared.attempts_cut_by,
            retry_non_idempotent: shared.retry_non_idempotent,
            clock_from_start: shared.backoff.max_elapsed().is_some(),
            spans: self.spans,
            call_metrics: self.call_metrics,
        };
        RetryPolicy { shared, limits }
    }
}
