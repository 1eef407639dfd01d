//! The engine: rates over many seeded calls, delays within their range, the same seed giving
//! the same sequence, run-time switches seen by every clone.

use std::time::Duration;

use staunch_fault::{Fault, FaultConfig, FaultInjector, Injection};

const CALLS: usize = 10_000;

/// Shares of (delayed, error, abort) over `CALLS` decisions, and the delays seen.
fn shares(injector: &FaultInjector) -> (f64, f64, f64, Vec<Duration>) {
    let (mut errors, mut aborts) = (0usize, 0usize);
    let mut delays = Vec::new();
    for _ in 0..CALLS {
        let injection = injector.decide();
        delays.extend(injection.delay());
        match injection.fault() {
            Some(Fault::Error(_)) => errors += 1,
            Some(Fault::Abort) => aborts += 1,
            _ => {}
        }
    }
    let share = |n: usize| n as f64 / CALLS as f64;
    (share(delays.len()), share(errors), share(aborts), delays)
}

/// Within 2 points: over 10 000 calls one standard deviation is at most 0.5 point.
fn close(seen: f64, want: f64) -> bool {
    (seen - want).abs() <= 0.02
}

#[test]
fn the_presets_hold_their_rates_over_ten_thousand_calls() {
    for seed in [1, 2, 3] {
        let slow = FaultConfig::slow().with_seed(seed).build("p").unwrap();
        let (delayed, errors, aborts, delays) = shares(&slow);
        assert_eq!((delayed, errors, aborts), (1.0, 0.0, 0.0));
        assert!(
            delays
                .iter()
                .all(|d| (Duration::from_secs(3)..=Duration::from_secs(8)).contains(d))
        );

        let error = FaultConfig::error().with_seed(seed).build("p").unwrap();
        let (delayed, errors, aborts, _) = shares(&error);
        assert_eq!((delayed, aborts), (0.0, 0.0));
        assert!(close(errors, 0.7), "error preset: {errors}");

        let intermittent = FaultConfig::intermittent()
            .with_seed(seed)
            .build("p")
            .unwrap();
        let (delayed, errors, aborts, delays) = shares(&intermittent);
        assert!(close(delayed, 0.3), "intermittent delays: {delayed}");
        assert!(close(errors, 0.2), "intermittent errors: {errors}");
        assert_eq!(aborts, 0.0);
        // Drawn independently: about 0.3 × 0.2 of the calls get both.
        let both = (0..CALLS)
            .map(|_| intermittent.decide())
            .filter(|i| i.delay().is_some() && i.fault().is_some())
            .count() as f64
            / CALLS as f64;
        assert!(close(both, 0.06), "intermittent both: {both}");
        assert!(
            delays
                .iter()
                .all(|d| (Duration::from_secs(2)..=Duration::from_secs(5)).contains(d))
        );

        let none = FaultConfig::none().with_seed(seed).build("p").unwrap();
        assert_eq!(shares(&none).0, 0.0);
        assert_eq!(
            none.metrics().calls,
            0,
            "an inactive injector counts nothing"
        );
    }
}

#[test]
fn every_kind_holds_its_rate_and_the_counters_agree() {
    let injector = FaultInjector::builder("p")
        .latency(0.25, Duration::from_millis(10), Duration::from_millis(20))
        .error(0.15, 502)
        .abort(0.05)
        .seed(99)
        .build()
        .unwrap();
    let (delayed, errors, aborts, delays) = shares(&injector);
    assert!(close(delayed, 0.25), "{delayed}");
    assert!(close(errors, 0.15), "{errors}");
    assert!(close(aborts, 0.05), "{aborts}");
    let m = injector.metrics();
    assert_eq!(m.calls, CALLS as u64);
    assert_eq!(m.delayed, delays.len() as u64);
    assert_eq!(m.errors, (errors * CALLS as f64).round() as u64);
    assert_eq!(m.aborts, (aborts * CALLS as f64).round() as u64);
    // Uniform over the range: both halves get their share.
    let low = delays
        .iter()
        .filter(|d| **d < Duration::from_millis(15))
        .count() as f64;
    assert!(close(low / delays.len() as f64, 0.5), "{low}");
    assert!(delays.iter().all(|d| *d >= Duration::from_millis(10)));
    assert!(delays.iter().all(|d| *d <= Duration::from_millis(20)));
}

#[test]
fn rates_of_zero_and_one_are_exact() {
    let always = FaultInjector::builder("p")
        .latency(1.0, Duration::from_secs(1), Duration::from_secs(1))
        .abort(1.0)
        .seed(5)
        .build()
        .unwrap();
    let never = FaultInjector::builder("p")
        .latency(0.0, Duration::from_secs(1), Duration::from_secs(1))
        .error(0.0, 500)
        .abort(0.0)
        .seed(5)
        .build()
        .unwrap();
    assert!(!never.is_active(), "rates of zero inject nothing");
    for _ in 0..1000 {
        let i = always.decide();
        assert_eq!(i.delay(), Some(Duration::from_secs(1)));
        assert_eq!(i.fault(), Some(&Fault::Abort));
        assert!(never.decide().is_none());
    }
    let split = FaultInjector::builder("p")
        .error(0.5, 500)
        .abort(0.5)
        .seed(5)
        .build()
        .unwrap();
    assert!((0..1000).all(|_| split.decide().fault().is_some()));
}

#[test]
fn the_same_seed_gives_the_same_sequence() {
    let run = |seed| {
        let injector = FaultConfig::intermittent()
            .with_abort(0.1)
            .with_seed(seed)
            .build("p")
            .unwrap();
        (0..500).map(|_| injector.decide()).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    // Reseeding through `set` restarts the sequence.
    let injector = FaultConfig::intermittent().with_seed(7).build("p").unwrap();
    let first: Vec<Injection> = (0..100).map(|_| injector.decide()).collect();
    injector
        .set(FaultConfig::intermittent().with_seed(7))
        .unwrap();
    let again: Vec<Injection> = (0..100).map(|_| injector.decide()).collect();
    assert_eq!(first, again);
    // Without a seed, `set` goes on with the sequence instead.
    injector.set(FaultConfig::intermittent()).unwrap();
    let next: Vec<Injection> = (0..100).map(|_| injector.decide()).collect();
    assert_ne!(first, next);
}

#[test]
fn a_switch_is_seen_by_the_next_call_of_every_clone() {
    let injector = FaultInjector::builder("p").seed(1).build().unwrap();
    let clones: Vec<FaultInjector> = (0..4).map(|_| injector.clone()).collect();
    assert!(clones.iter().all(|c| c.decide().is_none()));

    clones[2].set(FaultConfig::none().with_abort(1.0)).unwrap();
    assert!(
        clones
            .iter()
            .chain([&injector])
            .all(|c| c.decide().fault() == Some(&Fault::Abort))
    );

    clones[0].disable();
    assert!(!injector.is_enabled() && !injector.is_active());
    assert!(clones.iter().all(|c| c.decide().is_none()));
    assert_eq!(
        injector.config(),
        FaultConfig::none().with_abort(1.0),
        "kept while disabled"
    );

    clones[3].enable();
    assert!(clones.iter().all(|c| c.decide().fault().is_some()));

    // A bad configuration is refused and changes nothing.
    let err = clones[1]
        .set(FaultConfig::none().with_abort(f64::NAN))
        .unwrap_err();
    assert_eq!(err.field(), "abort.rate");
    assert!(injector.decide().fault().is_some());
    assert_eq!(injector.config(), FaultConfig::none().with_abort(1.0));
}

#[test]
fn a_switch_from_another_thread_is_seen_by_the_next_call() {
    let injector = FaultConfig::error().with_seed(1).build("p").unwrap();
    injector.disable();
    let other = injector.clone();
    std::thread::spawn(move || other.set(FaultConfig::none().with_abort(1.0)).unwrap())
        .join()
        .unwrap();
    assert_eq!(injector.decide().fault(), Some(&Fault::Abort));
    let other = injector.clone();
    std::thread::spawn(move || other.disable()).join().unwrap();
    assert!(injector.decide().is_none());
}

#[test]
fn a_disabled_builder_starts_off_and_enable_switches_it_on() {
    let injector = FaultInjector::builder("p")
        .abort(1.0)
        .enabled(false)
        .build()
        .unwrap();
    assert!(!injector.is_enabled());
    assert!(injector.decide().is_none());
    injector.enable();
    assert_eq!(injector.decide().fault(), Some(&Fault::Abort));
    assert_eq!(injector.name(), "p");
}

#[test]
fn an_injected_error_carries_the_configured_status_and_body() {
    let injector = FaultInjector::builder("ledger")
        .error(1.0, 418)
        .error_body("teapot")
        .build()
        .unwrap();
    let Some(Fault::Error(e)) = injector.decide().fault().cloned() else {
        panic!("an error fault");
    };
    assert_eq!((e.name(), e.status(), e.body()), ("ledger", 418, "teapot"));
    let err = e.to_fault_injected();
    assert_eq!(err.status(), Some(418));
    assert_eq!(err.kind(), staunch_fault::FaultKind::Error);
    assert!(err.to_string().contains("`ledger`"), "{err}");
}

#[test]
fn public_types_are_send_sync_unpin() {
    fn check<T: Send + Sync + Unpin>() {}
    check::<FaultInjector>();
    check::<FaultConfig>();
    check::<Injection>();
    check::<staunch_fault::FaultInjected>();
    check::<staunch_fault::ErrorFnPanicked>();
    check::<staunch_fault::FaultLayer>();
    check::<staunch_fault::FaultMetrics>();
}
