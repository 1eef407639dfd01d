//! Events a breaker publishes to its subscribers.

use std::sync::Arc;

use crate::core::TransitionReason;
use crate::state::State;

/// Something a breaker did; receive them with
/// [`CircuitBreaker::subscribe`](crate::CircuitBreaker::subscribe).
///
/// Transitions are always published. Rejections are published only once someone has
/// subscribed, so an open breaker under load does not pay for events nobody reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The breaker moved from one state to another.
    StateChanged {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state it left.
        from: State,
        /// The state it entered.
        to: State,
        /// Why.
        reason: TransitionReason,
    },
    /// The breaker refused a call.
    Rejected {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state that refused it (open, forced open, or half-open with every probe taken).
        state: State,
    },
}
