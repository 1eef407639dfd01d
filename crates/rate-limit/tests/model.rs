//! The limiter against a token bucket counted in nanoseconds: the same answers, always.
//!
//! The model: a bucket of `burst × interval` units, refilled one unit per nanosecond; a call
//! needs `interval` units. With a wait allowed, a call may take units the bucket does not
//! have yet (it goes below zero), if the shortfall is within `max_wait`; a waiter dropped
//! before its time gives its units back.

use std::time::Duration;

use proptest::prelude::*;
use staunch_rate_limit::RateLimiter;

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Try,
    WaitAndDrop,
    WaitAndKeep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..50_000).prop_map(Op::Advance),
        Just(Op::Try),
        Just(Op::WaitAndDrop),
        Just(Op::WaitAndKeep),
    ]
}

struct Model {
    level: i128,
    capacity: i128,
    interval: i128,
    max_wait: i128,
}

impl Model {
    fn advance(&mut self, dt: u64) {
        self.level = (self.level + i128::from(dt)).min(self.capacity);
    }
    /// `Ok(wait)` or `Err(retry_after)`.
    fn take(&mut self, max_wait: i128) -> Result<i128, i128> {
        let short = (self.interval - self.level).max(0);
        if short > max_wait {
            return Err(short);
        }
        self.level -= self.interval;
        Ok(short)
    }
    fn refund(&mut self) {
        self.level = (self.level + self.interval).min(self.capacity);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn the_limiter_answers_as_the_token_bucket(
        interval in 1u64..20_000,
        burst in 1u32..6,
        max_wait in 0u64..60_000,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let limiter = RateLimiter::builder("m")
                .rate(1, Duration::from_nanos(interval))
                .burst(burst)
                .max_wait(Duration::from_nanos(max_wait))
                .build()
                .unwrap();
            let mut model = Model {
                level: i128::from(burst) * i128::from(interval),
                capacity: i128::from(burst) * i128::from(interval),
                interval: i128::from(interval),
                max_wait: i128::from(max_wait),
            };
            let mut kept = Vec::new();
            for op in ops {
                match op {
                    Op::Advance(dt) => {
                        tokio::time::advance(Duration::from_nanos(dt)).await;
                        model.advance(dt);
                    }
                    Op::Try => {
                        let got = limiter.try_acquire().map_err(|e| e.retry_after().as_nanos().cast_signed());
                        prop_assert_eq!(got.map(|()| 0), model.take(0));
                    }
                    Op::WaitAndDrop | Op::WaitAndKeep => {
                        let before = limiter.wait_time().as_nanos().cast_signed();
                        let expected = model.take(model.max_wait);
                        prop_assert_eq!(before, expected.unwrap_or_else(|r| r));
                        let waiting = limiter.acquire();
                        if matches!(op, Op::WaitAndDrop) {
                            drop(waiting);
                            if expected.is_ok() {
                                model.refund();
                            }
                        } else {
                            kept.push(waiting);
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}
