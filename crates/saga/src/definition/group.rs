//! Parallel groups: steps of a definition that run concurrently.

use std::fmt;
use std::sync::Arc;

use super::{SagaState, Step};

/// What the other members of a [`ParallelGroup`] do when one fails for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum GroupFailure {
    /// Attempts already running finish (their results are logged and, if they succeeded,
    /// compensated); no new attempt or retry starts. The default: no participant call is
    /// abandoned half-way.
    #[default]
    FinishOthers,
    /// Attempts still running are cancelled (their futures dropped) and logged as
    /// [`Cancelled`](crate::StepErrorKind::Cancelled): in doubt, so they are compensated too.
    CancelOthers,
}

/// How the completed members of a [`ParallelGroup`] are compensated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum GroupCompensation {
    /// One after another, in reverse declaration order. The default.
    #[default]
    ReverseOrder,
    /// All at once.
    Parallel,
}

pub(crate) type MergeFn<S> = Arc<dyn Fn(S, S) -> S + Send + Sync>;

/// Steps that run concurrently as one stage of a saga; the saga moves on when all of them
/// succeeded. Added with [`SagaDefinitionBuilder::parallel`](crate::SagaDefinitionBuilder::parallel).
///
/// Every member gets the saga state as it was before the group (on retries and after a
/// restart too), whatever its siblings returned. The join
/// is deterministic: whenever a member completes, the saga state becomes the state before the
/// group folded with [`merge`](Self::merge) over the results of the completed members **in
/// declaration order**, whatever order they finished in; each member's own result is logged,
/// so the same fold is recomputed after a restart. **By default member results are
/// discarded** and the state after the group is the state before it: set `merge` when members
/// return something later steps or compensations need. Compensations run in parallel are
/// joined the same way, from the state when they started.
///
/// When a member fails for good (business failure, retries exhausted, panic), the saga
/// starts compensating: the other members finish or are cancelled ([`GroupFailure`]), then
/// every member that completed (or whose effect is unknown) and every step before the group
/// is compensated, members in reverse declaration order or in parallel
/// ([`GroupCompensation`]). Each member's attempts are logged like any step's, so recovery
/// resumes a group that was half done: completed members are not run again, interrupted
/// ones follow their [`OnInterrupted`](crate::OnInterrupted).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use staunch_saga::{
///     GroupCompensation, MemoryStore, ParallelGroup, SagaDefinition, SagaEngine, SagaOutcome,
///     Step,
/// };
///
/// #[derive(Clone, Debug, Default, Serialize, Deserialize)]
/// struct Trip { flight: Option<String>, hotel: Option<String> }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let trip = SagaDefinition::<Trip>::builder("trip", 1)
///     .parallel(
///         ParallelGroup::new("book")
///             .step(Step::new("flight", |mut t: Trip, _| async move {
///                 t.flight = Some("LH 123".into());
///                 Ok(t)
///             }).compensate(|t, _| async move { Ok(t) }))
///             .step(Step::new("hotel", |mut t: Trip, _| async move {
///                 t.hotel = Some("room 9".into());
///                 Ok(t)
///             }).compensate(|t, _| async move { Ok(t) }))
///             .compensation(GroupCompensation::Parallel)
///             // Each member filled in its own field: keep both.
///             .merge(|acc: Trip, m: Trip| Trip {
///                 flight: acc.flight.or(m.flight),
///                 hotel: acc.hotel.or(m.hotel),
///             }),
///     )
///     .step(Step::new("confirm", |t, _| async move { Ok(t) }))
///     .build()?;
///
/// let engine = SagaEngine::new(MemoryStore::new());
/// let outcome = engine.start(&trip, "trip-1", Trip::default()).await?.outcome().await?;
/// let SagaOutcome::Completed(t) = outcome else { panic!("{outcome:?}") };
/// assert_eq!((t.flight.as_deref(), t.hotel.as_deref()), (Some("LH 123"), Some("room 9")));
/// # Ok(())
/// # }
/// ```
pub struct ParallelGroup<S> {
    pub(crate) name: Arc<str>,
    pub(crate) steps: Vec<Step<S>>,
    pub(crate) on_failure: GroupFailure,
    pub(crate) compensation: GroupCompensation,
    pub(crate) merge: MergeFn<S>,
}

impl<S> fmt::Debug for ParallelGroup<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParallelGroup")
            .field("name", &self.name)
            .field("steps", &self.steps)
            .field("on_failure", &self.on_failure)
            .field("compensation", &self.compensation)
            .finish_non_exhaustive()
    }
}

impl<S: SagaState> ParallelGroup<S> {
    /// An empty group named `name` (for logs and errors).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            steps: Vec::new(),
            on_failure: GroupFailure::default(),
            compensation: GroupCompensation::default(),
            merge: Arc::new(|acc, _member| acc),
        }
    }

    /// Adds a member. Members are ordinary steps (not pivots).
    pub fn step(mut self, step: Step<S>) -> Self {
        self.steps.push(step);
        self
    }

    /// What the other members do when one fails for good (default
    /// [`GroupFailure::FinishOthers`]).
    pub fn on_failure(mut self, on_failure: GroupFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// How completed members are compensated (default [`GroupCompensation::ReverseOrder`]).
    pub fn compensation(mut self, compensation: GroupCompensation) -> Self {
        self.compensation = compensation;
        self
    }

    /// Folds a member's returned state into the saga state: `merge(acc, member_state)`, over
    /// the completed members in declaration order, starting from the state before the group.
    /// Also used for the states returned by compensations run in parallel.
    pub fn merge<F>(mut self, merge: F) -> Self
    where
        F: Fn(S, S) -> S + Send + Sync + 'static,
    {
        self.merge = Arc::new(merge);
        self
    }
}

/// A group inside a built definition: its members are `steps[first..first + len]`.
pub(crate) struct GroupInner<S> {
    pub(crate) name: Arc<str>,
    pub(crate) first: u32,
    pub(crate) len: u32,
    pub(crate) on_failure: GroupFailure,
    pub(crate) compensation: GroupCompensation,
    pub(crate) merge: MergeFn<S>,
}

impl<S> GroupInner<S> {
    pub(crate) fn members(&self) -> std::ops::Range<u32> {
        self.first..self.first + self.len
    }
}

impl<S> fmt::Debug for GroupInner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("members", &self.members())
            .field("on_failure", &self.on_failure)
            .field("compensation", &self.compensation)
            .finish_non_exhaustive()
    }
}
