//! How long computing the slot ring takes (at startup and on every membership change).
//!
//! `cargo bench --bench ring`

use criterion::{criterion_group, criterion_main, Criterion};
use hypercache_cluster::ring::Ring;

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_build_3_replicas");
    g.sample_size(10);
    for n in [8usize, 64, 128] {
        let ids: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:17000", i / 250, i % 250))
            .collect();
        g.bench_function(format!("{n}_members"), |b| b.iter(|| Ring::new(&ids, 3)));
    }
    g.finish();
}

criterion_group!(benches, build);
criterion_main!(benches);
