//! Saga throughput: 3-step sagas with ~200 bytes of state, per store.

use criterion::{Criterion, criterion_group, criterion_main};

fn benches(c: &mut Criterion) {
    // Cost of encoding a ~200 byte saga state, the floor under every logged transition.
    let state = "x".repeat(200);
    c.bench_function("encode 200-byte state", |b| {
        b.iter(|| std::hint::black_box(state.as_bytes().to_vec()));
    });
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
