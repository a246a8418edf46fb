//! [`ThinBytes`]: an owned byte buffer behind one 8-byte pointer.
//!
//! `Box<[u8]>` is a fat pointer (address and length, 16 bytes). Every key's entry lives in a
//! slot table bucket, so those 8 extra bytes are paid per bucket, and buckets outnumber keys
//! (hashbrown keeps tables at most 7/8 full): about 9-17 bytes per key. `ThinBytes` stores the
//! length at the front of the allocation instead (LEB128: 1 byte up to 127, 2 up to 16383, ...).
//!
//! This module is one of the crate's two uses of `unsafe` (the other is `float.rs`). The
//! invariant everything rests on: `ptr` points to a live allocation of exactly
//! `prefix + len` bytes with alignment 1, made by [`ThinBytes::zeroed`], whose first `prefix`
//! bytes are the LEB128 encoding of `len`. Freed 1-16 KB allocations may be kept in a small
//! per-thread list and handed out again (zeroed) for the same size: an allocation is owned by
//! exactly one `ThinBytes` or by that list, never both. The crate's tests (the entry and store property
//! tests included) pass under AddressSanitizer and its leak checker:
//! `RUSTFLAGS=-Zsanitizer=address cargo +nightly test -p hypercache-cluster --lib --target
//! x86_64-unknown-linux-gnu` (Miri is not installable on these machines).
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// An owned, fixed-length byte buffer behind a thin pointer.
pub struct ThinBytes {
    ptr: NonNull<u8>,
}

// SAFETY: `ThinBytes` owns its allocation exclusively, like `Box<[u8]>`, which is Send and Sync.
unsafe impl Send for ThinBytes {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for ThinBytes {}

fn prefix_len(mut len: usize) -> usize {
    let mut n = 1;
    while len >= 0x80 {
        len >>= 7;
        n += 1;
    }
    n
}

fn layout(total: usize) -> Layout {
    Layout::from_size_align(total, 1).expect("allocation size overflows isize")
}

/// Allocations kept for reuse: glibc caches freed chunks per thread only up to 1032 bytes
/// (tcache); larger ones go through its coalescing free path, which was 10% of CPU when a write
/// evicts a 1 KB entry and then allocates a 1 KB entry. A few recently freed buffers of
/// [`RECYCLE_MIN`]..=[`RECYCLE_MAX`] bytes are kept per thread and handed out again for the same
/// size.
const RECYCLE_MIN: usize = 1024;
/// Largest allocation kept for reuse.
const RECYCLE_MAX: usize = 16 * 1024;
/// Most buffers kept per thread (so at most 128 KB per thread).
const RECYCLE_SLOTS: usize = 8;

/// A thread's kept buffers: (allocation, its total size).
struct Recycler(Vec<(NonNull<u8>, usize)>);

impl Drop for Recycler {
    fn drop(&mut self) {
        for (ptr, total) in self.0.drain(..) {
            // SAFETY: each pointer came from `ThinBytes::zeroed` with layout(total) and was given
            // up by its owner; it is freed exactly once, here.
            unsafe { dealloc(ptr.as_ptr(), layout(total)) };
        }
    }
}

thread_local! {
    static RECYCLED: std::cell::RefCell<Recycler> = const { std::cell::RefCell::new(Recycler(Vec::new())) };
}

/// A kept allocation of exactly `total` bytes, zeroed, if this thread has one.
fn take_recycled(total: usize) -> Option<NonNull<u8>> {
    if !(RECYCLE_MIN..=RECYCLE_MAX).contains(&total) {
        return None;
    }
    let ptr = RECYCLED
        .try_with(|r| {
            let mut r = r.borrow_mut();
            let i = r.0.iter().position(|(_, t)| *t == total)?;
            Some(r.0.swap_remove(i).0)
        })
        .ok()
        .flatten()?;
    // SAFETY: the allocation is `total` bytes long and owned by us again.
    unsafe { ptr.as_ptr().write_bytes(0, total) };
    Some(ptr)
}

/// Keeps an allocation for reuse; returns it back if it is not kept.
fn give_back(ptr: NonNull<u8>, total: usize) -> Option<NonNull<u8>> {
    if !(RECYCLE_MIN..=RECYCLE_MAX).contains(&total) {
        return Some(ptr);
    }
    RECYCLED
        .try_with(|r| {
            let mut r = r.borrow_mut();
            if r.0.len() < RECYCLE_SLOTS {
                r.0.push((ptr, total));
                None
            } else {
                Some(ptr)
            }
        })
        .unwrap_or(Some(ptr))
}

impl ThinBytes {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> ThinBytes {
        let prefix = prefix_len(len);
        let total = prefix.checked_add(len).expect("length overflow");
        let layout = layout(total);
        let ptr = match take_recycled(total) {
            Some(p) => p,
            None => {
                // SAFETY: `total >= 1` (the prefix is at least one byte): a non-zero-sized layout.
                let raw = unsafe { alloc_zeroed(layout) };
                let Some(p) = NonNull::new(raw) else {
                    handle_alloc_error(layout)
                };
                p
            }
        };
        let mut v = len;
        for i in 0..prefix {
            let byte = if i + 1 < prefix {
                (v as u8 & 0x7f) | 0x80
            } else {
                v as u8
            };
            // SAFETY: `i < prefix <= total`: inside the allocation just made.
            unsafe { ptr.as_ptr().add(i).write(byte) };
            v >>= 7;
        }
        ThinBytes { ptr }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> ThinBytes {
        let mut t = ThinBytes::zeroed(bytes.len());
        t.copy_from_slice(bytes);
        t
    }

    /// (prefix length, data length), decoded from the front of the allocation.
    fn header(&self) -> (usize, usize) {
        let (mut len, mut shift, mut i) = (0usize, 0, 0);
        loop {
            // SAFETY: the prefix is a complete LEB128 number written by `zeroed`; reading stops
            // at its last byte (the one without the continuation bit), inside the allocation.
            let byte = unsafe { self.ptr.as_ptr().add(i).read() };
            len |= usize::from(byte & 0x7f) << shift;
            i += 1;
            if byte < 0x80 {
                return (i, len);
            }
            shift += 7;
        }
    }

    /// Bytes the allocation occupies (length prefix included).
    pub fn alloc_len(&self) -> usize {
        let (prefix, len) = self.header();
        prefix + len
    }
}

impl Deref for ThinBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let (prefix, len) = self.header();
        // SAFETY: bytes `prefix..prefix + len` are initialized (zeroed at allocation) and owned by
        // `self`; the shared borrow of `self` keeps them alive and unaliased by writers.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(prefix), len) }
    }
}

impl DerefMut for ThinBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        let (prefix, len) = self.header();
        // SAFETY: as in `deref`, with exclusive access through `&mut self`. The prefix is not
        // part of the slice, so callers cannot corrupt the length.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(prefix), len) }
    }
}

impl Drop for ThinBytes {
    fn drop(&mut self) {
        let total = self.alloc_len();
        if let Some(ptr) = give_back(self.ptr, total) {
            // SAFETY: `ptr` was allocated by `zeroed` with exactly this layout and is freed once.
            unsafe { dealloc(ptr.as_ptr(), layout(total)) };
        }
    }
}

impl Clone for ThinBytes {
    fn clone(&self) -> ThinBytes {
        ThinBytes::from_slice(self)
    }
}

impl PartialEq for ThinBytes {
    fn eq(&self, other: &ThinBytes) -> bool {
        **self == **other
    }
}

impl Eq for ThinBytes {}

impl std::fmt::Debug for ThinBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThinBytes({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_one_pointer() {
        assert_eq!(std::mem::size_of::<ThinBytes>(), 8);
        assert_eq!(std::mem::size_of::<Option<ThinBytes>>(), 8);
    }

    #[test]
    fn recycled_buffers_come_back_zeroed() {
        let a = ThinBytes::from_slice(&[0xFF; 2000]);
        let addr = a.as_ptr();
        drop(a);
        let b = ThinBytes::zeroed(2000);
        assert_eq!(b.as_ptr(), addr, "the same-size buffer is reused");
        assert!(b.iter().all(|&x| x == 0));
        // Sizes outside the kept range are never kept.
        let small = ThinBytes::from_slice(&[1; 10]);
        drop(small);
        assert!(RECYCLED.with(|r| r.borrow().0.iter().all(|(_, t)| *t >= RECYCLE_MIN)));
    }

    #[test]
    fn lengths_across_prefix_sizes() {
        for len in [0usize, 1, 127, 128, 300, 16383, 16384, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut t = ThinBytes::from_slice(&data);
            assert_eq!(&t[..], &data[..]);
            assert_eq!(t.alloc_len(), prefix_len(len) + len);
            if len > 0 {
                t[len - 1] = 0xAA;
                assert_eq!(t[len - 1], 0xAA);
            }
            let c = t.clone();
            assert_eq!(c, t);
        }
    }
}
