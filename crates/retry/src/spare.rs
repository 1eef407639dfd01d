//! Recycling of the policy-handle references that response futures hold.
//!
//! A response future that may retry must own a reference to its service's policy handle:
//! tower's `oneshot` drops the service before the future is polled, and a retry after that
//! still needs the policy, the budget and the classifier. Taking and dropping an `Arc`
//! reference costs two atomic read-modify-write instructions per call, which on some machines
//! is most of what a retry layer adds to a call that succeeds (about 13 ns together, against
//! a few ns for the rest).
//!
//! So a future that finishes hands its reference to a one-slot spare on the thread that
//! polled it, and the next call on that thread through the same service (or a clone: clones
//! share one handle) takes it from there instead of cloning: in the steady state no reference
//! count changes at all. A finished call keeps its reference only while some service holds
//! the handle (`Handle::services`), and dropping the last service clears the spare of the
//! thread that drops it. A thread that kept a spare before the last service was dropped on
//! another thread (or while it was being dropped: the count is read, then the reference is
//! kept, without a second look) keeps that handle (the policy, its hooks, the classifier and the kept clone
//! of the inner service) until it finishes a call through another retry layer or exits: at
//! most two handles per thread, one per slot.
//!
//! Handles with the default classifier [`RetryOn`] have a slot of their own type; others share
//! a slot of `dyn Any`, which costs a type check on each take (about 2 ns).

use std::any::{Any, TypeId};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use staunch_core::{ArcSpare, SpareSlot};

use crate::classify::RetryOn;
use crate::engine::Handle;

type Erased = dyn Any + Send + Sync;
type DefaultHandle = Arc<Handle<RetryOn>>;

thread_local! {
    static DEFAULT_SLOT: SpareSlot<Handle<RetryOn>> = const { SpareSlot::new(None) };
    static ERASED_SLOT: SpareSlot<Erased> = const { SpareSlot::new(None) };
}

const DEFAULT: ArcSpare<Handle<RetryOn>> = ArcSpare::new(&DEFAULT_SLOT);
const ERASED: ArcSpare<Erased> = ArcSpare::new(&ERASED_SLOT);

/// `value` as a `U`, if it is one (else it is dropped). `T` and `U` are known where this is
/// inlined, so the check is decided at compile time.
#[inline]
fn cast<T: 'static, U: 'static>(value: T) -> Option<U> {
    let mut value = Some(value);
    (&mut value as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
}

/// Whether handles with classifier `C` use the slot of the default classifier.
#[inline]
fn is_default<C: 'static>() -> bool {
    TypeId::of::<C>() == TypeId::of::<RetryOn>()
}

/// A reference to `handle`: the calling thread's spare if it is one to the same handle, else
/// a new one.
#[inline]
pub(crate) fn acquire<C: Send + Sync + 'static>(handle: &Arc<Handle<C>>) -> Arc<Handle<C>> {
    let at = Arc::as_ptr(handle).cast::<()>();
    let spare = if is_default::<C>() {
        DEFAULT
            .take_at(at)
            .and_then(cast::<DefaultHandle, Arc<Handle<C>>>)
    } else {
        ERASED
            .take_at(at)
            .and_then(|spare| spare.downcast::<Handle<C>>().ok())
    };
    spare.unwrap_or_else(|| Arc::clone(handle))
}

/// Gives back a reference that a finished future held: it becomes the thread's spare, unless
/// no service holds the handle any more (then it is dropped: nobody will call with it again).
#[inline]
pub(crate) fn release<C: Send + Sync + 'static>(handle: Arc<Handle<C>>) {
    if handle.services.load(Ordering::Relaxed) == 0 {
        return;
    }
    // A service holds the handle, so this is not its last reference.
    if is_default::<C>() {
        if let Some(handle) = cast::<Arc<Handle<C>>, DefaultHandle>(handle) {
            DEFAULT.give_back_owned(handle);
        }
    } else {
        let handle: Arc<Erased> = handle;
        ERASED.give_back_owned(handle);
    }
}

/// Clears the calling thread's spare if it is a reference to the handle at `handle`: called
/// when a service drops its handle, so that a single-threaded runtime never keeps a dropped
/// policy alive.
pub(crate) fn forget(handle: *const ()) {
    DEFAULT.forget(handle);
    ERASED.forget(handle);
}

#[cfg(test)]
mod tests {
    use std::future::{Future, Ready, ready};
    use std::pin::pin;
    use std::sync::{Arc, Weak};
    use std::task::{Context, Poll, Waker};

    use tower::{Service, ServiceExt};

    use crate::engine::Handle;
    use crate::{BoxError, Retry, RetryOn, RetryPolicy, Verdict, retry_fn};

    type Inner = tower::util::ServiceFn<fn(u64) -> Ready<Result<u64, BoxError>>>;

    fn inner() -> Inner {
        tower::service_fn(|x: u64| ready(Ok::<u64, BoxError>(x)))
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::builder().max_attempts(3).build().unwrap()
    }

    fn retry() -> Retry<Inner> {
        Retry::new(inner(), policy(), RetryOn::new())
    }

    fn handle<S, C>(svc: &Retry<S, C>) -> &Arc<Handle<C>> {
        svc.handle()
    }

    /// Calls `svc` once and polls the response to completion on this thread.
    fn call_now<S: Service<u64, Response = u64>>(svc: &mut S, req: u64) -> u64
    where
        S::Error: std::fmt::Debug,
    {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut fut = pin!(svc.call(req));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(res)) => res,
            other => panic!("not ready at once: {other:?}"),
        }
    }

    #[test]
    fn a_finished_call_leaves_its_reference_for_the_next_call() {
        let mut svc = retry();
        assert_eq!(Arc::strong_count(handle(&svc)), 1);
        assert_eq!(call_now(&mut svc, 7), 7);
        // The service's reference and the thread's spare.
        assert_eq!(Arc::strong_count(handle(&svc)), 2);

        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let fut = svc.call(8);
        // The running call took the spare: a fresh reference would make three.
        assert_eq!(Arc::strong_count(handle(&svc)), 2);
        drop(fut);
        // A call dropped before it finished drops its reference like any `Arc`.
        assert_eq!(Arc::strong_count(handle(&svc)), 1);

        for i in 0..1000 {
            assert_eq!(call_now(&mut svc, i), i);
        }
        assert_eq!(Arc::strong_count(handle(&svc)), 2);
    }

    #[test]
    fn a_custom_classifier_is_recycled_too() {
        let classify = retry_fn(|r: Result<&u64, &BoxError>| {
            if r.is_ok() {
                Verdict::Done
            } else {
                Verdict::Retry
            }
        });
        let mut svc = Retry::new(inner(), policy(), classify);
        assert_eq!(call_now(&mut svc, 1), 1);
        assert_eq!(Arc::strong_count(handle(&svc)), 2);
        let fut = svc.call(2);
        assert_eq!(Arc::strong_count(handle(&svc)), 2);
        drop(fut);
    }

    #[test]
    fn dropping_the_service_releases_the_policy_on_the_same_thread() {
        // The hook holds a token: it is dropped when the policy is.
        let token = Arc::new(());
        let hook_token = Arc::clone(&token);
        let policy = RetryPolicy::builder()
            .on_retry(move |_| {
                let _ = &hook_token;
            })
            .build()
            .unwrap();
        let mut svc = Retry::new(inner(), policy, RetryOn::new());
        call_now(&mut svc, 1);
        let weak: Weak<_> = Arc::downgrade(handle(&svc));
        drop(svc);
        assert!(
            weak.upgrade().is_none(),
            "the thread's spare kept the handle"
        );
        assert_eq!(
            Arc::strong_count(&token),
            1,
            "the hook outlived the service"
        );
    }

    #[test]
    fn clones_share_one_handle_and_one_spare() {
        let mut a = retry();
        let mut b = a.clone();
        assert!(Arc::ptr_eq(handle(&a), handle(&b)));
        call_now(&mut a, 1);
        call_now(&mut b, 2);
        // Two services and one spare.
        assert_eq!(Arc::strong_count(handle(&a)), 3);
        let weak = Arc::downgrade(handle(&a));
        // Dropping one clone keeps the spare for the other.
        drop(b);
        assert_eq!(weak.strong_count(), 2);
        drop(a);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn services_taking_turns_on_one_thread_stay_correct_and_leak_nothing() {
        let mut a = retry();
        let mut b = retry();
        for i in 0..100 {
            assert_eq!(call_now(&mut a, i), i);
            assert_eq!(call_now(&mut b, i + 1), i + 1);
        }
        let (wa, wb) = (Arc::downgrade(handle(&a)), Arc::downgrade(handle(&b)));
        // `b` finished last: its reference is the spare, `a`'s was dropped when it was
        // replaced.
        assert_eq!(wa.strong_count(), 1);
        assert_eq!(wb.strong_count(), 2);
        drop((a, b));
        assert!(wa.upgrade().is_none());
        assert!(wb.upgrade().is_none());
    }

    #[test]
    fn a_call_that_outlives_its_service_keeps_no_spare() {
        // `oneshot` drops the service before polling: the future holds the last reference.
        let svc = retry();
        let weak = Arc::downgrade(handle(&svc));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(svc.oneshot(5)).unwrap(), 5);
        assert!(weak.upgrade().is_none());
    }

    /// A future that is pending on its first poll and ready on the second.
    struct YieldOnce(bool);

    impl Future for YieldOnce {
        type Output = Result<u64, BoxError>;

        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            if self.0 {
                Poll::Ready(Ok(1))
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    #[test]
    fn calls_finishing_after_the_last_service_is_dropped_keep_nothing() {
        let inner = tower::service_fn(|_: u64| YieldOnce(false));
        let mut svc = Retry::new(inner, policy(), RetryOn::new());
        let weak = Arc::downgrade(handle(&svc));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut first = Box::pin(svc.call(1));
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut second = Box::pin(svc.call(2));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        // Two calls of the service are in flight on this thread when it goes.
        drop(svc);
        assert!(matches!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(1))));
        assert!(matches!(second.as_mut().poll(&mut cx), Poll::Ready(Ok(1))));
        // A finished call lets go of its reference, and with no service left it is not kept
        // as a spare.
        assert!(
            weak.upgrade().is_none(),
            "a spare kept the handle of a dropped service"
        );
        drop((first, second));
    }

    #[test]
    fn dropping_the_last_service_clears_this_threads_spare_but_not_another_threads() {
        let mut svc = retry();
        let weak = Arc::downgrade(handle(&svc));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let elsewhere = svc.call(3);
        let (done, exit) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        // Another thread finishes a call and keeps its spare until it exits.
        let thread = std::thread::spawn(move || {
            let mut fut = pin!(elsewhere);
            let mut cx = Context::from_waker(Waker::noop());
            assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(3))));
            done.0.send(()).unwrap();
            exit.1.recv().unwrap();
        });
        done.1.recv().unwrap();
        call_now(&mut svc, 4);
        // The service, this thread's spare and the other thread's.
        assert_eq!(weak.strong_count(), 3);
        drop(svc);
        assert_eq!(
            weak.strong_count(),
            1,
            "only the other thread's spare is left"
        );
        exit.0.send(()).unwrap();
        thread.join().unwrap();
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn a_spare_left_on_another_thread_is_released_when_that_thread_exits() {
        let mut svc = retry();
        let weak = Arc::downgrade(handle(&svc));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let fut = svc.call(3);
        // The call finishes on another thread, which keeps the spare.
        std::thread::spawn(move || {
            let mut fut = pin!(fut);
            let mut cx = Context::from_waker(Waker::noop());
            assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(3))));
            assert_eq!(weak.strong_count(), 2);
            weak
        })
        .join()
        .map(|weak| {
            // The thread exited: its spare went with it.
            assert_eq!(weak.strong_count(), 1);
            drop(svc);
            assert!(weak.upgrade().is_none());
        })
        .unwrap();
    }
}
