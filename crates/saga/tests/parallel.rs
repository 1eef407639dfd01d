//! Parallel groups: all succeed, one fails (what is compensated, in which order, for both
//! failure and compensation settings), and a crash in the middle of a group.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_saga::{
    GroupCompensation, GroupFailure, MemoryStore, ParallelGroup, Phase, SagaDefinition, SagaEngine,
    SagaEvent, SagaOutcome, Step, StepContext, StepError, StepErrorKind,
};
use support::{Call, Calls, Trail, calls, fast_retry, seen, step, trail};
use tokio::time::Instant;

/// What a member's action does after its delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    Ok,
    Fail,
    Hang,
}

fn record(calls: &Calls, ctx: &StepContext) {
    calls.lock().unwrap().push(Call {
        step: ctx.step().to_owned(),
        phase: ctx.phase(),
        key: ctx.idempotency_key(),
        attempt: ctx.attempt(),
        at: Instant::now(),
    });
}

/// A member whose action sleeps `ms` then does what its switch says, and whose compensation
/// sleeps 50 ms.
fn member(name: &str, ms: u64, then: Then, calls: &Calls) -> (Step<Trail>, Arc<Mutex<Then>>) {
    let switch = Arc::new(Mutex::new(then));
    let (c1, c2, sw) = (Arc::clone(calls), Arc::clone(calls), Arc::clone(&switch));
    let label = name.to_owned();
    let step = Step::new(name, move |mut t: Trail, ctx| {
        record(&c1, &ctx);
        let then = *sw.lock().unwrap();
        let label = label.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            match then {
                Then::Ok => {
                    t.done.push(label);
                    Ok(t)
                }
                Then::Fail => Err(StepError::fail(format!("{label} declined"))),
                Then::Hang => std::future::pending().await,
            }
        }
    })
    .retry(fast_retry(2))
    .compensate(move |t: Trail, ctx| {
        record(&c2, &ctx);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(t)
        }
    });
    (step, switch)
}

fn union(mut acc: Trail, member: Trail) -> Trail {
    for d in member.done {
        if !acc.done.contains(&d) {
            acc.done.push(d);
        }
    }
    acc
}

/// s0 -> [a, b, c] -> s4, with the given member behaviours and group settings.
fn flow(
    members: [(u64, Then); 3],
    on_failure: GroupFailure,
    compensation: GroupCompensation,
    calls: &Calls,
) -> SagaDefinition<Trail> {
    let mut group = ParallelGroup::new("prepare")
        .on_failure(on_failure)
        .compensation(compensation)
        .merge(union);
    for (name, (ms, then)) in ["a", "b", "c"].into_iter().zip(members) {
        group = group.step(member(name, ms, then, calls).0);
    }
    SagaDefinition::builder("parallel", 1)
        .step(step(
            "s0",
            support::Script::Ok,
            Some(support::Script::Ok),
            calls,
        ))
        .parallel(group)
        .step(step("s4", support::Script::Ok, None, calls))
        .build()
        .unwrap()
}

fn at(calls: &Calls, what: &str) -> Instant {
    calls
        .lock()
        .unwrap()
        .iter()
        .find(|c| format!("{}:{}", c.step, c.phase) == what)
        .unwrap_or_else(|| panic!("no call {what}"))
        .at
}

#[tokio::test(start_paused = true)]
async fn all_members_run_at_once_and_the_saga_moves_on_with_their_merged_state() {
    let calls = calls();
    let def = flow(
        [(100, Then::Ok), (100, Then::Ok), (100, Then::Ok)],
        GroupFailure::default(),
        GroupCompensation::default(),
        &calls,
    );
    let engine = SagaEngine::new(MemoryStore::new());
    let started = Instant::now();
    let outcome = engine
        .start(&def, "p-1", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let SagaOutcome::Completed(state) = outcome else {
        panic!("{outcome:?}")
    };
    // Three 100 ms members in 100 ms, not 300.
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let mut done = state.done.clone();
    done.sort();
    assert_eq!(done, ["a", "b", "c", "s0:action", "s4:action"]);
    assert_eq!(at(&calls, "a:action"), at(&calls, "c:action"));
    assert!(at(&calls, "s4:action") >= at(&calls, "a:action") + Duration::from_millis(100));
    assert!(!seen(&calls).iter().any(|c| c.ends_with(":compensate")));
}

#[tokio::test(start_paused = true)]
async fn a_failed_member_lets_the_others_finish_then_compensates_in_reverse_order() {
    let calls = calls();
    let def = flow(
        [(50, Then::Ok), (10, Then::Fail), (100, Then::Ok)],
        GroupFailure::FinishOthers,
        GroupCompensation::ReverseOrder,
        &calls,
    );
    let engine = SagaEngine::new(MemoryStore::new());
    let outcome = engine
        .start(&def, "p-2", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let SagaOutcome::Compensated {
        failed_step, state, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed_step, "b");
    // a and c finished after b failed (their results are in the state) and were undone;
    // b failed for good (not in doubt) and is not compensated; s4 never ran.
    assert!(state.done.contains(&"a".to_owned()) && state.done.contains(&"c".to_owned()));
    let compensations: Vec<_> = seen(&calls)
        .into_iter()
        .filter(|c| c.ends_with(":compensate"))
        .collect();
    assert_eq!(
        compensations,
        ["c:compensate", "a:compensate", "s0:compensate"]
    );
    assert!(at(&calls, "a:compensate") >= at(&calls, "c:compensate") + Duration::from_millis(50));
    assert!(!seen(&calls).contains(&"s4:action".to_owned()));
    // Business failures are not retried inside a group either.
    assert_eq!(seen(&calls).iter().filter(|c| *c == "b:action").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancel_others_cancels_running_members_and_compensates_them_in_parallel() {
    let calls = calls();
    let def = flow(
        [(10, Then::Ok), (20, Then::Fail), (1_000, Then::Ok)],
        GroupFailure::CancelOthers,
        GroupCompensation::Parallel,
        &calls,
    );
    let engine = SagaEngine::new(MemoryStore::new());
    let started = Instant::now();
    let outcome = engine
        .start(&def, "p-3", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let SagaOutcome::Compensated {
        failed_step, state, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed_step, "b");
    // c was cancelled at 20 ms, long before its 1 s action would have finished.
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(!state.done.contains(&"c".to_owned()));
    // a completed and c is in doubt: both compensated, at the same moment, before s0.
    assert_eq!(at(&calls, "a:compensate"), at(&calls, "c:compensate"));
    assert!(at(&calls, "s0:compensate") >= at(&calls, "a:compensate") + Duration::from_millis(50));
    assert!(!seen(&calls).contains(&"b:compensate".to_owned()));
    let timeline = engine.inspect("p-3").await.unwrap().unwrap();
    let cancelled: Vec<u32> = timeline
        .entries
        .iter()
        .filter_map(|e| match e.event.as_ref().unwrap() {
            SagaEvent::StepFailed {
                step,
                kind: StepErrorKind::Cancelled,
                ..
            } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, [3], "c (step 3) logged as cancelled");
}

#[tokio::test(start_paused = true)]
async fn finish_others_with_parallel_compensation_undoes_every_completed_member() {
    let calls = calls();
    let def = flow(
        [(10, Then::Ok), (20, Then::Fail), (100, Then::Ok)],
        GroupFailure::FinishOthers,
        GroupCompensation::Parallel,
        &calls,
    );
    let engine = SagaEngine::new(MemoryStore::new());
    let outcome = engine
        .start(&def, "p-4", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert!(
        matches!(outcome, SagaOutcome::Compensated { .. }),
        "{outcome:?}"
    );
    // c finished (at 100 ms, after b failed), then a and c were undone together.
    assert!(at(&calls, "a:compensate") >= at(&calls, "c:action") + Duration::from_millis(100));
    assert_eq!(at(&calls, "a:compensate"), at(&calls, "c:compensate"));
    let compensations: Vec<_> = seen(&calls)
        .into_iter()
        .filter(|c| c.ends_with(":compensate"))
        .collect();
    assert_eq!(compensations.len(), 3);
    assert_eq!(compensations[2], "s0:compensate");
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Runs `id` on a runtime that is dropped (a crash) once `calls` has `n` entries and the
/// store has `rows` log rows.
fn crash_when(
    store: &MemoryStore,
    def: &SagaDefinition<Trail>,
    calls: &Calls,
    id: &str,
    n: usize,
    rows: usize,
) {
    let rt = paused_runtime();
    rt.block_on(async {
        let engine = SagaEngine::new(store.clone());
        let _handle = engine.start(def, id, trail()).await.unwrap();
        loop {
            let logged = engine.inspect(id).await.unwrap().unwrap().entries.len();
            if calls.lock().unwrap().len() >= n && logged >= rows {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    drop(rt);
}

#[test]
fn a_group_half_done_at_a_crash_resumes_without_rerunning_completed_members() {
    let calls = calls();
    let (a, _) = member("a", 10, Then::Ok, &calls);
    let (b, b_switch) = member("b", 10, Then::Hang, &calls);
    let def = SagaDefinition::builder("half", 1)
        .step(step(
            "s0",
            support::Script::Ok,
            Some(support::Script::Ok),
            &calls,
        ))
        .parallel(ParallelGroup::new("g").step(a).step(b).merge(union))
        .step(step("s3", support::Script::Ok, None, &calls))
        .build()
        .unwrap();
    let store = MemoryStore::new();
    // s0 started+completed, a and b started, a completed: 6 rows (started, s0 x2, a, b, a).
    crash_when(&store, &def, &calls, "h-1", 3, 6);
    assert_eq!(seen(&calls), ["s0:action", "a:action", "b:action"]);

    *b_switch.lock().unwrap() = Then::Ok;
    paused_runtime().block_on(async {
        let engine = SagaEngine::new(store.clone());
        engine.register(&def).unwrap();
        let report = engine.recover().await.unwrap();
        assert_eq!(report.resumed, ["h-1"]);
        let outcome = engine
            .start(&def, "h-1", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        let SagaOutcome::Completed(state) = outcome else {
            panic!("{outcome:?}")
        };
        // The join is recomputed from the log: declaration order, b's result from its re-run.
        assert_eq!(state.done, ["s0:action", "a", "b", "s3:action"]);
    });
    // a is not run again; b is, with the same key and the next attempt number.
    assert_eq!(
        seen(&calls),
        ["s0:action", "a:action", "b:action", "b:action", "s3:action"]
    );
    let c = calls.lock().unwrap();
    let b_calls: Vec<_> = c.iter().filter(|c| c.step == "b").collect();
    assert_eq!(b_calls[0].key, b_calls[1].key);
    assert_eq!((b_calls[0].attempt, b_calls[1].attempt), (1, 2));
}

#[test]
fn a_crash_after_a_member_failed_compensates_the_interrupted_ones_as_in_doubt() {
    let calls = calls();
    let (a, _) = member("a", 5, Then::Ok, &calls);
    let (b, _) = member("b", 10, Then::Fail, &calls);
    let (c, _) = member("c", 10, Then::Hang, &calls);
    let def = SagaDefinition::builder("failing", 1)
        .step(step(
            "s0",
            support::Script::Ok,
            Some(support::Script::Ok),
            &calls,
        ))
        .parallel(ParallelGroup::new("g").step(a).step(b).step(c))
        .build()
        .unwrap();
    let store = MemoryStore::new();
    // started, s0 x2, a/b/c started, a done, b failed + compensation began: 9 rows.
    crash_when(&store, &def, &calls, "h-2", 4, 9);

    paused_runtime().block_on(async {
        let engine = SagaEngine::new(store.clone());
        engine.register(&def).unwrap();
        assert_eq!(engine.recover().await.unwrap().resumed, ["h-2"]);
        let outcome = engine
            .start(&def, "h-2", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        let SagaOutcome::Compensated { failed_step, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(failed_step, "b");
        let timeline = engine.inspect("h-2").await.unwrap().unwrap();
        assert!(timeline.entries.iter().any(|e| matches!(
            e.event,
            Ok(SagaEvent::StepFailed {
                step: 3,
                kind: StepErrorKind::Interrupted,
                ..
            })
        )));
    });
    // c is not re-run (the group already failed) but compensated, as is a; b is not.
    let s = seen(&calls);
    assert_eq!(s.iter().filter(|c| *c == "c:action").count(), 1);
    assert_eq!(
        s[4..],
        ["c:compensate", "a:compensate", "s0:compensate"].map(String::from)
    );
}

#[test]
fn groups_are_validated() {
    let calls = calls();
    let err = SagaDefinition::<Trail>::builder("bad", 1)
        .step(step("s", support::Script::Ok, None, &calls))
        .parallel(ParallelGroup::new("empty"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("groups[0].steps"), "{err}");
    let err = SagaDefinition::<Trail>::builder("bad", 1)
        .parallel(
            ParallelGroup::new("g")
                .step(Step::new("p", |t: Trail, _| async move { Ok(t) }).pivot())
                .step(step("q", support::Script::Ok, None, &calls)),
        )
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("steps[0].kind"), "{err}");
    let err = SagaDefinition::<Trail>::builder("bad", 1)
        .step(step("a", support::Script::Ok, None, &calls))
        .parallel(ParallelGroup::new("g").step(step("a", support::Script::Ok, None, &calls)))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("unique"), "{err}");
    let _ = Phase::Action;
}

#[cfg(feature = "sqlite")]
#[test]
fn groups_run_on_the_sqlite_store_too() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = support::TempDir::new("parallel");
        let store = staunch_saga::SqliteStore::builder(dir.file("sagas.db"))
            .synchronous(staunch_saga::SqliteSynchronous::Off)
            .open()
            .await
            .unwrap();
        let calls = calls();
        let def = flow(
            [(1, Then::Ok), (1, Then::Fail), (1, Then::Ok)],
            GroupFailure::FinishOthers,
            GroupCompensation::Parallel,
            &calls,
        );
        let engine = SagaEngine::new(store);
        let outcome = engine
            .start(&def, "q-1", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(
            matches!(outcome, SagaOutcome::Compensated { .. }),
            "{outcome:?}"
        );
        let ok = flow(
            [(1, Then::Ok), (1, Then::Ok), (1, Then::Ok)],
            GroupFailure::FinishOthers,
            GroupCompensation::Parallel,
            &calls,
        );
        let outcome = engine
            .start(&ok, "q-2", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(matches!(outcome, SagaOutcome::Completed(_)), "{outcome:?}");
        // The log replays: the settled outcome is rebuilt from it.
        let again = engine
            .start(&ok, "q-2", trail())
            .await
            .unwrap()
            .outcome()
            .await
            .unwrap();
        assert!(matches!(again, SagaOutcome::Completed(_)), "{again:?}");
    });
}

#[tokio::test(start_paused = true)]
async fn the_join_is_in_declaration_order_whatever_order_members_finish_in() {
    let calls = calls();
    // c finishes first, a last; each member sees only the state before the group.
    let def = flow(
        [(30, Then::Ok), (20, Then::Ok), (10, Then::Ok)],
        GroupFailure::default(),
        GroupCompensation::default(),
        &calls,
    );
    let engine = SagaEngine::new(MemoryStore::new());
    let outcome = engine
        .start(&def, "j-1", trail())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let SagaOutcome::Completed(state) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(state.done, ["s0:action", "a", "b", "c", "s4:action"]);
    // The log keeps each member's own result and the joined state after each completion.
    let timeline = engine.inspect("j-1").await.unwrap().unwrap();
    let members: Vec<(u32, String)> = timeline
        .entries
        .iter()
        .filter_map(|e| match e.event.as_ref().unwrap() {
            SagaEvent::StepCompleted {
                step,
                member: Some(m),
                ..
            } => Some((*step, m.get().to_owned())),
            _ => None,
        })
        .collect();
    let order: Vec<u32> = members.iter().map(|(s, _)| *s).collect();
    assert_eq!(order, [3, 2, 1], "completion order: c, b, a");
    assert!(
        members[0].1.contains(r#""done":["s0:action","c"]"#),
        "{}",
        members[0].1
    );
}
