//! Saga definitions: a name, a version and ordered steps, each an action and a compensation.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use staunch_core::{Backoff, ConfigError};

use crate::context::StepContext;
use crate::error::StepError;

mod group;

pub(crate) use group::GroupInner;
pub use group::{GroupCompensation, GroupFailure, ParallelGroup};

/// A saga state: any serde type the steps pass along and update.
pub trait SagaState: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> SagaState for T {}

pub(crate) type StepFn<S> =
    Arc<dyn Fn(S, StepContext) -> BoxFuture<'static, Result<S, StepError>> + Send + Sync>;

/// How a step takes part in rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StepKind {
    /// Undone by its compensation (if it has one) when a later step fails. The default.
    #[default]
    Compensatable,
    /// The point of no return: once it succeeds, the saga only moves forward. Every step after
    /// a pivot must be [`Retriable`](Self::Retriable). A pivot has no compensation.
    Pivot,
    /// Must eventually succeed: every error (business failures and panics included) is
    /// retried, with no attempt limit unless [`Step::retry`] sets one. To hand such a step to
    /// an operator instead of retrying forever, set `max_attempts` or the backoff's
    /// `max_elapsed`: once exhausted after the pivot the saga is stuck (before the pivot it
    /// compensates).
    Retriable,
}

/// What recovery does with an attempt that started but has no recorded result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnInterrupted {
    /// Run the step again with the same idempotency key (at-least-once). The default.
    #[default]
    Rerun,
    /// Treat the step as failed and compensate (the step itself included: its effect is
    /// unknown). Only before a pivot; after one, the saga goes stuck instead.
    Compensate,
    /// Stop and let an operator decide.
    Stuck,
}

/// What a step's action attempt in flight does when an operator cancels the saga
/// ([`SagaEngine::cancel`](crate::SagaEngine::cancel)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OnCancel {
    /// The attempt runs to its end and its result is kept; the saga compensates at the
    /// boundary after it. The default.
    #[default]
    Finish,
    /// The attempt is dropped at once (its future is not polled again) and logged as
    /// [`Cancelled`](crate::StepErrorKind::Cancelled): its effect is unknown, so the step
    /// is compensated with the others. For a long call whose effect its compensation can
    /// undo; a step that aborts needs a compensation.
    ///
    /// Applies to cancels made through this engine, which wake the runner; a cancel made on
    /// another instance (PostgreSQL) is seen at the next step boundary, after the attempt.
    Abort,
}

/// Attempts, backoff and per-attempt timeout for an action or a compensation.
///
/// (Formerly `RetryPolicy`; the deprecated alias remains. `staunch_retry::RetryPolicy` is the
/// unrelated policy of the retry layer for calls.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRetry {
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: Backoff,
    pub(crate) timeout: Option<Duration>,
}

impl Default for StepRetry {
    /// 3 attempts, the default [`Backoff`] (exponential from 100 ms, full jitter), no timeout.
    fn default() -> Self {
        Self {
            max_attempts: Some(3),
            backoff: Backoff::default(),
            timeout: None,
        }
    }
}

impl StepRetry {
    /// A policy with `max_attempts` attempts (the first included) and the default backoff.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: Some(max_attempts),
            ..Self::default()
        }
    }

    /// No attempt limit: retry until success, an operator, or the backoff's `max_elapsed`.
    pub fn unlimited() -> Self {
        Self {
            max_attempts: None,
            ..Self::default()
        }
    }

    /// Sets the delays between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Cancels an attempt that runs longer than `timeout` (a retryable, in-doubt failure).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The attempt limit, `None` for unlimited.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.max_attempts == Some(0) {
            return Err(
                ConfigError::new("max_attempts", "must be at least 1 (got 0)").within(section),
            );
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new("timeout", "must be greater than zero").within(section));
        }
        Ok(())
    }
}

/// One step of a saga: an action, an optional compensation, a kind and retry policies.
pub struct Step<S> {
    pub(crate) name: Arc<str>,
    pub(crate) kind: StepKind,
    pub(crate) action: StepFn<S>,
    pub(crate) compensation: Option<StepFn<S>>,
    pub(crate) retry: StepRetry,
    pub(crate) compensation_retry: StepRetry,
    pub(crate) on_interrupted: OnInterrupted,
    pub(crate) on_cancel: OnCancel,
    /// The parallel group this step belongs to (index into the definition's groups).
    pub(crate) group: Option<u32>,
    retry_set: bool,
}

impl<S> fmt::Debug for Step<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("compensation", &self.compensation.is_some())
            .field("retry", &self.retry)
            .field("compensation_retry", &self.compensation_retry)
            .field("on_interrupted", &self.on_interrupted)
            .field("on_cancel", &self.on_cancel)
            .finish()
    }
}

fn boxed<S, F, Fut>(f: F) -> StepFn<S>
where
    S: SagaState,
    F: Fn(S, StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, StepError>> + Send + 'static,
{
    Arc::new(move |state, ctx| Box::pin(f(state, ctx)))
}

impl<S: SagaState> Step<S> {
    /// A compensatable step named `name` running `action`, which returns the updated state.
    pub fn new<F, Fut>(name: impl Into<Arc<str>>, action: F) -> Self
    where
        F: Fn(S, StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, StepError>> + Send + 'static,
    {
        Self {
            name: name.into(),
            kind: StepKind::Compensatable,
            action: boxed(action),
            compensation: None,
            retry: StepRetry::default(),
            compensation_retry: StepRetry::new(5),
            on_interrupted: OnInterrupted::Rerun,
            on_cancel: OnCancel::Finish,
            group: None,
            retry_set: false,
        }
    }

    /// Undoes the action when a later step fails; receives the current state.
    pub fn compensate<F, Fut>(mut self, compensation: F) -> Self
    where
        F: Fn(S, StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, StepError>> + Send + 'static,
    {
        self.compensation = Some(boxed(compensation));
        self
    }

    /// Sets the step's kind.
    pub fn kind(mut self, kind: StepKind) -> Self {
        self.kind = kind;
        self
    }

    /// Marks the step as the pivot.
    pub fn pivot(self) -> Self {
        self.kind(StepKind::Pivot)
    }

    /// Marks the step as retriable (retried until it succeeds).
    pub fn retriable(self) -> Self {
        self.kind(StepKind::Retriable)
    }

    /// The action's retry policy (default: 3 attempts; retriable steps: unlimited).
    pub fn retry(mut self, policy: StepRetry) -> Self {
        self.retry = policy;
        self.retry_set = true;
        self
    }

    /// The compensation's retry policy (default: 5 attempts, default backoff).
    pub fn compensation_retry(mut self, policy: StepRetry) -> Self {
        self.compensation_retry = policy;
        self
    }

    /// What recovery does when the process stopped during this step's action.
    pub fn on_interrupted(mut self, on_interrupted: OnInterrupted) -> Self {
        self.on_interrupted = on_interrupted;
        self
    }

    /// What an attempt of the action in flight does when an operator cancels the saga
    /// (default [`OnCancel::Finish`]).
    pub fn on_cancel(mut self, on_cancel: OnCancel) -> Self {
        self.on_cancel = on_cancel;
        self
    }
}

/// A named, versioned, ordered list of steps over a state `S`. Cheap to clone.
///
/// The name and version are written to the log; recovery finds the definition by them, so
/// bump the version when steps change in a way old logs must not be replayed against.
pub struct SagaDefinition<S> {
    pub(crate) inner: Arc<DefinitionInner<S>>,
}

pub(crate) struct DefinitionInner<S> {
    pub(crate) name: Arc<str>,
    pub(crate) version: u32,
    pub(crate) steps: Vec<Step<S>>,
    pub(crate) groups: Vec<GroupInner<S>>,
    pub(crate) deadline: Option<Duration>,
}

impl<S> Clone for SagaDefinition<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// What two registrations under one name and version must agree on: the state type and each
/// step's name, kind, group and whether it has a compensation (the parts a stored log is
/// replayed against). Step functions cannot be compared, so a rebuilt definition with the
/// same shape (new clients, say) may replace a registered one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    state: (std::any::TypeId, &'static str),
    steps: Vec<(Arc<str>, StepKind, Option<u32>, bool)>,
    groups: Vec<(Arc<str>, u32, u32)>,
}

impl Shape {
    /// The first difference between `self` (registered) and `other`, in words.
    pub(crate) fn difference(&self, other: &Shape) -> Option<String> {
        if self.state.0 != other.state.0 {
            return Some(format!(
                "its state type is `{}`, not `{}`",
                self.state.1, other.state.1
            ));
        }
        if self.steps.len() != other.steps.len() {
            return Some(format!(
                "it has {} steps, not {}",
                self.steps.len(),
                other.steps.len()
            ));
        }
        for (i, (a, b)) in self.steps.iter().zip(&other.steps).enumerate() {
            if a != b {
                return Some(format!(
                    "its step {i} is `{}` ({:?}{}{}), not `{}` ({:?}{}{})",
                    a.0,
                    a.1,
                    if a.3 { ", compensated" } else { "" },
                    a.2.map(|g| format!(", group {g}")).unwrap_or_default(),
                    b.0,
                    b.1,
                    if b.3 { ", compensated" } else { "" },
                    b.2.map(|g| format!(", group {g}")).unwrap_or_default(),
                ));
            }
        }
        (self.groups != other.groups).then(|| "its parallel groups differ".to_owned())
    }
}

impl<S: SagaState> DefinitionInner<S> {
    pub(crate) fn shape(&self) -> Shape {
        Shape {
            state: (std::any::TypeId::of::<S>(), std::any::type_name::<S>()),
            steps: self
                .steps
                .iter()
                .map(|s| {
                    (
                        Arc::clone(&s.name),
                        s.kind,
                        s.group,
                        s.compensation.is_some(),
                    )
                })
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|g| (Arc::clone(&g.name), g.first, g.len))
                .collect(),
        }
    }
}

impl<S> fmt::Debug for SagaDefinition<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("steps", &self.inner.steps)
            .field("groups", &self.inner.groups)
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}

impl<S> SagaDefinition<S> {
    /// Name and version.
    pub(crate) fn key(&self) -> (&str, u32) {
        (&self.inner.name, self.inner.version)
    }
}

impl<S: SagaState> SagaDefinition<S> {
    /// Starts a definition named `name` at `version`.
    pub fn builder(name: impl Into<Arc<str>>, version: u32) -> SagaDefinitionBuilder<S> {
        SagaDefinitionBuilder {
            name: name.into(),
            version,
            steps: Vec::new(),
            groups: Vec::new(),
            deadline: None,
        }
    }

    /// The definition's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The definition's version.
    pub fn version(&self) -> u32 {
        self.inner.version
    }

    /// The step names, in order.
    pub fn step_names(&self) -> impl Iterator<Item = &str> {
        self.inner.steps.iter().map(|s| &*s.name)
    }
}

/// Builds a [`SagaDefinition`]; [`build`](Self::build) validates it.
pub struct SagaDefinitionBuilder<S> {
    name: Arc<str>,
    version: u32,
    steps: Vec<Step<S>>,
    groups: Vec<GroupInner<S>>,
    deadline: Option<Duration>,
}

impl<S> fmt::Debug for SagaDefinitionBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDefinitionBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("steps", &self.steps)
            .finish()
    }
}

impl<S: SagaState> SagaDefinitionBuilder<S> {
    /// Appends a step.
    pub fn step(mut self, step: Step<S>) -> Self {
        self.steps.push(step);
        self
    }

    /// Appends a group of steps that run concurrently (see [`ParallelGroup`]). Its members
    /// take the next step indexes, in declaration order.
    pub fn parallel(mut self, group: ParallelGroup<S>) -> Self {
        let index = u32::try_from(self.groups.len()).unwrap_or(u32::MAX);
        let first = u32::try_from(self.steps.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(group.steps.len()).unwrap_or(u32::MAX);
        for mut step in group.steps {
            step.group = Some(index);
            self.steps.push(step);
        }
        self.groups.push(GroupInner {
            name: group.name,
            first,
            len,
            on_failure: group.on_failure,
            compensation: group.compensation,
            merge: group.merge,
        });
        self
    }

    /// Starts compensating when the saga has not completed `deadline` after it started
    /// (measured across restarts with the wall clock of the start). Ignored after a pivot.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Validates and builds the definition.
    ///
    /// Errors: no steps; an empty or duplicate step name, or one containing `:` (it would
    /// make idempotency keys ambiguous); a pivot with a compensation; more than one pivot; a
    /// non-retriable step after the pivot; an invalid retry policy; a zero deadline.
    pub fn build(mut self) -> Result<SagaDefinition<S>, ConfigError> {
        let section = format!("saga.{}", self.name);
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.steps.is_empty() {
            return Err(
                ConfigError::new("steps", "must contain at least one step").within(&section)
            );
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(ConfigError::new("deadline", "must be greater than zero").within(&section));
        }
        let mut pivot_seen = false;
        for (i, step) in self.steps.iter_mut().enumerate() {
            let field = format!("steps[{i}]");
            if step.name.is_empty() || step.name.contains(':') {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    "must be non-empty and must not contain `:`",
                )
                .within(&section));
            }
            if step.kind == StepKind::Retriable && !step.retry_set {
                step.retry.max_attempts = None;
            }
            if step.on_cancel == OnCancel::Abort {
                let why = if step.compensation.is_none() {
                    Some(
                        "must not be `Abort` on a step without a compensation: an aborted attempt's effect is unknown",
                    )
                } else if step.group.is_some() {
                    Some(
                        "must not be `Abort` inside a parallel group (members finish their attempt)",
                    )
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(
                        ConfigError::new(format!("{field}.on_cancel"), why).within(&section)
                    );
                }
            }
            step.retry.validate(&format!("{section}.{field}.retry"))?;
            step.compensation_retry
                .validate(&format!("{section}.{field}.compensation_retry"))?;
            match step.kind {
                StepKind::Pivot if step.group.is_some() => {
                    return Err(ConfigError::new(
                        format!("{field}.kind"),
                        "must not be a pivot inside a parallel group",
                    )
                    .within(&section));
                }
                StepKind::Pivot if pivot_seen => {
                    return Err(ConfigError::new(
                        format!("{field}.kind"),
                        "must not be a second pivot: a saga has at most one",
                    )
                    .within(&section));
                }
                StepKind::Pivot if step.compensation.is_some() => {
                    return Err(ConfigError::new(
                        format!("{field}.compensation"),
                        "must not be set on a pivot: a pivot is never undone",
                    )
                    .within(&section));
                }
                StepKind::Pivot => pivot_seen = true,
                StepKind::Compensatable if pivot_seen => {
                    return Err(ConfigError::new(
                        format!("{field}.kind"),
                        "must be retriable: steps after the pivot only move forward",
                    )
                    .within(&section));
                }
                _ => {}
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            if self.steps[..i].iter().any(|s| s.name == step.name) {
                return Err(ConfigError::new(
                    format!("steps[{i}].name"),
                    format!("must be unique (`{}` is used twice)", step.name),
                )
                .within(&section));
            }
        }
        for (g, group) in self.groups.iter().enumerate() {
            if group.len == 0 {
                return Err(ConfigError::new(
                    format!("groups[{g}].steps"),
                    format!("must contain at least one step (group `{}`)", group.name),
                )
                .within(&section));
            }
        }
        Ok(SagaDefinition {
            inner: Arc::new(DefinitionInner {
                name: self.name,
                version: self.version,
                steps: self.steps,
                groups: self.groups,
                deadline: self.deadline,
            }),
        })
    }
}
