//! The retry rule of a step's attempts, shared by sequential steps and group members.

use std::time::Duration;

use staunch_core::BackoffSchedule;
use tokio::time::Instant;

use crate::definition::StepRetry;
use crate::error::StepErrorKind;

/// The attempts of one step in one phase under its [`StepRetry`]: counts them and decides
/// whether a failed one is retried, and after which delay.
pub(super) struct Retries {
    policy: StepRetry,
    schedule: BackoffSchedule,
    first_start: Instant,
    tries: u32,
}

impl Retries {
    pub(super) fn new(policy: StepRetry) -> Self {
        Self {
            policy,
            schedule: policy.backoff.schedule(),
            first_start: Instant::now(),
            tries: 0,
        }
    }

    /// The per-attempt timeout.
    pub(super) fn timeout(&self) -> Option<Duration> {
        self.policy.timeout
    }

    /// An attempt starts.
    pub(super) fn started(&mut self) {
        self.tries = self.tries.saturating_add(1);
    }

    /// After a failed attempt: the delay before the next one, or `None` to give up. A
    /// failure of `kind` is retried when it is retryable (or the step retries everything:
    /// `retriable_step`, actions only), never past the saga deadline, while the policy has
    /// attempts and time left.
    pub(super) fn next_delay(
        &mut self,
        kind: StepErrorKind,
        retriable_step: bool,
    ) -> Option<Duration> {
        let may_retry = kind != StepErrorKind::Deadline && (retriable_step || kind.is_retryable());
        let attempts_left = self.policy.max_attempts.is_none_or(|m| self.tries < m);
        if may_retry && attempts_left {
            self.schedule.next_delay_after(self.first_start.elapsed())
        } else {
            None
        }
    }
}
