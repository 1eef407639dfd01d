//! The permit counter: one atomic word for the lock-free fast path, and a FIFO queue of
//! waiters behind a mutex for the slow path.
//!
//! The word packs the number of permits in flight (low 32 bits), the limit (31 bits) and a
//! `WAITERS` flag (top bit). A caller takes a permit with a single compare-and-swap when the
//! flag is clear and a permit is free; it never touches the mutex. The flag is set, under the
//! mutex, exactly while the queue is non-empty, so the fast path cannot overtake a queued
//! waiter: once anyone waits, newcomers queue behind them and a released permit is handed
//! directly to the head of the queue.
//!
//! Invariant (held whenever the mutex is free): the queue is empty, or every permit is taken
//! (`in_flight >= limit`). Every operation that frees capacity (a release that sees the flag,
//! a resize, a cancelled grant) restores it by granting permits to the head of the queue.
//!
//! The loom models in `state/loom_model.rs` race the fast path, the queue, the handoff, a
//! cancelled or timed-out waiter and a resize, and check that no permit is lost or doubled
//! and no wake-up is lost.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::Waker;

use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard};

/// The largest limit the packed word can hold.
pub(crate) const MAX_LIMIT: usize = (1 << 31) - 1;

const IN_FLIGHT_MASK: u64 = 0xFFFF_FFFF;
const LIMIT_SHIFT: u32 = 32;
const LIMIT_MASK: u64 = 0x7FFF_FFFF;
const WAITERS: u64 = 1 << 63;

#[inline]
fn in_flight_of(word: u64) -> u64 {
    word & IN_FLIGHT_MASK
}

#[inline]
fn limit_of(word: u64) -> u64 {
    (word >> LIMIT_SHIFT) & LIMIT_MASK
}

/// One queued caller. Shared between the queue and the caller's future.
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    /// Set (under the queue mutex) when a permit was handed to this waiter. From then on the
    /// waiter owns one permit of `in_flight` and must release it if it goes away.
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    pub(crate) fn is_granted(&self) -> bool {
        self.granted.load(Ordering::Acquire)
    }

    /// Stores the waker to use when the permit is granted. Returns `true` if the permit was
    /// granted meanwhile (check after storing, so a grant cannot be missed).
    pub(crate) fn register(&self, waker: &Waker) -> bool {
        {
            let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut *slot {
                Some(w) if w.will_wake(waker) => {}
                other => *other = Some(waker.clone()),
            }
        }
        self.is_granted()
    }
}

/// What [`Permits::enqueue`] did.
#[derive(Debug)]
pub(crate) enum Enqueue {
    /// A permit was free and nobody was waiting: the caller holds it now.
    Acquired,
    /// The caller is queued; poll the waiter.
    Queued(Arc<Waiter>),
    /// The queue is at its cap.
    QueueFull,
}

/// The counter and the queue.
#[derive(Debug)]
#[repr(C)] // the word first: see `Inner`.
pub(crate) struct Permits {
    word: AtomicU64,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
}

impl Permits {
    pub(crate) fn new(limit: usize) -> Self {
        debug_assert!((1..=MAX_LIMIT).contains(&limit));
        Self {
            word: AtomicU64::new((limit as u64) << LIMIT_SHIFT),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Waiter>>> {
        // Only this module's code runs under the lock, and it does not panic; a poisoned lock
        // can only come from an allocation failure, after which the queue is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock-free fast path: takes a permit if one is free and nobody is queued.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if word & WAITERS != 0 || in_flight_of(word) >= limit_of(word) {
                return false;
            }
            match self.word.compare_exchange_weak(
                word,
                word + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// Gives one permit back; hands it to the head of the queue if anyone waits.
    #[inline]
    pub(crate) fn release(&self) {
        let before = self.word.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(in_flight_of(before) > 0, "permit released twice");
        if before & WAITERS != 0 {
            self.release_slow();
        }
    }

    #[cold]
    fn release_slow(&self) {
        let mut queue = self.lock();
        let wakers = self.grant_locked(&mut queue);
        drop(queue);
        wake_all(wakers);
    }

    /// Grants permits to the head of the queue while capacity is free, and clears the
    /// `WAITERS` flag when the queue empties. Returns the wakers to call once unlocked.
    fn grant_locked(&self, queue: &mut VecDeque<Arc<Waiter>>) -> Vec<Waker> {
        let mut wakers = Vec::new();
        loop {
            if queue.is_empty() {
                self.word.fetch_and(!WAITERS, Ordering::AcqRel);
                return wakers;
            }
            let word = self.word.load(Ordering::Acquire);
            if in_flight_of(word) >= limit_of(word) {
                return wakers;
            }
            // Fast-path acquirers are shut out by the flag, but releases still race with us.
            if self
                .word
                .compare_exchange(word, word + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            if let Some(waiter) = queue.pop_front() {
                waiter.granted.store(true, Ordering::Release);
                let waker = waiter
                    .waker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                wakers.extend(waker);
            }
        }
    }

    /// The slow path: takes a free permit if nobody is queued, otherwise joins the queue
    /// unless it already holds `max_queued` waiters.
    pub(crate) fn enqueue(&self, max_queued: usize) -> Enqueue {
        let mut queue = self.lock();
        loop {
            let word = self.word.load(Ordering::Acquire);
            if queue.is_empty() && in_flight_of(word) < limit_of(word) {
                if self
                    .word
                    .compare_exchange(word, word + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Enqueue::Acquired;
                }
                continue;
            }
            if queue.len() >= max_queued {
                return Enqueue::QueueFull;
            }
            // Setting the flag with a CAS orders us against concurrent releases: a release
            // either happened before (and we see its free permit on the next turn) or sees
            // the flag and comes to grant under the lock.
            if self
                .word
                .compare_exchange(word, word | WAITERS, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let waiter = Arc::new(Waiter::default());
                queue.push_back(Arc::clone(&waiter));
                return Enqueue::Queued(waiter);
            }
        }
    }

    /// Withdraws a waiter that gives up (timed out or dropped). Returns `true` if it had
    /// been granted a permit meanwhile; in that case the permit is *kept* by the caller when
    /// `keep_if_granted`, and released (to the next waiter) otherwise.
    pub(crate) fn withdraw(&self, waiter: &Arc<Waiter>, keep_if_granted: bool) -> bool {
        let mut queue = self.lock();
        if waiter.is_granted() {
            if !keep_if_granted {
                self.word.fetch_sub(1, Ordering::AcqRel);
                let wakers = self.grant_locked(&mut queue);
                drop(queue);
                wake_all(wakers);
            }
            return true;
        }
        if let Some(pos) = queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            queue.remove(pos);
        }
        if queue.is_empty() {
            self.word.fetch_and(!WAITERS, Ordering::AcqRel);
        }
        false
    }

    /// Changes the limit. Growing grants queued waiters at once; shrinking lets the calls in
    /// flight finish and admits nobody until `in_flight` is below the new limit.
    pub(crate) fn set_limit(&self, limit: usize) -> usize {
        debug_assert!((1..=MAX_LIMIT).contains(&limit));
        let mut queue = self.lock();
        let mut word = self.word.load(Ordering::Acquire);
        let old = loop {
            let new = (word & !(LIMIT_MASK << LIMIT_SHIFT)) | ((limit as u64) << LIMIT_SHIFT);
            match self
                .word
                .compare_exchange(word, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break limit_of(word) as usize,
                Err(actual) => word = actual,
            }
        };
        let wakers = self.grant_locked(&mut queue);
        drop(queue);
        wake_all(wakers);
        old
    }

    pub(crate) fn in_flight(&self) -> usize {
        in_flight_of(self.word.load(Ordering::Relaxed)) as usize
    }

    pub(crate) fn limit(&self) -> usize {
        limit_of(self.word.load(Ordering::Relaxed)) as usize
    }

    pub(crate) fn queued(&self) -> usize {
        self.lock().len()
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

#[cfg(all(test, loom))]
mod loom_model;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fast_path_stops_at_the_limit_and_release_frees() {
        let p = Permits::new(2);
        assert!(p.try_acquire());
        assert!(p.try_acquire());
        assert!(!p.try_acquire());
        p.release();
        assert!(p.try_acquire());
        assert_eq!(p.in_flight(), 2);
    }

    #[test]
    fn queued_waiters_block_the_fast_path_and_get_released_permits_in_order() {
        let p = Permits::new(1);
        assert!(p.try_acquire());
        let Enqueue::Queued(a) = p.enqueue(8) else {
            panic!("expected to queue")
        };
        let Enqueue::Queued(b) = p.enqueue(8) else {
            panic!("expected to queue")
        };
        p.release();
        // The permit went to `a`, not to a newcomer on the fast path.
        assert!(a.is_granted());
        assert!(!b.is_granted());
        assert!(!p.try_acquire());
        assert_eq!(p.in_flight(), 1);
        // `b` gives up: the queue empties and the flag clears.
        assert!(!p.withdraw(&b, false));
        assert_eq!(p.queued(), 0);
        p.release();
        assert!(p.try_acquire());
    }

    #[test]
    fn queue_cap_is_enforced() {
        let p = Permits::new(1);
        assert!(p.try_acquire());
        assert!(matches!(p.enqueue(1), Enqueue::Queued(_)));
        assert!(matches!(p.enqueue(1), Enqueue::QueueFull));
    }

    #[test]
    fn a_granted_waiter_that_withdraws_passes_its_permit_on() {
        let p = Permits::new(1);
        assert!(p.try_acquire());
        let Enqueue::Queued(a) = p.enqueue(8) else {
            panic!()
        };
        let Enqueue::Queued(b) = p.enqueue(8) else {
            panic!()
        };
        p.release();
        assert!(p.withdraw(&a, false));
        assert!(b.is_granted());
        assert_eq!(p.in_flight(), 1);
    }

    #[test]
    fn resize_grants_and_drains() {
        let p = Permits::new(1);
        assert!(p.try_acquire());
        let Enqueue::Queued(a) = p.enqueue(8) else {
            panic!()
        };
        assert_eq!(p.set_limit(3), 1);
        assert!(a.is_granted());
        assert!(p.try_acquire());
        assert_eq!(p.in_flight(), 3);
        p.set_limit(1);
        p.release();
        p.release();
        assert!(!p.try_acquire(), "still at the new limit");
        p.release();
        assert!(p.try_acquire());
    }

    mod model {
        //! Model-based test: the permit counter against an obviously correct reference.
        use std::collections::VecDeque;

        use proptest::prelude::*;

        use super::super::*;

        #[derive(Debug, Clone)]
        enum Op {
            TryAcquire,
            Enqueue(usize),
            Release,
            /// Withdraw the n-th outstanding waiter, keeping a granted permit or not.
            Withdraw(usize, bool),
            /// The n-th granted waiter notices its grant and becomes a holder.
            Claim(usize),
            SetLimit(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => Just(Op::TryAcquire),
                3 => (0usize..4).prop_map(Op::Enqueue),
                4 => Just(Op::Release),
                2 => (0usize..8, any::<bool>()).prop_map(|(i, k)| Op::Withdraw(i, k)),
                2 => (0usize..8).prop_map(Op::Claim),
                1 => (1usize..6).prop_map(Op::SetLimit),
            ]
        }

        #[derive(Default)]
        struct Model {
            in_flight: usize,
            limit: usize,
            holders: usize,
            queue: VecDeque<usize>,
            granted: Vec<usize>,
        }

        impl Model {
            fn grant(&mut self) {
                while self.in_flight < self.limit
                    && let Some(w) = self.queue.pop_front()
                {
                    self.in_flight += 1;
                    self.granted.push(w);
                }
            }
        }

        proptest! {
            #[test]
            fn permits_behave_like_the_reference_model(
                limit in 1usize..5,
                ops in prop::collection::vec(op(), 1..80),
            ) {
                let real = Permits::new(limit);
                let mut model = Model { limit, ..Model::default() };
                let mut waiters: Vec<Arc<Waiter>> = Vec::new();
                for op in ops {
                    match op {
                        Op::TryAcquire => {
                            let expect = model.queue.is_empty() && model.in_flight < model.limit;
                            prop_assert_eq!(real.try_acquire(), expect);
                            if expect {
                                model.in_flight += 1;
                                model.holders += 1;
                            }
                        }
                        Op::Enqueue(cap) => match real.enqueue(cap) {
                            Enqueue::Acquired => {
                                prop_assert!(model.queue.is_empty() && model.in_flight < model.limit);
                                model.in_flight += 1;
                                model.holders += 1;
                            }
                            Enqueue::QueueFull => {
                                prop_assert!(model.in_flight >= model.limit || !model.queue.is_empty());
                                prop_assert!(model.queue.len() >= cap);
                            }
                            Enqueue::Queued(w) => {
                                prop_assert!(model.in_flight >= model.limit || !model.queue.is_empty());
                                prop_assert!(model.queue.len() < cap);
                                model.queue.push_back(waiters.len());
                                waiters.push(w);
                            }
                        },
                        Op::Release => {
                            if model.holders > 0 {
                                real.release();
                                model.holders -= 1;
                                model.in_flight -= 1;
                                model.grant();
                            }
                        }
                        Op::Withdraw(n, keep) => {
                            let outstanding: Vec<usize> =
                                model.queue.iter().chain(model.granted.iter()).copied().collect();
                            if let Some(&w) = outstanding.get(n % outstanding.len().max(1)) {
                                let was_granted = model.granted.contains(&w);
                                prop_assert_eq!(real.withdraw(&waiters[w], keep), was_granted);
                                if was_granted {
                                    model.granted.retain(|g| *g != w);
                                    if keep {
                                        model.holders += 1;
                                    } else {
                                        model.in_flight -= 1;
                                        model.grant();
                                    }
                                } else {
                                    model.queue.retain(|q| *q != w);
                                }
                            }
                        }
                        Op::Claim(n) => {
                            if !model.granted.is_empty() {
                                let w = model.granted.remove(n % model.granted.len());
                                prop_assert!(waiters[w].is_granted());
                                model.holders += 1;
                            }
                        }
                        Op::SetLimit(n) => {
                            prop_assert_eq!(real.set_limit(n), model.limit);
                            model.limit = n;
                            model.grant();
                        }
                    }
                    prop_assert_eq!(real.in_flight(), model.in_flight);
                    prop_assert_eq!(real.limit(), model.limit);
                    prop_assert_eq!(real.queued(), model.queue.len());
                    for (i, w) in waiters.iter().enumerate() {
                        let granted = model.granted.contains(&i);
                        if granted || model.queue.contains(&i) {
                            prop_assert_eq!(w.is_granted(), granted, "waiter {}", i);
                        }
                    }
                    // The invariant: nobody waits while a permit is free.
                    prop_assert!(model.queue.is_empty() || model.in_flight >= model.limit);
                }
            }
        }
    }
}
