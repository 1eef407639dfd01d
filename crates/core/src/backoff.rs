//! Backoff schedules: how long to wait before the next attempt, with jitter.

use std::time::Duration;

use crate::ConfigError;

/// The delay ceiling when no `max_delay` is set: about 584 years, the largest delay that fits
/// in `u64` nanoseconds. Every computation saturates here instead of overflowing.
const CEILING_NANOS: u64 = u64::MAX;

/// How the un-jittered delay grows from one attempt to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Strategy {
    /// The same delay every time.
    Constant {
        /// The delay.
        delay: Duration,
    },
    /// `base + n * step` for the n-th retry (n from 0).
    Linear {
        /// The first delay.
        base: Duration,
        /// Added for every further retry.
        step: Duration,
    },
    /// `base * multiplier^n` for the n-th retry (n from 0).
    Exponential {
        /// The first delay.
        base: Duration,
        /// Growth factor, at least 1.
        multiplier: f64,
    },
    /// `base * fib(n)`: base, base, 2 base, 3 base, 5 base, ... Grows slower than doubling.
    Fibonacci {
        /// The first delay.
        base: Duration,
    },
    /// AWS "decorrelated jitter": `min(max_delay, random(base, 3 * previous))`. The randomness
    /// is part of the strategy, so it takes no extra [`Jitter`].
    Decorrelated {
        /// The smallest delay, and the first `previous`.
        base: Duration,
    },
}

/// How randomness is mixed into each delay `d`, so that clients that failed together do not
/// retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly `d`. Only for tests and single clients: a fleet retries in lockstep.
    None,
    /// Uniform in `[0, d]`. Spreads load best; the usual choice.
    Full,
    /// Uniform in `[d/2, d]`: keeps at least half of the wait.
    Equal,
    /// Uniform in `[d(1-f), d(1+f)]` for a factor `f` in `[0, 1]`.
    Proportional(f64),
}

/// A validated backoff policy; [`schedule`](Backoff::schedule) turns it into the delays of one
/// sequence of attempts.
///
/// Build one from a strategy constructor, adjust it, and `build()` it; invalid values (a zero
/// base, `max_delay` below the base, a multiplier below 1, a jitter factor outside `[0, 1]`)
/// are a [`ConfigError`] naming the field.
///
/// # The cap and jitter
///
/// `max_delay` is a hard bound on every delay handed out: it is applied **after** jitter, so
/// proportional jitter can never push a delay past it (applying the cap only before jitter is a
/// common bug: a 30 s cap with ±50% jitter then waits 45 s). The un-jittered sequence also
/// saturates at the cap, so once the schedule reaches it, full jitter keeps spreading clients
/// over `[0, max_delay]` instead of pinning them all at the cap.
///
/// # Randomness
///
/// Each schedule owns a small, fast RNG. Unseeded, it is seeded from the thread's generator,
/// so every client draws different delays. With [`seed`](BackoffBuilder::seed), every
/// schedule of this policy draws the same sequence: meant for deterministic tests.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use staunch_core::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100))
///     .multiplier(2.0)
///     .max_delay(Duration::from_secs(1))
///     .jitter(Jitter::None)
///     .build()?;
/// let delays: Vec<_> = backoff.schedule().take(6).map(|d| d.as_millis()).collect();
/// assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
///
/// // With full jitter every delay lands somewhere in [0, un-jittered delay].
/// let jittered = Backoff::exponential(Duration::from_millis(100))
///     .max_delay(Duration::from_secs(1))
///     .jitter(Jitter::Full)
///     .seed(7)
///     .build()?;
/// for (d, limit) in jittered.schedule().zip([100, 200, 400, 800, 1000, 1000]) {
///     assert!(d <= Duration::from_millis(limit));
/// }
/// # Ok::<(), staunch_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    strategy: Strategy,
    jitter: Jitter,
    max_delay: Option<Duration>,
    max_elapsed: Option<Duration>,
    seed: Option<u64>,
}

impl Default for Backoff {
    /// Exponential from 100 ms, doubling, capped at 10 s, full jitter: a sound default for
    /// retrying calls to another service.
    fn default() -> Self {
        Self {
            strategy: Strategy::Exponential {
                base: Duration::from_millis(100),
                multiplier: 2.0,
            },
            jitter: Jitter::Full,
            max_delay: Some(Duration::from_secs(10)),
            max_elapsed: None,
            seed: None,
        }
    }
}

impl Backoff {
    /// The same `delay` before every retry.
    pub fn constant(delay: Duration) -> BackoffBuilder {
        BackoffBuilder::new(Strategy::Constant { delay })
    }

    /// `base`, then `base + step`, `base + 2 step`, ...; `step` defaults to `base`.
    pub fn linear(base: Duration) -> BackoffBuilder {
        BackoffBuilder::new(Strategy::Linear { base, step: base })
    }

    /// `base`, then `base * multiplier`, `base * multiplier^2`, ...; the multiplier defaults
    /// to 2.
    pub fn exponential(base: Duration) -> BackoffBuilder {
        BackoffBuilder::new(Strategy::Exponential {
            base,
            multiplier: 2.0,
        })
    }

    /// `base` times the Fibonacci numbers: base, base, 2 base, 3 base, 5 base, ...
    pub fn fibonacci(base: Duration) -> BackoffBuilder {
        BackoffBuilder::new(Strategy::Fibonacci { base })
    }

    /// AWS decorrelated jitter: each delay is random in `[base, 3 * previous]`, capped by
    /// `max_delay`. Set a `max_delay`: without one the delays grow without a useful bound.
    pub fn decorrelated(base: Duration) -> BackoffBuilder {
        BackoffBuilder::new(Strategy::Decorrelated { base })
    }

    /// The growth strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The jitter mixed into each delay.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The hard upper bound of every delay, if any.
    pub fn max_delay(&self) -> Option<Duration> {
        self.max_delay
    }

    /// The total time after which the schedule ends, if any.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// Starts a new sequence of delays (one per retry).
    pub fn schedule(&self) -> BackoffSchedule {
        let rng = match self.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        let mut schedule = BackoffSchedule {
            backoff: *self,
            rng,
            attempt: 0,
            current: 0,
            previous: 0,
            elapsed: Duration::ZERO,
            exhausted: false,
        };
        schedule.rewind();
        schedule
    }
}

/// Adjusts a [`Backoff`] before [`build`](BackoffBuilder::build) validates it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct BackoffBuilder {
    backoff: Backoff,
}

impl BackoffBuilder {
    fn new(strategy: Strategy) -> Self {
        Self {
            backoff: Backoff {
                strategy,
                jitter: Jitter::Full,
                max_delay: None,
                max_elapsed: None,
                seed: None,
            },
        }
    }

    /// Growth factor of an exponential backoff (at least 1; default 2). Ignored by other
    /// strategies.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        if let Strategy::Exponential { multiplier: m, .. } = &mut self.backoff.strategy {
            *m = multiplier;
        }
        self
    }

    /// Increment of a linear backoff (default: the base). Ignored by other strategies.
    pub fn step(mut self, step: Duration) -> Self {
        if let Strategy::Linear { step: s, .. } = &mut self.backoff.strategy {
            *s = step;
        }
        self
    }

    /// Jitter mixed into each delay (default [`Jitter::Full`]; must stay [`Jitter::None`] for a
    /// decorrelated backoff, which is random by construction).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.backoff.jitter = jitter;
        self
    }

    /// Hard upper bound of every delay, applied after jitter. Must not be below the base.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.backoff.max_delay = Some(max_delay);
        self
    }

    /// Ends the schedule once the time spent (as the caller reports it, or the sum of the
    /// delays handed out) plus the next delay would pass `max_elapsed`.
    pub fn max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.backoff.max_elapsed = Some(max_elapsed);
        self
    }

    /// Seeds the random number generator, so that every schedule of this policy yields the
    /// same delays. For deterministic tests; in production leave it unseeded.
    pub fn seed(mut self, seed: u64) -> Self {
        self.backoff.seed = Some(seed);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when: the base (or constant delay) is zero; a linear
    /// step is zero; a multiplier is below 1 or not finite; `max_delay` is below the base;
    /// `max_elapsed` is zero; a proportional jitter factor is outside `[0, 1]`; a decorrelated
    /// backoff is given extra jitter.
    pub fn build(self) -> Result<Backoff, ConfigError> {
        let b = self.backoff;
        let base = match b.strategy {
            Strategy::Constant { delay } => {
                if delay.is_zero() {
                    return Err(ConfigError::new("base", "must be greater than zero"));
                }
                delay
            }
            Strategy::Linear { base, step } => {
                if step.is_zero() {
                    return Err(ConfigError::new(
                        "step",
                        "must be greater than zero (use `Backoff::constant` for a fixed delay)",
                    ));
                }
                base
            }
            Strategy::Exponential { base, multiplier } => {
                if !(multiplier.is_finite() && multiplier >= 1.0) {
                    return Err(ConfigError::new(
                        "multiplier",
                        format!("must be a finite number of at least 1.0 (got {multiplier})"),
                    ));
                }
                base
            }
            Strategy::Fibonacci { base } => base,
            Strategy::Decorrelated { base } => {
                if b.jitter != Jitter::None {
                    return Err(ConfigError::new(
                        "jitter",
                        "must be `Jitter::None` for a decorrelated backoff, which is already random",
                    ));
                }
                base
            }
        };
        if base.is_zero() {
            return Err(ConfigError::new("base", "must be greater than zero"));
        }
        if let Some(cap) = b.max_delay
            && cap < base
        {
            return Err(ConfigError::new(
                "max_delay",
                format!("must be at least the base delay ({base:?}), got {cap:?}"),
            ));
        }
        if b.max_elapsed.is_some_and(|e| e.is_zero()) {
            return Err(ConfigError::new("max_elapsed", "must be greater than zero"));
        }
        if let Jitter::Proportional(f) = b.jitter
            && !(0.0..=1.0).contains(&f)
        {
            return Err(ConfigError::new(
                "jitter",
                format!("proportional factor must be within [0, 1] (got {f})"),
            ));
        }
        Ok(b)
    }
}

/// The delays of one sequence of attempts, drawn from a [`Backoff`].
///
/// The first call to [`next_delay`](Self::next_delay) gives the wait before the first retry.
/// The schedule never allocates and never overflows: delays saturate at `max_delay` (or at
/// about 584 years when none is set).
///
/// It is an [`Iterator`] of delays that ends when `max_elapsed` (counting only the delays
/// themselves) would be passed. A retry loop that knows how long its attempts took should call
/// [`next_delay_after`](Self::next_delay_after) with the real elapsed time instead.
#[derive(Debug, Clone)]
pub struct BackoffSchedule {
    backoff: Backoff,
    rng: fastrand::Rng,
    attempt: u32,
    /// The next un-jittered delay, in nanoseconds.
    current: u64,
    /// Fibonacci: the delay after `current`; decorrelated: the previous delay.
    previous: u64,
    elapsed: Duration,
    exhausted: bool,
}

impl BackoffSchedule {
    /// The wait before the next retry, or `None` once `max_elapsed` would be passed by it,
    /// counting the delays handed out so far as the elapsed time.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let delay = self.next_delay_after(self.elapsed)?;
        self.elapsed = self.elapsed.saturating_add(delay);
        Some(delay)
    }

    /// The wait before the next retry, given the time already spent since the first attempt
    /// started; `None` once `elapsed + delay` would pass `max_elapsed`. After the first
    /// `None` the schedule stays ended until [`reset`](Self::reset).
    pub fn next_delay_after(&mut self, elapsed: Duration) -> Option<Duration> {
        if self.exhausted {
            return None;
        }
        let delay = self.draw();
        if let Some(limit) = self.backoff.max_elapsed
            && elapsed.saturating_add(delay) > limit
        {
            self.exhausted = true;
            return None;
        }
        Some(delay)
    }

    /// How many delays have been handed out since the start (or the last reset).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The policy this schedule draws from.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Starts the sequence over from the first delay. The RNG keeps its state, so a reset
    /// schedule does not repeat the jitter it already drew.
    pub fn reset(&mut self) {
        self.rewind();
    }

    fn rewind(&mut self) {
        self.attempt = 0;
        self.elapsed = Duration::ZERO;
        self.exhausted = false;
        let ceiling = self.ceiling();
        let (current, previous) = match self.backoff.strategy {
            Strategy::Constant { delay } => (nanos(delay), 0),
            Strategy::Linear { base, .. } | Strategy::Exponential { base, .. } => (nanos(base), 0),
            Strategy::Fibonacci { base } | Strategy::Decorrelated { base } => {
                (nanos(base), nanos(base))
            }
        };
        self.current = current.min(ceiling);
        self.previous = previous.min(ceiling);
    }

    fn ceiling(&self) -> u64 {
        self.backoff.max_delay.map_or(CEILING_NANOS, nanos)
    }

    /// Draws the next delay and advances the un-jittered sequence.
    fn draw(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let delay = match self.backoff.strategy {
            Strategy::Constant { .. } => self.jittered(self.current),
            Strategy::Linear { step, .. } => {
                let d = self.current;
                self.current = d.saturating_add(nanos(step)).min(ceiling);
                self.jittered(d)
            }
            Strategy::Exponential { multiplier, .. } => {
                let d = self.current;
                // `max(d)` guards against f64 rounding a large value down: the sequence must
                // be monotone.
                self.current = mul_saturating(d, multiplier).max(d).min(ceiling);
                self.jittered(d)
            }
            Strategy::Fibonacci { .. } => {
                let d = self.current;
                let next = self.previous;
                self.previous = d.saturating_add(next).min(ceiling);
                self.current = next;
                self.jittered(d)
            }
            Strategy::Decorrelated { base } => {
                let low = nanos(base);
                let high = self.previous.saturating_mul(3).min(ceiling).max(low);
                let d = self.rng.u64(low..=high);
                self.previous = d;
                d
            }
        };
        Duration::from_nanos(delay.min(ceiling))
    }

    fn jittered(&mut self, d: u64) -> u64 {
        match self.backoff.jitter {
            Jitter::None => d,
            Jitter::Full => self.rng.u64(0..=d),
            Jitter::Equal => {
                let half = d / 2;
                (d - half) + self.rng.u64(0..=half)
            }
            Jitter::Proportional(f) => {
                // Uniform in [d(1-f), d(1+f)], clamped to what a u64 can hold.
                let spread = f * (2.0 * self.rng.f64() - 1.0);
                let value = (d as f64) * (1.0 + spread);
                if value <= 0.0 {
                    0
                } else if value >= CEILING_NANOS as f64 {
                    CEILING_NANOS
                } else {
                    value as u64
                }
            }
        }
    }
}

impl Iterator for BackoffSchedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.next_delay()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(CEILING_NANOS)
}

fn mul_saturating(nanos: u64, factor: f64) -> u64 {
    let value = nanos as f64 * factor;
    if value >= CEILING_NANOS as f64 {
        CEILING_NANOS
    } else {
        value as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn take(b: &Backoff, n: usize) -> Vec<u64> {
        b.schedule().take(n).map(|d| d.as_millis() as u64).collect()
    }

    #[test]
    fn strategies_produce_their_sequences() {
        let none = |b: BackoffBuilder| b.jitter(Jitter::None).build().unwrap();
        assert_eq!(take(&none(Backoff::constant(ms(50))), 3), [50, 50, 50]);
        assert_eq!(take(&none(Backoff::linear(ms(10))), 4), [10, 20, 30, 40]);
        assert_eq!(
            take(&none(Backoff::linear(ms(10)).step(ms(5))), 4),
            [10, 15, 20, 25]
        );
        assert_eq!(
            take(&none(Backoff::exponential(ms(10)).multiplier(3.0)), 4),
            [10, 30, 90, 270]
        );
        assert_eq!(
            take(&none(Backoff::fibonacci(ms(10))), 7),
            [10, 10, 20, 30, 50, 80, 130]
        );
        assert_eq!(
            take(&none(Backoff::fibonacci(ms(10)).max_delay(ms(60))), 7),
            [10, 10, 20, 30, 50, 60, 60]
        );
    }

    #[test]
    fn max_elapsed_ends_the_schedule() {
        let b = Backoff::constant(ms(100))
            .jitter(Jitter::None)
            .max_elapsed(ms(350))
            .build()
            .unwrap();
        assert_eq!(take(&b, 10), [100, 100, 100]);
        let mut s = b.schedule();
        assert_eq!(s.next_delay_after(ms(200)), Some(ms(100)));
        assert_eq!(s.next_delay_after(ms(300)), None);
        // Stays ended until reset.
        assert_eq!(s.next_delay_after(Duration::ZERO), None);
        s.reset();
        assert_eq!(s.next_delay_after(Duration::ZERO), Some(ms(100)));
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let field = |b: BackoffBuilder| b.build().unwrap_err().field().to_owned();
        assert_eq!(field(Backoff::exponential(Duration::ZERO)), "base");
        assert_eq!(field(Backoff::constant(Duration::ZERO)), "base");
        assert_eq!(
            field(Backoff::exponential(ms(1)).multiplier(0.5)),
            "multiplier"
        );
        assert_eq!(
            field(Backoff::exponential(ms(1)).multiplier(f64::NAN)),
            "multiplier"
        );
        assert_eq!(
            field(Backoff::exponential(ms(10)).max_delay(ms(5))),
            "max_delay"
        );
        assert_eq!(
            field(Backoff::exponential(ms(10)).jitter(Jitter::Proportional(1.5))),
            "jitter"
        );
        assert_eq!(
            field(Backoff::exponential(ms(10)).jitter(Jitter::Proportional(-0.1))),
            "jitter"
        );
        assert_eq!(
            field(Backoff::decorrelated(ms(10)).jitter(Jitter::Full)),
            "jitter"
        );
        assert_eq!(field(Backoff::linear(ms(10)).step(Duration::ZERO)), "step");
        assert_eq!(
            field(Backoff::constant(ms(10)).max_elapsed(Duration::ZERO)),
            "max_elapsed"
        );
        let err = Backoff::exponential(ms(1))
            .multiplier(0.5)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("at least 1.0 (got 0.5)"), "{err}");
    }
}
