//! A counting global allocator: `used_memory` in INFO is what the allocator really holds, not an
//! estimate. Each allocation adds the size of the malloc chunk it gets (glibc's rounding and
//! chunk header included) to a counter and each free subtracts it, so `used_memory` follows RSS.
//!
//! Each of the first `OWNED` threads gets a counter of its own and updates it with a plain load and
//! store (no read-modify-write instruction: nobody else writes it); later threads share one
//! counter updated atomically. Reading sums all counters.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

const SHARDS: usize = 16;
/// Counters owned by one thread each; the last one is shared by every thread beyond them.
const OWNED: usize = SHARDS - 1;

#[repr(align(64))]
struct Shard(AtomicIsize);

/// The process allocator: the system allocator plus a byte count.
pub struct Counting {
    shards: [Shard; SHARDS],
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn shard() -> usize {
    SHARD
        .try_with(|s| {
            let mut v = s.get();
            if v == usize::MAX {
                v = NEXT_SHARD.fetch_add(1, Ordering::Relaxed).min(OWNED);
                s.set(v);
            }
            v
        })
        .unwrap_or(OWNED)
}

impl Counting {
    /// A counter at zero.
    pub const fn new() -> Counting {
        Counting {
            shards: [const { Shard(AtomicIsize::new(0)) }; SHARDS],
        }
    }

    /// Bytes currently allocated through this allocator.
    pub fn allocated(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum::<isize>()
            .max(0) as usize
    }

    fn add(&self, n: isize) {
        let i = shard();
        let c = &self.shards[i].0;
        if i < OWNED {
            // Only this thread ever writes this counter.
            c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        } else {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl Default for Counting {
    fn default() -> Self {
        Counting::new()
    }
}

/// Bytes glibc's malloc holds for an allocation of `size` bytes: the chunk, with its 8-byte
/// header, rounded to 16 bytes, at least 32; large allocations are served by mmap in whole pages
/// with a 16-byte header. Computed from the size, not read from the chunk: reading the header on
/// every free cost a cache miss (6% of CPU under eviction).
fn held(size: usize) -> isize {
    const MMAP_THRESHOLD: usize = 128 * 1024;
    let chunk = if size >= MMAP_THRESHOLD {
        (size + 16 + 4095) & !4095
    } else {
        ((size + 8 + 15) & !15).max(32)
    };
    chunk as isize
}

// SAFETY: every call is forwarded unchanged to `System` (glibc's malloc); the counter is only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.add(held(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.add(held(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        self.add(-held(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.add(held(new_size) - held(layout.size()));
        }
        p
    }
}
/// Resident set size of this process in bytes, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}
