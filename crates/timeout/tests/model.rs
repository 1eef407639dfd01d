//! Model-based property test of the engine on the paused clock: for any configured limit,
//! override, deadline and inner duration, the call ends exactly when the earliest bound or the
//! inner future says, and `Elapsed` reports the bound that applied.

use std::time::Duration;

use proptest::prelude::*;
use staunch_timeout::{Deadline, RequestLimits, TimeLimit};
use tokio::time::{Instant, sleep};

/// One call, all times in milliseconds.
#[derive(Debug, Clone)]
#[allow(clippy::struct_field_names)]
struct Case {
    limit_ms: u64,
    override_ms: Option<u64>,
    /// Deadline relative to the call's start; may already have passed (negative).
    deadline_ms: Option<i64>,
    /// How long the inner future works, from its first poll; `None` finishes on first poll.
    inner_ms: Option<u64>,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        1u64..2_000,
        proptest::option::of(0u64..2_000),
        proptest::option::of(-100i64..2_000),
        proptest::option::of(0u64..3_000),
    )
        .prop_map(|(limit_ms, override_ms, deadline_ms, inner_ms)| Case {
            limit_ms,
            override_ms,
            deadline_ms,
            inner_ms,
        })
}

/// The reference model: (answer?, time taken, limit reported).
fn model(case: &Case) -> (bool, Duration, Option<Duration>) {
    let Some(inner) = case.inner_ms else {
        // Ready on the first poll: always the answer, no time passes.
        return (true, Duration::ZERO, None);
    };
    let relative = case.override_ms.unwrap_or(case.limit_ms);
    let bound = match case.deadline_ms {
        Some(d) => relative.min(u64::try_from(d.max(0)).unwrap()),
        None => relative,
    };
    if inner <= bound {
        // Due at the same instant as the timer: the inner future is polled first and wins.
        (true, Duration::from_millis(inner), None)
    } else {
        let bound = Duration::from_millis(bound);
        (false, bound, Some(bound))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_matches_the_model(case in cases()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (answered, took, reported) = rt.block_on(async {
            let limit = TimeLimit::new(Duration::from_millis(case.limit_ms)).unwrap();
            let start = Instant::now();
            let deadline = case.deadline_ms.map(|ms| {
                let at = if ms >= 0 {
                    start + Duration::from_millis(ms.unsigned_abs())
                } else {
                    start.checked_sub(Duration::from_millis(ms.unsigned_abs())).unwrap_or(start)
                };
                Deadline::at(at)
            });
            let limits = RequestLimits {
                limit: case.override_ms.map(Duration::from_millis),
                deadline,
            };
            let inner = case.inner_ms;
            let result = limit
                .run_with(limits, async move {
                    if let Some(ms) = inner {
                        sleep(Duration::from_millis(ms)).await;
                    }
                    7
                })
                .await;
            match result {
                Ok(v) => {
                    assert_eq!(v, 7);
                    (true, start.elapsed(), None)
                }
                Err(elapsed) => (false, start.elapsed(), Some(elapsed.limit())),
            }
        });
        let expected = model(&case);
        prop_assert_eq!((answered, took, reported), expected);
    }
}
