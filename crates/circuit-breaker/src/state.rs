//! The breaker's states and the packed state word (generation + phase) the hot path reads.

use std::fmt;

/// Where a breaker stands, in the usual electrical sense: a *closed* circuit conducts (calls
/// flow), an *open* one does not (calls are rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum State {
    /// Calls flow and their outcomes are recorded in the sliding window.
    Closed,
    /// The breaker tripped: calls are rejected until the open duration has passed.
    Open,
    /// A few probe calls are let through; their outcomes decide between closed and open.
    HalfOpen,
    /// Opened by hand ([`CircuitBreaker::force_open`](crate::CircuitBreaker::force_open)):
    /// every call is rejected until [`reset`](crate::CircuitBreaker::reset).
    ForcedOpen,
    /// Switched off by hand: every call flows and nothing is recorded.
    Disabled,
    /// Every call flows; outcomes are recorded and reported, but the breaker never trips.
    MetricsOnly,
}

impl State {
    /// Every state, in code order.
    #[cfg(feature = "metrics")]
    pub(crate) const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    pub(crate) const fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
            State::MetricsOnly => 5,
        }
    }

    const fn from_code(code: u64) -> Self {
        match code {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            4 => State::Disabled,
            _ => State::MetricsOnly,
        }
    }

    /// `true` when calls are rejected without exception (open or forced open).
    pub const fn is_open(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }

    /// A stable lower-case name, used in events, logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const PHASE_BITS: u32 = 3;
const PHASE_MASK: u64 = (1 << PHASE_BITS) - 1;

/// The state word: `generation << 3 | phase`. Every transition bumps the generation, so a
/// permit remembers the exact word it was issued under and a result whose word no longer
/// matches belongs to an older state and is discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(pub(crate) u64);

impl Word {
    pub(crate) const fn new(generation: u64, state: State) -> Self {
        Self((generation << PHASE_BITS) | state.code())
    }

    pub(crate) const fn state(self) -> State {
        State::from_code(self.0 & PHASE_MASK)
    }

    pub(crate) const fn generation(self) -> u64 {
        self.0 >> PHASE_BITS
    }

    /// The word of the next state.
    pub(crate) const fn next(self, state: State) -> Self {
        Self::new(self.generation().wrapping_add(1), state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_generations_grow() {
        for s in [
            State::Closed,
            State::Open,
            State::HalfOpen,
            State::ForcedOpen,
            State::Disabled,
            State::MetricsOnly,
        ] {
            let w = Word::new(41, s);
            assert_eq!(w.state(), s);
            assert_eq!(w.generation(), 41);
            let n = w.next(State::Closed);
            assert_eq!(n.generation(), 42);
            assert_eq!(n.state(), State::Closed);
        }
    }
}
