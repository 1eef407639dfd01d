//! Per-call overhead of the layer over a bare `service_fn`, side by side with peer crates.
//! Groups: `uncontended` (1 task) and `contended` (2 tasks on 2 threads sharing one layer).

mod support;

use criterion::{Criterion, criterion_group, criterion_main};

fn benches(c: &mut Criterion) {
    let rt = support::runtime();

    let mut group = c.benchmark_group("uncontended");
    support::uncontended(&mut group, &rt, "bare service_fn", support::bare());
    group.finish();

    let mut group = c.benchmark_group("contended");
    support::contended(&mut group, &rt, "bare service_fn", support::bare());
    group.finish();
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
