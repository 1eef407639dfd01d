//! Each rule fires on its outcome and on no other, with rejections from real staunch layers;
//! the primary's answers pass untouched.

mod support;

use std::sync::Arc;
use std::time::Duration;

use staunch_bulkhead::{Bulkhead, BulkheadLayer};
use staunch_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use staunch_core::{BoxError, BulkheadFull, DeadlineExpired, RateLimited};
use staunch_fallback::{
    Answer, Answered, Cause, FallbackLayer, FallbackPolicy, Reason, RejectionKind, Rejections,
};
use support::{Calls, evens, failing};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

async fn call<S: Service<u32>>(svc: &mut S, n: u32) -> Result<S::Response, S::Error> {
    svc.ready().await?.call(n).await
}

fn reason_of(answered: &Answered<u32>) -> Option<Reason> {
    answered.reason()
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_answered_and_its_successes_are_untouched() {
    let breaker = CircuitBreaker::builder("dep")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let calls = Calls::default();
    let policy = FallbackPolicy::builder("dep")
        .rejections(Rejections::only(RejectionKind::BreakerOpen))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(policy.clone(), Answer::value(1000)).answered())
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(evens(calls.clone()));
    // Successes pass through as they are.
    assert_eq!(call(&mut svc, 2).await.unwrap(), Answered::Primary(2));
    // The dependency's own errors are not a rejection: they stand (and trip the breaker).
    for n in [1, 3] {
        let err = call(&mut svc, n).await.unwrap_err();
        assert!(err.is::<std::io::Error>(), "{err}");
    }
    assert_eq!(policy.metrics().total(), 0);
    // Now the breaker is open: its refusals are answered by the fallback.
    let answered = call(&mut svc, 4).await.unwrap();
    assert_eq!(
        answered,
        Answered::Fallback {
            response: 1000,
            reason: Reason::Rejected(RejectionKind::BreakerOpen)
        }
    );
    assert_eq!(
        calls.get(),
        3,
        "the refused call never reached the dependency"
    );
    assert_eq!(policy.metrics().rejections, 1);
    assert_eq!(policy.metrics().total(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_is_answered_only_when_chosen() {
    let bulkhead = Bulkhead::builder("dep").max_concurrent(1).build().unwrap();
    let slow = service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, std::io::Error>(n)
    });
    let stack = |rejections| {
        let policy = FallbackPolicy::builder("dep")
            .rejections(rejections)
            .build()
            .unwrap();
        ServiceBuilder::new()
            .layer(FallbackLayer::new(policy, Answer::value(0)).answered())
            .layer(BulkheadLayer::new(bulkhead.clone()))
            .service(slow)
    };
    let mut answers = stack(Rejections::only(RejectionKind::BulkheadFull));
    let mut refuses = stack(Rejections::only(RejectionKind::BreakerOpen));
    let held = tokio::spawn(stack(Rejections::ALL).oneshot(7));
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.in_flight(), 1);
    let answered = call(&mut answers, 1).await.unwrap();
    assert_eq!(
        reason_of(&answered),
        Some(Reason::Rejected(RejectionKind::BulkheadFull))
    );
    let err = call(&mut refuses, 1).await.unwrap_err();
    assert!(err.is::<BulkheadFull>(), "{err}");
    assert_eq!(held.await.unwrap().unwrap(), Answered::Primary(7));
}

#[tokio::test]
async fn every_rejection_kind_is_found_and_named() {
    let rejections: [(RejectionKind, fn() -> BoxError); 4] = [
        (RejectionKind::BreakerOpen, || {
            Box::new(staunch_core::BreakerOpen::new(Arc::from("b"), None))
        }),
        (RejectionKind::BulkheadFull, || {
            Box::new(BulkheadFull::new(
                Arc::from("b"),
                1,
                staunch_core::BulkheadFullReason::NoPermit,
            ))
        }),
        (RejectionKind::DeadlineExpired, || {
            Box::new(DeadlineExpired::new(None))
        }),
        (RejectionKind::RateLimited, || {
            Box::new(RateLimited::new(Arc::from("r"), Duration::from_secs(1)))
        }),
    ];
    for (kind, make) in rejections {
        for chosen in RejectionKind::ALL {
            let policy = FallbackPolicy::builder("x")
                .rejections(Rejections::only(chosen))
                .build()
                .unwrap();
            let mut svc = FallbackLayer::new(policy.clone(), Answer::value(5u32))
                .answered()
                .layer(failing::<u32>(make));
            let result = call(&mut svc, 0).await;
            if chosen == kind {
                assert_eq!(
                    result.unwrap().reason(),
                    Some(Reason::Rejected(kind)),
                    "{kind}"
                );
            } else {
                let err = result.unwrap_err();
                assert_eq!(
                    staunch_core::rejection_of(&*err).map(|r| RejectionKind::of(&r)),
                    Some(Some(kind)),
                    "{kind} passes through when {chosen} is chosen"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_error_rule_answers_the_errors_it_chooses_and_no_others() {
    let calls = Calls::default();
    let policy = FallbackPolicy::builder("dep")
        .rejections(Rejections::NONE)
        .on_error(|e| e.to_string().contains("odd 3"))
        .build()
        .unwrap();
    let answer = Answer::function(|reason, cause: Cause<u32>| {
        assert_eq!(reason, Reason::Error);
        match cause {
            Cause::Error(e) => e.to_string().len() as u32,
            _ => 0,
        }
    });
    let mut svc = FallbackLayer::new(policy.clone(), answer)
        .answered()
        .layer(evens(calls));
    assert_eq!(call(&mut svc, 2).await.unwrap(), Answered::Primary(2));
    assert_eq!(
        call(&mut svc, 3).await.unwrap(),
        Answered::Fallback {
            response: "odd 3".len() as u32,
            reason: Reason::Error
        }
    );
    assert!(call(&mut svc, 5).await.unwrap_err().is::<std::io::Error>());
    // Rejections are not chosen here, and the rule does not choose this one.
    let mut refused = FallbackLayer::new(policy.clone(), Answer::value(0))
        .layer(failing::<u32>(|| Box::new(DeadlineExpired::new(None))));
    assert!(
        call(&mut refused, 0)
            .await
            .unwrap_err()
            .is::<DeadlineExpired>()
    );
    assert_eq!(policy.metrics().errors, 1);
    assert_eq!(policy.metrics().total(), 1);
}

#[tokio::test]
async fn any_error_answers_rejections_and_errors_alike() {
    let policy = FallbackPolicy::builder("dep")
        .rejections(Rejections::only(RejectionKind::RateLimited))
        .on_any_error()
        .build()
        .unwrap();
    let mut svc = FallbackLayer::new(policy.clone(), Answer::value(9))
        .answered()
        .layer(evens(Calls::default()));
    assert_eq!(
        call(&mut svc, 1).await.unwrap().reason(),
        Some(Reason::Error)
    );
    let mut limited = FallbackLayer::new(policy.clone(), Answer::value(9))
        .answered()
        .layer(failing::<u32>(|| {
            Box::new(RateLimited::new(Arc::from("r"), Duration::ZERO))
        }));
    assert_eq!(
        call(&mut limited, 0).await.unwrap().reason(),
        Some(Reason::Rejected(RejectionKind::RateLimited))
    );
    let mut open = FallbackLayer::new(policy.clone(), Answer::value(9))
        .answered()
        .layer(failing::<u32>(|| {
            Box::new(staunch_core::BreakerOpen::new(Arc::from("b"), None))
        }));
    // Not a chosen rejection, but still an error: the error rule answers it.
    assert_eq!(
        call(&mut open, 0).await.unwrap().reason(),
        Some(Reason::Error)
    );
    let m = policy.metrics();
    assert_eq!((m.rejections, m.errors), (1, 2));
}

#[tokio::test]
async fn the_response_rule_replaces_only_what_it_chooses() {
    let policy = FallbackPolicy::builder("dep")
        .rejections(Rejections::NONE)
        .on_response(|n: &u32| *n > 100)
        .build()
        .unwrap();
    let answer =
        Answer::function(|_, cause: Cause<u32>| cause.response().copied().unwrap_or(0) / 10);
    let mut svc = FallbackLayer::new(policy.clone(), answer)
        .answered()
        .layer(evens(Calls::default()));
    assert_eq!(call(&mut svc, 100).await.unwrap(), Answered::Primary(100));
    assert_eq!(
        call(&mut svc, 500).await.unwrap(),
        Answered::Fallback {
            response: 50,
            reason: Reason::Response
        }
    );
    // Errors are not this policy's business.
    assert!(call(&mut svc, 1).await.is_err());
    assert_eq!(policy.metrics().responses, 1);
}

#[tokio::test]
async fn a_status_of_any_response_type_can_be_read() {
    #[derive(Debug, Clone, PartialEq)]
    struct Reply {
        code: u16,
    }
    let policy = FallbackPolicy::builder("dep")
        .status_of(|r: &Reply| r.code)
        .on_status(503)
        .build()
        .unwrap();
    let mut svc = FallbackLayer::new(policy, Answer::value(Reply { code: 200 }))
        .answered()
        .layer(service_fn(|code: u16| async move {
            Ok::<_, std::io::Error>(Reply { code })
        }));
    let mut get = async |code| svc.ready().await.unwrap().call(code).await.unwrap();
    assert_eq!(get(500).await, Answered::Primary(Reply { code: 500 }));
    assert_eq!(
        get(503).await,
        Answered::Fallback {
            response: Reply { code: 200 },
            reason: Reason::Status(503)
        }
    );
}

#[cfg(feature = "http")]
mod http_extension {
    use super::*;
    use staunch_fallback::Fallback;

    #[tokio::test]
    async fn the_extension_is_on_fallbacks_and_only_there() {
        let policy = FallbackPolicy::<http::Response<String>>::http("pages")
            .on_status(500..=599)
            .on_any_error()
            .build()
            .unwrap();
        let stale = http::Response::new(String::from("stale"));
        let mut svc = FallbackLayer::new(policy.clone(), Answer::value(stale)).layer(service_fn(
            |status: u16| async move {
                if status == 0 {
                    return Err(std::io::Error::other("connection refused"));
                }
                Ok(http::Response::builder()
                    .status(status)
                    .body(format!("status {status}"))
                    .unwrap())
            },
        ));
        let mut get = async |status| svc.ready().await.unwrap().call(status).await.unwrap();
        for status in [200, 404, 429, 499] {
            let res = get(status).await;
            assert_eq!(res.status(), status);
            assert!(res.extensions().get::<Fallback>().is_none(), "{status}");
        }
        for status in [500, 503, 599] {
            let res = get(status).await;
            assert_eq!(res.body(), "stale");
            assert_eq!(
                res.extensions().get::<Fallback>(),
                Some(&Fallback::new(Reason::Status(status)))
            );
        }
        let res = get(0).await;
        assert_eq!(
            res.extensions().get::<Fallback>().map(|f| f.reason),
            Some(Reason::Error)
        );
        let m = policy.metrics();
        assert_eq!((m.statuses, m.errors, m.total()), (3, 1, 4));
    }
}
