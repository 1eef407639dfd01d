//! Cancellation: a cancelled call's future is dropped while its permit is still held, so no
//! queued call starts while the cancelled one's destructor runs.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use staunch_bulkhead::{Bulkhead, BulkheadLayer, PartitionedBulkhead, PartitionedBulkheadLayer};
use tower::{Layer, Service, service_fn};

/// What a cancelled call's destructor saw of its bulkhead: calls in flight, and whether a
/// permit could be taken.
type Seen = Arc<Mutex<Option<(usize, bool)>>>;

/// A call that never finishes; its destructor records what it sees of `bulkhead`.
struct Observed {
    bulkhead: Bulkhead,
    seen: Seen,
}

impl Future for Observed {
    type Output = Result<(), std::io::Error>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let in_flight = self.bulkhead.metrics().in_flight;
        let could_start = self.bulkhead.try_acquire().is_ok();
        *self.seen.lock().unwrap() = Some((in_flight, could_start));
    }
}

fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

fn one() -> Bulkhead {
    Bulkhead::builder("dep").max_concurrent(1).build().unwrap()
}

#[test]
fn run_drops_a_cancelled_future_before_its_permit() {
    let bulkhead = one();
    let seen = Seen::default();
    let observed = Observed {
        bulkhead: bulkhead.clone(),
        seen: Arc::clone(&seen),
    };
    {
        let mut run = pin!(bulkhead.run(observed));
        assert!(poll_once(run.as_mut()).is_pending());
        assert_eq!(bulkhead.metrics().in_flight, 1);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        Some((1, false)),
        "the destructor ran with the permit still held"
    );
    assert_eq!(bulkhead.metrics().in_flight, 0);
}

#[test]
fn the_layer_drops_a_cancelled_future_before_its_permit() {
    let bulkhead = one();
    let seen = Seen::default();
    let (b, s) = (bulkhead.clone(), Arc::clone(&seen));
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(service_fn(move |()| Observed {
        bulkhead: b.clone(),
        seen: Arc::clone(&s),
    }));
    assert!(poll_once(pin!(std::future::poll_fn(|cx| svc.poll_ready(cx)))).is_ready());
    {
        let mut call = pin!(svc.call(()));
        assert!(poll_once(call.as_mut()).is_pending());
    }
    assert_eq!(*seen.lock().unwrap(), Some((1, false)));
    assert_eq!(bulkhead.metrics().in_flight, 0);
}

#[test]
fn the_partitioned_layer_drops_a_cancelled_future_before_its_permit() {
    let partitions = PartitionedBulkhead::<&'static str>::builder("tenants")
        .default_limit(1)
        .build()
        .unwrap();
    let partition = partitions.partition(&"acme");
    let seen = Seen::default();
    let (b, s) = (partition.clone(), Arc::clone(&seen));
    let mut svc =
        PartitionedBulkheadLayer::new(partitions, |(): &()| "acme").layer(service_fn(move |()| {
            Observed {
                bulkhead: b.clone(),
                seen: Arc::clone(&s),
            }
        }));
    assert!(poll_once(pin!(std::future::poll_fn(|cx| svc.poll_ready(cx)))).is_ready());
    {
        let mut call = pin!(svc.call(()));
        assert!(poll_once(call.as_mut()).is_pending());
        assert_eq!(partition.metrics().in_flight, 1);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        Some((1, false)),
        "the destructor ran with the permit still held"
    );
    assert_eq!(partition.metrics().in_flight, 0);
}
