//! The deadline timer shared by a limit's calls: never early, at most `precision` late, exact
//! when alone (paused clock), cancel-safe, and at ease with runtimes that come and go.

use std::future::{Future, pending};
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use staunch_timeout::{Elapsed, RequestLimits, TimeLimit};
use tokio::runtime::{Builder, Runtime};
use tokio::time::{Instant, sleep};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn paused() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

fn limit(limit_ms: u64, precision_ms: u64) -> TimeLimit {
    TimeLimit::builder()
        .limit(ms(limit_ms))
        .precision(ms(precision_ms))
        .build()
        .unwrap()
}

/// A call that never finishes by itself, and when it ended (from its start).
async fn timed_out_after(
    limit: &TimeLimit,
    own: Option<Duration>,
) -> (Result<(), Elapsed>, Duration) {
    let start = Instant::now();
    let limits = RequestLimits {
        limit: own,
        deadline: None,
    };
    let result = limit.run_with(limits, pending::<()>()).await;
    (result, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_lone_timeout_fires_exactly_at_its_end_whatever_the_precision() {
    for precision in [0, 1, 50] {
        let limit = limit(30, precision);
        let (result, after) = timed_out_after(&limit, None).await;
        assert_eq!(result, Err(Elapsed::new(ms(30))));
        assert_eq!(after, ms(30), "precision {precision} ms");
        // Twice in a row: the driver of the first has gone, or sleeps to the second's end.
        let (_, after) = timed_out_after(&limit, None).await;
        assert_eq!(after, ms(30), "precision {precision} ms, second call");
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts_within_the_precision_of_a_wake_fire_at_most_that_late_never_early() {
    let batched = limit(10, 5);
    let exact = limit(10, 0);
    for (limit, second_at) in [(&batched, 15), (&exact, 11)] {
        let start = Instant::now();
        let first = tokio::spawn({
            let limit = limit.clone();
            async move { timed_out_after(&limit, None).await }
        });
        let second = tokio::spawn({
            let limit = limit.clone();
            async move { timed_out_after(&limit, Some(ms(11))).await }
        });
        assert_eq!(first.await.unwrap(), (Err(Elapsed::new(ms(10))), ms(10)));
        let (result, after) = second.await.unwrap();
        assert_eq!(result, Err(Elapsed::new(ms(11))));
        assert_eq!(after, ms(second_at), "precision {:?}", limit.precision());
        assert_eq!(start.elapsed(), ms(second_at));
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_frees_its_entry_and_the_driver_then_goes() {
    let limit = limit(1_000, 1);
    let mut call = Box::pin(limit.run(pending::<()>()));
    assert!(futures::poll!(call.as_mut()).is_pending());
    assert_eq!((limit.waiting(), limit.drivers()), (1, 1));
    drop(call);
    assert_eq!(limit.waiting(), 0);
    // The driver exits at its next wake, finding nothing to wake.
    sleep(ms(1_000)).await;
    tokio::task::yield_now().await;
    assert_eq!(limit.drivers(), 0);
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_moved_to_another_task_wakes_that_task() {
    let limit = limit(100, 1);
    let mut call = Box::pin(limit.run(pending::<()>()));
    let start = Instant::now();
    // Polled once by this task, then awaited by another: the entry's waker follows it.
    assert!(futures::poll!(call.as_mut()).is_pending());
    let other = tokio::spawn(async move { (call.await, Instant::now()) });
    let (result, at) = other.await.unwrap();
    assert_eq!(result, Err(Elapsed::new(ms(100))));
    assert_eq!(at - start, ms(100));
    assert_eq!(limit.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_polled_by_select_from_two_branches_keeps_its_end() {
    let limit = limit(100, 1);
    let start = Instant::now();
    let mut call = Box::pin(limit.run(pending::<()>()));
    // Polled inside `select!` twice (its waker is this task's either way), then awaited.
    for _ in 0..2 {
        tokio::select! {
            biased;
            _ = call.as_mut() => unreachable!("not yet"),
            () = sleep(ms(10)) => {}
        }
    }
    assert_eq!(call.await, Err(Elapsed::new(ms(100))));
    assert_eq!(start.elapsed(), ms(100));
}

#[test]
fn a_limit_serves_two_runtimes_one_after_the_other() {
    let limit = limit(40, 1);
    for _ in 0..2 {
        let rt = paused();
        let (result, after) = rt.block_on(timed_out_after(&limit, None));
        assert_eq!((result, after), (Err(Elapsed::new(ms(40))), ms(40)));
        // A call still waiting when its runtime goes: the driver goes with the runtime.
        rt.block_on(async {
            let mut call = Box::pin(limit.run(pending::<()>()));
            assert!(futures::poll!(call.as_mut()).is_pending());
            drop(tokio::spawn(call));
        });
        drop(rt);
        assert_eq!(limit.drivers(), 0);
        // The forgotten task's future was dropped with the runtime: its entry is freed.
        assert_eq!(limit.waiting(), 0);
    }
}

#[test]
fn a_runtime_left_idle_does_not_stall_another_runtimes_calls() {
    let limit = limit(40, 1);
    let idle = paused();
    // A call waits on `idle`, which is then no longer driven (not dropped).
    let mut parked = Box::pin(limit.run(pending::<()>()));
    idle.block_on(async {
        assert!(futures::poll!(parked.as_mut()).is_pending());
    });
    let busy = paused();
    let (result, after) = busy.block_on(timed_out_after(&limit, None));
    assert_eq!((result, after), (Err(Elapsed::new(ms(40))), ms(40)));
    assert_eq!(limit.waiting(), 1);
    // The call of the dropped runtime is woken and, polled on another, times out there.
    drop(idle);
    let result = busy.block_on(async {
        let start = Instant::now();
        let result = (&mut parked).await;
        (result, start.elapsed() <= ms(40))
    });
    assert_eq!(result, (Err(Elapsed::new(ms(40))), true));
    assert_eq!(limit.waiting(), 0);
}

#[test]
fn a_call_of_a_dropped_runtime_registers_again_where_it_is_polled() {
    let limit = limit(50, 1);
    let first = paused();
    let mut call = Box::pin(limit.run(pending::<()>()));
    first.block_on(async {
        assert!(futures::poll!(call.as_mut()).is_pending());
    });
    assert_eq!(limit.drivers(), 1);
    // Its driver's runtime goes: the call is woken, and its entry waits to be scheduled again.
    drop(first);
    assert_eq!((limit.drivers(), limit.waiting()), (0, 1));
    let second = paused();
    let result = second.block_on(async {
        // Polled here before its end: a driver starts on this runtime.
        assert!(futures::poll!(call.as_mut()).is_pending());
        assert_eq!(limit.drivers(), 1);
        call.await
    });
    assert_eq!(result, Err(Elapsed::new(ms(50))));
    assert_eq!(limit.waiting(), 0);
}

#[test]
#[should_panic(expected = "Tokio")]
fn waiting_outside_a_runtime_panics_as_tokio_sleep_does() {
    let limit = limit(50, 1);
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut call = Box::pin(limit.run(pending::<()>()));
    let _ = call.as_mut().poll(&mut cx);
}

#[test]
fn finishing_at_once_needs_no_runtime() {
    let limit = limit(50, 1);
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut call = Box::pin(limit.run(async { 3 }));
    assert_eq!(call.as_mut().poll(&mut cx), Poll::Ready(Ok(3)));
}

/// One step of the model test, times in milliseconds.
#[derive(Debug, Clone)]
enum Op {
    /// Start a call whose limit is this long (it never finishes by itself).
    Start(u64),
    /// Drop the `n`-th call started so far (modulo their number), if it is still waiting.
    Drop(usize),
    /// Let time pass.
    Advance(u64),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (1u64..60).prop_map(Op::Start),
            1 => any::<usize>().prop_map(Op::Drop),
            2 => (0u64..25).prop_map(Op::Advance),
        ],
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Against the model "each call ends at start + limit": a call resolves `Elapsed` no
    /// sooner than its end and at most `precision` after; a dropped call leaves no entry; at
    /// the end no entry and no driver is left.
    #[test]
    fn the_timer_matches_the_model(ops in ops(), precision_ms in prop_oneof![Just(0u64), Just(1), Just(3), Just(10)]) {
        let rt = paused();
        rt.block_on(async {
            let limit = limit(1_000, precision_ms);
            let mut calls = Vec::new();
            for op in ops {
                match op {
                    Op::Start(limit_ms) => {
                        let limit = limit.clone();
                        let task = tokio::spawn(async move {
                            timed_out_after(&limit, Some(ms(limit_ms))).await
                        });
                        // Let it take its entry before the next step.
                        tokio::task::yield_now().await;
                        calls.push((limit_ms, task, false));
                    }
                    Op::Drop(n) if !calls.is_empty() => {
                        let at = n % calls.len();
                        let (_, task, dropped) = &mut calls[at];
                        if !task.is_finished() {
                            task.abort();
                            *dropped = true;
                        }
                    }
                    Op::Drop(_) => {}
                    Op::Advance(n) => sleep(ms(n)).await,
                }
            }
            let mut waiting = 0;
            for (_, task, dropped) in &calls {
                if !*dropped && !task.is_finished() {
                    waiting += 1;
                }
            }
            // Aborted tasks have freed their entries once they were dropped.
            tokio::task::yield_now().await;
            prop_assert!(limit.waiting() <= waiting);
            for (limit_ms, task, dropped) in calls {
                let outcome = task.await;
                if dropped {
                    prop_assert!(outcome.is_err(), "a dropped call finished");
                    continue;
                }
                let (result, after) = outcome.unwrap();
                prop_assert_eq!(result, Err(Elapsed::new(ms(limit_ms))));
                prop_assert!(after >= ms(limit_ms), "early: {:?} < {} ms", after, limit_ms);
                prop_assert!(
                    after <= ms(limit_ms + precision_ms),
                    "late: {:?} > {} + {} ms", after, limit_ms, precision_ms
                );
            }
            prop_assert_eq!(limit.waiting(), 0);
            // Stale items may hold the driver until their end; then it exits.
            sleep(ms(100)).await;
            tokio::task::yield_now().await;
            prop_assert_eq!(limit.drivers(), 0);
            prop_assert_eq!(tokio::runtime::Handle::current().metrics().num_alive_tasks(), 0);
            Ok(())
        })?;
    }
}
