//! [`ArcSpare`]: recycles the `Arc` references that calls hold, through a spare per thread.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::thread::LocalKey;

/// The thread-local slot behind an [`ArcSpare`].
pub type SpareSlot<T> = Cell<Option<Arc<T>>>;

/// Recycles `Arc` references through a one-slot spare per thread, so that a call which must
/// own a reference to shared state changes no reference count.
///
/// A permit or a response future often has to own a reference to its layer's state, because
/// it may outlive the layer (tower's `oneshot` drops the service before polling). Taking and
/// dropping an `Arc` reference per call costs two atomic read-modify-writes, and when several
/// threads call through clones of one layer they all write the same count. With a spare, a
/// call that is done gives its reference back ([`give_back`](Self::give_back)) and the next
/// call on the same thread for the same value takes it ([`take`](Self::take)): in the steady
/// state no count changes at all.
///
/// A spare keeps its value alive until the thread gives back a reference to another value
/// (replacing it), [`forget`](Self::forget)s it, or exits. A reference that is the last one
/// is never kept: [`give_back`](Self::give_back) drops it. A caller that knows the owner
/// still holds a reference can use [`give_back_owned`](Self::give_back_owned), which does not
/// read the count.
///
/// ```
/// use std::sync::Arc;
/// use staunch_core::{ArcSpare, SpareSlot};
///
/// thread_local! {
///     static SLOT: SpareSlot<String> = const { SpareSlot::new(None) };
/// }
/// const SPARE: ArcSpare<String> = ArcSpare::new(&SLOT);
///
/// let shared = Arc::new(String::from("state"));
/// let call = SPARE.take(&shared); // a new reference: nothing to reuse yet
/// SPARE.give_back(call); // kept as this thread's spare
/// assert_eq!(Arc::strong_count(&shared), 2);
/// let next = SPARE.take(&shared); // the spare, no count changed
/// assert_eq!(Arc::strong_count(&shared), 2);
/// # drop(next);
/// ```
pub struct ArcSpare<T: ?Sized + 'static> {
    slot: &'static LocalKey<SpareSlot<T>>,
}

impl<T: ?Sized + 'static> fmt::Debug for ArcSpare<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArcSpare").finish_non_exhaustive()
    }
}

impl<T: ?Sized + 'static> ArcSpare<T> {
    /// A spare kept in `slot`, a `thread_local!` of its own.
    pub const fn new(slot: &'static LocalKey<SpareSlot<T>>) -> Self {
        Self { slot }
    }

    /// A reference to `value`: the thread's spare when it is one to `value`, else a new one.
    #[inline]
    pub fn take(&self, value: &Arc<T>) -> Arc<T> {
        self.take_at(Arc::as_ptr(value).cast())
            .unwrap_or_else(|| Arc::clone(value))
    }

    /// The thread's spare, if it is a reference to the value at `at` (`Arc::as_ptr` of it, cast
    /// to `*const ()`; the address is only compared, never read).
    #[inline]
    pub fn take_at(&self, at: *const ()) -> Option<Arc<T>> {
        self.slot
            .try_with(|slot| {
                let spare = slot.take()?;
                if std::ptr::addr_eq(Arc::as_ptr(&spare), at) {
                    Some(spare)
                } else {
                    slot.set(Some(spare));
                    None
                }
            })
            .ok()
            .flatten()
    }

    /// Gives back a reference a finished call held: it becomes the thread's spare (the
    /// previous spare is dropped), unless it is the last reference, which is dropped.
    #[inline]
    pub fn give_back(&self, value: Arc<T>) {
        if Arc::strong_count(&value) == 1 {
            return;
        }
        self.give_back_owned(value);
    }

    /// Like [`give_back`](Self::give_back), for a caller that knows the value's owner still
    /// holds a reference (so `value` is not the last one): skips reading the reference count.
    /// If the owner is in fact gone, the spare keeps the value alive until this thread gives
    /// back another value of its kind, [`forget`](Self::forget)s it, or exits.
    #[inline]
    pub fn give_back_owned(&self, value: Arc<T>) {
        let _ = self.slot.try_with(move |slot| match slot.take() {
            // The common case: this thread's spare was taken by the call that now gives back.
            None => slot.set(Some(value)),
            Some(previous) => replace_spare(slot, previous, value),
        });
    }

    /// Drops the thread's spare if it is a reference to the value at `at` (for example when
    /// the last owner of that value goes away on this thread).
    pub fn forget(&self, at: *const ()) {
        drop(self.take_at(at));
    }
}

/// The slot held `previous` when `value` was given back (taken out of the slot): keeps one
/// reference of the two, or none if they are the last two of one value. References are
/// dropped only once the slot holds its new state: a destructor may run user code that uses
/// this spare again.
#[cold]
fn replace_spare<T: ?Sized>(slot: &SpareSlot<T>, previous: Arc<T>, value: Arc<T>) {
    if !Arc::ptr_eq(&previous, &value) {
        // Another value's spare: this thread now calls with `value`.
        slot.set(Some(value));
        drop(previous);
    } else if Arc::strong_count(&value) > 2 {
        // Two references to one value, and its owner still holds another: keep one.
        slot.set(Some(previous));
        drop(value);
    }
    // Otherwise these two are the last references (the owner is gone): both are dropped.
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: SpareSlot<u32> = const { SpareSlot::new(None) };
    }
    const SPARE: ArcSpare<u32> = ArcSpare::new(&SLOT);

    #[test]
    fn a_given_back_reference_is_taken_again_without_a_new_one() {
        let a = Arc::new(1);
        let r = SPARE.take(&a);
        assert_eq!(Arc::strong_count(&a), 2);
        SPARE.give_back(r);
        assert_eq!(Arc::strong_count(&a), 2);
        let r = SPARE.take(&a);
        assert_eq!(Arc::strong_count(&a), 2, "the spare was reused");
        SPARE.give_back(r);
        SPARE.forget(Arc::as_ptr(&a).cast());
        assert_eq!(Arc::strong_count(&a), 1);
    }

    #[test]
    fn an_owned_give_back_is_reused_like_any_other() {
        let a = Arc::new(1);
        let r = SPARE.take(&a);
        SPARE.give_back_owned(r);
        assert_eq!(Arc::strong_count(&a), 2);
        let r = SPARE.take(&a);
        assert_eq!(Arc::strong_count(&a), 2, "the spare was reused");
        // Two references of one value given back: one is kept.
        let extra = Arc::clone(&a);
        SPARE.give_back_owned(r);
        SPARE.give_back_owned(extra);
        assert_eq!(Arc::strong_count(&a), 2);
        SPARE.forget(Arc::as_ptr(&a).cast());
        assert_eq!(Arc::strong_count(&a), 1);
    }

    #[test]
    fn another_value_replaces_the_spare_and_the_last_reference_is_dropped() {
        let (a, b) = (Arc::new(1), Arc::new(2));
        SPARE.give_back(SPARE.take(&a));
        let rb = SPARE.take(&b);
        // `a`'s spare stays while `b` is taken...
        assert_eq!(Arc::strong_count(&a), 2);
        SPARE.give_back(rb);
        // ...and is dropped when `b`'s reference replaces it.
        assert_eq!(Arc::strong_count(&a), 1);
        assert_eq!(Arc::strong_count(&b), 2);
        let weak = Arc::downgrade(&b);
        let last = SPARE.take(&b);
        drop(b);
        SPARE.give_back(last);
        assert!(weak.upgrade().is_none(), "the last reference was kept");
    }

    mod model {
        use std::sync::{Arc, Weak};

        use proptest::prelude::*;

        use super::super::{ArcSpare, SpareSlot};

        thread_local! {
            static SLOT: SpareSlot<usize> = const { SpareSlot::new(None) };
        }
        const SPARE: ArcSpare<usize> = ArcSpare::new(&SLOT);

        #[derive(Debug, Clone)]
        enum Op {
            /// A call on value `v` takes a reference.
            Take(usize),
            /// The oldest call still holding a reference finishes and gives it back.
            GiveBack,
            /// The oldest call whose value's owner is alive gives its reference back with
            /// `give_back_owned`.
            GiveBackOwned,
            /// The owner of value `v` forgets it on this thread.
            Forget(usize),
            /// The owner of value `v` goes away (it forgets it first, as owners do).
            DropOwner(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..3usize).prop_map(Op::Take),
                Just(Op::GiveBack),
                Just(Op::GiveBackOwned),
                (0..3usize).prop_map(Op::Forget),
                (0..3usize).prop_map(Op::DropOwner),
            ]
        }

        proptest! {
            /// Whatever the sequence, every value's reference count is its owner (while it
            /// lives), the calls holding it, and the spare if the spare is it; so a value whose
            /// owner and calls are gone is freed, never kept by the spare alone.
            #[test]
            fn reference_counts_match_the_model(ops in proptest::collection::vec(op(), 0..64)) {
                let mut owners: Vec<Option<Arc<usize>>> = (0..3).map(|v| Some(Arc::new(v))).collect();
                let weak: Vec<Weak<usize>> =
                    owners.iter().flatten().map(Arc::downgrade).collect();
                let mut held: Vec<Arc<usize>> = Vec::new();
                let mut spare: Option<usize> = None;
                for op in ops {
                    match op {
                        Op::Take(v) => {
                            // A call starts only while its value's owner lives.
                            if let Some(owner) = &owners[v] {
                                let r = SPARE.take(owner);
                                prop_assert!(Arc::ptr_eq(&r, owner));
                                if spare == Some(v) {
                                    spare = None;
                                }
                                held.push(r);
                            }
                        }
                        Op::GiveBack => {
                            if !held.is_empty() {
                                let r = held.remove(0);
                                let v = *r;
                                let others = usize::from(owners[v].is_some())
                                    + held.iter().filter(|h| ***h == v).count();
                                if spare == Some(v) {
                                    if others == 0 {
                                        spare = None;
                                    }
                                } else if others > 0 {
                                    spare = Some(v);
                                }
                                SPARE.give_back(r);
                            }
                        }
                        Op::GiveBackOwned => {
                            if let Some(i) = held.iter().position(|r| owners[**r].is_some()) {
                                let r = held.remove(i);
                                // The owner holds one: the reference is always kept.
                                spare = Some(*r);
                                SPARE.give_back_owned(r);
                            }
                        }
                        Op::Forget(v) => {
                            SPARE.forget(Weak::as_ptr(&weak[v]).cast());
                            if spare == Some(v) {
                                spare = None;
                            }
                        }
                        Op::DropOwner(v) => {
                            if let Some(owner) = owners[v].take() {
                                SPARE.forget(Arc::as_ptr(&owner).cast());
                                if spare == Some(v) {
                                    spare = None;
                                }
                            }
                        }
                    }
                    for (v, w) in weak.iter().enumerate() {
                        let calls = held.iter().filter(|r| ***r == v).count();
                        let expected =
                            usize::from(owners[v].is_some()) + calls + usize::from(spare == Some(v));
                        prop_assert_eq!(w.strong_count(), expected, "value {}", v);
                    }
                }
                drop(held);
                for (owner, w) in owners.iter_mut().zip(&weak) {
                    SPARE.forget(Weak::as_ptr(w).cast());
                    drop(owner.take());
                    prop_assert_eq!(w.strong_count(), 0);
                }
            }
        }
    }

    #[test]
    fn a_spare_goes_when_its_thread_exits() {
        let a = Arc::new(1);
        let r = Arc::clone(&a);
        std::thread::spawn(move || SPARE.give_back(r))
            .join()
            .unwrap();
        assert_eq!(Arc::strong_count(&a), 1);
    }
}
