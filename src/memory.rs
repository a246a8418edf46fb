//! Keeping the node inside `maxmemory`: eviction before writes that need memory, a background
//! evictor for bursts, and the memory figures INFO and MEMORY report.
//!
//! The measure is `used_memory`, the bytes the allocator holds for this process (see
//! [`crate::alloc`]), as in Redis. Expired keys are reclaimed before any live key is evicted.

use std::time::{Duration, Instant};

use hypercache_cluster::evict::Policy;
use hypercache_cluster::Ctx;

use crate::state::{now_ms, Shared};

/// Most keys one write evicts before it goes ahead anyway (the background evictor continues):
/// eviction work per write is bounded.
const EVICTIONS_PER_WRITE: usize = 64;
/// Entries the expiry cycle may examine per write while over the limit.
const EXPIRE_BUDGET_PER_WRITE: usize = 256;
/// Longest time the background evictor works per tick.
const BACKGROUND_BUDGET: Duration = Duration::from_millis(25);

/// Bytes the allocator holds for the process.
pub fn used() -> u64 {
    crate::ALLOC.allocated() as u64
}

/// [`used`], also recorded as a sample of the peak in the metrics registry.
pub fn sample(shared: &Shared) -> u64 {
    shared.metrics.sample_memory(used())
}

fn ctx(shared: &Shared) -> (Ctx, Policy, usize) {
    let c = shared.config.read();
    let ctx = Ctx {
        mode: c.access_mode(),
        ..Ctx::at(now_ms())
    };
    (ctx, c.maxmemory_policy, c.maxmemory_samples as usize)
}

/// Objects handed to a thread to be freed and not freed yet (`FLUSHALL ASYNC`, ...): INFO's
/// `lazyfree_pending_objects`.
pub static LAZYFREE_PENDING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Objects freed that way so far (`lazyfreed_objects`).
pub static LAZYFREED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Frees `what` (holding `objects` keys) on another thread, counted in the lazy-free figures.
pub fn free_later<T: Send + 'static>(what: T, objects: u64) {
    use std::sync::atomic::Ordering;
    LAZYFREE_PENDING.fetch_add(objects, Ordering::Relaxed);
    std::thread::spawn(move || {
        drop(what);
        LAZYFREE_PENDING.fetch_sub(objects, Ordering::Relaxed);
        LAZYFREED.fetch_add(objects, Ordering::Relaxed);
    });
}

/// Frees memory until `used_memory` is at most `max`, within a bounded amount of work, for a
/// command that needs memory. Returns false when it must be refused with `-OOM`: the node is
/// over its limit and nothing can be evicted (`noeviction`, or no eligible key).
pub fn make_room<R: rand::Rng>(
    shared: &Shared,
    max: u64,
    policy: Policy,
    samples: usize,
    ctx: &Ctx,
    rng: &mut R,
) -> bool {
    if used() <= max {
        return true;
    }
    // Expired keys go first: they cost nothing to lose.
    if shared.store.stats().volatile > 0 {
        shared.store.expire_cycle(ctx.now, EXPIRE_BUDGET_PER_WRITE);
    }
    for _ in 0..EVICTIONS_PER_WRITE {
        if used() <= max {
            return true;
        }
        if shared.store.evict_one(policy, samples, ctx, rng).is_none() {
            return false;
        }
    }
    // Still over after the bounded work: let this write through (as Redis does when its eviction
    // time limit runs out); the background evictor keeps going.
    true
}

/// One background round: while over the limit, reclaim expired keys, then evict, for at most
/// [`BACKGROUND_BUDGET`].
pub fn background_round(shared: &Shared) {
    let max = shared.config.read().maxmemory;
    if max == 0 || used() <= max {
        return;
    }
    let started = Instant::now();
    let (ctx, policy, samples) = ctx(shared);
    // With Redis replicas attached, evictions take a turn like a command: a key evicted between
    // a command's write and its propagation would reach the replicas before that write.
    let _turn = shared.repl.is_active().then(|| shared.repl.turn());
    while used() > max && started.elapsed() < BACKGROUND_BUDGET {
        let r = shared.store.expire_cycle(ctx.now, 2_000);
        if r.expired > 0 {
            continue;
        }
        let mut rng = shared.rng.lock();
        let mut evicted = false;
        for _ in 0..64 {
            if used() <= max {
                break;
            }
            evicted |= shared
                .store
                .evict_one(policy, samples, &ctx, &mut *rng)
                .is_some();
        }
        if !evicted {
            break;
        }
    }
}

/// Redis's byte formatting for INFO (`1.50M`).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}
