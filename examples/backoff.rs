//! Prints the retry delays each backoff strategy and jitter produces, so you can see what a
//! policy does before you put it in front of a dependency.
//!
//! ```text
//! cargo run --example backoff
//! ```

use std::time::Duration;

use staunch::{Backoff, ConfigError, Jitter};

fn main() -> Result<(), ConfigError> {
    let base = Duration::from_millis(100);
    let cap = Duration::from_secs(2);
    let attempts = 8;

    println!(
        "Delays before each of {attempts} retries (ms); base {base:?}, max_delay {cap:?}, seed 7\n"
    );

    let strategies = [
        ("constant", Backoff::constant(base)),
        ("linear", Backoff::linear(base)),
        ("exponential x2", Backoff::exponential(base)),
        ("fibonacci", Backoff::fibonacci(base)),
    ];
    let jitters = [
        ("none", Jitter::None),
        ("full", Jitter::Full),
        ("equal", Jitter::Equal),
        ("proportional 0.2", Jitter::Proportional(0.2)),
    ];

    println!("{:<16} {:<17} delays", "strategy", "jitter");
    for (name, builder) in strategies {
        for (jitter_name, jitter) in jitters {
            let backoff = builder.max_delay(cap).jitter(jitter).seed(7).build()?;
            print_row(name, jitter_name, &backoff, attempts);
        }
    }
    let decorrelated = Backoff::decorrelated(base)
        .jitter(Jitter::None)
        .max_delay(cap)
        .seed(7)
        .build()?;
    print_row("decorrelated", "(built in)", &decorrelated, attempts);

    // A schedule with a total time limit ends on its own.
    let bounded = Backoff::exponential(base)
        .jitter(Jitter::None)
        .max_elapsed(Duration::from_secs(1))
        .build()?;
    println!();
    print_row("exponential x2", "none, max 1s", &bounded, attempts);

    // Invalid settings are refused at build time, naming the field.
    let err = Backoff::exponential(base)
        .multiplier(0.5)
        .build()
        .unwrap_err();
    println!("\nA multiplier of 0.5 is refused: {err}");
    Ok(())
}

fn print_row(name: &str, jitter: &str, backoff: &Backoff, attempts: usize) {
    let delays: Vec<String> = backoff
        .schedule()
        .take(attempts)
        .map(|d| format!("{:>5}", d.as_millis()))
        .collect();
    println!("{name:<16} {jitter:<17} {}", delays.join(" "));
}
