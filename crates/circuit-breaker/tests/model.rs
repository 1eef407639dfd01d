//! Model-based test: random sequences of outcomes, call durations, clock advances, held
//! (late) calls and resets, applied to the breaker and to a small reference model that must
//! agree on every admission, every rejection's `retry_after` and the state after every step.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use staunch_circuit_breaker::{CircuitBreaker, Permit, State};
use staunch_core::Outcome;

#[derive(Debug, Clone)]
struct Config {
    window: usize,
    minimum: usize,
    threshold: u32,
    slow_threshold: Option<(u64, u32)>,
    consecutive: Option<u32>,
    open_ms: u64,
    probes: usize,
    max_half_open_ms: u64,
}

#[derive(Debug, Clone)]
enum Op {
    Call { outcome: Outcome, ms: u64 },
    Advance(u64),
    Hold,
    Release(Outcome),
    Reset,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (outcome(), prop_oneof![3 => Just(0u64), 1 => 0..60u64])
            .prop_map(|(outcome, ms)| Op::Call { outcome, ms }),
        3 => (0..80u64).prop_map(Op::Advance),
        1 => Just(Op::Hold),
        1 => outcome().prop_map(Op::Release),
        1 => (0..20u8).prop_filter_map("rare", |n| (n == 0).then_some(Op::Reset)),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (1..=8usize)
        .prop_flat_map(|window| {
            (
                Just(window),
                1..=window,
                prop_oneof![Just(25u32), Just(50), Just(75), Just(100)],
                proptest::option::of((Just(30u64), prop_oneof![Just(50u32), Just(100)])),
                proptest::option::of(1..4u32),
                prop_oneof![Just(10u64), Just(50)],
                1..=3usize,
                prop_oneof![Just(20u64), Just(100)],
            )
        })
        .prop_map(
            |(window, minimum, threshold, slow_threshold, consecutive, open_ms, probes, max_ho)| {
                Config {
                    window,
                    minimum,
                    threshold,
                    slow_threshold,
                    consecutive,
                    open_ms,
                    probes,
                    max_half_open_ms: max_ho,
                }
            },
        )
}

/// The reference: obviously correct, slow, single-threaded.
#[derive(Debug)]
enum ModelState {
    Closed {
        window: VecDeque<(bool, bool)>,
        consecutive: u32,
    },
    Open {
        until: u64,
    },
    HalfOpen {
        deadline: u64,
        admitted: usize,
        results: Vec<(bool, bool)>,
    },
}

struct Model {
    cfg: Config,
    state: ModelState,
    generation: u64,
    now: u64,
}

impl Model {
    fn closed() -> ModelState {
        ModelState::Closed {
            window: VecDeque::new(),
            consecutive: 0,
        }
    }

    fn state(&self) -> State {
        match self.state {
            ModelState::Closed { .. } => State::Closed,
            ModelState::Open { .. } => State::Open,
            ModelState::HalfOpen { .. } => State::HalfOpen,
        }
    }

    fn trip(&mut self) {
        self.state = ModelState::Open {
            until: self.now + self.cfg.open_ms,
        };
        self.generation += 1;
    }

    /// `Ok((generation, start))` or `Err(retry_after in ms)`.
    fn acquire(&mut self) -> Result<(u64, u64), Option<u64>> {
        loop {
            match &mut self.state {
                ModelState::Closed { .. } => return Ok((self.generation, self.now)),
                ModelState::Open { until } => {
                    if self.now < *until {
                        return Err(Some(*until - self.now));
                    }
                    self.state = ModelState::HalfOpen {
                        deadline: self.now + self.cfg.max_half_open_ms,
                        admitted: 0,
                        results: Vec::new(),
                    };
                    self.generation += 1;
                }
                ModelState::HalfOpen {
                    deadline, admitted, ..
                } => {
                    if *admitted < self.cfg.probes {
                        *admitted += 1;
                        return Ok((self.generation, self.now));
                    }
                    if self.now >= *deadline {
                        self.trip();
                    } else {
                        return Err(None);
                    }
                }
            }
        }
    }

    fn exceeds(&self, results: &[(bool, bool)]) -> bool {
        let calls = results.len() as u64;
        let fails = results.iter().filter(|r| r.0).count() as u64;
        let slows = results.iter().filter(|r| r.1).count() as u64;
        fails * 100 >= u64::from(self.cfg.threshold) * calls
            || self
                .cfg
                .slow_threshold
                .is_some_and(|(_, t)| slows * 100 >= u64::from(t) * calls)
    }

    fn record(&mut self, generation: u64, start: u64, outcome: Outcome) {
        if generation != self.generation {
            return;
        }
        let slow = self
            .cfg
            .slow_threshold
            .is_some_and(|(ms, _)| self.now - start >= ms);
        let fail = outcome == Outcome::Failure;
        match &mut self.state {
            ModelState::Closed {
                window,
                consecutive,
            } => {
                if outcome == Outcome::Ignored {
                    return;
                }
                window.push_back((fail, slow));
                if window.len() > self.cfg.window {
                    window.pop_front();
                }
                *consecutive = if fail { *consecutive + 1 } else { 0 };
                let by_run = self.cfg.consecutive.is_some_and(|k| *consecutive >= k);
                let results: Vec<_> = window.iter().copied().collect();
                if by_run || (results.len() >= self.cfg.minimum && self.exceeds(&results)) {
                    self.trip();
                }
            }
            ModelState::HalfOpen {
                admitted, results, ..
            } => {
                if outcome == Outcome::Ignored {
                    *admitted -= 1;
                    return;
                }
                results.push((fail, slow));
                if results.len() == self.cfg.probes {
                    let results = results.clone();
                    if self.exceeds(&results) {
                        self.trip();
                    } else {
                        self.state = Self::closed();
                        self.generation += 1;
                    }
                }
            }
            ModelState::Open { .. } => unreachable!("no call is admitted while open"),
        }
    }
}

fn build(cfg: &Config) -> CircuitBreaker {
    let mut b = CircuitBreaker::builder("model")
        .count_window(cfg.window as u32)
        .minimum_calls(cfg.minimum as u32)
        .failure_rate_threshold(f64::from(cfg.threshold))
        .open_duration(Duration::from_millis(cfg.open_ms))
        .permitted_calls_in_half_open(cfg.probes as u32)
        .max_half_open_duration(Duration::from_millis(cfg.max_half_open_ms));
    if let Some((ms, rate)) = cfg.slow_threshold {
        b = b
            .slow_call_duration(Duration::from_millis(ms))
            .slow_call_rate_threshold(f64::from(rate));
    }
    if let Some(k) = cfg.consecutive {
        b = b.consecutive_failures(k);
    }
    b.build().unwrap()
}

async fn run(cfg: Config, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let breaker = build(&cfg);
    let mut model = Model {
        cfg,
        state: Model::closed(),
        generation: 0,
        now: 0,
    };
    let mut held: Option<(Permit, (u64, u64))> = None;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Call { outcome, ms } => {
                let real = breaker.try_acquire();
                let expected = model.acquire();
                match (real, expected) {
                    (Ok(permit), Ok((generation, start))) => {
                        tokio::time::advance(Duration::from_millis(ms)).await;
                        model.now += ms;
                        permit.record(outcome);
                        model.record(generation, start, outcome);
                    }
                    (Err(open), Err(retry_ms)) => {
                        prop_assert_eq!(
                            open.retry_after(),
                            retry_ms.map(Duration::from_millis),
                            "step {}",
                            step
                        );
                    }
                    (real, expected) => {
                        prop_assert!(
                            false,
                            "step {step}: breaker admitted={} model admitted={}",
                            real.is_ok(),
                            expected.is_ok()
                        );
                    }
                }
            }
            Op::Advance(ms) => {
                tokio::time::advance(Duration::from_millis(ms)).await;
                model.now += ms;
            }
            Op::Hold => {
                if held.is_none() {
                    match (breaker.try_acquire(), model.acquire()) {
                        (Ok(permit), Ok(tag)) => held = Some((permit, tag)),
                        (Err(_), Err(_)) => {}
                        (real, _) => {
                            prop_assert!(false, "step {step}: hold admitted={}", real.is_ok());
                        }
                    }
                }
            }
            Op::Release(outcome) => {
                if let Some((permit, (generation, start))) = held.take() {
                    permit.record(outcome);
                    model.record(generation, start, outcome);
                }
            }
            Op::Reset => {
                breaker.reset();
                model.state = Model::closed();
                model.generation += 1;
            }
        }
        prop_assert_eq!(breaker.state(), model.state(), "step {}", step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn breaker_agrees_with_the_reference_model(cfg in config(), ops in proptest::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(cfg, ops))?;
    }
}
