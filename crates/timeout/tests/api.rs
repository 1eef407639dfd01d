//! Public types are `Send + Sync` (and the futures `Send` and `Unpin` when their inner future
//! is), so they can be shared across tasks and stored in services.

use std::future::Ready;

use staunch_timeout::{
    Deadline, DeadlineLayer, DeadlineLayerBuilder, Elapsed, FromExtensions, HeaderFormat,
    IgnoreRequest, Limited, PropagateDeadline, PropagateDeadlineLayer,
    PropagateDeadlineLayerBuilder, PropagateFuture, RequestLimits, ResponseFuture, SetDeadline,
    TimeLimit, TimeLimitBuilder, Timeout, TimeoutLayer, TimeoutMetrics, TimeoutOverride,
};

fn send_sync<T: Send + Sync>() {}
fn send_sync_unpin<T: Send + Sync + Unpin>() {}

#[test]
fn public_types_are_send_and_sync() {
    type Inner = Ready<Result<(), std::io::Error>>;
    send_sync::<Deadline>();
    send_sync::<DeadlineLayer>();
    send_sync::<DeadlineLayerBuilder>();
    send_sync::<Elapsed>();
    send_sync::<FromExtensions>();
    send_sync::<HeaderFormat>();
    send_sync::<IgnoreRequest>();
    send_sync::<PropagateDeadline<()>>();
    send_sync::<PropagateDeadlineLayer>();
    send_sync::<PropagateDeadlineLayerBuilder>();
    send_sync::<RequestLimits>();
    send_sync::<SetDeadline<()>>();
    send_sync::<TimeLimit>();
    send_sync::<TimeLimitBuilder>();
    send_sync::<Timeout<()>>();
    send_sync::<TimeoutLayer>();
    send_sync::<TimeoutMetrics>();
    send_sync::<TimeoutOverride>();
    send_sync::<Limited<Inner>>();
    send_sync::<ResponseFuture<Inner>>();
    send_sync_unpin::<PropagateFuture<Inner>>();
    send_sync::<Elapsed>();
}

#[test]
fn elapsed_is_a_cheap_copyable_error_that_boxes() {
    let e = Elapsed::new(std::time::Duration::from_millis(5));
    let copy = e;
    let boxed: tower::BoxError = e.into();
    assert!(boxed.is::<Elapsed>());
    assert_eq!(copy.limit(), std::time::Duration::from_millis(5));
    assert!(std::mem::size_of::<Elapsed>() <= 16);
}
