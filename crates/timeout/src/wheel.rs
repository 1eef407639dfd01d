//! The deadline timer of one [`TimeLimit`](crate::TimeLimit): its waiting calls share one
//! tokio timer per runtime, driven by one task.
//!
//! Arming a tokio `Sleep` per call costs an entry in the runtime's timer wheel (an atomic state
//! machine, a lock on the time driver, a cancellation on drop). Here a call that pends takes a
//! slot in a slab behind a plain `Mutex` and pushes its end onto a min-heap; a call that
//! finishes frees its slot. One **driver task** per runtime the limit is used on (its *lane*),
//! spawned by the first call there that waits, sleeps until the earliest end, wakes the calls
//! that are due, and sleeps again.
//!
//! - **Never early, exact when alone.** A call decides it has expired by reading the clock
//!   when it is polled; the driver only wakes it. The driver sleeps to the exact earliest end,
//!   but wakes at most once per `precision` (default 1 ms): a call whose end falls within
//!   `precision` of the driver's last wake is woken `precision` after that wake, so at most
//!   `precision` late. With tokio's paused clock a lone timer therefore fires exactly at its
//!   end.
//! - **Its own clock per runtime.** A lane's driver sleeps on its runtime's clock, which is
//!   the clock its calls read (two runtimes with paused clocks do not share a driver).
//! - **Lazy deletion.** A finished call frees its slot but leaves its heap item, which the
//!   driver discards when it reaches the top; when stale items outnumber live ones (plus a
//!   small constant) the heaps are compacted in place, so they never hold much more than twice
//!   the waiting calls, and in steady state neither the slab nor a heap allocates.
//! - **Nothing alive after its owner.** A driver holds only a `Weak` to the wheel and exits at
//!   its first wake with nothing left to wake, or at once when the wheel is dropped (the wheel
//!   wakes it on drop).
//! - **Runtimes come and go.** When a driver task is dropped without finishing (its runtime
//!   shut down), its guard removes the lane and wakes the calls that lane was timing: each one
//!   registers again from wherever it is polled, starting a driver there if needed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use staunch_core::instant_after;
use tokio::runtime::{Handle, Id};
use tokio::time::{Instant, Sleep};

/// Stale heap items tolerated beyond twice the live entries before the heaps are compacted.
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
    /// One per runtime with a driver; almost always one.
    lanes: Vec<Lane>,
    /// Numbers the drivers, so that a guard finds its own lane and no other.
    next_driver: u64,
}

/// The calls timed by the driver on one runtime.
struct Lane {
    runtime: Id,
    driver: u64,
    /// Every entry with a waker has exactly one item in one lane (plus stale items of freed
    /// or woken entries, discarded lazily).
    heap: BinaryHeap<Reverse<Due>>,
    /// What the driver's sleep is set to (or will be, once it is polled).
    target: Instant,
    waker: Option<Waker>,
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

/// What a registration asks of a driver, done once the lock is released.
enum Nudge {
    None,
    Wake(Waker),
    Spawn { target: Instant, driver: u64 },
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
                lanes: Vec::new(),
                next_driver: 0,
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

    /// Driver tasks running (one per runtime with waiting calls, until their next wake).
    pub(crate) fn drivers(&self) -> usize {
        self.lock().lanes.len()
    }

    /// Registers a call ending at `end`, to be woken through `waker`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or when a driver must be started on a runtime without the time
    /// driver, as `tokio::time::sleep` does.
    pub(crate) fn insert(self: &Arc<Self>, end: Instant, waker: &Waker) -> Key {
        let runtime = Handle::current().id();
        let mut guard = self.lock();
        let state = &mut *guard;
        let generation;
        let index = if let Some(index) = state.free.pop() {
            let entry = &mut state.entries[index as usize];
            entry.end = end;
            entry.waker = Some(waker.clone());
            entry.occupied = true;
            generation = entry.generation;
            index
        } else {
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
        };
        state.live += 1;
        let key = Key { index, generation };
        let nudge = self.schedule(state, key, end, runtime);
        drop(guard);
        nudge_driver(self, nudge);
        key
    }

    /// Called when a registered call is polled again before its end: keeps its waker current,
    /// and schedules it again if it was woken without being due (its driver went away).
    pub(crate) fn refresh(self: &Arc<Self>, key: Key, waker: &Waker) {
        let mut guard = self.lock();
        let Some(entry) = owned(&mut guard.entries, key) else {
            return;
        };
        if let Some(current) = &mut entry.waker {
            if !current.will_wake(waker) {
                let old = std::mem::replace(current, waker.clone());
                drop(guard);
                drop(old);
            }
            return;
        }
        // Not scheduled: find this runtime's lane (outside the lock: it may panic).
        drop(guard);
        let runtime = Handle::current().id();
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(entry) = owned(&mut state.entries, key) else {
            return;
        };
        if entry.waker.is_some() {
            return;
        }
        entry.waker = Some(waker.clone());
        let end = entry.end;
        let nudge = self.schedule(state, key, end, runtime);
        drop(guard);
        nudge_driver(self, nudge);
    }

    /// Frees a call's slot (it finished, timed out or was dropped).
    pub(crate) fn remove(&self, key: Key) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(entry) = owned(&mut state.entries, key) else {
            return;
        };
        entry.occupied = false;
        entry.generation = entry.generation.wrapping_add(1);
        let waker = entry.waker.take();
        state.free.push(key.index);
        state.live -= 1;
        drop(guard);
        // A waker's drop may run arbitrary code: not under the lock.
        drop(waker);
    }

    /// Pushes the heap item of `key` onto the lane of `runtime` and says what its driver
    /// needs.
    fn schedule(&self, state: &mut State, key: Key, end: Instant, runtime: Id) -> Nudge {
        let items: usize = state.lanes.iter().map(|lane| lane.heap.len()).sum();
        if items >= 2 * state.live + SLACK {
            let entries = &state.entries;
            for lane in &mut state.lanes {
                lane.heap.retain(|Reverse(due)| is_scheduled(entries, due));
            }
        }
        let due = Reverse(Due {
            end,
            index: key.index,
            generation: key.generation,
        });
        let Some(lane) = state.lanes.iter_mut().find(|lane| lane.runtime == runtime) else {
            state.next_driver = state.next_driver.wrapping_add(1);
            let mut heap = BinaryHeap::new();
            heap.push(due);
            state.lanes.push(Lane {
                runtime,
                driver: state.next_driver,
                heap,
                target: end,
                waker: None,
                last_fire: None,
            });
            return Nudge::Spawn {
                target: end,
                driver: state.next_driver,
            };
        };
        lane.heap.push(due);
        let earliest = match lane.last_fire {
            Some(last) => end.max(instant_after(last, self.precision)),
            None => end,
        };
        if earliest < lane.target {
            lane.target = earliest;
            if let Some(waker) = lane.waker.take() {
                return Nudge::Wake(waker);
            }
        }
        Nudge::None
    }
}

impl Drop for Wheel {
    fn drop(&mut self) {
        // The drivers sleep until the next end: wake them so they see the wheel is gone.
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for lane in &mut state.lanes {
            if let Some(waker) = lane.waker.take() {
                waker.wake();
            }
        }
    }
}

/// The entry `key` names, if it still holds that slot.
fn owned(entries: &mut [Entry], key: Key) -> Option<&mut Entry> {
    entries
        .get_mut(key.index as usize)
        .filter(|entry| entry.occupied && entry.generation == key.generation)
}

fn is_scheduled(entries: &[Entry], due: &Due) -> bool {
    entries.get(due.index as usize).is_some_and(|entry| {
        entry.occupied && entry.generation == due.generation && entry.waker.is_some()
    })
}

/// Acts on what a registration asked of a driver, once the lock is released.
fn nudge_driver(wheel: &Arc<Wheel>, nudge: Nudge) {
    match nudge {
        Nudge::None => {}
        Nudge::Wake(waker) => waker.wake(),
        Nudge::Spawn { target, driver } => spawn_driver(wheel, target, driver),
    }
}

/// Starts the driver of a new lane on the current runtime.
///
/// # Panics
///
/// On a runtime without the time driver, as `tokio::time::sleep` does; the guard then removes
/// the lane, so the next registration tries again.
fn spawn_driver(wheel: &Arc<Wheel>, target: Instant, driver: u64) {
    let guard = DriverGuard {
        wheel: Arc::downgrade(wheel),
        driver,
        exited: false,
    };
    let sleep = tokio::time::sleep_until(target);
    drop(tokio::spawn(Driver {
        sleep,
        guard,
        due: Vec::new(),
    }));
}

/// Removes its lane when the driver goes away without exiting (its runtime shut down, or it
/// could not be started), and wakes the calls the lane was timing so they register again.
struct DriverGuard {
    wheel: Weak<Wheel>,
    driver: u64,
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
        let mut guard = wheel.lock();
        let state = &mut *guard;
        let Some(at) = state.lanes.iter().position(|l| l.driver == self.driver) else {
            return;
        };
        let lane = state.lanes.swap_remove(at);
        let orphans: Vec<Waker> = lane
            .heap
            .into_iter()
            .filter_map(|Reverse(due)| {
                let entry = state.entries.get_mut(due.index as usize)?;
                if entry.occupied && entry.generation == due.generation {
                    entry.waker.take()
                } else {
                    None
                }
            })
            .collect();
        drop(guard);
        for waker in orphans {
            waker.wake();
        }
    }
}

pin_project! {
    /// A lane's driver task: sleeps until the earliest end and wakes the calls that are due.
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
            let driver = this.guard.driver;
            let Some(at) = state.lanes.iter().position(|l| l.driver == driver) else {
                this.guard.exited = true;
                return Poll::Ready(());
            };
            let lane = &mut state.lanes[at];
            if this.sleep.deadline() != lane.target {
                this.sleep.as_mut().reset(lane.target);
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                if !lane.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    lane.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let now = Instant::now();
            while let Some(Reverse(top)) = lane.heap.peek() {
                if !is_scheduled(&state.entries, top) {
                    lane.heap.pop();
                    continue;
                }
                if top.end > now {
                    break;
                }
                let index = top.index as usize;
                lane.heap.pop();
                if let Some(waker) = state.entries[index].waker.take() {
                    this.due.push(waker);
                }
            }
            if !this.due.is_empty() {
                lane.last_fire = Some(now);
            }
            let exit = if let Some(Reverse(top)) = lane.heap.peek() {
                lane.target = match lane.last_fire {
                    Some(last) => top.end.max(instant_after(last, wheel.precision)),
                    None => top.end,
                };
                false
            } else {
                // Nothing scheduled: exit; the next registration here spawns a driver.
                state.lanes.swap_remove(at);
                this.guard.exited = true;
                true
            };
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
