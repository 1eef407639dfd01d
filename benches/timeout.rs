//! Per-call overhead of staunch's `TimeoutLayer` over a bare `service_fn` when the inner future
//! is ready at once, side by side with tower's `Timeout` and tower-resilience's time limiter.
//! Groups: `uncontended` (1 task) and `contended` (2 tasks on 2 threads sharing one layer),
//! plus `http` (1 task, `http::Request` so the extensions are read).

mod support;

use std::future::ready;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use staunch::timeout::{TimeLimit, TimeoutLayer};
use tower::{Layer, service_fn};

const LIMIT: Duration = Duration::from_secs(1);

fn benches(c: &mut Criterion) {
    let rt = support::runtime();
    let staunch = TimeoutLayer::new(LIMIT)
        .expect("valid limit")
        .ignore_request();
    let named = TimeoutLayer::from_limit(
        TimeLimit::builder()
            .limit(LIMIT)
            .name("bench")
            .build()
            .expect("valid limit"),
    )
    .ignore_request();
    let tower_timeout = tower::timeout::TimeoutLayer::new(LIMIT);
    let resilience = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(LIMIT)
        .build();

    let mut group = c.benchmark_group("uncontended");
    support::uncontended(&mut group, &rt, "bare service_fn", support::bare());
    support::uncontended(
        &mut group,
        &rt,
        "staunch timeout",
        staunch.layer(support::bare()),
    );
    support::uncontended(
        &mut group,
        &rt,
        "staunch timeout (named)",
        named.layer(support::bare()),
    );
    support::uncontended(
        &mut group,
        &rt,
        "tower timeout",
        tower_timeout.layer(support::bare()),
    );
    support::uncontended(
        &mut group,
        &rt,
        "tower-resilience time limiter",
        resilience.layer(support::bare()),
    );
    group.finish();

    let mut group = c.benchmark_group("contended");
    support::contended(&mut group, &rt, "bare service_fn", support::bare());
    support::contended(
        &mut group,
        &rt,
        "staunch timeout",
        staunch.layer(support::bare()),
    );
    support::contended(
        &mut group,
        &rt,
        "staunch timeout (named)",
        named.layer(support::bare()),
    );
    support::contended(
        &mut group,
        &rt,
        "tower timeout",
        tower_timeout.layer(support::bare()),
    );
    support::contended(
        &mut group,
        &rt,
        "tower-resilience time limiter",
        resilience.layer(support::bare()),
    );
    group.finish();

    // `http::Request`: the default reader looks for an override and a deadline in the
    // extensions. Both cases build the request, so the difference is the layer's.
    let mut group = c.benchmark_group("http");
    let _ctx = rt.enter();
    let bare_http =
        || service_fn(|req: http::Request<u64>| ready(Ok::<_, support::BoxError>(*req.body())));
    let mut bare = bare_http();
    group.bench_function(BenchmarkId::from_parameter("bare service_fn"), |b| {
        b.iter(|| support::call_now(&mut bare, http::Request::new(std::hint::black_box(1u64))));
    });
    let mut timed = TimeoutLayer::new(LIMIT)
        .expect("valid limit")
        .layer(bare_http());
    group.bench_function(BenchmarkId::from_parameter("staunch timeout"), |b| {
        b.iter(|| support::call_now(&mut timed, http::Request::new(std::hint::black_box(1u64))));
    });
    let mut blind = staunch.layer(bare_http());
    group.bench_function(
        BenchmarkId::from_parameter("staunch timeout (ignore_request)"),
        |b| {
            b.iter(|| {
                support::call_now(&mut blind, http::Request::new(std::hint::black_box(1u64)))
            });
        },
    );
    let mut tower_timed = tower_timeout.layer(bare_http());
    group.bench_function(BenchmarkId::from_parameter("tower timeout"), |b| {
        b.iter(|| {
            support::call_now(
                &mut tower_timed,
                http::Request::new(std::hint::black_box(1u64)),
            )
        });
    });
    group.finish();
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
