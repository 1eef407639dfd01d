//! The retry budget: retries may add at most a fraction of the request rate.
//!
//! # Why a budget and not just a maximum number of attempts
//!
//! `max_attempts = 3` looks safe, but it multiplies load by three exactly when the dependency
//! can least afford it: during an outage every request fails, every request is retried twice,
//! and a dependency that was at 100% of its capacity now receives 300%. Stack three services
//! that each retry three times and the bottom one sees 27 times the traffic. Retries turn a
//! brownout into an outage and keep it from recovering.
//!
//! A budget bounds the *ratio* of retries to requests instead: with the default 20%, a client
//! never adds more than a fifth to the load it already sends, however many of its requests
//! fail. When few requests fail (the normal case: a lost packet, a restarting instance), every
//! one of them can still be retried; when many fail, most are not, and the client degrades to
//! fail-fast on its own. A small reserve (`min_per_sec` over the window) keeps low-traffic
//! clients able to retry at all. This is the model of Finagle's and tower's retry budgets and
//! of gRPC's retry throttling.
//!
//! # The window
//!
//! Requests (deposits) and retries (withdrawals) are counted in a sliding window of `ttl`,
//! kept as ten buckets that expire one after the other. A retry is allowed while
//!
//! ```text
//! retries in the window < floor(ratio * requests in the window) + min_per_sec * ttl_secs
//! ```
//!
//! A deposit older than `ttl` never counts, whether or not anything read the budget while it
//! aged: a budget that nobody consulted during a hundred seconds of healthy traffic allows,
//! when the outage starts, what the last `ttl` of that traffic earned, not what all of it did.
//!
//! # Cost
//!
//! A deposit happens on every request, so it takes no lock and almost never reads the clock:
//! it is a relaxed load and store (not a read-modify-write, which costs several times more) of
//! a counter in the calling thread's shard. Threads are dealt 16 shards, each on its own cache
//! line, so they do not contend. With more than 16 threads two may share a shard, and when
//! they deposit at the same instant one increment can be lost: the budget then counts slightly
//! fewer requests, so it is slightly stricter, never looser. Request counts in the metrics
//! are approximate in the same way.
//!
//! Deposits are dated in batches, under a mutex, off the success path: when a retry consults
//! the budget, when something reads it ([`remaining`](RetryBudget::remaining), the metrics),
//! and on every 16th deposit of a shard once a bucket's time has passed (that deposit reads
//! the clock and tries the mutex; if another thread holds it, it leaves the dating to it).
//! Deposits counted since the previous dating are dated at that previous dating, the earliest
//! moment they can have happened: a deposit can be dated early (it then leaves the window
//! early, which makes the budget stricter), never late. Under steady traffic the dating runs
//! once per bucket and is exact to a bucket, but for the deposits a thread makes between a
//! bucket's end and its next 16th deposit; at any rate, early dating costs at most 16
//! requests' worth of credit per thread. Tower's `TpsBudget` reads the clock on every deposit
//! instead (and its window is up to a bucket longer): this budget allows at most as many
//! retries as tower's, and fewer by at most one bucket's and 16 requests' worth of credit
//! (see `tests/budget.rs`).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use staunch_core::{ConfigError, instant_after};
use tokio::time::Instant;

const SHARDS: usize = 16;
const BUCKETS: usize = 10;
/// Every `SAMPLE`th deposit of a shard reads the clock (see the module docs).
const SAMPLE: u64 = 16;

/// A counter on its own cache line (128 bytes: x86 prefetches lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// The shard of the calling thread: threads are dealt shards round robin on first use.
#[inline]
fn shard() -> usize {
    SHARD.with(|s| {
        let v = s.get();
        if v < SHARDS {
            v
        } else {
            let n = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(n);
            n
        }
    })
}

/// A retry budget, shared by every clone and by every policy given the same handle.
///
/// Cloning a `RetryBudget` clones the handle, not the budget: give one handle to several
/// [`RetryPolicy`](crate::RetryPolicy) builders (e.g. one per route to the same dependency)
/// and their retries draw on one budget together. See the [module docs](self) for the model.
///
/// ```
/// use std::time::Duration;
/// use staunch_retry::RetryBudget;
///
/// let budget = RetryBudget::builder()
///     .ratio(0.1)
///     .min_per_sec(5)
///     .ttl(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(budget.ratio(), 0.1);
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    deposits: [Padded; SHARDS],
    limited: bool,
    ratio: f64,
    reserve: u64,
    ttl: Duration,
    width: Duration,
    window: Mutex<Window>,
    withdrawn: AtomicU64,
    exhausted: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    deposits: u64,
    withdrawals: u64,
}

#[derive(Debug)]
struct Window {
    buckets: [Bucket; BUCKETS],
    head: usize,
    /// When the head bucket started.
    head_start: Instant,
    /// When deposits were last dated (at first, when the budget was created): the deposits
    /// counted since happened at or after it.
    last_sync: Instant,
    /// Deposits already dated.
    synced: u64,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("limited", &self.inner.limited)
            .field("ratio", &self.inner.ratio)
            .field("reserve", &self.inner.reserve)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for RetryBudget {
    /// 20% of requests plus 10 retries per second, over 10 seconds.
    fn default() -> Self {
        let b = RetryBudgetBuilder::default();
        Self::from_parts(
            true,
            b.ratio,
            u64::from(b.min_per_sec) * b.ttl.as_secs(),
            b.ttl,
        )
    }
}

impl RetryBudget {
    /// Starts a budget with the defaults: ratio 0.2, 10 retries per second minimum, 10 s window.
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder::default()
    }

    /// A budget that never runs out: only `max_attempts` and the deadline bound retries.
    ///
    /// Requests are still counted (for the metrics snapshot). Use it in tests, or for a
    /// dependency whose load you control entirely; a fleet of clients should keep a budget.
    pub fn unlimited() -> Self {
        Self::from_parts(false, 0.0, 0, Duration::from_secs(10))
    }

    fn from_parts(limited: bool, ratio: f64, reserve: u64, ttl: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner: Arc::new(Inner {
                deposits: Default::default(),
                limited,
                ratio,
                reserve,
                ttl,
                width: ttl / BUCKETS as u32,
                window: Mutex::new(Window {
                    buckets: [Bucket::default(); BUCKETS],
                    head: 0,
                    head_start: now,
                    last_sync: now,
                    synced: 0,
                }),
                withdrawn: AtomicU64::new(0),
                exhausted: AtomicU64::new(0),
            }),
        }
    }

    /// The fraction of requests that may be retried.
    pub fn ratio(&self) -> f64 {
        self.inner.ratio
    }

    /// The length of the sliding window.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Whether the budget limits retries at all (`false` for [`unlimited`](Self::unlimited)).
    pub fn is_limited(&self) -> bool {
        self.inner.limited
    }

    /// Records one request: a relaxed load and store of the calling thread's counter (see
    /// the [module docs](self) for why that is not a read-modify-write, and for the one
    /// deposit in 16 that also reads the clock).
    #[inline]
    pub fn deposit(&self) {
        let counter = &self.inner.deposits[shard()].0;
        let count = counter.load(Ordering::Relaxed).wrapping_add(1);
        counter.store(count, Ordering::Relaxed);
        if count.is_multiple_of(SAMPLE) && self.inner.limited {
            self.date_deposits();
        }
    }

    /// Dates the pending deposits if a bucket's time has passed since the head bucket
    /// started, unless another thread is at the window (it dates them then).
    #[cold]
    #[inline(never)]
    fn date_deposits(&self) {
        let now = Instant::now();
        let mut window = match self.inner.window.try_lock() {
            Ok(window) => window,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if now.saturating_duration_since(window.head_start) >= self.inner.width {
            self.sync(&mut window, now);
        }
    }

    /// Takes one retry from the budget; `false` (and nothing taken) when it is exhausted.
    pub fn try_withdraw(&self) -> bool {
        if !self.inner.limited {
            self.inner.withdrawn.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let now = Instant::now();
        let mut window = self.lock();
        self.sync(&mut window, now);
        if window.withdrawals() < self.allowed(&window) {
            let head = window.head;
            window.buckets[head].withdrawals += 1;
            drop(window);
            self.inner.withdrawn.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            drop(window);
            self.inner.exhausted.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// How many retries the budget would allow right now (`None` when unlimited).
    pub fn remaining(&self) -> Option<u64> {
        if !self.inner.limited {
            return None;
        }
        let mut window = self.lock();
        self.sync(&mut window, Instant::now());
        Some(self.allowed(&window).saturating_sub(window.withdrawals()))
    }

    /// Requests recorded since the budget was created (by every policy sharing it).
    pub fn requests(&self) -> u64 {
        self.total_deposits()
    }

    /// Retries (and hedges) taken from the budget since it was created.
    pub fn withdrawn(&self) -> u64 {
        self.inner.withdrawn.load(Ordering::Relaxed)
    }

    /// How many times a retry was refused because the budget was exhausted.
    pub fn exhausted(&self) -> u64 {
        self.inner.exhausted.load(Ordering::Relaxed)
    }

    fn total_deposits(&self) -> u64 {
        self.inner
            .deposits
            .iter()
            .map(|d| d.0.load(Ordering::Relaxed))
            .sum()
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // The window holds plain counters: a panic cannot leave it inconsistent.
        self.inner
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn allowed(&self, window: &Window) -> u64 {
        let credit = (self.inner.ratio * window.deposits() as f64).floor() as u64;
        credit.saturating_add(self.inner.reserve)
    }

    /// Expires old buckets and dates the deposits made since the last sync.
    fn sync(&self, window: &mut Window, now: Instant) {
        let width = self.inner.width;
        let start = window.head_start;
        let passed = now.saturating_duration_since(start).as_nanos() / width.as_nanos().max(1);
        if passed > 0 {
            for _ in 0..passed.min(BUCKETS as u128) {
                window.head = (window.head + 1) % BUCKETS;
                let head = window.head;
                window.buckets[head] = Bucket::default();
            }
            // `passed` fits: it is at most (elapsed / width) which we just advanced by.
            window.head_start = instant_after(
                start,
                width.saturating_mul(passed.min(u128::from(u32::MAX)) as u32),
            );
        }

        let total = self.total_deposits();
        let pending = total.saturating_sub(window.synced);
        window.synced = total;
        let last = std::mem::replace(&mut window.last_sync, now);
        if pending == 0 {
            return;
        }
        // The pending deposits happened between `last` and `now`: date them at `last`, the
        // earliest they can have happened, so that none counts for longer than `ttl`. They
        // go to the bucket that holds `last`, or nowhere if it has expired.
        let back = window
            .head_start
            .saturating_duration_since(last)
            .as_nanos()
            .div_ceil(width.as_nanos().max(1));
        if back < BUCKETS as u128 {
            let i = (window.head + BUCKETS - back as usize) % BUCKETS;
            window.buckets[i].deposits += pending;
        }
    }
}

impl Window {
    fn deposits(&self) -> u64 {
        self.buckets.iter().map(|b| b.deposits).sum()
    }

    fn withdrawals(&self) -> u64 {
        self.buckets.iter().map(|b| b.withdrawals).sum()
    }
}

/// Configures a [`RetryBudget`]; [`build`](Self::build) validates it.
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RetryBudgetBuilder {
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
}

impl Default for RetryBudgetBuilder {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl RetryBudgetBuilder {
    /// Retries allowed per request, in `[0, 1000]` (default 0.2: retries add at most 20%).
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the request rate (default 10), so that a client
    /// with little traffic can still retry.
    pub fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// Length of the sliding window, from 1 s to 60 s (default 10 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when `ratio` is not a finite number in `[0, 1000]`, or `ttl` is
    /// outside `[1 s, 60 s]`.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !(self.ratio.is_finite() && (0.0..=1000.0).contains(&self.ratio)) {
            return Err(ConfigError::new(
                "ratio",
                format!(
                    "must be a finite number within [0, 1000] (got {})",
                    self.ratio
                ),
            )
            .within("budget"));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_mins(1) {
            return Err(ConfigError::new(
                "ttl",
                format!("must be within [1s, 60s] (got {:?})", self.ttl),
            )
            .within("budget"));
        }
        let reserve = u64::from(self.min_per_sec) * self.ttl.as_secs();
        Ok(RetryBudget::from_parts(true, self.ratio, reserve, self.ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_settings_name_the_field() {
        let err = RetryBudget::builder().ratio(-0.1).build().unwrap_err();
        assert_eq!(err.field(), "budget.ratio");
        let err = RetryBudget::builder().ratio(f64::NAN).build().unwrap_err();
        assert_eq!(err.field(), "budget.ratio");
        let err = RetryBudget::builder()
            .ttl(Duration::from_millis(10))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "budget.ttl");
        let err = RetryBudget::builder()
            .ttl(Duration::from_secs(61))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "budget.ttl");
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_then_ratio_then_refusal() {
        let budget = RetryBudget::builder()
            .ratio(0.5)
            .min_per_sec(1)
            .ttl(Duration::from_secs(2))
            .build()
            .unwrap();
        // Reserve: 1/s * 2 s = 2 retries with no requests at all.
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        // Four requests at 0.5 buy two more.
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), Some(2));
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        assert_eq!(budget.exhausted(), 2);
        assert_eq!(budget.withdrawn(), 4);
        // After the window everything expired: the reserve is back, the credit is gone.
        tokio::time::advance(Duration::from_millis(2100)).await;
        assert_eq!(budget.remaining(), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_older_than_the_window_never_count_whoever_read_the_budget() {
        for read_in_between in [false, true] {
            let budget = RetryBudget::builder()
                .ratio(1.0)
                .min_per_sec(0)
                .ttl(Duration::from_secs(10))
                .build()
                .unwrap();
            for _ in 0..1000 {
                budget.deposit();
            }
            if read_in_between {
                assert_eq!(budget.remaining(), Some(1000));
            }
            // The 1000 requests happened 10.5 s ago: outside the window, none counts.
            tokio::time::advance(Duration::from_millis(10_500)).await;
            assert_eq!(budget.remaining(), Some(0), "read: {read_in_between}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_are_dated_no_later_than_they_happened() {
        let budget = RetryBudget::builder()
            .ratio(1.0)
            .min_per_sec(0)
            .ttl(Duration::from_secs(10))
            .build()
            .unwrap();
        // Five deposits at t = 0, then silence until t = 9.5 s, five more, a read at 10.2 s.
        for _ in 0..5 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_millis(9_500)).await;
        for _ in 0..5 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_millis(700)).await;
        // Nothing was dated in between, so all ten may be as old as t = 0: none counts. A
        // budget that errs stricter after a silence, never looser.
        assert_eq!(budget.remaining(), Some(0));
    }

    #[test]
    fn unlimited_never_refuses() {
        let budget = RetryBudget::unlimited();
        assert!((0..10_000).all(|_| budget.try_withdraw()));
        assert_eq!(budget.remaining(), None);
    }
}
