//! Question: how fast are store operations?
//!
//! One [`Store`] preloaded with 100k keys (16-byte keys, 100-byte values) and 1k integer counters;
//! every benchmark applies one [`Op`] per iteration through [`Store::apply`], the path every
//! single-key command takes (slot hash, slot lock, expiry check, op, version and digest upkeep).
//!
//! - `single/get_hit`, `single/get_miss`, `single/set_overwrite`, `single/incr`: one thread, keys
//!   taken in a fixed shuffled order so successive operations land on unrelated slots.
//! - `contention/{1,2}_threads_get_set`: each thread runs its own random sequence of GETs and SETs
//!   (half each) on random preloaded keys; reported as ops/s over all threads. The 1-thread case is
//!   the baseline the 2-thread case scales against (the machine has 2 cores).
//! - `contention/2_threads_hot_key`: both threads SET the same key, the worst case for the slot lock.
//!
//! Key lists, op sequences and the store are built before any timing; threads are spawned before the
//! clock starts and released together by a barrier.
//!
//! Run: `cargo bench --bench store_ops` (add `-- --quick` for a short check).

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hypercache_cluster::{Ctx, Op, Outcome, Store, StoreConfig};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Preloaded keys.
const KEYS: usize = 100_000;
/// Preloaded integer counters (for INCR).
const COUNTERS: usize = 1_000;
/// Value size.
const VALUE_LEN: usize = 100;
/// Length of each thread's pre-generated op sequence (a power of two, cycled).
const SEQ_LEN: usize = 1 << 16;
/// Ops each thread runs per criterion iteration in the contention group: enough (milliseconds) that
/// waking the threads at the barrier is noise.
const OPS_PER_ITER: u64 = 10_000;
/// A fixed time (unix ms): no key has an expiry, so only the HLC cares about it.
const NOW: u64 = 1_700_000_000_000;

/// A 16-byte key. Keys are held inline in one contiguous, shuffled array and walked in order, so
/// reading the next key is a sequential (prefetched) load and the cache misses measured are the
/// store's own, as when the key sits in a connection's read buffer.
type Key = [u8; 16];

/// `prefix` (4 bytes) then 12 digits.
fn key(prefix: &str, i: usize) -> Key {
    format!("{prefix}{i:012}")
        .into_bytes()
        .try_into()
        .expect("16-byte key")
}

fn set(value: &[u8]) -> Op<'_> {
    Op::set(value)
}

struct Fixture {
    store: Store,
    ctx: Ctx,
    /// Preloaded keys in a shuffled order.
    hits: Vec<Key>,
    /// Keys never stored.
    misses: Vec<Key>,
    /// Preloaded counters in a shuffled order.
    counters: Vec<Key>,
    value: Vec<u8>,
}

fn fixture() -> Fixture {
    let store = Store::new(StoreConfig {
        hash_seed: 0x5eed,
        origin: 1,
    });
    let ctx = Ctx::at(NOW);
    let value = vec![b'v'; VALUE_LEN];
    let mut rng = SmallRng::seed_from_u64(42);
    let mut hits: Vec<Key> = (0..KEYS).map(|i| key("key:", i)).collect();
    for k in &hits {
        store.apply(k, &set(&value), &ctx);
    }
    let mut counters: Vec<Key> = (0..COUNTERS).map(|i| key("ctr:", i)).collect();
    for k in &counters {
        store.apply(k, &set(b"0"), &ctx);
    }
    hits.shuffle(&mut rng);
    counters.shuffle(&mut rng);
    let misses = (0..KEYS).map(|i| key("mis:", i)).collect();
    assert_eq!(store.len(), (KEYS + COUNTERS) as u64);
    Fixture {
        store,
        ctx,
        hits,
        misses,
        counters,
        value,
    }
}

/// Benchmarks `op(key)` applied to `keys` in turn.
fn bench_keys(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    fx: &Fixture,
    keys: &[Key],
    op: &Op<'_>,
) {
    let mut i = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            let k = &keys[i];
            i = if i + 1 == keys.len() { 0 } else { i + 1 };
            black_box(fx.store.apply(k, op, &fx.ctx))
        })
    });
}

fn single(c: &mut Criterion, fx: &Fixture) {
    // The ops do what their names say.
    assert!(matches!(
        fx.store.apply(&fx.hits[0], &Op::Get, &fx.ctx),
        Outcome::Value(_)
    ));
    assert_eq!(
        fx.store.apply(&fx.misses[0], &Op::Get, &fx.ctx),
        Outcome::Nil
    );

    let mut g = c.benchmark_group("single");
    g.throughput(Throughput::Elements(1));
    bench_keys(&mut g, "get_hit", fx, &fx.hits, &Op::Get);
    bench_keys(&mut g, "get_miss", fx, &fx.misses, &Op::Get);
    bench_keys(&mut g, "set_overwrite", fx, &fx.hits, &set(&fx.value));
    bench_keys(&mut g, "incr", fx, &fx.counters, &Op::IncrBy(1));
    g.finish();
    assert_eq!(fx.store.len(), (KEYS + COUNTERS) as u64, "only overwrites");
}

/// One thread's pre-generated work: (a random preloaded key, is a SET), keys inline.
fn sequence(fx: &Fixture, seed: u64) -> Vec<(Key, bool)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..SEQ_LEN)
        .map(|_| (fx.hits[rng.random_range(0..KEYS)], rng.random_bool(0.5)))
        .collect()
}

/// Runs `iters * OPS_PER_ITER` ops on each of `seqs.len()` threads and returns the wall time from
/// the moment all threads are released until the last one finishes.
fn run_threads(
    fx: &Fixture,
    seqs: &[Vec<(Key, bool)>],
    hot_key: Option<&[u8]>,
    iters: u64,
) -> Duration {
    let ops = (iters * OPS_PER_ITER) as usize;
    let barrier = Barrier::new(seqs.len() + 1);
    std::thread::scope(|s| {
        for seq in seqs {
            let barrier = &barrier;
            s.spawn(move || {
                let value = &fx.value[..];
                barrier.wait();
                for n in 0..ops {
                    let (key, is_set) = &seq[n & (SEQ_LEN - 1)];
                    let k = hot_key.unwrap_or(key);
                    let op = if *is_set || hot_key.is_some() {
                        set(value)
                    } else {
                        Op::Get
                    };
                    black_box(fx.store.apply(k, &op, &fx.ctx));
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // Leaving the scope joins every thread.
        start
    })
    .elapsed()
}

fn contention(c: &mut Criterion, fx: &Fixture) {
    let seqs: Vec<Vec<(Key, bool)>> = (0..2).map(|t| sequence(fx, 1000 + t)).collect();
    let mut g = c.benchmark_group("contention");
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements(threads as u64 * OPS_PER_ITER));
        g.bench_function(format!("{threads}_threads_get_set"), |b| {
            b.iter_custom(|iters| run_threads(fx, &seqs[..threads], None, iters))
        });
    }
    g.throughput(Throughput::Elements(2 * OPS_PER_ITER));
    let hot = fx.hits[0];
    g.bench_function("2_threads_hot_key", |b| {
        b.iter_custom(|iters| run_threads(fx, &seqs, Some(&hot), iters))
    });
    g.finish();
}

fn store_ops(c: &mut Criterion) {
    let fx = fixture();
    single(c, &fx);
    contention(c, &fx);
}

criterion_group!(benches, store_ops);
criterion_main!(benches);
