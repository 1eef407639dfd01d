//! The balancer over in-process replicas, in paused time: where calls go (power of two
//! choices, never an ejected endpoint), ejection and return, in-flight counts under
//! cancellation, endpoints at run time, and the errors it returns.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use staunch_core::{AnyError, Outcome};
use staunch_outlier::{Balancer, EndpointState, NoEndpoints};
use support::{Replica, ReplicaFailed, replicas};
use tower::{Service, ServiceExt};

fn balancer(replicas: &[Replica]) -> Balancer<&'static str, Replica> {
    Balancer::builder("test")
        .endpoints(replicas.iter().map(|r| (r.name, r.clone())))
        .consecutive_failures(3)
        .base_ejection_time(Duration::from_secs(10))
        .max_ejection_percent(50)
        .seed(1)
        .build()
        .unwrap()
}

async fn call(
    b: &mut Balancer<&'static str, Replica>,
) -> Result<&'static str, staunch_outlier::BoxError> {
    b.ready().await.unwrap().call(()).await
}

#[tokio::test(start_paused = true)]
async fn calls_spread_over_every_healthy_endpoint() {
    let replicas = replicas();
    let mut b = balancer(&replicas);
    let mut seen = HashMap::new();
    for _ in 0..300 {
        *seen.entry(call(&mut b).await.unwrap()).or_insert(0) += 1;
    }
    for r in &replicas {
        let n = seen[r.name];
        assert!((50..=150).contains(&n), "{}: {n} of 300", r.name);
    }
}

#[tokio::test(start_paused = true)]
async fn the_less_loaded_of_two_gets_the_call() {
    // Two endpoints: both are drawn every time, so the less loaded always gets the call.
    let pair = [Replica::new("a"), Replica::new("b")];
    for r in &pair {
        r.hang(true);
    }
    let mut b = balancer(&pair);
    let mut held = Vec::new();
    for n in 1..=20 {
        held.push(b.ready().await.unwrap().call(()));
        let loads: Vec<usize> = b.status().iter().map(|s| s.in_flight).collect();
        assert!(loads[0].abs_diff(loads[1]) <= 1, "{loads:?}");
        assert_eq!(loads[0] + loads[1], n);
    }
    drop(held);

    // Three endpoints: two are drawn, so the one strictly more loaded than both others
    // never gets the call.
    let replicas = replicas();
    for r in &replicas {
        r.hang(true);
    }
    let mut b = balancer(&replicas);
    let mut held = Vec::new();
    for _ in 0..60 {
        let before: Vec<usize> = b.status().iter().map(|s| s.in_flight).collect();
        held.push(b.ready().await.unwrap().call(()));
        let after: Vec<usize> = b.status().iter().map(|s| s.in_flight).collect();
        let chosen = (0..3).find(|&i| after[i] > before[i]).unwrap();
        let others = (0..3).filter(|&i| i != chosen);
        assert!(
            others.clone().any(|i| before[i] >= before[chosen]),
            "{before:?} -> {chosen}"
        );
        // Let some calls end, so loads differ.
        if held.len() % 4 == 0 {
            drop(held.swap_remove(held.len() / 2));
        }
    }
    drop(held);
    assert!(b.status().iter().all(|s| s.in_flight == 0));
}

#[tokio::test(start_paused = true)]
async fn an_ejected_endpoint_gets_nothing_until_its_time_has_passed() {
    let replicas = replicas();
    let mut b = balancer(&replicas);
    replicas[1].fail(true);
    while b.endpoint(&"b").unwrap().times_ejected == 0 {
        let _ = call(&mut b).await;
    }
    let until = b.endpoint(&"b").unwrap().ejected_until().unwrap();
    assert_eq!(until, tokio::time::Instant::now() + Duration::from_secs(10));
    let before = replicas[1].hits();
    for _ in 0..200 {
        assert_ne!(call(&mut b).await.unwrap(), "b");
    }
    assert_eq!(replicas[1].hits(), before);

    // Healed; back after the ejection time, with its share of calls.
    replicas[1].fail(false);
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert!(b.endpoint(&"b").unwrap().state.is_ejected());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.endpoint(&"b").unwrap().state, EndpointState::Healthy);
    for _ in 0..300 {
        call(&mut b).await.unwrap();
    }
    assert!(
        replicas[1].hits() - before >= 50,
        "{}",
        replicas[1].hits() - before
    );
    let m = b.metrics();
    assert_eq!((m.ejections, m.returns, m.ejected), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_second_ejection_lasts_twice_as_long() {
    let replicas = replicas();
    let mut b = balancer(&replicas);
    replicas[2].fail(true);
    for round in 1..=2u32 {
        while b.endpoint(&"c").unwrap().times_ejected < round {
            let _ = call(&mut b).await;
        }
        let left = b.endpoint(&"c").unwrap().ejected_until().unwrap() - tokio::time::Instant::now();
        assert_eq!(left, Duration::from_secs(10) * round);
        tokio::time::advance(left).await;
    }
}

#[tokio::test(start_paused = true)]
async fn with_every_endpoint_failing_only_the_share_is_ejected() {
    let replicas = replicas();
    let mut b = Balancer::builder("all")
        .endpoints(replicas.iter().map(|r| (r.name, r.clone())))
        .consecutive_failures(2)
        .max_ejection_percent(67)
        .seed(3)
        .build()
        .unwrap();
    for r in &replicas {
        r.fail(true);
    }
    for _ in 0..300 {
        assert!(b.ready().await.unwrap().call(()).await.is_err());
        let out = b.status().iter().filter(|s| s.state.is_ejected()).count();
        assert!(out <= 2, "{out} of 3 ejected with 67 %");
    }
    assert_eq!(b.metrics().ejected, 2);
    assert!(b.metrics().held_by_cap > 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_in_flight_leaves_no_count_behind() {
    let replicas = replicas();
    for r in &replicas {
        r.hang(true);
    }
    let mut b = balancer(&replicas);
    let mut calls = Vec::new();
    for _ in 0..10 {
        let mut fut = b.ready().await.unwrap().call(());
        assert!((&mut fut).now_or_never().is_none());
        calls.push(fut);
    }
    let in_flight: usize = b.status().iter().map(|s| s.in_flight).sum();
    assert_eq!(in_flight, 10);
    drop(calls);
    assert!(b.status().iter().all(|s| s.in_flight == 0));
    // Cancellation is ignored by default: nobody's failures grew.
    assert!(b.status().iter().all(|s| s.consecutive_failures == 0));

    // A handle made ready and dropped without a call gives its choice back too.
    let mut clone = b.clone();
    clone.ready().await.unwrap();
    assert_eq!(b.status().iter().map(|s| s.in_flight).sum::<usize>(), 1);
    drop(clone);
    assert!(b.status().iter().all(|s| s.in_flight == 0));

    // A call that timed out is dropped the same way.
    let timed_out = tokio::time::timeout(Duration::from_secs(1), call(&mut b)).await;
    assert!(timed_out.is_err());
    assert!(b.status().iter().all(|s| s.in_flight == 0));
}

#[tokio::test(start_paused = true)]
async fn cancellation_counts_when_the_classifier_says_so() {
    let replicas = [Replica::new("slow"), Replica::new("fast")];
    replicas[0].hang(true);
    let mut b = Balancer::builder("strict")
        .endpoints(replicas.iter().map(|r| (r.name, r.clone())))
        .classifier(AnyError::new().cancelled_as(Outcome::Failure))
        .consecutive_failures(2)
        .seed(5)
        .build()
        .unwrap();
    while b.endpoint(&"slow").unwrap().times_ejected == 0 {
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            b.ready().await.unwrap().call(()),
        )
        .await;
    }
    assert!(b.endpoint(&"slow").unwrap().state.is_ejected());
}

#[tokio::test(start_paused = true)]
async fn clones_share_endpoints_load_and_detector() {
    let replicas = replicas();
    let b = balancer(&replicas);
    replicas[0].fail(true);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut b = b.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let _ = call(&mut b).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(b.endpoint(&"a").unwrap().state.is_ejected());
}

#[tokio::test(start_paused = true)]
async fn endpoints_are_added_and_removed_at_run_time() {
    let [a, b_replica, c] = replicas();
    let mut b = balancer(std::slice::from_ref(&a));
    assert!(b.insert("b", b_replica.clone()));
    assert!(
        !b.insert("b", b_replica.clone()),
        "a known key replaces the service"
    );
    for _ in 0..100 {
        call(&mut b).await.unwrap();
    }
    assert!(a.hits() > 20 && b_replica.hits() > 20);

    // A call in flight on an endpoint that is removed finishes there, unrecorded.
    b_replica.hang(true);
    a.hang(true);
    let in_flight = b.ready().await.unwrap().call(());
    assert!(b.remove(&"a").is_some());
    assert!(b.remove(&"a").is_none());
    drop(in_flight);
    b_replica.hang(false);
    for _ in 0..20 {
        assert_eq!(call(&mut b).await.unwrap(), "b");
    }
    assert!(b.insert("c", c.clone()));
    let keys: Vec<_> = b.status().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, ["b", "c"]);

    // With nothing left, a call fails at once: never a wait.
    b.remove(&"b");
    b.remove(&"c");
    let err = call(&mut b).await.unwrap_err();
    assert!(err.is::<NoEndpoints>(), "{err}");
    assert_eq!(b.metrics().endpoints, 0);
}

#[tokio::test(start_paused = true)]
async fn set_endpoints_keeps_known_keys_adds_new_ones_and_drops_the_rest() {
    let [a, b_replica, c] = replicas();
    let mut b = balancer(&[a.clone(), b_replica.clone()]);
    b_replica.fail(true);
    while b.endpoint(&"b").unwrap().times_ejected == 0 {
        let _ = call(&mut b).await;
    }
    // A watch's new list: "a" is gone, "b" stays (still ejected), "c" is new.
    b.set_endpoints([("b", b_replica.clone()), ("c", c.clone())]);
    let status = b.status();
    assert_eq!(status.iter().map(|s| s.key).collect::<Vec<_>>(), ["b", "c"]);
    assert!(status[0].state.is_ejected());
    assert_eq!(status[0].times_ejected, 1);
    let a_hits = a.hits();
    for _ in 0..20 {
        assert_eq!(call(&mut b).await.unwrap(), "c");
    }
    assert_eq!(a.hits(), a_hits);
    b.set_endpoints(std::iter::empty());
    assert!(call(&mut b).await.unwrap_err().is::<NoEndpoints>());
    assert_eq!(b.name(), "test");
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_fails_that_call_and_counts_against_the_endpoint() {
    let replicas = [Replica::new("broken"), Replica::new("ok")];
    replicas[0]
        .behaviour
        .not_ready
        .store(true, Ordering::SeqCst);
    let mut b = Balancer::builder("ready")
        .endpoints(replicas.iter().map(|r| (r.name, r.clone())))
        .consecutive_failures(2)
        .seed(9)
        .build()
        .unwrap();
    let mut errors = 0;
    for _ in 0..50 {
        match call(&mut b).await {
            Ok(name) => assert_eq!(name, "ok"),
            Err(err) => {
                assert!(err.downcast_ref::<ReplicaFailed>().is_some(), "{err}");
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 2, "two readiness failures eject it");
    assert!(b.endpoint(&"broken").unwrap().state.is_ejected());
    assert_eq!(replicas[0].hits(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_endpoint_counts_as_failing() {
    let replicas = [Replica::new("panics"), Replica::new("ok")];
    replicas[0]
        .behaviour
        .panicking
        .store(true, Ordering::SeqCst);
    let b = Balancer::builder("panic")
        .endpoints(replicas.iter().map(|r| (r.name, r.clone())))
        .consecutive_failures(1)
        .seed(2)
        .build()
        .unwrap();
    while replicas[0].hits() == 0 {
        let mut b = b.clone();
        let _ = tokio::spawn(async move { b.ready().await.unwrap().call(()).await }).await;
    }
    assert!(b.endpoint(&"panics").unwrap().state.is_ejected());
    assert!(b.status().iter().all(|s| s.in_flight == 0));
}

#[test]
fn endpoint_keys_must_differ() {
    let err = Balancer::builder("dup")
        .endpoint("a", Replica::new("a"))
        .endpoint("a", Replica::new("a"))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "endpoints");
}

#[test]
fn hostile_settings_are_refused_by_name() {
    let b = || Balancer::<&str, Replica>::builder("bad");
    assert_eq!(
        b().max_ejection_percent(0).build().unwrap_err().field(),
        "max_ejection_percent"
    );
    assert_eq!(
        b().max_ejection_percent(101).build().unwrap_err().field(),
        "max_ejection_percent"
    );
    assert_eq!(
        b().consecutive_failures(0).build().unwrap_err().field(),
        "consecutive_failures"
    );
    assert_eq!(
        b().base_ejection_time(Duration::ZERO)
            .build()
            .unwrap_err()
            .field(),
        "base_ejection_time"
    );
    assert_eq!(
        b().failure_rate(Duration::from_secs(1), 1, f64::NAN)
            .build()
            .unwrap_err()
            .field(),
        "failure_rate.threshold"
    );
}

#[tokio::test]
#[should_panic(expected = "without a successful poll_ready")]
async fn call_without_poll_ready_is_a_broken_contract() {
    let mut b = balancer(&replicas());
    drop(b.call(()));
}
