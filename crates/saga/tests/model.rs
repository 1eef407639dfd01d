//! Model-based property test: random step outcomes against a tiny reference model of what
//! the engine must call, in what order, and how the saga must end.

mod support;

use proptest::prelude::*;
use staunch_saga::{MemoryStore, Phase, SagaDefinition, SagaEngine, SagaOutcome};
use support::{Script, calls, seen, step, trail};

#[derive(Clone, Debug)]
struct StepSpec {
    action: Script,
    compensation: Option<Script>,
}

fn script() -> impl Strategy<Value = Script> {
    prop_oneof![
        4 => Just(Script::Ok),
        1 => Just(Script::Fail),
        1 => (1u32..=3).prop_map(Script::RetryThen),
        1 => Just(Script::AlwaysRetry),
        1 => Just(Script::Panic),
    ]
}

fn spec() -> impl Strategy<Value = (Vec<StepSpec>, Option<usize>)> {
    (1usize..=5).prop_flat_map(|n| {
        (
            proptest::collection::vec(
                (script(), proptest::option::weighted(0.8, script())).prop_map(
                    |(action, compensation)| StepSpec {
                        action,
                        compensation,
                    },
                ),
                n,
            ),
            proptest::option::weighted(0.3, 0..n),
        )
    })
}

/// How many calls a script makes under 3 attempts, and whether it ends in success.
fn attempts(script: Script, retry_everything: bool) -> (usize, bool) {
    match script {
        Script::Ok => (1, true),
        Script::RetryThen(k) if k < 3 => (k as usize + 1, true),
        Script::RetryThen(_) | Script::AlwaysRetry => (3, false),
        Script::Fail | Script::Panic if retry_everything => (3, false),
        Script::Fail | Script::Panic => (1, false),
        Script::Hang => unreachable!(),
    }
}

#[derive(Debug, PartialEq)]
enum End {
    Completed,
    Compensated(String),
    Stuck(String, Phase),
}

/// The reference model: the calls the engine must make and how the saga ends.
fn model(steps: &[StepSpec], pivot: Option<usize>) -> (Vec<String>, End) {
    let mut calls = Vec::new();
    let mut completed = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let retriable = pivot.is_some_and(|p| i > p);
        let (n, ok) = attempts(s.action, retriable);
        calls.extend(std::iter::repeat_n(format!("s{i}:action"), n));
        if ok {
            completed.push(i);
            continue;
        }
        if pivot.is_some_and(|p| i > p) {
            return (calls, End::Stuck(format!("s{i}"), Phase::Action));
        }
        for &j in completed.iter().rev() {
            let Some(c) = compensation(steps, pivot, j) else {
                continue;
            };
            // Compensations retry only retryable errors.
            let (n, ok) = attempts(c, false);
            calls.extend(std::iter::repeat_n(format!("s{j}:compensate"), n));
            if !ok {
                return (calls, End::Stuck(format!("s{j}"), Phase::Compensate));
            }
        }
        return (calls, End::Compensated(format!("s{i}")));
    }
    (calls, End::Completed)
}

/// Pivots and the steps after them have no compensation.
fn compensation(steps: &[StepSpec], pivot: Option<usize>, i: usize) -> Option<Script> {
    if pivot.is_some_and(|p| i >= p) {
        None
    } else {
        steps[i].compensation
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_reference_model((steps, pivot) in spec()) {
        let calls = calls();
        let mut b = SagaDefinition::builder("model", 1);
        for (i, s) in steps.iter().enumerate() {
            let name = format!("s{i}");
            let mut st = step(&name, s.action, compensation(&steps, pivot, i), &calls);
            match pivot {
                Some(p) if i == p => st = st.pivot(),
                Some(p) if i > p => st = st.retriable().retry(support::fast_retry(3)),
                _ => {}
            }
            b = b.step(st);
        }
        let def = b.build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            let engine = SagaEngine::new(MemoryStore::new());
            engine.start(&def, "m", trail()).await.unwrap().outcome().await.unwrap()
        });
        let (expected_calls, expected_end) = model(&steps, pivot);
        prop_assert_eq!(seen(&calls), expected_calls);
        let end = match outcome {
            SagaOutcome::Completed(_) => End::Completed,
            SagaOutcome::Compensated { failed_step, .. } => End::Compensated(failed_step),
            SagaOutcome::Stuck { step, phase, .. } => End::Stuck(step, phase),
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(end, expected_end);
    }
}
