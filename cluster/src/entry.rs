//! One stored key: key, value, version, expiry and eviction bookkeeping in a single allocation.
//!
//! Memory per key is a first-class goal (ARCHITECTURE §3), so an entry is one byte buffer laid
//! out as below, and the slot's hash table holds only its 8-byte pointer:
//!
//! ```text
//! 0..8    hlc        u64 LE   version: hybrid logical clock
//! 8..12   origin     u32 LE   version: writing node
//! 12..15  access     24 bits  LRU clock (seconds) of the last access
//! 15      flags      u8       bit 0: has expiry, bit 1: has spare capacity,
//!                             bits 2-3: encoding hint
//! 16..    key length LEB128
//!         [expiry]   u64 LE   unix ms, only with flag bit 0
//!         [length]   u64 LE   value length, only with flag bit 1 (APPEND/SETRANGE growth)
//!         key bytes
//!         value bytes
//!         [spare capacity]
//! ```
//!
//! The entry is held by a [`ThinBytes`] (an 8-byte pointer whose allocation starts with the
//! length), so a table bucket is 8 bytes. A 16-byte key with a 100-byte value takes 133 bytes plus
//! a 2-byte length: one 144-byte allocator chunk. Fields are read and written with
//! `from_le_bytes`/`to_le_bytes`.

use crate::thin::ThinBytes;
use crate::version::Version;

/// How Redis would encode the value, which `OBJECT ENCODING` reports. Redis decides this when the
/// value is written: `SET` tries the integer encoding, `APPEND`/`SETRANGE` leave a raw string,
/// `INCRBYFLOAT` never produces an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingHint {
    /// `int` if the value is a 64-bit integer of at most 20 chars, else `embstr`/`raw` by length.
    #[default]
    Auto,
    /// Always `raw`.
    Raw,
    /// `embstr` up to 44 bytes, else `raw`.
    NoInt,
}

impl EncodingHint {
    /// The hint as two bits (replicated with the value).
    pub fn bits(self) -> u8 {
        match self {
            EncodingHint::Auto => 0,
            EncodingHint::Raw => 1,
            EncodingHint::NoInt => 2,
        }
    }
    /// The hint from [`EncodingHint::bits`] (unknown bits read as `Auto`).
    pub fn from_bits(b: u8) -> EncodingHint {
        match b & 3 {
            1 => EncodingHint::Raw,
            2 => EncodingHint::NoInt,
            _ => EncodingHint::Auto,
        }
    }
}

const HAS_EXPIRY: u8 = 1;
const HAS_SPARE: u8 = 2;
const FIXED: usize = 16;
/// Largest value of the 24-bit access clock.
pub const ACCESS_MASK: u32 = 0x00FF_FFFF;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Writes consecutive fields into an entry's buffer.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

fn get_varint(b: &[u8], pos: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// The size of the malloc chunk that holds an allocation of `n` bytes (glibc on 64-bit).
pub fn chunk_size(n: usize) -> usize {
    ((n + 8 + 15) & !15).max(32)
}

/// Bytes a slot table of `capacity` entries allocates: hashbrown keeps a power-of-two number of
/// buckets at most 7/8 full (8-byte buckets holding an entry's thin pointer, one control byte
/// each, plus a 16-byte group).
pub fn table_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    chunk_size(buckets * 9 + 16)
}

/// Where the variable parts of an entry are.
#[derive(Debug, Clone, Copy)]
struct Layout {
    expiry_at: Option<usize>,
    len_at: Option<usize>,
    key: (usize, usize),
    value: (usize, usize),
}

/// A stored key and its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    buf: ThinBytes,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key and value bytes may be personal data: only their sizes are shown.
        f.debug_struct("Entry")
            .field("key_len", &self.key().len())
            .field("value_len", &self.value().len())
            .field("version", &self.version())
            .field("expire_at", &self.expire_at())
            .finish()
    }
}

impl Entry {
    /// A new entry (version zero: the store stamps it).
    pub fn new(key: &[u8], value: &[u8], expire_at: u64, access: u32, enc: EncodingHint) -> Entry {
        Entry::build(key, value, expire_at, access, enc, Version::default(), 0)
    }

    fn build(
        key: &[u8],
        value: &[u8],
        expire_at: u64,
        access: u32,
        enc: EncodingHint,
        version: Version,
        spare: usize,
    ) -> Entry {
        let mut flags = enc.bits() << 2;
        if expire_at != 0 {
            flags |= HAS_EXPIRY;
        }
        if spare > 0 {
            flags |= HAS_SPARE;
        }
        let len = FIXED
            + varint_len(key.len() as u64)
            + if expire_at != 0 { 8 } else { 0 }
            + if spare > 0 { 8 } else { 0 }
            + key.len()
            + value.len()
            + spare;
        // Written in place into the final allocation (zeroed, so the spare room reads as zeros).
        let mut buf = ThinBytes::zeroed(len);
        let mut w = Writer {
            buf: &mut buf,
            pos: 0,
        };
        w.put(&version.hlc.to_le_bytes());
        w.put(&version.origin.to_le_bytes());
        w.put(&(access & ACCESS_MASK).to_le_bytes()[..3]);
        w.put(&[flags]);
        let mut klen = key.len() as u64;
        while klen >= 0x80 {
            w.put(&[(klen as u8) | 0x80]);
            klen >>= 7;
        }
        w.put(&[klen as u8]);
        if expire_at != 0 {
            w.put(&expire_at.to_le_bytes());
        }
        if spare > 0 {
            w.put(&(value.len() as u64).to_le_bytes());
        }
        w.put(key);
        w.put(value);
        Entry { buf }
    }

    fn flags(&self) -> u8 {
        self.buf[15]
    }

    fn layout(&self) -> Layout {
        let b = &self.buf;
        let mut pos = FIXED;
        let klen = get_varint(b, &mut pos) as usize;
        let flags = b[15];
        let expiry_at = if flags & HAS_EXPIRY != 0 {
            pos += 8;
            Some(pos - 8)
        } else {
            None
        };
        let (len_at, vlen) = if flags & HAS_SPARE != 0 {
            pos += 8;
            (
                Some(pos - 8),
                Some(u64::from_le_bytes(b[pos - 8..pos].try_into().expect("8 bytes")) as usize),
            )
        } else {
            (None, None)
        };
        let key = (pos, pos + klen);
        let vlen = vlen.unwrap_or(b.len() - key.1);
        Layout {
            expiry_at,
            len_at,
            key,
            value: (key.1, key.1 + vlen),
        }
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        let l = self.layout();
        &self.buf[l.key.0..l.key.1]
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        let l = self.layout();
        &self.buf[l.value.0..l.value.1]
    }

    /// Bytes this entry occupies in its allocation (the thin pointer's length prefix included).
    pub fn alloc_size(&self) -> usize {
        self.buf.alloc_len()
    }

    /// Memory the entry's allocation costs: the allocator chunk holding it (glibc's malloc: 8 bytes
    /// of header, 16-byte granularity, 32 bytes at least). The slot table's buckets are
    /// accounted separately ([`table_bytes`]).
    pub fn footprint(&self) -> usize {
        chunk_size(self.buf.alloc_len())
    }

    /// The version of the last write.
    pub fn version(&self) -> Version {
        let hlc = u64::from_le_bytes(self.buf[0..8].try_into().expect("8 bytes"));
        let origin = u32::from_le_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
        Version { hlc, origin }
    }

    /// Stamps a version.
    pub fn set_version(&mut self, v: Version) {
        self.buf[0..8].copy_from_slice(&v.hlc.to_le_bytes());
        self.buf[8..12].copy_from_slice(&v.origin.to_le_bytes());
    }

    /// The 24-bit access clock.
    pub fn access(&self) -> u32 {
        u32::from_le_bytes([self.buf[12], self.buf[13], self.buf[14], 0])
    }

    /// Records an access at `clock` (only its low 24 bits are kept).
    pub fn set_access(&mut self, clock: u32) {
        self.buf[12..15].copy_from_slice(&(clock & ACCESS_MASK).to_le_bytes()[..3]);
    }

    /// Absolute expiry in unix ms, or 0 for none.
    pub fn expire_at(&self) -> u64 {
        match self.layout().expiry_at {
            Some(p) => u64::from_le_bytes(self.buf[p..p + 8].try_into().expect("8 bytes")),
            None => 0,
        }
    }

    /// Sets (or with 0 removes) the expiry. Rebuilds the entry only when an expiry is added to a
    /// key without one, or removed.
    pub fn set_expire_at(&mut self, t: u64) {
        match (self.layout().expiry_at, t) {
            (Some(p), t) if t != 0 => self.buf[p..p + 8].copy_from_slice(&t.to_le_bytes()),
            (None, 0) => {}
            _ => {
                let spare = self.spare();
                *self = Entry::build(
                    self.key(),
                    self.value(),
                    t,
                    self.access(),
                    self.enc(),
                    self.version(),
                    spare,
                );
            }
        }
    }

    fn spare(&self) -> usize {
        if self.flags() & HAS_SPARE == 0 {
            0
        } else {
            self.buf.len() - self.layout().value.1
        }
    }

    /// Whether the entry has expired at `now` (unix ms): Redis treats a key as gone once
    /// `now > expire_at`.
    pub fn is_expired(&self, now: u64) -> bool {
        let e = self.expire_at();
        e != 0 && now > e
    }

    /// The encoding hint.
    pub fn enc(&self) -> EncodingHint {
        EncodingHint::from_bits(self.flags() >> 2)
    }

    /// Replaces the value (and encoding hint and expiry), keeping key and version.
    pub fn set_value(&mut self, value: &[u8], expire_at: u64, enc: EncodingHint) {
        let l = self.layout();
        let same_shape = l.len_at.is_none()
            && l.value.1 - l.value.0 == value.len()
            && l.expiry_at.is_some() == (expire_at != 0);
        if same_shape {
            // A value of the same length (the common overwrite in a cache): write it in place,
            // no allocation and no free.
            self.buf[l.value.0..l.value.1].copy_from_slice(value);
            if let Some(p) = l.expiry_at {
                self.buf[p..p + 8].copy_from_slice(&expire_at.to_le_bytes());
            }
            self.set_enc(enc);
            return;
        }
        *self = Entry::build(
            self.key(),
            value,
            expire_at,
            self.access(),
            enc,
            self.version(),
            0,
        );
    }

    /// Appends to the value, growing the allocation geometrically (as Redis's sds does) so that
    /// repeated APPENDs cost amortized O(appended bytes).
    pub fn append(&mut self, more: &[u8]) {
        self.splice(self.value().len(), more);
    }

    /// Overwrites the value from `offset` with `patch`, zero-padding any gap (SETRANGE).
    pub fn set_range(&mut self, offset: usize, patch: &[u8]) {
        self.splice(offset, patch);
    }

    fn splice(&mut self, offset: usize, patch: &[u8]) {
        if patch.is_empty() {
            return;
        }
        let l = self.layout();
        let cur = l.value.1 - l.value.0;
        let new_len = cur.max(offset + patch.len());
        if let Some(len_at) = l.len_at {
            if l.value.0 + new_len <= self.buf.len() {
                // Fits in the spare room (which is always zero past the value): write in place.
                let start = l.value.0;
                self.buf[start + offset..start + offset + patch.len()].copy_from_slice(patch);
                self.buf[len_at..len_at + 8].copy_from_slice(&(new_len as u64).to_le_bytes());
                self.set_enc(EncodingHint::Raw);
                return;
            }
        }
        let mut v = self.value_with_len(new_len);
        v[offset..offset + patch.len()].copy_from_slice(patch);
        // As much spare room as the value is long, so appends double the allocation.
        let spare = new_len.max(16);
        *self = Entry::build(
            self.key(),
            &v,
            self.expire_at(),
            self.access(),
            EncodingHint::Raw,
            self.version(),
            spare,
        );
    }

    fn value_with_len(&self, len: usize) -> Vec<u8> {
        let mut v = self.value().to_vec();
        v.resize(len, 0);
        v
    }

    fn set_enc(&mut self, enc: EncodingHint) {
        self.buf[15] = (self.buf[15] & 0b11) | (enc.bits() << 2);
    }

    /// The encoding name `OBJECT ENCODING` reports.
    pub fn encoding(&self) -> &'static str {
        let v = self.value();
        match self.enc() {
            EncodingHint::Raw => "raw",
            EncodingHint::Auto if v.len() <= 20 && num::parse_i64(v).is_some() => "int",
            _ if v.len() <= 44 => "embstr",
            _ => "raw",
        }
    }
}

/// Number helpers the store needs (Redis's `string2ll`; `hypercache-resp` has the same rule for
/// arguments, and the two crates do not depend on each other).
pub(crate) mod num {
    /// Redis's `string2ll`: `0` or `-?[1-9][0-9]*` within `i64`.
    pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
        if s.is_empty() || s.len() > 20 {
            return None;
        }
        if s == b"0" {
            return Some(0);
        }
        let (neg, digits) = if s[0] == b'-' {
            (true, &s[1..])
        } else {
            (false, s)
        };
        if !matches!(digits.first(), Some(b'1'..=b'9')) {
            return None;
        }
        let mut v: u64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        if neg {
            if v > 1 << 63 {
                None
            } else {
                Some((v as i64).wrapping_neg())
            }
        } else {
            i64::try_from(v).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_small_key_is_one_144_byte_chunk() {
        let e = Entry::new(&[b'k'; 16], &[b'v'; 100], 0, 5, EncodingHint::Auto);
        assert_eq!(
            e.alloc_size(),
            135,
            "133 bytes of entry (a 32-bit version origin) and a 2-byte length"
        );
        assert_eq!(e.footprint(), 144);
        assert_eq!(
            std::mem::size_of::<Entry>(),
            8,
            "a table bucket holds one thin pointer"
        );
    }

    #[test]
    fn fields_round_trip() {
        let mut e = Entry::new(b"key", b"value", 0, 7, EncodingHint::Auto);
        e.set_version(Version {
            hlc: 42 << 16,
            origin: 3,
        });
        assert_eq!(
            (e.key(), e.value(), e.expire_at(), e.access()),
            (&b"key"[..], &b"value"[..], 0, 7)
        );
        e.set_expire_at(1234);
        assert_eq!(
            (e.key(), e.value(), e.expire_at()),
            (&b"key"[..], &b"value"[..], 1234)
        );
        assert_eq!(
            e.version(),
            Version {
                hlc: 42 << 16,
                origin: 3
            }
        );
        e.set_expire_at(99);
        e.set_access(ACCESS_MASK + 5);
        assert_eq!((e.expire_at(), e.access()), (99, 4));
        e.set_expire_at(0);
        assert_eq!((e.value(), e.expire_at()), (&b"value"[..], 0));
    }

    #[test]
    fn same_length_overwrites_reuse_the_allocation() {
        let mut e = Entry::new(b"key", b"aaaa", 77, 0, EncodingHint::Raw);
        let before = e.buf.as_ptr();
        e.set_value(b"bbbb", 88, EncodingHint::Auto);
        assert_eq!(e.buf.as_ptr(), before);
        assert_eq!(
            (e.key(), e.value(), e.expire_at(), e.enc()),
            (&b"key"[..], &b"bbbb"[..], 88, EncodingHint::Auto)
        );
        e.set_value(b"cccc", 0, EncodingHint::Auto);
        assert_eq!(
            (e.value(), e.expire_at()),
            (&b"cccc"[..], 0),
            "dropping the expiry reshapes the entry"
        );
        e.set_value(b"longer value", 0, EncodingHint::Auto);
        assert_eq!(e.value(), b"longer value");
    }

    #[test]
    fn appends_grow_geometrically() {
        let mut e = Entry::new(b"k", b"", 0, 0, EncodingHint::Auto);
        let mut want = Vec::new();
        let mut rebuilds = 0;
        for i in 0..2000u32 {
            let before = e.buf.as_ptr();
            let piece = i.to_le_bytes();
            e.append(&piece);
            want.extend_from_slice(&piece);
            if e.buf.as_ptr() != before {
                rebuilds += 1;
            }
        }
        assert_eq!(e.value(), &want[..]);
        assert_eq!(e.encoding(), "raw");
        assert!(
            rebuilds < 20,
            "appends reuse spare room ({rebuilds} rebuilds)"
        );
    }

    proptest! {
        #[test]
        fn edits_match_a_plain_vec(
            key in proptest::collection::vec(any::<u8>(), 0..200),
            ops in proptest::collection::vec((0usize..300, proptest::collection::vec(any::<u8>(), 0..40), 0u64..3), 0..20),
        ) {
            let mut e = Entry::new(&key, b"", 0, 0, EncodingHint::Auto);
            let mut model: Vec<u8> = Vec::new();
            let mut expiry = 0;
            for (off, patch, kind) in ops {
                match kind {
                    0 => { e.append(&patch); model.extend_from_slice(&patch); }
                    1 => {
                        e.set_range(off, &patch);
                        if !patch.is_empty() {
                            let end = off + patch.len();
                            if model.len() < end { model.resize(end, 0); }
                            model[off..end].copy_from_slice(&patch);
                        }
                    }
                    _ => { expiry = if expiry == 0 { off as u64 + 1 } else { 0 }; e.set_expire_at(expiry); }
                }
                prop_assert_eq!(e.key(), &key[..]);
                prop_assert_eq!(e.value(), &model[..]);
                prop_assert_eq!(e.expire_at(), expiry);
            }
        }
    }
}
