//! The deadline timer of one [`TimeLimit`](crate::TimeLimit): its waiting calls share one
//! tokio timer, driven by one task.
//!
//! Arming a tokio `Sleep` per call costs a timer-wheel entry in the runtime (an atomic state
//! machine, a lock on the driver, a cancellation on drop). Here a call that pends takes a slot
//! in a slab behind a plain `Mutex` and pushes its end onto a min-heap; a call that finishes
//! frees its slot. One **driver task**, spawned on the runtime of the first call that needs
//! it, sleeps until the earliest end, wakes the calls that are due, and sleeps again.
//!
//! - **Never early, exact when alone.** A call decides it has expired by reading the clock
//!   when it is polled; the driver only wakes it. The driver sleeps to the exact earliest end,
//!   but wakes at most once per `precision` (default 1 ms): a call whose end falls within
//!   `precision` of the driver's last wake is woken `precision` after that wake, so at most
//!   `precision` late. With tokio's paused clock a lone timer therefore fires exactly at its
//!   end.
//! - **Lazy deletion.** A finished call frees its slot but leaves its heap item, which the
//!   driver discards when it reaches the top; when stale items outnumber live ones (plus a
//!   small constant) the heap is compacted in place, so it never holds much more than twice
//!   the waiting calls, and in steady state neither the slab nor the heap allocates.
//! - **Nothing alive after its owner.** The driver holds only a `Weak` to the wheel and exits
//!   at its first wake with nothing left to wake, or at once when the wheel is dropped (the
//!   wheel wakes it on drop).
//! - **Runtimes come and go.** When the driver task is dropped without finishing (its runtime
//!   shut down), its guard marks the wheel driverless and wakes every waiting call: each one
//!   registers again from wherever it is polled, and the first spawns a new driver there.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use staunch_core::instant_after;
use tokio::time::{Instant, Sleep};

/// Stale heap items tolerated beyond twice the live entries before the heap is compacted.
const SLACK: usize = 64;

/// The timer shared by the clones of one limit.
pub(crate) struct Wheel {
    precision: Duration,
    state: Mutex<State>,
}

/// Which slot a waiting call holds; the generation tells a reused slot from its past owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    index: u32,
    generation: u32,
}

struct State {
    entries: Vec<Entry>,
    free: Vec<u32>,
    live: usize,
    /// Every entry with a waker has exactly one item here (plus stale items of freed or
    /// fired ones, discarded lazily).
    heap: BinaryHeap<Reverse<Due>>,
    /// A driver task exists (or is being spawned).
    running: bool,
    /// Bumped for every driver spawned, so a driver that exited cannot be taken for the next.
    driver_id: u64,
    /// What the driver's sleep is set to (or will be, once it is polled).
    target: Instant,
    driver_waker: Option<Waker>,
    /// When the driver last woke calls: the next wake is no sooner than `precision` after.
    last_fire: Option<Instant>,
}

struct Entry {
    end: Instant,
    /// `Some` while the entry is scheduled (it has a heap item); taken when it is woken.
    waker: Option<Waker>,
    generation: u32,
    occupied: bool,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    end: Instant,
    index: u32,
    generation: u32,
}

/// What a registration asks of the driver, done after the lock is released.
enum Nudge {
    None,
    Wake(Waker),
    Spawn { target: Instant, id: u64 },
}

impl std::fmt::Debug for Wheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("precision", &self.precision)
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

impl Wheel {
    pub(crate) fn new(precision: Duration) -> Self {
        Self {
            precision,
            state: Mutex::new(State {
                entries: Vec::new(),
                free: Vec::new(),
                live: 0,
                heap: BinaryHeap::new(),
                running: false,
                driver_id: 0,
                target: Instant::now(),
                driver_waker: None,
                last_fire: None,
            }),
        }
    }

    pub(crate) fn precision(&self) -> Duration {
        self.precision
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned lock still holds valid state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls waiting (entries held by pending futures).
    pub(crate) fn waiting(&self) -> usize {
        self.lock().live
    }

    /// Registers a call ending at `end`, to be woken through `waker`.
    ///
    /// # Panics
    ///
    /// When a driver must be started outside a tokio runtime with the time driver enabled.
    pub(crate) fn insert(self: &Arc<Self>, end: Instant, waker: &Waker) -> Key {
        let mut guard = self.lock();
        let state = &mut *guard;
        let generation;
        let index = match state.free.pop() {
            Some(index) => {
                let entry = &mut state.entries[index as usize];
                entry.end = end;
                entry.waker = Some(waker.clone());
                entry.occupied = true;
                generation = entry.generation;
                index
            }
            None => {
                // Past `u32::MAX` slots the index would wrap: not reachable in memory.
                let index = u32::try_from(state.entries.len()).unwrap_or(u32::MAX);
                generation = 0;
                state.entries.push(Entry {
                    end,
                    waker: Some(waker.clone()),
                    generation,
                    occupied: true,
                });
                index
            }
        };
        state.live += 1;
        let key = Key { index, generation };
        let nudge = self.schedule(state, key, end);
        drop(guard);
        nudge_driver(self, nudge);
        key
    }

    /// Called when a registered call is polled again before its end: keeps its waker current
    /// and schedules it again if it was woken without being due (its driver went away).
    pub(crate) fn refresh(self: &Arc<Self>, key: Key, waker: &Waker) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(entry) = state.entries.get_mut(key.index as usize) else {
            return;
        };
        if !entry.occupied || entry.generation != key.generation {
            return;
        }
        match &mut entry.waker {
            Some(current) => {
                if !current.will_wake(waker) {
                    let old = std::mem::replace(current, waker.clone());
                    drop(guard);
                    drop(old);
                }
            }
            None => {
                entry.waker = Some(waker.clone());
                let end = entry.end;
                let nudge = self.schedule(state, key, end);
                drop(guard);
                nudge_driver(self, nudge);
            }
        }
    }

    /// Frees a call's slot (it finished, timed out or was dropped).
    pub(crate) fn remove(&self, key: Key) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(entry) = state.entries.get_mut(key.index as usize) else {
            return;
        };
        if !entry.occupied || entry.generation != key.generation {
            return;
        }
        entry.occupied = false;
        entry.generation = entry.generation.wrapping_add(1);
        let waker = entry.waker.take();
        state.free.push(key.index);
        state.live -= 1;
        drop(guard);
        // A waker's drop may run arbitrary code: not under the lock.
        drop(waker);
    }

    /// Pushes the heap item of `key` and says what the driver needs.
    fn schedule(&self, state: &mut State, key: Key, end: Instant) -> Nudge {
        if state.heap.len() >= 2 * state.live + SLACK {
            let entries = &state.entries;
            state
                .heap
                .retain(|Reverse(due)| is_scheduled(entries, due));
        }
        state.heap.push(Reverse(Due {
            end,
            index: key.index,
            generation: key.generation,
        }));
        let earliest = match state.last_fire {
            Some(last) => end.max(instant_after(last, self.precision)),
            None => end,
        };
        if !state.running {
            state.running = true;
            state.driver_id = state.driver_id.wrapping_add(1);
            state.target = earliest;
            state.driver_waker = None;
            return Nudge::Spawn {
                target: earliest,
                id: state.driver_id,
            };
        }
        if earliest < state.target {
            state.target = earliest;
            if let Some(waker) = state.driver_waker.take() {
                return Nudge::Wake(waker);
            }
        }
        Nudge::None
    }
}

impl Drop for Wheel {
    fn drop(&mut self) {
        // The driver sleeps until the next end: wake it so it sees the wheel is gone and exits.
        let waker = self
            .state
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .driver_waker
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn is_scheduled(entries: &[Entry], due: &Due) -> bool {
    entries.get(due.index as usize).is_some_and(|entry| {
        entry.occupied && entry.generation == due.generation && entry.waker.is_some()
    })
}

/// Acts on what a registration asked of the driver, once the lock is released.
fn nudge_driver(wheel: &Arc<Wheel>, nudge: Nudge) {
    match nudge {
        Nudge::None => {}
        Nudge::Wake(waker) => waker.wake(),
        Nudge::Spawn { target, id } => spawn_driver(wheel, target, id),
    }
}

/// Starts the driver on the current runtime.
///
/// # Panics
///
/// Outside a tokio runtime with the time driver enabled, as `tokio::time::sleep` does; the
/// wheel is then left without a driver, so the next registration tries again.
fn spawn_driver(wheel: &Arc<Wheel>, target: Instant, id: u64) {
    let guard = DriverGuard {
        wheel: Arc::downgrade(wheel),
        id,
        exited: false,
    };
    // Creating the sleep is what panics outside a runtime with timers; the guard then
    // unwinds and clears the mark.
    let sleep = tokio::time::sleep_until(target);
    drop(tokio::spawn(Driver {
        sleep,
        guard,
        due: Vec::new(),
    }));
}

/// Marks the wheel driverless when its driver goes away without exiting (its runtime shut
/// down, or it could not be started), and wakes every waiting call so it registers again.
struct DriverGuard {
    wheel: Weak<Wheel>,
    id: u64,
    exited: bool,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        let Some(wheel) = self.wheel.upgrade() else {
            return;
        };
        let mut state = wheel.lock();
        if !state.running || state.driver_id != self.id {
            return;
        }
        state.running = false;
        state.driver_waker = None;
        state.heap.clear();
        let orphans: Vec<Waker> = state
            .entries
            .iter_mut()
            .filter_map(|entry| entry.waker.take())
            .collect();
        drop(state);
        for waker in orphans {
            waker.wake();
        }
    }
}

pin_project! {
    /// The driver task: sleeps until the earliest end and wakes the calls that are due.
    struct Driver {
        #[pin]
        sleep: Sleep,
        guard: DriverGuard,
        // Reused between wakes so that waking allocates nothing in steady state.
        due: Vec<Waker>,
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            let Some(wheel) = this.guard.wheel.upgrade() else {
                this.guard.exited = true;
                return Poll::Ready(());
            };
            let mut guard = wheel.lock();
            let state = &mut *guard;
            if this.sleep.deadline() != state.target {
                this.sleep.as_mut().reset(state.target);
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                if !state
                    .driver_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.driver_waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let now = Instant::now();
            while let Some(Reverse(top)) = state.heap.peek() {
                if !is_scheduled(&state.entries, top) {
                    state.heap.pop();
                    continue;
                }
                if top.end > now {
                    break;
                }
                let index = top.index as usize;
                state.heap.pop();
                if let Some(waker) = state.entries[index].waker.take() {
                    this.due.push(waker);
                }
            }
            if !this.due.is_empty() {
                state.last_fire = Some(now);
            }
            let next = state.heap.peek().map(|Reverse(top)| top.end);
            let exit = next.is_none();
            match next {
                Some(end) => {
                    state.target = match state.last_fire {
                        Some(last) => end.max(instant_after(last, wheel.precision)),
                        None => end,
                    };
                }
                None => {
                    // Nothing scheduled: exit; the next registration spawns a driver.
                    state.running = false;
                    state.driver_waker = None;
                    this.guard.exited = true;
                }
            }
            drop(guard);
            drop(wheel);
            for waker in this.due.drain(..) {
                waker.wake();
            }
            if exit {
                return Poll::Ready(());
            }
        }
    }
}
