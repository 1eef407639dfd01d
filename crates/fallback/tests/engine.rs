//! The engine without tower: `check`, `call`, `call_or_else`, and a mark of one's own; the
//! layer's future is `Send` and no bigger than the inner one plus a few words.

use std::sync::Arc;

use staunch_core::{BoxError, BulkheadFull, BulkheadFullReason};
use staunch_fallback::{
    Answer, Answered, Cause, Fallback, FallbackFailed, FallbackLayer, FallbackPolicy, Reason,
    RejectionKind, Verdict,
};
use tower::{Layer, Service, service_fn};

fn full() -> BoxError {
    Box::new(BulkheadFull::new(
        Arc::from("db"),
        4,
        BulkheadFullReason::QueueFull,
    ))
}

#[test]
fn check_judges_results_without_running_anything() {
    let policy = FallbackPolicy::<u32>::builder("db").build().unwrap();
    assert!(matches!(
        policy.check(Ok::<_, BoxError>(3)),
        Verdict::Primary(Ok(3))
    ));
    match policy.check(Err::<u32, _>(full())) {
        Verdict::Fallback {
            reason: Reason::Rejected(RejectionKind::BulkheadFull),
            cause: Cause::Error(e),
        } => assert!(e.is::<BulkheadFull>()),
        other => panic!("{other:?}"),
    }
    match policy.check(Err::<u32, _>(std::io::Error::other("x"))) {
        Verdict::Primary(Err(e)) => assert!(e.is::<std::io::Error>()),
        other => panic!("{other:?}"),
    }
    assert_eq!(policy.metrics().rejections, 1);
}

#[tokio::test]
async fn calls_say_where_the_answer_came_from() {
    let policy = FallbackPolicy::<u32>::builder("db").build().unwrap();
    let answer = Answer::value(0);
    let primary = policy.call(async { Ok::<_, BoxError>(5) }, &answer).await;
    assert_eq!(primary.unwrap(), Answered::Primary(5));
    let answered = policy
        .call(async { Err::<u32, _>(full()) }, &answer)
        .await
        .unwrap();
    assert_eq!(
        answered.reason(),
        Some(Reason::Rejected(RejectionKind::BulkheadFull))
    );
    assert_eq!(*answered.get_ref(), 0);
    let backup = policy
        .call_or_else(
            async { Err::<u32, _>(full()) },
            |reason, cause| async move {
                assert!(cause.error().is_some_and(|e| e.is::<BulkheadFull>()));
                assert_eq!(reason.as_str(), "bulkhead_full");
                Ok::<_, std::io::Error>(8)
            },
        )
        .await
        .unwrap();
    assert_eq!(backup.into_inner(), 8);
    let failed = policy
        .call_or_else(async { Err::<u32, _>(full()) }, |_, _| async {
            Err::<u32, _>(std::io::Error::other("replica down"))
        })
        .await
        .unwrap_err();
    let failed = failed
        .downcast_ref::<FallbackFailed>()
        .expect("FallbackFailed");
    assert!(failed.backup_error().is::<std::io::Error>());
    assert!(
        failed
            .to_string()
            .contains("backup of fallback `db` failed"),
        "{failed}"
    );
    // The primary's answer is never replaced when no rule fires.
    let primary = policy
        .call_or_else(async { Ok::<u32, BoxError>(1) }, |_, _| async {
            Ok::<u32, BoxError>(2)
        })
        .await
        .unwrap();
    assert_eq!(primary, Answered::Primary(1));
    let m = policy.metrics();
    assert_eq!((m.rejections, m.failed), (3, 1));
}

#[tokio::test]
async fn a_mark_of_ones_own_labels_fallbacks_only() {
    #[derive(Debug, Clone, Default)]
    struct Reply {
        fallback: Option<Fallback>,
    }
    let policy = FallbackPolicy::<Reply>::builder("db")
        .mark(|reply, fallback| reply.fallback = Some(fallback))
        .build()
        .unwrap();
    let mut svc = FallbackLayer::new(policy, Answer::value(Reply::default())).layer(service_fn(
        |fail: bool| async move {
            if fail {
                Err(full())
            } else {
                Ok(Reply::default())
            }
        },
    ));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = svc.poll_ready(&mut cx);
    assert!(svc.call(false).await.unwrap().fallback.is_none());
    assert_eq!(
        svc.call(true).await.unwrap().fallback.map(|f| f.reason),
        Some(Reason::Rejected(RejectionKind::BulkheadFull))
    );
}

#[test]
fn the_layer_future_is_send_and_small() {
    let inner = || service_fn(|n: u64| async move { Ok::<_, BoxError>(n) });
    let policy = FallbackPolicy::<u64>::builder("x").build().unwrap();
    let mut svc = FallbackLayer::new(policy.clone(), Answer::value(0)).layer(inner());
    let inner_size = std::mem::size_of_val(&inner().call(0));
    let fut = svc.call(0);
    fn send<T: Send>(_: &T) {}
    send(&fut);
    assert!(
        std::mem::size_of_val(&fut) <= inner_size + 24,
        "{} vs {inner_size}",
        std::mem::size_of_val(&fut)
    );
    // With a backup service, the request clone is the only extra: its call is boxed.
    let mut svc = FallbackLayer::service(policy, inner()).layer(inner());
    let fut = svc.call(0);
    send(&fut);
    assert!(
        std::mem::size_of_val(&fut) <= inner_size + 40,
        "{} vs {inner_size}",
        std::mem::size_of_val(&fut)
    );
}
