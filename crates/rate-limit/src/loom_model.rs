//! Loom model of the rate cell: concurrent takes never hand out more permits than the
//! bucket holds, and a refund racing a take loses no slot and creates none.

use loom::sync::Arc;
use loom::thread;

use crate::gcra::{Cell, Quota, Take};

const Q: Quota = Quota {
    interval: 10,
    tolerance: 10,
};

#[test]
fn concurrent_takes_never_exceed_the_burst() {
    loom::model(|| {
        let cell = Arc::new(Cell::new());
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let cell = Arc::clone(&cell);
                thread::spawn(move || cell.take(100, Q, 0) == Take::Now)
            })
            .collect();
        let granted = threads
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum::<usize>();
        // A burst of two (tolerance = one interval).
        assert_eq!(granted, 2);
    });
}

#[test]
fn a_refund_racing_a_take_gives_the_slot_to_exactly_one_caller() {
    loom::model(|| {
        let cell = Arc::new(Cell::new());
        assert_eq!(cell.take(100, Q, 0), Take::Now);
        assert_eq!(cell.take(100, Q, 0), Take::Now);
        let reserved = cell.take(100, Q, 50);
        assert_eq!(
            reserved,
            Take::Later {
                wait: 10,
                interval: 10
            }
        );
        let refunder = {
            let cell = Arc::clone(&cell);
            thread::spawn(move || cell.refund(100, 10))
        };
        let taker = {
            let cell = Arc::clone(&cell);
            thread::spawn(move || cell.take(100, Q, 50))
        };
        refunder.join().unwrap();
        let took = taker.join().unwrap();
        // Whatever the order, the taker got the first free slot (10 or 20 from now) and the
        // cell's state is as if the refunded call had never come.
        match took {
            Take::Later { wait, .. } => assert!(wait == 10 || wait == 20, "{wait}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(cell.wait_at(100, Q), 20);
    });
}
