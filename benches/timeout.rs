//! Per-call overhead of staunch's `TimeoutLayer` over a bare service, side by side with tower's
//! `Timeout` and tower-resilience's time limiter, in the groups of `support::bench_rows!`
//! (`uncontended`, `contended`, `pending`: the inner future pends once so a timer is armed,
//! `alternating`), plus `http` (1 task, `http::Request` so the extensions are read).

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

    bench_rows!(c, &rt, {
        "staunch timeout" => |inner| staunch.layer(inner),
        "staunch timeout (named)" => |inner| named.layer(inner),
        "tower timeout" => |inner| tower_timeout.layer(inner),
        "tower-resilience time limiter" => |inner| resilience.layer(inner),
    });

    // `http::Request`: the default reader looks for an override and a deadline in the
    // extensions. Both cases build the request, so the difference is the layer's.
    let mut group = c.benchmark_group("http");
    let _ctx = rt.enter();
    let bare_http =
        || service_fn(|req: http::Request<u64>| ready(Ok::<_, support::BoxError>(*req.body())));
    let mut bare = bare_http();
    group.bench_function(BenchmarkId::from_parameter("bare service_fn"), |b| {
        b.iter(|| support::call(&mut bare, http::Request::new(std::hint::black_box(1u64))));
    });
    let mut timed = TimeoutLayer::new(LIMIT)
        .expect("valid limit")
        .layer(bare_http());
    group.bench_function(BenchmarkId::from_parameter("staunch timeout"), |b| {
        b.iter(|| support::call(&mut timed, http::Request::new(std::hint::black_box(1u64))));
    });
    let mut blind = staunch.layer(bare_http());
    group.bench_function(
        BenchmarkId::from_parameter("staunch timeout (ignore_request)"),
        |b| {
            b.iter(|| support::call(&mut blind, http::Request::new(std::hint::black_box(1u64))));
        },
    );
    let mut tower_timed = tower_timeout.layer(bare_http());
    group.bench_function(BenchmarkId::from_parameter("tower timeout"), |b| {
        b.iter(|| {
            support::call(
                &mut tower_timed,
                http::Request::new(std::hint::black_box(1u64)),
            )
        });
    });
    group.finish();
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
