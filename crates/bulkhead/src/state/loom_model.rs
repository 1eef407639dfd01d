//! loom models of the permit counter: every interleaving of the fast path, the queue, the
//! handoff of a released permit and a waiter that gives up, checked for permits lost or
//! doubled and for lost wake-ups.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p staunch-bulkhead --lib loom`.
//! Each model starts from a state built on the model's main thread and races two threads.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Wake, Waker};

use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::thread;

use super::{Enqueue, Permits, Waiter};

/// A waker that remembers being woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

fn queued(permits: &Permits) -> Arc<Waiter> {
    match permits.enqueue(8) {
        Enqueue::Queued(waiter) => waiter,
        other => panic!("expected to queue, got {other:?}"),
    }
}

/// Everything released, the flag is clear: the next caller takes the fast path.
fn assert_idle(permits: &Permits) {
    assert_eq!(permits.in_flight(), 0, "a permit is still counted");
    assert_eq!(permits.queued(), 0, "a waiter is still queued");
    assert!(
        permits.try_acquire(),
        "the fast path is shut although nobody waits"
    );
    permits.release();
}

#[test]
fn loom_fast_path_never_admits_more_than_the_limit() {
    loom::model(|| {
        let permits = Arc::new(Permits::new(1));
        let holders = Arc::new(AtomicUsize::new(0));
        let call = {
            let (permits, holders) = (Arc::clone(&permits), Arc::clone(&holders));
            move || {
                if permits.try_acquire() {
                    assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    holders.fetch_sub(1, Ordering::SeqCst);
                    permits.release();
                }
            }
        };
        let other = thread::spawn(call.clone());
        call();
        other.join().unwrap();
        assert_idle(&permits);
    });
}

#[test]
fn loom_a_release_is_handed_to_a_racing_waiter_and_wakes_it() {
    loom::model(|| {
        let permits = Arc::new(Permits::new(1));
        assert!(permits.try_acquire());
        let waiter = {
            let permits = Arc::clone(&permits);
            thread::spawn(move || match permits.enqueue(8) {
                Enqueue::Acquired => None,
                Enqueue::Queued(waiter) => {
                    let flag = Arc::new(Flag::default());
                    let granted = waiter.register(&Waker::from(Arc::clone(&flag)));
                    Some((waiter, flag, granted))
                }
                Enqueue::QueueFull => panic!("the queue has room"),
            })
        };
        permits.release();
        if let Some((waiter, flag, granted_at_register)) = waiter.join().unwrap() {
            assert!(
                waiter.is_granted(),
                "the released permit was not handed over"
            );
            assert!(
                granted_at_register || flag.0.load(Ordering::Acquire),
                "granted without a wake-up"
            );
        }
        // Exactly the waiter's permit, whichever way it came.
        assert_eq!(permits.in_flight(), 1);
        permits.release();
        assert_idle(&permits);
    });
}

#[test]
fn loom_a_newcomer_never_overtakes_a_queued_waiter() {
    loom::model(|| {
        let permits = Arc::new(Permits::new(1));
        assert!(permits.try_acquire());
        let waiter = queued(&permits);
        let newcomer = {
            let permits = Arc::clone(&permits);
            thread::spawn(move || permits.try_acquire())
        };
        permits.release();
        assert!(
            !newcomer.join().unwrap(),
            "the fast path overtook the queue"
        );
        assert!(waiter.is_granted());
        assert_eq!(permits.in_flight(), 1);
        permits.release();
        assert_idle(&permits);
    });
}

#[test]
fn loom_a_cancelled_waiter_passes_a_racing_grant_on() {
    loom::model(|| {
        let permits = Arc::new(Permits::new(1));
        assert!(permits.try_acquire());
        let (first, second) = (queued(&permits), queued(&permits));
        let cancel = {
            let permits = Arc::clone(&permits);
            thread::spawn(move || permits.withdraw(&first, false))
        };
        permits.release();
        cancel.join().unwrap();
        // Whether the first waiter was granted before it gave up or not, the one permit
        // ends with the second.
        assert!(second.is_granted(), "the permit was lost");
        assert_eq!(permits.in_flight(), 1);
        permits.release();
        assert_idle(&permits);
    });
}

#[test]
fn loom_a_timed_out_waiter_keeps_a_racing_grant() {
    loom::model(|| {
        let permits = Arc::new(Permits::new(1));
        assert!(permits.try_acquire());
        let waiter = queued(&permits);
        let time_out = {
            let permits = Arc::clone(&permits);
            thread::spawn(move || permits.withdraw(&waiter, true))
        };
        permits.release();
        if time_out.join().unwrap() {
            // Granted before the deadline was noticed: the waiter holds the permit.
            assert_eq!(permits.in_flight(), 1);
            permits.release();
        }
        assert_idle(&permits);
    });
}

#[test]
fn loom_growing_the_limit_grants_a_racing_waiter() {
    loom::model(|| {
        let permits = Arc::new(Permits::new(1));
        assert!(permits.try_acquire());
        let waiter = {
            let permits = Arc::clone(&permits);
            thread::spawn(move || match permits.enqueue(8) {
                Enqueue::Acquired => None,
                Enqueue::Queued(waiter) => Some(waiter),
                Enqueue::QueueFull => panic!("the queue has room"),
            })
        };
        assert_eq!(permits.set_limit(2), 1);
        if let Some(waiter) = waiter.join().unwrap() {
            assert!(waiter.is_granted(), "a waiter waits while a permit is free");
        }
        assert_eq!(permits.in_flight(), 2);
        permits.release();
        permits.release();
        assert_idle(&permits);
    });
}
