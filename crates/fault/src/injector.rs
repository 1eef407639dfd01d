//! [`FaultInjector`]: decides, call by call, which faults a call gets; shared by every clone
//! and switchable at run time.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use staunch_core::ConfigError;

use crate::config::{Latency, Plan};
use crate::{FaultConfig, FaultInjected, FaultKind};
#[cfg(feature = "metrics")]
use staunch_core::telemetry::{label, metric};

/// Decides, call by call, whether a call is delayed, failed with an error, or aborted, at the
/// rates of its [`FaultConfig`], from a seeded random sequence.
///
/// A cheap handle: clones share the configuration, the random sequence and the counters, so
/// [`set`](Self::set), [`disable`](Self::disable) and [`enable`](Self::enable) on any clone
/// take effect for the next call through every clone (and every layer built from one).
///
/// A disabled injector, or one whose configuration injects nothing, costs a call one relaxed
/// atomic load and nothing else: no lock, no draw, no counter. An enabled one takes a lock
/// per call to draw from its random sequence (faults are for tests and drills, where a
/// seeded, replayable sequence matters more than nanoseconds).
///
/// Usable without tower: [`decide`](Self::decide) says what to do with one call.
///
/// ```
/// use std::time::Duration;
/// use staunch_fault::{Fault, FaultInjector};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let injector = FaultInjector::builder("payment")
///     .latency(0.5, Duration::from_millis(100), Duration::from_millis(300))
///     .error(0.2, 503)
///     .seed(7)
///     .build()
///     .unwrap();
/// async fn charge() -> Result<u32, String> { Ok(42) }
///
/// let injection = injector.decide();
/// if let Some(delay) = injection.delay() {
///     tokio::time::sleep(delay).await;
/// }
/// let result = match injection.fault() {
///     Some(Fault::Error(injected)) => Err(format!("status {}", injected.status())),
///     Some(Fault::Abort) => Err("aborted".to_owned()),
///     _ => charge().await,
/// };
/// # let _ = result;
/// injector.disable();
/// assert!(injector.decide().is_none());
/// # }
/// ```
#[derive(Clone)]
pub struct FaultInjector {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    /// Whether a call can get a fault: enabled, and the plan injects something. The only
    /// thing a call reads when it is false.
    active: AtomicBool,
    state: Mutex<State>,
    counters: Counters,
}

struct State {
    config: FaultConfig,
    plan: Plan,
    enabled: bool,
    rng: fastrand::Rng,
}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("FaultInjector")
            .field("name", &self.shared.name)
            .field("enabled", &state.enabled)
            .field("config", &state.config)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned lock holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes whether calls can get a fault; called with the lock held, so concurrent
    /// switches publish in the order they were made.
    fn publish(&self, state: &State) {
        let active = state.enabled && state.plan.injects();
        self.active.store(active, Ordering::Relaxed);
        tracing::debug!(
            injector = %self.name,
            enabled = state.enabled,
            active,
            config = ?state.config,
            "fault injection switched"
        );
        #[cfg(feature = "metrics")]
        metrics::gauge!(metric::FAULT_ACTIVE, label::DEPENDENCY => self.name.to_string())
            .set(if active { 1.0 } else { 0.0 });
    }
}

impl FaultInjector {
    /// Starts an injector called `name` (in errors, metrics and traces), injecting nothing
    /// until configured.
    pub fn builder(name: impl Into<Arc<str>>) -> FaultInjectorBuilder {
        FaultInjectorBuilder {
            name: name.into(),
            config: FaultConfig::default(),
            enabled: true,
        }
    }

    /// The injector's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Replaces the configuration and enables the injector, for the next call through every
    /// clone. With a [`seed`](FaultConfig::seed), the random sequence restarts from it.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field (as [`FaultInjectorBuilder::build`]); the injector
    /// then keeps its previous configuration and state.
    pub fn set(&self, config: FaultConfig) -> Result<(), ConfigError> {
        let plan = config.plan()?;
        let mut state = self.shared.lock();
        if let Some(seed) = config.seed {
            state.rng = fastrand::Rng::with_seed(seed);
        }
        state.plan = plan;
        state.config = config;
        state.enabled = true;
        self.shared.publish(&state);
        Ok(())
    }

    /// Stops injecting faults, from the next call through every clone; the configuration is
    /// kept for [`enable`](Self::enable).
    pub fn disable(&self) {
        let mut state = self.shared.lock();
        state.enabled = false;
        self.shared.publish(&state);
    }

    /// Injects the configured faults again, from the next call through every clone.
    pub fn enable(&self) {
        let mut state = self.shared.lock();
        state.enabled = true;
        self.shared.publish(&state);
    }

    /// Whether the injector is enabled (it may still inject nothing: see
    /// [`is_active`](Self::is_active)).
    pub fn is_enabled(&self) -> bool {
        self.shared.lock().enabled
    }

    /// Whether a call can get a fault now: enabled, with a configuration that injects
    /// something.
    pub fn is_active(&self) -> bool {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// The configuration in effect (also while disabled).
    pub fn config(&self) -> FaultConfig {
        self.shared.lock().config.clone()
    }

    /// Decides the faults of one call: a delay to wait before sending it, and whether to
    /// fail it instead of sending it.
    ///
    /// While inactive this is one relaxed atomic load returning [`Injection::none`].
    #[inline]
    pub fn decide(&self) -> Injection {
        if self.shared.active.load(Ordering::Relaxed) {
            self.draw()
        } else {
            Injection::none()
        }
    }

    #[cold]
    #[inline(never)]
    fn draw(&self) -> Injection {
        let shared = &*self.shared;
        let mut guard = shared.lock();
        let state = &mut *guard;
        if !state.enabled {
            // Switched off between the load and the lock.
            return Injection::none();
        }
        let delay = state
            .plan
            .latency
            .and_then(|l| draw_delay(&mut state.rng, l));
        let fault = if state.plan.abort > 0.0 || state.plan.error.is_some() {
            let u = state.rng.f64();
            if u < state.plan.abort {
                Some(Fault::Abort)
            } else {
                match &state.plan.error {
                    Some(e) if u < state.plan.abort + e.rate => Some(Fault::Error(InjectedError {
                        name: Arc::clone(&shared.name),
                        status: e.status,
                        body: Arc::clone(&e.body),
                    })),
                    _ => None,
                }
            }
        } else {
            None
        };
        drop(guard);
        shared.counters.count(&shared.name, delay, fault.as_ref());
        Injection { delay, fault }
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.shared.name
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> FaultMetrics {
        self.shared.counters.snapshot()
    }
}

fn draw_delay(rng: &mut fastrand::Rng, latency: Latency) -> Option<Duration> {
    (rng.f64() < latency.rate).then(|| Duration::from_nanos(rng.u64(latency.min..=latency.max)))
}

/// What an injector decided for one call: [`delay`](Self::delay) it, then fail it with a
/// [`fault`](Self::fault) or send it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an injection does nothing until the caller acts on it"]
pub struct Injection {
    delay: Option<Duration>,
    fault: Option<Fault>,
}

impl Injection {
    /// No fault: send the call at once.
    pub const fn none() -> Self {
        Self {
            delay: None,
            fault: None,
        }
    }

    /// How long to wait before sending (or failing) the call.
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }

    /// How to fail the call instead of sending it, if it is to fail.
    pub fn fault(&self) -> Option<&Fault> {
        self.fault.as_ref()
    }

    /// Whether the call is sent at once, untouched.
    pub fn is_none(&self) -> bool {
        self.delay.is_none() && self.fault.is_none()
    }

    pub(crate) fn into_parts(self) -> (Option<Duration>, Option<Fault>) {
        (self.delay, self.fault)
    }
}

/// How an injected fault fails a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with the chosen error (or HTTP response).
    Error(InjectedError),
    /// Fail with [`FaultInjected`] without reaching the service.
    Abort,
}

/// An error the injector chose for one call: the `error` section's status and body. The
/// generic layer's error function ([`FaultLayer::error_with`](crate::FaultLayer::error_with))
/// turns it into the service's error; the HTTP layer answers it as a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedError {
    name: Arc<str>,
    status: u16,
    body: Arc<str>,
}

impl InjectedError {
    /// The name of the injector.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The status it stands for, from 400 to 599 (`error.status`).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body of the HTTP response (`error.body`).
    pub fn body(&self) -> &str {
        &self.body
    }

    /// As the default error, [`FaultInjected`] of kind [`FaultKind::Error`].
    pub fn to_fault_injected(&self) -> FaultInjected {
        FaultInjected::error(Arc::clone(&self.name), self.status)
    }
}

/// Counters shared by an injector's clones.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    delayed: AtomicU64,
    errors: AtomicU64,
    aborts: AtomicU64,
}

impl Counters {
    fn count(&self, name: &Arc<str>, delay: Option<Duration>, fault: Option<&Fault>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(delay) = delay {
            self.delayed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(injector = %name, ?delay, "fault injected: latency");
            emit(name, FaultKind::Latency);
        }
        match fault {
            Some(Fault::Error(e)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(injector = %name, status = e.status, "fault injected: error");
                emit(name, FaultKind::Error);
            }
            Some(Fault::Abort) => {
                self.aborts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(injector = %name, "fault injected: abort");
                emit(name, FaultKind::Abort);
            }
            None => {}
        }
    }

    fn snapshot(&self) -> FaultMetrics {
        FaultMetrics {
            calls: self.calls.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            aborts: self.aborts.load(Ordering::Relaxed),
        }
    }
}

#[cfg(feature = "metrics")]
fn emit(name: &Arc<str>, kind: FaultKind) {
    metrics::counter!(
        metric::FAULT_INJECTED,
        label::DEPENDENCY => name.to_string(),
        label::FAULT_KIND => kind.as_str()
    )
    .increment(1);
}

#[cfg(not(feature = "metrics"))]
fn emit(_: &Arc<str>, _: FaultKind) {}

/// A snapshot of an injector's counters, as `staunch.fault.injected{kind}` counts them
/// with feature `metrics`.
///
/// Calls made while the injector is inactive are not counted: that path reads one atomic
/// and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FaultMetrics {
    /// Calls decided while the injector was active (faulted or not).
    pub calls: u64,
    /// Calls delayed (`kind = latency`).
    pub delayed: u64,
    /// Calls failed with the chosen error or response (`kind = error`).
    pub errors: u64,
    /// Calls aborted (`kind = abort`).
    pub aborts: u64,
}

/// Builds a [`FaultInjector`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct FaultInjectorBuilder {
    name: Arc<str>,
    config: FaultConfig,
    enabled: bool,
}

impl FaultInjectorBuilder {
    /// Replaces every setting with `config` (a preset, or one read from a file).
    pub fn config(mut self, config: FaultConfig) -> Self {
        self.config = config;
        self
    }

    /// Delays a share `rate` (0 to 1) of calls by a delay drawn uniformly from `min..=max`.
    pub fn latency(mut self, rate: f64, min: Duration, max: Duration) -> Self {
        self.config = self.config.with_latency(rate, min, max);
        self
    }

    /// Fails a share `rate` (0 to 1) of calls with an error standing for `status` (400 to
    /// 599).
    pub fn error(mut self, rate: f64, status: u16) -> Self {
        self.config = self.config.with_error(rate, status);
        self
    }

    /// The body of injected HTTP error responses.
    pub fn error_body(mut self, body: impl Into<String>) -> Self {
        self.config = self.config.with_error_body(body);
        self
    }

    /// Fails a share `rate` (0 to 1) of calls with [`FaultInjected`] before they reach the
    /// service.
    pub fn abort(mut self, rate: f64) -> Self {
        self.config = self.config.with_abort(rate);
        self
    }

    /// Seeds the random draws, so the same calls get the same faults on every run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config = self.config.with_seed(seed);
        self
    }

    /// Whether the injector starts enabled (default `true`); [`FaultInjector::enable`]
    /// switches it on later.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Builds the injector. Without a seed, it seeds itself at random.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: a rate that is not a number from 0 to 1
    /// (`latency.rate`, `error.rate`, `abort.rate`; NaN included), `latency.max` below
    /// `latency.min`, an `error.status` outside 400 to 599, or `error.rate + abort.rate`
    /// over 1 (`error.rate`).
    pub fn build(self) -> Result<FaultInjector, ConfigError> {
        #[cfg(feature = "metrics")]
        staunch_core::telemetry::describe_metrics();
        let plan = self.config.plan()?;
        let rng = match self.config.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        let state = State {
            config: self.config,
            plan,
            enabled: self.enabled,
            rng,
        };
        let shared = Shared {
            name: self.name,
            active: AtomicBool::new(false),
            state: Mutex::new(state),
            counters: Counters::default(),
        };
        shared.publish(&shared.lock());
        Ok(FaultInjector {
            shared: Arc::new(shared),
        })
    }
}
