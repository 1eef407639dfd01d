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

/// A saga `s0 -> [g0..gk] -> last` with random member scripts: the calls made (as a
/// multiset: members run concurrently), the compensation order and the end must match what
/// a group promises. Members retry with a 10 ms constant backoff and return at once, so they
/// fail for good at 0 ms (business failure, panic) or 20 ms (retries exhausted).
fn group_model(
    members: &[Script],
    parallel: bool,
) -> (Vec<String>, Vec<String>, Option<Vec<String>>) {
    let fails_at = |s: Script| match s {
        Script::Fail | Script::Panic => Some(0),
        Script::AlwaysRetry | Script::RetryThen(3..) => Some(2),
        _ => None,
    };
    let first = members.iter().filter_map(|s| fails_at(*s)).min();
    let mut calls = vec!["s0:action".to_owned()];
    let mut completed = Vec::new();
    for (i, s) in members.iter().enumerate() {
        // Once a member failed for good, no new attempt starts.
        let n = match first {
            Some(0) => 1,
            _ => attempts(*s, false).0,
        };
        calls.extend(std::iter::repeat_n(format!("g{i}:action"), n));
        // A member that needed a retry does not get it after a failure at 0 ms.
        let completes = match first {
            Some(0) => *s == Script::Ok,
            _ => fails_at(*s).is_none(),
        };
        if completes {
            completed.push(i);
        }
    }
    let Some(first) = first else {
        calls.push("last:action".to_owned());
        return (calls, Vec::new(), None);
    };
    let mut compensations: Vec<String> = completed
        .iter()
        .rev()
        .map(|i| format!("g{i}:compensate"))
        .collect();
    if parallel {
        compensations.sort();
    }
    compensations.push("s0:compensate".to_owned());
    calls.extend(compensations.iter().cloned());
    let failing = members
        .iter()
        .enumerate()
        .filter(|(_, s)| fails_at(**s) == Some(first))
        .map(|(i, _)| format!("g{i}"))
        .collect();
    (calls, compensations, Some(failing))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn parallel_groups_match_the_reference_model(
        members in proptest::collection::vec(script(), 1..=4),
        parallel in any::<bool>(),
    ) {
        let calls = calls();
        let mut group = staunch_saga::ParallelGroup::new("g").compensation(if parallel {
            staunch_saga::GroupCompensation::Parallel
        } else {
            staunch_saga::GroupCompensation::ReverseOrder
        });
        for (i, s) in members.iter().enumerate() {
            group = group.step(step(&format!("g{i}"), *s, Some(Script::Ok), &calls));
        }
        let def = SagaDefinition::builder("group-model", 1)
            .step(step("s0", Script::Ok, Some(Script::Ok), &calls))
            .parallel(group)
            .step(step("last", Script::Ok, None, &calls))
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            let engine = SagaEngine::new(MemoryStore::new());
            engine.start(&def, "g", trail()).await.unwrap().outcome().await.unwrap()
        });
        let (expected_calls, expected_compensations, failing) = group_model(&members, parallel);
        let got = seen(&calls);
        let mut sorted = got.clone();
        sorted.sort();
        let mut expected_sorted = expected_calls.clone();
        expected_sorted.sort();
        prop_assert_eq!(sorted, expected_sorted);
        let mut compensations: Vec<String> =
            got.into_iter().filter(|c| c.ends_with(":compensate")).collect();
        if parallel && !compensations.is_empty() {
            let n = compensations.len() - 1;
            compensations[..n].sort();
        }
        prop_assert_eq!(compensations, expected_compensations);
        match (outcome, failing) {
            (SagaOutcome::Completed(_), None) => {}
            (SagaOutcome::Compensated { failed_step, .. }, Some(failing)) => {
                prop_assert!(failing.contains(&failed_step), "{failed_step} not in {failing:?}");
            }
            (other, failing) => prop_assert!(false, "{other:?} but expected failure in {failing:?}"),
        }
    }
}
